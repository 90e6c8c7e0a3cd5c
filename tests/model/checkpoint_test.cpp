// checkpoint::open and load_f32 against checkpoints written by the independent writer in
// test_checkpoint_writer.hpp: exact values for every dtype, block-FP8 against a float64
// dequantisation, VL layouts, and every malformed input with its error code and message.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <tuple>

#include "runtime/model/checkpoint.hpp"
#include "tests/model/test_checkpoint_writer.hpp"

namespace {

using afd::errc;
using afd_test::raw_tensor;
using shape_t = std::vector<std::int64_t>;

// A small Step-3-shaped model: layer 0 dense, layer 1 MoE.
constexpr std::int64_t H = 8, L = 2, heads = 2, head_dim = 4, share_q = 6, inter = 12, experts = 4, top_k = 2,
                       moe_inter = 4, share_expert = 4, vocab = 16;

std::string config_fields() {
  return "\"hidden_size\": 8, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_attention_groups\": 1, "
         "\"head_dim\": 4, \"share_q_dim\": 6, \"intermediate_size\": 12, \"moe_num_experts\": 4, \"moe_top_k\": 2, "
         "\"moe_intermediate_size\": 4, \"share_expert_dim\": 4, \"moe_layers_enum\": \"1\", \"vocab_size\": 16, "
         "\"rope_theta\": 10000, \"max_position_embedding\": 128";
}
std::string text_config(const std::string& extra = "") {
  return "{\"model_type\": \"step3_text\", " + config_fields() + extra + "}";
}
std::string vl_config() {
  return "{\"model_type\": \"step3_vl\", \"vision_config\": {\"hidden_size\": 16}, \"text_config\": {" +
         config_fields() + "}}";
}

// The tensor table of MODEL.md, written out for this model.
std::vector<std::pair<std::string, shape_t>> model_md_tensors() {
  std::vector<std::pair<std::string, shape_t>> t = {{"model.embed_tokens.weight", {vocab, H}}};
  for (int i = 0; i < L; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "input_layernorm.weight", {H}});
    t.push_back({p + "post_attention_layernorm.weight", {H}});
    t.push_back({p + "self_attn.q_proj.weight", {share_q, H}});
    t.push_back({p + "self_attn.k_proj.weight", {head_dim, H}});
    t.push_back({p + "self_attn.v_proj.weight", {head_dim, H}});
    t.push_back({p + "self_attn.inter_norm.weight", {share_q}});
    t.push_back({p + "self_attn.wq.weight", {heads * head_dim, share_q}});
    t.push_back({p + "self_attn.o_proj.weight", {H, heads * head_dim}});
    if (i == 0) {
      t.push_back({p + "mlp.gate_proj.weight", {inter, H}});
      t.push_back({p + "mlp.up_proj.weight", {inter, H}});
      t.push_back({p + "mlp.down_proj.weight", {H, inter}});
    } else {
      t.push_back({p + "moe.gate.weight", {experts, H}});
      t.push_back({p + "moe.gate_proj.weight", {experts, moe_inter, H}});
      t.push_back({p + "moe.up_proj.weight", {experts, moe_inter, H}});
      t.push_back({p + "moe.down_proj.weight", {experts, H, moe_inter}});
      t.push_back({p + "share_expert.gate_proj.weight", {share_expert, H}});
      t.push_back({p + "share_expert.up_proj.weight", {share_expert, H}});
      t.push_back({p + "share_expert.down_proj.weight", {H, share_expert}});
    }
  }
  t.push_back({"model.norm.weight", {H}});
  t.push_back({"lm_head.weight", {vocab, H}});
  return t;
}

// All model tensors with random values, dtypes cycling through BF16, F16, F32.
std::vector<raw_tensor> model_tensors(std::uint64_t seed = 1, const std::string& prefix_from = "",
                                      const std::string& prefix_to = "") {
  std::mt19937_64 rng(seed);
  std::vector<raw_tensor> out;
  const char* dtypes[] = {"BF16", "F16", "F32"};
  int k = 0;
  for (const auto& [name, shape] : model_md_tensors()) {
    std::string stored = name;
    if (!prefix_from.empty() && stored.rfind(prefix_from, 0) == 0) stored = prefix_to + stored.substr(prefix_from.size());
    out.push_back(afd_test::random_tensor(stored, dtypes[k++ % 3], shape, rng));
  }
  return out;
}

