#pragma once
/// Paged KV cache of one attention side: per layer, K and V blocks of `block_size` tokens in the
/// cache dtype, and a free list of block ids shared by all layers (a sequence's block table is the
/// same in every layer).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/views.hpp"
#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"

namespace afd::engine {

/// Storage and block allocation of a paged KV cache. Move-only.
class kv_cache {
 public:
  /// Bytes one block takes over all layers (K and V).
  static std::size_t bytes_per_block(const model_config& c, dtype type, std::int64_t block_size);

  /// A cache of `num_blocks` blocks. Memory is reserved but not touched until written.
  static expected<kv_cache> create(const model_config& c, dtype type, std::int64_t block_size,
                                   std::int64_t num_blocks);

  /// The kernels' view of layer `layer`.
  kernels::kv_layer_view layer(std::int64_t layer) const;

  dtype type() const { return type_; }
  std::int64_t block_size() const { return block_size_; }
  std::int64_t num_blocks() const { return num_blocks_; }
  std::int64_t free_blocks() const { return static_cast<std::int64_t>(free_.size()); }
  /// Blocks needed to hold `positions` token positions.
  std::int64_t blocks_for(std::int64_t positions) const { return (positions + block_size_ - 1) / block_size_; }

  /// Takes `n` free blocks (lowest ids first), or fails with errc::rejected leaving the cache as it was.
  expected<std::vector<std::int32_t>> allocate(std::int64_t n);
  /// Returns blocks to the free list.
  void release(const std::vector<std::int32_t>& blocks);

 private:
  dtype type_ = dtype::bf16;
  std::int64_t block_size_ = 0;
  std::int64_t num_blocks_ = 0;
  std::int64_t head_dim_ = 0;
  std::int64_t layers_ = 0;
  std::size_t layer_bytes_ = 0;  ///< K (or V) of one layer
  std::unique_ptr<std::byte[]> storage_;
  std::vector<std::int32_t> free_;  ///< kept sorted descending: back() is the lowest id
};

}  // namespace afd::engine
