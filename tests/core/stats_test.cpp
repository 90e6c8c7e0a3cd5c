// percentile() against values worked out by hand (nearest rank).

#include <gtest/gtest.h>

#include "runtime/core/stats.hpp"

namespace afd {
namespace {

TEST(stats, nearest_rank_percentiles_by_hand) {
  const std::vector<double> v{15, 20, 35, 40, 50};  // unsorted input is sorted inside
  EXPECT_EQ(percentile({}, 0.5), 0.0);
  EXPECT_EQ(percentile(v, 0.0), 15.0);
  EXPECT_EQ(percentile(v, 0.05), 15.0);  // rank ceil(0.25) = 1
  EXPECT_EQ(percentile(v, 0.30), 20.0);  // rank ceil(1.5) = 2
  EXPECT_EQ(percentile(v, 0.40), 20.0);  // rank 2 exactly
  EXPECT_EQ(percentile(v, 0.50), 35.0);  // rank ceil(2.5) = 3
  EXPECT_EQ(percentile(v, 0.99), 50.0);
  EXPECT_EQ(percentile(v, 1.0), 50.0);
  EXPECT_EQ(percentile({50, 15, 40, 20, 35}, 0.5), 35.0);
  std::vector<double> hundred;
  for (int i = 100; i >= 1; --i) hundred.push_back(i);
  EXPECT_EQ(percentile(hundred, 0.99), 99.0);
  EXPECT_EQ(percentile(hundred, 0.5), 50.0);
}

}  // namespace
}  // namespace afd