raw_tensor* by_name(std::vector<raw_tensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return &t;
  return nullptr;
}

struct checkpoint_test : ::testing::Test {
  afd_test::scratch_dir dir{::testing::UnitTest::GetInstance()->current_test_info()->name()};
  std::string d() const { return dir.path.string(); }
  std::string file() const { return (dir / "model.safetensors").string(); }
  void write(const std::vector<raw_tensor>& ts, const std::string& config = text_config()) {
    afd_test::write_text(dir / "config.json", config);
    afd_test::write_safetensors(dir / "model.safetensors", ts);
  }
  // Opens, expects failure with `code`, and a message holding every one of `parts`.
  void expect_error(errc code, std::vector<std::string> parts) {
    auto c = afd::model::checkpoint::open(d());
    ASSERT_FALSE(c) << "opened a bad checkpoint";
    EXPECT_EQ(c.err().code(), code) << c.err().to_string();
    for (const auto& p : parts) EXPECT_NE(c.err().message().find(p), std::string::npos) << p << " not in: " << c.err().message();
  }
};

void expect_values(const afd::model::checkpoint& c, const raw_tensor& t, const std::string& name) {
  auto v = c.load_f32(name);
  ASSERT_TRUE(v) << v.err().to_string();
  ASSERT_EQ(v->size(), t.values.size()) << name;
  for (std::size_t i = 0; i < t.values.size(); ++i)
    ASSERT_EQ((*v)[i], static_cast<float>(t.values[i])) << name << " element " << i;
}

TEST_F(checkpoint_test, single_file_loads_exact_values) {
  const auto ts = model_tensors();
  write(ts);
  auto c = afd::model::checkpoint::open(d());
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_EQ(c->config().hidden_size, H);
  EXPECT_TRUE(c->config().is_moe_layer(1));
  EXPECT_FALSE(c->config().is_moe_layer(0));
  std::set<std::string> want, got;
  for (const auto& [n, s] : model_md_tensors()) want.insert(n);
  for (const auto& n : c->tensor_names()) got.insert(n);
  EXPECT_EQ(want, got);
  for (const auto& t : ts) {
    expect_values(*c, t, t.name);
    const auto* info = c->find(t.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->shape, t.shape);
    EXPECT_EQ(info->file, file());
    EXPECT_EQ(info->scale_inv, nullptr);
    EXPECT_EQ(info->type, t.dtype == "BF16" ? afd::dtype::bf16 : t.dtype == "F16" ? afd::dtype::f16 : afd::dtype::f32);
  }
}

TEST_F(checkpoint_test, expected_tensors_matches_model_md) {
  auto cfg = afd::model::parse_config_text(text_config(), "c.json");
  ASSERT_TRUE(cfg);
  auto mine = afd::model::expected_tensors(*cfg);
  std::map<std::string, shape_t> a(mine.begin(), mine.end());
  auto md = model_md_tensors();
  std::map<std::string, shape_t> b(md.begin(), md.end());
  EXPECT_EQ(a, b);
  EXPECT_EQ(mine.size(), md.size());  // no duplicates
}

