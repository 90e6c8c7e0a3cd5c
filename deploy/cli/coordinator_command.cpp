// `afd coordinator FILE`: the coordinator of a launched cluster in a process of its own. `afd
// launch` (or the agent of the coordinator's node) starts it and restarts it when it dies; the
// workers and clients of the cluster then find it again. `--standby N` runs the file's N-th standby
// coordinator instead (started by its node's agent; deploy/launch/succession.hpp). Exit codes: 0
// stopped (`afd stop`, or a signal after stopping the workers), 1 cannot listen, 2 bad usage or
// topology, 3 deposed (another coordinator is active with a higher term).
#include <chrono>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "deploy/cli/command_registry.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/launcher.hpp"
#include "deploy/launch/tls.hpp"
#include "deploy/topology/cluster_spec_from_topology.hpp"
#include "deploy/topology/topology.hpp"

namespace afd::cli {
namespace {

int run_coordinator(int argc, char** argv) {
  CLI::App app{"Runs the coordinator of a launched cluster in this process (started by `afd launch`).\n"
               "Exit codes: 0 stopped, 1 cannot listen, 2 bad usage or topology, 3 deposed.",
               "afd coordinator"};
  std::string file, model_dir, credentials;
  int start_timeout_s = 120;
  int standby = 0;
  app.add_option("FILE", file, "topology file (YAML), the same the launcher read")->required();
  app.add_option("--standby", standby, "run standby coordinator N of the file's coordinator.standby list (1 = first)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--model", model_dir, "checkpoint directory to use instead of the file's model.path");
  app.add_option("--credentials", credentials, "directory of the cluster's TLS files (ca.pem, coordinator.pem/.key)");
  app.add_option("--start-timeout", start_timeout_s, "seconds to wait for every worker to register (default 120)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto t = topology::load_file(file);
  if (!t) {
    std::fprintf(stderr, "afd coordinator: %s\n", t.err().message().c_str());
    return 2;
  }
  auto spec = client::load_cluster_spec(file, model_dir);
  if (!spec) {
    std::fprintf(stderr, "afd coordinator: %s\n", spec.err().message().c_str());
    return 2;
  }
  spec->start_timeout = std::chrono::seconds(start_timeout_s);
  const auto plan = launch::plan_launch(*t);
  if (standby >= static_cast<int>(plan.coordinators.size())) {
    std::fprintf(stderr, "afd coordinator: --standby %d: %s lists %zu standby coordinator(s)\n", standby,
                 file.c_str(), plan.coordinators.size() - 1);
    return 2;
  }
  launch::coordinator_process_options o;
  o.spec = std::move(*spec);
  const auto& me = plan.coordinators[static_cast<std::size_t>(standby)];
  o.host = me.host;
  o.port = me.port;
  o.index = standby;
  for (const auto& c : plan.coordinators) o.coordinators.emplace_back(launch::connect_host(c.host), c.port);
  if (standby > 0) o.who += " (standby " + std::to_string(standby) + ")";
  if (!credentials.empty()) o.credentials = launch::tls::credentials_of(credentials, launch::tls::role::coordinator);
  return launch::run_coordinator_process(o);
}

const bool registered = register_command(
    {"coordinator", "run the coordinator of a launched cluster (started and restarted by `afd launch`)",
     run_coordinator});

}  // namespace
}  // namespace afd::cli
