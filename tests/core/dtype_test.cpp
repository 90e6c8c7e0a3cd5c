// Conversions checked against definitions computed independently in double precision:
// the nearest representable value is found by enumerating every value of the format.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "runtime/core/dtype.hpp"

namespace {

// All finite values of E4M3 (fn), from its definition: bias 7, 3 mantissa bits, no inf.
std::vector<double> all_fp8_values() {
  std::vector<double> out;
  for (int e = 0; e < 16; ++e)
    for (int m = 0; m < 8; ++m) {
      if (e == 15 && m == 7) continue;  // NaN
      double v = e == 0 ? m / 8.0 * std::pow(2.0, -6) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
      out.push_back(v);
    }
  return out;
}

// Nearest with ties to the value whose last mantissa bit is 0 (even code).
double nearest_fp8(double x) {
  if (std::fabs(x) >= 448.0) return std::copysign(448.0, x);
  const auto values = all_fp8_values();
  double best = 0;
  int best_code = 0;
  double best_dist = 1e300;
  for (int code = 0; code < static_cast<int>(values.size()); ++code) {
    double d = std::fabs(std::fabs(x) - values[code]);
    if (d < best_dist || (d == best_dist && code % 2 == 0)) {
      best_dist = d;
      best = values[code];
      best_code = code;
    }
  }
  (void)best_code;
  return std::copysign(best, x);
}

TEST(dtype, fp8_decodes_every_code) {
  const auto values = all_fp8_values();
  for (int code = 0; code < 127; ++code) {
    EXPECT_EQ(afd::fp8_e4m3_to_f32(static_cast<std::uint8_t>(code)), values[code]) << code;
    EXPECT_EQ(afd::fp8_e4m3_to_f32(static_cast<std::uint8_t>(code | 0x80)), -values[code]) << code;
  }
  EXPECT_TRUE(std::isnan(afd::fp8_e4m3_to_f32(0x7f)));
  EXPECT_EQ(afd::fp8_e4m3_to_f32(0x7e), 448.0f);
}

TEST(dtype, fp8_rounds_to_nearest_even_and_saturates) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> mag(-12, 10);
  for (int i = 0; i < 20000; ++i) {
    float x = static_cast<float>((i % 2 ? -1 : 1) * std::pow(2.0, mag(rng)));
    float got = afd::fp8_e4m3_to_f32(afd::f32_to_fp8_e4m3(x));
    ASSERT_EQ(got, static_cast<float>(nearest_fp8(x))) << "x=" << x;
  }
  // Exact midpoints between neighbours go to the even code.
  const auto values = all_fp8_values();
  for (std::size_t c = 0; c + 1 < values.size(); ++c) {
    float mid = static_cast<float>((values[c] + values[c + 1]) / 2);
    float want = static_cast<float>(c % 2 == 0 ? values[c] : values[c + 1]);
    ASSERT_EQ(afd::fp8_e4m3_to_f32(afd::f32_to_fp8_e4m3(mid)), want) << "mid=" << mid;
  }
  EXPECT_EQ(afd::fp8_e4m3_to_f32(afd::f32_to_fp8_e4m3(1e9f)), 448.0f);
  EXPECT_EQ(afd::fp8_e4m3_to_f32(afd::f32_to_fp8_e4m3(-1e9f)), -448.0f);
}

TEST(dtype, bf16_round_trip_and_rounding) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0, 100);
  for (int i = 0; i < 20000; ++i) {
    float x = dist(rng);
    float r = afd::round_to_bf16(x);
    // r must be a bf16 value and the nearest one: neighbours are r +- ulp.
    std::uint32_t bits = afd::f32_bits(r);
    ASSERT_EQ(bits & 0xffffu, 0u);
    double ulp = std::ldexp(1.0, std::ilogb(r) - 7);
    ASSERT_LE(std::fabs(static_cast<double>(x) - r), ulp / 2 + 1e-30) << x;
  }
  EXPECT_EQ(afd::round_to_bf16(1.0f + 1.0f / 256), 1.0f);               // tie -> even
  EXPECT_EQ(afd::round_to_bf16(1.0f + 3.0f / 256), 1.0f + 4.0f / 256);  // tie -> even (up)
}

TEST(dtype, f16_round_trip_and_rounding) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    float f = afd::f16_to_f32(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(afd::f32_to_f16(f), h) << h;
  }
  EXPECT_EQ(afd::f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(afd::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(afd::f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(afd::f32_to_f16(65519.0f), 0x7bff);
}

TEST(dtype, names_round_trip) {
  for (auto t : {afd::dtype::f32, afd::dtype::f16, afd::dtype::bf16, afd::dtype::f8_e4m3})
    EXPECT_EQ(afd::parse_dtype(afd::to_string(t)), t);
  EXPECT_FALSE(afd::parse_dtype("int8").has_value());
}

}  // namespace
