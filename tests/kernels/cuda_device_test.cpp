// The CUDA backend's device layer and argument checks: these run on every machine, with or
// without a GPU. Without one, the runtime must answer "0 devices" with a reason, never crash.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_kernels.hpp"

namespace cu = afd::kernels::cuda;

namespace {

TEST(cuda_device, count_is_graceful) {
  const auto census = cu::cuda_device_count();
  EXPECT_GE(census.count, 0);
  if (census.count == 0) {
    EXPECT_FALSE(census.reason.empty()) << "no device must come with a reason";
  } else {
    EXPECT_TRUE(census.reason.empty()) << census.reason;
  }
  // Asking twice gives the same answer (the first failure must not poison the runtime).
  EXPECT_EQ(cu::cuda_device_count().count, census.count);
}

TEST(cuda_device, no_device_gives_errors_not_crashes) {
  const auto census = cu::cuda_device_count();
  if (census.count > 0) GTEST_SKIP() << "a GPU is present; this test covers machines without one";
  auto props = cu::query_device(0);
  ASSERT_FALSE(props.has_value());
  EXPECT_EQ(props.err().code(), afd::errc::out_of_range);
  EXPECT_NE(props.err().message().find("does not exist"), std::string::npos) << props.err().message();
  auto stream = cu::device_stream::create(0);
  EXPECT_FALSE(stream.has_value());
  auto buffer = cu::device_buffer::allocate(1024);
  EXPECT_FALSE(buffer.has_value());
  // An empty buffer needs no device.
  auto empty = cu::device_buffer::allocate(0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_EQ(empty->data(), nullptr);
}

TEST(cuda_device, query_reports_properties_when_present) {
  const auto census = cu::cuda_device_count();
  if (census.count == 0) GTEST_SKIP() << "no CUDA device: " << census.reason;
  auto props = cu::query_device(0);
  ASSERT_TRUE(props.has_value()) << props.err().to_string();
  EXPECT_FALSE(props->name.empty());
  EXPECT_GT(props->sm_count, 0);
  EXPECT_GT(props->global_memory, 0u);
  auto stream = cu::device_stream::create(0);
  ASSERT_TRUE(stream.has_value()) << stream.err().to_string();
  auto buffer = cu::device_buffer::allocate(4096);
  ASSERT_TRUE(buffer.has_value()) << buffer.err().to_string();
  std::vector<std::uint8_t> in(4096), out(4096, 0);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint8_t>(i * 7 + 3);
  ASSERT_TRUE(cu::copy_to_device(buffer->data(), in.data(), in.size(), stream->handle()).has_value());
  ASSERT_TRUE(cu::copy_to_host(out.data(), buffer->data(), out.size(), stream->handle()).has_value());
  ASSERT_TRUE(stream->synchronize().has_value());
  EXPECT_EQ(in, out);
}

// Shape validation happens before any CUDA call, so it is checked everywhere.
TEST(cuda_launch, rejects_bad_shapes_without_touching_the_device) {
  float dummy = 0;
  EXPECT_EQ(cu::rmsnorm(&dummy, 1, 0, &dummy, 1e-5f, &dummy, nullptr), cu::launch_status::invalid_argument);
  EXPECT_EQ(cu::rope_neox(&dummy, 1, 1, 7, nullptr, 1e4, nullptr), cu::launch_status::invalid_argument);
  std::int32_t ids = 0;
  EXPECT_EQ(cu::router_topk(&dummy, 1, 4, 5, false, &ids, &dummy, nullptr), cu::launch_status::invalid_argument);
  EXPECT_EQ(cu::router_topk(&dummy, 1, 2048, 4, false, &ids, &dummy, nullptr), cu::launch_status::unsupported);
  EXPECT_EQ(cu::combine_sum(&dummy, afd::dtype::f8_e4m3, 1, 1, 1, nullptr, &dummy, nullptr),
            cu::launch_status::invalid_argument);
  cu::kv_cache_view cache{afd::dtype::bf16, &dummy, &dummy, 4, 16, 96};
  cu::kv_token_slots slots{&ids, 1, &ids, &ids, 1};
  // head_dim 96 has no kernel; kv_chunk must be a multiple of 32.
  EXPECT_EQ(cu::attention(cache, slots, &dummy, 8, 0.1f, 16, &dummy, nullptr, 0, nullptr),
            cu::launch_status::unsupported);
  cache.head_dim = 64;
  EXPECT_EQ(cu::attention(cache, slots, &dummy, 8, 0.1f, 16, &dummy, nullptr, 0, nullptr, 48),
            cu::launch_status::invalid_argument);
  // Split-KV needs a workspace.
  EXPECT_EQ(cu::attention(cache, slots, &dummy, 8, 0.1f, 2048, &dummy, nullptr, 0, nullptr),
            cu::launch_status::invalid_argument);
  cu::device_weights w{afd::dtype::bf16, &dummy, nullptr, 1, 64, 12, 0};  // cols % 8 != 0
  cu::row_groups rows{nullptr, 1, 4};
  EXPECT_EQ(cu::grouped_gemm(&dummy, rows, w, nullptr, afd::dtype::f32, &dummy, nullptr),
            cu::launch_status::invalid_argument);
  w.cols = 16;
  w.type = afd::dtype::f8_e4m3;  // fp8 without block scales
  EXPECT_EQ(cu::grouped_gemm(&dummy, rows, w, nullptr, afd::dtype::f32, &dummy, nullptr),
            cu::launch_status::invalid_argument);
  // Nothing to do is fine, even without a device.
  EXPECT_EQ(cu::rmsnorm(nullptr, 0, 8, nullptr, 1e-5f, nullptr, nullptr), cu::launch_status::ok);
  EXPECT_FALSE(cu::check(cu::launch_status::unsupported, "attention").has_value());
  EXPECT_NE(cu::check(cu::launch_status::invalid_argument, "rmsnorm").err().message().find("rmsnorm"),
            std::string::npos);
}

TEST(cuda_workspace, split_kv_sizes) {
  // One chunk: no workspace. Three chunks of 512 for 64 heads x 256: partials and log-sum-exps.
  EXPECT_EQ(cu::attention_workspace_bytes(4, 64, 256, 512), 0u);
  const std::size_t slots = 4u * 3u * 64u;
  EXPECT_EQ(cu::attention_workspace_bytes(4, 64, 256, 1025), slots * 256u * 4u + slots * 4u);
}

// The host-side row plan of the routed experts, against a direct enumeration.
TEST(cuda_moe_rows, plan_orders_rows_by_owned_expert_then_token) {
  const std::int64_t m = 5, k = 3;
  const std::vector<std::int32_t> ids = {4, 1, 7,  1, 2, 4,  7, 0, 3,  9, 8, 1,  4, 7, 1};
  std::vector<float> weights(ids.size());
  for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = 0.1f * static_cast<float>(i + 1);
  const std::vector<std::int32_t> owned = {7, 1, 5};
  const auto plan = cu::plan_moe_rows(ids, weights, m, k, owned);
  std::vector<std::int32_t> offsets = {0}, tok, slot;
  std::vector<float> w;
  for (const std::int32_t e : owned) {
    for (std::int64_t t = 0; t < m; ++t)
      for (std::int64_t j = 0; j < k; ++j)
        if (ids[static_cast<std::size_t>(t * k + j)] == e) {
          tok.push_back(static_cast<std::int32_t>(t));
          slot.push_back(static_cast<std::int32_t>(j));
          w.push_back(weights[static_cast<std::size_t>(t * k + j)]);
        }
    offsets.push_back(static_cast<std::int32_t>(tok.size()));
  }
  EXPECT_EQ(plan.group_offsets, offsets);
  EXPECT_EQ(plan.row_token, tok);
  EXPECT_EQ(plan.row_slot, slot);
  EXPECT_EQ(plan.row_weight, w);
  EXPECT_EQ(plan.group_offsets.back(), 7);  // expert 7 three times, expert 1 four times, 5 never
}

}  // namespace
