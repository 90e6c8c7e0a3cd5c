#include "kernels/cpu/dot.hpp"

#include <array>
#include <atomic>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AFD_HAVE_X86 1
#else
#define AFD_HAVE_X86 0
#endif

namespace afd::kernels::cpu::detail {
namespace {

// ---------------------------------------------------------------------------------------------
// Portable path: the definition, written out.

template <dtype WT>
inline float load_w(const void* w, std::int64_t i) {
  return load_as_f32(WT, w, static_cast<std::size_t>(i));
}

template <dtype WT>
float dot_portable(const float* x, const void* w, std::int64_t k) {
  float acc[dot_lanes] = {};
  std::int64_t c = 0;
  for (; c + dot_lanes <= k; c += dot_lanes) {
    for (int l = 0; l < dot_lanes; ++l) {
      const float p = x[c + l] * load_w<WT>(w, c + l);
      acc[l] = acc[l] + p;
    }
  }
  if (c < k) {
    // The tail is a full chunk whose missing elements are zeros, exactly as the SIMD path pads it.
    for (int l = 0; l < dot_lanes; ++l) {
      const bool in = c + l < k;
      const float xv = in ? x[c + l] : 0.0f;
      const float wv = in ? load_w<WT>(w, c + l) : 0.0f;
      const float p = xv * wv;
      acc[l] = acc[l] + p;
    }
  }
  for (int l = 0; l < 8; ++l) acc[l] = acc[l] + acc[l + 8];
  for (int l = 0; l < 4; ++l) acc[l] = acc[l] + acc[l + 4];
  for (int l = 0; l < 2; ++l) acc[l] = acc[l] + acc[l + 2];
  return acc[0] + acc[1];
}

template <dtype WT>
void tile_portable(const float* x, std::int64_t ldx, std::int64_t tokens, const void* w, std::int64_t ldw,
                   std::int64_t rows, std::int64_t k, float* y, std::int64_t ldy) {
  const auto* wb = static_cast<const std::byte*>(w);
  const std::int64_t row_bytes = ldw * static_cast<std::int64_t>(size_of(WT));
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t r = 0; r < rows; ++r) y[t * ldy + r] = dot_portable<WT>(x + t * ldx, wb + r * row_bytes, k);
}

// ---------------------------------------------------------------------------------------------
// AVX2 path: two 8-wide accumulators per dot (lanes 0-7 and 8-15), separate mul and add (no FMA:
// the target below does not enable it, and the library is built with -ffp-contract=off).

#if AFD_HAVE_X86
#define AFD_AVX2 __attribute__((target("avx2,f16c"), always_inline)) inline
#define AFD_AVX2_FN __attribute__((target("avx2,f16c")))
// Register tiles: the loops over rows and tokens must be unrolled for the accumulators to live in
// registers.
#define AFD_UNROLL _Pragma("GCC unroll 16")

const float* fp8_table() { return fp8_to_f32_table(); }

template <dtype WT>
AFD_AVX2 void load16(const std::byte* w, __m256& lo, __m256& hi) {
  if constexpr (WT == dtype::f32) {
    lo = _mm256_loadu_ps(reinterpret_cast<const float*>(w));
    hi = _mm256_loadu_ps(reinterpret_cast<const float*>(w) + 8);
  } else if constexpr (WT == dtype::bf16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
    hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
  } else if constexpr (WT == dtype::f16) {
    lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
    hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w) + 1));
  } else {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    const float* table = fp8_table();
    lo = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(v), 4);
    hi = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)), 4);
  }
}

AFD_AVX2 float reduce16(__m256 a, __m256 b) {
  const __m256 s8 = _mm256_add_ps(a, b);                                                  // l + 8
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));  // l + 4
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                 // l + 2
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));                             // l + 1
  return _mm_cvtss_f32(s1);
}

// One 16-wide chunk for R rows x T tokens. xs[t] and ws[r] point at the chunk's first element.
template <dtype WT, int R, int T>
AFD_AVX2 void chunk(__m256 (&acc)[R][T][2], const float* const (&xs)[T], const std::byte* const (&ws)[R]) {
  AFD_UNROLL for (int r = 0; r < R; ++r) {
    __m256 wl, wh;
    load16<WT>(ws[r], wl, wh);
    AFD_UNROLL for (int t = 0; t < T; ++t) {
      acc[r][t][0] = _mm256_add_ps(acc[r][t][0], _mm256_mul_ps(_mm256_loadu_ps(xs[t]), wl));
      acc[r][t][1] = _mm256_add_ps(acc[r][t][1], _mm256_mul_ps(_mm256_loadu_ps(xs[t] + 8), wh));
    }
  }
}

