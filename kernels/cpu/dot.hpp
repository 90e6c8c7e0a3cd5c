#pragma once
/// The one dot product of the CPU backend, shared by gemm, the attention scores and rmsnorm.
///
/// Definition (the summation order every caller inherits): k is padded with zeros to a multiple of
/// 16; lane l (0..15) accumulates acc[l] += x[c + l] * w[c + l] over chunks c = 0, 16, 32, ... in
/// increasing order (product rounded to f32, then the add: no FMA); then a fixed tree:
/// acc[l] += acc[l + 8] (l < 8), acc[l] += acc[l + 4] (l < 4), acc[l] += acc[l + 2] (l < 2),
/// result = acc[0] + acc[1]. The AVX2 path and the portable path implement exactly this order, so
/// their results are bitwise equal; tiling over rows and tokens never changes a single dot.

#include <cstdint>

#include "runtime/core/dtype.hpp"

namespace afd::kernels::cpu::detail {

/// Lanes of the fixed dot-product blocking.
inline constexpr std::int64_t dot_lanes = 16;

/// y[t * ldy + r] = dot(x + t * ldx, w + r * ldw) for tokens t < tokens and rows r < rows, over k
/// elements. `w` holds elements of type `wt` (f32, bf16, f16 or fp8 E4M3); ldw counts elements.
void dot_tile(const float* x, std::int64_t ldx, std::int64_t tokens, dtype wt, const void* w,
              std::int64_t ldw, std::int64_t rows, std::int64_t k, float* y, std::int64_t ldy);

/// The 256 E4M3 values as f32 (afd::fp8_e4m3_to_f32 as a table the kernels can index inline).
const float* fp8_to_f32_table();

/// Whether the AVX2 path is used (when the CPU has it). Tests switch it off to check that both
/// paths agree bitwise; not thread-safe against running kernels.
void set_simd_enabled(bool on);
bool simd_enabled();
/// Whether this CPU supports the AVX2 path at all.
bool simd_available();

}  // namespace afd::kernels::cpu::detail
