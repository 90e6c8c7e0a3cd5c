// The launcher (launcher.hpp): coordinator in this process, one forked `afd worker` process per
// process of the plan, readiness, serving, orderly stop.

#include "deploy/launch/launcher.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/coordinator.hpp"
#include "actors/messages.hpp"
#include "actors/timeouts.hpp"
#include "actors/worker.hpp"
#include "deploy/launch/child_process.hpp"
#include "deploy/launch/signals.hpp"
#include "runtime/engine/layer.hpp"
#include "transport/loopback.hpp"

namespace afd::launch {

namespace {

using clock = std::chrono::steady_clock;

/// What the watcher actor learns about the coordinator; read by the launcher's main loop.
struct coordinator_events {
  std::mutex mutex;
  bool ready = false;
  bool down = false;
  std::string failure;      ///< await_ready answered with an error
  std::string down_reason;
};

caf::behavior watch_coordinator(caf::event_based_actor* self, caf::actor coordinator,
                                std::shared_ptr<coordinator_events> ev) {
  self->monitor(coordinator);
  self->set_down_handler([self, ev](caf::down_msg& m) {
    {
      std::lock_guard lock(ev->mutex);
      ev->down = true;
      ev->down_reason = caf::to_string(m.reason);
    }
    self->quit();
  });
  self->request(coordinator, caf::infinite, actors::await_ready_atom::value)
      .then(
          [ev](bool) {
            std::lock_guard lock(ev->mutex);
            ev->ready = true;
          },
          [ev](caf::error& e) {
            std::lock_guard lock(ev->mutex);
            ev->failure = actors::from_caf_error(e).message();
          });
  return {[](actors::status_atom) {}};  // nothing to answer; the behavior keeps it alive
}

/// One worker process started by the launcher.
struct worker_process {
  process_plan plan;
  std::optional<child_process> child;
  std::string log;
  bool reported = false;  ///< its exit was reported while serving
};

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

void report_exit(const worker_process& w, int status, const char* when) {
  std::fprintf(stderr, "afd launch: worker process '%s' (workers %s, pid %d) %s %s\n", w.plan.name.c_str(),
               join(w.plan.workers).c_str(), static_cast<int>(w.child->pid()),
               describe_wait_status(status).c_str(), when);
  const std::string tail = tail_lines(w.log, 15);
  if (tail.empty()) {
    std::fprintf(stderr, "  (its log %s is empty)\n", w.log.c_str());
  } else {
    std::fprintf(stderr, "  last lines of %s:\n", w.log.c_str());
    std::size_t pos = 0;
    while (pos < tail.size()) {
      const auto end = tail.find('\n', pos);
      std::fprintf(stderr, "    %s\n", tail.substr(pos, end - pos).c_str());
      pos = end == std::string::npos ? tail.size() : end + 1;
    }
  }
}

/// The address the coordinator is published on: the loopback address for a loopback node (not
/// reachable from elsewhere, as the file says), every interface otherwise.
std::string publish_host(const std::string& host) {
  if (host == "localhost" || host.rfind("127.", 0) == 0) return host == "localhost" ? "127.0.0.1" : host;
  if (host == "::1") return host;
  return "";
}

std::string units_summary(const engine::ffn_assignment& a) {
  std::size_t experts = 0, shared = 0, moe_layers = 0;
  for (const auto& layer : a.units) {
    bool routed = false;
    for (auto u : layer) {
      if (u == engine::shared_unit) {
        ++shared;
      } else {
        ++experts;
        routed = true;
      }
    }
    if (routed) ++moe_layers;
  }
  return std::to_string(experts) + " routed experts in " + std::to_string(moe_layers) + " layers, " +
         std::to_string(shared) + " shared/dense units";
}

void print_summary(const topology::topology& t, const dataplane::cluster_spec& spec, const std::string& file,
                   const std::string& coordinator, const std::vector<worker_process>& procs,
                   const std::string& run_dir, double seconds, bool foreground) {
  auto process_of = [&](const std::string& worker) -> std::pair<std::string, long> {
    for (const auto& p : procs)
      for (const auto& w : p.plan.workers)
        if (w == worker)
          return {p.plan.name, p.child ? static_cast<long>(p.child->pid()) : static_cast<long>(::getpid())};
    return {"launcher", static_cast<long>(::getpid())};
  };
  std::printf("cluster '%s': %zu attention + %zu FFN workers ready in %.1f s\n", spec.name.c_str(),
              spec.attention_workers.size(), spec.ffn_workers.size(), seconds);
  std::printf("  coordinator  %s (launcher, pid %ld)\n", coordinator.c_str(), static_cast<long>(::getpid()));
  std::string transport(topology::to_string(t.transport.kind));
  if (t.transport.kind == topology::transport_kind::ucx)
    transport += " (tls " + (t.transport.tls.empty() ? std::string("UCX default") : t.transport.tls) +
                 ", net devices " + (t.transport.net_devices.empty() ? std::string("all") : t.transport.net_devices) +
                 ")";
  std::printf("  transport    %s\n", transport.c_str());
  std::printf("  model        %s\n", spec.model_path.c_str());
  std::printf("  numerics     kv %s, dispatch %s, combine %s, %s; %u micro-batches\n",
              std::string(to_string(t.model.kv_dtype)).c_str(), std::string(to_string(t.model.dispatch_dtype)).c_str(),
              std::string(to_string(t.model.combine_dtype)).c_str(),
              t.model.combine == topology::combine_mode::deterministic ? "deterministic" : "throughput",
              spec.plane.micro_batches);
  std::printf("  %-10s %-10s %-8s %-10s %-8s %s\n", "worker", "role", "device", "process", "pid", "owns");
  for (const auto& a : spec.attention_workers) {
    auto [proc, pid] = process_of(a.name);
    std::printf("  %-10s %-10s %-8s %-10s %-8ld %lld KV blocks of %lld tokens, batch %lld\n", a.name.c_str(),
                "attention", a.device.c_str(), proc.c_str(), pid, static_cast<long long>(a.kv_blocks),
                static_cast<long long>(a.block_size), static_cast<long long>(a.max_batch));
  }
  for (std::size_t i = 0; i < spec.ffn_workers.size(); ++i) {
    const auto& f = spec.ffn_workers[i];
    auto [proc, pid] = process_of(f.name);
    std::printf("  %-10s %-10s %-8s %-10s %-8ld %s\n", f.name.c_str(), "ffn", f.device.c_str(), proc.c_str(), pid,
                units_summary(spec.placement.assignment_of(static_cast<int>(i))).c_str());
  }
  std::printf("  run dir      %s (one log per process)\n", run_dir.c_str());
  if (foreground) {
    std::printf("serving at %s; stop with `afd stop %s` or Ctrl-C\n", coordinator.c_str(), file.c_str());
  } else {
    std::printf("serving at %s in the background (pid %ld, log %s/launcher.log); stop with `afd stop %s`\n",
                coordinator.c_str(), static_cast<long>(::getpid()), run_dir.c_str(), file.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

/// The launcher after validation: owns the actor system, the coordinator and the worker processes.
class launcher_impl {
 public:
  launcher_impl(topology::topology t, dataplane::cluster_spec spec, launch_plan plan,
           worker_command_options options, std::string file, std::chrono::seconds start_timeout)
      : t_(std::move(t)), spec_(std::move(spec)), plan_(std::move(plan)), options_(std::move(options)),
        file_(std::move(file)), start_timeout_(start_timeout) {}

  /// Starts everything and waits until ready; false (after stopping what started) on failure.
  bool start(const std::string& run_dir) {
    run_dir_ = run_dir;
    const auto t0 = clock::now();
    actors::register_message_types(config_);
    actors::configure_scheduler(config_, 2);
    config_.load<caf::io::middleman>();
    system_ = std::make_unique<caf::actor_system>(config_);

    auto coordinator = actors::start_coordinator(*system_, spec_, static_cast<std::uint16_t>(plan_.coordinator_port),
                                                 publish_host(plan_.coordinator_host));
    if (!coordinator) {
      std::fprintf(stderr, "afd launch: %s\n", coordinator.err().message().c_str());
      return false;
    }
    coordinator_ = coordinator->handle;
    events_ = std::make_shared<coordinator_events>();
    watcher_ = system_->spawn(watch_coordinator, coordinator_, events_);

    actors::worker_environment env;
    if (spec_.transport.type == dataplane::transport_settings::kind::loopback)
      env.fabric = transport::loopback_fabric::create();
    for (const auto& p : plan_.processes) {
      if (p.in_launcher) {
        for (const auto& name : p.workers) {
          auto w = actors::spawn_worker(*system_, spec_, name, coordinator_, env);
          if (!w) {
            std::fprintf(stderr, "afd launch: %s\n", w.err().message().c_str());
            abort_start();
            return false;
          }
        }
        procs_.push_back(worker_process{p, std::nullopt, {}});
        continue;
      }
      worker_process w{p, std::nullopt, run_dir + "/" + p.name + ".log"};
      std::ofstream(w.log, std::ios::trunc).close();
      auto child = child_process::spawn(worker_command(p, options_), w.log);
      if (!child) {
        std::fprintf(stderr, "afd launch: cannot start worker process '%s': %s\n", p.name.c_str(),
                     child.err().message().c_str());
        abort_start();
        return false;
      }
      w.child.emplace(std::move(*child));
      procs_.push_back(std::move(w));
    }
    write_process_file();

    const auto deadline = t0 + start_timeout_;
    for (;;) {
      if (int sig = stop_signal()) {
        std::fprintf(stderr, "afd launch: signal %d during start; stopping\n", sig);
        abort_start();
        return false;
      }
      {
        std::lock_guard lock(events_->mutex);
        if (events_->ready) break;
        if (!events_->failure.empty() || events_->down) {
          std::fprintf(stderr, "afd launch: cluster '%s' failed to start: %s\n", spec_.name.c_str(),
                       events_->failure.empty() ? ("the coordinator stopped: " + events_->down_reason).c_str()
                                                : events_->failure.c_str());
          break;  // reported below with the processes that ended
        }
      }
      bool exited = false;
      for (auto& w : procs_)
        if (w.child)
          if (auto status = w.child->poll()) {
            report_exit(w, *status, "while the cluster was starting");
            exited = true;
          }
      if (exited) {
        abort_start();
        return false;
      }
      if (clock::now() >= deadline) {
        report_not_ready();
        abort_start();
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    bool ready = false;
    {
      std::lock_guard lock(events_->mutex);
      ready = events_->ready;
    }
    {
      // Not under the lock: stopping waits for the watcher, whose down handler takes it.
      if (!ready) {
        std::this_thread::sleep_for(actors::timeouts::reap_crashed);
        for (auto& w : procs_)
          if (w.child)
            if (auto status = w.child->poll(); status && !exited_cleanly(*status))
              report_exit(w, *status, "while the cluster was starting");
        abort_start();
        return false;
      }
    }
    ready_seconds_ = std::chrono::duration<double>(clock::now() - t0).count();
    serving_ = true;
    return true;
  }

  /// Stops what started after a failed start, naming where the logs are.
  void abort_start() {
    std::fprintf(stderr, "afd launch: cluster not started; logs in %s\n", run_dir_.c_str());
    std::fflush(stderr);
    stop();
  }

  void print(bool foreground) const {
    print_summary(t_, spec_, file_, options_.coordinator, procs_, run_dir_, ready_seconds_, foreground);
  }

  /// Serves until a stop signal or the coordinator's end (`afd stop`); then stops everything.
  int serve() {
    for (;;) {
      if (int sig = stop_signal()) {
        std::fprintf(stderr, "afd launch: signal %d: stopping cluster '%s'\n", sig, spec_.name.c_str());
        break;
      }
      {
        std::lock_guard lock(events_->mutex);
        if (events_->down) {
          std::fprintf(stderr, "afd launch: the coordinator stopped (%s): stopping cluster '%s'\n",
                       events_->down_reason.c_str(), spec_.name.c_str());
          break;
        }
      }
      for (auto& w : procs_)
        if (w.child && !w.reported)
          if (auto status = w.child->poll()) {
            w.reported = true;
            report_exit(w, *status, "while serving");
            std::fprintf(stderr,
                         "afd launch: cluster '%s' lost worker process '%s': the coordinator moves its work to the "
                         "surviving workers where it can, or fails the requests; `afd status %s` shows the state\n",
                         spec_.name.c_str(), w.plan.name.c_str(), file_.c_str());
          }
      std::this_thread::sleep_for(actors::timeouts::supervision_tick);
    }
    stop();
    std::fprintf(stderr, "afd launch: cluster '%s' stopped\n", spec_.name.c_str());
    return 0;
  }

  /// Stops the coordinator (which stops every worker), then reaps every process: those that do not
  /// exit get SIGTERM, then SIGKILL. Idempotent.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    if (coordinator_) caf::anon_send(coordinator_, actors::shutdown_atom::value);
    auto wait_all = [&](int ms) {
      const auto until = clock::now() + std::chrono::milliseconds(ms);
      for (auto& w : procs_)
        if (w.child) {
          const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
          w.child->wait_for(static_cast<int>(std::max<long long>(0, left)));
        }
    };
    wait_all(static_cast<int>(actors::timeouts::process_exit.count()));
    for (int sig : {SIGTERM, SIGKILL}) {
      bool any = false;
      for (auto& w : procs_)
        if (w.child && w.child->running()) {
          std::fprintf(stderr, "afd launch: worker process '%s' (pid %d) did not stop; sending %s\n",
                       w.plan.name.c_str(), static_cast<int>(w.child->pid()), sig == SIGTERM ? "SIGTERM" : "SIGKILL");
          w.child->signal(sig);
          any = true;
        }
      if (any) wait_all(static_cast<int>(actors::timeouts::process_term.count()));
    }
    if (watcher_) caf::anon_send_exit(watcher_, caf::exit_reason::user_shutdown);
    if (system_) {
      // Every worker process is reaped by now; in-process actors end with the coordinator. A stuck
      // one (or the middleman's teardown) must not hold the launcher.
      const int code = serving_ ? 0 : 1;
      std::thread([code] {
        std::this_thread::sleep_for(actors::timeouts::shutdown);
        std::fprintf(stderr, "afd launch: actors did not stop within %lld ms; exiting\n",
                     static_cast<long long>(actors::timeouts::shutdown.count()));
        std::_Exit(code);
      }).detach();
      coordinator_ = nullptr;
      watcher_ = nullptr;
      system_.reset();
    }
    std::remove((run_dir_ + "/launcher.pid").c_str());
  }

 private:
  void write_process_file() const {
    std::ofstream pids(run_dir_ + "/processes");
    pids << "launcher " << ::getpid() << " coordinator";
    for (const auto& w : procs_)
      if (!w.child)
        for (const auto& n : w.plan.workers) pids << ' ' << n;
    pids << '\n';
    for (const auto& w : procs_)
      if (w.child) pids << w.plan.name << ' ' << w.child->pid() << ' ' << join(w.plan.workers) << '\n';
    std::ofstream(run_dir_ + "/launcher.pid") << ::getpid() << '\n';
  }

  void report_not_ready() {
    std::vector<std::string> waiting;
    caf::scoped_actor self{*system_};
    self->request(coordinator_, actors::timeouts::launcher_status, actors::status_atom::value)
        .receive(
            [&](actors::cluster_status_msg& s) {
              for (const auto& w : s.workers)
                if (w.state != static_cast<std::uint8_t>(worker_state::ready))
                  waiting.push_back(w.name + " (" + std::string(to_string(static_cast<worker_state>(w.state))) + ")");
            },
            [&](caf::error&) {});
    std::fprintf(stderr,
                 "afd launch: cluster '%s' was not ready after %lld s; workers not ready (never registered, or "
                 "still loading/connecting): %s\n",
                 spec_.name.c_str(), static_cast<long long>(start_timeout_.count()),
                 waiting.empty() ? "unknown (the coordinator did not answer)" : join(waiting).c_str());
    for (const auto& w : procs_)
      if (w.child) std::fprintf(stderr, "  log of process '%s': %s\n", w.plan.name.c_str(), w.log.c_str());
  }

  topology::topology t_;
  dataplane::cluster_spec spec_;
  launch_plan plan_;
  worker_command_options options_;
  std::string file_;
  std::chrono::seconds start_timeout_;
  std::string run_dir_;
  caf::actor_system_config config_;
  std::unique_ptr<caf::actor_system> system_;
  caf::actor coordinator_;
  caf::actor watcher_;
  std::shared_ptr<coordinator_events> events_;
  std::vector<worker_process> procs_;
  double ready_seconds_ = 0;
  bool stopped_ = false;
  bool serving_ = false;
};


launcher::launcher(launcher_options o)
    : impl_(std::make_unique<launcher_impl>(std::move(o.topology), std::move(o.spec), std::move(o.plan),
                                            std::move(o.worker), std::move(o.file), o.start_timeout)) {}
launcher::~launcher() = default;
bool launcher::start(const std::string& run_dir) { return impl_->start(run_dir); }
void launcher::print(bool foreground) const { impl_->print(foreground); }
int launcher::serve() { return impl_->serve(); }
void launcher::stop() { impl_->stop(); }

}  // namespace afd::launch
