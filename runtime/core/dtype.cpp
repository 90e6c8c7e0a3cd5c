#include "runtime/core/dtype.hpp"

#include <array>
#include <cmath>

namespace afd {

std::string_view to_string(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
    case dtype::f8_e4m3: return "fp8";
  }
  return "unknown";
}

std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  if (name == "f32" || name == "fp32" || name == "float32") return dtype::f32;
  if (name == "f16" || name == "fp16" || name == "float16") return dtype::f16;
  if (name == "bf16" || name == "bfloat16") return dtype::bf16;
  if (name == "fp8" || name == "f8" || name == "f8_e4m3" || name == "fp8_e4m3") return dtype::f8_e4m3;
  return std::nullopt;
}

float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Subnormal or zero: value = mant * 2^-24.
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t u = f32_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {
    // Result is subnormal in f16: round |f| * 2^24 to an integer, ties to even.
    const float scaled = f32_from_bits(abs) * 16777216.0f;  // exact: power-of-two scaling
    const float r = std::nearbyint(scaled);                   // default mode: ties to even
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(r));
  }
  std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

namespace {

std::array<float, 256> make_fp8_table() {
  std::array<float, 256> table{};
  for (int v = 0; v < 256; ++v) {
    const int sign = v >> 7;
    const int exp = (v >> 3) & 0xf;
    const int mant = v & 0x7;
    float x;
    if (exp == 0xf && mant == 0x7) {
      x = std::nanf("");
    } else if (exp == 0) {
      x = std::ldexp(static_cast<float>(mant), -9);  // mant/8 * 2^-6
    } else {
      x = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
    }
    table[v] = sign ? -x : x;
  }
  return table;
}

// Function-local so that other translation units may convert during their own static
// initialisation (a namespace-scope table could still be empty then).
const std::array<float, 256>& fp8_table() noexcept {
  static const std::array<float, 256> table = make_fp8_table();
  return table;
}

}  // namespace

float fp8_e4m3_to_f32(std::uint8_t v) noexcept { return fp8_table()[v]; }

std::uint8_t f32_to_fp8_e4m3(float f) noexcept {
  const std::uint32_t u = f32_bits(f);
  const std::uint8_t sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return 0x7f;
  if (a >= fp8_e4m3_max) return static_cast<std::uint8_t>(sign | 0x7e);  // saturate
  if (a < std::ldexp(1.0f, -6)) {
    // Subnormal range: value = m * 2^-9, m in [0, 8]; m == 8 is the smallest normal (0x08).
    const float m = std::nearbyint(a * 512.0f);  // exact scaling, ties to even
    return static_cast<std::uint8_t>(sign | static_cast<std::uint8_t>(m));
  }
  // Normal: keep 3 mantissa bits with round-to-nearest-even on the f32 bit pattern.
  const std::uint32_t abs = u & 0x7fffffffu;
  const std::uint32_t rounded = abs + 0x7ffffu + ((abs >> 20) & 1u);
  const std::uint32_t exp = (rounded >> 23) - 127 + 7;
  const std::uint32_t mant = (rounded >> 20) & 0x7u;
  std::uint32_t bits = (exp << 3) | mant;
  if (bits > 0x7e) bits = 0x7e;  // rounding up past 448 saturates
  return static_cast<std::uint8_t>(sign | bits);
}

float round_to(dtype t, float f) noexcept {
  switch (t) {
    case dtype::f32: return f;
    case dtype::bf16: return round_to_bf16(f);
    case dtype::f16: return f16_to_f32(f32_to_f16(f));
    case dtype::f8_e4m3: return fp8_e4m3_to_f32(f32_to_fp8_e4m3(f));
  }
  return f;
}

}  // namespace afd
