#pragma once
/// A model as the planner sees it: attention type and projection shapes, KV bytes per token, FFN
/// structure, parameter counts. One description for every supported family (Step-3 MFA,
/// DeepSeek-V3 / Kimi K2 MLA, Qwen3 GQA, plain MHA), read from a config.json or a preset.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::plan {

/// How attention is built; decides KV bytes, attention FLOPs and projection parameters.
enum class attention_kind {
  mha,  ///< multi-head: kv heads == query heads
  gqa,  ///< grouped-query: several query heads share one K/V head
  mfa,  ///< Step-3 multi-matrix factorisation: low-rank query, one shared K/V head
  mla,  ///< DeepSeek multi-head latent attention: a compressed latent is cached
};

/// "mha", "gqa", "mfa" or "mla".
const char* to_string(attention_kind k) noexcept;

/// The planner's generic architecture description.
struct architecture {
  std::string name;        ///< preset name or the config file's path
  std::string model_type;  ///< config.json `model_type`
  std::string source;      ///< where the numbers come from (repository and file)

  std::int64_t hidden_size = 0;
  std::int64_t num_layers = 0;
  std::int64_t vocab_size = 0;
  bool tied_embeddings = false;

  attention_kind attention = attention_kind::mha;
  std::int64_t num_heads = 0;     ///< query heads
  std::int64_t num_kv_heads = 0;  ///< K/V heads (mha, gqa, mfa)
  std::int64_t head_dim = 0;      ///< q/k/v head width (mha, gqa, mfa)
  bool qk_norm = false;           ///< per-head RMSNorm on q and k (Qwen3)
  std::int64_t share_q_dim = 0;   ///< MFA: rank of the low-rank query
  // MLA
  std::int64_t q_lora_rank = 0;  ///< 0: q is one full-rank projection
  std::int64_t kv_lora_rank = 0;
  std::int64_t qk_nope_head_dim = 0;
  std::int64_t qk_rope_head_dim = 0;
  std::int64_t v_head_dim = 0;

  // FFN: dense layers, then MoE layers
  std::int64_t num_dense_layers = 0;
  std::int64_t dense_intermediate = 0;
  std::int64_t num_moe_layers = 0;
  std::int64_t num_experts = 0;          ///< routed experts per MoE layer
  std::int64_t top_k = 0;                ///< routed experts per token
  std::int64_t expert_intermediate = 0;  ///< one routed expert's width
  std::int64_t num_shared_experts = 0;   ///< always-on experts per MoE layer
  std::int64_t shared_intermediate = 0;  ///< one shared expert's width
  bool router_bias = false;              ///< DeepSeek's e_score_correction_bias

  // ---- derived figures (all per layer unless said otherwise) ----
  /// Parameters of all attention projection matrices of one layer (no norms).
  std::int64_t attention_projection_params() const;
  /// Norm weights of one layer: input/post norms plus attention-internal norms.
  std::int64_t layer_norm_params() const;
  /// Values cached per token per layer (K and V, or the MLA latent).
  std::int64_t kv_values_per_token() const;
  /// Attention FLOPs per context token per layer, excluding projections: 2*heads*qk_dim +
  /// 2*heads*v_dim; MLA counts both at the 576-wide latent (absorbed form): 4*heads*(rank+rope).
  std::int64_t attention_flops_per_context_token() const;
  /// One dense layer's SwiGLU parameters.
  std::int64_t dense_mlp_params() const { return 3 * hidden_size * dense_intermediate; }
  /// One routed expert's SwiGLU parameters.
  std::int64_t expert_params() const { return 3 * hidden_size * expert_intermediate; }
  /// One MoE layer's shared experts.
  std::int64_t shared_expert_params() const { return num_shared_experts * 3 * hidden_size * shared_intermediate; }
  /// One MoE layer's router (gate matrix and bias if any).
  std::int64_t router_params() const;
  /// Embedding plus LM head (one matrix when tied).
  std::int64_t embedding_params() const;
  /// All FFN parameters of the model (dense MLPs, all experts, shared experts; routers excluded).
  std::int64_t ffn_params_total() const;
  /// FFN parameters a token activates, summed over layers: dense MLPs, top-k routed, shared.
  std::int64_t ffn_params_activated() const;
  /// Every parameter of the LM (MTP / vision modules excluded).
  std::int64_t total_params() const;
  /// Parameters a token touches: all but the unchosen experts (embedding and LM head included).
  std::int64_t activated_params() const;
  /// The model's MoE sparsity (top_k + shared) / (experts + shared); 1 for a dense model.
  double sparsity() const;
  /// True when the model has MoE layers.
  bool is_moe() const { return num_moe_layers > 0 && num_experts > 0; }

  /// Checks consistency; an error names the first bad field.
  expected<void> validate() const;
};

/// Names of the built-in presets, sorted.
std::vector<std::string> preset_names();
/// A preset by name: step3, deepseek-v3, kimi-k2, qwen3-moe, qwen3-32b.
expected<architecture> preset(std::string_view name);
/// Builds the description from config.json text (deepseek_v3, kimi_k2, qwen3_moe, qwen3,
/// step3_text, step3_vl, llama/mistral-style dense). `source` names the text in errors.
expected<architecture> parse_config_json(std::string_view json, const std::string& source);
/// Reads and parses a config.json file.
expected<architecture> load_config_file(const std::string& path);
/// A preset name or a path to a config.json.
expected<architecture> resolve_model(const std::string& name_or_path);

}  // namespace afd::plan
