// Grouped GEMM over experts (and the dense GEMM as one group), bf16 or block-scaled fp8 weights,
// with a fused SwiGLU epilogue for the gate/up pair.
//
// Tiling: a CTA computes a 64 x 64 tile of one group's output (both the gate and the up tile when
// fused), 4 warps of 32 x 32, k in steps of 32 through a 2-stage cp.async pipeline; tensor cores
// via mma.sync m16n8k16 (bf16 in, f32 accumulate). FP8 weights are converted to bf16 times their
// 128x128 block scale on the way into shared memory (w = fp8 * scale rounded to bf16: a relative
// error of at most 2^-9 per weight, within the fp8 tolerance).
// Every output element is one dot product over k in a fixed order, whatever tile or group its row
// falls in: batch-invariant.
//
// Not yet done (intended optimisations): wgmma + TMA on sm_90 with 128 x 256 tiles and a deeper
// pipeline (this mma.sync kernel is expected well below cuBLAS on H100), ldmatrix fragment loads,
// FP8 tensor-core math (wgmma e4m3) with per-block scale folding instead of the bf16 conversion,
// and a persistent tile scheduler over groups.
//
// Verification status: compiled only; not yet run on a GPU (see README.md).

#include <cuda_runtime.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/launch_status.hpp"

namespace afd::kernels::cuda {

namespace {

constexpr int bm = 64, bn = 64, bk = 32;
constexpr int gemm_threads = 128;
constexpr int s_stride = bk + 8;  // bf16 elements per shared row: conflict-free fragment loads

struct gemm_params {
  const std::uint16_t* x;  // bf16 [total_rows, k]
  const std::int32_t* offsets;
  int groups;
  long long total_rows;
  const void* w0;  // gate (or the only matrix)
  const void* w1;  // up (SwiGLU only)
  const float* s0;
  const float* s1;
  long long n, k, ldw;
  long long scale_rows, scale_cols;  // block-scale grid per group
  const float* row_scale;
  void* y;
  bool y_bf16;
};

/// Finds the (group, first row, end row) of m-tile slot `t`; false when the slot is past the last tile.
__device__ bool find_tile(const gemm_params& p, int t, int& group, long long& row0, long long& row_end) {
  if (!p.offsets) {
    group = 0;
    row0 = static_cast<long long>(t) * bm;
    row_end = p.total_rows;
    return row0 < row_end;
  }
  for (int gi = 0; gi < p.groups; ++gi) {
    const long long lo = p.offsets[gi], hi = p.offsets[gi + 1];
    const int tiles = static_cast<int>((hi - lo + bm - 1) / bm);
    if (t < tiles) {
      group = gi;
      row0 = lo + static_cast<long long>(t) * bm;
      row_end = hi;
      return true;
    }
    t -= tiles;
  }
  return false;
}

template <bool Fp8>
struct b_loader {
  // bf16: 64 rows x 32 k = 4 chunks of 16 B per row, 2 per thread; cp.async straight to shared.
  // fp8: 64 rows x 32 k = 2 chunks of 16 B per row, 1 per thread; through registers (converted).
  uint4 raw;
  float scale;
  int row, c;
  bool valid;

  __device__ void issue(const gemm_params& p, const void* w, const float* scales, int group, long long n0,
                        long long k0, std::uint16_t* s_b, int tid) {
    if constexpr (!Fp8) {
      const auto* wb = static_cast<const std::uint16_t*>(w) + static_cast<long long>(group) * p.n * p.ldw;
#pragma unroll
      for (int it = 0; it < 2; ++it) {
        const int i = tid + it * gemm_threads;
        const int r = i / 4, cc = i % 4;
        const long long n = n0 + r, kk = k0 + cc * 8;
        const bool ok = n < p.n && kk < p.k;  // k % 8 == 0, so a chunk is all in or all out
        const std::uint16_t* src = ok ? wb + n * p.ldw + kk : wb;
        detail::cp_async_16(s_b + r * s_stride + cc * 8, src, ok ? 16 : 0);
      }
    } else {
      row = tid / 2;
      c = tid % 2;
      const long long n = n0 + row, kk = k0 + c * 16;
      valid = n < p.n && kk < p.k;
      if (valid) {
        const auto* wb = static_cast<const std::uint8_t*>(w) + static_cast<long long>(group) * p.n * p.ldw;
        raw = *reinterpret_cast<const uint4*>(wb + n * p.ldw + kk);
        scale = scales[(static_cast<long long>(group) * p.scale_rows + n / 128) * p.scale_cols + kk / 128];
      }
      (void)s_b;
    }
  }

