#pragma once
/// The weights of a Step-3 text model as the layer functions read them, loaded whole or in part:
/// an attention worker loads the attention side, an FFN worker the experts it owns.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"

namespace afd::model {
class checkpoint;
}

namespace afd::engine {

/// Which parts of a checkpoint to load.
struct weight_selection {
  /// Embedding, attention projections and norms, routers, final norm and LM head.
  bool attention = true;
  /// Dense-layer MLPs and shared experts.
  bool dense_and_shared = true;
  /// Routed experts to load: experts[layer] lists expert ids of that layer (layers past the end
  /// load none). nullopt: every expert of every MoE layer.
  std::optional<std::vector<std::vector<std::int32_t>>> experts;

  /// Everything (the reference engine).
  static weight_selection all() { return {}; }
  /// What an attention worker needs.
  static weight_selection attention_side() { return {true, false, std::vector<std::vector<std::int32_t>>{}}; }
  /// What an FFN worker owning `experts` (per layer) needs, with or without dense/shared units.
  static weight_selection ffn_side(std::vector<std::vector<std::int32_t>> experts, bool dense_and_shared) {
    return {false, dense_and_shared, std::move(experts)};
  }
};

/// A SwiGLU MLP: a routed expert, the shared expert or a dense layer's MLP. Empty when not loaded.
struct swiglu_weights {
  kernels::cpu::weight_view gate;  ///< [I, H]
  kernels::cpu::weight_view up;    ///< [I, H]
  kernels::cpu::weight_view down;  ///< [H, I]
  /// True when loaded.
  bool loaded() const { return gate.data != nullptr; }
  /// The inner width I.
  std::int64_t width() const { return gate.rows; }
};

/// The attention side of one layer (router included: it runs on the attention side).
struct attention_weights {
  std::vector<float> input_norm;   ///< [H]
  std::vector<float> post_norm;    ///< [H]
  std::vector<float> inter_norm;   ///< [share_q_dim]
  kernels::cpu::weight_view q_proj;  ///< [share_q_dim, H]
  kernels::cpu::weight_view k_proj;  ///< [head_dim, H]
  kernels::cpu::weight_view v_proj;  ///< [head_dim, H]
  kernels::cpu::weight_view wq;      ///< [heads * head_dim, share_q_dim]
  kernels::cpu::weight_view o_proj;  ///< [H, heads * head_dim]
  kernels::cpu::weight_view router;  ///< [E, H]; MoE layers only
};

/// The FFN side of one layer: its units. A dense layer has one unit (`shared` holds the dense MLP).
struct ffn_weights {
  bool moe = false;
  std::vector<swiglu_weights> experts;  ///< [E]; entries not selected are empty
  swiglu_weights shared;                ///< the shared expert (MoE) or the dense MLP
};

/// Weights of a model, f32 or bf16/f16 as stored (kernels convert exactly), kept in the
/// checkpoint's memory map where the stored type allows it and converted to owned f32 otherwise
/// (FP8 with block scales). Immutable once loaded; share it between threads freely.
class model_weights {
 public:
  /// Opens the checkpoint at `dir` and loads `selection`.
  static expected<std::shared_ptr<const model_weights>> load(const std::string& dir,
                                                             const weight_selection& selection = {});
  /// Loads `selection` from an open checkpoint (kept alive by the weights).
  static expected<std::shared_ptr<const model_weights>> load(std::shared_ptr<const model::checkpoint> ckpt,
                                                             const weight_selection& selection = {});

  /// The model's hyper-parameters.
  const model_config& config() const { return config_; }
  /// True when the attention side (embedding, attention, routers, head) is loaded.
  bool has_attention() const { return has_attention_; }
  /// Layer i's attention side.
  const attention_weights& attention(std::int64_t i) const { return attention_[static_cast<std::size_t>(i)]; }
  /// Layer i's FFN side.
  const ffn_weights& ffn(std::int64_t i) const { return ffn_[static_cast<std::size_t>(i)]; }
  /// [V, H]
  const kernels::cpu::weight_view& embedding() const { return embedding_; }
  /// [H]
  const std::vector<float>& final_norm() const { return final_norm_; }
  /// [V, H]
  const kernels::cpu::weight_view& lm_head() const { return lm_head_; }

  model_weights(const model_weights&) = delete;
  model_weights& operator=(const model_weights&) = delete;
  ~model_weights();

 private:
  model_weights() = default;
  struct loader;

  model_config config_;
  std::shared_ptr<const model::checkpoint> checkpoint_;
  std::vector<std::vector<float>> owned_;  ///< converted tensors; their buffers never move
  bool has_attention_ = false;
  std::vector<attention_weights> attention_;
  std::vector<ffn_weights> ffn_;
  kernels::cpu::weight_view embedding_;
  std::vector<float> final_norm_;
  kernels::cpu::weight_view lm_head_;
};

}  // namespace afd::engine
