#pragma once
/// Process faults, applied from outside the worker's process: `kill_process` (SIGKILL) and
/// `pause_process` (SIGSTOP for the rule's duration, then SIGCONT). Used by the launcher for the
/// topology's `faults:` and `afd launch --fault` rules, and by `afd faults matrix`.
/// A process rule fires once per matching process, `after=` its arming (other triggers do not
/// apply to processes).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/faults/faults.hpp"

namespace afd::launch {

/// One line of RUN/processes: a worker process started by a launcher or an agent.
struct process_entry {
  std::string name;                  ///< process name ("f1", "launcher")
  ::pid_t pid = 0;
  std::vector<std::string> workers;  ///< the workers it hosts
};

/// Reads RUN/processes (written by the launcher; rewritten at every restart).
expected<std::vector<process_entry>> read_processes(const std::string& run_dir);

/// Applies a process rule to `pid` now: SIGKILL, or SIGSTOP then (after the rule's duration,
/// blocking the caller) SIGCONT. errc::unavailable when the process is gone.
expected<void> apply_process_fault(const faults::fault_rule& rule, ::pid_t pid);

}  // namespace afd::launch
