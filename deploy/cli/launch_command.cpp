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

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "deploy/cli/command_registry.hpp"
#include "deploy/launch/timeouts.hpp"
#include "deploy/launch/child_process.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/launcher.hpp"
#include "deploy/launch/signals.hpp"
#include "deploy/launch/tls.hpp"
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

/// The directory of the control plane's TLS files for this launch: the file's
/// coordinator.credentials (checked), else "" (plain TCP) when every node is on a loopback address,
/// else a CA and role certificates made for this cluster in RUN/tls.
expected<std::string> cluster_credentials_for(const topology::topology& t, const std::string& run_dir,
                                              const launch::launch_plan& plan) {
  if (!t.coordinator.credentials.empty()) {
    for (auto r : {launch::tls::role::coordinator, launch::tls::role::worker, launch::tls::role::client})
      if (auto ok = launch::tls::check_credentials(launch::tls::credentials_of(t.coordinator.credentials, r)); !ok)
        return fail(errc::invalid_config, t.location_of("coordinator.credentials").to_string(), ": ",
                    ok.err().message());
    return t.coordinator.credentials;
  }
  if (launch::loopback_only(t)) return std::string();
  launch::tls::generate_options g;
  g.cluster_name = t.cluster_name;
  for (const auto& c : plan.coordinators) g.coordinator_hosts.push_back(c.host);
  auto made = launch::tls::generate_cluster_credentials(run_dir + "/tls", g);
  if (!made) return made.err();
  return made->directory;
}

/// The nodes of a Slurm allocation, in Slurm's order (`scontrol show hostnames`), or an error.
expected<std::vector<std::string>> slurm_hosts() {
  const char* job = std::getenv("SLURM_JOB_ID");
  const char* list = std::getenv("SLURM_JOB_NODELIST");
  if (!job || !list)
    return fail(errc::invalid_argument,
                "--via slurm runs inside a Slurm allocation (salloc, sbatch): SLURM_JOB_ID and SLURM_JOB_NODELIST are "
                "not set");
  const std::string cmd = "scontrol show hostnames " + launch::shell_join({list}) + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return fail(errc::io_error, "cannot run scontrol: ", std::strerror(errno));
  std::vector<std::string> hosts;
  std::string all;
  char line[512];
  while (std::fgets(line, sizeof(line), pipe)) {
    std::string h(line);
    all += h;
    while (!h.empty() && (h.back() == '\n' || h.back() == '\r' || h.back() == ' ')) h.pop_back();
    if (!h.empty()) hosts.push_back(h);
  }
  if (::pclose(pipe) != 0 || hosts.empty())
    return fail(errc::io_error, "`", cmd, "` failed: ", all);
  return hosts;
}

/// Slurm's hosts -> topology nodes: by name when every topology node is an allocation host, else in
/// order (host i runs the node of rank i). Checked against SLURM_NNODES. "HOST=NODE,...".
expected<std::string> slurm_map(const topology::topology& t, const std::vector<std::string>& hosts) {
  const auto ranked = topology::nodes_by_rank(t);
  const char* nn = std::getenv("SLURM_NNODES");
  const std::size_t nnodes = nn ? static_cast<std::size_t>(std::atoi(nn)) : hosts.size();
  if (nnodes != ranked.size() || hosts.size() != ranked.size())
    return fail(errc::invalid_config, "the allocation has ", nnodes, " node(s) (SLURM_NNODES; ", hosts.size(),
                " in SLURM_JOB_NODELIST) but the topology has ", ranked.size(),
                ": allocate exactly one Slurm node per topology node (`afd render slurm FILE` prints a script)");
  bool by_name = true;
  for (const auto* n : ranked)
    if (std::find(hosts.begin(), hosts.end(), n->name) == hosts.end()) by_name = false;
  std::string map;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const std::string node = by_name ? hosts[i] : ranked[i]->name;
    map += (map.empty() ? "" : ",") + hosts[i] + "=" + node;
  }
  return map;
}