TEST_F(checkpoint_test, slices_along_dimension_0) {
  const auto ts = model_tensors(7);
  write(ts);
  auto c = afd::model::checkpoint::open(d());
  ASSERT_TRUE(c) << c.err().to_string();
  auto ts2 = ts;
  // Experts 1..2 of a stacked tensor; rows 3..5 of a matrix.
  const raw_tensor& up = *by_name(ts2, "model.layers.1.moe.up_proj.weight");
  auto v = c->load_f32("model.layers.1.moe.up_proj.weight", 1, 2);
  ASSERT_TRUE(v) << v.err().to_string();
  ASSERT_EQ(v->size(), static_cast<std::size_t>(2 * moe_inter * H));
  for (std::size_t i = 0; i < v->size(); ++i) ASSERT_EQ((*v)[i], static_cast<float>(up.values[moe_inter * H + i]));
  const raw_tensor& lm = *by_name(ts2, "lm_head.weight");
  auto rows = c->load_f32("lm_head.weight", 3, 3);
  ASSERT_TRUE(rows);
  for (std::size_t i = 0; i < rows->size(); ++i) ASSERT_EQ((*rows)[i], static_cast<float>(lm.values[3 * H + i]));
  auto empty = c->load_f32("lm_head.weight", vocab, 0);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  for (auto [first, count] : std::vector<std::pair<std::int64_t, std::int64_t>>{{-1, 1}, {0, vocab + 1}, {vocab, 1}, {2, -1}}) {
    auto bad = c->load_f32("lm_head.weight", first, count);
    ASSERT_FALSE(bad) << first << "," << count;
    EXPECT_EQ(bad.err().code(), errc::out_of_range);
    EXPECT_NE(bad.err().message().find("lm_head.weight"), std::string::npos);
  }
  auto unknown = c->load_f32("model.layers.9.nothing");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.err().code(), errc::missing_tensor);
}

TEST_F(checkpoint_test, sharded_with_index) {
  const auto ts = model_tensors(3);
  afd_test::write_text(dir / "config.json", text_config());
  std::vector<raw_tensor> a(ts.begin(), ts.begin() + 10), b(ts.begin() + 10, ts.end());
  afd_test::write_safetensors(dir / "model-00001-of-00002.safetensors", a);
  afd_test::write_safetensors(dir / "model-00002-of-00002.safetensors", b);
  std::string index = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {";
  for (std::size_t i = 0; i < ts.size(); ++i)
    index += std::string(i ? "," : "") + "\"" + ts[i].name + "\": \"model-0000" + (i < 10 ? "1" : "2") + "-of-00002.safetensors\"";
  afd_test::write_text(dir / "model.safetensors.index.json", index + "}}");
  auto c = afd::model::checkpoint::open(d());
  ASSERT_TRUE(c) << c.err().to_string();
  for (const auto& t : ts) expect_values(*c, t, t.name);
  EXPECT_NE(c->find(ts[12].name)->file.find("model-00002-of-00002.safetensors"), std::string::npos);
}

TEST_F(checkpoint_test, vl_ignores_vision_tensors_and_strips_prefixes) {
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"", ""}, {"model.", "language_model.model."}, {"model.", "model.language_model."}}) {
    std::mt19937_64 rng(5);
    auto ts = model_tensors(11, from, to);
    if (to == "language_model.model.") by_name(ts, "lm_head.weight")->name = "language_model.lm_head.weight";
    ts.push_back(afd_test::random_tensor("vision_model.embeddings.patch_embedding.weight", "F32", {4, 3, 2, 2}, rng));
    ts.push_back(afd_test::random_tensor("vit_downsampler.weight", "BF16", {2, 2}, rng));
    ts.push_back(afd_test::random_tensor("model.vision_model.blocks.0.weight", "F16", {3}, rng));
    ts.push_back(afd_test::random_tensor("multi_modal_projector.linear_1.weight", "F32", {2}, rng));
    write(ts, vl_config());
    auto c = afd::model::checkpoint::open(d());
    ASSERT_TRUE(c) << to << ": " << c.err().to_string();
    EXPECT_EQ(c->find("vision_model.embeddings.patch_embedding.weight"), nullptr);
    EXPECT_EQ(c->tensor_names().size(), model_md_tensors().size());
    for (const auto& t : ts) {
      if (t.name.find("vision") != std::string::npos || t.name.find("vit_") == 0 || t.name.find("projector") != std::string::npos)
        continue;
      std::string canonical = t.name;
      if (to == "language_model.model.") canonical = canonical.substr(std::string("language_model.").size());
      if (to == "model.language_model." && canonical.rfind(to, 0) == 0) canonical = "model." + canonical.substr(to.size());
      expect_values(*c, t, canonical);
    }
    // The same vision tensor in a text-only checkpoint is an error.
    write(ts, text_config());
    expect_error(errc::unexpected_tensor, {"model.vision_model.blocks.0.weight", file()});
    std::filesystem::remove_all(dir.path);
    std::filesystem::create_directories(dir.path);
  }
}

