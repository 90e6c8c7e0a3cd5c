// gemm, gather_rows, swiglu: the kernels that read weights.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/dot.hpp"
#include "kernels/cpu/thread_pool.hpp"

namespace afd::kernels::cpu {
namespace {

// Tokens per work item: large prefills split over tokens as well as rows.
constexpr std::int64_t token_chunk = 64;
// Bytes of weights per row block: small enough to stay in L2 while every token tile of the item
// re-reads it, large enough to amortise the tile setup.
constexpr std::int64_t row_block_bytes = 192 * 1024;

}  // namespace

void gemm(const float* x, std::int64_t m, const weight_view& w, float* y) {
  const std::int64_t n = w.rows, k = w.cols;
  if (m <= 0 || n <= 0) return;
  const std::int64_t esize = static_cast<std::int64_t>(size_of(w.type));
  std::int64_t rb = std::max<std::int64_t>(4, row_block_bytes / std::max<std::int64_t>(1, k * esize));
  rb = (rb + 3) / 4 * 4;
  // Enough row blocks to feed every thread even when n is small.
  const std::int64_t threads = num_threads();
  if (threads > 1) rb = std::max<std::int64_t>(4, std::min(rb, (n + 2 * threads - 1) / (2 * threads) / 4 * 4));
  const std::int64_t row_blocks = (n + rb - 1) / rb;
  const std::int64_t token_chunks = (m + token_chunk - 1) / token_chunk;
  const auto* wb = static_cast<const std::byte*>(w.data);
  detail::parallel_for(row_blocks * token_chunks, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t r0 = (item % row_blocks) * rb, t0 = (item / row_blocks) * token_chunk;
      const std::int64_t rows = std::min(rb, n - r0), tokens = std::min(token_chunk, m - t0);
      detail::dot_tile(x + t0 * k, k, tokens, w.type, wb + r0 * k * esize, k, rows, k, y + t0 * n + r0, n);
    }
  });
}

void gather_rows(const weight_view& table, std::span<const std::int32_t> ids, float* out) {
  const std::int64_t cols = table.cols;
  const std::size_t esize = size_of(table.type);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto* row = static_cast<const std::byte*>(table.data) + static_cast<std::size_t>(ids[i]) * cols * esize;
    float* o = out + static_cast<std::int64_t>(i) * cols;
    for (std::int64_t c = 0; c < cols; ++c) o[c] = load_as_f32(table.type, row, static_cast<std::size_t>(c));
  }
}

void swiglu(const float* x, std::int64_t m, const weight_view& gate, const weight_view& up, const weight_view& down,
            float* y, float* scratch) {
  const std::int64_t inter = gate.rows;
  float* g = scratch;
  float* u = scratch + m * inter;
  gemm(x, m, gate, g);
  gemm(x, m, up, u);
  for (std::int64_t i = 0; i < m * inter; ++i) {
    const float z = g[i];
    const float silu = z / (1.0f + std::exp(-z));
    g[i] = silu * u[i];
  }
  gemm(g, m, down, y);
}

}  // namespace afd::kernels::cpu
