// Synthetic checkpoints. Values come from splitmix64 of (seed, hash of the tensor name, element
// index), so a tensor's values do not depend on file layout, dtype or the other tensors, and
// generation needs no state: the same seed gives the same bytes on every machine.
#include "runtime/model/make_model.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>

#include <nlohmann/json.hpp>

#include "runtime/model/checkpoint.hpp"

namespace afd::model {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr std::uint64_t golden = 0x9E3779B97F4A7C15ull;

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += golden;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// An approximately standard normal value with unit variance: the sum of four 16-bit uniforms
// (Irwin-Hall), centred and scaled. Bounded by +-2*sqrt(3), which keeps activations tame, and
// one hash per element, which keeps generation fast.
inline float unit_normal(std::uint64_t bits) {
  const std::uint32_t a = bits & 0xffff, b = (bits >> 16) & 0xffff, c = (bits >> 32) & 0xffff, d = bits >> 48;
  const float sum = static_cast<float>(a + b + c + d) + 2.0f;  // each term + 0.5 keeps it symmetric
  return (sum * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

bool ends_with(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

bool is_norm(std::string_view name) {
  return ends_with(name, "layernorm.weight") || ends_with(name, "inter_norm.weight") || name == "model.norm.weight";
}

// Matrices stored as block FP8 in an fp8 checkpoint (the embedding, router, LM head and norms stay BF16,
// as in released FP8 checkpoints).
bool is_quantized_matrix(std::string_view name) {
  if (name.starts_with("vision_model.")) return false;
  if (is_norm(name) || name == "model.embed_tokens.weight" || name == "lm_head.weight") return false;
  if (ends_with(name, "moe.gate.weight")) return false;
  return true;
}

const char* vision_tensor_name = "vision_model.embeddings.patch_embedding.weight";
const std::vector<std::int64_t> vision_tensor_shape = {16, 3, 4, 4};

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

json text_config_json(const model_config& c) {
  std::string layers;
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    if (!c.is_moe_layer(i)) continue;
    if (!layers.empty()) layers += ",";
    layers += std::to_string(i);
  }
  return json{{"model_type", "step3_text"},
              {"architectures", {"Step3TextForCausalLM"}},
              {"hidden_size", c.hidden_size},
              {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads},
              {"num_attention_groups", c.num_attention_groups},
              {"head_dim", c.head_dim},
              {"share_q_dim", c.share_q_dim},
              {"intermediate_size", c.intermediate_size},
              {"moe_num_experts", c.moe_num_experts},
              {"moe_top_k", c.moe_top_k},
              {"moe_intermediate_size", c.moe_intermediate_size},
              {"share_expert_dim", c.share_expert_dim},
              {"moe_layers_enum", layers},
              {"norm_expert_weight", c.norm_expert_weight},
              {"rms_norm_eps", c.rms_norm_eps},
              {"rope_theta", c.rope_theta},
              {"max_position_embedding", c.max_position_embedding},
              {"vocab_size", c.vocab_size}};
}

}  // namespace

std::vector<std::string> preset_names() { return {"tiny", "small", "step3"}; }

expected<model_config> preset_config(std::string_view name) {
  model_config c;
  auto moe_from = [&](std::vector<std::int64_t> dense) {
    c.moe_layers.assign(static_cast<std::size_t>(c.num_hidden_layers), true);
    for (auto i : dense) c.moe_layers[static_cast<std::size_t>(i)] = false;
  };
  if (name == "tiny") {
    c.hidden_size = 64;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.head_dim = 32;
    c.share_q_dim = 48;
    c.intermediate_size = 96;
    c.moe_num_experts = 8;
    c.moe_top_k = 3;
    c.moe_intermediate_size = 32;
    c.share_expert_dim = 32;
    c.vocab_size = 512;
    c.max_position_embedding = 2048;
    c.rope_theta = 10000.0;
    moe_from({0});
  } else if (name == "small") {
    c.hidden_size = 1024;
    c.num_hidden_layers = 6;
    c.num_attention_heads = 16;
    c.head_dim = 128;
    c.share_q_dim = 512;
    c.intermediate_size = 2816;
    c.moe_num_experts = 16;
    c.moe_top_k = 3;
    c.moe_intermediate_size = 512;
    c.share_expert_dim = 512;
    c.vocab_size = 8192;
    c.max_position_embedding = 8192;
    c.rope_theta = 10000.0;
    moe_from({0, 5});
  } else if (name == "step3") {
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
    c.max_position_embedding = 65536;
    c.rope_theta = 500000.0;
    moe_from({0, 1, 2, 3, 60});
  } else {
    return fail(errc::invalid_argument, "unknown preset '", name, "' (tiny, small or step3)");
  }
  c.num_attention_groups = 1;
  c.rms_norm_eps = 1e-5;
  c.norm_expert_weight = false;
  return c;
}

double synthetic_weight_std(const model_config& c, std::string_view name) {
  const double h = static_cast<double>(c.hidden_size);
  auto inv_sqrt = [](double fan_in) { return 1.0 / std::sqrt(fan_in); };
  if (is_norm(name)) return 0.1;  // 1 + noise, so that the norms are not the identity
  if (name == "model.embed_tokens.weight") return 1.0;
  if (name == "lm_head.weight") return 4.0 * inv_sqrt(h);  // logits of std ~4 after the final norm
  if (name.starts_with("vision_model.")) return 0.02;
  if (ends_with(name, "self_attn.wq.weight")) return inv_sqrt(static_cast<double>(c.share_q_dim));
  if (ends_with(name, "self_attn.o_proj.weight")) return inv_sqrt(static_cast<double>(c.q_width()));
  if (ends_with(name, "mlp.down_proj.weight")) return inv_sqrt(static_cast<double>(c.intermediate_size));
  if (ends_with(name, "moe.down_proj.weight")) return inv_sqrt(static_cast<double>(c.moe_intermediate_size));
  if (ends_with(name, "share_expert.down_proj.weight")) return inv_sqrt(static_cast<double>(c.share_expert_dim));
  return inv_sqrt(h);  // q/k/v, gate/up projections and the router all read the hidden state
}

void synthetic_values(std::uint64_t seed, const model_config& c, std::string_view name, std::span<float> out) {
  const std::uint64_t key = splitmix64(seed ^ splitmix64(fnv1a(name)));
  const auto std_dev = static_cast<float>(synthetic_weight_std(c, name));
  const float mean = is_norm(name) ? 1.0f : 0.0f;
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = mean + std_dev * unit_normal(splitmix64(key + i * golden));
}

std::string synthetic_config_json(const synthetic_options& o) {
  json text = text_config_json(o.config);
  const char* torch_dtype = o.weight_dtype == dtype::f32 ? "float32" : o.weight_dtype == dtype::f16 ? "float16" : "bfloat16";
  json root;
  if (o.vl) {
    root = json{{"model_type", "step3_vl"},
                {"architectures", {"Step3VLForConditionalGeneration"}},
                {"text_config", text},
                {"vision_config", {{"hidden_size", vision_tensor_shape[0]}, {"patch_size", vision_tensor_shape[2]}}}};
  } else {
    root = text;
  }
  root["torch_dtype"] = torch_dtype;
  if (o.weight_dtype == dtype::f8_e4m3)
    root["quantization_config"] = {{"quant_method", "fp8"},
                                   {"fmt", "e4m3"},
                                   {"activation_scheme", "dynamic"},
                                   {"weight_block_size", {synthetic_fp8_block, synthetic_fp8_block}}};
  return root.dump(2) + "\n";
}

expected<synthetic_plan> plan_synthetic(const synthetic_options& o) {
  if (std::string why = validate(o.config); !why.empty()) return fail(errc::invalid_argument, "bad model: ", why);
  if (o.shards < 1) return fail(errc::invalid_argument, "--shards must be at least 1, got ", o.shards);
  // Groups that stay in one file: a weight and its scale.
  std::vector<std::vector<tensor_to_write>> groups;
  const dtype plain = o.weight_dtype == dtype::f8_e4m3 ? dtype::bf16 : o.weight_dtype;
  if (o.vl) groups.push_back({{vision_tensor_name, dtype::f32, vision_tensor_shape}});
  for (const auto& [name, shape] : expected_tensors(o.config)) {
    if (o.weight_dtype == dtype::f8_e4m3 && is_quantized_matrix(name)) {
      auto scale_shape = shape;
      const std::size_t r = shape.size();
      scale_shape[r - 1] = (shape[r - 1] + synthetic_fp8_block - 1) / synthetic_fp8_block;
      scale_shape[r - 2] = (shape[r - 2] + synthetic_fp8_block - 1) / synthetic_fp8_block;
      groups.push_back({{name, dtype::f8_e4m3, shape}, {name + "_scale_inv", dtype::f32, scale_shape}});
    } else {
      groups.push_back({{name, plain, shape}});
    }
  }
  if (static_cast<std::size_t>(o.shards) > groups.size())
    return fail(errc::invalid_argument, "--shards ", o.shards, " exceeds the number of weights (", groups.size(), ")");
  synthetic_plan plan;
  std::uint64_t total = 0;
  for (const auto& g : groups)
    for (const auto& t : g) total += t.bytes();
  plan.tensor_bytes = total;
  plan.files.resize(static_cast<std::size_t>(o.shards));
  // Balanced by bytes, in order; every shard gets at least one group.
  std::uint64_t done = 0;
  std::size_t file = 0;
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const std::size_t groups_left = groups.size() - gi;
    const std::size_t files_left = plan.files.size() - file;
    const bool must_advance = !plan.files[file].empty() && groups_left < files_left;
    const bool full = !plan.files[file].empty() &&
                      static_cast<double>(done) >= static_cast<double>(total) * static_cast<double>(file + 1) /
                                                       static_cast<double>(o.shards);
    if ((must_advance || full) && file + 1 < plan.files.size()) ++file;
    for (auto& t : groups[gi]) {
      done += t.bytes();
      plan.files[file].push_back(std::move(t));
    }
  }
  if (o.shards == 1) {
    plan.file_names = {"model.safetensors"};
  } else {
    for (int i = 1; i <= o.shards; ++i) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i, o.shards);
      plan.file_names.push_back(buf);
    }
  }
  return plan;
}

