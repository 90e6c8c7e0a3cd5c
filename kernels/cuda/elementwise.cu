// Row-wise and elementwise kernels: RMSNorm, RoPE, conversions, FP8 quantization, the router,
// the expert combine, row gathers and the KV append. Straightforward one-pass kernels: all of them
// are memory-bound and move each byte once.

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/launch_status.hpp"

namespace afd::kernels::cuda {

namespace {

using detail::blocks_for;
using detail::launch_result;

cudaStream_t as_stream(stream_handle s) { return static_cast<cudaStream_t>(s); }

launch_status after_launch() { return launch_result(static_cast<int>(cudaGetLastError())); }

constexpr int row_threads = 256;

/// Sum over a block of row_threads threads, result broadcast to all; fixed order for a fixed
/// row_threads (the tree does not depend on the data or the batch).
__device__ float block_sum(float v, float* scratch) {
  v = detail::warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < row_threads / 32; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

__global__ void rmsnorm_kernel(const float* x, long long n, const float* w, float eps, float* y) {
  __shared__ float scratch[row_threads / 32];
  const long long row = blockIdx.x;
  const float* xr = x + row * n;
  float* yr = y + row * n;
  float ss = 0.0f;
  for (long long i = threadIdx.x; i < n; i += row_threads) ss = fmaf(xr[i], xr[i], ss);
  const float total = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(total / static_cast<float>(n) + eps);
  for (long long i = threadIdx.x; i < n; i += row_threads) yr[i] = xr[i] * inv * w[i];
}

__global__ void rope_neox_kernel(float* x, long long heads, int head_dim, const std::int32_t* positions,
                                 double theta) {
  const long long token = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[token]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // inv_freq_i = theta^(-2i/d) in double, then f32 as the CPU backend; angle and cos/sin in f32.
    const float inv_freq = static_cast<float>(1.0 / pow(theta, static_cast<double>(2 * i) / head_dim));
    const float angle = pos * inv_freq;
    float s, c;
    sincosf(angle, &s, &c);
    for (long long h = 0; h < heads; ++h) {
      float* v = x + (token * heads + h) * head_dim;
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

__global__ void f32_to_bf16_kernel(const float* x, long long count, std::uint16_t* y) {
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < count; i += 256ll * gridDim.x)
    y[i] = detail::f32_to_bf16_bits(x[i]);
}

__global__ void bf16_to_f32_kernel(const std::uint16_t* x, long long count, float* y) {
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < count; i += 256ll * gridDim.x)
    y[i] = detail::bf16_bits_to_f32(x[i]);
}

/// One warp per (row, 128-block): lane l holds values 4l..4l+3 of the block.
__global__ void quantize_fp8_kernel(const float* x, long long m, long long n, std::uint8_t* q, float* scales) {
  const long long blocks_per_row = (n + 127) / 128;
  const long long item = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (item >= m * blocks_per_row) return;
  const long long row = item / blocks_per_row, blk = item % blocks_per_row;
  const long long base = row * n + blk * 128;
  const long long width = min(128ll, n - blk * 128);
  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const long long c = lane * 4 + j;
    v[j] = c < width ? x[base + c] : 0.0f;
    amax = fmaxf(amax, fabsf(v[j]));
  }
  amax = detail::warp_max(amax);
  // IEEE division (the default without fast-math), as the CPU backend: bitwise equal scales.
  const float scale = amax == 0.0f ? 1.0f : __fdiv_rn(amax, 448.0f);
  if (lane == 0) scales[row * blocks_per_row + blk] = scale;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const long long c = lane * 4 + j;
    if (c < width) q[base + c] = detail::f32_to_fp8(__fdiv_rn(v[j], scale));
  }
}

__global__ void dequantize_fp8_kernel(const std::uint8_t* q, const float* scales, long long m, long long n,
                                      bool to_bf16, void* out) {
  const long long blocks_per_row = (n + 127) / 128;
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < m * n; i += 256ll * gridDim.x) {
    const long long row = i / n, c = i % n;
    const float v = detail::fp8_to_f32(q[i]) * scales[row * blocks_per_row + c / 128];
    if (to_bf16)
      static_cast<std::uint16_t*>(out)[i] = detail::f32_to_bf16_bits(v);
    else
      static_cast<float*>(out)[i] = v;
  }
}

