// `afd coordinator FILE`: the coordinator of a launched cluster in a process of its own. `afd
// launch` (or the agent of the coordinator's node) starts it and restarts it when it dies; the
// workers and clients of the cluster then find it again. Exit codes: 0 stopped (`afd stop`, or a
// signal after stopping the workers), 1 cannot listen, 2 bad usage or topology.
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
               "Exit codes: 0 stopped, 1 cannot listen, 2 bad usage or topology.",
               "afd coordinator"};
  std::string file, model_dir, credentials;
  int start_timeout_s = 120;
  app.add_option("FILE", file, "topology file (YAML), the same the launcher read")->required();
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
  launch::coordinator_process_options o;
  o.spec = std::move(*spec);
  o.host = plan.coordinator_host;
  o.port = plan.coordinator_port;
  if (!credentials.empty()) o.credentials = launch::tls::credentials_of(credentials, launch::tls::role::coordinator);
  return launch::run_coordinator_process(o);
}

const bool registered = register_command(
    {"coordinator", "run the coordinator of a launched cluster (started and restarted by `afd launch`)",
     run_coordinator});

}  // namespace
}  // namespace afd::cli
