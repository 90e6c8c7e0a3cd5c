// Synthetic checkpoints: determinism, round trips through checkpoint::open (single, sharded, VL,
// FP8, f16/f32), weight statistics as designed, the step3 dry-run figures of MODEL.md, and the
// CLI's exit codes.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/model/checkpoint.hpp"
#include "runtime/model/make_model.hpp"
#include "tests/model/test_checkpoint_writer.hpp"

namespace {

namespace fs = std::filesystem;
using afd::errc;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

afd::model::synthetic_options tiny(afd::dtype t = afd::dtype::bf16, int shards = 1, bool vl = false, std::uint64_t seed = 7) {
  afd::model::synthetic_options o;
  o.config = *afd::model::preset_config("tiny");
  o.weight_dtype = t;
  o.shards = shards;
  o.vl = vl;
  o.seed = seed;
  return o;
}

afd::model::checkpoint write_and_open(const afd::model::synthetic_options& o, const fs::path& dir) {
  auto r = afd::model::write_synthetic_checkpoint(o, dir.string(), false);
  EXPECT_TRUE(r) << r.err().to_string();
  auto c = afd::model::checkpoint::open(dir.string());
  EXPECT_TRUE(c) << c.err().to_string();
  return std::move(*c);
}

double mean_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}
double std_of(const std::vector<float>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

TEST(make_model, tiny_preset_is_as_specified) {
  auto c = afd::model::preset_config("tiny");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->share_q_dim, 48);
  EXPECT_EQ(c->intermediate_size, 96);
  EXPECT_EQ(c->moe_num_experts, 8);
  EXPECT_EQ(c->moe_top_k, 3);
  EXPECT_EQ(c->moe_intermediate_size, 32);
  EXPECT_EQ(c->share_expert_dim, 32);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->max_position_embedding, 2048);
  EXPECT_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->moe_layers, (std::vector<bool>{false, true, true, true}));
  auto bad = afd::model::preset_config("huge");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code(), errc::invalid_argument);
}

TEST(make_model, same_seed_same_bytes) {
  afd_test::scratch_dir dir("determinism");
  for (auto t : {afd::dtype::bf16, afd::dtype::f8_e4m3}) {
    fs::remove_all(dir.path);
    ASSERT_TRUE(afd::model::write_synthetic_checkpoint(tiny(t, 2), (dir / "a").string(), false));
    ASSERT_TRUE(afd::model::write_synthetic_checkpoint(tiny(t, 2), (dir / "b").string(), false));
    ASSERT_TRUE(afd::model::write_synthetic_checkpoint(tiny(t, 2, false, 8), (dir / "c").string(), false));
    for (const char* f : {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                          "model-00002-of-00002.safetensors"}) {
      const std::string a = read_all(dir / "a" / f);
      ASSERT_FALSE(a.empty()) << f;
      EXPECT_EQ(a, read_all(dir / "b" / f)) << f;
    }
    EXPECT_NE(read_all(dir / "a" / "model-00002-of-00002.safetensors"), read_all(dir / "c" / "model-00002-of-00002.safetensors"));
  }
}

