#pragma once
/// The per-layer math of the Step-3 text model, split where Attention-FFN Disaggregation splits it:
/// the attention side (embedding, attention_block, final_logits) and the FFN side (ffn_unit), joined
/// by the dispatch rounding of x_f and the canonical-order combine of unit outputs. The reference
/// engine runs both sides in one process; the cluster's workers call the same functions on their
/// own parts, which is why both produce bitwise the same tokens.
///
/// Rounding points (runtime/core/numerics.hpp), per layer and token:
///   h    = x + o_proj(MFA(RMSNorm_in(x)))           KV stored in numerics.kv
///   n    = RMSNorm_post(h)                           f32; the router reads n unrounded
///   x_f  = round_activations(numerics.dispatch, n)   what crosses A -> F
///   u_e  = round_to(numerics.combine, w_e * SwiGLU_e(x_f))    each chosen routed expert e
///   u_s  = round_to(numerics.combine, SwiGLU_s(x_f))          shared expert, or the dense MLP
///   deterministic: out = h + (((0 + u_e1) + u_e2) ... + u_s), experts by ascending index
///   throughput:    the units unrounded, summed in the same order, the sum rounded once to
///                  numerics.combine, then out = h + sum
/// Every function is batch-invariant: a token's rows depend only on that token (and its own KV).
/// Every kernel runs on the backend `be` (kernels/backend.hpp); the host code here only adds,
/// scales and rounds rows. An op the backend refuses throws kernels::op_failure (the callers
/// validated the shapes, so it is a broken invariant or a device failure).

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kernels/backend.hpp"
#include "runtime/core/numerics.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/placement.hpp"

namespace afd::engine {

/// Scratch buffers of attention_block, grown on demand and reused across layers and steps.
struct attention_workspace {
  std::vector<float> normed, q_lr, q, k, v, attn, router_logits;
};

/// Tokens routed to one expert, ascending token index, with their router weights.
struct expert_tokens {
  std::int32_t expert = 0;
  std::vector<std::int32_t> tokens;
  std::vector<float> weights;
};

/// group_by_expert's output, kept by its caller across calls: groups[0, count) are the last
/// call's groups. Entries past `count` and every vector keep their storage (cleared, never
/// freed), so a caller that reuses one allocates only when a call needs more than any before.
struct expert_groups {
  std::vector<expert_tokens> groups;
  std::size_t count = 0;
  std::vector<std::pair<std::int32_t, std::int64_t>> order;  ///< scratch: (expert, flat index)
  /// The last call's groups, ascending expert index.
  std::span<const expert_tokens> view() const { return {groups.data(), count}; }
};

/// Scratch buffers of the FFN functions, grown on demand and reused across layers and steps.
struct ffn_workspace {
  std::vector<float> gathered, unit_out, weights, scratch, units;
  expert_groups groups;                    ///< group_by_expert's output
  std::vector<const float*> unit_of, ordered;  ///< ffn_block: unit rows by (token, expert); one token's units
  std::vector<std::int32_t> experts;       ///< ffn_block: one token's experts in canonical order
};

/// x[m, H] = embedding rows of `ids`.
void embed(kernels::backend& be, const model_weights& w, std::span<const std::int32_t> ids, float* x);

/// The attention half of layer `layer` for m = slots.size() tokens. `x` [m, H] holds the layer's
/// input and becomes h (after the attention residual). Writes x_f [m, H] (dispatch-rounded FFN
/// input) and, in MoE layers, topk_ids / topk_weights [m, moe_top_k] in router rank order
/// (untouched in dense layers). Appends each token's K and V to `cache` at its slot before
/// attending, so tokens of one sequence may share the call (a prefill chunk).
/// positions[i] == slots[i].position.
void attention_block(kernels::backend& be, const model_weights& w, std::int64_t layer, const numerics& num,
                     const kernels::kv_layer_view& cache, std::span<const kernels::kv_slot> slots,
                     std::span<const std::int32_t> positions, float* x, float* x_f, std::int32_t* topk_ids,
                     float* topk_weights, attention_workspace& ws);

/// Groups m tokens' top-k choices ([m, k] ids and weights) by expert, ascending expert index,
/// into `out` (reused: see expert_groups). The FFN side calls this every layer.
void group_by_expert(const std::int32_t* topk_ids, const float* topk_weights, std::int64_t m, std::int64_t k,
                     expert_groups& out);
/// The same groups in a new vector (allocates; for callers off the hot path).
std::vector<expert_tokens> group_by_expert(const std::int32_t* topk_ids, const float* topk_weights,
                                           std::int64_t m, std::int64_t k);

/// One FFN unit of layer `layer` for m tokens x_f [m, H], into y [m, H]:
///   routed expert e (unit >= 0): y[i] = round_to(out, token_weights[i] * SwiGLU_e(x_f[i]))
///   shared_unit: y[i] = round_to(out, SwiGLU_s(x_f[i])) (token_weights unused, may be null)
/// `out` is numerics.combine for units returned one by one (deterministic) and f32 for units
/// pre-summed by their owner (throughput). The unit must be loaded.
void ffn_unit(kernels::backend& be, const model_weights& w, std::int64_t layer, std::int32_t unit, const float* x_f, std::int64_t m,
              const float* token_weights, dtype out, float* y, ffn_workspace& ws);

/// Canonical order of one token's units: its routed experts sorted ascending (router rank order
/// in, ascending out), the shared/dense unit implied last.
void canonical_expert_order(std::span<std::int32_t> experts);

/// out[j] = h[j] + round_to(sum_rounding, ((0 + units[0][j]) + units[1][j]) + ...) for one token
/// of width `width`; `units` in canonical order. out may alias h.
void combine_units(std::span<const float* const> units, std::int64_t width, dtype sum_rounding, const float* h,
                   float* out);

/// The FFN half of layer `layer` computed by one owner of every unit (the reference engine, or a
/// single FFN worker): units per `num`, combined in canonical order. `x` [m, H] holds h and
/// becomes the layer output. topk_* as written by attention_block (ignored in dense layers).
void ffn_block(kernels::backend& be, const model_weights& w, std::int64_t layer, const numerics& num, const float* x_f, std::int64_t m,
               const std::int32_t* topk_ids, const float* topk_weights, float* x, ffn_workspace& ws);

/// logits[r, V] = lm_head(RMSNorm_final(x[r])) for `rows` rows of x [rows, H] (x unchanged).
void final_logits(kernels::backend& be, const model_weights& w, const float* x, std::int64_t rows, float* logits,
                  std::vector<float>& scratch);

}  // namespace afd::engine
