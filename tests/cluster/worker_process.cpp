// A process that runs some workers of a cluster whose coordinator lives elsewhere, as `afd worker`
// processes will: cluster_worker_process TOPOLOGY MODEL_DIR COORDINATOR_PORT NAME...
// It exits when all its workers have ended (the coordinator's shutdown or loss ends them).

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "actors/messages.hpp"
#include "actors/worker.hpp"
#include "deploy/topology/cluster_spec_from_topology.hpp"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s TOPOLOGY MODEL_DIR COORDINATOR_PORT NAME...\n", argv[0]);
    return 2;
  }
  auto spec = afd::client::load_cluster_spec(argv[1], argv[2]);
  if (!spec) {
    std::fprintf(stderr, "%s\n", spec.err().to_string().c_str());
    return 1;
  }
  caf::actor_system_config cfg;
  afd::actors::register_message_types(cfg);
  afd::actors::configure_scheduler(cfg, 1);
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  std::vector<caf::actor> workers;
  const auto port = static_cast<std::uint16_t>(std::atoi(argv[3]));
  for (int i = 4; i < argc; ++i) {
    auto w = afd::actors::start_worker(sys, *spec, argv[i], "127.0.0.1", port);
    if (!w) {
      std::fprintf(stderr, "%s\n", w.err().to_string().c_str());
      return 1;
    }
    workers.push_back(*w);
  }
  std::printf("started\n");
  std::fflush(stdout);
  caf::scoped_actor self{sys};
  for (auto& w : workers) self->monitor(w);
  std::size_t downs = 0;
  self->receive_for(downs, workers.size())([](caf::down_msg&) {});
  return 0;
}