TEST(make_model, tiny_round_trip_and_weight_statistics) {
  afd_test::scratch_dir dir("tiny");
  auto c = write_and_open(tiny(), dir / "m");
  EXPECT_EQ(c.config().hidden_size, 64);
  EXPECT_EQ(c.config().moe_layers, afd::model::preset_config("tiny")->moe_layers);
  // Designed: projections ~ N(0, 1/fan_in), norms 1 + N(0, 0.1^2), embedding N(0, 1),
  // lm_head 4/sqrt(H) (logits of std ~4). Tolerances cover the sampling error of a few thousand values.
  auto q = *c.load_f32("model.layers.1.self_attn.q_proj.weight");  // [48, 64]
  EXPECT_NEAR(std_of(q), 1.0 / 8.0, 0.125 * 0.06);
  EXPECT_NEAR(mean_of(q), 0.0, 0.125 * 0.06);
  auto down = *c.load_f32("model.layers.2.moe.down_proj.weight");  // [8, 64, 32]: fan-in 32
  EXPECT_NEAR(std_of(down), 1.0 / std::sqrt(32.0), 0.03 / std::sqrt(32.0));
  auto o = *c.load_f32("model.layers.0.self_attn.o_proj.weight");  // fan-in 128
  EXPECT_NEAR(std_of(o), 1.0 / std::sqrt(128.0), 0.05 / std::sqrt(128.0));
  auto norm = *c.load_f32("model.layers.3.input_layernorm.weight");
  EXPECT_NEAR(mean_of(norm), 1.0, 0.05);
  EXPECT_GT(std_of(norm), 0.05);
  EXPECT_LT(std_of(norm), 0.15);
  auto embed = *c.load_f32("model.embed_tokens.weight");
  EXPECT_NEAR(std_of(embed), 1.0, 0.03);
  auto lm = *c.load_f32("lm_head.weight");
  EXPECT_NEAR(std_of(lm), 0.5, 0.02);
  // Distinct tensors hold distinct values (no seed reuse across tensors).
  auto k = *c.load_f32("model.layers.1.self_attn.k_proj.weight");
  auto v = *c.load_f32("model.layers.1.self_attn.v_proj.weight");
  EXPECT_NE(k, v);
  // Values are bounded (no wild outliers feeding the first layer).
  for (float x : q) ASSERT_LT(std::fabs(x), 0.125f * 4.0f);
}

TEST(make_model, sharded_vl_and_dtypes_hold_the_same_weights) {
  afd_test::scratch_dir dir("layouts");
  auto single = write_and_open(tiny(afd::dtype::f32), dir / "f32");
  auto sharded = write_and_open(tiny(afd::dtype::bf16, 3), dir / "sharded");
  auto vl = write_and_open(tiny(afd::dtype::bf16, 1, true), dir / "vl");
  auto half = write_and_open(tiny(afd::dtype::f16), dir / "f16");
  EXPECT_TRUE(fs::exists(dir / "sharded" / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir / "sharded" / "model-00003-of-00003.safetensors"));
  const auto names = single.tensor_names();
  EXPECT_EQ(names, sharded.tensor_names());
  EXPECT_EQ(names, vl.tensor_names());
  std::set<std::string> files;
  for (const auto& n : names) files.insert(sharded.find(n)->file);
  EXPECT_EQ(files.size(), 3u);
  // The VL checkpoint's config is step3_vl with text_config, and its vision tensor is ignored.
  const auto cfg = nlohmann::json::parse(read_all(dir / "vl" / "config.json"));
  EXPECT_EQ(cfg["model_type"], "step3_vl");
  EXPECT_EQ(cfg["text_config"]["hidden_size"], 64);
  EXPECT_EQ(vl.find("vision_model.embeddings.patch_embedding.weight"), nullptr);
  for (const auto& n : names) {
    auto a = *single.load_f32(n);
    auto b = *sharded.load_f32(n);
    auto c = *vl.load_f32(n);
    auto h = *half.load_f32(n);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(b[i], afd::round_to_bf16(a[i])) << n;
      ASSERT_EQ(c[i], b[i]) << n;
      ASSERT_NEAR(h[i], a[i], std::fabs(a[i]) * 1e-3 + 1e-7) << n;
    }
  }
}

