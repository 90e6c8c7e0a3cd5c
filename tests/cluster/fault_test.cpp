// One fault at a time, injected with the fault plan API into an embedded 2A2F cluster while
// requests stream: every request ends with exactly the reference engine's tokens, each streamed
// once in order; the rule fired; no witness is blamed; and the cluster returns to its full
// capacity (every worker ready again).

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "deploy/client/embedded.hpp"
#include "tests/cluster/test_cluster.hpp"

namespace afd::cluster_testing {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

struct fault_case {
  const char* name;
  const char* rule;
  /// The workers the coordinator may declare failed (the rule's target); empty: nobody.
  std::vector<std::string> may_fail;
  /// The target must be declared failed (and rejoin).
  bool must_fail = false;
  /// This worker must be reported slow (a straggler), and nobody failed.
  const char* slow = nullptr;
  /// The fault lasts this long after it fires: capacity is checked after it.
  std::chrono::milliseconds lasts{0};
};

std::string case_name(const ::testing::TestParamInfo<fault_case>& p) { return p.param.name; }

class single_fault : public ::testing::TestWithParam<fault_case> {};

TEST_P(single_fault, every_request_keeps_the_reference_tokens_and_capacity_returns) {
  const fault_case& fc = GetParam();
  auto spec = example_spec("2a2f", 2);
  spec.plane.step_deadline = 1000ms;  // hang detection at 2 step deadlines: short runs
  auto made = client::embed_spec(spec);
  ASSERT_TRUE(made.has_value()) << made.err().to_string();
  auto& c = *made;
  streaming_batch batch;
  batch.submit(*c, 6, 8, 5, 40);
  // Armed once the requests are under way (decode); rules with step= fire in prefill too.
  batch.wait_streaming(2);
  ASSERT_TRUE(c->arm_faults({fc.rule}, 7).has_value());
  const auto armed = clock_type::now();
  batch.expect_reference_tokens(*c, spec, 90s);
  std::this_thread::sleep_until(armed + fc.lasts);
  // Full capacity again.
  auto full = wait_full_capacity(*c);
  ASSERT_TRUE(full.has_value()) << full.err().to_string();
  // Firings reach the coordinator with the workers' heartbeats (every 100 ms): a run shorter
  // than that may not have reported its firing yet.
  client::cluster_status st = *full;
  for (int tries = 0; tries < 30 && (st.faults.empty() || st.faults[0].fired == 0); ++tries) {
    std::this_thread::sleep_for(100ms);
    if (auto again = c->status()) st = *again;
  }
  std::string events;
  for (const auto& e : st.events) events += e.kind + " " + e.worker + ": " + e.detail + "\n";
  SCOPED_TRACE(events);
  EXPECT_TRUE(st.ready);
  for (const auto& w : st.workers) EXPECT_EQ(w.state, worker_state::ready) << w.name;
  ASSERT_EQ(st.faults.size(), 1u);
  EXPECT_GT(st.faults[0].fired, 0u) << "the rule never fired: " << fc.rule;
  bool target_failed = false, target_slow = false;
  for (const auto& e : st.events) {
    const bool allowed = std::find(fc.may_fail.begin(), fc.may_fail.end(), e.worker) != fc.may_fail.end();
    if (e.kind == "failed") {
      EXPECT_TRUE(allowed) << "worker '" << e.worker << "' was blamed: " << e.detail;
      target_failed = target_failed || allowed;
    }
    if (e.kind == "slow" && fc.slow != nullptr && e.worker == fc.slow) target_slow = true;
  }
  if (fc.must_fail) {
    EXPECT_TRUE(target_failed);
  }
  if (fc.slow != nullptr) {
    EXPECT_TRUE(target_slow);
  }
  // And it serves.
  auto later = make_request(9, 11, 6, true);
  auto id = c->submit(later);
  ASSERT_TRUE(id.has_value()) << id.err().to_string();
  auto r = c->wait(*id, 30s);
  ASSERT_TRUE(r.has_value()) << r.err().to_string();
  EXPECT_EQ(r->tokens, reference_result(spec, later).tokens);
}

INSTANTIATE_TEST_SUITE_P(
    kinds, single_fault,
    ::testing::Values(
        fault_case{"crash_attention", "crash_actor worker=a1 max=1", {"a1"}, true},
        fault_case{"crash_ffn", "crash_actor worker=f0 max=1", {"f0"}, true},
        fault_case{"hang_ffn", "hang_engine worker=f1 duration=3s max=1", {"f1"}, true, nullptr, 3500ms},
        fault_case{"partition_attention", "blackhole worker=a0 peer=coordinator both duration=2s max=1", {"a0"}, true, nullptr, 2500ms},
        fault_case{"straggler_ffn", "slow_worker worker=f1 delay=1300ms max=2", {}, false, "f1"},
        fault_case{"data_drop", "data_drop worker=a0 peer=f1 nth=30", {"a0", "f1"}},
        fault_case{"data_corrupt", "data_corrupt worker=a1 peer=f0 nth=30", {"a1", "f0"}},
        fault_case{"data_fail", "data_fail worker=f0 nth=30", {"f0"}},
        fault_case{"data_duplicate", "data_duplicate worker=f1 nth=30", {}},
        fault_case{"data_delay", "data_delay worker=a0 delay=300ms nth=30", {}},
        fault_case{"control_drop", "control_drop worker=a0 probability=0.2", {"a0"}},
        fault_case{"control_duplicate", "control_duplicate worker=a1 probability=0.3", {}},
        fault_case{"control_delay", "control_delay worker=a1 delay=200ms probability=0.1", {"a1"}},
        fault_case{"control_reorder", "control_reorder worker=a0 nth=20", {"a0"}}),
    case_name);

}  // namespace
}  // namespace afd::cluster_testing
