// rmsnorm, rope, router top-k, FP8 activation quantization, round_activations and kv_append
// against float64 oracles (exact where the definition is exact).

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "kernels/cpu/cpu_kernels.hpp"
#include "tests/kernels/cpu_oracle.hpp"

namespace afd::kernels::cpu {
namespace {

using test::describe;

TEST(cpu_rmsnorm, matches_float64_oracle) {
  std::mt19937 rng(21);
  for (const std::int64_t n : {1, 7, 16, 33, 128, 1000}) {
    for (const std::int64_t m : {1, 3, 17}) {
      const auto x = test::random_values(rng, static_cast<std::size_t>(m * n), 4.0f);
      const auto w = test::random_values(rng, static_cast<std::size_t>(n), 1.5f);
      std::vector<float> y(x.size());
      const float eps = 1e-5f;
      rmsnorm(x.data(), m, n, w.data(), eps, y.data());
      std::vector<float> inplace = x;
      rmsnorm(inplace.data(), m, n, w.data(), eps, inplace.data());
      ASSERT_EQ(std::memcmp(inplace.data(), y.data(), y.size() * 4), 0) << describe("aliasing n", n, "m", m);
      for (std::int64_t i = 0; i < m; ++i) {
        double ss = 0;
        for (std::int64_t c = 0; c < n; ++c) ss += static_cast<double>(x[i * n + c]) * x[i * n + c];
        const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + static_cast<double>(eps));
        for (std::int64_t c = 0; c < n; ++c) {
          const double ref = x[i * n + c] * r * w[c];
          // Sum of squares: dot bound (all terms positive, so relative); then mean, add, sqrt,
          // divide, two products: ~6 more roundings; the rsqrt halves the sum's relative error.
          const double rel = (static_cast<double>((n + 15) / 16) + 6.0 + 8.0) * test::unit_roundoff;
          ASSERT_NEAR(y[i * n + c], ref, rel * std::fabs(ref) + 1e-37) << describe("n", n, "m", m, "at", i, c);
        }
      }
    }
  }
}

TEST(cpu_rope, matches_float64_oracle) {
  std::mt19937 rng(22);
  for (const std::int64_t d : {2, 8, 64, 256}) {
    for (const double theta : {10000.0, 500000.0}) {
      const std::int64_t m = 5, heads = 3;
      const std::vector<std::int32_t> positions = {0, 1, 17, 4095, 65535};
      auto x = test::random_values(rng, static_cast<std::size_t>(m * heads * d), 2.0f);
      const auto x0 = x;
      rope_neox(x.data(), m, heads, d, positions.data(), theta);
      const std::int64_t half = d / 2;
      for (std::int64_t t = 0; t < m; ++t)
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t i = 0; i < half; ++i) {
            // MODEL.md: inv_freq_i = theta^(-2i/d) (held in f32), angle = position * inv_freq in
            // f32 (the defined rounding point), then the rotation, here in double.
            const float inv_freq = static_cast<float>(std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d)));
            const float angle = static_cast<float>(positions[t]) * inv_freq;
            const double c = std::cos(static_cast<double>(angle)), s = std::sin(static_cast<double>(angle));
            const std::size_t base = static_cast<std::size_t>((t * heads + h) * d);
            const double a = x0[base + i], b = x0[base + i + half];
            const double tol = 1e-6 * (std::fabs(a) + std::fabs(b)) + 1e-37;
            ASSERT_NEAR(x[base + i], a * c - b * s, tol) << describe("d", d, "theta", theta, "pos", positions[t], "i", i);
            ASSERT_NEAR(x[base + i + half], b * c + a * s, tol) << describe("d", d, "theta", theta, "pos", positions[t], "i", i);
          }
    }
  }
}

