// `afd worker --topology FILE --name W [--name W2...] --coordinator HOST:PORT`: one process of a
// launched cluster. Builds the cluster spec from the same file as every other process, starts the
// named workers (each registers with the coordinator, then connects its transport and loads the
// weights it owns) and runs until they end: the coordinator stops them (`afd stop`), the
// coordinator is lost, or SIGTERM / SIGINT arrives (the launcher's death sends SIGTERM).
// `afd launch` starts it; it can also be started by hand on another machine.
// Exit codes: 0 stopped by the cluster or a signal, 1 failed or lost the coordinator, 2 bad usage
// or topology.

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/messages.hpp"
#include "actors/timeouts.hpp"
#include "actors/worker.hpp"
#include "deploy/cli/command_registry.hpp"
#include "deploy/topology/cluster_spec_from_topology.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/signals.hpp"
#include "deploy/launch/succession.hpp"
#include "deploy/launch/tls.hpp"
#include "deploy/topology/topology.hpp"

namespace afd::cli {
namespace {

/// How the process's worker actors ended; filled by the watcher actor.
struct worker_ends {
  std::mutex mutex;
  std::size_t ended = 0;
  bool failed = false;
  std::vector<std::string> reasons;
};

caf::behavior watch_workers(caf::event_based_actor* self, std::vector<std::pair<std::string, caf::actor>> workers,
                            std::shared_ptr<worker_ends> ends) {
  auto names = std::make_shared<std::vector<std::pair<std::string, caf::actor_addr>>>();
  for (auto& [name, handle] : workers) {
    self->monitor(handle);
    names->emplace_back(name, handle.address());
  }
  self->set_down_handler([ends, names](caf::down_msg& m) {
    std::string name = "?";
    for (const auto& [n, addr] : *names)
      if (addr == m.source) name = n;
    const bool clean = m.reason == caf::exit_reason::user_shutdown || m.reason == caf::exit_reason::normal ||
                       m.reason == caf::error{};
    std::lock_guard lock(ends->mutex);
    ++ends->ended;
    if (!clean) ends->failed = true;
    ends->reasons.push_back("worker '" + name + "' ended: " + (m.reason ? caf::to_string(m.reason) : "normal"));
  });
  return {[](actors::status_atom) {}};  // nothing to answer; the behavior keeps it alive
}

int run_worker(int argc, char** argv) {
  CLI::App app{"Runs workers of a launched cluster in this process (`afd launch` starts it).\n"
               "Exit codes: 0 stopped, 1 failed or lost the coordinator, 2 bad usage or topology.",
               "afd worker"};
  std::string file, coordinator, model_dir, credentials;
  std::vector<std::string> names;
  app.add_option("--topology", file, "topology file (YAML), the same the launcher read")->required();
  app.add_option("--name", names, "worker to run (repeat for several in one process)")->required();
  app.add_option("--coordinator", coordinator, "HOST:PORT of the coordinator (of each, comma-separated: the primary, then the standbys)")->required();
  app.add_option("--model", model_dir, "checkpoint directory to use instead of the file's model.path");
  app.add_option("--credentials", credentials,
                 "directory of the cluster's TLS files (ca.pem, worker.pem, worker.key): the control plane over TLS");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto addresses = launch::parse_host_ports(coordinator);
  if (!addresses) {
    std::fprintf(stderr, "afd worker: --coordinator: %s\n", addresses.err().message().c_str());
    return 2;
  }
  auto spec = client::load_cluster_spec(file, model_dir);
  if (!spec) {
    std::fprintf(stderr, "afd worker: %s\n", spec.err().message().c_str());
    return 2;
  }
  for (const auto& n : names)
    if (spec->attention_index(n) < 0 && spec->ffn_index(n) < 0) {
      std::fprintf(stderr, "afd worker: '%s' is not a worker of cluster '%s' (%s)\n", n.c_str(), spec->name.c_str(),
                   file.c_str());
      return 2;
    }
  // The data plane's interfaces of this node (a node's net_devices overrides the transport's).
  if (auto t = topology::load_file(file)) {
    std::string node;
    if (int a = t->attention_worker_index(names.front()); a >= 0) node = t->attention_workers[static_cast<std::size_t>(a)].node;
    if (int f = t->ffn_worker_index(names.front()); f >= 0) node = t->ffn_workers[static_cast<std::size_t>(f)].node;
    spec->transport.net_devices = topology::net_devices_of(*t, node);
  }
  launch::install_stop_signals();

  caf::actor_system_config cfg;
  actors::register_message_types(cfg);
  actors::configure_scheduler(cfg, 2);
  cfg.load<caf::io::middleman>();
  if (!credentials.empty())
    if (auto applied = launch::tls::apply(launch::tls::credentials_of(credentials, launch::tls::role::worker), cfg);
        !applied) {
      std::fprintf(stderr, "afd worker: %s\n", applied.err().message().c_str());
      return 2;
    }
  auto system = std::make_unique<caf::actor_system>(cfg);

  std::vector<std::pair<std::string, caf::actor>> workers;
  int code = 0;  // read by the exit watchdog below
  // One connection to the coordinator for every worker of the process (TLS with the cluster's
  // credentials when given), with a deadline.
  // With standby coordinators: the active one, looked for until the failover grace ends (the
  // coordinators may be choosing one).
  const bool secure = !credentials.empty();
  expected<caf::actor> coordinator_handle = fail(errc::unavailable, "not tried");
  if (addresses->size() == 1) {
    coordinator_handle = launch::tls::connect(*system, addresses->front().first,
                                              static_cast<std::uint16_t>(addresses->front().second), secure,
                                              actors::timeouts::client_request);
  } else {
    const auto give_up = std::chrono::steady_clock::now() + actors::timeouts::coordinator_failover_grace;
    do {
      coordinator_handle = launch::connect_active(*system, *addresses, secure, actors::timeouts::coordinator_handshake);
      if (coordinator_handle || launch::stop_signal()) break;
      std::this_thread::sleep_for(actors::timeouts::coordinator_retry);
    } while (std::chrono::steady_clock::now() < give_up);
  }
  if (!coordinator_handle) {
    std::fprintf(stderr, "afd worker: cannot reach the coordinator at %s: %s\n", coordinator.c_str(),
                 coordinator_handle.err().message().c_str());
    code = 1;
  }
  for (const auto& n : names) {
    if (code != 0) break;
    // When the coordinator is lost, the worker keeps its weights and finds the next one (its
    // replaced process at the same address, or the standby that took over) within the failover
    // grace, then it exits: no orphans.
    actors::worker_environment env;
    caf::actor_system* sys = system.get();
    const launch::address_list list = *addresses;
    env.reconnect = [sys, list, secure]() {
      return launch::connect_active(*sys, list, secure, actors::timeouts::coordinator_handshake);
    };
    env.reconnect_grace = actors::timeouts::coordinator_failover_grace;
    auto w = actors::spawn_worker(*system, *spec, n, *coordinator_handle, env);
    if (!w) {
      std::fprintf(stderr, "afd worker: %s\n", w.err().message().c_str());
      code = 1;
      break;
    }
    std::fprintf(stderr, "afd worker: %s (%s) started, pid %ld, coordinator %s\n", n.c_str(),
                 spec->attention_index(n) >= 0 ? "attention" : "ffn", static_cast<long>(::getpid()),
                 coordinator.c_str());
    workers.emplace_back(n, *w);
  }

  auto ends = std::make_shared<worker_ends>();
  caf::actor watcher;
  if (code == 0) {
    watcher = system->spawn(watch_workers, workers, ends);
    for (;;) {
      if (int sig = launch::stop_signal()) {
        std::fprintf(stderr, "afd worker: signal %d: stopping\n", sig);
        break;
      }
      {
        std::lock_guard lock(ends->mutex);
        if (ends->ended == workers.size()) {
          for (const auto& r : ends->reasons) std::fprintf(stderr, "afd worker: %s\n", r.c_str());
          code = ends->failed ? 1 : 0;
          break;
        }
      }
      std::this_thread::sleep_for(actors::timeouts::supervision_tick);
    }
  }
  for (auto& [n, w] : workers) caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
  if (watcher) caf::anon_send_exit(watcher, caf::exit_reason::user_shutdown);
  workers.clear();
  watcher = nullptr;
  // A worker blocked in its engine must not keep the process (and its GPU) forever; after a signal
  // (the launcher died or asked) nothing is left to hand over, so the wait is short.
  const auto grace = launch::stop_signal() ? actors::timeouts::actors_exit_after_signal : actors::timeouts::actors_exit;
  std::thread([grace, code] {
    std::this_thread::sleep_for(grace);
    std::fprintf(stderr, "afd worker: actors did not stop within %lld ms; exiting\n",
                 static_cast<long long>(grace.count()));
    std::_Exit(code);
  }).detach();
  system.reset();
  return code;
}

const bool registered =
    register_command({"worker", "run workers of a launched cluster (started by `afd launch`)", run_worker});

}  // namespace
}  // namespace afd::cli

