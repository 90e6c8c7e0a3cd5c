#pragma once
/// Fault injection: faults are data (rules), decided by a hash so that a run replays from its
/// seed, and inert when no rule is armed (one relaxed atomic load per fault point).
///
/// A rule names a kind, a target (a worker, a role, or a pair of workers), a trigger (step, layer,
/// micro-batch, a time window after arming, the nth occurrence, or a probability) and a duration.
/// Written as text, one rule per string (docs/faults.md):
///   pause_process worker=f1 after=2s duration=6s
///   data_drop worker=a0 peer=f1 step=40 layer=3
///   control_delay role=attention delay=300ms probability=0.2
///   blackhole worker=a1 peer=coordinator both duration=3s
/// Every decision is a hash of (seed, rule, link, per-link sequence number): the same seed and
/// the same traffic give the same decisions, so a run replays from its printed seed. Every rule
/// counts how often it fired; a rule that never fired is reported as such.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::faults {

/// What a fault does.
enum class fault_kind : std::uint8_t {
  kill_process,       ///< SIGKILL of the target's process (applied by its supervisor or a test)
  crash_actor,        ///< the target's actor dies as in a crash (no goodbye); its process lives on
  pause_process,      ///< SIGSTOP for `duration`, then SIGCONT (applied from outside)
  hang_engine,        ///< the engine thread blocks for `duration`; the actor still answers
  slow_worker,        ///< + `delay` per step (or per layer with `per_layer`): a straggler
  control_drop,       ///< a control message from the target is lost
  control_delay,      ///< ... arrives `delay` late
  control_duplicate,  ///< ... arrives twice
  control_reorder,    ///< ... is held back until the target's next message (overtaken), at most `delay`
  blackhole,          ///< every control message between the target and `peer` (one way or both) is lost for `duration`
  data_fail,          ///< a data-plane send fails with an error
  data_drop,          ///< a data message is lost (reported sent)
  data_delay,         ///< ... arrives `delay` late
  data_duplicate,     ///< ... arrives twice
  data_corrupt,       ///< ... arrives with a flipped byte (the receiver's checks must catch it)
  peer_dead,          ///< the transport declares `peer` (or every peer) dead
};
inline constexpr std::size_t fault_kind_count = 16;

/// Stable name, e.g. "pause_process".
std::string_view to_string(fault_kind k) noexcept;
/// The kind named `text`, or nullopt.
std::optional<fault_kind> parse_fault_kind(std::string_view text) noexcept;

/// Where a kind is applied.
enum class fault_layer : std::uint8_t {
  process,  ///< from outside the process (its supervisor, the fault matrix)
  actor,    ///< in the worker actor (crash_actor)
  engine,   ///< in the engine thread's step loop
  control,  ///< in the control-plane send wrapper and handler guard
  data,     ///< in the transport decorator
};
fault_layer layer_of(fault_kind k) noexcept;

using milliseconds = std::chrono::milliseconds;

/// One fault rule.
struct fault_rule {
  fault_kind kind = fault_kind::data_drop;
  // Target: all given fields must match; an empty field matches anything.
  std::string worker;        ///< worker name ("coordinator" for the coordinator)
  std::string role;          ///< "attention", "ffn" or "coordinator"
  std::string peer;          ///< pair kinds: the other end (worker name, or "coordinator")
  bool both_ways = false;    ///< pair kinds: also messages from peer to worker
  // Trigger: all given fields must hold.
  std::optional<std::uint64_t> step_from, step_to;  ///< engine steps [from, to] (data and engine kinds)
  std::optional<std::int64_t> layer;                ///< data and engine kinds
  std::optional<std::uint32_t> micro_batch;         ///< data kinds
  milliseconds after{0};                            ///< not before this long after arming
  std::optional<milliseconds> until;                ///< not after this long after arming
  std::optional<std::uint64_t> nth;                 ///< only the nth matching occurrence (from 1) on a link
  double probability = 1.0;                         ///< of each matching occurrence
  std::uint64_t max_fires = 0;                      ///< 0: no limit
  // Effect.
  milliseconds duration{0};  ///< pause, hang, blackhole
  milliseconds delay{0};     ///< control/data delay, reorder hold, slow_worker's extra time
  bool per_layer = false;    ///< slow_worker: `delay` per layer instead of per step
  std::string text;          ///< as written (reports name the rule by it)
};

