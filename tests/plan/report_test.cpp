// Output formats: the JSON of a small case byte for byte (a format change must be deliberate),
// sorted keys, and aligned text.
#include "deploy/plan/report.hpp"

#include <sstream>

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
  h.source = "test";
  h.price_per_hour = 3.6;
  h.bf16_flops = 1e12;
  h.fp8_flops = 2e12;
  h.memory_bw = 1e9;
  h.network_per_server_bytes = 8e9;
  return h;
}

TEST(report, round6) {
  EXPECT_DOUBLE_EQ(round6(0.048194444444), 0.0481944);
  EXPECT_DOUBLE_EQ(round6(123456789.0), 123457000.0);
  EXPECT_DOUBLE_EQ(round6(0.0), 0.0);
}

TEST(report, cost_json_golden) {
  const cost_report r = compute_cost_report(tiny(), {round_numbers()}, {100});
  const std::string golden = R"json({
  "contexts": [
    {
      "afd": {
        "attention_hardware": "round",
        "attention_per_million": 0.00320077,
        "ffn_hardware": "round",
        "ffn_per_million": 7.68e-07,
        "total_per_million": 0.00320154
      },
      "attention_flops": 12800.0,
      "context": 100,
      "costs": [
        {
          "attention_bound": "kv",
          "attention_per_million": 0.00320077,
          "ffn_per_million": 7.68e-07,
          "hardware": "round",
          "total_per_million": 0.00320154
        }
      ],
      "ffn_flops": 1536.0,
      "intensity": 4.0,
      "kv_bytes": 3200.0,
      "linear_flops": 1536.0
    }
  ],
  "hardware": [
    {
      "bf16_flops": 1000000000000.0,
      "fp8_flops": 2000000000000.0,
      "gpus_per_server": 8,
      "memory_bw": 1000000000.0,
      "memory_bytes": 0.0,
      "name": "round",
      "network_per_server_bytes": 8000000000.0,
      "peak_flops_used": 2000000000000.0,
      "price_per_hour": 3.6,
      "ridge_intensity": 2000.0,
      "source": "test"
    }
  ],
  "kv_bits": 8.0,
  "model": {
    "activated_params": 1752,
    "attention": "gqa",
    "attention_flops_per_context_token_per_layer": 64,
    "attention_projection_params_per_layer": 384,
    "dense_layers": 2,
    "experts": 0,
    "hidden_size": 8,
    "kv_values_per_token_per_layer": 16,
    "layers": 2,
    "model_type": "qwen3",
    "moe_layers": 0,
    "name": "tiny.json",
    "shared_experts": 0,
    "source": "tiny.json",
    "sparsity": 1.0,
    "top_k": 0,
    "total_params": 1752
  }
}
)json";
  EXPECT_EQ(format_cost_json(r), golden);
  EXPECT_EQ(format_cost_json(r), format_cost_json(compute_cost_report(tiny(), {round_numbers()}, {100})));
}

TEST(report, json_keys_are_sorted) {
  const cost_report r = compute_cost_report(tiny(), {round_numbers()}, {100});
  const std::string j = format_cost_json(r);
  // "afd" < "attention_flops" < "context" < "costs" within a context row.
  EXPECT_LT(j.find("\"afd\""), j.find("\"attention_flops\""));
  EXPECT_LT(j.find("\"attention_flops\""), j.find("\"context\""));
  EXPECT_LT(j.find("\"context\""), j.find("\"costs\""));
}

TEST(report, text_tables_are_aligned) {
  auto step3 = preset("step3");
  ASSERT_TRUE(step3.has_value());
  hardware_catalog c;
  const cost_report r = compute_cost_report(*step3, c.all(), {8192});
  const std::string text = format_cost_text(r);
  EXPECT_NE(text.find("0.0482"), std::string::npos);
  // In the $ table every row ends at the same column.
  std::istringstream in(text.substr(text.find("$ per 1M tokens")));
  std::string line;
  std::getline(in, line);
  std::size_t width = 0;
  for (int i = 0; i < 7 && std::getline(in, line); ++i) {
    if (width == 0) width = line.size();
    EXPECT_EQ(line.size(), width) << line;
  }
}

TEST(report, deploy_outputs_mention_every_stage) {
  auto step3 = preset("step3");
  auto h800 = hardware_preset("h800");
  deploy_assumptions s;
  s.max_gpus = 24;
  const deploy_plan p = search_layouts(*step3, *h800, *h800, s, 3);
  const std::string text = format_deploy_text(p);
  for (const char* word : {"attention", "network", "FFN (MoE layer)", "FFN (dense layer)", "predicted TPOT",
                           "tokens/s per GPU", "[--ffn-mfu]"})
    EXPECT_NE(text.find(word), std::string::npos) << word;
  const std::string json = format_deploy_json(p);
  EXPECT_NE(json.find("\"tokens_per_s_per_gpu\""), std::string::npos);
  EXPECT_EQ(json, format_deploy_json(search_layouts(*step3, *h800, *h800, s, 3)));
}

}  // namespace
}  // namespace afd::plan
