#pragma once
/// The kernel backend seam (after ggml's backends and FlashMLA's params structs): the engines call
/// only this interface; the CPU backend (kernels/cpu, the oracle) and the CUDA backend (kernels/cuda,
/// where built) implement it; one checking layer (checked_backend) validates every op's shapes and
/// names the op and the tensor at fault. make_backend() gives the checked backend of a device.
///
/// Memory. Activations (x, y, q, logits, ids...) are host memory in every backend: the engines'
/// buffers and the transport's. Weights and KV layers are host views (kernels/views.hpp). A backend
/// whose compute lives elsewhere (CUDA) keeps a resident copy of every weight, norm vector and KV
/// layer it is given, keyed by host address (the caller keeps them alive and the weights unchanged
/// for the backend's life), and moves each op's activations through pinned host staging buffers.
/// allocate / copy_to_backend / copy_to_host reach the backend's own memory directly.
///
/// Hot path: ops return an op_status (no throw); a non-ok status leaves a message in last_error()
/// naming the op and the tensor. require() turns a non-ok status into an op_failure exception for
/// callers that treat it as a broken invariant (the engines: shapes are validated at their entrance).
///
/// Threads: one backend object serves one thread at a time (each engine thread owns its own).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/views.hpp"
#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"

namespace afd::kernels {

/// Outcome of one op.
enum class op_status : std::uint8_t {
  ok = 0,
  invalid_argument,  ///< shapes, pointers or dtypes outside the op's domain (the checking layer)
  unsupported,       ///< valid, but this backend cannot run it (e.g. head_dim 96 on CUDA)
  failed,            ///< the device refused or failed the work (launch error, out of memory)
};

/// "ok", "invalid_argument", "unsupported", "failed".
const char* to_string(op_status s) noexcept;

// ---------------------------------------------------------------------------------------------
// Op parameters. Every pointer is host memory; [a, b] gives a row-major shape.
// ---------------------------------------------------------------------------------------------

/// out[i, :] = row ids[i] of `table` as f32 (the embedding lookup). out: [ids.size(), table.cols].
struct gather_rows_params {
  weight_view table;
  std::span<const std::int32_t> ids;
  float* out = nullptr;
};

/// y[m, n] = x * rsqrt(mean(x^2) + eps) * weight, in f32. y may alias x.
struct rmsnorm_params {
  const float* x = nullptr;
  std::int64_t m = 0;
  std::int64_t n = 0;
  std::span<const float> weight;  ///< [n]
  float eps = 1e-5f;
  float* y = nullptr;
};

/// y[m, w.rows] = x[m, k] * w^T, k == w.cols.
struct gemm_params {
  const float* x = nullptr;
  std::int64_t m = 0;
  std::int64_t k = 0;  ///< x's width
  weight_view w;
  float* y = nullptr;
};

/// NeoX rotate-half RoPE in place on x [m, heads, head_dim] at positions [m].
struct rope_params {
  float* x = nullptr;
  std::int64_t m = 0;
  std::int64_t heads = 0;
  std::int64_t head_dim = 0;
  std::span<const std::int32_t> positions;
  double theta = 10000.0;
};

/// Writes each token's k and v rows ([slots.size(), width], width == cache.head_dim) at its slot.
struct kv_append_params {
  kv_layer_view cache;
  std::span<const kv_slot> slots;
  const float* k = nullptr;
  const float* v = nullptr;
  std::int64_t width = 0;
};

/// MFA attention of slots.size() tokens over their own cache positions 0..position (causal; each
/// token's k/v already appended). q, out: [tokens, heads, head_dim], head_dim == cache.head_dim.
struct attention_params {
  kv_layer_view cache;
  std::span<const kv_slot> slots;
  const float* q = nullptr;
  std::int64_t heads = 0;
  std::int64_t head_dim = 0;
  float scale = 1.0f;
  float* out = nullptr;
};

/// Router: softmax over n_experts, top-k (ties: lower index), renormalised when asked.
/// logits: [m, n_experts]; ids, weights: [m, k] in descending probability order.
struct router_topk_params {
  const float* logits = nullptr;
  std::int64_t m = 0;
  std::int64_t n_experts = 0;
  std::int64_t k = 0;
  bool renormalise = false;
  std::int32_t* ids = nullptr;
  float* weights = nullptr;
};

/// SwiGLU MLP: y = down(silu(gate x) * up x). x, y: [m, hidden]; gate, up: [I, hidden];
/// down: [hidden, I]; scratch: at least 2 * m * I floats (backends with host compute use it).
struct swiglu_params {
  const float* x = nullptr;
  std::int64_t m = 0;
  std::int64_t hidden = 0;
  weight_view gate, up, down;
  float* y = nullptr;
  std::span<float> scratch;
};

/// FP8 quantization of x [m, n]: per 128 values of a row, scale = amax / 448 (1 for zeros).
/// q: [m, n] E4M3 codes; scales: [m, ceil(n / 128)].
struct quantize_fp8_params {
  const float* x = nullptr;
  std::int64_t m = 0;
  std::int64_t n = 0;
  std::uint8_t* q = nullptr;
  float* scales = nullptr;
};

/// x [m, n] = fp8_to_f32(q) * scale (the inverse layout of quantize_fp8_params).
struct dequantize_fp8_params {
  const std::uint8_t* q = nullptr;
  const float* scales = nullptr;
  std::int64_t m = 0;
  std::int64_t n = 0;
  float* x = nullptr;
};

/// Rounds x [m, n] in place as the A/F wire does: f32 unchanged, bf16/f16 to nearest, fp8 through
/// quantize + dequantize.
struct round_activations_params {
  dtype wire = dtype::f32;
  float* x = nullptr;
  std::int64_t m = 0;
  std::int64_t n = 0;
};

/// Picks the next token from one logits row: deterministic in (logits, sampling, token_index).
struct sample_params {
  const float* logits = nullptr;
  std::int64_t vocab = 0;
  sampling_params sampling;
  std::uint64_t token_index = 0;
  std::int32_t* token = nullptr;  ///< out
};

// ---------------------------------------------------------------------------------------------
// The interface
// ---------------------------------------------------------------------------------------------

/// A kernel backend bound to one device.
class backend {
 public:
  virtual ~backend() = default;

