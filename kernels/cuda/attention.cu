// MFA attention over the paged KV cache, decode and causal prefill alike.
//
// Shape of the work: Step-3's MFA has one K/V head shared by all query heads, so for a token the
// scores are S = Q K^T with Q [heads, head_dim] as the M side of a matrix product (as FlashMLA does
// for MLA). One CTA of 4 warps takes up to 64 heads of one token (each warp 16 heads) and one chunk
// of kv_chunk context positions; it streams that chunk through shared memory in tiles of 32
// positions, so every K/V byte of the chunk is read from global memory once for all heads. Scores
// and P V run on tensor cores (mma.sync m16n8k16, bf16 in, f32 accumulate); the softmax is the
// online (flash) form in f32 registers. A second pass combines the chunks of a token by their
// log-sum-exps in chunk order. The chunking depends only on the token's context length, so the
// result of a token does not depend on its batch.
//
// Not yet done (intended optimisations, in order): cp.async / TMA double buffering of K/V tiles
// (loads now overlap compute only across the 2-3 CTAs resident per SM), ldmatrix for fragments,
// wgmma on sm_90 with the 64 heads as one warpgroup's M, and a prefill path that shares a K/V tile
// among several query tokens of a sequence (prefill now reads the chunk once per query token).
//
// Verification status: compiled only; not yet run on a GPU (see README.md).

#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/launch_status.hpp"

namespace afd::kernels::cuda {

namespace {

constexpr int heads_per_cta = 64;   // 4 warps x 16 rows (one m16 tile per warp)
constexpr int tile_positions = 32;  // context positions per shared-memory tile
constexpr int attn_threads = 128;

struct attention_params {
  const void* k;
  const void* v;
  long long block_size;
  const std::int32_t* block_tables;
  long long max_blocks_per_seq;
  const std::int32_t* seq_index;
  const std::int32_t* positions;
  const float* q;
  int heads;
  float scale_log2;  // scale * log2(e): the softmax runs in base 2
  int chunk;
  int max_splits;
  float* out;
  float* part_o;    // [tokens, max_splits, heads, D]
  float* part_lse;  // [tokens, max_splits, heads], base-2 log-sum-exp of the chunk's scores
};

template <int D>
struct attention_smem {
  static constexpr int q_stride = D + 8;                // bf16 elements; +8 avoids bank conflicts
  static constexpr int k_stride = D + 8;
  static constexpr int vt_stride = tile_positions + 8;  // V stored transposed: [D][positions]
  static constexpr int q_elems = heads_per_cta * q_stride;
  static constexpr int k_elems = tile_positions * k_stride;
  static constexpr int vt_elems = D * vt_stride;
  static constexpr int bytes = (q_elems + k_elems + vt_elems) * 2;
};

/// Cache element type -> bytes of one element.
template <int KvType>
__host__ __device__ constexpr int kv_elem_bytes() {
  return KvType == static_cast<int>(dtype::f32) ? 4 : KvType == static_cast<int>(dtype::bf16) ? 2 : 1;
}

/// Converts the 16 bytes at `raw` (16 / elem_bytes cache elements) to bf16 bit patterns.
template <int KvType>
__device__ __forceinline__ void raw_to_bf16(const uint4& raw, std::uint16_t* outv) {
  if constexpr (KvType == static_cast<int>(dtype::bf16)) {
    const std::uint16_t* e = reinterpret_cast<const std::uint16_t*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) outv[j] = e[j];
  } else if constexpr (KvType == static_cast<int>(dtype::f32)) {
    // f32 caches go through bf16 on the tensor cores (documented precision loss).
    const float* e = reinterpret_cast<const float*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) outv[j] = detail::f32_to_bf16_bits(e[j]);
  } else {
    // E4M3 values are exactly representable in bf16.
    const std::uint8_t* e = reinterpret_cast<const std::uint8_t*>(&raw);
#pragma unroll
    for (int j = 0; j < 16; ++j) outv[j] = detail::f32_to_bf16_bits(detail::fp8_to_f32(e[j]));
  }
}

