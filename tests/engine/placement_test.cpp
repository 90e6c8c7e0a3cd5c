// The placement value and its pure recovery function: tables of (planned placement, live workers)
// against the owners written out by hand, and the invariants over every live set.
#include "runtime/engine/placement.hpp"

#include <gtest/gtest.h>

#include <random>

namespace afd::engine {
namespace {

/// A placement of `layers` layers over `workers` FFN workers: MoE layers with `experts` experts in
/// contiguous ranges, each layer's shared unit whole on worker l mod F, or sliced into `slices`
/// (worker, begin, end) when given.
placement make(int workers, int layers, int experts, std::int64_t width, std::vector<unit_slice> slices = {}) {
  placement p;
  for (int w = 0; w < workers; ++w) p.ffn_workers.push_back("f" + std::to_string(w));
  for (int l = 0; l < layers; ++l) {
    layer_placement lp;
    lp.layer = l;
    lp.moe = experts > 0;
    for (int e = 0; e < experts; ++e) lp.expert_owner.push_back(e * workers / experts);
    lp.unit_width = width;
    if (width > 0) lp.unit = slices.empty() ? std::vector<unit_slice>{{l % workers, 0, width}} : slices;
    p.layers.push_back(lp);
  }
  return p;
}

std::vector<bool> live_of(int workers, std::initializer_list<int> lost) {
  std::vector<bool> live(static_cast<std::size_t>(workers), true);
  for (int w : lost) live[static_cast<std::size_t>(w)] = false;
  return live;
}

TEST(placement, a_lost_workers_units_are_dealt_to_the_survivors_in_turn) {
  // 3 workers, 6 experts: f0 {0,1}, f1 {2,3}, f2 {4,5}; shared unit of layer l on f(l mod 3).
  const placement planned = make(3, 2, 6, 8);
  auto p = placement_for_live(planned, live_of(3, {1}));
  ASSERT_TRUE(p) << p.err().message();
  // Layer 0: f1's units (experts 2, 3, then the shared unit of layer 1 lives on f1, not layer 0)
  // go to survivors {f0, f2} starting at 0 mod 2 = f0.
  EXPECT_EQ(p->layers[0].expert_owner, (std::vector<int>{0, 0, 0, 2, 2, 2}));
  EXPECT_EQ(p->layers[0].unit, (std::vector<unit_slice>{{0, 0, 8}}));
  // Layer 1: start at 1 mod 2 = f2: expert 2 -> f2, expert 3 -> f0, its shared unit -> f2.
  EXPECT_EQ(p->layers[1].expert_owner, (std::vector<int>{0, 0, 2, 0, 2, 2}));
  EXPECT_EQ(p->layers[1].unit, (std::vector<unit_slice>{{2, 0, 8}}));
  EXPECT_TRUE(p->validate());
}

TEST(placement, two_lost_workers_are_dealt_in_worker_order) {
  const placement planned = make(4, 1, 8, 0);  // f0 {0,1} f1 {2,3} f2 {4,5} f3 {6,7}; no shared unit
  auto p = placement_for_live(planned, live_of(4, {0, 2}));
  ASSERT_TRUE(p);
  // Survivors {f1, f3}, start 0: f0's 0 -> f1, 1 -> f3; f2's 4 -> f1, 5 -> f3.
  EXPECT_EQ(p->layers[0].expert_owner, (std::vector<int>{1, 3, 1, 1, 1, 3, 3, 3}));
}

struct slice_case {
  const char* name;
  std::vector<unit_slice> planned;
  std::vector<int> lost;
  std::vector<unit_slice> want;
};

TEST(placement, lost_slices_join_the_narrower_live_neighbour) {
  const std::vector<unit_slice> even{{0, 0, 10}, {1, 10, 20}, {2, 20, 30}, {3, 30, 40}};
  const std::vector<slice_case> cases = {
      {"middle, equal neighbours: the left one", even, {1}, {{0, 0, 20}, {2, 20, 30}, {3, 30, 40}}},
      {"a run of two in the middle", even, {1, 2}, {{0, 0, 30}, {3, 30, 40}}},
      {"the first slice: only a right neighbour", even, {0}, {{1, 0, 20}, {2, 20, 30}, {3, 30, 40}}},
      {"the last slice: only a left neighbour", even, {3}, {{0, 0, 10}, {1, 10, 20}, {2, 20, 40}}},
      {"narrower right neighbour", {{0, 0, 25}, {1, 25, 30}, {2, 30, 40}}, {1}, {{0, 0, 25}, {2, 25, 40}}},
      {"narrower left neighbour", {{0, 0, 5}, {1, 5, 20}, {2, 20, 40}}, {1}, {{0, 0, 20}, {2, 20, 40}}},
      {"one holder left: the unit whole", even, {0, 1, 2}, {{3, 0, 40}}},
      {"two separate runs", even, {0, 2}, {{1, 0, 20}, {3, 20, 40}}},
  };
  for (const auto& c : cases) {
    const placement planned = make(4, 1, 0, 40, c.planned);
    std::vector<bool> live(4, true);
    for (int w : c.lost) live[static_cast<std::size_t>(w)] = false;
    auto p = placement_for_live(planned, live);
    ASSERT_TRUE(p) << c.name;
    EXPECT_EQ(p->layers[0].unit, c.want) << c.name;
    EXPECT_TRUE(p->validate()) << c.name;
  }
}

TEST(placement, a_sliced_unit_whose_holders_are_all_lost_goes_whole_to_a_survivor) {
  // Only f0 and f1 hold slices; f2 holds experts only.
  const placement planned = make(3, 3, 3, 12, {{0, 0, 6}, {1, 6, 12}});
  auto p = placement_for_live(planned, live_of(3, {0, 1}));
  ASSERT_TRUE(p);
  for (const auto& lp : p->layers) {
    EXPECT_EQ(lp.unit, (std::vector<unit_slice>{{2, 0, 12}})) << "layer " << lp.layer;
    EXPECT_EQ(lp.expert_owner, (std::vector<int>{2, 2, 2}));
  }
}

TEST(placement, every_live_set_covers_every_unit_once_with_live_owners_and_returns_exactly) {
  const placement whole = make(5, 6, 16, 32);
  const placement sliced = make(5, 6, 16, 32, {{0, 0, 7}, {1, 7, 13}, {2, 13, 20}, {3, 20, 26}, {4, 26, 32}});
  for (const placement* planned : {&whole, &sliced}) {
    for (unsigned mask = 1; mask < 32; ++mask) {
      std::vector<bool> live(5);
      for (int w = 0; w < 5; ++w) live[static_cast<std::size_t>(w)] = (mask >> w) & 1u;
      auto p = placement_for_live(*planned, live);
      ASSERT_TRUE(p) << mask;
      ASSERT_TRUE(p->validate()) << mask << ": " << p->validate().err().message();
      for (const auto& lp : p->layers) {
        for (int owner : lp.expert_owner) EXPECT_TRUE(live[static_cast<std::size_t>(owner)]) << mask;
        for (const auto& s : lp.unit) EXPECT_TRUE(live[static_cast<std::size_t>(s.worker)]) << mask;
      }
      // Units of live workers never move.
      for (std::size_t l = 0; l < p->layers.size(); ++l)
        for (std::size_t e = 0; e < p->layers[l].expert_owner.size(); ++e) {
          const int before = planned->layers[l].expert_owner[e];
          if (live[static_cast<std::size_t>(before)]) {
            EXPECT_EQ(p->layers[l].expert_owner[e], before);
          }
        }
      // Same input, same answer (a returning worker gets back what the topology gives it).
      EXPECT_EQ(*placement_for_live(*planned, live), *p);
    }
    auto all = placement_for_live(*planned, std::vector<bool>(5, true));
    ASSERT_TRUE(all);
    EXPECT_EQ(*all, *planned);
  }
}

TEST(placement, refuses_no_live_worker_and_a_wrong_live_set) {
  const placement planned = make(2, 1, 2, 4);
  auto none = placement_for_live(planned, {false, false});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.err().code(), errc::unavailable);
  auto wrong = placement_for_live(planned, {true});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.err().code(), errc::invalid_argument);
}

