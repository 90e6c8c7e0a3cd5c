#pragma once
/// The Step-3 text model's hyper-parameters (MODEL.md) and the sizes derived from them.
/// Parsing config.json lives in runtime/model; this header is plain data.

#include <cstdint>
#include <string>
#include <vector>

namespace afd {

/// Hyper-parameters of a Step-3 text model, as read from config.json.
struct model_config {
  std::int64_t hidden_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_attention_groups = 1;  ///< KV heads; MFA has exactly one
  std::int64_t head_dim = 0;
  std::int64_t share_q_dim = 0;
  std::int64_t intermediate_size = 0;      ///< dense-layer SwiGLU width
  std::int64_t moe_num_experts = 0;
  std::int64_t moe_top_k = 0;
  std::int64_t moe_intermediate_size = 0;  ///< per routed expert
  std::int64_t share_expert_dim = 0;       ///< shared expert width
  std::vector<bool> moe_layers;            ///< moe_layers[i]: layer i is MoE; size num_hidden_layers
  bool norm_expert_weight = false;
  double rms_norm_eps = 1e-5;
  double rope_theta = 500000.0;
  std::int64_t max_position_embedding = 65536;
  std::int64_t vocab_size = 0;

  /// True when layer `i` is an MoE layer.
  bool is_moe_layer(std::int64_t i) const { return moe_layers.at(static_cast<std::size_t>(i)); }
  /// Number of MoE layers.
  std::int64_t num_moe_layers() const;
  /// heads * head_dim.
  std::int64_t q_width() const { return num_attention_heads * head_dim; }
};

/// Parameter and byte counts of a model, for `make-model --dry-run` and the planner.
struct model_size {
  std::int64_t attention_params_per_layer = 0;  ///< projections + norms of one layer
  std::int64_t dense_mlp_params = 0;            ///< one dense layer's SwiGLU
  std::int64_t expert_params = 0;               ///< one routed expert
  std::int64_t shared_expert_params = 0;        ///< one shared expert
  std::int64_t router_params = 0;               ///< one MoE layer's gate
  std::int64_t total_params = 0;                ///< everything in the LM
  std::int64_t activated_params = 0;            ///< per token: all but unchosen experts
  std::int64_t kv_bytes_per_token_fp8 = 0;      ///< K and V, all layers, one byte each
};

/// Counts parameters and KV bytes of `c` (embedding and LM head included in totals).
model_size compute_model_size(const model_config& c);

/// Checks the fields for consistency; returns a message naming the first bad field, or "".
std::string validate(const model_config& c);

}  // namespace afd