constexpr int router_warps = 4;
constexpr int router_max_experts = 1024;

/// One warp per token; probabilities kept in shared memory.
__global__ void router_topk_kernel(const float* logits, long long m, int e, int k, bool renormalise,
                                   std::int32_t* ids, float* weights) {
  __shared__ float probs[router_warps][router_max_experts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long token = static_cast<long long>(blockIdx.x) * router_warps + warp;
  if (token >= m) return;
  const float* l = logits + token * e;
  float* p = probs[warp];
  float mx = -INFINITY;
  for (int i = lane; i < e; i += 32) mx = fmaxf(mx, l[i]);
  mx = detail::warp_max(mx);
  float sum = 0.0f;
  for (int i = lane; i < e; i += 32) {
    const float z = expf(l[i] - mx);
    p[i] = z;
    sum += z;
  }
  sum = detail::warp_sum(sum);
  for (int i = lane; i < e; i += 32) p[i] = p[i] / sum;
  __syncwarp();
  float picked_sum = 0.0f;
  for (int j = 0; j < k; ++j) {
    // Lane-local best (lanes scan ascending indices, so a strict > keeps the lower index on ties).
    float best = -1.0f;
    int best_i = e;
    for (int i = lane; i < e; i += 32)
      if (p[i] > best) best = p[i], best_i = i;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (ob > best || (ob == best && oi < best_i)) best = ob, best_i = oi;
    }
    if (lane == 0) {
      ids[token * k + j] = best_i;
      weights[token * k + j] = best;
      p[best_i] = -2.0f;  // taken
    }
    picked_sum += best;
    __syncwarp();
  }
  if (renormalise && lane == 0)
    for (int j = 0; j < k; ++j) weights[token * k + j] = weights[token * k + j] / picked_sum;
}

template <bool Bf16>
__global__ void combine_sum_kernel(const void* units, long long m, int u, long long n, const float* residual,
                                   float* out) {
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < m * n; i += 256ll * gridDim.x) {
    const long long t = i / n, c = i % n;
    float acc = 0.0f;
    for (int j = 0; j < u; ++j) {
      const long long src = (t * u + j) * n + c;
      acc += Bf16 ? detail::bf16_bits_to_f32(static_cast<const std::uint16_t*>(units)[src])
                  : static_cast<const float*>(units)[src];
    }
    if (residual) acc = residual[i] + acc;
    out[i] = acc;
  }
}

__global__ void gather_rows_kernel(const void* x, int x_type, const float* x_scales, long long n,
                                   const std::int32_t* row_source, long long rows, std::uint16_t* out) {
  const long long blocks_per_row = (n + 127) / 128;
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < rows * n; i += 256ll * gridDim.x) {
    const long long r = i / n, c = i % n;
    const long long src = static_cast<long long>(row_source[r]);
    float v;
    if (x_type == static_cast<int>(dtype::f32))
      v = static_cast<const float*>(x)[src * n + c];
    else if (x_type == static_cast<int>(dtype::bf16))
      v = detail::bf16_bits_to_f32(static_cast<const std::uint16_t*>(x)[src * n + c]);
    else
      v = detail::fp8_to_f32(static_cast<const std::uint8_t*>(x)[src * n + c]) *
          x_scales[src * blocks_per_row + c / 128];
    out[i] = detail::f32_to_bf16_bits(v);
  }
}