TEST(make_model, fp8_round_trip_is_close_to_the_weights) {
  afd_test::scratch_dir dir("fp8");
  auto ref = write_and_open(tiny(afd::dtype::f32), dir / "f32");
  auto fp8 = write_and_open(tiny(afd::dtype::f8_e4m3), dir / "fp8");
  const auto cfg = nlohmann::json::parse(read_all(dir / "fp8" / "config.json"));
  EXPECT_EQ(cfg["quantization_config"]["weight_block_size"], nlohmann::json({128, 128}));
  const auto* q = fp8.find("model.layers.1.moe.gate_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, afd::dtype::f8_e4m3);
  ASSERT_NE(q->scale_inv, nullptr);
  EXPECT_EQ(q->scale_inv->shape, (std::vector<std::int64_t>{8, 1, 1}));
  EXPECT_EQ(q->block_rows, 128);
  EXPECT_EQ(fp8.find("model.layers.1.input_layernorm.weight")->type, afd::dtype::bf16);
  EXPECT_EQ(fp8.find("lm_head.weight")->type, afd::dtype::bf16);
  int quantized = 0;
  for (const auto& n : ref.tensor_names()) {
    const auto* t = fp8.find(n);
    if (t->type != afd::dtype::f8_e4m3) continue;
    ++quantized;
    auto a = *ref.load_f32(n);
    auto b = *fp8.load_f32(n);
    double amax = 0;
    for (float x : a) amax = std::max(amax, static_cast<double>(std::fabs(x)));
    for (std::size_t i = 0; i < a.size(); ++i)  // E4M3: 3 mantissa bits, half an ulp is 1/16 relative
      ASSERT_NEAR(b[i], a[i], std::fabs(a[i]) / 16.0 + amax / 448.0 * std::ldexp(1.0, -9) + 1e-12) << n << " " << i;
  }
  EXPECT_EQ(quantized, 4 * 5 + 3 + 3 * 6);  // attention x4 layers, dense MLP, MoE experts + shared x3
}

TEST(make_model, planning_refuses_bad_requests) {
  auto o = tiny();
  o.shards = 0;
  EXPECT_FALSE(afd::model::plan_synthetic(o));
  o.shards = 100000;
  EXPECT_FALSE(afd::model::plan_synthetic(o));
  afd_test::scratch_dir dir("refuse");
  afd_test::write_text(dir / "out" / "notes.txt", "keep me");
  auto r = afd::model::write_synthetic_checkpoint(tiny(), (dir / "out").string(), false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code(), errc::invalid_argument);
  // --force replaces the checkpoint, keeps other files, and removes stale shards.
  ASSERT_TRUE(afd::model::write_synthetic_checkpoint(tiny(afd::dtype::bf16, 2), (dir / "out").string(), true));
  ASSERT_TRUE(afd::model::write_synthetic_checkpoint(tiny(), (dir / "out").string(), true));
  EXPECT_TRUE(fs::exists(dir / "out" / "notes.txt"));
  EXPECT_FALSE(fs::exists(dir / "out" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "out" / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(afd::model::checkpoint::open((dir / "out").string()));
}

TEST(make_model, step3_tensor_set_counts_the_published_parameters) {
  // The tensors expected_tensors lists must add up to 316 B (MODEL.md).
  auto c = afd::model::preset_config("step3");
  ASSERT_TRUE(c);
  double total = 0;
  for (const auto& [n, shape] : afd::model::expected_tensors(*c)) {
    double k = 1;
    for (auto d : shape) k *= static_cast<double>(d);
    total += k;
  }
  EXPECT_NEAR(total / 1e9, 316, 0.5);
}

#ifdef AFD_EXECUTABLE
// Runs `afd ARGS`, returns the exit code; stdout+stderr go to `output`.
int run_afd(const std::string& args, std::string* output = nullptr) {
  const fs::path log = fs::temp_directory_path() / ("afd_model_test_cli_" + std::to_string(::getpid()) + ".log");
  const std::string cmd = std::string(AFD_EXECUTABLE) + " " + args + " > " + log.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  if (output) *output = read_all(log);
  fs::remove(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(make_model_cli, step3_dry_run_matches_model_md) {
  std::string out;
  ASSERT_EQ(run_afd("make-model --preset step3 --dry-run", &out), 0) << out;
  for (const char* figure : {"316 B", "38.8 B", "169 M", "396 M", "110 M", "31,232 B/token", "256 MB"})
    EXPECT_NE(out.find(figure), std::string::npos) << figure << " not in:\n" << out;
  ASSERT_EQ(run_afd("make-model --preset step3 --dry-run --json", &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  const auto& p = j["parameters"];
  EXPECT_NEAR(p["total"].get<double>() / 1e9, 316, 0.5);
  EXPECT_NEAR(p["activated_per_token"].get<double>() / 1e9, 38.8, 0.05);
  EXPECT_NEAR(p["attention_per_layer"].get<double>() / 1e6, 169, 0.5);
  EXPECT_NEAR(p["dense_mlp"].get<double>() / 1e6, 396, 0.5);
  EXPECT_NEAR(p["expert"].get<double>() / 1e6, 110, 0.5);
  EXPECT_EQ(j["kv_bytes_per_token"]["fp8"], 31232);
  EXPECT_EQ(j["kv_bytes_per_token"]["bf16"], 62464);
  EXPECT_NEAR(j["kv_bytes_8k_context"]["fp8"].get<double>() / 1e6, 256, 0.5);
  // BF16 weights: 2 bytes per parameter.
  EXPECT_EQ(j["weight_bytes"].get<double>(), 2 * p["total"].get<double>());
}

TEST(make_model_cli, exit_codes) {
  afd_test::scratch_dir dir("cli");
  std::string out;
  EXPECT_EQ(run_afd("make-model --preset nope --dry-run", &out), 2) << out;
  EXPECT_NE(out.find("nope"), std::string::npos);
  EXPECT_EQ(run_afd("make-model --preset step3 --out " + (dir / "big").string(), &out), 2) << out;
  EXPECT_NE(out.find("dry-run"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir / "big" / "model.safetensors"));
  EXPECT_EQ(run_afd("make-model --preset tiny", &out), 2) << out;  // no --out
  EXPECT_EQ(run_afd("make-model --out " + (dir / "x").string(), &out), 2) << out;  // no --preset
  EXPECT_EQ(run_afd("make-model --preset tiny --dtype int4 --out " + (dir / "x").string(), &out), 2) << out;
  EXPECT_EQ(run_afd("make-model --preset tiny --shards 0 --out " + (dir / "x").string(), &out), 2) << out;
  EXPECT_EQ(run_afd("make-model --preset tiny --frobnicate", &out), 2) << out;
  EXPECT_EQ(run_afd("make-model --help", &out), 0) << out;
  // Writes, then refuses the now non-empty directory, then --force.
  const std::string m = (dir / "m").string();
  EXPECT_EQ(run_afd("make-model --preset tiny --seed 3 --out " + m, &out), 0) << out;
  EXPECT_EQ(run_afd("make-model --preset tiny --seed 3 --out " + m, &out), 2) << out;
  EXPECT_NE(out.find("--force"), std::string::npos) << out;
  EXPECT_EQ(run_afd("make-model --preset tiny --seed 3 --force --shards 2 --dtype fp8 --vl --out " + m, &out), 0) << out;
  EXPECT_TRUE(afd::model::checkpoint::open(m));
  // Unwritable: the output's parent is a regular file.
  afd_test::write_text(dir / "file", "x");
  EXPECT_EQ(run_afd("make-model --preset tiny --out " + (dir / "file" / "sub").string(), &out), 1) << out;
  EXPECT_NE(out.find("cannot create"), std::string::npos) << out;
}

TEST(make_model_cli, cli_and_library_write_the_same_bytes) {
  afd_test::scratch_dir dir("cli_bytes");
  std::string out;
  ASSERT_EQ(run_afd("make-model --preset tiny --seed 7 --out " + (dir / "cli").string(), &out), 0) << out;
  ASSERT_TRUE(afd::model::write_synthetic_checkpoint(tiny(), (dir / "lib").string(), false));
  EXPECT_EQ(read_all(dir / "cli" / "model.safetensors"), read_all(dir / "lib" / "model.safetensors"));
  EXPECT_EQ(read_all(dir / "cli" / "config.json"), read_all(dir / "lib" / "config.json"));
}
#endif

}  // namespace
