#pragma once
// The whole Step-3 text model in plain float64 loops, written from MODEL.md alone (no engine or
// kernel code), reading its weights through checkpoint::load_f32. Slow and simple on purpose.

#include <cstdint>
#include <vector>

#include "runtime/core/model_config.hpp"
#include "runtime/model/checkpoint.hpp"

namespace afd::engine::testing {

class float64_oracle {
 public:
  /// Loads every weight of `ckpt` as double. Aborts the test (ADD_FAILURE + empty model) on error.
  explicit float64_oracle(const model::checkpoint& ckpt);

  /// Logits [T][V] of a causal forward pass over `tokens` (positions 0..T-1).
  std::vector<std::vector<double>> logits(const std::vector<std::int32_t>& tokens) const;

  bool ok() const { return ok_; }

 private:
  using vec = std::vector<double>;
  struct mlp {
    vec gate, up, down;  // [I, H], [I, H], [H, I]
    std::int64_t width = 0;
  };
  struct layer {
    vec input_norm, post_norm, inter_norm, q_proj, k_proj, v_proj, wq, o_proj;
    bool moe = false;
    vec router;                // [E, H]
    std::vector<mlp> experts;  // [E]
    mlp shared;                // shared expert, or the dense MLP
    bool has_shared = false;
  };

  vec load(const model::checkpoint& ckpt, const std::string& name);
  vec load_part(const model::checkpoint& ckpt, const std::string& name, std::int64_t first);
  vec swiglu(const mlp& m, const vec& x) const;

  model_config c_;
  bool ok_ = true;
  vec embed_, final_norm_, lm_head_;
  std::vector<layer> layers_;
};

/// ||a - b|| / ||b||.
double relative_l2(const std::vector<float>& a, const std::vector<double>& b);

}  // namespace afd::engine::testing