TEST_F(checkpoint_test, mixed_prefixes_are_refused) {
  auto ts = model_tensors(2);
  by_name(ts, "model.layers.1.moe.gate.weight")->name = "language_model.model.layers.1.moe.gate.weight";
  write(ts, vl_config());
  expect_error(errc::unexpected_tensor, {"prefix"});
}

// Block FP8: weights F8_E4M3 with <name>_scale_inv; load_f32 must equal q * scale[r / br][c / bc],
// computed here in float64 (exact: 4 x 24 significant bits) and rounded once to f32.
void fp8_case(checkpoint_test& t, bool block_size_in_config, const std::string& scale_dtype) {
  std::mt19937_64 rng(99);
  auto ts = model_tensors(4);
  // Blocks of 2 x 3: q_proj [6, 8] -> scales [3, 3]; stacked experts [4, 4, 8] -> [4, 2, 3].
  struct fp8_weight {
    std::string name;
    shape_t shape;
  };
  const std::vector<fp8_weight> weights = {{"model.layers.0.self_attn.q_proj.weight", {share_q, H}},
                                           {"model.layers.1.moe.gate_proj.weight", {experts, moe_inter, H}},
                                           {"model.layers.1.moe.down_proj.weight", {experts, H, moe_inter}}};
  std::map<std::string, std::vector<double>> oracle;
  for (const auto& w : weights) {
    raw_tensor q = afd_test::random_tensor(w.name, "F8_E4M3", w.shape, rng);
    const std::size_t r = w.shape.size();
    const std::int64_t rows = w.shape[r - 2], cols = w.shape[r - 1];
    const std::int64_t br = 2, bc = 3, sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    shape_t sshape = w.shape;
    sshape[r - 2] = sr;
    sshape[r - 1] = sc;
    raw_tensor s = afd_test::random_scales(w.name + "_scale_inv", scale_dtype, sshape, rng);
    std::vector<double> deq(q.values.size());
    for (std::size_t i = 0; i < deq.size(); ++i) {
      const std::int64_t m = static_cast<std::int64_t>(i) / (rows * cols);
      const std::int64_t rr = (static_cast<std::int64_t>(i) / cols) % rows, cc = static_cast<std::int64_t>(i) % cols;
      deq[i] = q.values[i] * s.values[static_cast<std::size_t>((m * sr + rr / br) * sc + cc / bc)];
    }
    oracle[w.name] = deq;
    *by_name(ts, w.name) = q;
    ts.push_back(s);
  }
  // An F8 weight with no scale tensor: scale 1.
  raw_tensor plain = afd_test::random_tensor("model.layers.1.self_attn.wq.weight", "F8_E4M3", {heads * head_dim, share_q}, rng);
  *by_name(ts, plain.name) = plain;
  oracle[plain.name] = plain.values;
  t.write(ts, block_size_in_config ? text_config(", \"quantization_config\": {\"weight_block_size\": [2, 3]}") : text_config());
  auto c = afd::model::checkpoint::open(t.d());
  ASSERT_TRUE(c) << c.err().to_string();
  for (const auto& [name, deq] : oracle) {
    auto v = c->load_f32(name);
    ASSERT_TRUE(v) << v.err().to_string();
    ASSERT_EQ(v->size(), deq.size());
    for (std::size_t i = 0; i < deq.size(); ++i) ASSERT_EQ((*v)[i], static_cast<float>(deq[i])) << name << " " << i;
  }
  const auto* q = c->find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q->scale_inv, nullptr);
  EXPECT_EQ(q->type, afd::dtype::f8_e4m3);
  EXPECT_EQ(q->block_rows, 2);
  EXPECT_EQ(q->block_cols, 3);
  EXPECT_EQ(c->find("model.layers.1.self_attn.wq.weight")->scale_inv, nullptr);
  // A slice of experts applies the right experts' scales.
  const auto& full = oracle["model.layers.1.moe.down_proj.weight"];
  auto part = c->load_f32("model.layers.1.moe.down_proj.weight", 2, 2);
  ASSERT_TRUE(part);
  for (std::size_t i = 0; i < part->size(); ++i) ASSERT_EQ((*part)[i], static_cast<float>(full[2 * H * moe_inter + i]));
  // Rows of a matrix: a slice starting inside a block.
  const auto& qf = oracle["model.layers.0.self_attn.q_proj.weight"];
  auto rows = c->load_f32("model.layers.0.self_attn.q_proj.weight", 3, 2);
  ASSERT_TRUE(rows);
  for (std::size_t i = 0; i < rows->size(); ++i) ASSERT_EQ((*rows)[i], static_cast<float>(qf[3 * H + i]));
}

