#pragma once
/// The CUDA backend: device management (query, streams, buffers, copies) and the kernels afd runs on
/// a GPU. Every kernel computes what the CPU backend (kernels/cpu/cpu_kernels.hpp) computes, within
/// the tolerances its tests state; the reduction orders differ, so results are close, not bitwise
/// equal, except where noted (kv_append, quantize_fp8, convert_*: bitwise).
///
/// This header compiles without the CUDA headers: streams are opaque handles and device memory is
/// passed as plain pointers. All kernel functions are asynchronous on the given stream, validate
/// their shapes at the entrance and return a launch_status (no allocation, no throw); the device
/// functions return expected<> with a message.
///
/// Batch invariance (DESIGN.md): every kernel computes a token's result by a sequence of operations
/// that depends only on that token's inputs and shapes; the attention split over the context is a
/// function of the token's context length and kv_chunk only.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"

namespace afd::kernels::cuda {

// ---------------------------------------------------------------------------------------------
// Devices, streams, buffers
// ---------------------------------------------------------------------------------------------

/// How many CUDA devices this process can use, and why none when count is 0 (no driver, no
/// device, driver too old...). Never fails and never throws.
struct device_count_result {
  int count = 0;
  std::string reason;  ///< empty when count > 0
};

/// Probes the CUDA runtime; errors (no driver, no device) become count 0 plus the reason.
device_count_result cuda_device_count() noexcept;

/// What the kernels need to know about one device.
struct device_properties {
  int ordinal = 0;
  std::string name;
  int major = 0;  ///< compute capability
  int minor = 0;
  int sm_count = 0;
  std::size_t global_memory = 0;       ///< bytes
  std::size_t shared_memory_optin = 0; ///< bytes of shared memory one block may opt into
};

/// Properties of device `ordinal`.
expected<device_properties> query_device(int ordinal);

/// Makes `ordinal` the calling thread's current device (every later call of this thread uses it).
expected<void> use_device(int ordinal);

/// Opaque cudaStream_t; nullptr is the legacy default stream.
using stream_handle = void*;

/// An owned CUDA stream on one device (RAII, move-only).
class device_stream {
 public:
  /// Creates a non-blocking stream on device `ordinal` (and makes it the thread's current device).
  static expected<device_stream> create(int ordinal);
  device_stream() = default;
  device_stream(device_stream&& other) noexcept;
  device_stream& operator=(device_stream&& other) noexcept;
  device_stream(const device_stream&) = delete;
  device_stream& operator=(const device_stream&) = delete;
  ~device_stream();

  /// The cudaStream_t, for kernel launches.
  stream_handle handle() const noexcept { return handle_; }
  /// Device the stream belongs to.
  int device() const noexcept { return device_; }
  /// Waits until all work queued on the stream is done; reports any asynchronous kernel error.
  expected<void> synchronize() const;

 private:
  stream_handle handle_ = nullptr;
  int device_ = -1;
};

/// Owned device memory (RAII, move-only), allocated on the thread's current device.
class device_buffer {
 public:
  /// Allocates `bytes` (0 gives an empty buffer). The contents are uninitialised.
  static expected<device_buffer> allocate(std::size_t bytes);
  device_buffer() = default;
  device_buffer(device_buffer&& other) noexcept;
  device_buffer& operator=(device_buffer&& other) noexcept;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer();