TEST(cpu_router_topk, matches_float64_oracle) {
  std::mt19937 rng(23);
  for (const std::int64_t e : {1, 3, 8, 48, 65}) {
    for (const std::int64_t k : {1, 2, 3, 8}) {
      if (k > e) continue;
      for (const bool renorm : {false, true}) {
        const std::int64_t m = 17;
        const auto logits = test::random_values(rng, static_cast<std::size_t>(m * e), 6.0f);
        std::vector<std::int32_t> ids(static_cast<std::size_t>(m * k));
        std::vector<float> w(ids.size());
        router_topk(logits.data(), m, e, k, renorm, ids.data(), w.data());
        for (std::int64_t t = 0; t < m; ++t) {
          std::vector<double> p(static_cast<std::size_t>(e));
          const double mx = *std::max_element(logits.begin() + t * e, logits.begin() + (t + 1) * e);
          double sum = 0;
          for (std::int64_t j = 0; j < e; ++j) sum += p[j] = std::exp(logits[t * e + j] - mx);
          for (auto& v : p) v /= sum;
          std::vector<int> order(static_cast<std::size_t>(e));
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
          double sel = 0;
          for (std::int64_t j = 0; j < k; ++j) sel += p[order[j]];
          for (std::int64_t j = 0; j < k; ++j) {
            const std::string what = describe("experts", e, "k", k, "renorm", renorm, "token", t, "slot", j);
            // Ids are exact unless two probabilities are within rounding of each other.
            const bool near_tie = (j > 0 && p[order[j - 1]] - p[order[j]] < 1e-6 * p[order[j]]) ||
                                  (j + 1 < e && p[order[j]] - p[order[j + 1]] < 1e-6 * p[order[j]]);
            if (!near_tie) {
              ASSERT_EQ(ids[t * k + j], order[j]) << what;
            }
            // exp, a sum of e terms and a divide (and the renormalising sum and divide) in f32.
            const double ref = renorm ? p[order[j]] / sel : p[order[j]];
            ASSERT_NEAR(w[t * k + j], ref, (static_cast<double>(2 * e) + 8) * test::unit_roundoff * ref) << what;
          }
        }
      }
    }
  }
}

TEST(cpu_router_topk, ties_go_to_the_lower_index) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 2.0f, 3.0f};
  std::vector<std::int32_t> ids(4);
  std::vector<float> w(4);
  router_topk(logits.data(), 1, 6, 4, false, ids.data(), w.data());
  EXPECT_EQ(ids, (std::vector<std::int32_t>{1, 3, 5, 2}));
  EXPECT_EQ(w[0], w[1]);
  router_topk(logits.data(), 1, 6, 4, true, ids.data(), w.data());
  EXPECT_NEAR(w[0] + w[1] + w[2] + w[3], 1.0, 1e-6);
}

// Values spanning the E4M3 range per block, with zeros, ties and an all-zero block.
std::vector<float> quantize_input(std::mt19937& rng, std::int64_t m, std::int64_t n) {
  auto x = test::random_values(rng, static_cast<std::size_t>(m * n), 10.0f);
  std::uniform_int_distribution<int> e(-12, 8);
  for (std::size_t i = 0; i < x.size(); i += 3) x[i] = std::ldexp(x[i], e(rng));
  if (n >= 256)
    for (std::int64_t c = 128; c < 256; ++c) x[static_cast<std::size_t>(c)] = 0.0f;  // row 0 block 1
  return x;
}

TEST(cpu_quantize_fp8, codes_and_scales_match_enumeration) {
  std::mt19937 rng(24);
  for (const std::int64_t n : {1, 5, 128, 129, 300, 7168}) {
    const std::int64_t m = n > 1000 ? 2 : 4;
    const auto x = quantize_input(rng, m, n);
    const std::int64_t blocks = (n + 127) / 128;
    std::vector<std::uint8_t> q(static_cast<std::size_t>(m * n));
    std::vector<float> scales(static_cast<std::size_t>(m * blocks));
    quantize_fp8(x.data(), m, n, q.data(), scales.data());
    std::vector<float> back(x.size());
    dequantize_fp8(q.data(), scales.data(), m, n, back.data());
    std::vector<float> rounded = x;
    round_activations(dtype::f8_e4m3, rounded.data(), m, n);
    for (std::int64_t t = 0; t < m; ++t)
      for (std::int64_t b = 0; b < blocks; ++b) {
        const std::int64_t c0 = b * 128, c1 = std::min(n, c0 + 128);
        double amax = 0;
        for (std::int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(static_cast<double>(x[t * n + c])));
        // scale = amax / 448 as an f32 division (1 for an all-zero block).
        const float scale = amax == 0 ? 1.0f : static_cast<float>(amax) / 448.0f;
        ASSERT_EQ(scales[t * blocks + b], scale) << describe("n", n, "token", t, "block", b);
        for (std::int64_t c = c0; c < c1; ++c) {
          const float xs = x[t * n + c] / scale;
          const std::uint8_t code = test::fp8_nearest(xs);
          const std::string what = describe("n", n, "token", t, "col", c, "x", x[t * n + c]);
          ASSERT_EQ(q[t * n + c], code) << what;
          const float deq = static_cast<float>(test::fp8_value(code)) * scale;
          ASSERT_EQ(back[t * n + c], deq) << what;
          ASSERT_EQ(rounded[t * n + c], deq) << what;
        }
      }
  }
}