  /// fp8 only: converts the registers loaded by issue() into the shared tile.
  __device__ void store(const gemm_params& p, long long k0, std::uint16_t* s_b) {
    if constexpr (Fp8) {
      const std::uint8_t* e = reinterpret_cast<const std::uint8_t*>(&raw);
      std::uint32_t packed[8];
      // A chunk may straddle the end of k only if k % 16 == 8: zero its upper half then.
      const long long kk = k0 + c * 16;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float a = 0.0f, b = 0.0f;
        if (valid) {
          a = kk + 2 * j < p.k ? detail::fp8_to_f32(e[2 * j]) * scale : 0.0f;
          b = kk + 2 * j + 1 < p.k ? detail::fp8_to_f32(e[2 * j + 1]) * scale : 0.0f;
        }
        packed[j] = detail::pack_bf16x2(a, b);
      }
      uint4* dst = reinterpret_cast<uint4*>(s_b + row * s_stride + c * 16);
      dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    } else {
      (void)p; (void)k0; (void)s_b;
    }
  }
};

template <bool SwiGLU, bool Fp8>
__global__ void __launch_bounds__(gemm_threads) grouped_gemm_kernel(gemm_params p) {
  constexpr int mats = SwiGLU ? 2 : 1;
  __shared__ __align__(16) std::uint16_t s_a[2][bm * s_stride];
  __shared__ __align__(16) std::uint16_t s_b[2][mats][bn * s_stride];

  int group;
  long long row0, row_end;
  if (!find_tile(p, blockIdx.y, group, row0, row_end)) return;
  const long long n0 = static_cast<long long>(blockIdx.x) * bn;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int wm = warp / 2, wn = warp % 2;  // warp tile: rows wm*32.., cols wn*32..

  const void* w[2] = {p.w0, p.w1};
  const float* sc[2] = {p.s0, p.s1};
  b_loader<Fp8> loader[mats];

  auto issue_a = [&](int stage, long long k0) {
#pragma unroll
    for (int it = 0; it < 2; ++it) {
      const int i = tid + it * gemm_threads;
      const int r = i / 4, cc = i % 4;
      const long long row = row0 + r, kk = k0 + cc * 8;
      const bool ok = row < row_end && kk < p.k;
      const std::uint16_t* src = ok ? p.x + row * p.k + kk : p.x;
      detail::cp_async_16(&s_a[stage][r * s_stride + cc * 8], src, ok ? 16 : 0);
    }
  };

  float acc[mats][2][4][4];
#pragma unroll
  for (int m = 0; m < mats; ++m)
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[m][i][j][0] = acc[m][i][j][1] = acc[m][i][j][2] = acc[m][i][j][3] = 0.0f;

  const int k_tiles = static_cast<int>((p.k + bk - 1) / bk);
  // Prologue: stage 0.
  issue_a(0, 0);
#pragma unroll
  for (int m = 0; m < mats; ++m) {
    loader[m].issue(p, w[m], sc[m], group, n0, 0, s_b[0][m], tid);
    loader[m].store(p, 0, s_b[0][m]);
  }
  detail::cp_async_commit();

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int stage = kt & 1;
    const bool has_next = kt + 1 < k_tiles;
    if (has_next) {
      // The other stage was last read in iteration kt - 1, which ended with __syncthreads().
      issue_a(stage ^ 1, static_cast<long long>(kt + 1) * bk);
#pragma unroll
      for (int m = 0; m < mats; ++m)
        loader[m].issue(p, w[m], sc[m], group, n0, static_cast<long long>(kt + 1) * bk, s_b[stage ^ 1][m], tid);
      detail::cp_async_commit();
      detail::cp_async_wait<1>();
    } else {
      detail::cp_async_wait<0>();
    }
    __syncthreads();

#pragma unroll
    for (int ks = 0; ks < bk / 16; ++ks) {
      const int col = ks * 16 + 2 * t;
      std::uint32_t a[2][4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const std::uint16_t* base = &s_a[stage][(wm * 32 + i * 16) * s_stride];
        a[i][0] = *reinterpret_cast<const std::uint32_t*>(base + g * s_stride + col);
        a[i][1] = *reinterpret_cast<const std::uint32_t*>(base + (g + 8) * s_stride + col);
        a[i][2] = *reinterpret_cast<const std::uint32_t*>(base + g * s_stride + col + 8);
        a[i][3] = *reinterpret_cast<const std::uint32_t*>(base + (g + 8) * s_stride + col + 8);
      }
#pragma unroll
      for (int m = 0; m < mats; ++m)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const std::uint16_t* brow = &s_b[stage][m][(wn * 32 + j * 8 + g) * s_stride];
          std::uint32_t b[2];
          b[0] = *reinterpret_cast<const std::uint32_t*>(brow + col);
          b[1] = *reinterpret_cast<const std::uint32_t*>(brow + col + 8);
#pragma unroll
          for (int i = 0; i < 2; ++i) detail::mma_bf16_16816(acc[m][i][j], a[i], b);
        }
    }
    if constexpr (Fp8) {
      if (has_next) {
#pragma unroll
        for (int m = 0; m < mats; ++m) loader[m].store(p, static_cast<long long>(kt + 1) * bk, s_b[stage ^ 1][m]);
      }
    }
    __syncthreads();
  }

  // Epilogue.
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const long long row = row0 + wm * 32 + i * 16 + g + (e >= 2 ? 8 : 0);
        const long long col = n0 + wn * 32 + j * 8 + 2 * t + (e & 1);
        if (row >= row_end || col >= p.n) continue;
        float v = acc[0][i][j][e];
        if constexpr (SwiGLU) v = v / (1.0f + expf(-v)) * acc[mats - 1][i][j][e];
        if (p.row_scale) v *= p.row_scale[row];
        if (p.y_bf16)
          static_cast<std::uint16_t*>(p.y)[row * p.n + col] = detail::f32_to_bf16_bits(v);
        else
          static_cast<float*>(p.y)[row * p.n + col] = v;
      }
}

