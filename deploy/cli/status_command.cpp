// `afd status FILE | --connect HOST:PORT [--json]`: the state of a launched cluster as its
// coordinator sees it: per worker its role, device, state, running requests and KV blocks used.
// Exit codes: 0 answered, 1 unreachable, 2 bad usage.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "deploy/cli/cluster_target.hpp"
#include "deploy/cli/command_registry.hpp"
#include <afd/client.hpp>
#include "deploy/launch/child_process.hpp"
#include "deploy/launch/launch_plan.hpp"

namespace afd::cli {
namespace {

/// One line of a launcher's or agent's RUN/supervision file.
struct supervised {
  std::string process, state, where;
  int restarts = 0, max_restarts = 0, window_s = 0;
};

/// The supervision files of the launcher and of the node agents whose run directories are on this
/// machine (nodes sharing its file system, or agents on it).
std::vector<supervised> read_supervision(const launch::cluster_address& a) {
  std::vector<supervised> out;
  if (a.run_directory.empty()) return out;
  std::vector<std::string> dirs{a.run_directory};
  for (const auto& n : a.node_names) dirs.push_back(launch::run_directory_path(a.cluster_name + "-node-" + n, a.port));
  for (const auto& d : dirs) {
    std::ifstream in(d + "/supervision");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      supervised s;
      std::string word;
      fields >> s.process >> s.state >> s.restarts;
      // "this machine" or "node NAME", then the budget.
      std::vector<std::string> rest;
      while (fields >> word) rest.push_back(word);
      if (rest.size() < 3) continue;
      s.window_s = std::atoi(rest.back().c_str());
      s.max_restarts = std::atoi(rest[rest.size() - 2].c_str());
      for (std::size_t i = 0; i + 2 < rest.size(); ++i) s.where += (s.where.empty() ? "" : " ") + rest[i];
      out.push_back(std::move(s));
    }
  }
  return out;
}

int run_status(int argc, char** argv) {
  CLI::App app{"Shows a launched cluster's workers: role, device, state, running requests, KV use.\n"
               "Exit codes: 0 answered, 1 unreachable, 2 bad usage.",
               "afd status"};
  cluster_target target;
  bool json = false;
  int timeout_s = 10;
  target.add_to(app);
  app.add_flag("--json", json, "print one JSON object");
  app.add_option("--timeout", timeout_s, "seconds to wait for the answer (default 10)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto address = target.resolve("afd status");
  if (!address) return 2;
  const std::string where = launch::join_host_ports(address->coordinators);
  const auto timeout = std::chrono::seconds(timeout_s);
  auto c = connect_cluster(*address, timeout);
  if (!c) {
    std::fprintf(stderr, "afd status: %s\n", c.err().message().c_str());
    return 1;
  }
  auto s = (*c)->status(timeout);
  (*c)->shutdown();
  if (!s) {
    std::fprintf(stderr, "afd status: cluster at %s: %s\n", where.c_str(), s.err().message().c_str());
    return 1;
  }
  if (json) {
    nlohmann::json out{{"coordinator", where},   {"epoch", s->epoch},     {"ready", s->ready},
                       {"queued", s->queued},    {"running", s->running}, {"finished", s->finished},
                       {"recoveries", s->recoveries}, {"term", s->term}};
    out["workers"] = nlohmann::json::array();
    for (const auto& w : s->workers)
      out["workers"].push_back({{"name", w.name},
                                {"role", w.role},
                                {"device", w.device},
                                {"state", to_string(w.state)},
                                {"running", w.running},
                                {"kv_blocks_used", w.kv_blocks_used},
                                {"kv_blocks_total", w.kv_blocks_total},
                                {"slow", w.slow},
                                {"steps", w.steps},
                                {"rejoins", w.rejoins}});
    out["faults"] = nlohmann::json::array();
    for (const auto& f : s->faults) out["faults"].push_back({{"rule", f.rule}, {"fired", f.fired}});
    out["events"] = nlohmann::json::array();
    for (const auto& e : s->events)
      out["events"].push_back(
          {{"at_ms", e.at_ms}, {"kind", e.kind}, {"worker", e.worker}, {"epoch", e.epoch}, {"detail", e.detail}});
    out["now_ms"] = s->now_ms;
    out["supervision"] = nlohmann::json::array();
    for (const auto& p : read_supervision(*address))
      out["supervision"].push_back({{"process", p.process},
                                    {"state", p.state},
                                    {"restarts", p.restarts},
                                    {"where", p.where},
                                    {"max_restarts", p.max_restarts},
                                    {"window_s", p.window_s}});
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("cluster%s%s at %s: %s, epoch %u%s; requests: %lld queued, %lld running, %lld finished\n",
              address->cluster_name.empty() ? "" : " '",
              address->cluster_name.empty() ? "" : (address->cluster_name + "'").c_str(), where.c_str(),
              s->ready ? "ready" : "not ready", s->epoch,
              s->term ? (", coordinator term " + std::to_string(s->term)).c_str() : "", static_cast<long long>(s->queued),
              static_cast<long long>(s->running), static_cast<long long>(s->finished));
  std::printf("%-12s %-10s %-8s %-9s %8s %16s\n", "WORKER", "ROLE", "DEVICE", "STATE", "RUNNING", "KV USED/TOTAL");
  for (const auto& w : s->workers) {
    const bool attention = w.role == "attention";
    const std::string running = attention ? std::to_string(w.running) : "-";
    const std::string kv =
        attention ? std::to_string(w.kv_blocks_used) + "/" + std::to_string(w.kv_blocks_total) : "-";
    const std::string state = std::string(to_string(w.state)) + (w.slow ? " (slow)" : "");
    std::printf("%-12s %-10s %-8s %-9s %8s %16s\n", w.name.c_str(), w.role.c_str(), w.device.c_str(), state.c_str(),
                running.c_str(), kv.c_str());
  }
  if (s->recoveries > 0) std::printf("recoveries: %llu\n", static_cast<unsigned long long>(s->recoveries));
  for (const auto& f : s->faults)
    std::printf("fault rule '%s': fired %llu time(s)\n", f.rule.c_str(), static_cast<unsigned long long>(f.fired));
  // The last few events of the cluster's life (failures, recoveries), oldest first.
  const std::size_t first = s->events.size() > 8 ? s->events.size() - 8 : 0;
  for (std::size_t i = first; i < s->events.size(); ++i) {
    const auto& e = s->events[i];
    std::printf("event %.1f s ago: %s%s%s (epoch %u)%s%s\n", static_cast<double>(s->now_ms - e.at_ms) / 1000.0,
                e.kind.c_str(), e.worker.empty() ? "" : " ", e.worker.c_str(), e.epoch, e.detail.empty() ? "" : ": ",
                e.detail.c_str());
  }
  for (const auto& p : read_supervision(*address)) {
    if (p.state == "running" && p.restarts == 0) continue;
    if (p.state == "given_up")
      std::printf("process '%s' (%s): given up after %d restart(s): its restart budget is %d in %d s\n",
                  p.process.c_str(), p.where.c_str(), p.restarts, p.max_restarts, p.window_s);
    else
      std::printf("process '%s' (%s): %s, restarted %d time(s) (budget %d in %d s)\n", p.process.c_str(),
                  p.where.c_str(), p.state.c_str(), p.restarts, p.max_restarts, p.window_s);
  }
  return 0;
}

const bool registered = register_command({"status", "show a launched cluster's workers, load and KV use", run_status});

}  // namespace
}  // namespace afd::cli

