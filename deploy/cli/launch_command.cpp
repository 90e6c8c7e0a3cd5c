// `afd launch FILE`: starts the cluster a topology file describes on this machine. The launcher
// validates everything first (exit 2 with FILE:LINE:COLUMN diagnostics), hosts the coordinator,
// starts one `afd worker` process per worker (or per `processes` group; a group with the
// coordinator runs inside the launcher), waits until every worker is ready, prints a summary and
// serves until `afd stop`, SIGINT or SIGTERM; then stops the workers and reaps every process.
// Without --foreground it returns once the cluster is ready and serves from the background.
// Exit codes: 0 served and stopped (or started, in the background), 1 failed to start, 2 invalid
// topology or usage.

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include "deploy/cli/command_registry.hpp"
#include "deploy/launch/child_process.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/launcher.hpp"
#include "deploy/launch/signals.hpp"
#include "deploy/topology/cluster_spec_from_topology.hpp"
#include "deploy/topology/topology.hpp"

namespace afd::cli {
namespace {

void print_diagnostics(const topology::diagnostics& errors) {
  for (const auto& d : errors) std::fprintf(stderr, "%s\n", d.to_string().c_str());
}

/// Forks the background launcher. In the parent: relays its output until it is ready (or failed)
/// and returns the exit code to return; in the background process: returns nullopt with
/// `ready_fd` set (write one byte to it once ready, then detach the output).
std::optional<int> daemonize(int& ready_fd) {
  int out_pipe[2], ready_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(ready_pipe, O_CLOEXEC) != 0) {
    std::perror("afd launch: pipe");
    return 1;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("afd launch: fork");
    return 1;
  }
  if (pid == 0) {
    ::setsid();  // no terminal: a Ctrl-C or a closed terminal does not reach the background cluster
    ::dup2(out_pipe[1], 1);
    ::dup2(out_pipe[1], 2);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    ::close(ready_pipe[0]);
    ready_fd = ready_pipe[1];
    return std::nullopt;
  }
  ::close(out_pipe[1]);
  ::close(ready_pipe[1]);
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::fwrite(buf, 1, static_cast<std::size_t>(n), stdout);
    std::fflush(stdout);
  }
  char ok = 0;
  ssize_t got;
  do {
    got = ::read(ready_pipe[0], &ok, 1);
  } while (got < 0 && errno == EINTR);
  if (got == 1) return 0;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1;
}

int run_launch(int argc, char** argv) {
  CLI::App app{"Starts the cluster a topology file describes: the coordinator in this process and one\n"
               "`afd worker` process per worker placed on this machine; waits until all are ready, prints\n"
               "a summary and serves until `afd stop FILE`, SIGINT or SIGTERM.\n"
               "Exit codes: 0 stopped cleanly (or started, in the background), 1 failed to start,\n"
               "2 invalid topology or usage.",
               "afd launch"};
  std::string file, model_dir;
  bool foreground = false;
  int start_timeout_s = 120;
  app.add_option("FILE", file, "topology file (YAML)")->required();
  app.add_option("--model", model_dir, "checkpoint directory to use instead of the file's model.path");
  app.add_flag("--foreground", foreground, "stay attached: serve until Ctrl-C or `afd stop`");
  app.add_option("--start-timeout", start_timeout_s,
                 "seconds to wait for every worker to register and load its weights (default 120)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (start_timeout_s < 1) {
    std::fprintf(stderr, "afd launch: --start-timeout must be >= 1\n");
    return 2;
  }

  // Everything is checked before anything starts.
  auto parsed = topology::parse_file(file);
  if (!parsed.ok()) {
    print_diagnostics(parsed.errors);
    std::fprintf(stderr, "%s: %zu error(s); nothing started\n", file.c_str(), parsed.errors.size());
    return 2;
  }
  topology::topology t = std::move(*parsed.value);
  std::error_code ec;
  const std::string file_abs = std::filesystem::absolute(file, ec).lexically_normal().string();
  std::string model_abs;
  if (!model_dir.empty()) {
    model_abs = std::filesystem::absolute(model_dir, ec).lexically_normal().string();
    t.model.path = model_abs;
  }
  const launch::launch_plan plan = launch::plan_launch(t);
  launch::worker_command_options options;
  options.afd_executable = launch::self_executable();
  options.topology_file = file_abs;
  options.model_override = model_abs;
  options.coordinator = launch::host_port(launch::connect_host(plan.coordinator_host), plan.coordinator_port);

  topology::diagnostics errors = launch::check_launchable(t, plan, options);
  auto env_errors = topology::check_environment(t);
  errors.insert(errors.end(), env_errors.begin(), env_errors.end());
  std::optional<dataplane::cluster_spec> spec;
  std::string spec_error;
  if (auto config = topology::read_model_config(t); !config) {
    errors.push_back({t.location_of("model.path"), "cannot read the model config: " + config.err().message()});
  } else if (auto s = client::to_cluster_spec(t, *config); !s) {
    spec_error = s.err().message();
  } else {
    spec = std::move(*s);
    spec->start_timeout = std::chrono::seconds(start_timeout_s);
  }
  if (!errors.empty() || !spec_error.empty()) {
    print_diagnostics(errors);
    if (!spec_error.empty()) std::fprintf(stderr, "%s\n", spec_error.c_str());
    std::fprintf(stderr, "%s: cannot launch; nothing started\n", file.c_str());
    return 2;
  }

  auto run_dir = launch::make_run_directory(t.cluster_name, plan.coordinator_port);
  if (!run_dir) {
    std::fprintf(stderr, "afd launch: %s\n", run_dir.err().message().c_str());
    return 1;
  }

  int ready_fd = -1;
  if (!foreground)
    if (auto code = daemonize(ready_fd)) return *code;
  launch::install_stop_signals();

  launch::launcher l({std::move(t), std::move(*spec), plan, options, file, std::chrono::seconds(start_timeout_s)});
  if (!l.start(*run_dir)) return 1;
  l.print(foreground);
  if (!foreground) {
    // Ready: tell the waiting parent, then write to the launcher's log instead of its pipe.
    const std::string log = *run_dir + "/launcher.log";
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    [[maybe_unused]] auto n = ::write(ready_fd, "1", 1);
    ::close(ready_fd);
    std::fflush(stdout);
    std::fflush(stderr);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
  }
  return l.serve();
}

const bool registered = register_command(
    {"launch", "start the cluster a topology file describes on this machine and serve until stopped", run_launch});

}  // namespace
}  // namespace afd::cli

