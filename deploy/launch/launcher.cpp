// The launcher and the node agent (launcher.hpp): the coordinator in this process when it hosts
// it, one forked `afd worker` process per process of the plan on its node(s), the agents of other
// nodes, readiness, supervision while serving (restart budget), orderly stop.

#include "deploy/launch/launcher.hpp"
#include "runtime/faults/faults.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

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
#include "deploy/launch/succession.hpp"
#include "actors/messages.hpp"
#include "actors/timeouts.hpp"
#include "actors/worker.hpp"
#include "deploy/launch/child_process.hpp"
#include "deploy/launch/signals.hpp"
#include "deploy/launch/timeouts.hpp"
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
  bool down_in_order = false;  ///< the coordinator actor ended itself (a stop), not its link
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
      ev->down_in_order = !m.reason || m.reason == caf::exit_reason::normal ||
                          m.reason == caf::exit_reason::user_shutdown;
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

/// One process started by the launcher: a worker process it supervises, or the agent of another
/// node (started once; its own workers are supervised there).
struct worker_process {
  process_plan plan;
  std::vector<std::string> argv;  ///< how it is (re)started; empty for the launcher's own workers
  bool agent = false;
  bool stdin_pipe = false;
  std::optional<child_process> child;
  std::string log;
  supervised_state state = supervised_state::running;
  restart_budget budget;
  bool reported = false;  ///< an agent's exit was reported while serving
  int coordinator_index = -1;  ///< a coordinator's process: its place in the list (0: the primary)
};

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

/// "worker process 'f1' (workers f1, pid 123)" / "agent of node 'b' (pid 123)".
std::string describe(const worker_process& w) {
  const std::string pid = w.child ? ", pid " + std::to_string(w.child->pid()) : std::string();
  if (w.agent) {
    // "the agent of node 'b' (ssh root@10.0.0.2, pid 123)" / "srun (pid 123)".
    std::string how = w.argv.empty() ? std::string("?") : w.argv[0];
    if (how == "ssh")
      for (std::size_t i = 1; i + 1 < w.argv.size(); ++i)
        if (w.argv[i + 1] == "--") how += " " + w.argv[i];
    if (w.plan.name.rfind("node ", 0) == 0)
      return "the agent of node '" + w.plan.name.substr(5) + "' (" + how + pid + ")";
    return w.plan.name + " (" + how + pid + ")";
  }
  if (w.coordinator_index > 0)
    return "standby coordinator " + std::to_string(w.coordinator_index) + "'s process (" +
           (pid.empty() ? std::string("-") : pid.substr(2)) + ")";
  if (w.plan.workers.empty()) return "the coordinator's process (" + (pid.empty() ? std::string("-") : pid.substr(2)) + ")";
  return "worker process '" + w.plan.name + "' (workers " + join(w.plan.workers) + pid + ")";
}

void print_log_tail(const std::string& log) {
  const std::string tail = tail_lines(log, 15);
  if (tail.empty()) {
    std::fprintf(stderr, "  (its log %s is empty)\n", log.c_str());
    return;
  }
  std::fprintf(stderr, "  last lines of %s:\n", log.c_str());
  std::size_t pos = 0;
  while (pos < tail.size()) {
    const auto end = tail.find('\n', pos);
    std::fprintf(stderr, "    %s\n", tail.substr(pos, end - pos).c_str());
    pos = end == std::string::npos ? tail.size() : end + 1;
  }
}

void report_exit(const std::string& who, const worker_process& w, int status, const char* when) {
  std::fprintf(stderr, "%s: %s %s %s\n", who.c_str(), describe(w).c_str(), describe_wait_status(status).c_str(), when);
  if (w.agent && WIFEXITED(status) && WEXITSTATUS(status) == 255)
    std::fprintf(stderr, "  (exit status 255 is ssh's own: it could not log in or lost the connection)\n");
  print_log_tail(w.log);
}

/// True once this process's stdin has reached its end (the ssh connection of the launcher closed).
bool stdin_closed() {
  pollfd p{0, POLLIN, 0};
  if (::poll(&p, 1, 0) != 1) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return true;
  char buf[256];
  const ssize_t n = ::read(0, buf, sizeof(buf));
  return n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
}

/// The address the coordinator is published on: the loopback address for a loopback node (not
/// reachable from elsewhere, as the file says), every interface otherwise.
std::string publish_host(const std::string& host) {
  if (host == "localhost") return "127.0.0.1";
  if (host == "0.0.0.0" || host == "::") return "";
  // Only the configured address when it is one (the issue's "bind only to the configured
  // addresses"); a host name may resolve differently here than elsewhere, so every interface.
  in6_addr buf{};
  if (::inet_pton(AF_INET, host.c_str(), &buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), &buf) == 1) return host;
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

