// Placement resolution against hand-written model configs. Expected owners are written out or
// computed by separate oracle code in this file, never by the resolver.
#include <algorithm>
#include <map>
#include <set>

#include "tests/topology/test_support.hpp"

namespace afd::topology {
namespace {

using testing::expect_error;
using testing::step3_config;
using testing::tiny_config;
using testing::yaml_lines;

// A topology with `ffn` FFN workers f0..f{ffn-1}, `placement` lines appended, `mode` combine mode.
yaml_lines with_workers(int ffn, const std::vector<std::string>& placement, const std::string& mode = "deterministic") {
  yaml_lines y{{"model: {path: m, combine_mode: " + mode + "}",                // 1
                "nodes: [{name: n, host: 127.0.0.1}]",                       // 2
                "coordinator: {node: n}",                                    // 3
                "attention_workers: [{name: a0, node: n}]",                  // 4
                "ffn_workers:"}};                                            // 5
  for (int i = 0; i < ffn; ++i) y.add("  - {name: f" + std::to_string(i) + ", node: n}");
  for (const auto& l : placement) y.add(l);
  return y;
}

// Parses (which must succeed) and resolves against `c`.
checked<placement> resolve(const yaml_lines& y, const model_config& c) {
  auto t = testing::parse(y);
  if (!t.ok()) {
    ADD_FAILURE() << "the topology should parse:\n" << testing::dump(t.errors);
    checked<placement> none;
    none.errors = t.errors;
    return none;
  }
  return resolve_placement(*t.value, c);
}

// Every expert of every MoE layer has exactly one owner in [0, F); dense layers own none.
void expect_complete(const placement& p, const model_config& c, int workers) {
  ASSERT_EQ(p.layers.size(), static_cast<std::size_t>(c.num_hidden_layers));
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const auto& lp = p.layers[static_cast<std::size_t>(l)];
    EXPECT_EQ(lp.layer, l);
    EXPECT_EQ(lp.moe, static_cast<bool>(c.moe_layers[static_cast<std::size_t>(l)]));
    if (!lp.moe) {
      EXPECT_TRUE(lp.expert_owner.empty());
      EXPECT_EQ(lp.unit_width, c.intermediate_size);
    } else {
      ASSERT_EQ(lp.expert_owner.size(), static_cast<std::size_t>(c.moe_num_experts));
      std::int64_t total = 0;
      for (int w = 0; w < workers; ++w) total += static_cast<std::int64_t>(p.experts_of(w, l).size());
      EXPECT_EQ(total, c.moe_num_experts);
      for (int o : lp.expert_owner) EXPECT_TRUE(o >= 0 && o < workers);
      EXPECT_EQ(lp.unit_width, c.share_expert_dim);
    }
    // Slices tile [0, width) in order.
    std::int64_t covered = 0;
    for (const auto& s : lp.unit) {
      EXPECT_EQ(s.begin, covered);
      EXPECT_LT(s.begin, s.end);
      covered = s.end;
    }
    EXPECT_EQ(covered, lp.unit_width);
  }
}

TEST(topology_placement, contiguous_48_experts_over_5_workers) {
  auto c = step3_config();
  auto r = resolve(with_workers(5, {}), c);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  expect_complete(*r.value, c, 5);
  // 48 = 5 * 9 + 3: the first three workers get 10, the last two 9 (README).
  const std::vector<std::pair<int, int>> ranges = {{0, 9}, {10, 19}, {20, 29}, {30, 38}, {39, 47}};
  for (std::int64_t l = 4; l <= 59; ++l)
    for (int w = 0; w < 5; ++w) {
      std::vector<std::int64_t> expected;
      for (int e = ranges[static_cast<std::size_t>(w)].first; e <= ranges[static_cast<std::size_t>(w)].second; ++e)
        expected.push_back(e);
      EXPECT_EQ(r.value->experts_of(w, l), expected) << "layer " << l << " worker " << w;
    }
  for (std::int64_t l : {0, 1, 2, 3, 60}) EXPECT_FALSE(r.value->layers[static_cast<std::size_t>(l)].moe);
}

TEST(topology_placement, any_ratio_resolves_without_divisibility) {
  for (const auto& c : {tiny_config(), step3_config()}) {
    for (int f = 1; f <= 11; ++f) {
      for (std::string experts : {"contiguous", "round_robin"}) {
        for (std::string shared : {"round_robin", "sliced"}) {
          auto y = with_workers(f, {"placement: {experts: " + experts + ", shared: " + shared + ", dense: " + shared + "}"},
                                "throughput");
          auto r = resolve(y, c);
          ASSERT_TRUE(r.ok()) << f << " " << experts << " " << shared << "\n" << testing::dump(r.errors);
          expect_complete(*r.value, c, f);
          const std::int64_t e = c.moe_num_experts;
          for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
            const auto& lp = r.value->layers[static_cast<std::size_t>(l)];
            if (lp.moe) {
              std::map<int, std::int64_t> count;
              for (int o : lp.expert_owner) ++count[o];
              for (int w = 0; w < f; ++w) {
                // Near-equal shares: floor(E/F) or ceil(E/F).
                EXPECT_GE(count[w], e / f);
                EXPECT_LE(count[w], (e + f - 1) / f);
              }
              for (std::int64_t x = 0; x < e; ++x) {
                const int owner = lp.expert_owner[static_cast<std::size_t>(x)];
                if (experts == "round_robin") {
                  EXPECT_EQ(owner, x % f);
                } else if (x > 0) {
                  EXPECT_GE(owner, lp.expert_owner[static_cast<std::size_t>(x - 1)]);  // contiguous: non-decreasing
                }
              }
            }
            if (shared == "round_robin") {
              ASSERT_EQ(lp.unit.size(), 1u);
              EXPECT_EQ(lp.unit[0].worker, l % f);  // layer l on worker l mod F
            } else {
              const std::int64_t width = lp.unit_width;
              EXPECT_EQ(lp.unit.size(), static_cast<std::size_t>(std::min<std::int64_t>(f, width)));
              for (const auto& s : lp.unit) {
                EXPECT_GE(s.end - s.begin, width / f);
                EXPECT_LE(s.end - s.begin, (width + f - 1) / f);
              }
            }
          }
          EXPECT_EQ(r.value->units_whole(), shared == "round_robin" || f == 1);
        }
      }
    }
  }
}

