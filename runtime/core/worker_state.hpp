#pragma once
/// The states of a worker as the coordinator, the workers and the client API name them.

#include <cstdint>
#include <optional>
#include <string_view>

namespace afd {

/// Where a worker is in its life, as the coordinator sees it.
enum class worker_state : std::uint8_t {
  starting = 0,  ///< process up; registering, connecting its transport or loading weights
  ready = 1,     ///< serving the current epoch
  suspect = 2,   ///< a peer reported it (step deadline); the coordinator is confirming
  failed = 3,    ///< declared failed: fenced, its work moved to others; it may come back and rejoin
  stopped = 4,   ///< stopped by the cluster (shutdown, or its engine stopped for a new epoch)
};

/// "starting", "ready", "suspect", "failed", "stopped".
constexpr std::string_view to_string(worker_state s) noexcept {
  switch (s) {
    case worker_state::starting: return "starting";
    case worker_state::ready: return "ready";
    case worker_state::suspect: return "suspect";
    case worker_state::failed: return "failed";
    case worker_state::stopped: return "stopped";
  }
  return "unknown";
}

/// The state named `text`, or nullopt.
constexpr std::optional<worker_state> parse_worker_state(std::string_view text) noexcept {
  for (auto s : {worker_state::starting, worker_state::ready, worker_state::suspect, worker_state::failed,
                 worker_state::stopped})
    if (to_string(s) == text) return s;
  return std::nullopt;
}

}  // namespace afd