bool valid_weights(const device_weights& w) {
  if (!w.data || w.groups <= 0 || w.rows <= 0 || w.cols <= 0 || w.cols % 8 != 0) return false;
  const long long ld = w.ld ? w.ld : w.cols;
  if (ld < w.cols) return false;
  if (w.type == dtype::bf16) return ld % 8 == 0;
  if (w.type == dtype::f8_e4m3) return w.block_scales && ld % 16 == 0;
  return false;
}

template <bool SwiGLU>
launch_status launch_gemm(const void* x, const row_groups& groups, const device_weights& w0, const device_weights* w1,
                          const float* row_scale, bool y_bf16, void* y, cudaStream_t stream) {
  if (!x || !y || groups.total_rows < 0 || groups.groups <= 0 || !valid_weights(w0))
    return launch_status::invalid_argument;
  if (groups.group_offsets ? w0.groups < groups.groups : groups.groups != 1) return launch_status::invalid_argument;
  if (w1 && (!valid_weights(*w1) || w1->type != w0.type || w1->rows != w0.rows || w1->cols != w0.cols ||
             (w1->ld ? w1->ld : w1->cols) != (w0.ld ? w0.ld : w0.cols) || w1->groups != w0.groups))
    return launch_status::invalid_argument;
  if (groups.total_rows == 0) return launch_status::ok;
  gemm_params p{};
  p.x = static_cast<const std::uint16_t*>(x);
  p.offsets = groups.group_offsets;
  p.groups = static_cast<int>(groups.groups);
  p.total_rows = groups.total_rows;
  p.w0 = w0.data;
  p.w1 = w1 ? w1->data : nullptr;
  p.s0 = w0.block_scales;
  p.s1 = w1 ? w1->block_scales : nullptr;
  p.n = w0.rows;
  p.k = w0.cols;
  p.ldw = w0.ld ? w0.ld : w0.cols;
  p.scale_rows = (w0.rows + 127) / 128;
  p.scale_cols = (p.ldw + 127) / 128;
  p.row_scale = row_scale;
  p.y = y;
  p.y_bf16 = y_bf16;
  // Upper bound on m-tiles over all groups: sum ceil(rows_g / bm) <= total_rows / bm + groups.
  const long long m_slots = groups.group_offsets ? groups.total_rows / bm + groups.groups
                                                 : (groups.total_rows + bm - 1) / bm;
  const long long n_tiles = (w0.rows + bn - 1) / bn;
  if (m_slots > 65535 || n_tiles > 0x7fffffff) return launch_status::unsupported;
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(m_slots));
  if (w0.type == dtype::f8_e4m3)
    grouped_gemm_kernel<SwiGLU, true><<<grid, gemm_threads, 0, stream>>>(p);
  else
    grouped_gemm_kernel<SwiGLU, false><<<grid, gemm_threads, 0, stream>>>(p);
  return detail::launch_result(static_cast<int>(cudaGetLastError()));
}

}  // namespace

launch_status grouped_gemm(const void* x, const row_groups& groups, const device_weights& w, const float* row_scale,
                           dtype y_type, void* y, stream_handle stream) {
  if (y_type != dtype::f32 && y_type != dtype::bf16) return launch_status::invalid_argument;
  return launch_gemm<false>(x, groups, w, nullptr, row_scale, y_type == dtype::bf16, y,
                            static_cast<cudaStream_t>(stream));
}

launch_status grouped_swiglu(const void* x, const row_groups& groups, const device_weights& gate,
                             const device_weights& up, void* h, stream_handle stream) {
  return launch_gemm<true>(x, groups, gate, &up, nullptr, true, h, static_cast<cudaStream_t>(stream));
}

}  // namespace afd::kernels::cuda
