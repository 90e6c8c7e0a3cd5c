#pragma once
// Float64 oracles for the CPU kernels, written from MODEL.md's formulas and the documented
// definitions in kernels/cpu/cpu_kernels.hpp, independently of the kernels' code. Weight and cache
// elements are decoded with afd's exact dtype conversions (runtime/core, tested on their own);
// FP8 rounding is checked against a nearest-value enumeration written here.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/core/dtype.hpp"

namespace afd::kernels::cpu::test {

/// f32 unit roundoff.
inline constexpr double unit_roundoff = 0x1.0p-24;

/// Worst-case first-order error bound of the backend's dot product (16 lanes, chunks then a
/// 4-level tree): every product and every add rounds once, with partial sums bounded by sum |x w|.
inline double dot_error_bound(std::int64_t k, double sum_abs) {
  return (static_cast<double>((k + 15) / 16) + 6.0) * unit_roundoff * sum_abs * 1.01 + 1e-37;
}

/// Random values in [-scale, scale] that are exactly representable in `t` (so the weights the
/// kernel reads are exactly the oracle's).
inline std::vector<float> random_values(std::mt19937& rng, std::size_t n, float scale, dtype t = dtype::f32) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = round_to(t, d(rng));
  return v;
}

/// Stores f32 values (already representable) as a buffer of type t.
inline std::vector<std::uint8_t> encode(dtype t, const std::vector<float>& v) {
  std::vector<std::uint8_t> out(v.size() * size_of(t));
  for (std::size_t i = 0; i < v.size(); ++i) store_from_f32(t, out.data(), i, v[i]);
  return out;
}

/// E4M3 (fn) code -> value, from the format's definition: bias 7, 3 mantissa bits, subnormals at
/// exponent 0, S.1111.111 is NaN.
inline double fp8_value(int code) {
  const int sign = (code >> 7) & 1, e = (code >> 3) & 0xf, mant = code & 7;
  if (e == 0xf && mant == 7) return NAN;
  const double mag = e == 0 ? std::ldexp(mant / 8.0, -6) : std::ldexp(1.0 + mant / 8.0, e - 7);
  return sign ? -mag : mag;
}

/// Nearest E4M3 code to v by enumerating every finite code: ties to the even code, beyond 448
/// saturating, zero keeping v's sign.
inline std::uint8_t fp8_nearest(double v) {
  int best = 0;
  double best_err = INFINITY;
  for (int c = 0; c < 256; ++c) {
    const double val = fp8_value(c);
    if (std::isnan(val)) continue;
    const double err = std::fabs(val - v);
    if (err < best_err || (err == best_err && (c & 1) == 0 && (best & 1) == 1)) {
      best = c;
      best_err = err;
    }
  }
  if (fp8_value(best) == 0.0) return std::signbit(v) ? 0x80 : 0x00;
  return static_cast<std::uint8_t>(best);
}

/// Value a cache / wire of type t holds for v (f32 input).
inline double stored_value(dtype t, float v) {
  if (t == dtype::f8_e4m3) return fp8_value(fp8_nearest(v));
  return round_to(t, v);  // bf16 / f16 / f32 rounding: runtime/core, tested there
}

inline double dot_ref(const float* x, const float* w, std::int64_t k, double* sum_abs = nullptr) {
  double s = 0.0, a = 0.0;
  for (std::int64_t i = 0; i < k; ++i) {
    s += static_cast<double>(x[i]) * w[i];
    a += std::fabs(static_cast<double>(x[i]) * w[i]);
  }
  if (sum_abs) *sum_abs = a;
  return s;
}

/// Small helper to name a case in failure messages.
template <class... A>
std::string describe(const A&... parts) {
  std::ostringstream s;
  ((s << parts << ' '), ...);
  return s.str();
}

}  // namespace afd::kernels::cpu::test
