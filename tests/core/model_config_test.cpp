// Step-3's published sizes (MODEL.md): 316 B parameters, 38.8 B activated, 169 M attention per
// layer, 396 M dense MLP, 110 M per expert, 31,232 KV bytes per token at FP8.
#include <gtest/gtest.h>

#include "runtime/core/model_config.hpp"

namespace {

afd::model_config step3() {
  afd::model_config c;
  c.hidden_size = 7168;
  c.num_hidden_layers = 61;
  c.num_attention_heads = 64;
  c.head_dim = 256;
  c.share_q_dim = 2048;
  c.intermediate_size = 18432;
  c.moe_num_experts = 48;
  c.moe_top_k = 3;
  c.moe_intermediate_size = 5120;
  c.share_expert_dim = 5120;
  c.vocab_size = 128815;
  c.moe_layers.assign(61, false);
  for (int i = 4; i <= 59; ++i) c.moe_layers[i] = true;
  return c;
}

TEST(model_config, step3_sizes_match_the_report) {
  const auto s = afd::compute_model_size(step3());
  EXPECT_NEAR(s.attention_params_per_layer / 1e6, 169, 0.5);
  EXPECT_NEAR(s.dense_mlp_params / 1e6, 396, 0.5);
  EXPECT_NEAR(s.expert_params / 1e6, 110, 0.5);
  EXPECT_NEAR(s.total_params / 1e9, 316, 0.5);
  EXPECT_NEAR(s.activated_params / 1e9, 38.8, 0.05);
  EXPECT_EQ(s.kv_bytes_per_token_fp8, 31232);
}

TEST(model_config, validate_names_the_bad_field) {
  auto c = step3();
  EXPECT_EQ(afd::validate(c), "");
  c.moe_top_k = 49;
  EXPECT_NE(afd::validate(c).find("moe_top_k"), std::string::npos);
  c = step3();
  c.num_attention_groups = 8;
  EXPECT_NE(afd::validate(c).find("num_attention_groups"), std::string::npos);
}

}  // namespace
