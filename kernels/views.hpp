#pragma once
/// The vocabulary every kernel backend shares: views of weights and of the paged KV cache, where a
/// token's KV lives, and a request's sampling settings. Plain data, no memory owned.

#include <cstddef>
#include <cstdint>

#include "runtime/core/dtype.hpp"

namespace afd::kernels {

/// A row-major matrix of weights in HF layout [rows = out features, cols = in features], stored as
/// f32, bf16 or f16 (converted exactly to f32 on the fly) in host memory.
struct weight_view {
  dtype type = dtype::f32;
  const void* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  /// Rows [first, first + count) as a view.
  weight_view row_slice(std::int64_t first, std::int64_t count) const {
    return {type, static_cast<const std::byte*>(data) + first * cols * static_cast<std::int64_t>(size_of(type)),
            count, cols};
  }
};

/// One layer of a paged KV cache: `num_blocks` blocks of `block_size` tokens; K and V each
/// [num_blocks, block_size, head_dim] in `type` (f32, bf16 or fp8 E4M3 without scales, saturating).
struct kv_layer_view {
  dtype type = dtype::bf16;
  void* k = nullptr;
  void* v = nullptr;
  std::int64_t num_blocks = 0;
  std::int64_t block_size = 0;
  std::int64_t head_dim = 0;
};

/// Where one token's sequence lives: its block table and the token's position in the sequence.
struct kv_slot {
  const std::int32_t* block_table = nullptr;  ///< block ids; position p is in block_table[p / block_size]
  std::int32_t position = 0;                  ///< this token's position (0-based)
};

/// Sampling parameters of one request.
struct sampling_params {
  float temperature = 0.0f;  ///< 0: greedy (argmax, ties to the lower id)
  std::int32_t top_k = 0;    ///< 0: off
  float top_p = 1.0f;        ///< 1: off
  std::uint64_t seed = 0;
};

/// Block size of activation FP8 quantization: one f32 scale per 128 consecutive values of a row.
inline constexpr std::int64_t fp8_activation_block = 128;

}  // namespace afd::kernels
