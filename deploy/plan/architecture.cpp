#include "deploy/plan/architecture.hpp"

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

namespace afd::plan {

const char* to_string(attention_kind k) noexcept {
  switch (k) {
    case attention_kind::mha: return "mha";
    case attention_kind::gqa: return "gqa";
    case attention_kind::mfa: return "mfa";
    case attention_kind::mla: return "mla";
  }
  return "?";
}

std::int64_t architecture::attention_projection_params() const {
  const std::int64_t h = hidden_size;
  switch (attention) {
    case attention_kind::mha:
    case attention_kind::gqa:
      return h * num_heads * head_dim + 2 * h * num_kv_heads * head_dim + num_heads * head_dim * h;
    case attention_kind::mfa:
      return h * share_q_dim + 2 * h * num_kv_heads * head_dim + share_q_dim * num_heads * head_dim +
             num_heads * head_dim * h;
    case attention_kind::mla: {
      const std::int64_t qk = qk_nope_head_dim + qk_rope_head_dim;
      const std::int64_t q = q_lora_rank > 0 ? h * q_lora_rank + q_lora_rank * num_heads * qk : h * num_heads * qk;
      const std::int64_t kv_a = h * (kv_lora_rank + qk_rope_head_dim);
      const std::int64_t kv_b = kv_lora_rank * num_heads * (qk_nope_head_dim + v_head_dim);
      const std::int64_t o = num_heads * v_head_dim * h;
      return q + kv_a + kv_b + o;
    }
  }
  return 0;
}

std::int64_t architecture::layer_norm_params() const {
  std::int64_t n = 2 * hidden_size;  // input and post-attention RMSNorm
  switch (attention) {
    case attention_kind::mha:
    case attention_kind::gqa: n += qk_norm ? 2 * head_dim : 0; break;
    case attention_kind::mfa: n += share_q_dim; break;
    case attention_kind::mla: n += q_lora_rank + kv_lora_rank; break;
  }
  return n;
}

std::int64_t architecture::kv_values_per_token() const {
  if (attention == attention_kind::mla) return kv_lora_rank + qk_rope_head_dim;
  return 2 * num_kv_heads * head_dim;
}

std::int64_t architecture::attention_flops_per_context_token() const {
  // Scores (q.k) and the weighted sum of v, 2 FLOPs per multiply-add each. Absorbed MLA works on
  // the cached latent for both, so both run at the latent's width (the system report's count).
  if (attention == attention_kind::mla) return 4 * num_heads * (kv_lora_rank + qk_rope_head_dim);
  return 2 * num_heads * head_dim + 2 * num_heads * head_dim;
}

std::int64_t architecture::router_params() const {
  if (!is_moe()) return 0;
  return num_experts * hidden_size + (router_bias ? num_experts : 0);
}

std::int64_t architecture::embedding_params() const {
  return (tied_embeddings ? 1 : 2) * vocab_size * hidden_size;
}

std::int64_t architecture::ffn_params_total() const {
  return num_dense_layers * dense_mlp_params() +
         num_moe_layers * (num_experts * expert_params() + shared_expert_params());
}

std::int64_t architecture::ffn_params_activated() const {
  return num_dense_layers * dense_mlp_params() + num_moe_layers * (top_k * expert_params() + shared_expert_params());
}

std::int64_t architecture::total_params() const {
  return num_layers * (attention_projection_params() + layer_norm_params()) + ffn_params_total() +
         num_moe_layers * router_params() + embedding_params() + hidden_size /* final norm */;
}

std::int64_t architecture::activated_params() const {
  return total_params() - num_moe_layers * (num_experts - top_k) * expert_params();
}

double architecture::sparsity() const {
  if (!is_moe()) return 1.0;
  return static_cast<double>(top_k + num_shared_experts) / static_cast<double>(num_experts + num_shared_experts);
}

expected<void> architecture::validate() const {
  auto bad = [&](const char* field, const char* why) {
    return fail(errc::invalid_config, name, ": field '", field, "' ", why);
  };
  if (hidden_size <= 0) return bad("hidden_size", "must be positive");
  if (num_layers <= 0) return bad("num_hidden_layers", "must be positive");
  if (num_heads <= 0) return bad("num_attention_heads", "must be positive");
  if (vocab_size < 0) return bad("vocab_size", "must not be negative");
  if (attention == attention_kind::mla) {
    if (kv_lora_rank <= 0) return bad("kv_lora_rank", "must be positive for MLA");
    if (qk_nope_head_dim <= 0 || qk_rope_head_dim <= 0) return bad("qk_nope_head_dim/qk_rope_head_dim", "must be positive for MLA");
    if (v_head_dim <= 0) return bad("v_head_dim", "must be positive for MLA");
  } else {
    if (head_dim <= 0) return bad("head_dim", "must be positive");
    if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0)
      return bad("num_key_value_heads", "must be positive and divide num_attention_heads");
    if (attention == attention_kind::mfa && share_q_dim <= 0) return bad("share_q_dim", "must be positive for MFA");
  }
  if (num_dense_layers + num_moe_layers != num_layers) return bad("num_hidden_layers", "differs from dense + MoE layers");
  if (num_dense_layers > 0 && dense_intermediate <= 0) return bad("intermediate_size", "must be positive (dense layers exist)");
  if (num_moe_layers > 0) {
    if (num_experts <= 0) return bad("num_experts", "must be positive (MoE layers exist)");
    if (top_k <= 0 || top_k > num_experts) return bad("num_experts_per_tok", "must be in [1, experts]");
    if (expert_intermediate <= 0) return bad("moe_intermediate_size", "must be positive");
    if (num_shared_experts > 0 && shared_intermediate <= 0) return bad("shared expert width", "must be positive");
  }
  return {};
}