void print_summary(const std::string& who, const topology::topology& t, const dataplane::cluster_spec& spec,
                   const std::string& file, const std::string& coordinator, bool host_coordinator,
                   const std::vector<worker_process>& procs, const launch_plan& plan, const std::string& run_dir,
                   double seconds, bool foreground) {
  auto process_of = [&](const std::string& worker) -> std::pair<std::string, std::string> {
    for (const auto& p : procs)
      if (!p.agent)
        for (const auto& w : p.plan.workers)
          if (w == worker)
            return {p.plan.name, std::to_string(p.child ? static_cast<long>(p.child->pid()) : static_cast<long>(::getpid()))};
    for (const auto& p : plan.processes)
      for (const auto& w : p.workers)
        if (w == worker) return {"node " + p.node, "-"};
    return {"launcher", std::to_string(::getpid())};
  };
  std::printf("cluster '%s': %zu attention + %zu FFN workers ready in %.1f s\n", spec.name.c_str(),
              spec.attention_workers.size(), spec.ffn_workers.size(), seconds);
  long coordinator_pid = static_cast<long>(::getpid());
  for (const auto& p : procs)
    if (p.plan.name == "coordinator" && p.plan.workers.empty() && p.child) coordinator_pid = static_cast<long>(p.child->pid());
  if (host_coordinator)
    std::printf("  coordinator  %s (its own process, supervised by %s, pid %ld)\n", coordinator.c_str(), who.c_str(),
                coordinator_pid);
  else
    std::printf("  coordinator  %s (node %s)\n", coordinator.c_str(), t.coordinator.node.c_str());
  for (const auto& c : plan.coordinators)
    if (c.index > 0) {
      std::string pid = "started by the agent of node " + c.node;
      for (const auto& p : procs)
        if (p.coordinator_index == c.index && p.child) pid = "pid " + std::to_string(p.child->pid());
      std::printf("  standby %d    %s (node %s, %s)\n", c.index, host_port(connect_host(c.host), c.port).c_str(),
                  c.node.c_str(), pid.c_str());
    }
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
    std::printf("  %-10s %-10s %-8s %-10s %-8s %lld KV blocks of %lld tokens, batch %lld\n", a.name.c_str(),
                "attention", a.device.c_str(), proc.c_str(), pid.c_str(), static_cast<long long>(a.kv_blocks),
                static_cast<long long>(a.block_size), static_cast<long long>(a.max_batch));
  }
  for (std::size_t i = 0; i < spec.ffn_workers.size(); ++i) {
    const auto& f = spec.ffn_workers[i];
    auto [proc, pid] = process_of(f.name);
    std::printf("  %-10s %-10s %-8s %-10s %-8s %s\n", f.name.c_str(), "ffn", f.device.c_str(), proc.c_str(),
                pid.c_str(), units_summary(spec.placement.assignment_of(static_cast<int>(i))).c_str());
  }
  for (const auto& p : procs)
    if (p.agent)
      std::printf("  agent        %s, pid %ld: %s\n", p.plan.name.c_str(),
                  p.child ? static_cast<long>(p.child->pid()) : 0L, shell_join(p.argv).c_str());
  std::printf("  supervision  worker processes restarted within %s\n", restart_policy{}.to_string().c_str());
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

/// The launcher or agent after validation: owns the actor system, the coordinator (when it hosts
/// it) and the processes it starts.
class launcher_impl {
 public:
  explicit launcher_impl(launcher_options o) : o_(std::move(o)) {}

