// sample(): greedy ties, reproducibility per (seed, token index), the distribution, top-k / top-p.

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "kernels/cpu/cpu_kernels.hpp"
#include "tests/kernels/cpu_oracle.hpp"

namespace afd::kernels::cpu {
namespace {

using test::describe;

TEST(cpu_sample, greedy_is_argmax_with_ties_to_the_lower_id) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
  EXPECT_EQ(sample(logits.data(), 5, {}, 0), 1);
  EXPECT_EQ(sample(logits.data(), 5, {0.0f, 0, 1.0f, 99}, 7), 1);  // seed and index play no part
  const std::vector<float> flat(9, 3.0f);
  EXPECT_EQ(sample(flat.data(), 9, {}, 0), 0);
  const std::vector<float> one = {-5.0f};
  EXPECT_EQ(sample(one.data(), 1, {1.0f, 0, 1.0f, 1}, 3), 0);
}

TEST(cpu_sample, reproducible_per_seed_and_index_and_varies_across_indices) {
  std::mt19937 rng(51);
  const auto logits = test::random_values(rng, 1000, 2.0f);
  const sampling_params p{1.0f, 0, 1.0f, 1234};
  std::set<std::int32_t> seen;
  for (std::uint64_t i = 0; i < 64; ++i) {
    const auto a = sample(logits.data(), 1000, p, i);
    ASSERT_EQ(a, sample(logits.data(), 1000, p, i)) << describe("index", i);
    seen.insert(a);
  }
  EXPECT_GT(seen.size(), 20u);  // a near-flat distribution over 1000 tokens
  // Another seed gives another sequence.
  int same = 0;
  for (std::uint64_t i = 0; i < 64; ++i)
    same += sample(logits.data(), 1000, p, i) == sample(logits.data(), 1000, {1.0f, 0, 1.0f, 99}, i);
  EXPECT_LT(same, 10);
}

// Pearson chi-square of counts against expected probabilities.
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int draws) {
  double chi = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const double e = probs[i] * draws;
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

TEST(cpu_sample, empirical_distribution_matches_softmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f, 1.5f, 0.5f};
  for (const float temp : {0.5f, 1.0f, 2.0f}) {
    std::vector<double> p(logits.size());
    double sum = 0;
    for (std::size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(logits[i] / temp);
    for (auto& v : p) v /= sum;
    const int draws = 20000;
    std::vector<int> counts(p.size());
    for (int i = 0; i < draws; ++i)
      ++counts[static_cast<std::size_t>(sample(logits.data(), 6, {temp, 0, 1.0f, 7}, static_cast<std::uint64_t>(i)))];
    // 5 degrees of freedom: P(chi2 > 25) ~ 1.4e-4; seeds are fixed, so this is deterministic.
    EXPECT_LT(chi_square(counts, p, draws), 25.0) << describe("temperature", temp);
  }
}

TEST(cpu_sample, top_k_and_top_p_never_pick_excluded_tokens) {
  std::mt19937 rng(52);
  const std::int64_t vocab = 50;
  const auto logits = test::random_values(rng, vocab, 3.0f);
  std::vector<int> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  for (const std::int32_t k : {1, 3, 10}) {
    const std::set<int> allowed(order.begin(), order.begin() + k);
    std::set<int> picked;
    for (std::uint64_t i = 0; i < 2000; ++i) {
      const int t = sample(logits.data(), vocab, {1.5f, k, 1.0f, 5}, i);
      ASSERT_TRUE(allowed.count(t)) << describe("top_k", k, "picked", t);
      picked.insert(t);
    }
    EXPECT_EQ(picked.size(), allowed.size()) << describe("top_k", k);  // every allowed one shows up
  }
  for (const float top_p : {0.05f, 0.3f, 0.8f}) {
    std::vector<double> p(static_cast<std::size_t>(vocab));
    double sum = 0;
    for (std::int64_t i = 0; i < vocab; ++i) sum += p[i] = std::exp(static_cast<double>(logits[i]));
    std::set<int> allowed;
    double cum = 0;
    for (const int t : order) {  // smallest top set with mass >= top_p
      allowed.insert(t);
      cum += p[t] / sum;
      if (cum >= top_p) break;
    }
    std::set<int> picked;
    for (std::uint64_t i = 0; i < 2000; ++i) {
      const int t = sample(logits.data(), vocab, {1.0f, 0, top_p, 6}, i);
      ASSERT_TRUE(allowed.count(t)) << describe("top_p", top_p, "picked", t, "allowed", allowed.size());
      picked.insert(t);
    }
    EXPECT_EQ(picked.size(), allowed.size()) << describe("top_p", top_p);
  }
  // Both together: top-k first, then top-p within the k.
  for (std::uint64_t i = 0; i < 500; ++i) {
    const int t = sample(logits.data(), vocab, {1.0f, 5, 0.5f, 8}, i);
    ASSERT_TRUE(std::find(order.begin(), order.begin() + 5, t) != order.begin() + 5) << describe("picked", t);
  }
}

TEST(cpu_sample, ties_in_probability_order_by_lower_id) {
  // Three equal logits and top_k 2: only the two lowest ids of the tie may be picked.
  const std::vector<float> logits = {0.0f, 1.0f, 1.0f, 1.0f};
  std::set<int> picked;
  for (std::uint64_t i = 0; i < 500; ++i) picked.insert(sample(logits.data(), 4, {1.0f, 2, 1.0f, 3}, i));
  EXPECT_EQ(picked, (std::set<int>{1, 2}));
}

}  // namespace
}  // namespace afd::kernels::cpu