// ------------------------------------------------------------------------------------------------
// config.json parsing

namespace {

using json = nlohmann::json;

/// Reads fields of one JSON object, remembering the first error (named by file and field).
class field_reader {
 public:
  field_reader(const json& obj, std::string source) : obj_(obj), source_(std::move(source)) {}

  bool has(const char* key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }

  std::int64_t integer(const char* key, std::optional<std::int64_t> fallback = std::nullopt) {
    if (!has(key)) {
      if (fallback) return *fallback;
      note(fail(errc::invalid_config, source_, ": missing field '", key, "'"));
      return 0;
    }
    const json& v = obj_.at(key);
    if (!v.is_number_integer()) {
      note(fail(errc::invalid_config, source_, ": field '", key, "' must be an integer"));
      return 0;
    }
    return v.get<std::int64_t>();
  }

  bool boolean(const char* key, bool fallback) {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (!v.is_boolean()) {
      note(fail(errc::invalid_config, source_, ": field '", key, "' must be true or false"));
      return fallback;
    }
    return v.get<bool>();
  }

  const json& raw(const char* key) const { return obj_.at(key); }
  void note(error e) {
    if (!err_) err_ = std::move(e);
  }
  const error& err() const { return err_; }
  const std::string& source() const { return source_; }

 private:
  const json& obj_;
  std::string source_;
  error err_;
};

/// Layers with an MoE FFN given `is_moe(i)`; returns the count of MoE layers.
template <class Pred>
std::int64_t count_layers(std::int64_t layers, Pred is_moe) {
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < layers; ++i) n += is_moe(i) ? 1 : 0;
  return n;
}

void read_common(field_reader& r, architecture& a) {
  a.hidden_size = r.integer("hidden_size");
  a.num_layers = r.integer("num_hidden_layers");
  a.num_heads = r.integer("num_attention_heads");
  a.vocab_size = r.integer("vocab_size", 0);
  a.tied_embeddings = r.boolean("tie_word_embeddings", false);
}

void parse_deepseek(field_reader& r, architecture& a) {
  read_common(r, a);
  a.attention = attention_kind::mla;
  a.q_lora_rank = r.integer("q_lora_rank", 0);
  a.kv_lora_rank = r.integer("kv_lora_rank");
  a.qk_nope_head_dim = r.integer("qk_nope_head_dim");
  a.qk_rope_head_dim = r.integer("qk_rope_head_dim");
  a.v_head_dim = r.integer("v_head_dim");
  a.num_kv_heads = a.num_heads;
  a.dense_intermediate = r.integer("intermediate_size");
  a.num_experts = r.integer("n_routed_experts", 0);
  a.top_k = r.integer("num_experts_per_tok", 0);
  a.expert_intermediate = r.integer("moe_intermediate_size", 0);
  a.num_shared_experts = r.integer("n_shared_experts", 0);
  a.shared_intermediate = a.expert_intermediate;  // DeepSeekMoE: shared experts have the expert width
  a.router_bias = r.has("topk_method") && r.raw("topk_method") == "noaux_tc";
  const std::int64_t first_dense = r.integer("first_k_dense_replace", 0);
  const std::int64_t freq = std::max<std::int64_t>(1, r.integer("moe_layer_freq", 1));
  a.num_moe_layers = a.num_experts > 0 ? count_layers(a.num_layers, [&](std::int64_t i) {
    return i >= first_dense && i % freq == 0;
  }) : 0;
  a.num_dense_layers = a.num_layers - a.num_moe_layers;
}