  /// Device address of the first byte.
  void* data() const noexcept { return data_; }
  /// The buffer as device pointer to T.
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }
  /// Size in bytes.
  std::size_t size() const noexcept { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Host to device copy queued on `stream`. Pageable host memory makes it synchronous w.r.t. the host.
expected<void> copy_to_device(void* device_dst, const void* host_src, std::size_t bytes, stream_handle stream);
/// Device to host copy queued on `stream`; synchronise the stream before reading `host_dst`.
expected<void> copy_to_host(void* host_dst, const void* device_src, std::size_t bytes, stream_handle stream);
/// Device to device copy queued on `stream`.
expected<void> copy_on_device(void* dst, const void* src, std::size_t bytes, stream_handle stream);
/// Sets `bytes` bytes of device memory to zero, queued on `stream`.
expected<void> fill_zero(void* device_dst, std::size_t bytes, stream_handle stream);

// ---------------------------------------------------------------------------------------------
// Kernel launch status (hot path: no allocation)
// ---------------------------------------------------------------------------------------------

/// Outcome of a kernel launch wrapper.
enum class launch_status : std::uint8_t {
  ok = 0,
  invalid_argument,  ///< shapes, pointers or dtypes outside the documented domain
  unsupported,       ///< valid, but this build or device cannot run it (e.g. head_dim 96)
  launch_failed,     ///< the CUDA runtime refused the launch; see last_launch_error()
};

/// Stable name of a status, e.g. "invalid_argument".
const char* to_string(launch_status s) noexcept;
/// The CUDA runtime's message of this thread's last failed launch (a static string), or "".
const char* last_launch_error() noexcept;
/// Turns a status into expected<void>, naming the operation: `check(rmsnorm(...), "rmsnorm")`.
expected<void> check(launch_status s, const char* op);

// ---------------------------------------------------------------------------------------------
// Elementwise and per-row kernels. All pointers are device pointers.
// ---------------------------------------------------------------------------------------------

/// RMSNorm over rows of width n: y = x * rsqrt(mean(x^2) + eps) * weight, in f32. y may alias x.
launch_status rmsnorm(const float* x, std::int64_t m, std::int64_t n, const float* weight, float eps,
                      float* y, stream_handle stream);

/// NeoX rotate-half RoPE in place, as cpu::rope_neox. x: [m, heads, head_dim]; positions: [m].
launch_status rope_neox(float* x, std::int64_t m, std::int64_t heads, std::int64_t head_dim,
                        const std::int32_t* positions, double theta, stream_handle stream);

/// y = bf16(x), round to nearest even (bitwise as f32_to_bf16). y: count uint16 values.
launch_status convert_f32_to_bf16(const float* x, std::int64_t count, void* y, stream_handle stream);
/// y = f32(x) (exact).
launch_status convert_bf16_to_f32(const void* x, std::int64_t count, float* y, stream_handle stream);

/// FP8 quantization as cpu::quantize_fp8: per 128 values of a row, scale = amax / 448 (1 for an
/// all-zero block), q = fp8_e4m3_satfinite(x / scale). Bitwise equal to the CPU backend.
/// q: [m, n]; scales: [m, ceil(n / 128)].
launch_status quantize_fp8(const float* x, std::int64_t m, std::int64_t n, std::uint8_t* q, float* scales,
                           stream_handle stream);
/// out = fp8_to_f32(q) * scale, stored as `out_type` (f32, or bf16 rounded to nearest even).
launch_status dequantize_fp8(const std::uint8_t* q, const float* scales, std::int64_t m, std::int64_t n,
                             dtype out_type, void* out, stream_handle stream);

/// Router as cpu::router_topk: p = softmax(logits) in f32, top-k (ties: lower index), renormalised
/// when asked. logits: [m, n_experts] (n_experts <= 1024); ids, weights: [m, k] (k <= 32).
launch_status router_topk(const float* logits, std::int64_t m, std::int64_t n_experts, std::int64_t k,
                          bool renormalise, std::int32_t* ids, float* weights, stream_handle stream);

/// Expert combine in canonical order: out[t, c] = sum over u = 0..units-1, in that order, of
/// units[t, u, c] (f32 or bf16), in f32; then `+ residual[t, c]` when residual is not null.
/// The caller lays the units of a token out in the canonical order (routed experts by ascending
/// index, then the shared/dense unit). out may alias residual.
launch_status combine_sum(const void* units, dtype unit_type, std::int64_t m, std::int64_t units_per_token,
                          std::int64_t n, const float* residual, float* out, stream_handle stream);

/// Gathers rows of activations into a bf16 matrix for the expert GEMMs:
/// out[r, :] = bf16(x[row_source[r], :]) for r < rows. x is f32, bf16, or fp8 E4M3 with
/// activation block scales [.., ceil(n / 128)] (x_scales; null otherwise).
launch_status gather_rows_bf16(const void* x, dtype x_type, const float* x_scales, std::int64_t n,
                               const std::int32_t* row_source, std::int64_t rows, void* out,
                               stream_handle stream);

// ---------------------------------------------------------------------------------------------
// Paged KV cache and MFA attention
// ---------------------------------------------------------------------------------------------

/// One layer of a paged KV cache on the device, laid out as cpu::kv_layer_view:
/// K and V each [num_blocks, block_size, head_dim] of `type` (f32, bf16 or fp8 E4M3 unscaled).
struct kv_cache_view {
  dtype type = dtype::bf16;
  void* k = nullptr;
  void* v = nullptr;
  std::int64_t num_blocks = 0;
  std::int64_t block_size = 0;
  std::int64_t head_dim = 0;
};

/// Where each of `tokens` tokens lives (device arrays): token i belongs to sequence seq_index[i],
/// whose block table is row seq_index[i] of block_tables [sequences, max_blocks_per_seq], and sits
/// at positions[i]. A decode batch has one token per sequence; a prefill chunk has many tokens per
/// sequence (causality comes from each token attending to positions 0..positions[i]).
struct kv_token_slots {
  const std::int32_t* block_tables = nullptr;
  std::int64_t max_blocks_per_seq = 0;
  const std::int32_t* seq_index = nullptr;
  const std::int32_t* positions = nullptr;
  std::int64_t tokens = 0;
};

/// Writes each token's k and v (f32 [tokens, head_dim]) at its position, rounded to the cache
/// dtype (bitwise as the CPU backend).
launch_status kv_append(const kv_cache_view& cache, const kv_token_slots& slots, const float* k, const float* v,
                        stream_handle stream);

/// Context positions one attention CTA covers by default (the split-KV granularity).
inline constexpr std::int64_t default_kv_chunk = 512;

/// Workspace bytes attention() needs for `tokens` tokens whose context (position + 1) is at most
/// max_context: partial outputs and log-sum-exps of the split-KV pass.
std::size_t attention_workspace_bytes(std::int64_t tokens, std::int64_t heads, std::int64_t head_dim,
                                      std::int64_t max_context, std::int64_t kv_chunk = default_kv_chunk);

/// MFA attention as cpu::attention, decode and (causal) prefill alike: each token attends to its
/// sequence's positions 0..positions[i]; all `heads` query heads share the single K/V head, and one
/// CTA computes up to 64 heads of a token for one chunk of kv_chunk positions, so each K/V block is
/// read once per token for all heads. Chunks are combined in a second pass (log-sum-exp).
/// q: [tokens, heads, head_dim] f32 (after RoPE; rounded to bf16 for the tensor cores);
/// out: [tokens, heads, head_dim] f32. head_dim: 64, 128 or 256. max_context >= every position + 1.
/// kv_chunk: a multiple of 32. workspace: at least attention_workspace_bytes(...).
launch_status attention(const kv_cache_view& cache, const kv_token_slots& slots, const float* q,
                        std::int64_t heads, float scale, std::int64_t max_context, float* out, void* workspace,
                        std::size_t workspace_bytes, stream_handle stream,
                        std::int64_t kv_chunk = default_kv_chunk);

// ---------------------------------------------------------------------------------------------
// GEMMs: dense, grouped over experts, SwiGLU fused
// ---------------------------------------------------------------------------------------------

/// Weights on the device, HF layout per group: [groups, rows = out features, cols = in features],
/// row stride ld elements (0 means cols). bf16, or fp8 E4M3 with f32 block scales per 128x128 block:
/// block_scales [groups, ceil(rows / 128), ceil(ld / 128)], w = fp8 * scale.
struct device_weights {
  dtype type = dtype::bf16;
  const void* data = nullptr;
  const float* block_scales = nullptr;
  std::int64_t groups = 1;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t ld = 0;
};

/// Rows of the activation matrix per group: rows group_offsets[g] .. group_offsets[g + 1] - 1 use
/// group g's weights. group_offsets: device array [groups + 1] (non-decreasing, first 0, last
/// total_rows); null means one group holding all total_rows rows.
struct row_groups {
  const std::int32_t* group_offsets = nullptr;
  std::int64_t groups = 1;
  std::int64_t total_rows = 0;
};

/// y[r, :] = x[r, :] * W_g^T (times row_scale[r] when row_scale is not null), for r in group g.
/// x: bf16 [total_rows, w.cols]; y: [total_rows, w.rows] of y_type (f32 or bf16). w.cols % 8 == 0.
/// Each output is one dot product whose summation order depends only on w.cols (batch-invariant).
launch_status grouped_gemm(const void* x, const row_groups& groups, const device_weights& w,
                           const float* row_scale, dtype y_type, void* y, stream_handle stream);

/// Fused gate/up SwiGLU: h[r, :] = bf16(silu(x W_gate^T) * (x W_up^T)), silu(z) = z / (1 + exp(-z)).
/// x: bf16 [total_rows, cols]; h: bf16 [total_rows, gate.rows]. gate and up have equal shapes/types.
launch_status grouped_swiglu(const void* x, const row_groups& groups, const device_weights& gate,
                             const device_weights& up, void* h, stream_handle stream);

/// The rows an FFN worker computes for its routed experts, ordered by owned expert (in the order
/// given) then by token: row r is token row_token[r]'s top-k slot row_slot[r], weighted by
/// row_weight[r]; group_offsets [owned + 1] delimit the experts' rows (see row_groups).
struct moe_rows {
  std::vector<std::int32_t> group_offsets;
  std::vector<std::int32_t> row_token;
  std::vector<std::int32_t> row_slot;
  std::vector<float> row_weight;
};

/// Plans moe_rows on the host from the router's ids/weights [m, k] for the experts in `owned`.
/// A row's result does not depend on the plan (batch invariance), only its place in the output.
moe_rows plan_moe_rows(std::span<const std::int32_t> ids, std::span<const float> weights, std::int64_t m,
                       std::int64_t k, std::span<const std::int32_t> owned);

}  // namespace afd::kernels::cuda