int run_launch(int argc, char** argv) {
  CLI::App app{"Starts the cluster a topology file describes: the coordinator in this process, one `afd worker`\n"
               "process per process placed on this machine, and the agent (`afd node`) of every other node\n"
               "over ssh, or (--via slurm) the agents of every node with srun; waits until all are ready,\n"
               "prints a summary and serves until `afd stop FILE`, SIGINT or SIGTERM.\n"
               "Exit codes: 0 stopped cleanly (or started, in the background), 1 failed to start,\n"
               "2 invalid topology or usage.",
               "afd launch"};
  std::string file, model_dir, via = "ssh";
  bool foreground = false;
  int start_timeout_s = 120;
  app.add_option("FILE", file, "topology file (YAML)")->required();
  app.add_option("--model", model_dir, "checkpoint directory to use instead of the file's model.path");
  app.add_flag("--foreground", foreground, "stay attached: serve until Ctrl-C or `afd stop`");
  app.add_option("--start-timeout", start_timeout_s,
                 "seconds to wait for every worker to register and load its weights (default 120)");
  int max_restarts = launch::timeouts::max_restarts;
  int restart_window_s = static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(launch::timeouts::restart_window).count());
  app.add_option("--max-restarts", max_restarts,
                 "restarts of one worker process allowed within --restart-window before it is given up (default " +
                     std::to_string(max_restarts) + "; this machine's processes)");
  app.add_option("--restart-window", restart_window_s,
                 "seconds of the restart budget's sliding window (default " + std::to_string(restart_window_s) + ")");
  std::vector<std::string> fault_rules;
  std::optional<std::uint64_t> fault_seed;
  app.add_option("--fault", fault_rules,
                 "a fault rule armed once the cluster is ready, in addition to the file's faults: (repeatable;\n"
                 "docs/faults.md), e.g. --fault 'pause_process worker=f1 after=5s duration=6s'");
  app.add_option("--fault-seed", fault_seed, "seed of the fault decisions (default: the file's faults.seed, else 1)");
  app.add_option("--via", via, "how other nodes are reached: ssh (default) or slurm (inside an allocation)")
      ->check(CLI::IsMember({"ssh", "slurm"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (max_restarts < 0 || restart_window_s < 1) {
    std::fprintf(stderr, "afd launch: --max-restarts must be >= 0 and --restart-window >= 1\n");
    return 2;
  }
  if (start_timeout_s < 1) {
    std::fprintf(stderr, "afd launch: --start-timeout must be >= 1\n");
    return 2;
  }
  const auto how = via == "slurm" ? launch::launch_via::slurm : launch::launch_via::ssh;

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
  options.coordinator = plan.coordinator_addresses();

  topology::diagnostics errors = launch::check_launchable(t, plan, options, how);
  for (const auto& rule : fault_rules)
    if (auto c = topology::check_fault_rule(t, rule); !c)
      errors.push_back({topology::source_location{"--fault", 0, 0}, c.err().message()});
  auto env_errors = topology::check_environment(t);
  if (how == launch::launch_via::slurm) env_errors.clear();  // the agents check their own nodes
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
  std::string map;
  if (how == launch::launch_via::slurm && errors.empty() && spec_error.empty()) {
    auto hosts = slurm_hosts();
    auto m = hosts ? slurm_map(t, *hosts) : expected<std::string>(hosts.err());
    if (!m) {
      std::fprintf(stderr, "afd launch: %s\n%s: cannot launch; nothing started\n", m.err().message().c_str(),
                   file.c_str());
      return 2;
    }
    map = *m;
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

  // The control plane's credentials: the file's, or made for this cluster into the run directory
  // whenever the cluster listens on a real network (a cluster on 127.0.0.1 alone stays plain).
  auto creds = cluster_credentials_for(t, *run_dir, plan);
  if (!creds) {
    std::fprintf(stderr, "afd launch: %s\n", creds.err().message().c_str());
    return 1;
  }
  options.credentials = *creds;

  std::vector<std::string> rules = t.faults.rules;
  rules.insert(rules.end(), fault_rules.begin(), fault_rules.end());
  const std::uint64_t seed = fault_seed.value_or(t.faults.seed);
  launch::launcher_options lo{std::move(t), std::move(*spec), plan, options, file, std::chrono::seconds(start_timeout_s)};
  lo.fault_rules = std::move(rules);
  lo.restarts.max_restarts = max_restarts;
  lo.restarts.window = std::chrono::seconds(restart_window_s);
  lo.fault_seed = seed;
  if (!options.credentials.empty())
    lo.credentials = launch::tls::credentials_of(
        options.credentials, how == launch::launch_via::slurm ? launch::tls::role::client : launch::tls::role::coordinator);
  if (how == launch::launch_via::ssh) {
    for (const auto* n : launch::remote_nodes(lo.topology, plan)) {
      launch::worker_command_options remote = options;
      remote.afd_executable = topology::afd_path_of(*n, options.afd_executable);
      lo.agents.push_back({"node " + n->name,
                           launch::ssh_command(topology::ssh_target_of(*n), launch::agent_command(n->name, remote, true)),
                           true});
    }
  } else {
    const auto count = std::to_string(topology::nodes_by_rank(lo.topology).size());
    std::vector<std::string> srun{"srun", "--nodes=" + count, "--ntasks=" + count, "--ntasks-per-node=1",
                                  "--kill-on-bad-exit=0", "--job-name=afd-" + lo.topology.cluster_name};
    auto agent = launch::agent_command("", options, false);
    // `--node ''` becomes `--slurm-map HOST=NODE,...`: each task finds its node by SLURMD_NODENAME.
    for (std::size_t i = 0; i < agent.size(); ++i)
      if (agent[i] == "--node") {
        agent[i] = "--slurm-map";
        agent[i + 1] = map;
      }
    srun.insert(srun.end(), agent.begin(), agent.end());
    lo.agents.push_back({"srun", srun, false});
    lo.host_coordinator = false;
    lo.wait_for_cluster = true;
  }

  int ready_fd = -1;
  if (!foreground)
    if (auto code = daemonize(ready_fd)) return *code;
  launch::install_stop_signals();

  launch::launcher l(std::move(lo));
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
    {"launch", "start the cluster a topology file describes (this machine, ssh or Slurm) and serve until stopped",
     run_launch});

}  // namespace
}  // namespace afd::cli

