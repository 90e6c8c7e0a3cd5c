// Parameter counts and per-token figures of the generic architecture, against counts written out
// by hand from the config fields, and the presets against their publishers' totals.
#include "deploy/plan/architecture.hpp"

#include <gtest/gtest.h>

namespace afd::plan {
namespace {

architecture parse_ok(const std::string& json) {
  auto a = parse_config_json(json, "test.json");
  EXPECT_TRUE(a.has_value()) << (a ? "" : a.err().message());
  return a ? *a : architecture{};
}

TEST(architecture, gqa_dense_counts_by_hand) {
  const auto a = parse_ok(R"({"model_type": "qwen3", "hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "intermediate_size": 16})");
  EXPECT_EQ(a.attention, attention_kind::gqa);
  // q 8x16 + k 8x8 + v 8x8 + o 16x8
  EXPECT_EQ(a.attention_projection_params(), 128 + 64 + 64 + 128);
  EXPECT_EQ(a.kv_values_per_token(), 2 * 2 * 4);
  EXPECT_EQ(a.attention_flops_per_context_token(), 2 * 4 * 4 + 2 * 4 * 4);
  EXPECT_EQ(a.num_dense_layers, 2);
  EXPECT_EQ(a.num_moe_layers, 0);
  // layers x (attention 384 + norms 8+8 + q/k norms 4+4 + MLP 3*8*16) + embed/head 2*10*8 + final norm 8
  EXPECT_EQ(a.total_params(), 2 * (384 + 24 + 384) + 160 + 8);
  EXPECT_EQ(a.activated_params(), a.total_params());
  EXPECT_DOUBLE_EQ(a.sparsity(), 1.0);
}

TEST(architecture, mfa_and_moe_layers_by_hand) {
  const auto a = parse_ok(R"({"model_type": "step3_text", "hidden_size": 16, "num_hidden_layers": 4,
    "vocab_size": 5, "num_attention_heads": 4, "num_attention_groups": 1, "head_dim": 8, "share_q_dim": 12,
    "intermediate_size": 32, "moe_num_experts": 6, "moe_top_k": 2, "moe_intermediate_size": 4,
    "share_expert_dim": 4, "moe_layers_enum": "1,2"})");
  EXPECT_EQ(a.attention, attention_kind::mfa);
  // q_proj 16x12, k 16x8, v 16x8, wq 12x32, o 32x16
  EXPECT_EQ(a.attention_projection_params(), 192 + 128 + 128 + 384 + 512);
  EXPECT_EQ(a.kv_values_per_token(), 16);
  EXPECT_EQ(a.attention_flops_per_context_token(), 4 * 4 * 8);
  EXPECT_EQ(a.num_moe_layers, 2);
  EXPECT_EQ(a.num_dense_layers, 2);
  // activated FFN: 2 dense x 3*16*32 + 2 MoE x (2 routed + 1 shared) x 3*16*4
  EXPECT_EQ(a.ffn_params_activated(), 2 * 1536 + 2 * 3 * 192);
  EXPECT_DOUBLE_EQ(a.sparsity(), 3.0 / 7.0);
}

TEST(architecture, mla_by_hand) {
  const auto a = parse_ok(R"({"model_type": "deepseek_v3", "hidden_size": 32, "num_hidden_layers": 3,
    "vocab_size": 7, "num_attention_heads": 2, "q_lora_rank": 6, "kv_lora_rank": 4, "qk_nope_head_dim": 3,
    "qk_rope_head_dim": 2, "v_head_dim": 5, "intermediate_size": 10, "moe_intermediate_size": 3,
    "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 2, "first_k_dense_replace": 1})");
  EXPECT_EQ(a.attention, attention_kind::mla);
  // q_a 32x6, q_b 6x(2*(3+2)), kv_a 32x(4+2), kv_b 4x(2*(3+5)), o (2*5)x32
  EXPECT_EQ(a.attention_projection_params(), 192 + 60 + 192 + 64 + 320);
  EXPECT_EQ(a.kv_values_per_token(), 4 + 2);
  EXPECT_EQ(a.attention_flops_per_context_token(), 4 * 2 * 6);
  EXPECT_EQ(a.num_dense_layers, 1);
  EXPECT_EQ(a.num_moe_layers, 2);
  EXPECT_EQ(a.shared_expert_params(), 2 * 3 * 32 * 3);
  EXPECT_DOUBLE_EQ(a.sparsity(), 4.0 / 10.0);
}

struct published {
  const char* preset;
  double total;      // parameters as published
  double total_tol;  // relative
  double activated;
  double activated_tol;
};

