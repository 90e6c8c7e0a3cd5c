// config.json parsing: the real Step-3 config (text and VL), moe_layers_enum forms, defaults, and
// one error per bad field, each naming the field and the file.
#include <gtest/gtest.h>

#include "runtime/model/checkpoint.hpp"
#include "runtime/model/config.hpp"
#include "tests/model/test_checkpoint_writer.hpp"

namespace {

using afd::errc;

// The text fields of Step-3 as published (MODEL.md), without the enclosing braces.
std::string step3_fields(const std::string& moe_layers = R"("moe_layers_enum": "4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59",)") {
  return R"(
    "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 64, "num_attention_groups": 1,
    "head_dim": 256, "share_q_dim": 2048, "intermediate_size": 18432,
    "moe_num_experts": 48, "moe_top_k": 3, "moe_intermediate_size": 5120, "share_expert_dim": 5120,
    )" + moe_layers + R"(
    "norm_expert_weight": false, "rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embedding": 65536,
    "vocab_size": 128815)";
}

std::string text_config(const std::string& fields) { return "{\"model_type\": \"step3_text\", " + fields + "}"; }

void expect_step3(const afd::model_config& c) {
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.num_attention_heads, 64);
  EXPECT_EQ(c.num_attention_groups, 1);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.share_q_dim, 2048);
  EXPECT_EQ(c.intermediate_size, 18432);
  EXPECT_EQ(c.moe_num_experts, 48);
  EXPECT_EQ(c.moe_top_k, 3);
  EXPECT_EQ(c.moe_intermediate_size, 5120);
  EXPECT_EQ(c.share_expert_dim, 5120);
  EXPECT_FALSE(c.norm_expert_weight);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.max_position_embedding, 65536);
  EXPECT_EQ(c.vocab_size, 128815);
  ASSERT_EQ(c.moe_layers.size(), 61u);
  for (int i = 0; i < 61; ++i) EXPECT_EQ(c.moe_layers[i], i >= 4 && i <= 59) << "layer " << i;
  EXPECT_EQ(c.num_moe_layers(), 56);
}

TEST(config, step3_text) {
  auto c = afd::model::parse_config_text(text_config(step3_fields()), "step3/config.json");
  ASSERT_TRUE(c) << c.err().to_string();
  expect_step3(*c);
}

TEST(config, step3_vl_reads_text_config) {
  const std::string json = R"({"model_type": "step3_vl", "architectures": ["Step3VLForConditionalGeneration"],
    "vision_config": {"hidden_size": 1792, "num_hidden_layers": 63},
    "hidden_size": 1, "text_config": {"model_type": "step3_text", )" +
                           step3_fields() + "}}";
  auto c = afd::model::parse_checkpoint_config_text(json, "vl/config.json");
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_EQ(c->model_type, "step3_vl");
  expect_step3(c->model);
  EXPECT_FALSE(c->weight_block_size);
}

TEST(config, moe_layers_enum_as_list) {
  std::string list = "\"moe_layers_enum\": [";
  for (int i = 4; i <= 59; ++i) list += std::to_string(i) + (i < 59 ? "," : "");
  list += "],";
  auto c = afd::model::parse_config_text(text_config(step3_fields(list)), "list.json");
  ASSERT_TRUE(c) << c.err().to_string();
  expect_step3(*c);
}

TEST(config, moe_layers_enum_string_with_spaces_in_any_order) {
  auto c = afd::model::parse_config_text(text_config(step3_fields(R"("moe_layers_enum": " 59, 4 ,5",)")), "s.json");
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_EQ(c->num_moe_layers(), 3);
  EXPECT_TRUE(c->moe_layers[4] && c->moe_layers[5] && c->moe_layers[59]);
}

TEST(config, moe_layers_enum_absent_means_all_but_layer_0) {
  auto c = afd::model::parse_config_text(text_config(step3_fields("")), "absent.json");
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_FALSE(c->moe_layers[0]);
  for (int i = 1; i < 61; ++i) EXPECT_TRUE(c->moe_layers[i]);
}

TEST(config, defaults_and_plural_max_position) {
  const std::string json = R"({"model_type": "step3_text", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "head_dim": 16, "share_q_dim": 32, "intermediate_size": 96,
    "moe_num_experts": 4, "moe_top_k": 2, "moe_intermediate_size": 16, "share_expert_dim": 16,
    "vocab_size": 100, "max_position_embeddings": 4096,
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 64]}})";
  auto c = afd::model::parse_checkpoint_config_text(json, "d.json");
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_EQ(c->model.num_attention_groups, 1);
  EXPECT_DOUBLE_EQ(c->model.rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(c->model.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c->model.norm_expert_weight);
  EXPECT_EQ(c->model.max_position_embedding, 4096);
  ASSERT_TRUE(c->weight_block_size);
  EXPECT_EQ(c->weight_block_size->first, 128);
  EXPECT_EQ(c->weight_block_size->second, 64);
}

// Replaces `from` by `to` in the Step-3 config and expects an error naming `field` and the file.
void expect_bad(const std::string& from, const std::string& to, errc code, const std::string& field) {
  std::string json = text_config(step3_fields());
  const auto pos = json.find(from);
  ASSERT_NE(pos, std::string::npos) << from;
  json.replace(pos, from.size(), to);
  auto c = afd::model::parse_config_text(json, "bad/config.json");
  ASSERT_FALSE(c) << "accepted: " << to;
  EXPECT_EQ(c.err().code(), code) << c.err().to_string();
  EXPECT_NE(c.err().message().find(field), std::string::npos) << c.err().message();
  EXPECT_NE(c.err().message().find("bad/config.json"), std::string::npos) << c.err().message();
}