TEST(cpu_round_activations, bf16_and_f16_round_to_nearest) {
  std::mt19937 rng(25);
  const auto x = test::random_values(rng, 1000, 100.0f);
  for (const dtype t : {dtype::f32, dtype::bf16, dtype::f16}) {
    auto y = x;
    round_activations(t, y.data(), 10, 100);
    for (std::size_t i = 0; i < x.size(); ++i) {
      // Nearest representable: the error is at most half a unit in the last place of t.
      const int mant_bits = t == dtype::f32 ? 24 : (t == dtype::bf16 ? 8 : 11);
      const double ulp = std::ldexp(1.0, std::ilogb(x[i]) - (mant_bits - 1));
      ASSERT_LE(std::fabs(static_cast<double>(y[i]) - x[i]), ulp / 2) << describe(to_string(t), x[i]);
      ASSERT_EQ(y[i], round_to(t, y[i])) << describe(to_string(t), "not representable", y[i]);
    }
  }
}

TEST(cpu_kv_append, writes_rounded_rows_at_paged_positions) {
  std::mt19937 rng(26);
  for (const dtype t : {dtype::f32, dtype::bf16, dtype::f8_e4m3}) {
    const std::int64_t blocks = 6, bs = 4, d = 10;
    std::vector<std::uint8_t> kc(static_cast<std::size_t>(blocks * bs * d) * size_of(t), 0xAB), vc(kc.size(), 0xAB);
    const kv_layer_view cache{t, kc.data(), vc.data(), blocks, bs, d};
    const std::vector<std::int32_t> table_a = {4, 1, 5}, table_b = {0, 3};
    const std::vector<kv_slot> slots = {{table_a.data(), 0}, {table_a.data(), 9}, {table_b.data(), 6}};
    const auto k = test::random_values(rng, slots.size() * d, 500.0f);
    const auto v = test::random_values(rng, slots.size() * d, 0.01f);
    kv_append(cache, slots, k.data(), v.data());
    const std::int64_t rows[] = {4 * bs + 0, 5 * bs + 1, 3 * bs + 2};
    for (std::size_t s = 0; s < slots.size(); ++s)
      for (std::int64_t c = 0; c < d; ++c) {
        const std::size_t i = static_cast<std::size_t>(rows[s] * d + c);
        const std::string what = describe(to_string(t), "slot", s, "col", c);
        if (t == dtype::f8_e4m3) {
          ASSERT_EQ(kc[i], test::fp8_nearest(k[s * d + c])) << what;  // saturates beyond 448
          ASSERT_EQ(vc[i], test::fp8_nearest(v[s * d + c])) << what;
        } else {
          ASSERT_EQ(load_as_f32(t, kc.data(), i), test::stored_value(t, k[s * d + c])) << what;
          ASSERT_EQ(load_as_f32(t, vc.data(), i), test::stored_value(t, v[s * d + c])) << what;
        }
      }
    // Untouched rows keep their bytes.
    EXPECT_EQ(kc[(2 * bs * d) * size_of(t)], 0xAB);
  }
}

}  // namespace
}  // namespace afd::kernels::cpu