  /// "cpu", "cuda", or "checked(...)" around another.
  virtual std::string name() const = 0;
  /// The device it computes on: "cpu" or "cuda:N".
  virtual const std::string& device() const noexcept = 0;
  /// True when the backend's memory is host memory (allocate() returns host pointers).
  virtual bool host_memory() const noexcept = 0;

  /// `bytes` of the backend's memory (device memory for CUDA), uninitialised.
  virtual expected<void*> allocate(std::size_t bytes) = 0;
  /// Frees what allocate() returned (null: nothing).
  virtual void release(void* memory) noexcept = 0;
  /// Host -> backend memory; complete when it returns.
  virtual expected<void> copy_to_backend(void* dst, const void* host_src, std::size_t bytes) = 0;
  /// Backend memory -> host; complete when it returns.
  virtual expected<void> copy_to_host(void* host_dst, const void* src, std::size_t bytes) = 0;

  virtual op_status gather_rows(const gather_rows_params& p) = 0;
  virtual op_status rmsnorm(const rmsnorm_params& p) = 0;
  virtual op_status gemm(const gemm_params& p) = 0;
  virtual op_status rope(const rope_params& p) = 0;
  virtual op_status kv_append(const kv_append_params& p) = 0;
  virtual op_status attention(const attention_params& p) = 0;
  virtual op_status router_topk(const router_topk_params& p) = 0;
  virtual op_status swiglu(const swiglu_params& p) = 0;
  virtual op_status quantize_fp8(const quantize_fp8_params& p) = 0;
  virtual op_status dequantize_fp8(const dequantize_fp8_params& p) = 0;
  virtual op_status round_activations(const round_activations_params& p) = 0;
  virtual op_status sample(const sample_params& p) = 0;

  /// Why the last op of this backend did not return ok ("" when none failed).
  virtual std::string last_error() const = 0;
};

/// An op that failed where its caller had validated everything (a broken invariant, or a device
/// failure): the engines let it end their step loop with an engine fault.
class op_failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws op_failure naming the backend, its device and last_error() unless `s` is ok.
void require(op_status s, const backend& b);

/// The CPU backend (the oracle): every op is kernels::cpu's function, bitwise.
std::unique_ptr<backend> make_cpu_backend();

/// Wraps `inner` in the checking layer: every op's shapes, pointers and dtypes are validated before
/// `inner` runs it; a violation returns invalid_argument with a message naming the op and tensor.
std::unique_ptr<backend> make_checked_backend(std::unique_ptr<backend> inner);

/// The checked backend of `device` ("cpu" or "cuda:N"). Fails at once, with the device and the
/// reason, where the build has no CUDA, the driver or the GPU is missing or unusable.
expected<std::unique_ptr<backend>> make_backend(std::string_view device);

/// Whether make_backend(device) would succeed, without keeping anything (a worker's start check).
expected<void> probe_device(std::string_view device);

/// The devices of this process that make_backend accepts: "cpu", then "cuda:0".. where usable.
std::vector<std::string> available_devices();

}  // namespace afd::kernels
