#pragma once
/// The CPU backend: every kernel afd runs, in plain C++. It is the test oracle for the CUDA kernels
/// and the compute of the reference engine and of CPU workers.
///
/// Batch invariance (DESIGN.md): every output element is computed by a fixed sequence of f32
/// operations that depends only on that token's inputs and the weights, never on how many tokens
/// share the call, their order, or the thread count. Threads split independent outputs only.
///
/// Shapes are validated by the callers (the checking layer of kernels/backend.hpp); these functions
/// trust their arguments. The engines reach them through the backend interface (cpu_backend).

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/views.hpp"
#include "runtime/core/dtype.hpp"

namespace afd::kernels::cpu {

using kernels::weight_view;
using kernels::kv_layer_view;
using kernels::kv_slot;
using kernels::sampling_params;
using kernels::fp8_activation_block;

/// Sets the number of threads kernels may use (default: hardware concurrency). Results do not
/// depend on it.
void set_num_threads(int n);
int num_threads();

/// y[m, w.rows] = x[m, w.cols] * w^T. Each y[i, j] is one dot product whose summation order
/// depends only on w.cols.
void gemm(const float* x, std::int64_t m, const weight_view& w, float* y);

/// out[i, :] = row ids[i] of `table` converted to f32 (the embedding lookup).
void gather_rows(const weight_view& table, std::span<const std::int32_t> ids, float* out);

/// RMSNorm over rows of width n: y = x * rsqrt(mean(x^2) + eps) * weight, in f32. y may alias x.
void rmsnorm(const float* x, std::int64_t m, std::int64_t n, const float* weight, float eps, float* y);

/// NeoX rotate-half RoPE in place on `heads` vectors of width head_dim per token:
/// pairs (i, i + d/2), inv_freq_i = theta^(-2i/d), angle = position * inv_freq_i; cos/sin in f32.
/// x: [m, heads, head_dim]; positions: [m].
void rope_neox(float* x, std::int64_t m, std::int64_t heads, std::int64_t head_dim,
               const std::int32_t* positions, double theta);

/// Writes each token's k and v (f32 [m, head_dim]) at its position, rounded to the cache dtype.
void kv_append(const kv_layer_view& cache, std::span<const kv_slot> slots, const float* k, const float* v);

/// MFA attention for m query tokens, each over its own sequence's cache positions 0..position
/// (causal; the token's own k/v must already be appended). All `heads` query heads share the single
/// K/V head. q: [m, heads, head_dim] (after RoPE); out: [m, heads, head_dim]; scale = head_dim^-0.5.
/// Scores and softmax in f32 with max subtraction; the reduction order over positions is fixed
/// (depends only on the position), so prefill and decode of the same token agree bitwise.
void attention(const kv_layer_view& cache, std::span<const kv_slot> slots, const float* q,
               std::int64_t heads, float scale, float* out);

/// Router: per token, p = softmax(logits) over n_experts in f32, then the top-k (ties: lower index
/// first), weights renormalised to sum 1 when `renormalise`. ids/weights: [m, k], in descending
/// probability order.
void router_topk(const float* logits, std::int64_t m, std::int64_t n_experts, std::int64_t k,
                 bool renormalise, std::int32_t* ids, float* weights);

/// SwiGLU MLP: y = down(silu(gate x) * up x), silu(z) = z / (1 + exp(-z)). x: [m, H]; gate, up:
/// [I, H]; down: [H, I]; y: [m, H]. `scratch` holds at least 2 * m * I floats.
void swiglu(const float* x, std::int64_t m, const weight_view& gate, const weight_view& up,
            const weight_view& down, float* y, float* scratch);

/// FP8 quantization of rows of width n: per block of 128 values, scale = amax / 448 (1 when the
/// block is all zeros), q = fp8(x / scale). q: [m, n]; scales: [m, ceil(n / 128)].
void quantize_fp8(const float* x, std::int64_t m, std::int64_t n, std::uint8_t* q, float* scales);
/// x = fp8_to_f32(q) * scale.
void dequantize_fp8(const std::uint8_t* q, const float* scales, std::int64_t m, std::int64_t n, float* x);

/// Rounds activations in place as the wire at the A/F boundary does: f32 unchanged, bf16/f16 to
/// nearest, fp8 through quantize_fp8 + dequantize_fp8.
void round_activations(dtype wire, float* x, std::int64_t m, std::int64_t n);

/// Picks the next token from one logits row of width vocab. Deterministic in (logits, params,
/// token_index): the random draw is a counter-based hash of (seed, token_index), so a request gives
/// the same tokens alone or batched, on any worker.
std::int32_t sample(const float* logits, std::int64_t vocab, const sampling_params& params,
                    std::uint64_t token_index);

}  // namespace afd::kernels::cpu