TEST_F(checkpoint_test, fp8_block_scales_from_config) { fp8_case(*this, true, "F32"); }
TEST_F(checkpoint_test, fp8_block_scales_inferred_bf16_scales) { fp8_case(*this, false, "BF16"); }

TEST_F(checkpoint_test, fp8_inconsistent_scale_shape) {
  std::mt19937_64 rng(1);
  auto ts = model_tensors(4);
  const std::string w = "model.layers.0.self_attn.q_proj.weight";  // [6, 8]
  *by_name(ts, w) = afd_test::random_tensor(w, "F8_E4M3", {share_q, H}, rng);
  ts.push_back(afd_test::random_scales(w + "_scale_inv", "F32", {3, 3}, rng));
  // Config says 128x128 blocks: the scale must be [1, 1].
  write(ts, text_config(", \"quantization_config\": {\"weight_block_size\": [128, 128]}"));
  expect_error(errc::shape_mismatch, {w + "_scale_inv", file(), "[3, 3]"});
  // Inferred: 5 scale rows cannot cover 6 rows with equal blocks.
  ts.back() = afd_test::random_scales(w + "_scale_inv", "F32", {5, 3}, rng);
  write(ts);
  expect_error(errc::shape_mismatch, {w + "_scale_inv", "[5, 3]"});
  // Wrong rank.
  ts.back() = afd_test::random_scales(w + "_scale_inv", "F32", {9}, rng);
  write(ts);
  expect_error(errc::shape_mismatch, {w + "_scale_inv"});
  // A scale for a BF16 weight.
  ts.back() = afd_test::random_scales("lm_head.weight_scale_inv", "F32", {1, 1}, rng);
  write(ts);
  auto c = afd::model::checkpoint::open(d());
  ASSERT_FALSE(c);
  EXPECT_NE(c.err().message().find("lm_head.weight_scale_inv"), std::string::npos) << c.err().message();
}

TEST_F(checkpoint_test, fp8_scale_tensors_disagreeing_on_the_block_size) {
  std::mt19937_64 rng(5);
  auto ts = model_tensors(4);
  // q_proj [6, 8] with scales [3, 3]: columns in blocks of 3. k_proj [4, 8] with [1, 2]: blocks of 4..7.
  for (auto [w, shape, sshape] : std::vector<std::tuple<std::string, shape_t, shape_t>>{
           {"model.layers.0.self_attn.q_proj.weight", {share_q, H}, {3, 3}},
           {"model.layers.0.self_attn.k_proj.weight", {head_dim, H}, {1, 2}}}) {
    *by_name(ts, w) = afd_test::random_tensor(w, "F8_E4M3", shape, rng);
    ts.push_back(afd_test::random_scales(w + "_scale_inv", "F32", sshape, rng));
  }
  write(ts);
  expect_error(errc::shape_mismatch, {"_scale_inv", file(), "inconsistent"});
}

// ---- malformed checkpoints ----

TEST_F(checkpoint_test, missing_tensor) {
  auto ts = model_tensors();
  ts.erase(ts.begin() + 5);
  const std::string gone = model_md_tensors()[5].first;
  write(ts);
  expect_error(errc::missing_tensor, {gone, d()});
}

TEST_F(checkpoint_test, unexpected_tensor) {
  std::mt19937_64 rng(3);
  auto ts = model_tensors();
  ts.push_back(afd_test::random_tensor("model.layers.0.self_attn.rotary.weight", "F32", {2}, rng));
  write(ts);
  expect_error(errc::unexpected_tensor, {"model.layers.0.self_attn.rotary.weight", file()});
  // Layer 2 does not exist in a 2-layer model, not even in a VL checkpoint.
  ts.back().name = "model.layers.2.input_layernorm.weight";
  write(ts, vl_config());
  expect_error(errc::unexpected_tensor, {"model.layers.2.input_layernorm.weight", file()});
}