namespace {

// Quantizes [matrices, rows, cols] into 128x128 blocks: scale = amax / 448 per block (stored as
// f32, the multiplier `weight_scale_inv` applies on load), q = fp8(w / scale).
void quantize_blocks(const std::vector<float>& w, const std::vector<std::int64_t>& shape, std::span<std::byte> q,
                     std::vector<float>& scales) {
  const std::size_t r = shape.size();
  const std::int64_t rows = shape[r - 2], cols = shape[r - 1];
  const std::int64_t mats = numel(shape) / (rows * cols);
  const std::int64_t b = synthetic_fp8_block;
  const std::int64_t srows = (rows + b - 1) / b, scols = (cols + b - 1) / b;
  scales.assign(static_cast<std::size_t>(mats * srows * scols), 0.0f);
  for (std::int64_t m = 0; m < mats; ++m)
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) {
        float& s = scales[static_cast<std::size_t>((m * srows + i / b) * scols + j / b)];
        s = std::max(s, std::fabs(w[static_cast<std::size_t>((m * rows + i) * cols + j)]));
      }
  for (float& s : scales) s = s > 0.0f ? s / fp8_e4m3_max : 1.0f;
  for (std::int64_t m = 0; m < mats; ++m)
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) {
        const std::size_t k = static_cast<std::size_t>((m * rows + i) * cols + j);
        const float s = scales[static_cast<std::size_t>((m * srows + i / b) * scols + j / b)];
        q[k] = std::byte{f32_to_fp8_e4m3(w[k] / s)};
      }
}