template <int D, int KvType>
__global__ void __launch_bounds__(attn_threads) mfa_attention_kernel(attention_params p) {
  using smem = attention_smem<D>;
  extern __shared__ __align__(16) std::uint16_t shared[];
  std::uint16_t* s_q = shared;
  std::uint16_t* s_k = s_q + smem::q_elems;
  std::uint16_t* s_vt = s_k + smem::k_elems;

  const int split = blockIdx.x;
  const long long token = blockIdx.y;
  const int head0 = blockIdx.z * heads_per_cta;
  const int ctx = p.positions[token] + 1;
  const int start = split * p.chunk;
  if (start >= ctx) return;
  const int end = min(ctx, start + p.chunk);
  const int num_splits = (ctx + p.chunk - 1) / p.chunk;
  const std::int32_t* table = p.block_tables + static_cast<long long>(p.seq_index[token]) * p.max_blocks_per_seq;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;

  // Q rows of this CTA as bf16; heads beyond p.heads are zero rows (their outputs are dropped).
  for (int i = tid; i < heads_per_cta * (D / 4); i += attn_threads) {
    const int r = i / (D / 4), c = (i % (D / 4)) * 4;
    const int h = head0 + r;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (h < p.heads) x = *reinterpret_cast<const float4*>(p.q + (token * p.heads + h) * D + c);
    std::uint32_t* dst = reinterpret_cast<std::uint32_t*>(s_q + r * smem::q_stride + c);
    dst[0] = detail::pack_bf16x2(x.x, x.y);
    dst[1] = detail::pack_bf16x2(x.z, x.w);
  }

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};  // base-2, scaled
  float row_sum[2] = {0.0f, 0.0f};            // this thread's partial sums; reduced at the end

  constexpr int eb = kv_elem_bytes<KvType>();
  constexpr int elems_per_chunk = 16 / eb;
  constexpr int chunks_per_row = D / elems_per_chunk;
  const auto* kbytes = static_cast<const std::uint8_t*>(p.k);
  const auto* vbytes = static_cast<const std::uint8_t*>(p.v);
  const std::uint16_t* q_rows = s_q + (warp * 16) * smem::q_stride;

  for (int tile = start; tile < end; tile += tile_positions) {
    __syncthreads();  // the previous tile is consumed (and, the first time, Q is stored)
    for (int i = tid; i < tile_positions * chunks_per_row; i += attn_threads) {
      const int n = i / chunks_per_row, c = i % chunks_per_row;
      const int pos = tile + n;
      std::uint16_t kv16[2][elems_per_chunk];
      if (pos < end) {
        const long long block = table[pos / p.block_size];
        const long long offset = ((block * p.block_size + pos % p.block_size) * D + c * elems_per_chunk) * eb;
        const uint4 kraw = *reinterpret_cast<const uint4*>(kbytes + offset);
        const uint4 vraw = *reinterpret_cast<const uint4*>(vbytes + offset);
        raw_to_bf16<KvType>(kraw, kv16[0]);
        raw_to_bf16<KvType>(vraw, kv16[1]);
      } else {
        // Positions past the chunk: zeros, so that masked P (0) times V stays 0, never 0 * NaN.
#pragma unroll
        for (int j = 0; j < elems_per_chunk; ++j) kv16[0][j] = kv16[1][j] = 0;
      }
      const int d0 = c * elems_per_chunk;
#pragma unroll
      for (int j = 0; j < elems_per_chunk; ++j) {
        s_k[n * smem::k_stride + d0 + j] = kv16[0][j];
        s_vt[(d0 + j) * smem::vt_stride + n] = kv16[1][j];
      }
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 heads and the tile's 32 positions (4 n8 tiles).
    float s[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll 4
    for (int kk = 0; kk < D / 16; ++kk) {
      const int col = kk * 16 + 2 * t;
      std::uint32_t a[4];
      a[0] = *reinterpret_cast<const std::uint32_t*>(q_rows + g * smem::q_stride + col);
      a[1] = *reinterpret_cast<const std::uint32_t*>(q_rows + (g + 8) * smem::q_stride + col);
      a[2] = *reinterpret_cast<const std::uint32_t*>(q_rows + g * smem::q_stride + col + 8);
      a[3] = *reinterpret_cast<const std::uint32_t*>(q_rows + (g + 8) * smem::q_stride + col + 8);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const std::uint16_t* krow = s_k + (j * 8 + g) * smem::k_stride;
        std::uint32_t b[2];
        b[0] = *reinterpret_cast<const std::uint32_t*>(krow + col);
        b[1] = *reinterpret_cast<const std::uint32_t*>(krow + col + 8);
        detail::mma_bf16_16816(s[j], a, b);
      }
    }

    // Online softmax. This thread holds rows g (s[j][0..1]) and g + 8 (s[j][2..3]) at columns
    // 8j + 2t + {0, 1}; a row's 32 columns live in the 4 lanes with the same g.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int pos = tile + j * 8 + 2 * t + (e & 1);
        const float v = pos < end ? s[j][e] * p.scale_log2 : -INFINITY;
        s[j][e] = v;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], v);
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      // The tile's first position is always < end, so tile_max is finite.
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      alpha[r] = exp2f(row_max[r] - new_max);  // exp2(-inf) = 0 on the first tile
      row_max[r] = new_max;
      row_sum[r] *= alpha[r];
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2f(s[j][e] - row_max[e / 2]);  // masked: exp2(-inf) = 0
        s[j][e] = pe;
        row_sum[e / 2] += pe;
      }
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }

    // O += P V. P's accumulator layout (two n8 tiles) is exactly the A layout of one k16 step.
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      std::uint32_t a[4];
      a[0] = detail::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
      a[1] = detail::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
      a[2] = detail::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = detail::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      const int kcol = kk * 16 + 2 * t;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const std::uint16_t* vrow = s_vt + (j * 8 + g) * smem::vt_stride;
        std::uint32_t b[2];
        b[0] = *reinterpret_cast<const std::uint32_t*>(vrow + kcol);
        b[1] = *reinterpret_cast<const std::uint32_t*>(vrow + kcol + 8);
        detail::mma_bf16_16816(o[j], a, b);
      }
    }
  }

  float inv_sum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    inv_sum[r] = 1.0f / row_sum[r];
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int h = head0 + warp * 16 + g + 8 * r;
    if (h >= p.heads) continue;
    float* dst;
    if (num_splits == 1) {
      dst = p.out + (token * p.heads + h) * D;
    } else {
      const long long slot = (token * p.max_splits + split) * p.heads + h;
      dst = p.part_o + slot * D;
      if (t == 0) p.part_lse[slot] = row_max[r] + log2f(row_sum[r]);
    }
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      float2 v = make_float2(o[j][2 * r] * inv_sum[r], o[j][2 * r + 1] * inv_sum[r]);
      *reinterpret_cast<float2*>(dst + j * 8 + 2 * t) = v;
    }
  }
}

