// The reference engine with numerics::exact() against the float64 oracle written from MODEL.md,
// teacher-forced on the engine's greedy tokens, over checkpoints of different shapes and formats.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "runtime/engine/reference_engine.hpp"
#include "runtime/model/checkpoint.hpp"
#include "tests/engine/float64_oracle.hpp"
#include "tests/engine/test_models.hpp"

namespace afd::engine {
namespace {

using testing::float64_oracle;

std::vector<std::int32_t> prompt_of(std::int64_t n, std::int64_t vocab, std::uint32_t salt) {
  std::vector<std::int32_t> p;
  std::uint32_t s = 2463534242u ^ salt;
  for (std::int64_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    p.push_back(static_cast<std::int32_t>(s % static_cast<std::uint32_t>(vocab)));
  }
  return p;
}

void expect_engine_matches_oracle(const std::string& dir, std::int64_t prefill_chunk = 8) {
  auto ckpt = model::checkpoint::open(dir);
  ASSERT_TRUE(ckpt.has_value()) << ckpt.err().to_string();
  auto shared = std::make_shared<const model::checkpoint>(std::move(*ckpt));
  const float64_oracle oracle(*shared);
  ASSERT_TRUE(oracle.ok());
  auto weights = model_weights::load(shared);
  ASSERT_TRUE(weights.has_value()) << weights.err().to_string();
  const model_config& c = (*weights)->config();

  engine_options opt;
  opt.num = numerics::exact();
  opt.prefill_chunk = prefill_chunk;  // prompts span several chunks
  auto eng = reference_engine::create(*weights, opt);
  ASSERT_TRUE(eng.has_value()) << eng.err().to_string();

  const std::int64_t new_tokens = 10;
  std::vector<request> reqs;
  for (std::int64_t len : {9, 23}) {
    request r;
    r.prompt = prompt_of(len, c.vocab_size, static_cast<std::uint32_t>(len));
    r.max_new_tokens = new_tokens;
    r.logits_rows = new_tokens;
    reqs.push_back(r);
  }
  auto results = eng->generate(reqs);
  ASSERT_TRUE(results.has_value()) << results.err().to_string();

  int checked_argmax = 0;
  double max_err = 0.0;
  for (std::size_t q = 0; q < reqs.size(); ++q) {
    const result& r = (*results)[q];
    ASSERT_EQ(r.tokens.size(), static_cast<std::size_t>(new_tokens));
    ASSERT_EQ(r.logits.size(), static_cast<std::size_t>(new_tokens));
    std::vector<std::int32_t> seq = reqs[q].prompt;
    seq.insert(seq.end(), r.tokens.begin(), r.tokens.end() - 1);
    const auto expected = oracle.logits(seq);
    const std::size_t p = reqs[q].prompt.size();
    for (std::size_t i = 0; i < r.logits.size(); ++i) {
      const auto& want = expected[p - 1 + i];
      const double err = testing::relative_l2(r.logits[i], want);
      max_err = std::max(max_err, err);
      EXPECT_LT(err, 1e-4) << dir << " request " << q << " position " << i;
      // Greedy tokens are the oracle's argmax wherever the oracle's top two are not nearly tied.
      std::vector<double> sorted = want;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      if (sorted[0] - sorted[1] > 1e-3) {
        const auto argmax = std::max_element(want.begin(), want.end()) - want.begin();
        EXPECT_EQ(r.tokens[i], argmax) << dir << " request " << q << " position " << i;
        ++checked_argmax;
      }
    }
  }
  EXPECT_GT(checked_argmax, 10);
  ::testing::Test::RecordProperty("max_relative_l2", std::to_string(max_err));
  std::printf("%s: max relative L2 %.3g, %d argmax checks\n", dir.c_str(), max_err, checked_argmax);
}

TEST(engine_oracle, tiny_preset_bf16) { expect_engine_matches_oracle(testing::tiny_model()); }

TEST(engine_oracle, tiny_preset_whole_prompt_in_one_chunk) {
  expect_engine_matches_oracle(testing::tiny_model(), 256);
}

// Other dimensions (odd widths, 3 heads), f32 weights, a VL config, three shards, renormalised
// top-k weights, moe_layers_enum as a JSON list and a large rope_theta.
TEST(engine_oracle, vl_sharded_f32_renormalised_list_enum) {
  model::synthetic_options o;
  model_config& c = o.config;
  c.hidden_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 3;
  c.num_attention_groups = 1;
  c.head_dim = 16;
  c.share_q_dim = 40;
  c.intermediate_size = 80;
  c.moe_num_experts = 6;
  c.moe_top_k = 2;
  c.moe_intermediate_size = 24;
  c.share_expert_dim = 20;
  c.moe_layers = {false, true, true};
  c.norm_expert_weight = true;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 500000.0;
  c.max_position_embedding = 512;
  c.vocab_size = 300;
  o.weight_dtype = dtype::f32;
  o.seed = 11;
  o.shards = 3;
  o.vl = true;
  const auto dir = testing::write_model("vl_f32", o, [](nlohmann::json& text) {
    text["moe_layers_enum"] = nlohmann::json::array({1, 2});
  });
  auto parsed = model::parse_config_file(dir + "/config.json");
  ASSERT_TRUE(parsed.has_value()) << parsed.err().to_string();
  ASSERT_TRUE(parsed->norm_expert_weight);
  ASSERT_EQ(parsed->moe_layers, (std::vector<bool>{false, true, true}));
  expect_engine_matches_oracle(dir);
}

// Block-FP8 weights (scales applied by load_f32 on both sides), two shards, moe_layers_enum absent
// (every layer but 0).
TEST(engine_oracle, fp8_weights_default_moe_layers) {
  model::synthetic_options o;
  o.config = testing::preset("tiny");
  o.weight_dtype = dtype::f8_e4m3;
  o.seed = 5;
  o.shards = 2;
  const auto dir = testing::write_model("fp8", o, [](nlohmann::json& text) { text.erase("moe_layers_enum"); });
  expect_engine_matches_oracle(dir);
}

}  // namespace
}  // namespace afd::engine