bool is_checkpoint_file(const std::string& name) {
  return name == "config.json" || name == "model.safetensors" || name == "model.safetensors.index.json" ||
         (name.starts_with("model-") && name.ends_with(".safetensors"));
}

}  // namespace

expected<write_report> write_synthetic_checkpoint(const synthetic_options& o, const std::string& dir, bool force,
                                                  const write_progress& progress) {
  const auto start = std::chrono::steady_clock::now();
  auto planned = plan_synthetic(o);
  if (!planned) return planned.err();
  const synthetic_plan& plan = *planned;

  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) return fail(errc::invalid_argument, dir, " exists and is not a directory");
    const bool empty = fs::is_empty(dir, ec);
    if (ec) return fail(errc::io_error, dir, ": cannot list: ", ec.message());
    if (!empty && !force)
      return fail(errc::invalid_argument, dir, " is not empty; pass --force to replace the checkpoint in it");
    if (!empty) {
      // Stale shards or a stale index would be picked up by the loader: remove them.
      for (const auto& entry : fs::directory_iterator(dir, ec)) {
        const std::string name = entry.path().filename().string();
        if (entry.is_regular_file() && is_checkpoint_file(name)) fs::remove(entry.path(), ec);
        if (ec) return fail(errc::io_error, entry.path().string(), ": cannot remove: ", ec.message());
      }
    }
  } else {
    fs::create_directories(dir, ec);
    if (ec) return fail(errc::io_error, dir, ": cannot create directory: ", ec.message());
  }

  write_report report;
  {
    const std::string path = dir + "/config.json";
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const std::string text = synthetic_config_json(o);
    out << text;
    out.close();
    if (!out) return fail(errc::io_error, path, ": cannot write");
    report.files.push_back(path);
    report.bytes += text.size();
  }

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::uint64_t done = 0;
  json weight_map = json::object();
  for (std::size_t f = 0; f < plan.files.size(); ++f) {
    const auto& tensors = plan.files[f];
    const std::string path = dir + "/" + plan.file_names[f];
    std::vector<float> values;
    std::map<std::string, std::vector<float>> pending_scales;  // weight name -> its block scales
    auto fill = [&](std::size_t i, std::span<std::byte> out) {
      const tensor_to_write& t = tensors[i];
      if (t.name.ends_with("_scale_inv")) {
        const auto& s = pending_scales.at(t.name.substr(0, t.name.size() - 10));
        std::memcpy(out.data(), s.data(), out.size());
      } else {
        values.resize(static_cast<std::size_t>(numel(t.shape)));
        synthetic_values(o.seed, o.config, t.name, values);
        if (t.type == dtype::f8_e4m3) {
          quantize_blocks(values, t.shape, out, pending_scales[t.name]);
        } else {
          for (std::size_t k = 0; k < values.size(); ++k) store_from_f32(t.type, out.data(), k, values[k]);
        }
      }
      done += out.size();
      if (progress) progress(path, done, plan.tensor_bytes);
    };
    auto written = write_safetensors(path, tensors, metadata, fill);
    if (!written) return written.err();
    report.files.push_back(path);
    report.bytes += *written;
    for (const auto& t : tensors) weight_map[t.name] = plan.file_names[f];
  }
  if (plan.files.size() > 1) {
    const std::string path = dir + "/model.safetensors.index.json";
    const json index = {{"metadata", {{"total_size", plan.tensor_bytes}}}, {"weight_map", weight_map}};
    const std::string text = index.dump(2) + "\n";
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) return fail(errc::io_error, path, ": cannot write");
    report.files.push_back(path);
    report.bytes += text.size();
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace afd::model