/// Combines a token's chunks: out = sum_s w_s O_s / sum_s w_s, w_s = 2^(lse_s - max lse), in chunk
/// order. One block per (token, head), one thread per element of head_dim.
__global__ void mfa_combine_kernel(const attention_params p, int head_dim) {
  const long long token = blockIdx.x;
  const int h = blockIdx.y;
  const int ctx = p.positions[token] + 1;
  const int num_splits = (ctx + p.chunk - 1) / p.chunk;
  if (num_splits <= 1) return;  // written directly by the main kernel
  const float* lse = p.part_lse + token * p.max_splits * p.heads + h;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, lse[s * p.heads]);
  float wsum = 0.0f;
  for (int s = 0; s < num_splits; ++s) wsum += exp2f(lse[s * p.heads] - mx);
  const float inv = 1.0f / wsum;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
      const float w = exp2f(lse[s * p.heads] - mx);
      acc += w * p.part_o[((token * p.max_splits + s) * p.heads + h) * head_dim + d];
    }
    p.out[(token * p.heads + h) * head_dim + d] = acc * inv;
  }
}

template <int D, int KvType>
launch_status launch_attention(const attention_params& p, long long tokens, cudaStream_t stream) {
  const int bytes = attention_smem<D>::bytes;
  // Opting into more than 48 KiB of shared memory is per kernel; cheap, and idempotent.
  cudaError_t e = cudaFuncSetAttribute(mfa_attention_kernel<D, KvType>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       bytes);
  if (e != cudaSuccess) return detail::launch_result(static_cast<int>(e));
  const dim3 grid(static_cast<unsigned>(p.max_splits), static_cast<unsigned>(tokens),
                  static_cast<unsigned>((p.heads + heads_per_cta - 1) / heads_per_cta));
  mfa_attention_kernel<D, KvType><<<grid, attn_threads, bytes, stream>>>(p);
  e = cudaGetLastError();
  if (e != cudaSuccess) return detail::launch_result(static_cast<int>(e));
  if (p.max_splits > 1) {
    mfa_combine_kernel<<<dim3(static_cast<unsigned>(tokens), static_cast<unsigned>(p.heads)), D < 128 ? D : 128, 0,
                         stream>>>(p, D);
    e = cudaGetLastError();
  }
  return detail::launch_result(static_cast<int>(e));
}

