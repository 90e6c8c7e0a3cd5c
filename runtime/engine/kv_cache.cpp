#include "runtime/engine/kv_cache.hpp"

#include <algorithm>
#include <functional>
#include <new>

namespace afd::engine {

std::size_t kv_cache::bytes_per_block(const model_config& c, dtype type, std::int64_t block_size) {
  return static_cast<std::size_t>(2 * c.num_hidden_layers * block_size * c.head_dim) * size_of(type);
}

expected<kv_cache> kv_cache::create(const model_config& c, dtype type, std::int64_t block_size,
                                    std::int64_t num_blocks) {
  if (type != dtype::f32 && type != dtype::bf16 && type != dtype::f8_e4m3)
    return fail(errc::invalid_argument, "KV cache dtype must be f32, bf16 or fp8, got ", std::string(to_string(type)));
  if (block_size <= 0) return fail(errc::invalid_argument, "KV block size must be positive, got ", block_size);
  if (num_blocks <= 0) return fail(errc::invalid_argument, "KV cache needs at least one block, got ", num_blocks);
  kv_cache kv;
  kv.type_ = type;
  kv.block_size_ = block_size;
  kv.num_blocks_ = num_blocks;
  kv.head_dim_ = c.head_dim;
  kv.layers_ = c.num_hidden_layers;
  kv.layer_bytes_ = static_cast<std::size_t>(num_blocks * block_size * c.head_dim) * size_of(type);
  const std::size_t total = kv.layer_bytes_ * 2 * static_cast<std::size_t>(kv.layers_);
  // Uninitialised on purpose: a slot is always written by kv_append before attention reads it.
  kv.storage_.reset(new (std::nothrow) std::byte[total]);
  if (!kv.storage_)
    return fail(errc::rejected, "cannot allocate a KV cache of ", total, " bytes (", num_blocks, " blocks)");
  kv.free_.resize(static_cast<std::size_t>(num_blocks));
  for (std::int64_t i = 0; i < num_blocks; ++i) kv.free_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(num_blocks - 1 - i);
  return kv;
}

kernels::kv_layer_view kv_cache::layer(std::int64_t layer) const {
  std::byte* base = storage_.get() + layer_bytes_ * 2 * static_cast<std::size_t>(layer);
  return {type_, base, base + layer_bytes_, num_blocks_, block_size_, head_dim_};
}

expected<std::vector<std::int32_t>> kv_cache::allocate(std::int64_t n) {
  if (n > free_blocks())
    return fail(errc::rejected, "KV cache has ", free_blocks(), " free blocks, ", n, " needed");
  std::vector<std::int32_t> out;
  out.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    out.push_back(free_.back());
    free_.pop_back();
  }
  return out;
}

void kv_cache::release(const std::vector<std::int32_t>& blocks) {
  free_.insert(free_.end(), blocks.begin(), blocks.end());
  std::sort(free_.begin(), free_.end(), std::greater<>());
}

}  // namespace afd::engine