TEST_F(checkpoint_test, wrong_shape) {
  std::mt19937_64 rng(3);
  auto ts = model_tensors();
  *by_name(ts, "model.layers.1.moe.up_proj.weight") =
      afd_test::random_tensor("model.layers.1.moe.up_proj.weight", "BF16", {experts, H, moe_inter}, rng);
  write(ts);
  expect_error(errc::shape_mismatch, {"model.layers.1.moe.up_proj.weight", file(), "[4, 8, 4]", "[4, 4, 8]"});
}

TEST_F(checkpoint_test, wrong_dtype_string) {
  auto ts = model_tensors();
  by_name(ts, "model.norm.weight")->dtype = "Q4_K";
  write(ts);
  expect_error(errc::dtype_mismatch, {"model.norm.weight", file(), "Q4_K"});
  // A real safetensors dtype afd does not compute with.
  ts = model_tensors();
  raw_tensor& n = *by_name(ts, "model.norm.weight");
  n.dtype = "I64";
  n.bytes.assign(static_cast<std::size_t>(8 * H), 0);
  write(ts);
  expect_error(errc::dtype_mismatch, {"model.norm.weight", file(), "I64"});
}

TEST_F(checkpoint_test, truncated_file) {
  write(model_tensors());
  afd_test::truncate_by(dir / "model.safetensors", 3);
  expect_error(errc::out_of_range, {file(), "lm_head.weight", "truncated"});
  // Cut inside the header.
  write(model_tensors());
  std::filesystem::resize_file(dir / "model.safetensors", 40);
  expect_error(errc::parse_error, {file(), "truncated"});
  std::filesystem::resize_file(dir / "model.safetensors", 5);
  expect_error(errc::parse_error, {file(), "truncated"});
}

TEST_F(checkpoint_test, offsets_out_of_range) {
  auto ts = model_tensors();
  std::uint64_t data = 0;
  afd_test::header_text(ts, &data);
  raw_tensor& t = *by_name(ts, "model.layers.0.self_attn.k_proj.weight");
  t.offsets = std::pair{data - 2, data - 2 + t.bytes.size()};
  write(ts);
  expect_error(errc::out_of_range, {"model.layers.0.self_attn.k_proj.weight", file()});
  t.offsets = std::pair{std::uint64_t{10}, std::uint64_t{4}};  // end < begin
  write(ts);
  expect_error(errc::out_of_range, {"model.layers.0.self_attn.k_proj.weight", file()});
}

TEST_F(checkpoint_test, overlapping_offsets) {
  auto ts = model_tensors();
  // Point v_proj one byte into k_proj's bytes.
  std::uint64_t off = 0;
  std::pair<std::uint64_t, std::uint64_t> k_range;
  for (auto& t : ts) {
    if (t.name == "model.layers.0.self_attn.k_proj.weight") k_range = {off, off + t.bytes.size()};
    off += t.bytes.size();
  }
  raw_tensor& v = *by_name(ts, "model.layers.0.self_attn.v_proj.weight");
  v.offsets = std::pair{k_range.first + 1, k_range.first + 1 + v.bytes.size()};
  write(ts);
  expect_error(errc::out_of_range, {"overlap", "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.k_proj.weight", file()});
}

TEST_F(checkpoint_test, byte_count_differs_from_shape) {
  auto ts = model_tensors();
  raw_tensor& t = *by_name(ts, "model.layers.0.input_layernorm.weight");
  t.shape = {H + 1};
  write(ts);
  expect_error(errc::parse_error, {"model.layers.0.input_layernorm.weight", file()});
}

TEST_F(checkpoint_test, absurd_header_length) {
  const auto ts = model_tensors();
  afd_test::write_text(dir / "config.json", text_config());
  afd_test::write_safetensors(dir / "model.safetensors", ts, std::nullopt, std::uint64_t{1} << 40);
  expect_error(errc::parse_error, {file(), "header length"});
  afd_test::write_safetensors(dir / "model.safetensors", ts, std::nullopt, ~std::uint64_t{0});
  expect_error(errc::parse_error, {file(), "header length"});
}