template <int D>
launch_status dispatch_kv(dtype kv, const attention_params& p, long long tokens, cudaStream_t stream) {
  switch (kv) {
    case dtype::bf16: return launch_attention<D, static_cast<int>(dtype::bf16)>(p, tokens, stream);
    case dtype::f8_e4m3: return launch_attention<D, static_cast<int>(dtype::f8_e4m3)>(p, tokens, stream);
    case dtype::f32: return launch_attention<D, static_cast<int>(dtype::f32)>(p, tokens, stream);
    default: return launch_status::unsupported;
  }
}

long long splits_for(long long max_context, long long chunk) { return (max_context + chunk - 1) / chunk; }

}  // namespace

std::size_t attention_workspace_bytes(std::int64_t tokens, std::int64_t heads, std::int64_t head_dim,
                                      std::int64_t max_context, std::int64_t kv_chunk) {
  if (tokens <= 0 || heads <= 0 || head_dim <= 0 || max_context <= 0 || kv_chunk <= 0) return 0;
  const long long splits = splits_for(max_context, kv_chunk);
  if (splits <= 1) return 0;
  const long long slots = tokens * splits * heads;
  // Partial outputs, then the log-sum-exps (kept 16-byte aligned).
  return static_cast<std::size_t>(slots * head_dim * 4 + ((slots * 4 + 15) / 16) * 16);
}

launch_status attention(const kv_cache_view& cache, const kv_token_slots& slots, const float* q, std::int64_t heads,
                        float scale, std::int64_t max_context, float* out, void* workspace,
                        std::size_t workspace_bytes, stream_handle stream, std::int64_t kv_chunk) {
  if (slots.tokens < 0 || heads <= 0 || max_context <= 0 || kv_chunk <= 0 || kv_chunk % tile_positions != 0 ||
      cache.block_size <= 0 || cache.type == dtype::f16)
    return launch_status::invalid_argument;
  if (slots.tokens == 0) return launch_status::ok;
  if (!cache.k || !cache.v || !slots.block_tables || !slots.seq_index || !slots.positions || !q || !out)
    return launch_status::invalid_argument;
  const long long splits = splits_for(max_context, kv_chunk);
  if (slots.tokens > 65535 || splits > 0x7fffffff || heads > 65535 || max_context > 0x7fffffff)
    return launch_status::unsupported;
  const std::size_t need = attention_workspace_bytes(slots.tokens, heads, cache.head_dim, max_context, kv_chunk);
  if (workspace_bytes < need || (need > 0 && !workspace)) return launch_status::invalid_argument;

  attention_params p{};
  p.k = cache.k;
  p.v = cache.v;
  p.block_size = cache.block_size;
  p.block_tables = slots.block_tables;
  p.max_blocks_per_seq = slots.max_blocks_per_seq;
  p.seq_index = slots.seq_index;
  p.positions = slots.positions;
  p.q = q;
  p.heads = static_cast<int>(heads);
  p.scale_log2 = scale * 1.4426950408889634f;
  p.chunk = static_cast<int>(kv_chunk);
  p.max_splits = static_cast<int>(splits);
  p.out = out;
  if (need > 0) {
    p.part_o = static_cast<float*>(workspace);
    p.part_lse = p.part_o + slots.tokens * splits * heads * cache.head_dim;
  }
  const auto s = static_cast<cudaStream_t>(stream);
  switch (cache.head_dim) {
    case 64: return dispatch_kv<64>(cache.type, p, slots.tokens, s);
    case 128: return dispatch_kv<128>(cache.type, p, slots.tokens, s);
    case 256: return dispatch_kv<256>(cache.type, p, slots.tokens, s);
    default: return launch_status::unsupported;
  }
}

}  // namespace afd::kernels::cuda
