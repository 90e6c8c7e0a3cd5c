#pragma once
/// The restart budget of a supervised process (OTP's intensity/period): the launcher and the node
/// agent restart a worker process that exits unexpectedly while the cluster serves, at most
/// `max_restarts` times within `window`, then give up on it and say so. No CAF, no processes here.

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "deploy/launch/timeouts.hpp"

namespace afd::launch {

/// Restarts allowed per window.
struct restart_policy {
  int max_restarts = timeouts::max_restarts;
  std::chrono::steady_clock::duration window = timeouts::restart_window;
  /// "3 restarts in 60 s".
  std::string to_string() const;
};

/// The restarts of one process in the sliding window of its policy.
class restart_budget {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  explicit restart_budget(restart_policy policy = {}) : policy_(policy) {}
  /// The process exited unexpectedly at `now`: true (and the restart is counted) when one more
  /// restart is within the budget, false when it is spent (the supervisor gives up).
  bool try_restart(time_point now);
  /// Restarts counted in the window ending at `now`.
  int used(time_point now) const;
  /// Restarts ever made.
  int total() const noexcept { return total_; }
  const restart_policy& policy() const noexcept { return policy_; }

 private:
  restart_policy policy_;
  std::deque<time_point> restarts_;
  int total_ = 0;
};

/// What became of a supervised process.
enum class supervised_state : std::uint8_t {
  running,     ///< started (or restarted) and not exited
  held,        ///< exited unexpectedly; waiting for the coordinator to be reachable before a restart
  stopped,     ///< exited cleanly (the cluster stopped it)
  given_up,    ///< exited unexpectedly with its restart budget spent; not restarted again
};
/// "running" / "held" / "stopped" / "given_up".
std::string_view to_string(supervised_state s) noexcept;

}  // namespace afd::launch
