// The report's cost model on hand-computed cases, its Step-3 figure, and the sparsity bound.
#include "deploy/plan/cost_model.hpp"

#include <gtest/gtest.h>

namespace afd::plan {
namespace {

architecture tiny() {
  auto a = parse_config_json(R"({"model_type": "qwen3", "hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "intermediate_size": 16})", "tiny.json");
  EXPECT_TRUE(a.has_value());
  return *a;
}

hardware round_numbers() {
  hardware h;
  h.name = "round";
  h.price_per_hour = 3.6;  // 0.001 $/s
  h.bf16_flops = 1e12;
  h.fp8_flops = 2e12;      // $/FLOP = 0.001 / 2e12 = 5e-16
  h.memory_bw = 1e9;       // $/byte = 0.001 / 1e9 = 1e-12
  h.network_per_server_bytes = 8e9;
  return h;
}

TEST(cost_model, tiny_model_by_hand) {
  const token_work w = compute_token_work(tiny(), 100);
  EXPECT_DOUBLE_EQ(w.kv_bytes, 2.0 * 16 * 100);           // layers x KV values x 1 byte x context
  EXPECT_DOUBLE_EQ(w.attention_flops, 2.0 * 64 * 100);    // layers x 4*heads*head_dim x context
  EXPECT_DOUBLE_EQ(w.linear_flops, 2.0 * 2 * 384);        // 2 x projection parameters of 2 layers
  EXPECT_DOUBLE_EQ(w.ffn_flops, 2.0 * 2 * 384);           // 2 x (2 dense MLPs of 3*8*16)
  EXPECT_DOUBLE_EQ(w.intensity(), 12800.0 / 3200.0);

  const hardware_cost c = compute_hardware_cost(w, round_numbers());
  EXPECT_TRUE(c.attention_memory_bound);
  EXPECT_NEAR(c.attention_per_million(), 1e6 * (3200 * 1e-12 + 1536 * 5e-16), 1e-15);
  EXPECT_NEAR(c.ffn_per_million(), 1e6 * 1536 * 5e-16, 1e-18);

  const token_work w16 = compute_token_work(tiny(), 100, 2.0);
  EXPECT_DOUBLE_EQ(w16.kv_bytes, 2 * w.kv_bytes);
}

TEST(cost_model, no_fp8_uses_bf16_peak) {
  hardware h = round_numbers();
  h.fp8_flops = 0;
  EXPECT_DOUBLE_EQ(h.dollars_per_flop(), 0.001 / 1e12);
}

TEST(cost_model, step3_attention_at_8k_on_h800_is_the_reports_0048) {
  auto a = preset("step3");
  auto h = hardware_preset("h800");
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(h.has_value());
  const hardware_cost c = compute_hardware_cost(compute_token_work(*a, 8192), *h);
  // Written out: KV 61 x 512 B x 8192 = 255.85 MB at 2 $/h / (3600 x 3.35e12 B/s) beats the
  // attention FLOPs 61 x 65536 x 8192 at 2 / (3600 x 1.98e15); linear 2 x 61 x 169,345,024 FLOPs.
  const double per_byte = 2.0 / (3600 * 3.35e12), per_flop = 2.0 / (3600 * 1.98e15);
  const double expected = 1e6 * (61.0 * 512 * 8192 * per_byte + 2.0 * 61 * 169345024 * per_flop);
  EXPECT_NEAR(c.attention_per_million(), expected, 1e-12);
  EXPECT_TRUE(c.attention_memory_bound);
  EXPECT_NEAR(c.attention_per_million(), 0.048, 0.0005);  // the report's figure, to its precision
}

TEST(cost_model, arithmetic_intensities_match_the_report) {
  const std::pair<const char*, double> cases[] = {{"step3", 128}, {"deepseek-v3", 512}, {"qwen3-moe", 32}};
  for (auto [name, intensity] : cases) {
    auto a = preset(name);
    ASSERT_TRUE(a.has_value());
    EXPECT_DOUBLE_EQ(compute_token_work(*a, 4096).intensity(), intensity) << name;
  }
}

TEST(cost_model, afd_pairs_the_cheapest_of_each_side) {
  hardware cheap_flops = round_numbers();
  cheap_flops.name = "flops";
  cheap_flops.fp8_flops = 1e15;
  hardware cheap_bytes = round_numbers();
  cheap_bytes.name = "bytes";
  cheap_bytes.memory_bw = 1e12;
  const cost_report r = compute_cost_report(tiny(), {cheap_flops, cheap_bytes}, {100, 1000});
  ASSERT_EQ(r.contexts.size(), 2u);
  for (const auto& row : r.contexts) {
    EXPECT_EQ(row.best.attention_hardware, "bytes");
    EXPECT_EQ(row.best.ffn_hardware, "flops");
    EXPECT_DOUBLE_EQ(row.best.ffn_per_million, row.costs[0].ffn_per_million());
    EXPECT_DOUBLE_EQ(row.best.attention_per_million, row.costs[1].attention_per_million());
  }
}

TEST(cost_model, minimum_sparsity_is_the_reports_formula) {
  auto h = hardware_preset("h800");
  ASSERT_TRUE(h.has_value());
  // hidden x FLOP/s x L / (network B/s x memory B/s x 11.1 ms), 11.1 ms = 50 ms / 3 x 2 / 3.
  const double reference = 7168.0 * 1.98e15 * 61 / (400e9 * 3.35e12 * (0.050 / 3 * 2 / 3));
  EXPECT_NEAR(minimum_sparsity(*h, 7168, 61), reference, 1e-12);
  EXPECT_NEAR(minimum_sparsity(*h, 7168, 61), 0.058, 0.001);
  // A faster network halves the bound.
  EXPECT_NEAR(minimum_sparsity(*h, 7168, 61, {}, 800e9), reference / 2, 1e-12);

  auto step3 = preset("step3");
  auto dsv3 = preset("deepseek-v3");
  const auto rows = compute_sparsity({*h}, {*step3, *dsv3}, {}, {});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(rows[0].model_meets());   // Step-3: 4/49 = 0.082 >= 0.058
  EXPECT_FALSE(rows[1].model_meets());  // DeepSeek-V3: 9/257 = 0.035 < 0.058
}

}  // namespace
}  // namespace afd::plan