TEST(placement, assignment_and_weight_selection_follow_the_owners) {
  const placement planned = make(2, 2, 4, 8, {{0, 0, 3}, {1, 3, 8}});
  const ffn_assignment a = planned.assignment_of(1);
  EXPECT_EQ(a.units, (std::vector<std::vector<std::int32_t>>{{2, 3}, {2, 3}}));
  ASSERT_EQ(a.shared_slices.size(), 2u);
  EXPECT_EQ(a.shared_slices[0], (ffn_assignment::slice{3, 5}));
  const placement whole = make(2, 2, 4, 8);
  EXPECT_EQ(whole.assignment_of(1).units, (std::vector<std::vector<std::int32_t>>{{2, 3}, {2, 3, shared_unit}}));
  const weight_selection s = ffn_weight_selection(whole.assignment_of(1));
  EXPECT_FALSE(s.loads_shared(0));
  EXPECT_TRUE(s.loads_shared(1));
  EXPECT_EQ((*s.experts)[0], (std::vector<std::int32_t>{2, 3}));
}

TEST(placement, validate_names_the_layer_of_a_gap_or_a_bad_owner) {
  placement p = make(2, 3, 2, 8, {{0, 0, 3}, {1, 3, 8}});
  p.layers[2].unit[1].begin = 4;
  auto gap = p.validate();
  ASSERT_FALSE(gap);
  EXPECT_NE(gap.err().message().find("layer 2"), std::string::npos) << gap.err().message();
  p = make(2, 2, 2, 8);
  p.layers[1].expert_owner[0] = 5;
  auto owner = p.validate();
  ASSERT_FALSE(owner);
  EXPECT_NE(owner.err().message().find("layer 1 expert 0"), std::string::npos);
}

TEST(placement, describe_moves_names_what_changed_owner) {
  const placement planned = make(2, 1, 2, 4);
  auto p = placement_for_live(planned, {true, false});
  ASSERT_TRUE(p);
  EXPECT_EQ(describe_moves(planned, *p), "layer 0 expert 1: f1 -> f0");
  EXPECT_EQ(describe_moves(planned, planned), "");
}

}  // namespace
}  // namespace afd::engine
