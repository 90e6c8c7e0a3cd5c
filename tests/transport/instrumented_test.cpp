// The instrumented transport: counters, and each data-plane fault as the receiving side sees it.
#include "transport/instrumented.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include "transport/loopback.hpp"
#include "transport/wire.hpp"

namespace afd::transport {
namespace {

using namespace std::chrono_literals;

struct instrumented_pair : ::testing::Test {
  void arm(const char* rule) {
    auto r = faults::parse_rule(rule);
    ASSERT_TRUE(r) << r.err().message();
    site->arm(std::make_shared<faults::fault_plan>(std::vector<faults::fault_rule>{*r}, 11));
  }
  void SetUp() override {
    fabric = loopback_fabric::create();
    auto ta = make_loopback_transport(fabric, 1);
    auto tb = make_loopback_transport(fabric, 2);
    ASSERT_TRUE(ta && tb);
    site = std::make_shared<faults::fault_site>(faults::site_identity{"a0", "attention"});
    counters = std::make_shared<transport_counters>();
    a = make_instrumented_transport(std::move(*ta), site, [](rank_t r) { return r == 2 ? "f0" : "?"; }, counters);
    b = make_instrumented_transport(std::move(*tb), nullptr, {}, std::make_shared<transport_counters>());
    a_to_b = *a->connect(b->address());
    b_to_a = *b->connect(a->address());
    ra = *a->register_memory(abuf.data(), abuf.size(), memory_kind::host);
    rb = *b->register_memory(bbuf.data(), bbuf.size(), memory_kind::host);
    // A real header in front of the payload, as the exchanges send.
    header_fields f;
    f.kind = message_kind::dispatch;
    f.payload_dtype = dtype::bf16;
    f.id = {1, 5, 0, 2};
    f.source = 1;
    f.hidden = 8;
    f.token_count = 1;
    f.vector_count = 1;
    f.byte_count = 16;
    write_header(abuf.data(), f);
  }
  /// Receives one message on tag 3 within `wait`; its bytes, or -1 when nothing came.
  long receive(std::chrono::milliseconds wait) {
    op_handle r;
    b->post_recv(b_to_a, 3, rb, 0, 1024, r);
    const op_status s = b->wait(r, after(wait));
    const long bytes = s == op_status::done ? static_cast<long>(b->result(r).bytes) : -1;
    b->release(r);
    return bytes;
  }
  header_expectation expectation() const { return {message_kind::dispatch, {1, 5, 0, 2}, 1}; }

  std::shared_ptr<loopback_fabric> fabric;
  std::shared_ptr<faults::fault_site> site;
  std::shared_ptr<transport_counters> counters;
  std::unique_ptr<transport> a, b;
  peer_id a_to_b = 0, b_to_a = 0;
  std::array<std::byte, 1024> abuf{}, bbuf{};
  region ra, rb;
};

TEST_F(instrumented_pair, counts_what_is_sent_and_received) {
  op_handle s;
  a->post_send(a_to_b, 3, ra, 0, 80, s);
  EXPECT_EQ(receive(1s), 80);
  a->release(s);
  EXPECT_EQ(counters->bytes_sent.load(), 80u);
  EXPECT_EQ(counters->messages_sent.load(), 1u);
  op_handle r;
  a->post_recv(a_to_b, 4, ra, 0, 1024, r);
  op_handle back;
  b->post_send(b_to_a, 4, rb, 0, 33, back);
  EXPECT_EQ(a->wait(r, after(1s)), op_status::done);
  a->release(r);
  b->release(back);
  EXPECT_EQ(counters->bytes_received.load(), 33u);
  EXPECT_EQ(counters->messages_received.load(), 1u);
}

TEST_F(instrumented_pair, drop_reports_done_and_nothing_arrives) {
  arm("data_drop peer=f0 step=5 layer=2");
  op_handle s;
  EXPECT_EQ(a->post_send(a_to_b, 3, ra, 0, 80, s), op_status::done);
  EXPECT_EQ(a->result(s).status, op_status::done);
  a->release(s);
  EXPECT_EQ(receive(100ms), -1);
  EXPECT_EQ(site->plan()->fired(0), 1u);
}

TEST_F(instrumented_pair, a_rule_for_another_step_does_not_fire) {
  arm("data_drop step=6");
  op_handle s;
  a->post_send(a_to_b, 3, ra, 0, 80, s);
  EXPECT_EQ(receive(1s), 80);
  a->release(s);
  EXPECT_EQ(site->plan()->fired(0), 0u);
}

TEST_F(instrumented_pair, duplicate_arrives_twice) {
  arm("data_duplicate");
  op_handle s;
  a->post_send(a_to_b, 3, ra, 0, 80, s);
  EXPECT_EQ(receive(1s), 80);
  EXPECT_EQ(receive(1s), 80);
  EXPECT_EQ(a->wait(s, after(1s)), op_status::done);
  a->release(s);
}

TEST_F(instrumented_pair, corrupt_is_caught_by_the_header_check_and_leaves_the_callers_buffer_alone) {
  arm("data_corrupt");
  const auto before = abuf;
  op_handle s;
  EXPECT_EQ(a->post_send(a_to_b, 3, ra, 0, 80, s), op_status::done);
  a->release(s);
  EXPECT_EQ(receive(1s), 80);
  EXPECT_NE(check_header(std::span(bbuf).first(80), expectation()), header_check::ok);
  EXPECT_EQ(abuf, before);
  a->progress();
}

TEST_F(instrumented_pair, delay_holds_the_message) {
  arm("data_delay delay=150ms");
  const auto t0 = clock::now();
  op_handle s;
  EXPECT_EQ(a->post_send(a_to_b, 3, ra, 0, 80, s), op_status::pending);
  op_handle r;
  b->post_recv(b_to_a, 3, rb, 0, 1024, r);
  while (b->result(r).status == op_status::pending && clock::now() - t0 < 2s) {
    a->wait_for_activity(after(10ms));
    b->progress();
  }
  EXPECT_EQ(b->result(r).status, op_status::done);
  EXPECT_GE(clock::now() - t0, 150ms);
  EXPECT_EQ(a->wait(s, after(1s)), op_status::done);
  a->release(s);
  b->release(r);
}

TEST_F(instrumented_pair, fail_and_peer_dead) {
  arm("data_fail nth=1");
  op_handle s;
  EXPECT_EQ(a->post_send(a_to_b, 3, ra, 0, 80, s), op_status::error);
  EXPECT_EQ(a->result(s).code, errc::transport_error);
  a->release(s);
  arm("peer_dead peer=f0");
  op_handle pending;
  a->post_recv(a_to_b, 9, ra, 0, 1024, pending);
  EXPECT_EQ(a->post_send(a_to_b, 3, ra, 0, 80, s), op_status::error);
  EXPECT_EQ(a->result(s).code, errc::peer_failed);
  EXPECT_FALSE(a->peer_alive(a_to_b));
  EXPECT_NE(a->peer_failure(a_to_b).find("fault injection"), std::string::npos);
  EXPECT_EQ(a->result(pending).status, op_status::error);  // a receive from it fails too
  a->release(s);
  a->release(pending);
}

}  // namespace
}  // namespace afd::transport