/// Parses one rule ("KIND key=value ..."); errc::invalid_argument naming the word that is wrong.
/// Keys: worker, role, peer, both, step (N or A-B), layer, mb, after, until, nth, probability (or
/// p), max, duration, delay, per_layer. Durations take ms / s suffixes ("300ms", "2s", "1.5s").
expected<fault_rule> parse_rule(std::string_view text);
/// Checks a rule's fields against its kind (e.g. pause_process needs a duration, blackhole a
/// peer); errc::invalid_argument with the reason.
expected<void> check_rule(const fault_rule& r);
/// The rule in the text form parse_rule reads (canonical key order).
std::string to_text(const fault_rule& r);

/// Who is asking at a fault point.
struct site_identity {
  std::string name;  ///< worker name, or "coordinator"
  std::string role;  ///< "attention", "ffn" or "coordinator"
};

/// What a data or engine fault point knows about the message or step at hand.
struct data_context {
  std::uint64_t step = 0;
  std::int64_t layer = -1;       ///< -1: not about a layer
  std::uint32_t micro_batch = 0;
  std::string_view peer;         ///< the other end's name; empty when unknown
};

/// One decision: whether a rule fired, and the rule.
struct decision {
  const fault_rule* rule = nullptr;  ///< null: nothing fires
  explicit operator bool() const noexcept { return rule != nullptr; }
};

/// The rules of a run, their seed and their firing counts; shared by every site of a process.
class fault_plan {
 public:
  fault_plan(std::vector<fault_rule> rules, std::uint64_t seed);
  const std::vector<fault_rule>& rules() const noexcept { return rules_; }
  std::uint64_t seed() const noexcept { return seed_; }
  /// Times rule i fired in this process.
  std::uint64_t fired(std::size_t i) const noexcept { return fired_[i].load(std::memory_order_relaxed); }
  /// Milliseconds since the plan was armed (rules' time windows count from here).
  milliseconds since_armed() const;

  /// The first rule of one of `kinds` that targets `self` (and `peer`, for pair kinds), whose
  /// trigger holds for `ctx`, and whose hash of (seed, rule, link, sequence number on the link)
  /// falls under its probability. Counts the firing. Thread-safe.
  /// `accept`, when given, narrows the rules considered further (e.g. per-layer ones only).
  decision decide(std::initializer_list<fault_kind> kinds, const site_identity& self, const data_context& ctx,
                  bool (*accept)(const fault_rule&) = nullptr);
  /// Whether rule `r` targets `self` (ignoring the trigger): for rules applied from outside.
  static bool targets(const fault_rule& r, const site_identity& self, std::string_view peer = {});
  /// Records a firing applied from outside this plan's sites (process faults).
  void count(std::size_t rule) noexcept { fired_[rule].fetch_add(1, std::memory_order_relaxed); }
  /// Index of `r` in rules().
  std::size_t index_of(const fault_rule& r) const noexcept {
    return static_cast<std::size_t>(&r - rules_.data());
  }

 private:
  std::vector<fault_rule> rules_;
  std::uint64_t seed_;
  std::chrono::steady_clock::time_point armed_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> fired_;
  std::mutex mutex_;  ///< guards the per-link sequence numbers (only while a rule is armed)
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> sequence_;  ///< [rule] (link, next seq)
};

/// One fault site (a worker, the coordinator): its identity and the process's plan. Inert until
/// a plan is armed: armed() is one relaxed atomic load.
class fault_site {
 public:
  fault_site() = default;
  explicit fault_site(site_identity self) : self_(std::move(self)) {}
  fault_site(const fault_site&) = delete;
  fault_site& operator=(const fault_site&) = delete;
  /// Arms (or with null disarms) a plan; thread-safe against decide().
  void arm(std::shared_ptr<fault_plan> plan);
  /// True when a plan with rules is armed.
  bool armed() const noexcept { return armed_.load(std::memory_order_relaxed); }
  /// The plan's decision for this site (call only when armed(): that is the inert fast path).
  /// The decision's rule stays valid while `holder` holds the plan.
  decision decide(std::initializer_list<fault_kind> kinds, const data_context& ctx,
                  std::shared_ptr<fault_plan>& holder, bool (*accept)(const fault_rule&) = nullptr) {
    holder = plan_.load();
    return holder ? holder->decide(kinds, self_, ctx, accept) : decision{};
  }
  const site_identity& self() const noexcept { return self_; }
  std::shared_ptr<fault_plan> plan() const { return plan_.load(); }

 private:
  site_identity self_;
  std::atomic<std::shared_ptr<fault_plan>> plan_;
  std::atomic<bool> armed_{false};
};

/// splitmix64: the hash of every decision.
std::uint64_t mix(std::uint64_t x) noexcept;

}  // namespace afd::faults
