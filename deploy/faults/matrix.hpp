#pragma once
/// The fault matrix (`afd faults matrix FILE`): against the cluster a topology file describes,
/// launched as `afd launch` would (real processes), a fault-free baseline row, then one row per
/// fault kind x role x phase (prefill, decode, during the recovery from another worker's kill),
/// each with concurrent streaming requests. Per row: how often the fault fired, lost requests,
/// token mismatches against the baseline, duplicated and skipped streamed tokens, detection and
/// recovery times from the coordinator's events, the client-visible stall, the time until the
/// cluster is back at the capacity its topology describes, throughput after vs before, a verdict.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::fault_matrix {

struct options {
  std::string file;               ///< the topology file
  std::string model;              ///< checkpoint directory instead of the file's model.path (may be empty)
  std::uint64_t seed = 1;         ///< fault decisions and sampled requests replay from it
  int requests = 6;               ///< concurrent requests per row (half greedy, half seeded sampling)
  int max_new_tokens = 32;        ///< per request
  std::vector<std::string> kinds;   ///< only these fault kinds (empty: all)
  std::vector<std::string> roles;   ///< only these roles: attention, ffn (empty: both)
  std::vector<std::string> phases;  ///< only these phases: prefill, decode, recovery (empty: all)
  int random_rows = 0;  ///< > 0: that many rows drawn from the selection with the seed (a soak), instead of each once
  std::chrono::seconds row_timeout{120};      ///< a request not finished by then is lost
  std::chrono::seconds capacity_timeout{60};  ///< full capacity must return within this
  std::string afd_executable;     ///< the `afd` binary that launches and stops the cluster
  std::string log_dir;            ///< where the launcher's output goes
};

/// One row of the matrix.
struct row {
  std::string kind = "none";  ///< "none" for the baseline
  std::string role, phase, target, rule;
  std::uint64_t fired = 0;
  int requests = 0, lost = 0, mismatches = 0, duplicated = 0, skipped = 0;
  std::optional<double> detection_ms;  ///< fault applied -> first failure, retry or straggler event
  std::optional<double> recovery_ms;   ///< that event -> the next epoch ready (serving again)
  std::optional<double> capacity_ms;   ///< fault applied -> every worker ready again
  double stall_p50_ms = 0, stall_p99_ms = 0, stall_max_ms = 0;  ///< per request, its longest gap between tokens
  double tokens_per_s = 0;        ///< the row's requests (with the fault)
  double after_tokens_per_s = 0;  ///< a fault-free batch once capacity returned
  double throughput_ratio = 0;    ///< after / the baseline's
  std::vector<std::string> failed;  ///< workers the coordinator declared failed
  std::vector<std::string> events;  ///< the coordinator's events during the row ("kind worker: detail")
  std::vector<std::string> errors;  ///< the lost requests' errors (distinct)
  bool pass = false;
  std::string reason;  ///< why not, when it failed
  double seconds = 0;  ///< the row's wall time
};

struct result {
  std::uint64_t seed = 0;
  std::string file;
  std::vector<row> rows;
  int passed = 0, failed = 0;
  std::string rerun;  ///< the command that reruns exactly this matrix
};

/// The kinds, roles and phases the matrix knows (what --kinds/--roles/--phases accept).
const std::vector<std::string>& all_kinds();
const std::vector<std::string>& all_roles();
const std::vector<std::string>& all_phases();

/// Runs the matrix; `progress` (optional) gets a line per step for the impatient (stderr).
/// errc::invalid_argument for a bad filter, errc::unavailable when the cluster cannot be launched.
expected<result> run(const options& o, const std::function<void(const std::string&)>& progress = {});

}  // namespace afd::fault_matrix
