// Attention over a paged KV cache with shuffled block tables, against a float64 oracle, and the
// prefill == decode bitwise property.

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "kernels/cpu/cpu_kernels.hpp"
#include "tests/kernels/cpu_oracle.hpp"

namespace afd::kernels::cpu {
namespace {

using test::describe;

// A paged cache holding several sequences whose blocks are scattered in shuffled order.
struct paged_sequences {
  dtype type;
  std::int64_t block_size, head_dim;
  std::vector<std::uint8_t> k, v;
  kv_layer_view view;
  std::vector<std::vector<std::int32_t>> tables;
  std::vector<std::vector<float>> keys, values;  // f32 inputs per sequence, [len, head_dim]

  paged_sequences(std::mt19937& rng, dtype t, std::int64_t bs, std::int64_t d, const std::vector<std::int64_t>& lengths)
      : type(t), block_size(bs), head_dim(d) {
    std::int64_t total_blocks = 0;
    for (auto len : lengths) total_blocks += (len + bs - 1) / bs;
    total_blocks += 3;  // unused blocks stay garbage
    k.assign(static_cast<std::size_t>(total_blocks * bs * d) * size_of(t), 0x7f);
    v = k;
    view = {t, k.data(), v.data(), total_blocks, bs, d};
    std::vector<std::int32_t> ids(static_cast<std::size_t>(total_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::size_t next = 0;
    for (auto len : lengths) {
      std::vector<std::int32_t> table;
      for (std::int64_t b = 0; b < (len + bs - 1) / bs; ++b) table.push_back(ids[next++]);
      tables.push_back(table);
      keys.push_back(test::random_values(rng, static_cast<std::size_t>(len * d), 1.0f));
      values.push_back(test::random_values(rng, static_cast<std::size_t>(len * d), 1.0f));
      const auto& tab = tables.back();
      // Appended in chunks of varying size, as prefill chunks and decode steps would.
      for (std::int64_t p = 0; p < len;) {
        const std::int64_t n = std::min<std::int64_t>(len - p, 1 + static_cast<std::int64_t>(rng() % 9));
        std::vector<kv_slot> slots;
        for (std::int64_t i = 0; i < n; ++i) slots.push_back({tab.data(), static_cast<std::int32_t>(p + i)});
        kv_append(view, slots, keys.back().data() + p * d, values.back().data() + p * d);
        p += n;
      }
    }
  }

  kv_slot slot(std::size_t seq, std::int64_t pos) const { return {tables[seq].data(), static_cast<std::int32_t>(pos)}; }

  // Float64 oracle for one token and head: causal softmax(q K^T * scale) V over stored values.
  std::vector<double> oracle(std::size_t seq, std::int64_t pos, const float* q, float scale, double* vmax) const {
    const std::int64_t d = head_dim;
    std::vector<double> s(static_cast<std::size_t>(pos + 1));
    for (std::int64_t p = 0; p <= pos; ++p) {
      double acc = 0;
      for (std::int64_t c = 0; c < d; ++c) acc += static_cast<double>(q[c]) * test::stored_value(type, keys[seq][p * d + c]);
      s[p] = acc * scale;
    }
    const double mx = *std::max_element(s.begin(), s.end());
    double sum = 0;
    for (auto& x : s) sum += x = std::exp(x - mx);
    std::vector<double> out(static_cast<std::size_t>(d), 0.0);
    *vmax = 0;
    for (std::int64_t p = 0; p <= pos; ++p)
      for (std::int64_t c = 0; c < d; ++c) {
        const double val = test::stored_value(type, values[seq][p * d + c]);
        out[c] += s[p] / sum * val;
        *vmax = std::max(*vmax, std::fabs(val));
      }
    return out;
  }
};

struct attention_case {
  dtype kv;
  std::int64_t block_size, head_dim, heads;
};

TEST(cpu_attention, matches_float64_oracle_over_shuffled_pages) {
  std::mt19937 rng(31);
  const attention_case cases[] = {{dtype::f32, 4, 8, 1},    {dtype::f32, 16, 64, 3},  {dtype::bf16, 1, 24, 2},
                                  {dtype::bf16, 16, 256, 4}, {dtype::bf16, 7, 100, 5}, {dtype::f8_e4m3, 16, 64, 3},
                                  {dtype::f8_e4m3, 5, 33, 2}, {dtype::f32, 64, 17, 8}};
  for (const auto& c : cases) {
    const std::vector<std::int64_t> lengths = {1, 70, 200, 129};
    const paged_sequences cache(rng, c.kv, c.block_size, c.head_dim, lengths);
    // A batch mixing sequences and positions, including the first and the last of each.
    std::vector<kv_slot> slots;
    std::vector<std::pair<std::size_t, std::int64_t>> who;
    for (std::size_t s = 0; s < lengths.size(); ++s)
      for (const std::int64_t pos : {std::int64_t{0}, lengths[s] / 2, lengths[s] - 1, std::int64_t{63}, std::int64_t{64}})
        if (pos < lengths[s]) {
          slots.push_back(cache.slot(s, pos));
          who.push_back({s, pos});
        }
    const auto q = test::random_values(rng, slots.size() * static_cast<std::size_t>(c.heads * c.head_dim), 1.0f);
    std::vector<float> out(q.size(), NAN);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    for (const int threads : {1, 2}) {
      set_num_threads(threads);
      attention(cache.view, slots, q.data(), c.heads, scale, out.data());
      for (std::size_t t = 0; t < slots.size(); ++t)
        for (std::int64_t h = 0; h < c.heads; ++h) {
          const std::size_t base = (t * static_cast<std::size_t>(c.heads) + static_cast<std::size_t>(h)) * c.head_dim;
          double vmax = 0;
          const auto ref = cache.oracle(who[t].first, who[t].second, q.data() + base, scale, &vmax);
          // f32 error budget: score dots (~(d/16+6)u relative to |q||k|), exp, and sequential f32
          // sums over n positions (n u); n <= 200 here, so 2e-5 + 4 n u of the largest |v|.
          const double tol = (2e-5 + 4.0 * static_cast<double>(who[t].second + 1) * test::unit_roundoff) * vmax;
          for (std::int64_t d = 0; d < c.head_dim; ++d)
            ASSERT_NEAR(out[base + d], ref[d], tol)
                << describe("kv", to_string(c.kv), "block", c.block_size, "head_dim", c.head_dim, "heads", c.heads,
                            "seq", who[t].first, "pos", who[t].second, "head", h, "dim", d, "threads", threads);
        }
    }
  }
}

TEST(cpu_attention, prefill_equals_decode_bitwise) {
  std::mt19937 rng(32);
  for (const dtype kv : {dtype::f32, dtype::bf16, dtype::f8_e4m3}) {
    const std::int64_t heads = 4, d = 64, len = 150;
    const paged_sequences cache(rng, kv, 16, d, {len, 90});
    const auto q = test::random_values(rng, static_cast<std::size_t>(len * heads * d), 1.0f);
    const std::size_t row = static_cast<std::size_t>(heads * d);
    // Prefill: positions 60..149 of sequence 0 in one chunk, with a token of sequence 1 in front.
    std::vector<kv_slot> chunk = {cache.slot(1, 89)};
    std::vector<float> chunk_q(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(row));  // any q for the neighbour
    for (std::int64_t p = 60; p < len; ++p) {
      chunk.push_back(cache.slot(0, p));
      chunk_q.insert(chunk_q.end(), q.begin() + p * static_cast<std::ptrdiff_t>(row), q.begin() + (p + 1) * static_cast<std::ptrdiff_t>(row));
    }
    std::vector<float> chunk_out(chunk_q.size());
    set_num_threads(2);
    attention(cache.view, chunk, chunk_q.data(), heads, 0.125f, chunk_out.data());
    for (const int threads : {1, 2, 3}) {
      set_num_threads(threads);
      for (std::int64_t p = 60; p < len; ++p) {
        const kv_slot one = cache.slot(0, p);
        std::vector<float> out(row);
        attention(cache.view, {&one, 1}, q.data() + p * static_cast<std::int64_t>(row), heads, 0.125f, out.data());
        ASSERT_EQ(std::memcmp(out.data(), chunk_out.data() + (p - 60 + 1) * static_cast<std::int64_t>(row), row * 4), 0)
            << describe("kv", to_string(kv), "position", p, "threads", threads);
      }
    }
  }
}

}  // namespace
}  // namespace afd::kernels::cpu
