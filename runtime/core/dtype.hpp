#pragma once
/// Element types afd stores and moves, and their exact conversions to and from f32.
/// Rounding is round-to-nearest-even everywhere; FP8 saturates to +-448 (E4M3 "fn", no inf), as
/// CUDA's __NV_SATFINITE conversion does, so CPU and GPU round identically.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace afd {

/// Storage types of tensors, KV caches and wire payloads.
enum class dtype : std::uint8_t { f32 = 0, f16 = 1, bf16 = 2, f8_e4m3 = 3 };

/// Bytes per element.
constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return 4;
    case dtype::f16: return 2;
    case dtype::bf16: return 2;
    case dtype::f8_e4m3: return 1;
  }
  return 0;
}

/// Lowercase name used in CLIs and YAML ("f32", "f16", "bf16", "fp8").
std::string_view to_string(dtype t) noexcept;
/// Parses "f32", "f16", "bf16", "fp8" / "f8_e4m3"; nullopt otherwise.
std::optional<dtype> parse_dtype(std::string_view name) noexcept;

/// The largest finite E4M3 value.
inline constexpr float fp8_e4m3_max = 448.0f;

inline std::uint32_t f32_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// bf16 -> f32 (exact).
inline float bf16_to_f32(std::uint16_t h) noexcept { return f32_from_bits(std::uint32_t{h} << 16); }

/// f32 -> bf16, round to nearest even; NaN stays NaN.
inline std::uint16_t f32_to_bf16(float f) noexcept {
  std::uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

/// Rounds an f32 to the nearest bf16 value, returned as f32.
inline float round_to_bf16(float f) noexcept { return bf16_to_f32(f32_to_bf16(f)); }

/// f16 -> f32 (exact).
float f16_to_f32(std::uint16_t h) noexcept;
/// f32 -> f16, round to nearest even, overflow to inf.
std::uint16_t f32_to_f16(float f) noexcept;

/// E4M3 (fn) -> f32 (exact, table lookup).
float fp8_e4m3_to_f32(std::uint8_t v) noexcept;
/// f32 -> E4M3 (fn), round to nearest even, saturating to +-448; NaN -> 0x7f.
std::uint8_t f32_to_fp8_e4m3(float f) noexcept;

/// Rounds an f32 to the nearest value representable in `t`, returned as f32.
float round_to(dtype t, float f) noexcept;

/// Reads element i of a buffer of type `t` as f32.
inline float load_as_f32(dtype t, const void* data, std::size_t i) noexcept {
  switch (t) {
    case dtype::f32: return static_cast<const float*>(data)[i];
    case dtype::bf16: return bf16_to_f32(static_cast<const std::uint16_t*>(data)[i]);
    case dtype::f16: return f16_to_f32(static_cast<const std::uint16_t*>(data)[i]);
    case dtype::f8_e4m3: return fp8_e4m3_to_f32(static_cast<const std::uint8_t*>(data)[i]);
  }
  return 0.0f;
}

/// Writes f32 `v` as element i of a buffer of type `t` (rounding as above).
inline void store_from_f32(dtype t, void* data, std::size_t i, float v) noexcept {
  switch (t) {
    case dtype::f32: static_cast<float*>(data)[i] = v; return;
    case dtype::bf16: static_cast<std::uint16_t*>(data)[i] = f32_to_bf16(v); return;
    case dtype::f16: static_cast<std::uint16_t*>(data)[i] = f32_to_f16(v); return;
    case dtype::f8_e4m3: static_cast<std::uint8_t*>(data)[i] = f32_to_fp8_e4m3(v); return;
  }
}

}  // namespace afd