void parse_qwen(field_reader& r, architecture& a, bool moe) {
  read_common(r, a);
  a.num_kv_heads = r.integer("num_key_value_heads", a.num_heads);
  a.attention = a.num_kv_heads == a.num_heads ? attention_kind::mha : attention_kind::gqa;
  a.head_dim = r.integer("head_dim", a.num_heads > 0 ? a.hidden_size / a.num_heads : 0);
  a.qk_norm = a.model_type == "qwen3" || a.model_type == "qwen3_moe";
  a.dense_intermediate = r.integer("intermediate_size");
  if (moe) {
    a.num_experts = r.integer("num_experts");
    a.top_k = r.integer("num_experts_per_tok");
    a.expert_intermediate = r.integer("moe_intermediate_size");
    a.num_shared_experts = 0;
    const std::int64_t step = std::max<std::int64_t>(1, r.integer("decoder_sparse_step", 1));
    std::vector<std::int64_t> mlp_only;
    if (r.has("mlp_only_layers")) {
      if (!r.raw("mlp_only_layers").is_array()) {
        r.note(fail(errc::invalid_config, r.source(), ": field 'mlp_only_layers' must be a list"));
      } else {
        for (const auto& v : r.raw("mlp_only_layers")) {
          if (v.is_number_integer()) mlp_only.push_back(v.get<std::int64_t>());
        }
      }
    }
    a.num_moe_layers = count_layers(a.num_layers, [&](std::int64_t i) {
      return std::find(mlp_only.begin(), mlp_only.end(), i) == mlp_only.end() && (i + 1) % step == 0;
    });
  }
  a.num_dense_layers = a.num_layers - a.num_moe_layers;
}

void parse_step3(field_reader& r, architecture& a) {
  read_common(r, a);
  a.attention = attention_kind::mfa;
  a.num_kv_heads = r.integer("num_attention_groups", 1);
  a.head_dim = r.integer("head_dim");
  a.share_q_dim = r.integer("share_q_dim");
  a.dense_intermediate = r.integer("intermediate_size");
  a.num_experts = r.integer("moe_num_experts");
  a.top_k = r.integer("moe_top_k");
  a.expert_intermediate = r.integer("moe_intermediate_size");
  a.shared_intermediate = r.integer("share_expert_dim", 0);
  a.num_shared_experts = a.shared_intermediate > 0 ? 1 : 0;
  // moe_layers_enum: "4,5,...,59" (a string) or a list; absent: every layer but the first.
  std::vector<bool> moe(static_cast<std::size_t>(std::max<std::int64_t>(a.num_layers, 0)), true);
  if (!moe.empty()) moe[0] = false;
  if (r.has("moe_layers_enum")) {
    std::fill(moe.begin(), moe.end(), false);
    std::vector<std::int64_t> ids;
    const json& v = r.raw("moe_layers_enum");
    if (v.is_string()) {
      std::stringstream ss(v.get<std::string>());
      std::string item;
      while (std::getline(ss, item, ',')) {
        try {
          std::size_t used = 0;
          ids.push_back(std::stoll(item, &used));
        } catch (const std::exception&) {
          r.note(fail(errc::invalid_config, r.source(), ": field 'moe_layers_enum': '", item, "' is not a layer index"));
        }
      }
    } else if (v.is_array()) {
      for (const auto& e : v) {
        if (e.is_number_integer()) ids.push_back(e.get<std::int64_t>());
        else r.note(fail(errc::invalid_config, r.source(), ": field 'moe_layers_enum' must list integers"));
      }
    } else {
      r.note(fail(errc::invalid_config, r.source(), ": field 'moe_layers_enum' must be a string or a list"));
    }
    for (auto id : ids) {
      if (id < 0 || id >= a.num_layers) {
        r.note(fail(errc::invalid_config, r.source(), ": field 'moe_layers_enum': layer ", id, " out of range"));
      } else {
        moe[static_cast<std::size_t>(id)] = true;
      }
    }
  }
  a.num_moe_layers = static_cast<std::int64_t>(std::count(moe.begin(), moe.end(), true));
  a.num_dense_layers = a.num_layers - a.num_moe_layers;
}

void parse_dense(field_reader& r, architecture& a) { parse_qwen(r, a, false); }

}  // namespace

expected<architecture> parse_config_json(std::string_view text, const std::string& source) {
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return fail(errc::parse_error, source, ": not valid JSON");
  if (!doc.is_object()) return fail(errc::parse_error, source, ": the top level must be a JSON object");
  if (!doc.contains("model_type") || !doc["model_type"].is_string())
    return fail(errc::invalid_config, source, ": missing field 'model_type'");
  architecture a;
  a.name = source;
  a.source = source;
  a.model_type = doc["model_type"].get<std::string>();
  const json* obj = &doc;
  if (a.model_type == "step3_vl") {
    if (!doc.contains("text_config") || !doc["text_config"].is_object())
      return fail(errc::invalid_config, source, ": model_type step3_vl needs an object 'text_config'");
    obj = &doc["text_config"];
  }
  field_reader r(*obj, a.model_type == "step3_vl" ? source + " (text_config)" : source);
  if (a.model_type == "deepseek_v3" || a.model_type == "kimi_k2") {
    parse_deepseek(r, a);
  } else if (a.model_type == "qwen3_moe") {
    parse_qwen(r, a, true);
  } else if (a.model_type == "step3_text" || a.model_type == "step3_vl") {
    parse_step3(r, a);
  } else if (a.model_type == "qwen3" || a.model_type == "llama" || a.model_type == "mistral") {
    parse_dense(r, a);
  } else {
    return fail(errc::unsupported, source, ": model_type '", a.model_type,
                "' is not supported (deepseek_v3, kimi_k2, qwen3_moe, qwen3, llama, mistral, step3_text, step3_vl)");
  }
  if (r.err()) return r.err();
  if (auto ok = a.validate(); !ok) return ok.err();
  return a;
}

