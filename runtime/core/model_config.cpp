#include "runtime/core/model_config.hpp"

namespace afd {

std::int64_t model_config::num_moe_layers() const {
  std::int64_t n = 0;
  for (bool m : moe_layers) n += m ? 1 : 0;
  return n;
}

model_size compute_model_size(const model_config& c) {
  model_size s;
  const std::int64_t h = c.hidden_size;
  s.attention_params_per_layer = c.share_q_dim * h               // q_proj
                                 + 2 * c.head_dim * h            // k_proj, v_proj
                                 + c.share_q_dim                 // inter_norm
                                 + c.q_width() * c.share_q_dim   // wq
                                 + h * c.q_width()               // o_proj
                                 + 2 * h;                        // input + post-attention norms
  s.dense_mlp_params = 3 * c.intermediate_size * h;
  s.expert_params = 3 * c.moe_intermediate_size * h;
  s.shared_expert_params = 3 * c.share_expert_dim * h;
  s.router_params = c.moe_num_experts * h;
  const std::int64_t moe = c.num_moe_layers();
  const std::int64_t dense = c.num_hidden_layers - moe;
  const std::int64_t embed = c.vocab_size * h;
  const std::int64_t common = c.num_hidden_layers * s.attention_params_per_layer +
                              dense * s.dense_mlp_params +
                              moe * (s.router_params + s.shared_expert_params) + 2 * embed + h;
  s.total_params = common + moe * c.moe_num_experts * s.expert_params;
  s.activated_params = common + moe * c.moe_top_k * s.expert_params;
  s.kv_bytes_per_token_fp8 = c.num_hidden_layers * c.num_attention_groups * 2 * c.head_dim;
  return s;
}

std::string validate(const model_config& c) {
  auto positive = [](std::int64_t v) { return v > 0; };
  if (!positive(c.hidden_size)) return "hidden_size must be positive";
  if (!positive(c.num_hidden_layers)) return "num_hidden_layers must be positive";
  if (!positive(c.num_attention_heads)) return "num_attention_heads must be positive";
  if (c.num_attention_groups != 1)
    return "num_attention_groups must be 1 (MFA shares one K/V head), got " +
           std::to_string(c.num_attention_groups);
  if (!positive(c.head_dim) || c.head_dim % 2 != 0) return "head_dim must be positive and even";
  if (!positive(c.share_q_dim)) return "share_q_dim must be positive";
  if (!positive(c.vocab_size)) return "vocab_size must be positive";
  if (static_cast<std::int64_t>(c.moe_layers.size()) != c.num_hidden_layers)
    return "moe_layers_enum does not match num_hidden_layers";
  const std::int64_t moe = c.num_moe_layers();
  if (moe < c.num_hidden_layers && !positive(c.intermediate_size))
    return "intermediate_size must be positive (the model has dense layers)";
  if (moe > 0) {
    if (!positive(c.moe_num_experts)) return "moe_num_experts must be positive";
    if (!positive(c.moe_top_k) || c.moe_top_k > c.moe_num_experts)
      return "moe_top_k must be in [1, moe_num_experts]";
    if (!positive(c.moe_intermediate_size)) return "moe_intermediate_size must be positive";
    if (c.share_expert_dim < 0) return "share_expert_dim must not be negative";
  }
  if (!(c.rms_norm_eps > 0.0)) return "rms_norm_eps must be positive";
  if (!(c.rope_theta > 0.0)) return "rope_theta must be positive";
  if (!positive(c.max_position_embedding)) return "max_position_embedding must be positive";
  return {};
}

}  // namespace afd
