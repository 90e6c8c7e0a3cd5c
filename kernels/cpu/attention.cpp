// MFA attention over a paged KV cache.
//
// Order of operations for one (token, head), the contract the CUDA kernels are checked against:
// positions 0..position are visited in fixed blocks of 64 (block b = positions [64b, 64b + 64)),
// whatever the batch, so a token's prefill and decode results agree bitwise. Per block:
//   s_p = dot(q, K_p) * scale           (dot: the backend's 16-lane order, dot.hpp)
//   m' = max(m, max_p s_p); corr = exp(m - m')   (m starts at -inf, so corr = 0 at first)
//   l = l * corr, then l = l + exp(s_p - m') in position order
//   acc[c] = acc[c] * corr, then acc[c] = acc[c] + e_p * V_p[c] in position order
// and out = acc / l at the end. All in f32, exp is std::exp(float), no FMA.
// K and V rows are read once per block for all the heads of a work item (MFA: one K/V head).

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/dot.hpp"
#include "kernels/cpu/thread_pool.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AFD_HAVE_X86 1
#else
#define AFD_HAVE_X86 0
#endif

namespace afd::kernels::cpu {
namespace {

constexpr std::int64_t pos_block = 64;

void convert_row(dtype t, const void* base, std::size_t offset, std::int64_t n, float* out) {
  switch (t) {
    case dtype::f32: {
      const float* p = static_cast<const float*>(base) + offset;
      std::copy(p, p + n, out);
      return;
    }
    case dtype::bf16: {
      const auto* p = static_cast<const std::uint16_t*>(base) + offset;
      for (std::int64_t c = 0; c < n; ++c) out[c] = bf16_to_f32(p[c]);
      return;
    }
    case dtype::f16: {
      const auto* p = static_cast<const std::uint16_t*>(base) + offset;
      for (std::int64_t c = 0; c < n; ++c) out[c] = f16_to_f32(p[c]);
      return;
    }
    case dtype::f8_e4m3: {
      const auto* p = static_cast<const std::uint8_t*>(base) + offset;
      const float* table = detail::fp8_to_f32_table();
      for (std::int64_t c = 0; c < n; ++c) out[c] = table[p[c]];
      return;
    }
  }
}

// acc[c] = acc[c] * corr; then for p < np: acc[c] = acc[c] + e[p] * v[p * d + c]. Element-wise,
// so the SIMD and portable versions are the same sequence of f32 operations per element.
void weighted_sum_portable(float* acc, float corr, const float* e, const float* v, std::int64_t np, std::int64_t d) {
  for (std::int64_t c = 0; c < d; ++c) acc[c] = acc[c] * corr;
  for (std::int64_t p = 0; p < np; ++p) {
    const float ep = e[p];
    const float* vp = v + p * d;
    for (std::int64_t c = 0; c < d; ++c) acc[c] = acc[c] + ep * vp[c];
  }
}

#if AFD_HAVE_X86
__attribute__((target("avx2"))) void weighted_sum_avx2(float* acc, float corr, const float* e, const float* v,
                                                       std::int64_t np, std::int64_t d) {
  std::int64_t c0 = 0;
  const __m256 vc = _mm256_set1_ps(corr);
  for (; c0 + 64 <= d; c0 += 64) {
    __m256 a[8];
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; ++j) a[j] = _mm256_mul_ps(_mm256_loadu_ps(acc + c0 + 8 * j), vc);
    for (std::int64_t p = 0; p < np; ++p) {
      const __m256 ep = _mm256_set1_ps(e[p]);
      const float* vp = v + p * d + c0;
      _Pragma("GCC unroll 8") for (int j = 0; j < 8; ++j) a[j] = _mm256_add_ps(a[j], _mm256_mul_ps(ep, _mm256_loadu_ps(vp + 8 * j)));
    }
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; ++j) _mm256_storeu_ps(acc + c0 + 8 * j, a[j]);
  }
  if (c0 < d) {
    // Remaining columns (head_dim not a multiple of 64): the portable loop, same operations.
    const std::int64_t rest = d - c0;
    for (std::int64_t c = c0; c < d; ++c) acc[c] = acc[c] * corr;
    for (std::int64_t p = 0; p < np; ++p)
      for (std::int64_t c = 0; c < rest; ++c) acc[c0 + c] = acc[c0 + c] + e[p] * v[p * d + c0 + c];
  }
}
#endif