// Published totals and what they count:
// - step3: 316B total, 38B activated in the LM (MODEL.md has 38.8B: embedding and LM head included).
// - deepseek-v3: 671B total without the 14B MTP module (the preset has no MTP layer); 37B activated.
//   Our activated count includes embedding and LM head (2 x 0.93B), hence a 3% tolerance.
// - kimi-k2: "1T" on the model card, 1.04T in the technical report; 32B activated (same caveat).
// - qwen3-moe: 235B / 22B.  qwen3-32b: 32.8B (dense, all activated).
TEST(architecture, presets_match_published_totals) {
  const published cases[] = {
      {"step3", 316e9, 0.01, 38.8e9, 0.01},
      {"deepseek-v3", 671e9, 0.005, 37e9, 0.03},
      {"kimi-k2", 1.04e12, 0.02, 32e9, 0.04},
      {"qwen3-moe", 235e9, 0.01, 22e9, 0.02},
      {"qwen3-32b", 32.8e9, 0.01, 32.8e9, 0.01},
  };
  for (const auto& c : cases) {
    auto a = preset(c.preset);
    ASSERT_TRUE(a.has_value()) << c.preset;
    EXPECT_NEAR(static_cast<double>(a->total_params()) / c.total, 1.0, c.total_tol) << c.preset << " total "
                                                                                   << a->total_params();
    EXPECT_NEAR(static_cast<double>(a->activated_params()) / c.activated, 1.0, c.activated_tol)
        << c.preset << " activated " << a->activated_params();
  }
}

TEST(architecture, step3_preset_matches_model_md) {
  auto a = preset("step3");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->attention_projection_params(), 169345024);  // "attention 169 M" per layer
  EXPECT_EQ(a->dense_mlp_params(), 396361728);             // "dense MLP 396 M"
  EXPECT_EQ(a->expert_params(), 110100480);                // "one expert 110 M"
  EXPECT_EQ(a->num_layers * a->kv_values_per_token(), 31232);  // KV bytes per token at FP8
  EXPECT_EQ(a->num_dense_layers, 5);
  EXPECT_EQ(a->num_moe_layers, 56);
}

TEST(architecture, preset_attention_types_and_intensities) {
  struct row { const char* name; attention_kind kind; std::int64_t kv; std::int64_t flops; };
  const row rows[] = {
      {"step3", attention_kind::mfa, 512, 65536},
      {"deepseek-v3", attention_kind::mla, 576, 4 * 128 * 576},
      {"kimi-k2", attention_kind::mla, 576, 4 * 64 * 576},
      {"qwen3-moe", attention_kind::gqa, 2 * 4 * 128, 4 * 64 * 128},
      {"qwen3-32b", attention_kind::gqa, 2 * 8 * 128, 4 * 64 * 128},
  };
  for (const auto& r : rows) {
    auto a = preset(r.name);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->attention, r.kind) << r.name;
    EXPECT_EQ(a->kv_values_per_token(), r.kv) << r.name;
    EXPECT_EQ(a->attention_flops_per_context_token(), r.flops) << r.name;
  }
}

TEST(architecture, bad_inputs_name_what_is_wrong) {
  auto unknown = resolve_model("llama-9000");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.err().message().find("unknown model 'llama-9000'"), std::string::npos);
  EXPECT_NE(unknown.err().message().find("step3"), std::string::npos);

  auto missing_file = resolve_model("/nonexistent/config.json");
  ASSERT_FALSE(missing_file.has_value());
  EXPECT_EQ(missing_file.err().code(), errc::io_error);
  EXPECT_NE(missing_file.err().message().find("/nonexistent/config.json"), std::string::npos);

  auto not_json = parse_config_json("{nope", "c.json");
  ASSERT_FALSE(not_json.has_value());
  EXPECT_EQ(not_json.err().code(), errc::parse_error);

  auto missing = parse_config_json(R"({"model_type": "qwen3", "hidden_size": 8, "num_hidden_layers": 2,
    "num_attention_heads": 4, "head_dim": 2})", "c.json");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.err().message().find("c.json"), std::string::npos);
  EXPECT_NE(missing.err().message().find("'intermediate_size'"), std::string::npos);

  auto type = parse_config_json(R"({"model_type": "gpt2"})", "c.json");
  ASSERT_FALSE(type.has_value());
  EXPECT_EQ(type.err().code(), errc::unsupported);

  auto range = parse_config_json(R"({"model_type": "step3_text", "hidden_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 4, "head_dim": 8, "share_q_dim": 12, "intermediate_size": 32, "moe_num_experts": 6,
    "moe_top_k": 2, "moe_intermediate_size": 4, "moe_layers_enum": "1,7"})", "c.json");
  ASSERT_FALSE(range.has_value());
  EXPECT_NE(range.err().message().find("moe_layers_enum"), std::string::npos);
}

TEST(architecture, step3_vl_reads_text_config) {
  auto a = parse_config_json(R"({"model_type": "step3_vl", "text_config": {"hidden_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 8, "share_q_dim": 12, "intermediate_size": 32,
    "moe_num_experts": 6, "moe_top_k": 2, "moe_intermediate_size": 4, "share_expert_dim": 4}})", "vl.json");
  ASSERT_TRUE(a.has_value()) << a.err().message();
  EXPECT_EQ(a->num_moe_layers, 1);  // every layer but the first when moe_layers_enum is absent
  EXPECT_EQ(a->num_dense_layers, 1);
}

}  // namespace
}  // namespace afd::plan
