#include <gtest/gtest.h>

#include <cstring>

#include "tests/transport/exchange_harness.hpp"
#include "transport/loopback.hpp"

namespace {

using namespace afd::transport;
using namespace afd::transport::testing;
using namespace std::chrono_literals;

run_plan small_plan(combine_mode mode, afd::dtype dt) {
  run_plan p;
  p.shape.hidden = 256;
  p.shape.top_k = 2;
  p.shape.max_tokens = 8;
  p.shape.micro_batches = 3;
  p.shape.dispatch_dtype = dt;
  p.shape.scale_block = 128;
  p.shape.mode = mode;
  return p;
}

run_result run_loopback(std::uint32_t A, std::uint32_t F, const run_plan& plan) {
  auto fabric = loopback_fabric::create();
  std::vector<std::unique_ptr<transport>> owned;
  std::vector<transport*> attn, ffn;
  for (std::uint32_t i = 0; i < A + F; ++i) {
    owned.push_back(std::move(*make_loopback_transport(fabric, static_cast<rank_t>(10 + i))));
    (i < A ? attn : ffn).push_back(owned.back().get());
  }
  return run_exchange(attn, ffn, plan);
}

TEST(exchange, layouts_match_the_papers_message_sizes) {
  exchange_shape s;
  s.hidden = 7168;
  s.top_k = 0;
  s.max_tokens = 128;
  s.dispatch_dtype = afd::dtype::f8_e4m3;
  s.mode = combine_mode::throughput;
  // 128 tokens x 7168 FP8 = 896 KiB of activations (plus 56 scales per token).
  EXPECT_EQ(dispatch_layout::of(s, 128, false).scales_offset, 917504u);
  EXPECT_EQ(dispatch_layout::of(s, 128, false).bytes, 917504u + 128u * 56u * 4u);
  EXPECT_EQ(combine_layout::of(s, 128).bytes, 1835008u);  // 1.75 MiB BF16
  EXPECT_EQ(dispatch_layout::of(s, 0, true).bytes, 0u);  // header-only message
}

TEST(exchange, deterministic_fp8_2a3f_matches_oracle) {
  auto plan = small_plan(combine_mode::deterministic, afd::dtype::f8_e4m3);
  expect_matches_oracle(plan, run_loopback(2, 3, plan), 1e-6);
}

TEST(exchange, throughput_bf16_3a2f_matches_oracle) {
  auto plan = small_plan(combine_mode::throughput, afd::dtype::bf16);
  expect_matches_oracle(plan, run_loopback(3, 2, plan), 3e-2);
}

TEST(exchange, deterministic_mode_is_bitwise_independent_of_cluster_shape) {
  auto plan = small_plan(combine_mode::deterministic, afd::dtype::f8_e4m3);
  run_result one = run_loopback(2, 1, plan);
  run_result four = run_loopback(2, 4, plan);
  ASSERT_TRUE(one.failures.empty() && four.failures.empty());
  ASSERT_EQ(one.outputs.size(), four.outputs.size());
  for (const auto& [key, out] : one.outputs) {
    const auto& other = four.outputs.at(key);
    ASSERT_EQ(out.values.size(), other.values.size());
    // memcmp of no bytes still wants valid pointers (an empty vector has none).
    if (!out.values.empty()) {
      EXPECT_EQ(std::memcmp(out.values.data(), other.values.data(), out.values.size() * 4), 0);
    }
  }
}

// A hand-built peer that sends raw messages to one attention worker's exchange.
struct raw_fixture : ::testing::Test {
  void SetUp() override {
    fabric = loopback_fabric::create();
    at = std::move(*make_loopback_transport(fabric, 1));
    ff = std::move(*make_loopback_transport(fabric, 2));
    a_to_f = *at->connect(ff->address());
    f_to_a = *ff->connect(at->address());
    shape.hidden = 128;
    shape.top_k = 1;
    shape.max_tokens = 2;
    shape.micro_batches = 1;
    shape.dispatch_dtype = afd::dtype::bf16;
    shape.mode = combine_mode::throughput;
    ex = std::move(*attention_exchange::create(*at, shape, {a_to_f}));
    fbuf.resize(1 << 16);
    freg = *ff->register_memory(fbuf.data(), fbuf.size(), memory_kind::host);
  }
  // Dispatches one token for `id` and returns what the peer received.
  void dispatch(step_id id) {
    dispatch_view d = ex->begin_dispatch(0, 1, true, after(1s));
    ASSERT_NE(d.tokens, nullptr);
    d.topk_ids[0] = 0;
    d.topk_weights[0] = 1;
    ASSERT_NE(ex->post_dispatch(0, id), op_status::error);
    op_handle r;
    ff->post_recv(f_to_a, (std::uint64_t{1} << 32), freg, 0, fbuf.size(), r);
    ASSERT_EQ(ff->wait(r, after(1s)), op_status::done);
    ff->release(r);
  }
  void send_combine(const header_fields& h, std::size_t bytes) {
    write_header(fbuf.data(), h);
    op_handle s;
    ff->post_send(f_to_a, (std::uint64_t{2} << 32), freg, 0, bytes, s);
    ff->release(s);
  }
  header_fields good(step_id id) {
    header_fields h;
    h.kind = message_kind::combine;
    h.payload_dtype = afd::dtype::bf16;
    h.mode = combine_mode::throughput;
    h.id = id;
    h.source = 2;
    h.hidden = 128;
    h.token_count = 1;
    h.vector_count = 1;
    h.byte_count = 256;
    return h;
  }
  std::shared_ptr<loopback_fabric> fabric;
  std::unique_ptr<transport> at, ff;
  peer_id a_to_f = 0, f_to_a = 0;
  exchange_shape shape;
  std::unique_ptr<attention_exchange> ex;
  std::vector<std::byte> fbuf;
  region freg;
};

TEST_F(raw_fixture, stale_epoch_is_dropped_and_current_one_accepted) {
  step_id id{5, 10, 0, 3};
  dispatch(id);
  header_fields old = good(id);
  old.id.epoch = 4;
  send_combine(old, 64 + 256);
  EXPECT_EQ(ex->wait_combine(0, after(50ms)), op_status::timeout);  // dropped, still waiting
  send_combine(good(id), 64 + 256);
  EXPECT_EQ(ex->wait_combine(0, after(1s)), op_status::done);
}

TEST_F(raw_fixture, a_duplicate_of_an_earlier_message_is_dropped) {
  step_id id{5, 10, 0, 3};
  dispatch(id);
  header_fields earlier = good(id);
  earlier.id.layer = 2;  // the message before this one, arriving again
  send_combine(earlier, 64 + 256);
  EXPECT_EQ(ex->wait_combine(0, after(50ms)), op_status::timeout);  // dropped, still waiting
  send_combine(good(id), 64 + 256);
  EXPECT_EQ(ex->wait_combine(0, after(1s)), op_status::done);
}

TEST_F(raw_fixture, malformed_headers_are_errors_naming_the_check) {
  struct bad_case {
    const char* name;
    std::function<void(header_fields&, std::size_t&)> edit;
    afd::errc code;
  };
  std::vector<bad_case> cases = {
      {"wrong_layer", [](header_fields& h, std::size_t&) { h.id.layer = 4; }, afd::errc::bad_message},
      {"wrong_step", [](header_fields& h, std::size_t&) { h.id.step += 7; }, afd::errc::bad_message},
      {"wrong_source", [](header_fields& h, std::size_t&) { h.source = 3; }, afd::errc::bad_message},
      {"future_epoch", [](header_fields& h, std::size_t&) { h.id.epoch = 6; }, afd::errc::stale_epoch},
      {"bad_length", [](header_fields& h, std::size_t&) { h.byte_count = 200; }, afd::errc::bad_message},
      {"bad_length", [](header_fields& h, std::size_t& n) { h.token_count = 2; h.vector_count = 2; h.byte_count = 512; n = 64 + 512; }, afd::errc::bad_message},
      {"bad_dtype", [](header_fields& h, std::size_t&) { h.payload_dtype = afd::dtype::f32; }, afd::errc::bad_message},
      {"bad_kind", [](header_fields& h, std::size_t&) { h.kind = message_kind::dispatch; }, afd::errc::bad_message},
      {"short_message", [](header_fields&, std::size_t& n) { n = 10; }, afd::errc::bad_message},
  };
  std::uint64_t step = 100;
  for (const auto& c : cases) {
    step_id id{5, step++, 0, 3};
    dispatch(id);
    header_fields h = good(id);
    std::size_t bytes = 64 + 256;
    c.edit(h, bytes);
    send_combine(h, bytes);
    EXPECT_EQ(ex->wait_combine(0, after(1s)), op_status::error) << c.name;
    afd::error e = ex->last_error(0);
    EXPECT_EQ(e.code(), c.code) << c.name << ": " << e.to_string();
    EXPECT_NE(e.message().find(c.name), std::string::npos) << e.to_string();
  }
}

TEST_F(raw_fixture, dead_peer_is_an_error_within_the_deadline) {
  step_id id{1, 1, 0, 0};
  dispatch(id);
  std::thread killer([&] {
    std::this_thread::sleep_for(30ms);
    fabric->kill(2);
  });
  auto t0 = clock::now();
  EXPECT_EQ(ex->wait_combine(0, after(5s)), op_status::error);
  EXPECT_LT(clock::now() - t0, 2s);
  killer.join();
  EXPECT_EQ(ex->last_error(0).code(), afd::errc::peer_failed);
  EXPECT_NE(ex->last_error(0).message().find("rank 2"), std::string::npos);
}

TEST_F(raw_fixture, silent_peer_is_a_timeout_at_the_deadline) {
  dispatch({1, 1, 0, 0});
  EXPECT_EQ(ex->wait_combine(0, after(100ms)), op_status::timeout);
  EXPECT_EQ(ex->last_error(0).code(), afd::errc::timeout);
}

TEST(exchange, rejects_bad_shapes) {
  auto fabric = loopback_fabric::create();
  auto t = std::move(*make_loopback_transport(fabric, 1));
  exchange_shape s;
  EXPECT_FALSE(attention_exchange::create(*t, s, {0}));
  s.hidden = 8;
  s.max_tokens = 1;
  s.dispatch_dtype = afd::dtype::f16;  // f8_e4m3, bf16 and f32 are the wire's dtypes
  EXPECT_FALSE(ffn_exchange::create(*t, s, {0}));
}

}  // namespace