TEST(topology_placement, explicit_lists) {
  auto c = step3_config();
  auto y = with_workers(2, {"placement:", "  experts: {f0: [0-15, 20], f1: [16-19, 21-47]}", "  shared: {f1: whole}",
                            "  dense: {f0: whole}"});
  auto r = resolve(y, c);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  std::vector<std::int64_t> f0;
  for (int e = 0; e <= 15; ++e) f0.push_back(e);
  f0.push_back(20);
  std::vector<std::int64_t> f1 = {16, 17, 18, 19};
  for (int e = 21; e <= 47; ++e) f1.push_back(e);
  for (std::int64_t l = 4; l <= 59; ++l) {
    EXPECT_EQ(r.value->experts_of(0, l), f0);
    EXPECT_EQ(r.value->experts_of(1, l), f1);
    EXPECT_EQ(r.value->unit_slice_of(1, l), (unit_slice{1, 0, 5120}));
    EXPECT_FALSE(r.value->unit_slice_of(0, l).has_value());
  }
  for (std::int64_t l : {0, 1, 2, 3, 60}) {
    EXPECT_EQ(r.value->unit_slice_of(0, l), (unit_slice{0, 0, 18432}));
    EXPECT_TRUE(r.value->experts_of(0, l).empty());
  }
  EXPECT_TRUE(r.value->units_whole());
}

