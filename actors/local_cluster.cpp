#include "actors/local_cluster.hpp"

#include <cstdio>

#include <chrono>
#include <deque>
#include <map>
#include <thread>

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
  caf::actor supervisor;
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
    if (supervisor) caf::anon_send_exit(supervisor, caf::exit_reason::user_shutdown);
    supervisor = nullptr;
    for (auto& [name, w] : workers) caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    workers.clear();
    coordinator = nullptr;
  }
};

namespace {

using restart_atom = caf::atom_constant<caf::atom("restart")>;
using kill_worker_atom = caf::atom_constant<caf::atom("killworker")>;

/// The embedded cluster's supervisor: a worker actor that ends abnormally (a crash) is started
/// again, as a new life that registers with the coordinator and rejoins; at most
/// timeouts::restart_budget restarts per worker within timeouts::restart_window, then it gives up
/// and says so. Monitors, so that it never blocks.
caf::behavior supervisor_behavior(caf::event_based_actor* self, dataplane::cluster_spec spec, caf::actor coordinator,
                                  std::shared_ptr<transport::loopback_fabric> fabric,
                                  std::vector<std::pair<std::string, caf::actor>> initial, bool restart) {
  struct state_t {
    std::map<caf::actor_addr, std::string> names;
    std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> restarts;
  };
  auto st = std::make_shared<state_t>();
  for (auto& [name, w] : initial) {
    self->monitor(w);
    st->names[w.address()] = name;
  }
  self->set_down_handler([self, st, restart](caf::down_msg& m) {
    auto it = st->names.find(m.source);
    if (it == st->names.end()) return;
    const std::string name = it->second;
    st->names.erase(it);
    if (!restart || m.reason == caf::exit_reason::user_shutdown || m.reason == caf::exit_reason::normal || !m.reason)
      return;
    auto& times = st->restarts[name];
    const auto now = std::chrono::steady_clock::now();
    while (!times.empty() && now - times.front() > timeouts::restart_window) times.pop_front();
    if (static_cast<int>(times.size()) >= timeouts::restart_budget) {
      std::fprintf(stderr, "afd: worker '%s' ended (%s) and has used its %d restarts within %lld s: not restarted\n",
                   name.c_str(), caf::to_string(m.reason).c_str(), timeouts::restart_budget,
                   static_cast<long long>(timeouts::restart_window.count() / 1000));
      return;
    }
    times.push_back(now);
    self->send(self, restart_atom::value, name, 0);
  });
  return {
      [=](restart_atom, const std::string& name, int attempt) {
        // The crashed actor's transport may still be going away: try again shortly.
        auto w = spawn_worker(self->home_system(), spec, name, coordinator, worker_environment{fabric});
        if (!w) {
          if (attempt < 50) {
            self->delayed_send(self, std::chrono::milliseconds(20), restart_atom::value, name, attempt + 1);
            return;
          }
          std::fprintf(stderr, "afd: worker '%s' could not be restarted: %s\n", name.c_str(), w.err().message().c_str());
          return;
        }
        self->monitor(*w);
        st->names[w->address()] = name;
      },
      [=](kill_worker_atom, const std::string& name) {
        for (auto& [addr, n] : st->names)
          if (n == name) {
            caf::anon_send_exit(caf::actor_cast<caf::actor>(addr), caf::exit_reason::kill);
            return true;
          }
        return false;
      },
  };
}

}  // namespace

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
  s.supervisor = s.system->spawn(supervisor_behavior, s.spec, s.coordinator, s.fabric, s.workers,
                                  s.spec.restart_workers);
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
  if (!impl_->supervisor) return fail(errc::unavailable, "the cluster is stopped");
  caf::scoped_actor self{*impl_->system};
  bool killed = false;
  self->request(impl_->supervisor, timeouts::worker_status, kill_worker_atom::value, name)
      .receive([&](bool k) { killed = k; }, [&](caf::error&) {});
  if (!killed) return fail(errc::invalid_argument, "no live worker named '", name, "' in this cluster");
  return {};
}

void local_cluster::stop() { impl_->stop(); }

}  // namespace afd::actors
