#include "deploy/launch/process_faults.hpp"

#include <signal.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace afd::launch {

expected<std::vector<process_entry>> read_processes(const std::string& run_dir) {
  std::ifstream in(run_dir + "/processes");
  if (!in) return error{errc::unavailable, run_dir + "/processes: cannot read (is the cluster launched from this machine?)"};
  std::vector<process_entry> out;
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    process_entry e;
    long pid = 0;
    if (!(words >> e.name >> pid)) continue;
    if (first) {  // "launcher PID [coordinator] [in-process workers]": not a worker process
      first = false;
      continue;
    }
    e.pid = static_cast<::pid_t>(pid);
    for (std::string w; words >> w;) e.workers.push_back(w);
    out.push_back(std::move(e));
  }
  return out;
}

expected<void> apply_process_fault(const faults::fault_rule& rule, ::pid_t pid) {
  if (pid <= 0) return error{errc::invalid_argument, "no process to apply '" + rule.text + "' to"};
  const int sig = rule.kind == faults::fault_kind::kill_process ? SIGKILL : SIGSTOP;
  if (rule.kind != faults::fault_kind::kill_process && rule.kind != faults::fault_kind::pause_process)
    return error{errc::invalid_argument, "'" + rule.text + "' is not a process fault"};
  if (::kill(pid, sig) != 0)
    return error{errc::unavailable, "process " + std::to_string(pid) + ": " + std::strerror(errno)};
  if (sig == SIGSTOP) {
    std::this_thread::sleep_for(rule.duration);
    if (::kill(pid, SIGCONT) != 0)
      return error{errc::unavailable, "process " + std::to_string(pid) + " (resuming): " + std::strerror(errno)};
  }
  return {};
}

}  // namespace afd::launch
