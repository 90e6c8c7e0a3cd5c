// Every request's tokens, finish reason and logits rows from an AFD cluster of engine threads are
// bitwise the reference engine's, for every A:F shape, expert placement and K.

#include "tests/dataplane/data_plane_harness.hpp"

namespace afd::dataplane::testing {
namespace {

struct shape_case {
  std::uint32_t A, F;
  placement place;
};

std::string name_of(placement p) {
  switch (p) {
    case placement::contiguous: return "contiguous";
    case placement::round_robin: return "round_robin";
    case placement::uneven: return "uneven";
  }
  return "?";
}

void run_case(const shape_case& s, std::uint32_t K, const numerics& num, const std::vector<engine::request>& reqs,
              const std::vector<engine::result>& want) {
  SCOPED_TRACE(std::to_string(s.A) + "A" + std::to_string(s.F) + "F " + name_of(s.place) + " K=" + std::to_string(K) +
               " dispatch=" + std::string(to_string(num.dispatch)));
  cluster_options o;
  o.A = s.A;
  o.F = s.F;
  o.place = s.place;
  o.plane.num = num;
  o.plane.micro_batches = K;
  o.plane.max_tokens_per_micro_batch = 12;  // small: prefill chunks get cut and spread
  o.plane.prefill_chunk = 20;
  o.max_running = 6;
  cluster c(o);
  c.start();
  for (std::size_t i = 0; i < reqs.size(); ++i)
    c.admit(static_cast<std::uint32_t>(i % s.A), static_cast<engine::request_id>(i + 1), reqs[i]);
  ASSERT_TRUE(c.wait_finished(reqs.size())) << (c.failures().empty() ? "timeout" : c.failures()[0]);
  auto got = c.results();
  auto streamed = c.streamed();
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const auto id = static_cast<engine::request_id>(i + 1);
    ASSERT_TRUE(got.count(id)) << "request " << id;
    EXPECT_TRUE(same_result(got[id], want[i])) << "request " << id;
    // The streamed tokens are the result's, with their indices.
    const auto& st = streamed[id];
    ASSERT_EQ(st.size(), want[i].tokens.size()) << "request " << id;
    for (std::size_t j = 0; j < st.size(); ++j) {
      EXPECT_EQ(st[j].first, static_cast<std::int64_t>(j));
      EXPECT_EQ(st[j].second, want[i].tokens[j]);
    }
  }
  c.stop();
  EXPECT_TRUE(c.failures().empty()) << c.failures()[0];
  for (std::uint32_t a = 0; a < s.A; ++a) EXPECT_EQ(c.attn(a).free_kv_blocks(), o.num_blocks);
}

const std::vector<shape_case> shapes = {
    {1, 1, placement::contiguous}, {2, 1, placement::contiguous}, {1, 2, placement::round_robin},
    {2, 2, placement::contiguous}, {3, 2, placement::uneven},     {2, 3, placement::round_robin},
    {2, 3, placement::uneven},     {1, 3, placement::contiguous},
};

struct numerics_case {
  const char* name;
  numerics num;
};

numerics with(dtype kv, dtype dispatch, dtype combine) { return {kv, dispatch, combine, combine_mode::deterministic}; }

class data_plane_equivalence : public ::testing::TestWithParam<numerics_case> {};

TEST_P(data_plane_equivalence, every_shape_and_k_is_bitwise_the_reference) {
  const numerics num = GetParam().num;
  auto reqs = workload(10, static_cast<std::uint64_t>(num.dispatch) + 3 * static_cast<std::uint64_t>(num.kv));
  // Stop ids that the requests do produce, so that both finish reasons occur.
  const auto plain = reference(reqs, num);
  ASSERT_EQ(plain.size(), reqs.size());
  std::size_t stops = 0;
  for (std::size_t i = 0; i < reqs.size() && stops < 2; ++i) {
    if (plain[i].tokens.size() < 4) continue;
    reqs[i].stop_ids = {plain[i].tokens[2]};
    ++stops;
  }
  ASSERT_EQ(stops, 2u);
  const auto want = reference(reqs, num);
  ASSERT_EQ(want.size(), reqs.size());
  std::set<engine::finish_reason> reasons;
  for (const auto& r : want) reasons.insert(r.reason);
  EXPECT_EQ(reasons.size(), 2u);  // length and stop
  for (const auto& s : shapes)
    for (std::uint32_t K : {1u, 2u, 3u}) run_case(s, K, num, reqs, want);
}

// A model without a shared expert (MoE tokens get top-k units only), renormalised top-2 routing,
// dense layers between MoE layers.
TEST(data_plane_equivalence_variant, no_shared_expert_and_interleaved_dense_layers) {
  const auto all = load(engine::weight_selection::all(), variant_model());
  const auto reqs = workload(8, 9);
  for (numerics num : {numerics{}, numerics::exact()}) {
    const auto want = reference(reqs, num, all);
    for (auto [A, F, K] : {std::tuple{2u, 3u, 2u}, std::tuple{1u, 2u, 3u}, std::tuple{3u, 1u, 1u}}) {
      SCOPED_TRACE(std::to_string(A) + "A" + std::to_string(F) + "F K=" + std::to_string(K));
      cluster_options o;
      o.A = A;
      o.F = F;
      o.model = variant_model();
      o.place = placement::round_robin;
      o.plane.num = num;
      o.plane.micro_batches = K;
      cluster c(o);
      c.start();
      for (std::size_t i = 0; i < reqs.size(); ++i)
        c.admit(static_cast<std::uint32_t>(i % A), static_cast<engine::request_id>(i + 1), reqs[i]);
      ASSERT_TRUE(c.wait_finished(reqs.size())) << (c.failures().empty() ? "timeout" : c.failures()[0]);
      const auto got = c.results();
      for (std::size_t i = 0; i < reqs.size(); ++i)
        EXPECT_TRUE(same_result(got.at(static_cast<engine::request_id>(i + 1)), want[i])) << "request " << i + 1;
    }
  }
}

// The comparison can fail: a cluster with fp8 dispatch against a reference run with bf16 dispatch.
TEST(data_plane_equivalence_control, another_rounding_point_is_detected) {
  numerics fp8, bf16;
  bf16.dispatch = dtype::bf16;
  const auto reqs = workload(6);
  const auto other = reference(reqs, bf16);
  cluster_options o;
  o.A = 2;
  o.F = 2;
  o.plane.num = fp8;
  cluster c(o);
  c.start();
  for (std::size_t i = 0; i < reqs.size(); ++i)
    c.admit(static_cast<std::uint32_t>(i % 2), static_cast<engine::request_id>(i + 1), reqs[i]);
  ASSERT_TRUE(c.wait_finished(reqs.size()));
  auto got = c.results();
  std::size_t differ = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) differ += !same_result(got[static_cast<engine::request_id>(i + 1)], other[i]);
  EXPECT_GT(differ, 0u);
}

// The default (fp8 dispatch, bf16 combine, bf16 KV), bf16 dispatch, everything f32, and a mix
// with f32 results and an fp8 KV cache.
INSTANTIATE_TEST_SUITE_P(numerics, data_plane_equivalence,
                         ::testing::Values(numerics_case{"default", numerics{}},
                                           numerics_case{"bf16_dispatch", with(dtype::bf16, dtype::bf16, dtype::bf16)},
                                           numerics_case{"exact", numerics::exact()},
                                           numerics_case{"fp8kv_bf16_f32", with(dtype::f8_e4m3, dtype::bf16, dtype::f32)}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace afd::dataplane::testing