__global__ void kv_append_kernel(int type, void* kc, void* vc, long long block_size, int head_dim,
                                 const std::int32_t* tables, long long max_blocks, const std::int32_t* seq_index,
                                 const std::int32_t* positions, const float* k, const float* v) {
  const long long token = blockIdx.x;
  const long long pos = positions[token];
  const long long block = tables[static_cast<long long>(seq_index[token]) * max_blocks + pos / block_size];
  const long long base = (block * block_size + pos % block_size) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const float kv[2] = {k[token * head_dim + d], v[token * head_dim + d]};
    void* dst[2] = {kc, vc};
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      if (type == static_cast<int>(dtype::f32))
        static_cast<float*>(dst[s])[base + d] = kv[s];
      else if (type == static_cast<int>(dtype::bf16))
        static_cast<std::uint16_t*>(dst[s])[base + d] = detail::f32_to_bf16_bits(kv[s]);
      else
        static_cast<std::uint8_t*>(dst[s])[base + d] = detail::f32_to_fp8(kv[s]);
    }
  }
}

unsigned grid_for(long long items) {
  const long long blocks = (items + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

launch_status rmsnorm(const float* x, std::int64_t m, std::int64_t n, const float* weight, float eps, float* y,
                      stream_handle stream) {
  if (m < 0 || n <= 0 || m > 0x7fffffff || (m > 0 && (!x || !weight || !y))) return launch_status::invalid_argument;
  if (m == 0) return launch_status::ok;
  rmsnorm_kernel<<<static_cast<unsigned>(m), row_threads, 0, as_stream(stream)>>>(x, n, weight, eps, y);
  return after_launch();
}

launch_status rope_neox(float* x, std::int64_t m, std::int64_t heads, std::int64_t head_dim,
                        const std::int32_t* positions, double theta, stream_handle stream) {
  if (m < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 || m > 0x7fffffff || !(theta > 0))
    return launch_status::invalid_argument;
  if (m == 0) return launch_status::ok;
  if (!x || !positions) return launch_status::invalid_argument;
  const int threads = head_dim / 2 < 128 ? 64 : 128;
  rope_neox_kernel<<<static_cast<unsigned>(m), threads, 0, as_stream(stream)>>>(x, heads, static_cast<int>(head_dim),
                                                                                 positions, theta);
  return after_launch();
}

launch_status convert_f32_to_bf16(const float* x, std::int64_t count, void* y, stream_handle stream) {
  if (count < 0 || (count > 0 && (!x || !y))) return launch_status::invalid_argument;
  if (count == 0) return launch_status::ok;
  f32_to_bf16_kernel<<<grid_for(count), 256, 0, as_stream(stream)>>>(x, count, static_cast<std::uint16_t*>(y));
  return after_launch();
}

launch_status convert_bf16_to_f32(const void* x, std::int64_t count, float* y, stream_handle stream) {
  if (count < 0 || (count > 0 && (!x || !y))) return launch_status::invalid_argument;
  if (count == 0) return launch_status::ok;
  bf16_to_f32_kernel<<<grid_for(count), 256, 0, as_stream(stream)>>>(static_cast<const std::uint16_t*>(x), count, y);
  return after_launch();
}

launch_status quantize_fp8(const float* x, std::int64_t m, std::int64_t n, std::uint8_t* q, float* scales,
                           stream_handle stream) {
  if (m < 0 || n <= 0 || (m > 0 && (!x || !q || !scales))) return launch_status::invalid_argument;
  if (m == 0) return launch_status::ok;
  const long long items = m * ((n + 127) / 128);
  const long long blocks = (items * 32 + 255) / 256;
  if (blocks > 0x7fffffff) return launch_status::unsupported;
  quantize_fp8_kernel<<<static_cast<unsigned>(blocks), 256, 0, as_stream(stream)>>>(x, m, n, q, scales);
  return after_launch();
}

launch_status dequantize_fp8(const std::uint8_t* q, const float* scales, std::int64_t m, std::int64_t n,
                             dtype out_type, void* out, stream_handle stream) {
  if (m < 0 || n <= 0 || (out_type != dtype::f32 && out_type != dtype::bf16) || (m > 0 && (!q || !scales || !out)))
    return launch_status::invalid_argument;
  if (m == 0) return launch_status::ok;
  dequantize_fp8_kernel<<<grid_for(m * n), 256, 0, as_stream(stream)>>>(q, scales, m, n, out_type == dtype::bf16,
                                                                         out);
  return after_launch();
}

launch_status router_topk(const float* logits, std::int64_t m, std::int64_t n_experts, std::int64_t k,
                          bool renormalise, std::int32_t* ids, float* weights, stream_handle stream) {
  if (m < 0 || n_experts <= 0 || k <= 0 || k > n_experts || (m > 0 && (!logits || !ids || !weights)))
    return launch_status::invalid_argument;
  if (n_experts > router_max_experts || k > 32) return launch_status::unsupported;
  if (m == 0) return launch_status::ok;
  const long long blocks = (m + router_warps - 1) / router_warps;
  if (blocks > 0x7fffffff) return launch_status::unsupported;
  router_topk_kernel<<<static_cast<unsigned>(blocks), router_warps * 32, 0, as_stream(stream)>>>(
      logits, m, static_cast<int>(n_experts), static_cast<int>(k), renormalise, ids, weights);
  return after_launch();
}

launch_status combine_sum(const void* units, dtype unit_type, std::int64_t m, std::int64_t units_per_token,
                          std::int64_t n, const float* residual, float* out, stream_handle stream) {
  if (m < 0 || n <= 0 || units_per_token < 0 || units_per_token > 0x7fffffff ||
      (unit_type != dtype::f32 && unit_type != dtype::bf16) || (m > 0 && (!out || (units_per_token > 0 && !units))))
    return launch_status::invalid_argument;
  if (m == 0) return launch_status::ok;
  const int u = static_cast<int>(units_per_token);
  if (unit_type == dtype::bf16)
    combine_sum_kernel<true><<<grid_for(m * n), 256, 0, as_stream(stream)>>>(units, m, u, n, residual, out);
  else
    combine_sum_kernel<false><<<grid_for(m * n), 256, 0, as_stream(stream)>>>(units, m, u, n, residual, out);
  return after_launch();
}

launch_status gather_rows_bf16(const void* x, dtype x_type, const float* x_scales, std::int64_t n,
                               const std::int32_t* row_source, std::int64_t rows, void* out,
                               stream_handle stream) {
  if (n <= 0 || rows < 0 || (x_type == dtype::f16) || (x_type == dtype::f8_e4m3 && !x_scales) ||
      (rows > 0 && (!x || !row_source || !out)))
    return launch_status::invalid_argument;
  if (rows == 0) return launch_status::ok;
  gather_rows_kernel<<<grid_for(rows * n), 256, 0, as_stream(stream)>>>(
      x, static_cast<int>(x_type), x_scales, n, row_source, rows, static_cast<std::uint16_t*>(out));
  return after_launch();
}

launch_status kv_append(const kv_cache_view& cache, const kv_token_slots& slots, const float* k, const float* v,
                        stream_handle stream) {
  if (cache.type == dtype::f16 || cache.block_size <= 0 || cache.head_dim <= 0 || slots.tokens < 0 ||
      slots.tokens > 0x7fffffff)
    return launch_status::invalid_argument;
  if (slots.tokens == 0) return launch_status::ok;
  if (!cache.k || !cache.v || !slots.block_tables || !slots.seq_index || !slots.positions || !k || !v)
    return launch_status::invalid_argument;
  kv_append_kernel<<<static_cast<unsigned>(slots.tokens), 128, 0, as_stream(stream)>>>(
      static_cast<int>(cache.type), cache.k, cache.v, cache.block_size, static_cast<int>(cache.head_dim),
      slots.block_tables, slots.max_blocks_per_seq, slots.seq_index, slots.positions, k, v);
  return after_launch();
}

}  // namespace afd::kernels::cuda
