// The restart budget (supervision.hpp).
#include "deploy/launch/supervision.hpp"

namespace afd::launch {

std::string restart_policy::to_string() const {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(window).count();
  return std::to_string(max_restarts) + (max_restarts == 1 ? " restart in " : " restarts in ") + std::to_string(s) +
         " s";
}

bool restart_budget::try_restart(time_point now) {
  while (!restarts_.empty() && now - restarts_.front() >= policy_.window) restarts_.pop_front();
  if (static_cast<int>(restarts_.size()) >= policy_.max_restarts) return false;
  restarts_.push_back(now);
  ++total_;
  return true;
}

int restart_budget::used(time_point now) const {
  int n = 0;
  for (auto t : restarts_)
    if (now - t < policy_.window) ++n;
  return n;
}

std::string_view to_string(supervised_state s) noexcept {
  switch (s) {
    case supervised_state::running: return "running";
    case supervised_state::held: return "held";
    case supervised_state::stopped: return "stopped";
    case supervised_state::given_up: return "given_up";
  }
  return "?";
}

}  // namespace afd::launch
