// Fault rules: their text form, their checks, and decisions that replay from a seed.
#include "runtime/faults/faults.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace afd::faults {
namespace {

TEST(fault_rules, parse_every_key_and_print_them_back) {
  auto r = parse_rule("data_drop worker=a0 peer=f1 both step=40-42 layer=3 mb=1 after=2s until=9500ms nth=2 "
                      "probability=0.5 max=3");
  ASSERT_TRUE(r) << r.err().message();
  EXPECT_EQ(r->kind, fault_kind::data_drop);
  EXPECT_EQ(r->worker, "a0");
  EXPECT_EQ(r->peer, "f1");
  EXPECT_TRUE(r->both_ways);
  EXPECT_EQ(*r->step_from, 40u);
  EXPECT_EQ(*r->step_to, 42u);
  EXPECT_EQ(*r->layer, 3);
  EXPECT_EQ(*r->micro_batch, 1u);
  EXPECT_EQ(r->after, milliseconds(2000));
  EXPECT_EQ(*r->until, milliseconds(9500));
  EXPECT_EQ(*r->nth, 2u);
  EXPECT_EQ(r->probability, 0.5);
  EXPECT_EQ(r->max_fires, 3u);
  auto again = parse_rule(to_text(*r));
  ASSERT_TRUE(again) << to_text(*r);
  EXPECT_EQ(to_text(*again), to_text(*r));
  auto pause = parse_rule("pause_process role=ffn duration=1.5s");
  ASSERT_TRUE(pause);
  EXPECT_EQ(pause->duration, milliseconds(1500));
  EXPECT_EQ(to_text(*pause), "pause_process role=ffn duration=1500ms");
}

TEST(fault_rules, bad_rules_name_what_is_wrong) {
  struct bad_case {
    const char* text;
    const char* needle;
  };
  for (const auto& c : std::vector<bad_case>{
           {"", "empty"},
           {"explode worker=a0", "unknown kind 'explode'"},
           {"data_drop colour=red", "unknown key 'colour'"},
           {"data_drop step=x", "step=x is not a number"},
           {"data_delay delay=soon", "delay=soon is not a duration"},
           {"data_delay", "needs delay="},
           {"pause_process worker=f1", "needs duration="},
           {"pause_process duration=2s", "needs worker=... or role=..."},
           {"blackhole worker=a0 duration=1s", "needs peer="},
           {"kill_process worker=a0 peer=f0", "takes no peer"},
           {"data_drop probability=1.5", "probability must be in (0, 1]"},
           {"data_drop step=9-3", "is empty"},
           {"crash_actor worker=a0 layer=3", "takes no step, layer or mb"},
           {"hang_engine worker=a0 duration=1s mb=2", "mb applies to data-plane kinds only"},
           {"data_drop nth=0", "nth counts from 1"},
           {"data_drop role=router", "role must be"},
           {"data_drop worker", "'worker' needs a value"},
       }) {
    auto r = parse_rule(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.err().code(), errc::invalid_argument);
    EXPECT_NE(r.err().message().find(c.needle), std::string::npos) << c.text << " -> " << r.err().message();
  }
}

std::vector<bool> run(std::uint64_t seed, const char* rule, int n) {
  auto r = parse_rule(rule);
  EXPECT_TRUE(r);
  fault_plan plan({*r}, seed);
  site_identity self{"a0", "attention"};
  std::vector<bool> fired;
  for (int i = 0; i < n; ++i) fired.push_back(bool(plan.decide({fault_kind::data_drop}, self, {0, -1, 0, "f0"})));
  return fired;
}

TEST(fault_decisions, replay_from_the_seed_and_follow_the_probability) {
  const auto a = run(42, "data_drop probability=0.25", 4000);
  EXPECT_EQ(run(42, "data_drop probability=0.25", 4000), a);  // same seed, same decisions
  EXPECT_NE(run(43, "data_drop probability=0.25", 4000), a);
  const auto fired = std::count(a.begin(), a.end(), true);
  EXPECT_GT(fired, 900);
  EXPECT_LT(fired, 1100);
}

TEST(fault_decisions, nth_max_and_steps) {
  const auto nth = run(1, "data_drop nth=3", 10);
  EXPECT_EQ(std::count(nth.begin(), nth.end(), true), 1);
  EXPECT_TRUE(nth[2]);
  const auto most = run(1, "data_drop max=4", 10);
  EXPECT_EQ(std::count(most.begin(), most.end(), true), 4);

  fault_plan plan({*parse_rule("data_corrupt step=5-6 layer=2 mb=1")}, 7);
  site_identity self{"f0", "ffn"};
  EXPECT_FALSE(plan.decide({fault_kind::data_corrupt}, self, {4, 2, 1, "a0"}));
  EXPECT_FALSE(plan.decide({fault_kind::data_corrupt}, self, {5, 3, 1, "a0"}));
  EXPECT_FALSE(plan.decide({fault_kind::data_corrupt}, self, {5, 2, 0, "a0"}));
  EXPECT_FALSE(plan.decide({fault_kind::data_drop}, self, {5, 2, 1, "a0"}));  // another kind
  EXPECT_TRUE(plan.decide({fault_kind::data_corrupt}, self, {6, 2, 1, "a0"}));
  EXPECT_EQ(plan.fired(0), 1u);
}

TEST(fault_decisions, targets_workers_roles_and_pairs_one_way_or_both) {
  fault_plan plan({*parse_rule("blackhole worker=a1 peer=coordinator duration=1s"),
                   *parse_rule("blackhole worker=a0 peer=f0 both duration=1s"), *parse_rule("control_drop role=ffn")},
                  3);
  auto fires = [&](const char* name, const char* role, const char* peer, fault_kind k) {
    return bool(plan.decide({k}, {name, role}, {0, -1, 0, peer}));
  };
  EXPECT_TRUE(fires("a1", "attention", "coordinator", fault_kind::blackhole));
  EXPECT_FALSE(fires("coordinator", "coordinator", "a1", fault_kind::blackhole));  // one way
  EXPECT_TRUE(fires("a0", "attention", "f0", fault_kind::blackhole));
  EXPECT_TRUE(fires("f0", "ffn", "a0", fault_kind::blackhole));  // both ways
  EXPECT_FALSE(fires("f1", "ffn", "a0", fault_kind::blackhole));
  EXPECT_TRUE(fires("f1", "ffn", "a0", fault_kind::control_drop));
  EXPECT_FALSE(fires("a1", "attention", "f0", fault_kind::control_drop));
}

TEST(fault_decisions, time_windows_count_from_arming) {
  fault_plan plan({*parse_rule("control_drop after=150ms until=400ms")}, 3);
  const site_identity self{"a0", "attention"};
  EXPECT_FALSE(plan.decide({fault_kind::control_drop}, self, {}));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_TRUE(plan.decide({fault_kind::control_drop}, self, {}));
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_FALSE(plan.decide({fault_kind::control_drop}, self, {}));
}

TEST(fault_sites, inert_until_armed_and_disarmed_again) {
  fault_site site({"a0", "attention"});
  EXPECT_FALSE(site.armed());
  site.arm(std::make_shared<fault_plan>(std::vector<fault_rule>{*parse_rule("data_drop")}, 1));
  EXPECT_TRUE(site.armed());
  std::shared_ptr<fault_plan> holder;
  EXPECT_TRUE(site.decide({fault_kind::data_drop}, {}, holder));
  site.arm(nullptr);
  EXPECT_FALSE(site.armed());
  EXPECT_TRUE(holder);  // a decision's rule outlives disarming while held
}

}  // namespace
}  // namespace afd::faults