TEST(topology_placement, explicit_slices_in_throughput_mode) {
  auto c = step3_config();
  auto y = with_workers(3, {"placement:", "  shared: {f2: {begin: 0, end: 1000}, f0: {begin: 1000, end: 5120}}",
                            "  dense: {f1: {begin: 0, end: 9216}, f2: {begin: 9216, end: 18432}}"},
                        "throughput");
  auto r = resolve(y, c);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  expect_complete(*r.value, c, 3);
  EXPECT_EQ(r.value->layers[10].unit, (std::vector<unit_slice>{{2, 0, 1000}, {0, 1000, 5120}}));
  EXPECT_EQ(r.value->layers[60].unit, (std::vector<unit_slice>{{1, 0, 9216}, {2, 9216, 18432}}));
  EXPECT_FALSE(r.value->units_whole());
}

TEST(topology_placement, expert_owned_by_nobody_names_expert_and_layers) {
  auto y = with_workers(2, {"placement:", "  experts: {f0: [0-15, 20], f1: [16-19, 21-46]}"});
  auto r = resolve(y, step3_config());
  ASSERT_FALSE(r.ok());
  expect_error(r.errors,
               "expert 47 of MoE layers 4-59 is owned by nobody: expected each of the 48 experts (0-47) listed under "
               "exactly one FFN worker",
               y.line_of("experts:"), y.column(y.line_of("experts:"), "{"));
  y = with_workers(2, {"placement:", "  experts: {f0: [0-2], f1: [4]}"});
  r = resolve(y, tiny_config());
  expect_error(r.errors, "experts 3, 5-7 of MoE layers 1-3 are owned by nobody", y.line_of("experts:"),
               y.column(y.line_of("experts:"), "{"));
}

TEST(topology_placement, expert_owned_twice_is_found_without_the_model) {
  auto y = with_workers(2, {"placement:", "  experts:", "    f0: [0-15, 20]", "    f1: [16-20, 21-47]"});
  auto t = testing::parse(y);
  ASSERT_FALSE(t.ok());
  expect_error(t.errors,
               "expert 20 is owned twice in every MoE layer: by f0 (line " + std::to_string(y.line_of("f0: [0-15")) +
                   ") and by f1",
               y.line_of("16-20"), y.column(y.line_of("16-20"), "16-20"));
  y = with_workers(2, {"placement:", "  experts: {f0: [0-7, 3-4], f1: []}"});
  t = testing::parse(y);
  expect_error(t.errors, "experts 3-4 are owned twice in every MoE layer: listed twice for f0", y.line_of("3-4"),
               y.column(y.line_of("3-4"), "3-4"));
}

TEST(topology_placement, expert_out_of_range) {
  auto y = with_workers(2, {"placement:", "  experts: {f0: [0-40], f1: [41-49]}"});
  auto r = resolve(y, step3_config());
  expect_error(r.errors, "experts 48-49 of f1 are out of range: the model has 48 experts per MoE layer (0-47)",
               y.line_of("41-49"), y.column(y.line_of("41-49"), "41-49"));
  y = with_workers(1, {"placement:", "  experts: {f0: [0-7, 8]}"});
  r = resolve(y, tiny_config());
  expect_error(r.errors, "expert 8 of f0 is out of range: the model has 8 experts per MoE layer (0-7)",
               y.line_of("8]"), y.column(y.line_of("8]"), "8]"));
}

TEST(topology_placement, explicit_list_syntax_errors) {
  auto y = with_workers(2, {"placement:", "  experts: {f0: [0-3, x], f3: [4-7], a0: [1], f1: [7-5]}"});
  auto t = testing::parse(y);
  const int line = y.line_of("experts:");
  expect_error(t.errors, "expected an expert index or an inclusive range 'A-B' of non-negative integers, got 'x'", line,
               y.column(line, "x]"));
  expect_error(t.errors, "unknown FFN worker 'f3' (did you mean 'f0'?)", line, y.column(line, "f3"));
  expect_error(t.errors, "'a0' is an attention worker; expected an FFN worker (f0, f1)", line, y.column(line, "a0"));
  expect_error(t.errors, "expert range '7-5' is empty: expected first <= last", line, y.column(line, "7-5"));
  y = with_workers(2, {"placement: {experts: contigous}"});
  t = testing::parse(y);
  expect_error(t.errors, "got 'contigous' (did you mean 'contiguous'?)", y.line_of("contigous"),
               y.column(y.line_of("contigous"), "contigous"));
}

