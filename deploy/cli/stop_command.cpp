// `afd stop FILE | --connect HOST:PORT`: asks a launched cluster's coordinator to stop; the
// launcher then stops every worker and exits. Given the topology file of a cluster launched on
// this machine, it also waits (up to --timeout) until the launcher has exited.
// Exit codes: 0 stopped, 1 unreachable or still running after the timeout, 2 bad usage.

#include <CLI/CLI.hpp>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "deploy/cli/cluster_target.hpp"
#include "deploy/cli/command_registry.hpp"
#include <afd/client.hpp>
#include "deploy/launch/launch_plan.hpp"

namespace afd::cli {
namespace {

/// True while `pid` runs; an exited process its parent has not reaped yet (a zombie) has ended.
bool running(long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

int run_stop(int argc, char** argv) {
  CLI::App app{"Stops a launched cluster: the coordinator stops every worker and the launcher exits.\n"
               "Exit codes: 0 stopped, 1 unreachable or still running after --timeout, 2 bad usage.",
               "afd stop"};
  cluster_target target;
  int timeout_s = 30;
  target.add_to(app);
  app.add_option("--timeout", timeout_s, "seconds to wait for the cluster to stop (default 30)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto address = target.resolve("afd stop");
  if (!address) return 2;
  // The launcher's pid, read before it removes the file, to wait for its exit.
  long launcher_pid = 0;
  if (!address->run_directory.empty()) std::ifstream(address->run_directory + "/launcher.pid") >> launcher_pid;

  const auto timeout = std::chrono::seconds(timeout_s);
  const std::string where = launch::join_host_ports(address->coordinators);
  auto c = connect_cluster(*address, std::chrono::milliseconds(std::min<std::int64_t>(timeout_s, 10) * 1000));
  if (!c) {
    std::fprintf(stderr, "afd stop: %s\n", c.err().message().c_str());
    return 1;
  }
  if (auto ok = (*c)->stop_cluster(); !ok) {
    std::fprintf(stderr, "afd stop: cluster at %s: %s\n", where.c_str(), ok.err().message().c_str());
    return 1;
  }
  if (launcher_pid > 0) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (running(launcher_pid)) {
      if (std::chrono::steady_clock::now() >= until) {
        std::fprintf(stderr, "afd stop: the launcher (pid %ld) still runs after %d s\n", launcher_pid, timeout_s);
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  std::printf("stopped cluster%s%s at %s\n", address->cluster_name.empty() ? "" : " '",
              address->cluster_name.empty() ? "" : (address->cluster_name + "'").c_str(), where.c_str());
  return 0;
}

const bool registered = register_command({"stop", "stop a launched cluster", run_stop});

}  // namespace
}  // namespace afd::cli

