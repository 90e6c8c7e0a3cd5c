// `afd node FILE (--node NAME | --node-index I | --slurm-map HOST=NODE,...) --coordinator HOST:PORT`:
// the agent of one node. Starts and supervises the worker processes the topology places on that
// node (the launcher's code, restricted to one node; the agent of the coordinator's node also
// hosts the coordinator) and runs until they have all ended: the coordinator stopped them, a
// signal arrived, its stdin ended (--exit-with-stdin: the ssh connection of `afd launch` closed),
// or no coordinator answered for the grace period (deploy/launch/timeouts.hpp: 15 s).
// `afd launch` starts it over ssh or srun; Kubernetes pods run it (`afd render k8s`).
// Exit codes: 0 its processes were stopped, 1 failed or lost the coordinator, 2 bad usage or topology.

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "deploy/cli/command_registry.hpp"
#include "deploy/launch/child_process.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/launcher.hpp"
#include "deploy/launch/signals.hpp"
#include "deploy/launch/tls.hpp"
#include "deploy/topology/cluster_spec_from_topology.hpp"
#include "deploy/topology/topology.hpp"

namespace afd::cli {
namespace {

/// The topology node of this Slurm task: SLURMD_NODENAME looked up in "HOST=NODE,...".
std::string node_from_slurm_map(const std::string& map, std::string& error) {
  const char* host = std::getenv("SLURMD_NODENAME");
  if (!host || !*host) {
    error = "--slurm-map needs SLURMD_NODENAME (set by srun in each task)";
    return {};
  }
  std::size_t pos = 0;
  while (pos <= map.size()) {
    const auto end = std::min(map.find(',', pos), map.size());
    const std::string pair = map.substr(pos, end - pos);
    const auto eq = pair.find('=');
    if (eq != std::string::npos && pair.substr(0, eq) == host) return pair.substr(eq + 1);
    pos = end + 1;
  }
  error = "Slurm node '" + std::string(host) + "' is not in --slurm-map " + map;
  return {};
}

int run_node(int argc, char** argv) {
  CLI::App app{"The agent of one node: starts and supervises the worker processes the topology places on it\n"
               "(and the coordinator on the coordinator's node). Started by `afd launch` (ssh, srun) or a pod.\n"
               "Exit codes: 0 stopped, 1 failed or lost the coordinator, 2 bad usage or topology.",
               "afd node"};
  std::string file, node, coordinator, model_dir, credentials, map;
  int node_index = -1;
  int start_timeout_s = 120;
  bool exit_with_stdin = false;
  app.add_option("FILE", file, "topology file (YAML), the same the launcher read")->required();
  auto* by_name = app.add_option("--node", node, "the node this agent runs");
  auto* by_index = app.add_option("--node-index", node_index, "the node of this rank (nodes_by_rank: 0 = coordinator's)");
  auto* by_slurm = app.add_option("--slurm-map", map, "HOST=NODE,...: the node of this Slurm task's host");
  by_name->excludes(by_index)->excludes(by_slurm);
  by_index->excludes(by_slurm);
  app.add_option("--coordinator", coordinator, "HOST:PORT of the coordinator (of each, comma-separated: the primary, then the standbys)")->required();
  app.add_option("--model", model_dir, "checkpoint directory to use instead of the file's model.path");
  app.add_option("--credentials", credentials, "directory of the cluster's TLS files (ca.pem, <role>.pem/.key)");
  app.add_option("--start-timeout", start_timeout_s, "seconds the coordinator's node waits for the cluster (default 120)");
  app.add_flag("--exit-with-stdin", exit_with_stdin, "stop when stdin ends (started over ssh)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto address = launch::parse_host_ports(coordinator);
  if (!address) {
    std::fprintf(stderr, "afd node: --coordinator: %s\n", address.err().message().c_str());
    return 2;
  }
  auto loaded = topology::load_file(file);
  if (!loaded) {
    std::fprintf(stderr, "afd node: %s\n", loaded.err().message().c_str());
    return 2;
  }
  topology::topology t = std::move(*loaded);
  if (!map.empty()) {
    std::string error;
    node = node_from_slurm_map(map, error);
    if (node.empty()) {
      std::fprintf(stderr, "afd node: %s\n", error.c_str());
      return 2;
    }
  } else if (node_index >= 0) {
    const auto ranked = topology::nodes_by_rank(t);
    if (static_cast<std::size_t>(node_index) >= ranked.size()) {
      std::fprintf(stderr, "afd node: --node-index %d: %s has %zu node(s)\n", node_index, file.c_str(), ranked.size());
      return 2;
    }
    node = ranked[static_cast<std::size_t>(node_index)]->name;
  }
  if (node.empty() || !t.find_node(node)) {
    std::fprintf(stderr, "afd node: %s: give the node as --node NAME (one of the file's nodes), --node-index or "
                 "--slurm-map%s\n", file.c_str(), node.empty() ? "" : (" ('" + node + "' is not a node)").c_str());
    return 2;
  }
  std::error_code ec;
  std::string model_abs;
  if (!model_dir.empty()) {
    model_abs = std::filesystem::absolute(model_dir, ec).lexically_normal().string();
    t.model.path = model_abs;
  }
  auto config = topology::read_model_config(t);
  if (!config) {
    std::fprintf(stderr, "afd node: cannot read the model config: %s\n", config.err().message().c_str());
    return 2;
  }
  auto spec = client::to_cluster_spec(t, *config);
  if (!spec) {
    std::fprintf(stderr, "afd node: %s\n", spec.err().message().c_str());
    return 2;
  }
  spec->start_timeout = std::chrono::seconds(start_timeout_s);
  const bool hosts_coordinator = node == t.coordinator.node;

  launch::launch_plan plan = launch::plan_launch(t);
  launch::worker_command_options options;
  options.afd_executable = launch::self_executable();
  options.topology_file = std::filesystem::absolute(file, ec).lexically_normal().string();
  options.model_override = model_abs;
  options.coordinator = coordinator;
  options.credentials = credentials;

  auto run_dir = launch::make_run_directory(t.cluster_name + "-node-" + node, plan.coordinator_port);
  if (!run_dir) {
    std::fprintf(stderr, "afd node: %s\n", run_dir.err().message().c_str());
    return 1;
  }
  launch::install_stop_signals();
  launch::launcher_options lo{std::move(t), std::move(*spec), std::move(plan), options, file,
                              std::chrono::seconds(start_timeout_s)};
  lo.who = "afd node " + node;
  lo.node = node;
  lo.host_coordinator = hosts_coordinator;
  lo.exit_with_stdin = exit_with_stdin;
  if (!credentials.empty())
    lo.credentials = launch::tls::credentials_of(
        credentials, hosts_coordinator ? launch::tls::role::coordinator : launch::tls::role::client);
  launch::launcher l(std::move(lo));
  if (!l.start(*run_dir)) return 1;
  if (hosts_coordinator) l.print(true);
  std::fprintf(stderr, "afd node %s: running (pid %ld), coordinator %s, run dir %s\n", node.c_str(),
               static_cast<long>(::getpid()), coordinator.c_str(), run_dir->c_str());
  return l.serve();
}

const bool registered =
    register_command({"node", "run the agent of one node of a cluster (started by `afd launch` or a pod)", run_node});

}  // namespace
}  // namespace afd::cli