template <dtype WT, int R, int T>
AFD_AVX2_FN void micro(const float* x, std::int64_t ldx, const std::byte* w, std::int64_t row_bytes,
                       std::int64_t k, float* y, std::int64_t ldy) {
  constexpr std::int64_t esize = static_cast<std::int64_t>(size_of(WT));
  __m256 acc[R][T][2];
  AFD_UNROLL for (int r = 0; r < R; ++r)
    AFD_UNROLL for (int t = 0; t < T; ++t) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
  std::int64_t c = 0;
  for (; c + dot_lanes <= k; c += dot_lanes) {
    const float* xs[T];
    const std::byte* ws[R];
    AFD_UNROLL for (int t = 0; t < T; ++t) xs[t] = x + t * ldx + c;
    AFD_UNROLL for (int r = 0; r < R; ++r) ws[r] = w + r * row_bytes + c * esize;
    chunk<WT, R, T>(acc, xs, ws);
  }
  if (c < k) {
    // Zero-padded tail: the same chunk on copies (zero bytes are +0 in every dtype).
    const std::int64_t rem = k - c;
    alignas(32) float xb[T][dot_lanes] = {};
    alignas(32) std::byte wb[R][dot_lanes * 4] = {};
    const float* xs[T];
    const std::byte* ws[R];
    AFD_UNROLL for (int t = 0; t < T; ++t) {
      std::memcpy(xb[t], x + t * ldx + c, static_cast<std::size_t>(rem) * 4);
      xs[t] = xb[t];
    }
    AFD_UNROLL for (int r = 0; r < R; ++r) {
      std::memcpy(wb[r], w + r * row_bytes + c * esize, static_cast<std::size_t>(rem * esize));
      ws[r] = wb[r];
    }
    chunk<WT, R, T>(acc, xs, ws);
  }
  AFD_UNROLL for (int r = 0; r < R; ++r)
    AFD_UNROLL for (int t = 0; t < T; ++t) y[t * ldy + r] = reduce16(acc[r][t][0], acc[r][t][1]);
}

template <dtype WT>
AFD_AVX2_FN void tile_avx2(const float* x, std::int64_t ldx, std::int64_t tokens, const void* w, std::int64_t ldw,
                           std::int64_t rows, std::int64_t k, float* y, std::int64_t ldy) {
  const auto* wb = static_cast<const std::byte*>(w);
  const std::int64_t rb = ldw * static_cast<std::int64_t>(size_of(WT));
  std::int64_t t = 0;
  while (t < tokens) {
    const std::int64_t left = tokens - t;
    const float* xt = x + t * ldx;
    float* yt = y + t * ldy;
    if (left >= 4) {
      for (std::int64_t r = 0; r < rows; ++r) micro<WT, 1, 4>(xt, ldx, wb + r * rb, rb, k, yt + r, ldy);
      t += 4;
    } else if (left == 3) {
      for (std::int64_t r = 0; r < rows; ++r) micro<WT, 1, 3>(xt, ldx, wb + r * rb, rb, k, yt + r, ldy);
      t += 3;
    } else if (left == 2) {
      std::int64_t r = 0;
      for (; r + 2 <= rows; r += 2) micro<WT, 2, 2>(xt, ldx, wb + r * rb, rb, k, yt + r, ldy);
      for (; r < rows; ++r) micro<WT, 1, 2>(xt, ldx, wb + r * rb, rb, k, yt + r, ldy);
      t += 2;
    } else {
      std::int64_t r = 0;
      for (; r + 4 <= rows; r += 4) micro<WT, 4, 1>(xt, ldx, wb + r * rb, rb, k, yt + r, ldy);
      for (; r < rows; ++r) micro<WT, 1, 1>(xt, ldx, wb + r * rb, rb, k, yt + r, ldy);
      t += 1;
    }
  }
}

bool detect_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}
const bool avx2_available = detect_avx2();
#else
const bool avx2_available = false;
#endif

std::atomic<bool> simd_on{true};

}  // namespace

// Built on first use: a namespace-scope table could be initialised before afd::core's own.
const float* fp8_to_f32_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = fp8_e4m3_to_f32(static_cast<std::uint8_t>(v));
    return t;
  }();
  return table.data();
}

void set_simd_enabled(bool on) { simd_on.store(on, std::memory_order_relaxed); }
bool simd_enabled() { return simd_on.load(std::memory_order_relaxed) && avx2_available; }
bool simd_available() { return avx2_available; }

void dot_tile(const float* x, std::int64_t ldx, std::int64_t tokens, dtype wt, const void* w, std::int64_t ldw,
              std::int64_t rows, std::int64_t k, float* y, std::int64_t ldy) {
  if (tokens <= 0 || rows <= 0) return;
#if AFD_HAVE_X86
  if (simd_enabled()) {
    switch (wt) {
      case dtype::f32: return tile_avx2<dtype::f32>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
      case dtype::bf16: return tile_avx2<dtype::bf16>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
      case dtype::f16: return tile_avx2<dtype::f16>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
      case dtype::f8_e4m3: return tile_avx2<dtype::f8_e4m3>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
    }
  }
#endif
  switch (wt) {
    case dtype::f32: return tile_portable<dtype::f32>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
    case dtype::bf16: return tile_portable<dtype::bf16>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
    case dtype::f16: return tile_portable<dtype::f16>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
    case dtype::f8_e4m3: return tile_portable<dtype::f8_e4m3>(x, ldx, tokens, w, ldw, rows, k, y, ldy);
  }
}

}  // namespace afd::kernels::cpu::detail