TEST(config, bad_fields_are_named) {
  expect_bad(R"("hidden_size": 7168,)", "", errc::invalid_config, "hidden_size");
  expect_bad(R"("hidden_size": 7168)", R"("hidden_size": "7168")", errc::invalid_config, "hidden_size");
  expect_bad(R"("hidden_size": 7168)", R"("hidden_size": 7168.5)", errc::invalid_config, "hidden_size");
  expect_bad(R"("vocab_size": 128815)", R"("vocab_size": -5)", errc::invalid_config, "vocab_size");
  expect_bad(R"("num_hidden_layers": 61)", R"("num_hidden_layers": 0)", errc::invalid_config, "num_hidden_layers");
  expect_bad(R"("moe_top_k": 3)", R"("moe_top_k": 49)", errc::invalid_config, "moe_top_k");
  expect_bad(R"("num_attention_groups": 1)", R"("num_attention_groups": 8)", errc::invalid_config, "num_attention_groups");
  expect_bad(R"("head_dim": 256)", R"("head_dim": 255)", errc::invalid_config, "head_dim");
  expect_bad(R"("share_expert_dim": 5120)", R"("share_expert_dim": -1)", errc::invalid_config, "share_expert_dim");
  expect_bad(R"("rope_theta": 500000)", R"("rope_theta": "big")", errc::invalid_config, "rope_theta");
  expect_bad(R"("rms_norm_eps": 1e-5)", R"("rms_norm_eps": -1e-5)", errc::invalid_config, "rms_norm_eps");
  expect_bad(R"("norm_expert_weight": false)", R"("norm_expert_weight": 0)", errc::invalid_config, "norm_expert_weight");
  expect_bad(R"("max_position_embedding": 65536)", R"("max_position_embedding": [1])", errc::invalid_config, "max_position_embedding");
  expect_bad(R"("moe_layers_enum": "4,)", R"("moe_layers_enum": "61,)", errc::invalid_config, "moe_layers_enum");
  expect_bad(R"("moe_layers_enum": "4,)", R"("moe_layers_enum": "-1,)", errc::invalid_config, "moe_layers_enum");
  expect_bad(R"("moe_layers_enum": "4,)", R"("moe_layers_enum": "5,)", errc::invalid_config, "moe_layers_enum");
  expect_bad(R"("moe_layers_enum": "4,)", R"("moe_layers_enum": "four,)", errc::invalid_config, "moe_layers_enum");
  expect_bad(R"("moe_layers_enum": "4,)", R"("moe_layers_enum": {"a": 1}, "x": "4,)", errc::invalid_config, "moe_layers_enum");
  expect_bad(R"("model_type": "step3_text")", R"("model_type": "llama")", errc::invalid_config, "model_type");
  expect_bad(R"("model_type": "step3_text",)", "", errc::invalid_config, "model_type");
  expect_bad(R"("vocab_size": 128815)", R"("vocab_size": 128815, "quantization_config": {"weight_block_size": [128]})",
             errc::invalid_config, "weight_block_size");
}

TEST(config, list_form_rejects_bad_entries) {
  for (const std::string list : {"[4, 4]", "[4, 99]", "[4, \"5\"]", "[-3]"}) {
    auto c = afd::model::parse_config_text(text_config(step3_fields("\"moe_layers_enum\": " + list + ",")), "l.json");
    ASSERT_FALSE(c) << list;
    EXPECT_EQ(c.err().code(), errc::invalid_config);
    EXPECT_NE(c.err().message().find("moe_layers_enum"), std::string::npos) << c.err().message();
  }
}

TEST(config, vl_without_text_config_is_named) {
  auto c = afd::model::parse_config_text(R"({"model_type": "step3_vl", "hidden_size": 8})", "vl.json");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code(), errc::invalid_config);
  EXPECT_NE(c.err().message().find("text_config"), std::string::npos);
  // A bad field under text_config names its path.
  auto d = afd::model::parse_config_text(
      R"({"model_type": "step3_vl", "text_config": {"model_type": "step3_text", "hidden_size": true}})", "vl.json");
  ASSERT_FALSE(d);
  EXPECT_NE(d.err().message().find("text_config.hidden_size"), std::string::npos) << d.err().message();
}

TEST(config, bad_json_names_line_and_column) {
  const std::string json = "{\n  \"model_type\": \"step3_text\",\n  \"hidden_size\": 7168,,\n}";
  auto c = afd::model::parse_config_text(json, "broken/config.json");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code(), errc::parse_error);
  EXPECT_NE(c.err().message().find("broken/config.json"), std::string::npos) << c.err().message();
  EXPECT_NE(c.err().message().find("line 3"), std::string::npos) << c.err().message();
  EXPECT_NE(c.err().message().find("column 23"), std::string::npos) << c.err().message();
}

TEST(config, file_errors) {
  auto missing = afd::model::parse_config_file("/nonexistent/dir/config.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code(), errc::io_error);
  EXPECT_NE(missing.err().message().find("/nonexistent/dir/config.json"), std::string::npos);
  afd_test::scratch_dir dir("config");
  afd_test::write_text(dir / "config.json", text_config(step3_fields()));
  auto ok = afd::model::parse_config_file((dir / "config.json").string());
  ASSERT_TRUE(ok) << ok.err().to_string();
  expect_step3(*ok);
}

}  // namespace