  /// Starts everything and waits until ready; false (after stopping what started) on failure.
  bool start(const std::string& run_dir) {
    run_dir_ = run_dir;
    const auto t0 = clock::now();
    actors::register_message_types(config_);
    actors::configure_scheduler(config_, 2);
    config_.load<caf::io::middleman>();
    if (o_.credentials)
      if (auto applied = tls::apply(*o_.credentials, config_); !applied) {
        std::fprintf(stderr, "%s: %s\n", o_.who.c_str(), applied.err().message().c_str());
        return false;
      }
    system_ = std::make_unique<caf::actor_system>(config_);
    events_ = std::make_shared<coordinator_events>();

    // Each coordinator (the primary, standbys) runs in a process of its own on its node,
    // supervised like the workers: when it dies it is restarted, and workers and clients find the
    // active one again (actors/README.md, "Failure model").
    for (const auto& c : o_.plan.coordinators) {
      if (!runs_coordinator(c)) continue;
      process_plan cp;
      cp.name = c.index == 0 ? "coordinator" : "standby-" + std::to_string(c.index);
      cp.node = c.node;
      worker_process w{cp, coordinator_command(c.index), false, false, std::nullopt, run_dir + "/" + cp.name + ".log",
                       supervised_state::running, restart_budget(o_.restarts), false};
      w.coordinator_index = c.index;
      if (!start_process(std::move(w))) {
        abort_start();
        return false;
      }
    }
    if (o_.host_coordinator && !connect_coordinator(t0 + o_.start_timeout)) {
      abort_start();
      return false;
    }

    actors::worker_environment env;
    env.reconnect = reconnect_fn();
    env.reconnect_grace = actors::timeouts::coordinator_failover_grace;
    if (o_.spec.transport.type == dataplane::transport_settings::kind::loopback)
      env.fabric = transport::loopback_fabric::create();
    for (const auto& p : o_.plan.processes) {
      if (p.in_launcher) {
        if (!o_.host_coordinator) continue;  // the coordinator's node hosts them
        for (const auto& name : p.workers) {
          auto w = actors::spawn_worker(*system_, o_.spec, name, coordinator_, env);
          if (!w) {
            std::fprintf(stderr, "%s: %s\n", o_.who.c_str(), w.err().message().c_str());
            abort_start();
            return false;
          }
        }
        procs_.push_back(worker_process{p, {}, false, false, std::nullopt, {}, supervised_state::running,
                                        restart_budget(o_.restarts), false});
        continue;
      }
      if (!mine(p)) continue;
      if (!start_process({p, worker_command(p, o_.worker), false, false, std::nullopt, run_dir + "/" + p.name + ".log",
                          supervised_state::running, restart_budget(o_.restarts), false})) {
        abort_start();
        return false;
      }
    }
    for (const auto& a : o_.agents) {
      process_plan p;
      p.name = a.name;
      if (!start_process({p, a.argv, true, a.stdin_pipe, std::nullopt, run_dir + "/" + log_name(a.name) + ".log",
                          supervised_state::running, restart_budget(o_.restarts), false})) {
        abort_start();
        return false;
      }
    }
    write_process_files();

    if (!o_.host_coordinator && !o_.wait_for_cluster) {
      // An agent of a node without the coordinator: started once its processes run; the launcher
      // (or whoever started the agents) waits for the cluster.
      ready_seconds_ = std::chrono::duration<double>(clock::now() - t0).count();
      serving_ = true;
      last_reachable_ = clock::now();
      return true;
    }

    const auto deadline = t0 + o_.start_timeout;
    auto next_connect = clock::now();
    std::string last_connect_error;
    for (;;) {
      if (int sig = stop_signal()) {
        std::fprintf(stderr, "%s: signal %d during start; stopping\n", o_.who.c_str(), sig);
        abort_start();
        return false;
      }
      if (!coordinator_ && clock::now() >= next_connect) {
        // The coordinator runs in an agent (over Slurm): connect once it is published.
        auto c = find_coordinator();
        if (c) {
          coordinator_ = *c;
          watcher_ = system_->spawn(watch_coordinator, coordinator_, events_);
        } else {
          last_connect_error = c.err().message();
        }
        next_connect = clock::now() + timeouts::readiness_poll;
      }
      {
        std::lock_guard lock(events_->mutex);
        if (events_->ready) break;
        if (!events_->failure.empty() || events_->down) {
          std::fprintf(stderr, "%s: cluster '%s' failed to start: %s\n", o_.who.c_str(), o_.spec.name.c_str(),
                       events_->failure.empty() ? ("the coordinator stopped: " + events_->down_reason).c_str()
                                                : events_->failure.c_str());
          break;  // reported below with the processes that ended
        }
      }
      bool exited = false;
      for (auto& w : procs_)
        if (w.child)
          if (auto status = w.child->poll()) {
            report_exit(o_.who, w, *status, "while the cluster was starting");
            exited = true;
          }
      if (exited) {
        abort_start();
        return false;
      }
      if (clock::now() >= deadline) {
        if (!coordinator_)
          std::fprintf(stderr, "%s: no coordinator at %s after %lld s: %s\n", o_.who.c_str(),
                       o_.worker.coordinator.c_str(), static_cast<long long>(o_.start_timeout.count()),
                       last_connect_error.c_str());
        else
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
    // Not under the lock: stopping waits for the watcher, whose down handler takes it.
    if (!ready) {
      std::this_thread::sleep_for(actors::timeouts::reap_crashed);
      for (auto& w : procs_)
        if (w.child)
          if (auto status = w.child->poll(); status && !exited_cleanly(*status))
            report_exit(o_.who, w, *status, "while the cluster was starting");
      abort_start();
      return false;
    }
    ready_seconds_ = std::chrono::duration<double>(clock::now() - t0).count();
    serving_ = true;
    if (!o_.fault_rules.empty() && !arm_faults()) {
      abort_start();
      return false;
    }
    return true;
  }

  /// Arms the fault rules in the running cluster and schedules the process rules.
  bool arm_faults() {
    if (!coordinator_) return true;
    caf::scoped_actor self{*system_};
    bool ok = false;
    std::string why;
    self->request(coordinator_, actors::timeouts::client_request, actors::arm_faults_atom::value,
                  actors::fault_plan_msg{o_.fault_rules, o_.fault_seed})
        .receive([&](bool) { ok = true; }, [&](caf::error& e) { why = system_->render(e); });
    if (!ok) {
      std::fprintf(stderr, "%s: cannot arm the fault rules: %s\n", o_.who.c_str(), why.c_str());
      return false;
    }
    armed_at_ = clock::now();
    for (std::size_t i = 0; i < o_.fault_rules.size(); ++i) {
      auto r = faults::parse_rule(o_.fault_rules[i]);
      if (r && faults::layer_of(r->kind) == faults::fault_layer::process)
        process_faults_.push_back({*r, i, armed_at_ + r->after});
    }
    std::fprintf(stderr, "%s: armed %zu fault rule(s), seed %llu\n", o_.who.c_str(), o_.fault_rules.size(),
                 static_cast<unsigned long long>(o_.fault_seed));
    return true;
  }

  /// Applies the process rules that are due to this launcher's worker processes; resumes paused
  /// ones whose pause is over. Firings are counted in the coordinator's plan.
  void apply_process_faults() {
    const auto now = clock::now();
    for (auto it = paused_.begin(); it != paused_.end();) {
      if (now < it->second) {
        ++it;
        continue;
      }
      ::kill(it->first, SIGCONT);
      std::fprintf(stderr, "%s: fault: resumed pid %ld\n", o_.who.c_str(), static_cast<long>(it->first));
      it = paused_.erase(it);
    }
    for (auto it = process_faults_.begin(); it != process_faults_.end();) {
      if (now < it->due) {
        ++it;
        continue;
      }
      bool hit = false;
      for (auto& w : procs_) {
        if (!w.child || w.agent || !w.child->running()) continue;
        bool targeted = false;
        for (const auto& name : w.plan.workers) {
          const std::string role = o_.topology.attention_worker_index(name) >= 0 ? "attention" : "ffn";
          targeted = targeted || ((it->rule.worker.empty() || it->rule.worker == name) &&
                                  (it->rule.role.empty() || it->rule.role == role));
        }
        if (!targeted) continue;
        hit = true;
        const ::pid_t pid = w.child->pid();
        if (it->rule.kind == faults::fault_kind::kill_process) {
          w.child->signal(SIGKILL);
        } else {
          w.child->signal(SIGSTOP);
          paused_.push_back({pid, now + it->rule.duration});
        }
        std::fprintf(stderr, "%s: fault '%s' applied to %s\n", o_.who.c_str(), it->rule.text.c_str(), describe(w).c_str());
        if (coordinator_) caf::anon_send(coordinator_, actors::fault_fired_atom::value, static_cast<std::uint64_t>(it->index));
      }
      if (!hit)
        std::fprintf(stderr, "%s: fault '%s' targets no worker process of this launcher\n", o_.who.c_str(),
                     it->rule.text.c_str());
      it = process_faults_.erase(it);
    }
  }

  /// Stops what started after a failed start, naming where the logs are.
  void abort_start() {
    std::fprintf(stderr, "%s: cluster not started; logs in %s\n", o_.who.c_str(), run_dir_.c_str());
    std::fflush(stderr);
    stop();
  }

  void print(bool foreground) const {
    print_summary(o_.who, o_.topology, o_.spec, o_.file, o_.worker.coordinator, o_.host_coordinator, procs_, o_.plan,
                  run_dir_, ready_seconds_, foreground);
  }

  /// Serves until a stop signal or the coordinator's end; supervises the worker processes meanwhile.
  int serve() {
    int code = 0;
    const bool agent_only = !o_.host_coordinator && !o_.wait_for_cluster;
    for (;;) {
      if (int sig = stop_signal()) {
        std::fprintf(stderr, "%s: signal %d: stopping cluster '%s'\n", o_.who.c_str(), sig, o_.spec.name.c_str());
        break;
      }
      if (!agent_only) {
        bool down = false, in_order = false;
        std::string reason;
        {
          std::lock_guard lock(events_->mutex);
          down = events_->down;
          in_order = events_->down_in_order;
          reason = events_->down_reason;
        }
        if (down && coordinator_) {
          // The process the lost coordinator ran in, when this launcher runs it.
          worker_process* cp = coordinator_process(active_index_);
          if (in_order) {
            // Stopped (`afd stop`): its process exits by itself; the cluster ends.
            std::fprintf(stderr, "%s: the coordinator stopped (%s): stopping cluster '%s'\n", o_.who.c_str(),
                         reason.c_str(), o_.spec.name.c_str());
            if (cp && cp->child && cp->child->wait_for(static_cast<int>(actors::timeouts::process_exit.count())))
              cp->state = supervised_state::stopped;
            break;
          }
          // A coordinator stopped in order (`afd stop`) exits cleanly: the cluster ends. One that
          // died is restarted (here, or already by supervise()), and the launcher connects to the
          // active one (the restarted process, or a standby that took over).
          const bool restarted = cp && cp->child && cp->child->pid() != coordinator_pid_;
          std::optional<int> status;
          if (cp && cp->child && !restarted)
            status = cp->child->wait_for(static_cast<int>(timeouts::coordinator_probe_timeout.count()));
          if (cp && cp->child && !restarted && !status) {
            // Its process runs but its link is gone (paused, or cut off): it is deposed. It is
            // killed before a new one starts, so that two coordinators never serve one cluster.
            std::fprintf(stderr, "%s: the coordinator's process (pid %ld) runs but does not answer: killing it\n",
                         o_.who.c_str(), static_cast<long>(cp->child->pid()));
            cp->child->signal(SIGKILL);
            status = cp->child->wait_for(static_cast<int>(actors::timeouts::process_term.count()));
          }
          const bool standbys = o_.plan.coordinators.size() > 1;
          if (!standbys && (!cp || cp->state == supervised_state::given_up || cp->state == supervised_state::stopped ||
                            (!restarted && (!status || exited_cleanly(*status))))) {
            if (cp && status) cp->state = supervised_state::stopped;
            std::fprintf(stderr, "%s: the coordinator stopped (%s): stopping cluster '%s'\n", o_.who.c_str(),
                         reason.c_str(), o_.spec.name.c_str());
            break;
          }
          coordinator_ = nullptr;
          lost_since_ = clock::now();
          {
            std::lock_guard lock(events_->mutex);
            events_->down = false;
            events_->ready = false;
          }
          if (cp && !restarted && status && cp->state == supervised_state::running) {
            std::fprintf(stderr, "%s: the coordinator's process %s while serving; restarting it (workers and clients "
                                 "keep their state and find the active coordinator again)\n",
                         o_.who.c_str(), describe_wait_status(*status).c_str());
            restart(*cp, clock::now());
            write_process_files();
            if (cp->state == supervised_state::given_up && !standbys) break;
          } else if (!cp) {
            std::fprintf(stderr, "%s: lost the active coordinator (%s); looking for the next one\n", o_.who.c_str(),
                         reason.c_str());
          }
          next_coordinator_try_ = clock::now();
        }
        if (!coordinator_ && clock::now() >= next_coordinator_try_) {
          int index = -1;
          auto c = find_coordinator(&index);
          if (c) {
            coordinator_ = *c;
            watcher_ = system_->spawn(watch_coordinator, coordinator_, events_);
            set_active(index);
            std::fprintf(stderr, "%s: connected to the active coordinator (%s)\n", o_.who.c_str(),
                         describe_coordinator(index).c_str());
          } else if (clock::now() - lost_since_ >= actors::timeouts::coordinator_failover_grace) {
            std::fprintf(stderr, "%s: no coordinator answered within %lld ms: stopping cluster '%s'\n",
                         o_.who.c_str(), static_cast<long long>(actors::timeouts::coordinator_failover_grace.count()),
                         o_.spec.name.c_str());
            code = 1;
            break;
          }
          next_coordinator_try_ = clock::now() + actors::timeouts::coordinator_retry;
        }
      }
      if (agent_only) {
        const auto now = clock::now();
        if (now >= next_probe_) {
          // Any coordinator of the cluster (its own standby too) keeps the node's processes.
          auto list = parse_host_ports(o_.worker.coordinator);
          reachable_ = false;
          if (list)
            for (const auto& [host, port] : *list)
              if (tcp_reachable(host, port, timeouts::coordinator_probe_timeout)) {
                reachable_ = true;
                break;
              }
          if (reachable_) last_reachable_ = clock::now();
          next_probe_ = clock::now() + timeouts::coordinator_probe_interval;
        }
        if (clock::now() - last_reachable_ >= timeouts::coordinator_grace) {
          std::fprintf(stderr,
                       "%s: no coordinator at %s for %lld s (the grace period): stopping the processes of node '%s'\n",
                       o_.who.c_str(), o_.worker.coordinator.c_str(),
                       static_cast<long long>(timeouts::coordinator_grace.count()), o_.node.c_str());
          code = 1;
          break;
        }
        if (o_.exit_with_stdin && !launcher_gone_ && stdin_closed()) {
          if (o_.plan.coordinators.size() <= 1) {
            std::fprintf(stderr, "%s: the launcher's connection closed: stopping the processes of node '%s'\n",
                         o_.who.c_str(), o_.node.c_str());
            break;
          }
          // With standby coordinators the cluster outlives its launcher's node: this node serves
          // on while a coordinator answers (the grace period above bounds it; `afd stop` ends it).
          std::fprintf(stderr,
                       "%s: the launcher's connection closed; node '%s' serves on while a coordinator of the cluster "
                       "answers\n",
                       o_.who.c_str(), o_.node.c_str());
          launcher_gone_ = true;
        }
      }
      apply_process_faults();
      supervise();
      if (serving_ && workers_all_stopped()) {
        // The cluster stopped them (`afd stop`): whatever coordinator is left (one being restarted
        // when the stop came) has nothing to serve.
        std::fprintf(stderr, "%s: every worker process%s was stopped by the cluster: stopping\n", o_.who.c_str(),
                     agent_only ? (" of node '" + o_.node + "'").c_str() : "");
        break;
      }
      if (agent_only) {
        bool any = false, given_up = false;
        for (const auto& w : procs_) {
          if (w.state == supervised_state::running || w.state == supervised_state::held) any = true;
          if (w.state == supervised_state::given_up) given_up = true;
        }
        if (!any) {
          std::fprintf(stderr, "%s: every process of node '%s' has ended%s\n", o_.who.c_str(), o_.node.c_str(),
                       given_up ? " (some were given up)" : "");
          code = given_up ? 1 : 0;
          break;
        }
      }
      std::this_thread::sleep_for(actors::timeouts::supervision_tick);
    }
    stop();
    std::fprintf(stderr, "%s: cluster '%s' stopped%s\n", o_.who.c_str(), o_.spec.name.c_str(),
                 agent_only ? (" on node '" + o_.node + "'").c_str() : "");
    return code;
  }

  /// Stops the coordinator (which stops every worker), then reaps every process: those that do not
  /// exit get SIGTERM, then SIGKILL. Idempotent.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    for (const auto& [pid, until] : paused_) ::kill(pid, SIGCONT);
    paused_.clear();
    if (coordinator_ && (o_.host_coordinator || serving_)) caf::anon_send(coordinator_, actors::shutdown_atom::value);
    const bool agent_only = !o_.host_coordinator && !o_.wait_for_cluster;
    for (auto& w : procs_) {
      if (!w.child || !w.child->running()) continue;
      // Agents of other nodes stop their workers when their stdin ends; an agent's own workers
      // have no coordinator to stop them in order when it is gone.
      if (w.agent) w.child->close_stdin();
      if (agent_only && !reachable_) w.child->signal(SIGTERM);
    }
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
          std::fprintf(stderr, "%s: %s did not stop; sending %s\n", o_.who.c_str(), describe(w).c_str(),
                       sig == SIGTERM ? "SIGTERM" : "SIGKILL");
          w.child->signal(sig);
          any = true;
        }
      if (any) wait_all(static_cast<int>(actors::timeouts::process_term.count()));
    }
    for (auto& w : procs_)
      if (w.state == supervised_state::running || w.state == supervised_state::held) w.state = supervised_state::stopped;
    if (!run_dir_.empty()) write_process_files();
    if (watcher_) caf::anon_send_exit(watcher_, caf::exit_reason::user_shutdown);
    if (system_) {
      // Every process is reaped by now; in-process actors end with the coordinator. A stuck one
      // (or the middleman's teardown) must not hold the launcher.
      const int code = serving_ ? 0 : 1;
      std::thread([code] {
        std::this_thread::sleep_for(actors::timeouts::shutdown);
        std::fprintf(stderr, "afd: actors did not stop within %lld ms; exiting\n",
                     static_cast<long long>(actors::timeouts::shutdown.count()));
        std::_Exit(code);
      }).detach();
      coordinator_ = nullptr;
      watcher_ = nullptr;
      system_.reset();
    }
    if (!run_dir_.empty()) std::remove((run_dir_ + "/launcher.pid").c_str());
  }

 private:
  bool secure() const { return o_.credentials.has_value(); }

  /// Starts `w` (its log truncated) and supervises it from now on; false when it cannot start.
  bool start_process(worker_process w) {
    std::ofstream(w.log, std::ios::trunc).close();
    if (!spawn(w)) return false;
    procs_.push_back(std::move(w));
    return true;
  }

  /// `afd coordinator FILE [--standby N] [--model DIR] [--credentials DIR] [--start-timeout S]`.
  std::vector<std::string> coordinator_command(int index) const {
    std::vector<std::string> argv{o_.worker.afd_executable, "coordinator", o_.worker.topology_file, "--start-timeout",
                                  std::to_string(o_.start_timeout.count())};
    if (index > 0) argv.insert(argv.end(), {"--standby", std::to_string(index)});
    if (!o_.worker.model_override.empty()) argv.insert(argv.end(), {"--model", o_.worker.model_override});
    if (!o_.worker.credentials.empty()) argv.insert(argv.end(), {"--credentials", o_.worker.credentials});
    return argv;
  }

  /// Whether this launcher (or agent) runs coordinator `c`'s process: an agent those of its node
  /// (the primary only when it hosts the coordinator); the launcher the primary when it hosts it,
  /// and the standbys of this machine that no agent runs.
  bool runs_coordinator(const coordinator_plan& c) const {
    if (!o_.node.empty()) return c.node == o_.node && (c.index > 0 || o_.host_coordinator);
    if (c.index == 0) return o_.host_coordinator;
    if (!o_.host_coordinator || !c.local) return false;
    for (const auto& a : o_.agents)
      if (a.name == "node " + c.node || a.name == "srun") return false;
    return true;
  }

  /// The active coordinator among the cluster's coordinators (the only one without standbys).
  expected<caf::actor> find_coordinator(int* index = nullptr) {
    auto list = parse_host_ports(o_.worker.coordinator);
    if (!list) return list.err();
    return connect_active(*system_, *list, secure(), actors::timeouts::coordinator_handshake, index);
  }

  /// Remembers which coordinator is active, and its process's pid when it is one of ours.
  void set_active(int index) {
    active_index_ = index;
    coordinator_pid_ = 0;
    if (auto* cp = coordinator_process(index)) coordinator_pid_ = cp->child->pid();
  }

  std::string describe_coordinator(int index) const {
    for (const auto& c : o_.plan.coordinators)
      if (c.index == index)
        return (index == 0 ? std::string("the primary") : "standby " + std::to_string(index)) + " at " +
               host_port(connect_host(c.host), c.port) + " on node " + c.node;
    return "?";
  }

  /// Connects to the active coordinator (its process publishes it within a moment, and with
  /// standbys the coordinators choose one), until `deadline`; false (with the reason on stderr)
  /// when none answered or a coordinator's process ended.
  bool connect_coordinator(clock::time_point deadline) {
    std::string last_error;
    while (clock::now() < deadline) {
      if (stop_signal()) return false;
      for (auto& w : procs_)
        if (w.child && w.coordinator_index >= 0)
          if (auto status = w.child->poll()) {
            report_exit(o_.who, w, *status, "while starting");
            return false;
          }
      int index = 0;
      auto c = find_coordinator(&index);
      if (c) {
        coordinator_ = *c;
        watcher_ = system_->spawn(watch_coordinator, coordinator_, events_);
        set_active(index);
        return true;
      }
      last_error = c.err().message();
      std::this_thread::sleep_for(actors::timeouts::coordinator_retry);
    }
    std::fprintf(stderr, "%s: no coordinator at %s: %s\n", o_.who.c_str(), o_.worker.coordinator.c_str(),
                 last_error.c_str());
    return false;
  }

  /// How the launcher's own workers find the active coordinator after a loss.
  std::function<expected<caf::actor>()> reconnect_fn() {
    auto list = parse_host_ports(o_.worker.coordinator);
    if (!list) return {};
    caf::actor_system* sys = system_.get();
    const bool tls_on = secure();
    const address_list addresses = *list;
    return [sys, addresses, tls_on]() -> expected<caf::actor> {
      return connect_active(*sys, addresses, tls_on, actors::timeouts::coordinator_handshake);
    };
  }

  /// The process of coordinator `index` (0: the primary), when this launcher runs it.
  worker_process* coordinator_process(int index = 0) {
    for (auto& w : procs_)
      if (w.child && !w.agent && w.coordinator_index == index && index >= 0) return &w;
    return nullptr;
  }

  /// True when this launcher runs worker processes and every one of them exited cleanly.
  bool workers_all_stopped() const {
    bool any = false;
    for (const auto& w : procs_) {
      if (!w.child || w.agent || w.coordinator_index >= 0) continue;
      any = true;
      if (w.state != supervised_state::stopped) return false;
    }
    return any;
  }

  /// Whether this launcher starts process `p` itself.
  bool mine(const process_plan& p) const {
    if (!o_.node.empty()) return p.node == o_.node;
    if (!o_.agents.empty())  // the agents start every process of their nodes
      for (const auto& a : o_.agents)
        if (a.name == "node " + p.node || a.name == "srun") return false;
    return p.local;
  }

  static std::string log_name(const std::string& name) {
    std::string out;
    for (char c : name) out += c == ' ' ? '-' : c;
    return out;
  }

  bool spawn(worker_process& w) {
    auto child = child_process::spawn(w.argv, w.log, w.stdin_pipe);
    if (!child) {
      std::fprintf(stderr, "%s: cannot start %s: %s\n", o_.who.c_str(),
                   w.agent ? w.plan.name.c_str() : ("worker process '" + w.plan.name + "'").c_str(),
                   child.err().message().c_str());
      return false;
    }
    w.child.emplace(std::move(*child));
    w.state = supervised_state::running;
    return true;
  }

  /// One look at every process: restarts within the budget, gives up beyond it, reports agents.
  void supervise() {
    bool changed = false;
    const auto now = clock::now();
    for (auto& w : procs_) {
      if (!w.child) continue;
      if (w.state == supervised_state::held) {
        if (reachable_) {
          restart(w, now);
          changed = true;
        }
        continue;
      }
      if (w.state != supervised_state::running) continue;
      auto status = w.child->poll();
      if (!status) continue;
      changed = true;
      if (w.agent) {
        if (!w.reported) report_exit(o_.who, w, *status, "while serving");
        w.reported = true;
        w.state = exited_cleanly(*status) ? supervised_state::stopped : supervised_state::given_up;
        continue;
      }
      if (exited_cleanly(*status)) {
        // The cluster (or a signal) stopped it in order: not a failure, not restarted.
        std::fprintf(stderr, "%s: %s exited cleanly; not restarted\n", o_.who.c_str(), describe(w).c_str());
        w.state = supervised_state::stopped;
        continue;
      }
      std::fprintf(stderr, "%s: %s %s while serving\n", o_.who.c_str(), describe(w).c_str(),
                   describe_wait_status(*status).c_str());
      if (!o_.host_coordinator && !reachable_ && w.coordinator_index < 0) {
        // Restarting it now would only fail to connect and spend the budget: wait (within the
        // grace period) for the coordinator to answer again.
        std::fprintf(stderr, "%s: no coordinator at %s right now; the restart of '%s' waits for it\n", o_.who.c_str(),
                     o_.worker.coordinator.c_str(), w.plan.name.c_str());
        w.state = supervised_state::held;
        continue;
      }
      restart(w, now);
    }
    if (changed) write_process_files();
  }

  void restart(worker_process& w, clock::time_point now) {
    const int used = w.budget.used(now);
    if (!w.budget.try_restart(now)) {
      std::fprintf(stderr,
                   "%s: giving up on worker process '%s' (workers %s): it exited %d times within %lld s, over its "
                   "restart budget of %s; its workers stay failed (`afd status %s`)\n",
                   o_.who.c_str(), w.plan.name.c_str(), join(w.plan.workers).c_str(), used + 1,
                   static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(o_.restarts.window).count()),
                   o_.restarts.to_string().c_str(), o_.file.c_str());
      print_log_tail(w.log);
      w.state = supervised_state::given_up;
      return;
    }
    const long old_pid = static_cast<long>(w.child->pid());
    std::ofstream(w.log, std::ios::app) << "--- " << o_.who << ": restart " << used + 1 << " of "
                                        << o_.restarts.to_string() << " ---\n";
    if (!spawn(w)) {
      w.state = supervised_state::given_up;
      return;
    }
    if (w.coordinator_index >= 0) {
      std::fprintf(stderr, "%s: restarted %s: restart %d of %s, pid %ld -> %ld\n", o_.who.c_str(),
                   w.coordinator_index == 0 ? "the coordinator's process"
                                            : ("standby coordinator " + std::to_string(w.coordinator_index) + "'s process").c_str(),
                   used + 1, o_.restarts.to_string().c_str(), old_pid, static_cast<long>(w.child->pid()));
      return;
    }
    std::fprintf(stderr,
                 "%s: restarted worker process '%s' (workers %s): restart %d of %s, pid %ld -> %ld; it registers "
                 "again under the same names\n",
                 o_.who.c_str(), w.plan.name.c_str(), join(w.plan.workers).c_str(), used + 1,
                 o_.restarts.to_string().c_str(), old_pid, static_cast<long>(w.child->pid()));
  }

  /// RUN/processes (name, pid, workers; read by tests and people), RUN/supervision (name, state,
  /// restarts: read by `afd status`) and RUN/launcher.pid (read by `afd stop`).
  void write_process_files() const {
    {
      std::ofstream pids(run_dir_ + "/processes.tmp");
      pids << (o_.node.empty() ? "launcher " : "agent ") << ::getpid();
      for (const auto& w : procs_)
        if (!w.child)
          for (const auto& n : w.plan.workers) pids << ' ' << n;
      pids << '\n';
      for (const auto& w : procs_)
        if (w.child) pids << log_name(w.plan.name) << ' ' << w.child->pid() << ' ' << join(w.plan.workers) << '\n';
    }
    std::rename((run_dir_ + "/processes.tmp").c_str(), (run_dir_ + "/processes").c_str());
    {
      std::ofstream sup(run_dir_ + "/supervision.tmp");
      const std::string where = o_.node.empty() ? std::string("this machine") : "node " + o_.node;
      for (const auto& w : procs_)
        if (w.child && !w.agent)
          sup << w.plan.name << ' ' << to_string(w.state) << ' ' << w.budget.total() << ' ' << where << ' '
              << o_.restarts.max_restarts << ' '
              << std::chrono::duration_cast<std::chrono::seconds>(o_.restarts.window).count() << '\n';
    }
    std::rename((run_dir_ + "/supervision.tmp").c_str(), (run_dir_ + "/supervision").c_str());
    if (!stopped_) std::ofstream(run_dir_ + "/launcher.pid") << ::getpid() << '\n';
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
                 "%s: cluster '%s' was not ready after %lld s; workers not ready (never registered, or "
                 "still loading/connecting): %s\n",
                 o_.who.c_str(), o_.spec.name.c_str(), static_cast<long long>(o_.start_timeout.count()),
                 waiting.empty() ? "unknown (the coordinator did not answer)" : join(waiting).c_str());
    for (const auto& w : procs_)
      if (w.child) std::fprintf(stderr, "  log of %s: %s\n", w.plan.name.c_str(), w.log.c_str());
  }

  launcher_options o_;
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
  bool reachable_ = true;  ///< an agent's last probe of the coordinator answered
  clock::time_point last_reachable_ = clock::now();
  clock::time_point next_probe_{};
  clock::time_point next_coordinator_try_{};
  ::pid_t coordinator_pid_ = 0;  ///< the coordinator process coordinator_ was reached in (0: not ours)
  int active_index_ = 0;         ///< coordinator_'s place in the list of coordinators
  clock::time_point lost_since_{};  ///< the active coordinator was lost then (none found since)
  bool launcher_gone_ = false;   ///< an agent whose launcher's connection closed (cluster with standbys)
  struct pending_process_fault {
    faults::fault_rule rule;
    std::size_t index = 0;  ///< in o_.fault_rules (the coordinator's plan)
    clock::time_point due;
  };
  clock::time_point armed_at_{};
  std::vector<pending_process_fault> process_faults_;
  std::vector<std::pair<::pid_t, clock::time_point>> paused_;  ///< paused processes, resumed then
};