TEST(topology_placement, sliced_units_need_throughput_mode) {
  auto y = with_workers(2, {"placement: {shared: sliced}"});
  auto t = testing::parse(y);
  expect_error(t.errors,
               "shared expert sliced across workers is allowed only with model.combine_mode: throughput "
               "(deterministic mode computes every unit whole on one FFN worker)",
               y.line_of("sliced"), y.column(y.line_of("sliced"), "sliced"));
  y = with_workers(2, {"placement:", "  dense: {f0: {begin: 0, end: 48}, f1: {begin: 48, end: 96}}"});
  t = testing::parse(y);
  expect_error(t.errors, "dense MLP sliced across workers is allowed only with model.combine_mode: throughput",
               y.line_of("dense:"), y.column(y.line_of("dense:"), "{f0"));
  y = with_workers(2, {"placement:", "  layers: {\"0\": {dense: sliced}}"});
  t = testing::parse(y);
  expect_error(t.errors, "dense MLP sliced across workers", y.line_of("sliced"), y.column(y.line_of("sliced"), "sliced"));
  // The same in throughput mode is valid.
  y = with_workers(2, {"placement: {shared: sliced, dense: sliced}"}, "throughput");
  EXPECT_TRUE(testing::parse(y).ok());
}

TEST(topology_placement, unit_owned_twice_or_by_nobody) {
  auto y = with_workers(3, {"placement:", "  shared: {f0: whole, f1: whole}"});
  auto t = testing::parse(y);
  expect_error(t.errors, "shared expert of every MoE layer is owned twice: whole by f0 (line 10, column " + std::to_string(y.column(10, "whole")) + ") and whole by f1", 10,
               y.column(10, "whole}"));
  y = with_workers(3, {"placement:", "  shared: {f0: {begin: 0, end: 20}, f1: {begin: 10, end: 32}}"}, "throughput");
  t = testing::parse(y);
  expect_error(t.errors, "columns [10, 20) of the shared expert of every MoE layer are owned twice: by f0 (line 10, column " + std::to_string(y.column(10, "{begin")) + ") and by f1",
               10, y.column(10, "{begin: 10"));
  y = with_workers(3, {"placement:", "  shared: {f0: {begin: 0, end: 10}, f1: {begin: 12, end: 40}}"}, "throughput");
  auto r = resolve(y, tiny_config());
  expect_error(r.errors, "columns [10, 12) of the shared expert of MoE layers 1-3 are owned by nobody", 10,
               y.column(10, "{f0"));
  expect_error(r.errors, "column slice [12, 40) of f1 goes beyond the shared expert's width 32 (MoE layers 1-3)", 10,
               y.column(10, "{begin: 12"));
  y = with_workers(3, {"placement:", "  dense: {f0: {begin: 0, end: 50}}"}, "throughput");
  r = resolve(y, tiny_config());
  expect_error(r.errors, "columns [50, 96) of the dense MLP of dense layer 0 are owned by nobody", 10, y.column(10, "{f0"));
  y = with_workers(3, {"placement:", "  dense: {f0: {begin: 5, end: 5}}"}, "throughput");
  t = testing::parse(y);
  expect_error(t.errors, "column slice [5, 5) of f0 is empty: expected begin < end", 10, y.column(10, "{begin"));
}

