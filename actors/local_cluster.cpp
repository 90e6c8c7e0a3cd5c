#include "actors/local_cluster.hpp"

#include <chrono>

#include "actors/coordinator.hpp"
#include "actors/messages.hpp"
#include "actors/timeouts.hpp"
#include "actors/worker.hpp"
#include "transport/loopback.hpp"

namespace afd::actors {

struct local_cluster::impl {
  dataplane::cluster_spec spec;
  caf::actor_system_config config;  // the system keeps a reference: declared first, destroyed last
  std::unique_ptr<caf::actor_system> system;
  std::shared_ptr<transport::loopback_fabric> fabric;
  caf::actor coordinator;
  std::vector<std::pair<std::string, caf::actor>> workers;
  bool stopped = false;

  void stop() {
    if (stopped || !system) return;
    stopped = true;
    if (coordinator) {
      caf::scoped_actor self{*system};
      // The coordinator ends pending requests and stops the workers; a coordinator that does not
      // answer in time is stopped the hard way.
      bool answered = false;
      self->request(coordinator, timeouts::shutdown, shutdown_atom::value)
          .receive([&](bool) { answered = true; }, [&](caf::error&) {});
      if (!answered) self->send_exit(coordinator, caf::exit_reason::kill);
    }
    for (auto& [name, w] : workers) caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    workers.clear();
    coordinator = nullptr;
  }
};

local_cluster::local_cluster(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

local_cluster::~local_cluster() {
  if (!impl_) return;
  impl_->stop();
  impl_->system.reset();  // joins the scheduler and every detached actor's thread
}

expected<std::unique_ptr<local_cluster>> local_cluster::start(dataplane::cluster_spec spec, local_cluster_options options) {
  if (auto ok = spec.validate(); !ok) return ok.err();
  auto p = std::make_unique<impl>();
  p->spec = std::move(spec);
  register_message_types(p->config);
  configure_scheduler(p->config, options.scheduler_threads);
  p->system = std::make_unique<caf::actor_system>(p->config);
  if (p->spec.transport.type == dataplane::transport_settings::kind::loopback) p->fabric = transport::loopback_fabric::create();
  std::unique_ptr<local_cluster> c(new local_cluster(std::move(p)));
  impl& s = *c->impl_;
  s.coordinator = spawn_coordinator(*s.system, s.spec);
  worker_environment env{s.fabric};
  std::vector<std::string> names;
  for (const auto& a : s.spec.attention_workers) names.push_back(a.name);
  for (const auto& f : s.spec.ffn_workers) names.push_back(f.name);
  for (const auto& n : names) {
    auto w = spawn_worker(*s.system, s.spec, n, s.coordinator, env);
    if (!w) return w.err();  // the destructor stops what started
    s.workers.emplace_back(n, *w);
  }
  caf::scoped_actor self{*s.system};
  afd::error failure;
  self->request(s.coordinator, s.spec.start_timeout, await_ready_atom::value)
      .receive([](bool) {}, [&](caf::error& e) { failure = from_caf_error(e); });
  if (failure) {
    if (failure.code() == errc::timeout)
      failure = fail(errc::unavailable, "cluster '", s.spec.name, "' did not become ready within ",
                     s.spec.start_timeout.count(), " ms");
    return failure;
  }
  return c;
}

caf::actor_system& local_cluster::system() { return *impl_->system; }
const caf::actor& local_cluster::coordinator() const { return impl_->coordinator; }
const dataplane::cluster_spec& local_cluster::spec() const { return impl_->spec; }

expected<void> local_cluster::kill_worker(const std::string& name) {
  for (auto& [n, w] : impl_->workers)
    if (n == name) {
      caf::anon_send_exit(w, caf::exit_reason::kill);
      return {};
    }
  return fail(errc::invalid_argument, "no worker named '", name, "' in this cluster");
}

void local_cluster::stop() { impl_->stop(); }

}  // namespace afd::actors
