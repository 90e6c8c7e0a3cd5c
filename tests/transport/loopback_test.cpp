#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <thread>

#include "transport/loopback.hpp"

namespace {

using namespace afd::transport;
using namespace std::chrono_literals;

struct pair_fixture : ::testing::Test {
  void SetUp() override {
    fabric = loopback_fabric::create();
    auto ta = make_loopback_transport(fabric, 1);
    auto tb = make_loopback_transport(fabric, 2);
    ASSERT_TRUE(ta && tb);
    a = std::move(*ta);
    b = std::move(*tb);
    auto pa = a->connect(b->address());
    auto pb = b->connect(a->address());
    ASSERT_TRUE(pa && pb);
    a_to_b = *pa;
    b_to_a = *pb;
    ra = *a->register_memory(abuf.data(), abuf.size(), memory_kind::host);
    rb = *b->register_memory(bbuf.data(), bbuf.size(), memory_kind::host);
  }
  std::shared_ptr<loopback_fabric> fabric;
  std::unique_ptr<transport> a, b;
  peer_id a_to_b = 0, b_to_a = 0;
  std::array<std::byte, 4096> abuf{}, bbuf{};
  region ra, rb;
};

TEST_F(pair_fixture, send_before_and_after_receive_deliver_bytes) {
  std::memcpy(abuf.data(), "hello", 5);
  op_handle s, r;
  EXPECT_EQ(a->post_send(a_to_b, 7, ra, 0, 5, s), op_status::pending);  // no receive yet
  EXPECT_EQ(b->post_recv(b_to_a, 7, rb, 100, 64, r), op_status::done);
  EXPECT_EQ(a->result(s).status, op_status::done);
  EXPECT_EQ(b->result(r).bytes, 5u);
  EXPECT_EQ(std::memcmp(bbuf.data() + 100, "hello", 5), 0);
  a->release(s);
  b->release(r);

  EXPECT_EQ(b->post_recv(b_to_a, 8, rb, 0, 64, r), op_status::pending);
  EXPECT_EQ(a->post_send(a_to_b, 8, ra, 1, 3, s), op_status::done);
  EXPECT_EQ(b->wait(r, after(1s)), op_status::done);
  EXPECT_EQ(std::memcmp(bbuf.data(), "ell", 3), 0);
  a->release(s);
  b->release(r);
}

TEST_F(pair_fixture, tags_separate_and_same_tag_keeps_order) {
  for (int i = 0; i < 3; ++i) abuf[i] = std::byte(10 + i);
  op_handle s[3], r[3];
  EXPECT_EQ(a->post_send(a_to_b, 1, ra, 0, 1, s[0]), op_status::pending);
  EXPECT_EQ(a->post_send(a_to_b, 2, ra, 1, 1, s[1]), op_status::pending);
  EXPECT_EQ(a->post_send(a_to_b, 1, ra, 2, 1, s[2]), op_status::pending);
  ASSERT_EQ(b->post_recv(b_to_a, 2, rb, 0, 1, r[0]), op_status::done);
  ASSERT_EQ(b->post_recv(b_to_a, 1, rb, 1, 1, r[1]), op_status::done);
  ASSERT_EQ(b->post_recv(b_to_a, 1, rb, 2, 1, r[2]), op_status::done);
  EXPECT_EQ(bbuf[0], std::byte(11));
  EXPECT_EQ(bbuf[1], std::byte(10));
  EXPECT_EQ(bbuf[2], std::byte(12));
  for (auto& op : s) a->release(op);
  for (auto& op : r) b->release(op);
}

TEST_F(pair_fixture, oversized_message_fails_the_receive_with_bad_message) {
  op_handle s, r;
  EXPECT_EQ(b->post_recv(b_to_a, 3, rb, 0, 4, r), op_status::pending);
  a->post_send(a_to_b, 3, ra, 0, 16, s);
  EXPECT_EQ(b->wait(r, after(1s)), op_status::error);
  EXPECT_EQ(b->result(r).code, afd::errc::bad_message);
  a->release(s);
  b->release(r);
}

TEST_F(pair_fixture, out_of_range_post_is_an_error_not_a_write) {
  op_handle r;
  EXPECT_EQ(b->post_recv(b_to_a, 3, rb, 4000, 200, r), op_status::error);
  EXPECT_EQ(b->result(r).code, afd::errc::out_of_range);
  b->release(r);
}

TEST_F(pair_fixture, wait_times_out_at_its_deadline_and_op_stays_pending) {
  op_handle r;
  b->post_recv(b_to_a, 9, rb, 0, 64, r);
  auto t0 = clock::now();
  EXPECT_EQ(b->wait(r, after(50ms)), op_status::timeout);
  auto waited = clock::now() - t0;
  EXPECT_GE(waited, 50ms);
  EXPECT_LT(waited, 2s);
  EXPECT_EQ(b->result(r).status, op_status::pending);
  b->release(r);  // cancels
  op_handle s;
  EXPECT_EQ(a->post_send(a_to_b, 9, ra, 0, 1, s), op_status::pending);  // nobody listens now
  a->release(s);
}

TEST_F(pair_fixture, killed_peer_fails_pending_and_new_operations) {
  op_handle r, s;
  b->post_recv(b_to_a, 4, rb, 0, 64, r);
  b->post_send(b_to_a, 5, rb, 0, 64, s);
  std::thread killer([&] {
    std::this_thread::sleep_for(20ms);
    fabric->kill(1);
  });
  EXPECT_EQ(b->wait(r, after(5s)), op_status::error);
  killer.join();
  EXPECT_EQ(b->result(r).code, afd::errc::peer_failed);
  EXPECT_EQ(b->result(s).code, afd::errc::peer_failed);
  EXPECT_FALSE(b->peer_alive(b_to_a));
  EXPECT_NE(b->peer_failure(b_to_a).find("rank 1"), std::string::npos);
  op_handle again;
  EXPECT_EQ(b->post_recv(b_to_a, 4, rb, 0, 64, again), op_status::error);
  b->release(r);
  b->release(s);
  b->release(again);
}

TEST_F(pair_fixture, completion_callback_runs_from_progress) {
  struct counter {
    int calls = 0;
    op_status last = op_status::pending;
  } c;
  auto cb = [](void* user, op_handle, op_status st) noexcept {
    auto* cc = static_cast<counter*>(user);
    ++cc->calls;
    cc->last = st;
  };
  op_handle r, s;
  b->post_recv(b_to_a, 6, rb, 0, 64, r, cb, &c);
  a->post_send(a_to_b, 6, ra, 0, 8, s);
  EXPECT_EQ(c.calls, 0);  // not from the other side's thread
  b->progress();
  EXPECT_EQ(c.calls, 1);
  EXPECT_EQ(c.last, op_status::done);
  a->release(s);
  b->release(r);
}

TEST(loopback, refuses_foreign_addresses_and_duplicate_ranks) {
  auto f1 = loopback_fabric::create();
  auto f2 = loopback_fabric::create();
  auto a = make_loopback_transport(f1, 1);
  auto b = make_loopback_transport(f2, 2);
  ASSERT_TRUE(a && b);
  auto p = (*a)->connect((*b)->address());
  ASSERT_FALSE(p);
  EXPECT_NE(p.err().message().find("another fabric"), std::string::npos);
  EXPECT_FALSE(make_loopback_transport(f1, 1));
  std::vector<std::byte> junk(3);
  EXPECT_FALSE((*a)->connect(junk));
  EXPECT_FALSE((*a)->register_memory(junk.data(), 3, memory_kind::device));
}

TEST(loopback, ping_pong_between_threads) {
  auto fabric = loopback_fabric::create();
  auto a = std::move(*make_loopback_transport(fabric, 1));
  auto b = std::move(*make_loopback_transport(fabric, 2));
  peer_id ab = *a->connect(b->address()), ba = *b->connect(a->address());
  std::array<std::uint32_t, 1> av{}, bv{};
  region ra = *a->register_memory(av.data(), 4, memory_kind::host);
  region rb = *b->register_memory(bv.data(), 4, memory_kind::host);
  constexpr std::uint32_t rounds = 2000;
  std::thread echo([&] {
    for (std::uint32_t i = 0; i < rounds; ++i) {
      op_handle r, s;
      b->post_recv(ba, 1, rb, 0, 4, r);
      if (b->wait(r, after(5s)) != op_status::done) return;
      b->release(r);
      bv[0] += 1;
      b->post_send(ba, 2, rb, 0, 4, s);
      if (b->wait(s, after(5s)) != op_status::done) return;
      b->release(s);
    }
  });
  for (std::uint32_t i = 0; i < rounds; ++i) {
    av[0] = i * 2;
    op_handle r, s;
    a->post_recv(ab, 2, ra, 0, 4, r);
    a->post_send(ab, 1, ra, 0, 4, s);
    ASSERT_EQ(a->wait(s, after(5s)), op_status::done);
    ASSERT_EQ(a->wait(r, after(5s)), op_status::done);
    a->release(r);
    a->release(s);
    ASSERT_EQ(av[0], i * 2 + 1);
  }
  echo.join();
}

}  // namespace