TEST(topology_placement, per_layer_overrides) {
  auto c = step3_config();
  auto y = with_workers(4, {"placement:",                                            // 9
                            "  experts: contiguous",                                 // 10
                            "  layers:",                                             // 11
                            "    \"10-12\": {experts: round_robin, shared: {f3: whole}}",  // 12
                            "    60: {dense: {f2: whole}}"});                        // 13
  auto r = resolve(y, c);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  expect_complete(*r.value, c, 4);
  for (std::int64_t l = 4; l <= 59; ++l) {
    const auto& lp = r.value->layers[static_cast<std::size_t>(l)];
    const bool overridden = l >= 10 && l <= 12;
    for (std::int64_t e = 0; e < 48; ++e)
      EXPECT_EQ(lp.expert_owner[static_cast<std::size_t>(e)], overridden ? e % 4 : e / 12) << l << " " << e;
    EXPECT_EQ(lp.unit[0].worker, overridden ? 3 : l % 4);
  }
  EXPECT_EQ(r.value->layers[60].unit, (std::vector<unit_slice>{{2, 0, 18432}}));
  EXPECT_EQ(r.value->layers[3].unit, (std::vector<unit_slice>{{3, 0, 18432}}));

  y = with_workers(2, {"placement:",                          // 8
                       "  layers:",                           // 9
                       "    0-3: {experts: round_robin}",     // 10
                       "    4: {dense: {f0: whole}}",         // 11
                       "    58-70: {shared: round_robin}",    // 12
                       "    \"59\": {}",                      // 13
                       "    x: {}"});                         // 14
  auto t = testing::parse(y);
  expect_error(t.errors, "layer 59 overlaps the override of layers 58-70 (line 12)", 13, 5);
  expect_error(t.errors, "expected a layer index or an inclusive range 'A-B' of layers as a key of 'layers', got 'x'", 14, 5);
  y.lines.resize(12);
  r = resolve(y, c);
  expect_error(r.errors, "layers 0-3 contain no MoE layer: 'experts' applies only to MoE layers", 10, y.column(10, "round_robin"));
  expect_error(r.errors, "layer 4 is not a dense layer: 'dense' applies only to dense layers", 11, y.column(11, "{f0"));
  expect_error(r.errors, "layer range 58-70 is out of range: the model has 61 layers (0-60)", 12, 5);
}

TEST(topology_placement, model_without_shared_expert_has_empty_units) {
  auto c = tiny_config();
  c.share_expert_dim = 0;
  auto r = resolve(with_workers(2, {}), c);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  EXPECT_TRUE(r.value->layers[1].unit.empty());
  EXPECT_EQ(r.value->layers[0].unit.size(), 1u);
}

TEST(topology_placement, invalid_model_config_is_reported) {
  auto c = tiny_config();
  c.moe_layers.pop_back();
  auto r = resolve(with_workers(2, {}), c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(testing::dump(r.errors).find("the model config is invalid"), std::string::npos);
}

TEST(topology_placement, summary_lists_placement_per_layer) {
  auto y = with_workers(2, {"placement: {experts: contiguous, dense: {f1: whole}}"});
  auto t = testing::parse(y);
  ASSERT_TRUE(t.ok());
  auto c = tiny_config();
  auto r = resolve_placement(*t.value, c);
  ASSERT_TRUE(r.ok());
  const std::string s = summarize(*t.value, &*r.value, &c);
  EXPECT_NE(s.find("layers 1-3: f0: 0-3 | f1: 4-7"), std::string::npos) << s;
  EXPECT_NE(s.find("layer 0: dense MLP whole on f1"), std::string::npos) << s;
  EXPECT_NE(s.find("layers 1,3: shared expert whole on f1"), std::string::npos) << s;
  EXPECT_NE(s.find("layer 2: shared expert whole on f0"), std::string::npos) << s;
  const std::string rules = summarize(*t.value, nullptr, nullptr);
  EXPECT_NE(rules.find("experts: contiguous"), std::string::npos) << rules;
  EXPECT_NE(rules.find("dense: f1: whole"), std::string::npos) << rules;
}

}  // namespace
}  // namespace afd::topology
