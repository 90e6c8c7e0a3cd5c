#pragma once
// Namespace nodes for tests (tests/multinode/README.md): a C++ owner of one `nodes.sh up` run.
// The destructor runs `nodes.sh down`, so a test that fails or throws still leaves nothing behind;
// a test killed outright is cleaned up by the next `up` (it reaps runs whose owner has exited).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef AFD_NODES_SH
#error "AFD_NODES_SH must name tests/multinode/nodes.sh"
#endif

namespace afd::test_support {

/// What a command did: exit status (128 + signal when killed), stdout and stderr interleaved,
/// and whether the deadline ended it.
struct command_result {
  int status = -1;
  std::string output;
  bool timed_out = false;
  bool ok() const { return status == 0 && !timed_out; }
};

/// Runs `argv` (PATH is searched) in its own process group with stdout and stderr captured; after
/// `deadline` the whole group is killed. Blocks in poll(2), never spins.
inline command_result run_command(const std::vector<std::string>& argv, std::chrono::milliseconds deadline) {
  command_result result;
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    result.output = "pipe failed";
    return result;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    result.output = "fork failed";
    ::close(out[0]);
    ::close(out[1]);
    return result;
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  ::close(out[1]);
  const auto until = std::chrono::steady_clock::now() + deadline;
  char chunk[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd p{out[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;  // the deadline check above ends the loop
    const ssize_t n = ::read(out[0], chunk, sizeof chunk);
    if (n <= 0) break;  // every writer closed: the command (and what inherited its output) ended
    result.output.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  if (result.timed_out) ::kill(-pid, SIGKILL);
  int status = 0;
  // Output closed but the process may still be exiting: wait, bounded by the same deadline plus
  // a grace period, then kill.
  constexpr auto exit_grace = std::chrono::seconds(5);
  const auto wait_until = std::max(until, std::chrono::steady_clock::now()) + exit_grace;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() >= wait_until) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.timed_out = true;
      break;
    }
    ::usleep(10'000);
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

/// One run of tests/multinode/nodes.sh: N nodes (network + UTS namespaces on a private bridge),
/// optionally sshd in each and a Slurm cluster over them.
class namespace_nodes {
 public:
  struct options {
    int nodes = 2;
    bool ssh = false;
    bool slurm = false;
    std::string names;    ///< "a,b" (empty: a, b, c...)
    std::string ifnames;  ///< interface name in each node, "eth0,ens5" (empty: eth0 everywhere)
  };

  /// `nodes.sh up` (ssh and Slurm included) takes under a second here; 60 s covers a loaded CI box.
  static constexpr std::chrono::seconds up_deadline{60};
  /// `nodes.sh down` waits at most 10 s for daemons and 1 s for clients, then kills.
  static constexpr std::chrono::seconds down_deadline{60};

  /// Brings nodes up. Returns null with `skip` set when this machine cannot have them (not root,
  /// no namespaces, packages missing), or with `error` set when bring-up failed.
  static std::unique_ptr<namespace_nodes> up(const options& o, std::string& skip, std::string& error) {
    std::string dir_template = "/tmp/afdmn.XXXXXX";
    if (::mkdtemp(dir_template.data()) == nullptr) {
      error = "mkdtemp failed";
      return nullptr;
    }
    std::unique_ptr<namespace_nodes> nodes(new namespace_nodes(dir_template));
    std::vector<std::string> argv = {AFD_NODES_SH, "up", nodes->run_, "--nodes", std::to_string(o.nodes),
                                     "--owner", std::to_string(::getpid())};
    if (!o.names.empty()) argv.insert(argv.end(), {"--names", o.names});
    if (!o.ifnames.empty()) argv.insert(argv.end(), {"--ifnames", o.ifnames});
    if (o.ssh) argv.push_back("--ssh");
    if (o.slurm) argv.push_back("--slurm");
    const auto started = std::chrono::steady_clock::now();
    command_result r = run_command(argv, up_deadline);
    nodes->up_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (r.status == 77) {
      const auto at = r.output.find("SKIP: ");
      skip = at == std::string::npos ? r.output : r.output.substr(at + 6);
      while (!skip.empty() && skip.back() == '\n') skip.pop_back();
      return nullptr;  // the destructor removes the directory
    }
    if (!r.ok()) {
      error = "nodes.sh up failed (status " + std::to_string(r.status) + (r.timed_out ? ", timed out" : "") +
              "):\n" + r.output;
      return nullptr;
    }
    std::ifstream env(nodes->run_ + "/env");
    std::string line;
    while (std::getline(env, line)) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) nodes->env_[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return nodes;
  }

  ~namespace_nodes() {
    if (!down_done_) down();
  }
  namespace_nodes(const namespace_nodes&) = delete;
  namespace_nodes& operator=(const namespace_nodes&) = delete;

  /// Tears everything down now; the output of `nodes.sh down`, empty when it succeeded.
  std::string down() {
    down_done_ = true;
    const auto started = std::chrono::steady_clock::now();
    command_result r = run_command({AFD_NODES_SH, "down", run_}, down_deadline);
    down_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::error_code ec;
    std::filesystem::remove_all(run_, ec);  // nothing left when `up` skipped before writing state
    return r.ok() ? std::string() : "nodes.sh down failed (status " + std::to_string(r.status) + "):\n" + r.output;
  }

  /// The run directory (RUN in nodes.sh).
  const std::string& run_dir() const { return run_; }
  /// A value of RUN/env, e.g. "AFD_MN_ADDR_a", "SLURM_CONF"; "" when absent.
  std::string env(const std::string& key) const {
    auto it = env_.find(key);
    return it == env_.end() ? std::string() : it->second;
  }
  /// The node names, in order.
  std::vector<std::string> node_names() const {
    std::vector<std::string> names;
    std::stringstream list(env("AFD_MN_NODES"));
    std::string name;
    while (std::getline(list, name, ',')) names.push_back(name);
    return names;
  }
  /// The address of `node` on the bridge.
  std::string address(const std::string& node) const { return env("AFD_MN_ADDR_" + node); }
  /// Runs `shell_command` with sh -c inside `node` (its network and host name; this run's ssh and
  /// Slurm configuration in effect).
  command_result exec(const std::string& node, const std::string& shell_command,
                      std::chrono::milliseconds deadline) const {
    return run_command({AFD_NODES_SH, "exec", run_, node, "--", "sh", "-c", shell_command}, deadline);
  }
  /// Runs `shell_command` on this machine outside the nodes, with this run's ssh and Slurm
  /// configuration in effect (as a login node would have).
  command_result host(const std::string& shell_command, std::chrono::milliseconds deadline) const {
    std::string prefix;
    if (!env("AFD_MN_BIN").empty()) prefix += "PATH=" + env("AFD_MN_BIN") + ":$PATH ";
    if (!env("SLURM_CONF").empty()) prefix += "SLURM_CONF=" + env("SLURM_CONF") + " ";
    return run_command({"sh", "-c", prefix.empty() ? shell_command : "export " + prefix + "; " + shell_command},
                       deadline);
  }
  /// Seconds `nodes.sh up` / `nodes.sh down` took.
  double up_seconds() const { return up_seconds_; }
  double down_seconds() const { return down_seconds_; }

 private:
  explicit namespace_nodes(std::string run) : run_(std::move(run)) {}
  std::string run_;
  std::map<std::string, std::string> env_;
  bool down_done_ = false;
  double up_seconds_ = 0;
  double down_seconds_ = 0;
};

/// The whole content of a file ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Processes (any namespace) whose command line mentions `needle`, as "pid cmdline" lines.
inline std::string processes_mentioning(const std::string& needle) {
  std::string out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = e.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid == std::to_string(::getpid())) continue;
    std::string cmd = slurp(e.path().string() + "/cmdline");
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(needle) != std::string::npos && cmd.find("nodes.sh") == std::string::npos) out += pid + " " + cmd + "\n";
  }
  return out;
}

/// True once no process mentions `needle` (within `within`); `left` lists the last ones seen.
inline bool nothing_left(const std::string& needle, std::chrono::seconds within, std::string& left) {
  const auto until = std::chrono::steady_clock::now() + within;
  do {
    left = processes_mentioning(needle);
    if (left.empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

/// The network namespace of a process, "net:[4026...]" ("" once it is gone).
inline std::string netns_of(const std::string& pid) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + pid + "/ns/net", ec).string();
}

}  // namespace afd::test_support
