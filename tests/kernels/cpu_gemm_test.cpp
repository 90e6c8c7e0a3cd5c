// gemm, gather_rows and swiglu against float64 oracles.

#include <gtest/gtest.h>

#include <cstring>

#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/dot.hpp"
#include "tests/kernels/cpu_oracle.hpp"

namespace afd::kernels::cpu {
namespace {

using test::describe;

struct gemm_case {
  std::int64_t m, n, k;
  dtype wt;
};

const dtype weight_types[] = {dtype::f32, dtype::bf16, dtype::f16};

std::vector<gemm_case> gemm_cases() {
  std::vector<gemm_case> cases;
  const std::int64_t shapes[][3] = {{1, 1, 1},   {1, 5, 7},    {3, 9, 16},   {1, 33, 17},  {2, 7, 31},
                                    {17, 13, 100}, {5, 64, 129}, {4, 3, 1000}, {65, 9, 48},  {130, 6, 257},
                                    {1, 300, 511}};
  for (const auto& s : shapes)
    for (const dtype t : weight_types) cases.push_back({s[0], s[1], s[2], t});
  return cases;
}

TEST(cpu_gemm, matches_float64_oracle) {
  std::mt19937 rng(7);
  for (const int threads : {1, 2}) {
    set_num_threads(threads);
    for (const auto& c : gemm_cases()) {
      const auto w = test::random_values(rng, static_cast<std::size_t>(c.n * c.k), 1.0f, c.wt);
      const auto wbuf = test::encode(c.wt, w);
      const auto x = test::random_values(rng, static_cast<std::size_t>(c.m * c.k), 2.0f);
      std::vector<float> y(static_cast<std::size_t>(c.m * c.n), NAN);
      gemm(x.data(), c.m, {c.wt, wbuf.data(), c.n, c.k}, y.data());
      for (std::int64_t i = 0; i < c.m; ++i)
        for (std::int64_t j = 0; j < c.n; ++j) {
          double sum_abs = 0.0;
          const double ref = test::dot_ref(x.data() + i * c.k, w.data() + j * c.k, c.k, &sum_abs);
          ASSERT_NEAR(y[static_cast<std::size_t>(i * c.n + j)], ref, test::dot_error_bound(c.k, sum_abs))
              << describe("m", c.m, "n", c.n, "k", c.k, "w", to_string(c.wt), "threads", threads, "at", i, j);
        }
    }
  }
}

TEST(cpu_gemm, error_bound_is_tight_enough_to_catch_a_wrong_order) {
  // A plain sequential f32 sum of 1000 terms of alternating large/small magnitude differs from
  // the blocked order by more than rounding noise only when inputs are adversarial; here we just
  // check the oracle catches a missing term, i.e. the test can fail.
  std::mt19937 rng(3);
  const std::int64_t k = 100;
  const auto w = test::random_values(rng, k, 1.0f);
  const auto x = test::random_values(rng, k, 1.0f);
  float y = 0.0f;
  gemm(x.data(), 1, {dtype::f32, w.data(), 1, k}, &y);
  double sum_abs = 0.0;
  const double ref_missing_last = test::dot_ref(x.data(), w.data(), k - 1, &sum_abs);
  EXPECT_GT(std::fabs(y - ref_missing_last), test::dot_error_bound(k, sum_abs));
}

TEST(cpu_gemm, simd_and_portable_paths_agree_bitwise) {
  if (!detail::simd_available()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(11);
  for (const auto& c : gemm_cases()) {
    for (const dtype wt : {c.wt, dtype::f8_e4m3}) {
      const auto w = test::random_values(rng, static_cast<std::size_t>(c.n * c.k), 1.0f, wt);
      const auto wbuf = test::encode(wt, w);
      const auto x = test::random_values(rng, static_cast<std::size_t>(c.m * c.k), 2.0f);
      std::vector<float> a(static_cast<std::size_t>(c.m * c.n)), b(a.size());
      detail::dot_tile(x.data(), c.k, c.m, wt, wbuf.data(), c.k, c.n, c.k, a.data(), c.n);
      detail::set_simd_enabled(false);
      detail::dot_tile(x.data(), c.k, c.m, wt, wbuf.data(), c.k, c.n, c.k, b.data(), c.n);
      detail::set_simd_enabled(true);
      ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0)
          << describe("m", c.m, "n", c.n, "k", c.k, "w", to_string(wt));
    }
  }
}

TEST(cpu_gather_rows, converts_rows_exactly) {
  std::mt19937 rng(5);
  for (const dtype t : weight_types) {
    const std::int64_t rows = 37, cols = 19;
    const auto table = test::random_values(rng, static_cast<std::size_t>(rows * cols), 3.0f, t);
    const auto buf = test::encode(t, table);
    const std::vector<std::int32_t> ids = {5, 0, 36, 5, 17};
    std::vector<float> out(ids.size() * static_cast<std::size_t>(cols));
    gather_rows({t, buf.data(), rows, cols}, ids, out.data());
    for (std::size_t i = 0; i < ids.size(); ++i)
      for (std::int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(out[i * cols + c], table[static_cast<std::size_t>(ids[i] * cols + c)])
            << describe("dtype", to_string(t), "row", i, "col", c);
  }
}

TEST(cpu_swiglu, matches_float64_oracle) {
  std::mt19937 rng(9);
  const std::int64_t shapes[][3] = {{1, 16, 32}, {3, 33, 47}, {17, 64, 100}, {2, 129, 5}, {1, 1, 1}};
  for (const auto& s : shapes) {
    const std::int64_t m = s[0], hidden = s[1], inter = s[2];
    for (const dtype t : weight_types) {
      const auto g = test::random_values(rng, static_cast<std::size_t>(inter * hidden), 0.5f, t);
      const auto u = test::random_values(rng, static_cast<std::size_t>(inter * hidden), 0.5f, t);
      const auto d = test::random_values(rng, static_cast<std::size_t>(hidden * inter), 0.5f, t);
      const auto gb = test::encode(t, g), ub = test::encode(t, u), db = test::encode(t, d);
      const auto x = test::random_values(rng, static_cast<std::size_t>(m * hidden), 2.0f);
      std::vector<float> y(static_cast<std::size_t>(m * hidden)), scratch(static_cast<std::size_t>(2 * m * inter));
      swiglu(x.data(), m, {t, gb.data(), inter, hidden}, {t, ub.data(), inter, hidden}, {t, db.data(), hidden, inter},
             y.data(), scratch.data());
      for (std::int64_t i = 0; i < m; ++i) {
        // Oracle: h_j = silu(g_j . x) * (u_j . x); y = d h. Error budget: each dot's bound,
        // propagated through silu (|silu'| < 1.1) and the product, then the down dot's own.
        std::vector<double> h(static_cast<std::size_t>(inter)), h_err(h.size());
        const double dot_u = (static_cast<double>((hidden + 15) / 16) + 6.0) * test::unit_roundoff;
        for (std::int64_t j = 0; j < inter; ++j) {
          double ag = 0, au = 0;
          const double gz = test::dot_ref(x.data() + i * hidden, g.data() + j * hidden, hidden, &ag);
          const double uz = test::dot_ref(x.data() + i * hidden, u.data() + j * hidden, hidden, &au);
          const double silu = gz / (1.0 + std::exp(-gz));
          h[j] = silu * uz;
          h_err[j] = 1.1 * dot_u * ag * std::fabs(uz) + std::fabs(silu) * dot_u * au + 8 * test::unit_roundoff * std::fabs(h[j]);
        }
        for (std::int64_t r = 0; r < hidden; ++r) {
          double ref = 0, abs_sum = 0, prop = 0;
          for (std::int64_t j = 0; j < inter; ++j) {
            const double dj = d[static_cast<std::size_t>(r * inter + j)];
            ref += dj * h[j];
            abs_sum += std::fabs(dj * h[j]);
            prop += std::fabs(dj) * h_err[j];
          }
          const double tol = 2.0 * (prop + test::dot_error_bound(inter, abs_sum)) + 1e-30;
          ASSERT_NEAR(y[static_cast<std::size_t>(i * hidden + r)], ref, tol)
              << describe("m", m, "H", hidden, "I", inter, "w", to_string(t), "token", i, "out", r);
        }
      }
    }
  }
}

}  // namespace
}  // namespace afd::kernels::cpu