void weighted_sum(float* acc, float corr, const float* e, const float* v, std::int64_t np, std::int64_t d) {
#if AFD_HAVE_X86
  if (detail::simd_enabled()) return weighted_sum_avx2(acc, corr, e, v, np, d);
#endif
  weighted_sum_portable(acc, corr, e, v, np, d);
}

struct scratch {
  std::vector<float> kf, vf, scores, acc, run_max, run_sum;
};

// Heads [0, nh) of one token: q, out point at the first of them.
void attend(const kv_layer_view& cache, const kv_slot& slot, const float* q, std::int64_t nh, float scale, float* out,
            scratch& s) {
  const std::int64_t d = cache.head_dim;
  s.kf.resize(static_cast<std::size_t>(pos_block * d));
  s.vf.resize(s.kf.size());
  s.scores.resize(static_cast<std::size_t>(nh * pos_block));
  s.acc.assign(static_cast<std::size_t>(nh * d), 0.0f);
  s.run_max.assign(static_cast<std::size_t>(nh), -std::numeric_limits<float>::infinity());
  s.run_sum.assign(static_cast<std::size_t>(nh), 0.0f);
  const std::int64_t npos = static_cast<std::int64_t>(slot.position) + 1;
  for (std::int64_t b0 = 0; b0 < npos; b0 += pos_block) {
    const std::int64_t np = std::min(pos_block, npos - b0);
    for (std::int64_t p = 0; p < np; ++p) {
      const std::int64_t pos = b0 + p;
      const std::int64_t block = slot.block_table[pos / cache.block_size];
      const auto row = static_cast<std::size_t>((block * cache.block_size + pos % cache.block_size) * d);
      convert_row(cache.type, cache.k, row, d, s.kf.data() + p * d);
      convert_row(cache.type, cache.v, row, d, s.vf.data() + p * d);
    }
    detail::dot_tile(q, d, nh, dtype::f32, s.kf.data(), d, np, d, s.scores.data(), pos_block);
    for (std::int64_t h = 0; h < nh; ++h) {
      float* sc = s.scores.data() + h * pos_block;
      float bmax = -std::numeric_limits<float>::infinity();
      for (std::int64_t p = 0; p < np; ++p) {
        sc[p] = sc[p] * scale;
        bmax = std::max(bmax, sc[p]);
      }
      const float new_max = std::max(s.run_max[h], bmax);
      const float corr = std::exp(s.run_max[h] - new_max);
      float l = s.run_sum[h] * corr;
      for (std::int64_t p = 0; p < np; ++p) {
        sc[p] = std::exp(sc[p] - new_max);
        l = l + sc[p];
      }
      s.run_sum[h] = l;
      s.run_max[h] = new_max;
      weighted_sum(s.acc.data() + h * d, corr, sc, s.vf.data(), np, d);
    }
  }
  for (std::int64_t h = 0; h < nh; ++h)
    for (std::int64_t c = 0; c < d; ++c) out[h * d + c] = s.acc[h * d + c] / s.run_sum[h];
}

}  // namespace

void attention(const kv_layer_view& cache, std::span<const kv_slot> slots, const float* q, std::int64_t heads,
               float scale, float* out) {
  const auto m = static_cast<std::int64_t>(slots.size());
  if (m == 0 || heads <= 0) return;
  const std::int64_t d = cache.head_dim;
  // With fewer tokens than threads, split the heads too (each head's result is independent).
  const std::int64_t threads = num_threads();
  std::int64_t groups = std::clamp<std::int64_t>((threads + m - 1) / m, 1, heads);
  const std::int64_t per_group = (heads + groups - 1) / groups;
  groups = (heads + per_group - 1) / per_group;
  detail::parallel_for(m * groups, [&](std::int64_t begin, std::int64_t end) {
    thread_local scratch s;
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t t = item / groups, h0 = (item % groups) * per_group;
      const std::int64_t nh = std::min(per_group, heads - h0);
      attend(cache, slots[static_cast<std::size_t>(t)], q + (t * heads + h0) * d, nh, scale,
             out + (t * heads + h0) * d, s);
    }
  });
}

}  // namespace afd::kernels::cpu