int run_coordinator_process(const coordinator_process_options& o) {
  caf::actor_system_config cfg;
  actors::register_message_types(cfg);
  actors::configure_scheduler(cfg, 2);
  cfg.load<caf::io::middleman>();
  if (o.credentials)
    if (auto applied = tls::apply(*o.credentials, cfg); !applied) {
      std::fprintf(stderr, "%s: %s\n", o.who.c_str(), applied.err().message().c_str());
      return 2;
    }
  install_stop_signals();
  auto sys = std::make_unique<caf::actor_system>(cfg);
  const bool with_standbys = o.coordinators.size() > 1;
  auto coordinator = actors::spawn_coordinator(*sys, o.spec, with_standbys);
  // The port of a predecessor that was just killed is free again at once (the listening socket
  // closes with its process), but retry briefly in case the kernel has not released it yet.
  expected<std::uint16_t> port = error{errc::unavailable, "not published"};
  const auto give_up = clock::now() + timeouts::coordinator_probe_timeout * 5;
  for (;;) {
    port = tls::publish(*sys, coordinator, static_cast<std::uint16_t>(o.port), publish_host(o.host),
                        o.credentials.has_value());
    if (port || clock::now() >= give_up) break;
    std::this_thread::sleep_for(actors::timeouts::coordinator_retry);
  }
  if (!port) {
    std::fprintf(stderr, "%s: %s\n", o.who.c_str(), port.err().message().c_str());
    caf::anon_send_exit(coordinator, caf::exit_reason::user_shutdown);
    return 1;
  }
  std::fprintf(stderr, "%s: cluster '%s': coordinator at %s, pid %ld\n", o.who.c_str(), o.spec.name.c_str(),
               host_port(o.host, *port).c_str(), static_cast<long>(::getpid()));
  auto events = std::make_shared<coordinator_events>();
  auto watcher = sys->spawn(watch_coordinator, coordinator, events);
  int code = 0;
  bool asked_to_stop = false;
  std::unique_ptr<succession> succ;
  if (with_standbys)
    succ = std::make_unique<succession>(*sys, coordinator, o.coordinators, o.index, o.credentials.has_value(),
                                        o.who);
  auto next_step = clock::now();
  bool active = !with_standbys;
  for (;;) {
    {
      std::lock_guard lock(events->mutex);
      if (events->down) {
        std::fprintf(stderr, "%s: the coordinator stopped (%s)\n", o.who.c_str(), events->down_reason.c_str());
        // Stopped in order while it served (`afd stop`): the standbys stop with it.
        if (succ && active && events->down_in_order) {
          succ->stop_others();
          std::this_thread::sleep_for(actors::timeouts::coordinator_retry);  // let the messages leave
        }
        break;
      }
    }
    if (succ && !asked_to_stop && clock::now() >= next_step) {
      const auto v = succ->step();
      if (v == succession::verdict::deposed) {
        code = 3;
        break;
      }
      active = v == succession::verdict::active;
      next_step = clock::now() + actors::timeouts::succession_interval;
    }
    if (int sig = stop_signal(); sig && !asked_to_stop) {
      // Stopped by its supervisor or a user: stop the workers in order, as `afd stop` does.
      std::fprintf(stderr, "%s: signal %d: stopping the cluster\n", o.who.c_str(), sig);
      caf::anon_send(coordinator, actors::shutdown_atom::value);
      asked_to_stop = true;
    }
    std::this_thread::sleep_for(actors::timeouts::supervision_tick);
  }
  caf::anon_send_exit(watcher, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(coordinator, caf::exit_reason::user_shutdown);
  sys.reset();
  return code;
}

launcher::launcher(launcher_options o) : impl_(std::make_unique<launcher_impl>(std::move(o))) {}
launcher::~launcher() = default;
bool launcher::start(const std::string& run_dir) { return impl_->start(run_dir); }
void launcher::print(bool foreground) const { impl_->print(foreground); }
int launcher::serve() { return impl_->serve(); }
void launcher::stop() { impl_->stop(); }

}  // namespace afd::launch
