#pragma once
/// Precisions at the attention/FFN boundary and of the KV cache, and the combine mode: settings
/// of a model run shared by the reference engine and the cluster, so both round at the same points.

#include <cstdint>

#include "runtime/core/dtype.hpp"

namespace afd {

/// How FFN unit outputs are summed (DESIGN.md, Determinism).
enum class combine_mode : std::uint8_t {
  deterministic = 0,  ///< one vector per unit, summed by the attention side in canonical order
  throughput = 1,     ///< each FFN worker pre-sums its units
};

/// Rounding points of a run. Defaults follow the system report (FP8 out, BF16 back).
struct numerics {
  dtype kv = dtype::bf16;             ///< KV cache storage: f32, bf16 or fp8
  dtype dispatch = dtype::f8_e4m3;    ///< A->F activations: f32, bf16 or fp8
  dtype combine = dtype::bf16;        ///< F->A unit outputs: f32 or bf16
  combine_mode mode = combine_mode::deterministic;

  /// Everything in f32: reproduces the float64 definition to ~1e-5.
  static numerics exact() { return {dtype::f32, dtype::f32, dtype::f32, combine_mode::deterministic}; }
};

}  // namespace afd
