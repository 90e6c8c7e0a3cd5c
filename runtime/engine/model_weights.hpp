#pragma once
/// The weights of a Step-3 text model as the layer functions read them, loaded whole or in part:
/// an attention worker loads the attention side, an FFN worker the experts it owns.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/views.hpp"
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
  /// Dense-layer MLPs and shared experts of every layer; ignored when `shared_layers` is set.
  bool dense_and_shared = true;
  /// Routed experts to load: experts[layer] lists expert ids of that layer (layers past the end
  /// load none). nullopt: every expert of every MoE layer.
  std::optional<std::vector<std::vector<std::int32_t>>> experts;
  /// Per layer: shared_layers[layer] loads that layer's shared expert (MoE layer) or dense MLP
  /// (dense layer); layers past the end load none. nullopt: `dense_and_shared` for every layer.
  /// An FFN worker owns the shared/dense units of some layers only, and loads just those.
  std::optional<std::vector<bool>> shared_layers;

  /// Whether layer `layer`'s shared expert or dense MLP is selected.
  bool loads_shared(std::int64_t layer) const {
    if (!shared_layers) return dense_and_shared;
    return layer >= 0 && static_cast<std::size_t>(layer) < shared_layers->size() &&
           (*shared_layers)[static_cast<std::size_t>(layer)];
  }

  /// Everything (the reference engine).
  static weight_selection all() { return {}; }
  /// What an attention worker needs.
  static weight_selection attention_side() {
    weight_selection s;
    s.dense_and_shared = false;
    s.experts.emplace();
    return s;
  }
  /// What an FFN worker owning `experts` (per layer) needs, with or without the dense/shared
  /// units of every layer.
  static weight_selection ffn_side(std::vector<std::vector<std::int32_t>> experts, bool dense_and_shared) {
    weight_selection s;
    s.attention = false;
    s.dense_and_shared = dense_and_shared;
    s.experts = std::move(experts);
    return s;
  }
  /// What an FFN worker owning `experts` (per layer) and the dense/shared units of the layers
  /// where `shared_layers` is true needs.
  static weight_selection ffn_side(std::vector<std::vector<std::int32_t>> experts, std::vector<bool> shared_layers) {
    weight_selection s = ffn_side(std::move(experts), false);
    s.shared_layers = std::move(shared_layers);
    return s;
  }
};

/// A SwiGLU MLP: a routed expert, the shared expert or a dense layer's MLP. Empty when not loaded.
struct swiglu_weights {
  kernels::weight_view gate;  ///< [I, H]
  kernels::weight_view up;    ///< [I, H]
  kernels::weight_view down;  ///< [H, I]
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
  kernels::weight_view q_proj;  ///< [share_q_dim, H]
  kernels::weight_view k_proj;  ///< [head_dim, H]
  kernels::weight_view v_proj;  ///< [head_dim, H]
  kernels::weight_view wq;      ///< [heads * head_dim, share_q_dim]
  kernels::weight_view o_proj;  ///< [H, heads * head_dim]
  kernels::weight_view router;  ///< [E, H]; MoE layers only
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
  const kernels::weight_view& embedding() const { return embedding_; }
  /// [H]
  const std::vector<float>& final_norm() const { return final_norm_; }
  /// [V, H]
  const kernels::weight_view& lm_head() const { return lm_head_; }

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
  kernels::weight_view embedding_;
  std::vector<float> final_norm_;
  kernels::weight_view lm_head_;
};

}  // namespace afd::engine
