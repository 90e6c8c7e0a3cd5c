#include <gtest/gtest.h>

#include "runtime/core/error.hpp"

namespace {

afd::expected<int> parse_positive(int v) {
  if (v <= 0) return afd::fail(afd::errc::invalid_argument, "value ", v, " is not positive");
  return v;
}

TEST(error, expected_carries_value_or_error) {
  auto ok = parse_positive(3);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 3);
  auto bad = parse_positive(-2);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code(), afd::errc::invalid_argument);
  EXPECT_EQ(bad.err().to_string(), "invalid_argument: value -2 is not positive");
}

TEST(error, every_code_has_a_name) {
  for (int c = 0; c <= static_cast<int>(afd::errc::internal); ++c)
    EXPECT_STRNE(afd::to_string(static_cast<afd::errc>(c)), "unknown") << c;
}

}  // namespace
