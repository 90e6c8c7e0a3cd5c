// Batch invariance, bitwise: a token's outputs computed alone equal the same token's outputs
// inside batches of various sizes, at various places, with 1, 2 or 3 threads.

#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "kernels/cpu/cpu_kernels.hpp"
#include "tests/kernels/cpu_oracle.hpp"

namespace afd::kernels::cpu {
namespace {

using test::describe;

// Runs `kernel(input rows, m, probe index, output rows)` for the probe token alone (1 thread) and inside
// batches of random neighbours, and compares the probe's output row bytes.
void check_invariant(const std::string& name, std::int64_t in_width, std::int64_t out_width, float scale,
                     const std::function<void(const float*, std::int64_t, std::int64_t, float*)>& kernel) {
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>{}(name)));
  const auto probe = test::random_values(rng, static_cast<std::size_t>(in_width), scale);
  set_num_threads(1);
  std::vector<float> alone(static_cast<std::size_t>(out_width));
  kernel(probe.data(), 1, 0, alone.data());
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (const std::int64_t m : {1, 2, 3, 5, 17, 64, 67}) {
      for (const std::int64_t at : {std::int64_t{0}, m / 2, m - 1}) {
        auto batch = test::random_values(rng, static_cast<std::size_t>(m * in_width), scale);
        std::copy(probe.begin(), probe.end(), batch.begin() + at * in_width);
        std::vector<float> out(static_cast<std::size_t>(m * out_width));
        kernel(batch.data(), m, at, out.data());
        ASSERT_EQ(std::memcmp(out.data() + at * out_width, alone.data(), alone.size() * 4), 0)
            << describe(name, "batch", m, "index", at, "threads", threads);
      }
    }
  }
}

TEST(cpu_batch_invariance, gemm) {
  std::mt19937 rng(41);
  for (const dtype t : {dtype::f32, dtype::bf16, dtype::f16}) {
    for (const auto& [n, k] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {37, 100}, {300, 257}, {64, 1024}}) {
      const auto w = test::encode(t, test::random_values(rng, static_cast<std::size_t>(n * k), 1.0f, t));
      check_invariant(describe("gemm", to_string(t), n, k), k, n, 1.0f, [&](const float* x, std::int64_t m, std::int64_t /*at*/, float* y) {
        gemm(x, m, {t, w.data(), n, k}, y);
      });
    }
  }
}

TEST(cpu_batch_invariance, swiglu) {
  std::mt19937 rng(42);
  const std::int64_t hidden = 96, inter = 130;
  const dtype t = dtype::bf16;
  const auto g = test::encode(t, test::random_values(rng, static_cast<std::size_t>(hidden * inter), 0.3f, t));
  const auto u = test::encode(t, test::random_values(rng, static_cast<std::size_t>(hidden * inter), 0.3f, t));
  const auto d = test::encode(t, test::random_values(rng, static_cast<std::size_t>(hidden * inter), 0.3f, t));
  check_invariant("swiglu", hidden, hidden, 1.0f, [&](const float* x, std::int64_t m, std::int64_t /*at*/, float* y) {
    std::vector<float> scratch(static_cast<std::size_t>(2 * m * inter));
    swiglu(x, m, {t, g.data(), inter, hidden}, {t, u.data(), inter, hidden}, {t, d.data(), hidden, inter}, y,
           scratch.data());
  });
}

TEST(cpu_batch_invariance, rmsnorm_router_quantize) {
  std::mt19937 rng(43);
  const std::int64_t n = 333;
  const auto w = test::random_values(rng, static_cast<std::size_t>(n), 1.0f);
  // rsqrt absorbs small changes of the sum of squares, so several probes.
  for (int probe = 0; probe < 8; ++probe)
    check_invariant(describe("rmsnorm probe", probe), n, n, 3.0f, [&](const float* x, std::int64_t m, std::int64_t /*at*/, float* y) {
      rmsnorm(x, m, n, w.data(), 1e-5f, y);
    });
  const std::int64_t experts = 48, k = 3;
  check_invariant("router", experts, 2 * k, 4.0f, [&](const float* x, std::int64_t m, std::int64_t /*at*/, float* y) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(m * k));
    std::vector<float> ws(ids.size());
    router_topk(x, m, experts, k, true, ids.data(), ws.data());
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < k; ++j) {
        y[i * 2 * k + j] = static_cast<float>(ids[static_cast<std::size_t>(i * k + j)]);
        y[i * 2 * k + k + j] = ws[static_cast<std::size_t>(i * k + j)];
      }
  });
  for (const dtype wire : {dtype::bf16, dtype::f8_e4m3}) {
    check_invariant(describe("round_activations", to_string(wire)), n, n, 5.0f, [&](const float* x, std::int64_t m, std::int64_t /*at*/, float* y) {
      std::copy(x, x + m * n, y);
      round_activations(wire, y, m, n);
    });
  }
  check_invariant("rope", 3 * 64, 3 * 64, 2.0f, [&](const float* x, std::int64_t m, std::int64_t at, float* y) {
    std::copy(x, x + m * 3 * 64, y);
    std::vector<std::int32_t> pos(static_cast<std::size_t>(m));
    for (std::int64_t i = 0; i < m; ++i) pos[static_cast<std::size_t>(i)] = i == at ? 1000 : static_cast<std::int32_t>(i * 37);
    rope_neox(y, m, 3, 64, pos.data(), 500000.0);
  });
}

TEST(cpu_batch_invariance, attention) {
  std::mt19937 rng(44);
  for (const dtype kv : {dtype::bf16, dtype::f8_e4m3}) {
    const std::int64_t heads = 8, d = 64, bs = 16, seqs = 4, len = 100;
    const std::int64_t blocks = seqs * ((len + bs - 1) / bs);
    std::vector<std::uint8_t> kc(static_cast<std::size_t>(blocks * bs * d) * size_of(kv)), vc(kc.size());
    const kv_layer_view cache{kv, kc.data(), vc.data(), blocks, bs, d};
    std::vector<std::int32_t> table(static_cast<std::size_t>(blocks));
    for (std::int64_t b = 0; b < blocks; ++b) table[static_cast<std::size_t>(b)] = static_cast<std::int32_t>((b * 5) % blocks);
    const std::int64_t per_seq = blocks / seqs;
    for (std::int64_t s = 0; s < seqs; ++s) {
      std::vector<kv_slot> slots;
      for (std::int64_t p = 0; p < len; ++p) slots.push_back({table.data() + s * per_seq, static_cast<std::int32_t>(p)});
      const auto k = test::random_values(rng, static_cast<std::size_t>(len * d), 1.0f);
      const auto v = test::random_values(rng, static_cast<std::size_t>(len * d), 1.0f);
      kv_append(cache, slots, k.data(), v.data());
    }
    // The probe is sequence 0 at position 77; neighbours are other sequences and positions.
    check_invariant(describe("attention", to_string(kv)), heads * d, heads * d, 1.0f,
                    [&](const float* q, std::int64_t m, std::int64_t at, float* out) {
                      std::vector<kv_slot> slots;
                      for (std::int64_t i = 0; i < m; ++i) {
                        const bool probe = i == at;
                        const std::int64_t s = probe ? 0 : 1 + i % (seqs - 1);
                        slots.push_back({table.data() + s * per_seq, static_cast<std::int32_t>(probe ? 77 : (i * 13) % len)});
                      }
                      attention(cache, slots, q, heads, 0.125f, out);
                    });
  }
}

}  // namespace
}  // namespace afd::kernels::cpu