expected<architecture> load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::io_error, "cannot open model config '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config_json(ss.str(), path);
}

// ------------------------------------------------------------------------------------------------
// Presets: the config.json fields the planner reads, copied from the public files.

namespace {

struct preset_entry {
  const char* name;
  const char* source;
  const char* config;
};

// clang-format off
const preset_entry presets[] = {
  // huggingface.co/stepfun-ai/step3, config.json (text_config of the step3_vl checkpoint).
  {"step3", "huggingface.co/stepfun-ai/step3 config.json", R"({
    "model_type": "step3_vl",
    "text_config": {
      "model_type": "step3_text",
      "hidden_size": 7168, "num_hidden_layers": 61, "vocab_size": 128815,
      "num_attention_heads": 64, "num_attention_groups": 1, "head_dim": 256, "share_q_dim": 2048,
      "intermediate_size": 18432,
      "moe_num_experts": 48, "moe_top_k": 3, "moe_intermediate_size": 5120, "share_expert_dim": 5120,
      "moe_layers_enum": "4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59"
    }})"},
  // huggingface.co/deepseek-ai/DeepSeek-V3, config.json (num_nextn_predict_layers: 1, the MTP
  // module, is not part of the 61 decoder layers and not counted here).
  {"deepseek-v3", "huggingface.co/deepseek-ai/DeepSeek-V3 config.json", R"({
    "model_type": "deepseek_v3",
    "hidden_size": 7168, "num_hidden_layers": 61, "vocab_size": 129280, "tie_word_embeddings": false,
    "num_attention_heads": 128, "num_key_value_heads": 128,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "moe_layer_freq": 1, "topk_method": "noaux_tc",
    "num_nextn_predict_layers": 1
  })"},
  // huggingface.co/moonshotai/Kimi-K2-Instruct, config.json (DeepseekV3ForCausalLM architecture).
  {"kimi-k2", "huggingface.co/moonshotai/Kimi-K2-Instruct config.json", R"({
    "model_type": "kimi_k2",
    "hidden_size": 7168, "num_hidden_layers": 61, "vocab_size": 163840, "tie_word_embeddings": false,
    "num_attention_heads": 64, "num_key_value_heads": 64,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "n_routed_experts": 384, "n_shared_experts": 1, "num_experts_per_tok": 8,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "topk_method": "noaux_tc",
    "num_nextn_predict_layers": 0
  })"},
  // huggingface.co/Qwen/Qwen3-235B-A22B, config.json.
  {"qwen3-moe", "huggingface.co/Qwen/Qwen3-235B-A22B config.json", R"({
    "model_type": "qwen3_moe",
    "hidden_size": 4096, "num_hidden_layers": 94, "vocab_size": 151936, "tie_word_embeddings": false,
    "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
    "intermediate_size": 12288, "moe_intermediate_size": 1536,
    "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": []
  })"},
  // huggingface.co/Qwen/Qwen3-32B, config.json.
  {"qwen3-32b", "huggingface.co/Qwen/Qwen3-32B config.json", R"({
    "model_type": "qwen3",
    "hidden_size": 5120, "num_hidden_layers": 64, "vocab_size": 151936, "tie_word_embeddings": false,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 25600
  })"},
};
// clang-format on

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : presets) names.emplace_back(p.name);
  std::sort(names.begin(), names.end());
  return names;
}

expected<architecture> preset(std::string_view name) {
  for (const auto& p : presets) {
    if (name != p.name) continue;
    auto a = parse_config_json(p.config, std::string("preset ") + p.name);
    if (!a) return std::move(a).err();
    a->name = p.name;
    a->source = p.source;
    return a;
  }
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  return fail(errc::invalid_argument, "unknown model '", name, "': not a preset (", known,
              ") and not a path to a config.json");
}

expected<architecture> resolve_model(const std::string& name_or_path) {
  if (name_or_path.find('/') == std::string::npos && name_or_path.find(".json") == std::string::npos) {
    return preset(name_or_path);
  }
  return load_config_file(name_or_path);
}

}  // namespace afd::plan