TEST_F(checkpoint_test, header_not_json) {
  const auto ts = model_tensors();
  afd_test::write_text(dir / "config.json", text_config());
  afd_test::write_safetensors(dir / "model.safetensors", ts, std::string("{\"a\": [1, 2,, }"));
  expect_error(errc::parse_error, {file(), "JSON"});
  afd_test::write_safetensors(dir / "model.safetensors", ts, std::string("[1, 2, 3]"));
  expect_error(errc::parse_error, {file()});
  afd_test::write_safetensors(dir / "model.safetensors", ts, std::string("{\"x\": {\"dtype\": \"F32\"}}"));
  expect_error(errc::parse_error, {file(), "'x'"});
}

TEST_F(checkpoint_test, no_weights_at_all) {
  afd_test::write_text(dir / "config.json", text_config());
  expect_error(errc::io_error, {d(), "model.safetensors"});
}

class sharded_test : public checkpoint_test {
 protected:
  std::vector<raw_tensor> ts = model_tensors(3);
  void write_shards(const std::string& index_override_tensor = "", const std::string& index_override_file = "") {
    afd_test::write_text(dir / "config.json", text_config());
    std::vector<raw_tensor> a(ts.begin(), ts.begin() + 10), b(ts.begin() + 10, ts.end());
    afd_test::write_safetensors(dir / "model-00001-of-00002.safetensors", a);
    afd_test::write_safetensors(dir / "model-00002-of-00002.safetensors", b);
    std::string index = "{\"weight_map\": {";
    for (std::size_t i = 0; i < ts.size(); ++i) {
      std::string f = std::string("model-0000") + (i < 10 ? "1" : "2") + "-of-00002.safetensors";
      if (ts[i].name == index_override_tensor) f = index_override_file;
      index += std::string(i ? "," : "") + "\"" + ts[i].name + "\": \"" + f + "\"";
    }
    afd_test::write_text(dir / "model.safetensors.index.json", index + "}}");
  }
};

TEST_F(sharded_test, index_names_a_missing_file) {
  write_shards(ts[3].name, "model-00003-of-00003.safetensors");
  expect_error(errc::io_error, {"model.safetensors.index.json", "model-00003-of-00003.safetensors", ts[3].name});
}

TEST_F(sharded_test, tensor_not_in_the_file_the_index_says) {
  write_shards(ts[3].name, "model-00002-of-00002.safetensors");
  expect_error(errc::unexpected_tensor, {ts[3].name, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST_F(sharded_test, index_lists_a_tensor_no_file_has) {
  afd_test::write_text(dir / "config.json", text_config());
  write_shards();
  std::string index;
  {
    std::ifstream in(dir / "model.safetensors.index.json");
    std::getline(in, index, '\0');
  }
  index.insert(index.find('{', 1) + 1, "\"model.layers.0.extra.weight\": \"model-00001-of-00002.safetensors\",");
  afd_test::write_text(dir / "model.safetensors.index.json", index);
  expect_error(errc::missing_tensor, {"model.layers.0.extra.weight", "model-00001-of-00002.safetensors"});
}

TEST_F(sharded_test, index_not_json) {
  write_shards();
  afd_test::write_text(dir / "model.safetensors.index.json", "{\"weight_map\": {\n\"a\": }");
  expect_error(errc::parse_error, {"model.safetensors.index.json", "line 2"});
}

TEST_F(sharded_test, bad_shard_is_named) {
  write_shards();
  afd_test::truncate_by(dir / "model-00002-of-00002.safetensors", 1);
  expect_error(errc::out_of_range, {"model-00002-of-00002.safetensors", "lm_head.weight"});
}

TEST_F(checkpoint_test, moves_keep_tensors_valid) {
  const auto ts = model_tensors();
  write(ts);
  auto c = afd::model::checkpoint::open(d());
  ASSERT_TRUE(c);
  afd::model::checkpoint moved = std::move(*c);
  expect_values(moved, ts.back(), ts.back().name);
}

}  // namespace
