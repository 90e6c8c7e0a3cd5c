// The deployment planner: stage times of one layout written out by hand, the pipeline's TPOT, the
// batch search's edge, and topology files.
#include "deploy/plan/deploy_planner.hpp"

#include <algorithm>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace afd::plan {
namespace {

struct fixture : ::testing::Test {
  architecture step3 = *preset("step3");
  hardware h800 = *hardware_preset("h800");
};

TEST_F(fixture, step3_2a2f_stage_times_by_hand) {
  deploy_assumptions s;  // defaults: bw util 0.8, MFU 0.6, network util 0.7, latency 5 us
  s.context = 4096;
  const deploy_layout l{2, 8, 2, 8, 3, 128};  // the report's 2A2F at 3 x 2048 tokens
  const deploy_evaluation e = evaluate_layout(step3, h800, h800, l, s);

  const double bw = 3.35e12 * 0.8, flops = 1.98e15 * 0.6;
  const double kv = 128.0 * 4096 * 512 / bw;                                   // 100 us
  const double linear_params = 169345024.0 + 48 * 7168;                        // projections + router
  const double linear = std::max(2 * 128 * linear_params / flops, linear_params / bw);  // weight read
  EXPECT_NEAR(e.times.attention_kv, kv, 1e-9);
  EXPECT_NEAR(e.times.attention, kv + linear, 1e-9);

  const double link = 400e9 / 8 * 0.7;                                         // per GPU
  const double a2f = 2048.0 * (7168 + 7168 / 128 * 4 + 3 * 8) * 2 / (16 * link) + 5e-6;
  const double f2a = 2048.0 * 2 * 7168 * 2 / (16 * link) + 5e-6;
  EXPECT_NEAR(e.times.a2f, a2f, 1e-9);
  EXPECT_NEAR(e.times.f2a, f2a, 1e-9);

  const double expert = 3.0 * 7168 * 5120;
  const double moe = std::max(2048.0 * 2 * 4 * expert / 16 / flops, 49 * expert / 16 / bw);  // all 48 hit
  EXPECT_NEAR(e.times.ffn_moe, moe, 1e-8);
  const double dense = 3.0 * 7168 * 18432;
  EXPECT_NEAR(e.times.ffn_dense, std::max(2048.0 * 2 * dense / 16 / flops, dense / 16 / bw), 1e-9);

  EXPECT_NEAR(e.layer_budget_s, 0.050 / (61 * 3), 1e-12);
  // Every stage fits its budget, so each layer takes 3 x the slowest stage.
  auto layer = [&](double ffn) { return std::max(3 * std::max({e.times.attention, e.times.communication, ffn}),
                                                 e.times.attention + e.times.communication + ffn); };
  const double tpot = 56 * layer(e.times.ffn_moe) + 5 * layer(e.times.ffn_dense) + 3 * e.times.lm_head;
  EXPECT_NEAR(e.tpot_s, tpot, 1e-12);
  EXPECT_NEAR(e.tokens_per_s_per_gpu, 6144 / tpot / 32, 1e-6);
  EXPECT_TRUE(e.feasible());
  EXPECT_TRUE(e.violations.empty());
}

TEST_F(fixture, max_feasible_tokens_is_the_edge) {
  deploy_assumptions s;
  s.context = 8192;
  const deploy_layout l{2, 8, 2, 8, 3, 1};
  const std::int64_t b = max_feasible_tokens(step3, h800, h800, l, s);
  ASSERT_GT(b, 0);
  deploy_layout at = l, over = l;
  at.tokens_per_attention_gpu = b;
  over.tokens_per_attention_gpu = b + 1;
  EXPECT_TRUE(evaluate_layout(step3, h800, h800, at, s).feasible());
  EXPECT_FALSE(evaluate_layout(step3, h800, h800, over, s).feasible());
}

TEST_F(fixture, search_returns_feasible_layouts_best_first) {
  deploy_assumptions s;
  s.context = 4096;
  s.max_gpus = 32;
  const deploy_plan p = search_layouts(step3, h800, h800, s, 4);
  ASSERT_FALSE(p.layouts.empty());
  for (std::size_t i = 0; i < p.layouts.size(); ++i) {
    EXPECT_TRUE(p.layouts[i].feasible());
    EXPECT_LE(p.layouts[i].layout.total_gpus(), 32);
    if (i > 0) {
      EXPECT_GE(p.layouts[i - 1].tokens_per_s_per_gpu, p.layouts[i].tokens_per_s_per_gpu * 0.999);
    }
  }
  // A tighter target can only lower the best throughput.
  s.tpot_s = 0.020;
  const deploy_plan tight = search_layouts(step3, h800, h800, s, 1);
  if (!tight.layouts.empty()) {
    EXPECT_LE(tight.layouts[0].tokens_per_s_per_gpu, p.layouts[0].tokens_per_s_per_gpu);
  }
}

TEST_F(fixture, constraints_fix_the_layout) {
  deploy_assumptions s;
  s.attention_instances = 2;
  s.attention_gpus_per_instance = 8;
  s.ffn_instances = 2;
  s.ffn_gpus_per_instance = 8;
  s.micro_batch_tokens = 2048;
  const deploy_plan p = search_layouts(step3, h800, h800, s, 5);
  ASSERT_EQ(p.layouts.size(), 1u);
  EXPECT_EQ(p.layouts[0].layout.tokens_per_attention_gpu, 128);
  EXPECT_EQ(p.layouts[0].layout.total_batch(), 6144);
}

TEST(topology, counts_come_from_the_topology_module) {
  auto parsed = topology::parse_text(R"(
model: {path: /m, kv_dtype: bf16, combine_mode: deterministic}
nodes: [{name: n, host: 10.0.0.1}]
coordinator: {node: n}
attention_workers:
  - {name: a0, node: n, device: "cuda:0", max_batch: 96}
  - {name: a1, node: n, device: "cuda:1", max_batch: 64}
ffn_workers:
  - {name: f0, node: n}
  - {name: f1, node: n}
  - {name: f2, node: n}
pipeline: {micro_batches: 2}
)", "t.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.to_error().message();
  const topology_counts a = counts_of(*parsed.value);
  EXPECT_EQ(a.attention_workers, 2);
  EXPECT_EQ(a.ffn_workers, 3);
  EXPECT_EQ(a.micro_batches, 2);
  EXPECT_EQ(a.max_batch, (std::vector<std::int64_t>{96, 64}));
  EXPECT_EQ(a.kv_bytes_per_value, 2.0);
  EXPECT_EQ(a.deterministic_combine, true);
}

TEST(topology, bad_files_say_where) {
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/afd_plan_bad_topology.yaml";
  {
    std::ofstream out(path);
    out << "nodes: [{name: n, host: 10.0.0.1}]\ncoordinator: {node: n}\nmodel: {path: /m}\n"
           "attention_workers: [{name: a0, node: n}]\nffn_workers: [{name: f0, node: n}]\n"
           "pipeline: {micro_batches: zero}\n";
  }
  auto bad = read_topology_file(path);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.err().message().find("afd_plan_bad_topology.yaml:6:"), std::string::npos) << bad.err().message();
  std::remove(path.c_str());
  auto file = read_topology_file("/nonexistent/t.yaml");
  ASSERT_FALSE(file.has_value());
  EXPECT_NE(file.err().message().find("/nonexistent/t.yaml"), std::string::npos);
}

TEST_F(fixture, topology_check_names_the_stage_that_breaks) {
  // One attention GPU serving 3 x 600 requests at 8K cannot read its KV in a layer's budget.
  topology_counts t;
  t.attention_workers = 1;
  t.ffn_workers = 8;
  t.micro_batches = 3;
  t.max_batch = {1800};
  deploy_assumptions s;
  s.context = 8192;
  const deploy_evaluation e = check_topology(step3, h800, h800, t, s);
  EXPECT_EQ(e.layout.tokens_per_attention_gpu, 600);
  EXPECT_FALSE(e.feasible());
  ASSERT_FALSE(e.violations.empty());
  EXPECT_TRUE(std::any_of(e.violations.begin(), e.violations.end(),
                          [](const std::string& v) { return v.rfind("attention stage", 0) == 0; }));
  // Without max_batch the check uses the largest batch that fits, which meets the target.
  t.max_batch.clear();
  const deploy_evaluation fit = check_topology(step3, h800, h800, t, s);
  EXPECT_TRUE(fit.feasible()) << (fit.violations.empty() ? "" : fit.violations.front());
}

}  // namespace
}  // namespace afd::plan
