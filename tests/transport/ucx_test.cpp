// UCX transport inside one process: selection errors, messages, staging, timeouts, and the M:N
// exchange over UCX (each worker on its own thread, as engine threads are).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "tests/transport/exchange_harness.hpp"
#include "transport/ucx/ucx_transport.hpp"

namespace {

using namespace afd::transport;
using namespace afd::transport::testing;
using namespace std::chrono_literals;

transport_config tcp_config(rank_t rank) {
  transport_config c;
  c.rank = rank;
  c.tls = "tcp";
  c.net_devices = "lo";
  return c;
}

TEST(ucx, missing_network_device_is_named_with_the_alternatives) {
  transport_config c = tcp_config(1);
  c.net_devices = "eth9";
  auto t = make_ucx_transport(c);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.err().code(), afd::errc::invalid_config);
  const std::string& m = t.err().message();
  EXPECT_NE(m.find("network device \"eth9\" does not exist"), std::string::npos) << m;
  EXPECT_NE(m.find("available: "), std::string::npos) << m;
  EXPECT_NE(m.find("lo"), std::string::npos) << m;
}

TEST(ucx, environment_selection_is_validated_too) {
  ::setenv("UCX_NET_DEVICES", "eth9", 1);
  transport_config c;
  c.tls = "tcp";
  auto t = make_ucx_transport(c);
  ::unsetenv("UCX_NET_DEVICES");
  ASSERT_FALSE(t);
  EXPECT_NE(t.err().message().find("(UCX_NET_DEVICES)"), std::string::npos) << t.err().message();
  ::setenv("UCX_TLS", "tcq", 1);
  auto u = make_ucx_transport(transport_config{});
  ::unsetenv("UCX_TLS");
  ASSERT_FALSE(u);
  EXPECT_NE(u.err().message().find("unknown UCX transport \"tcq\" (UCX_TLS)"), std::string::npos)
      << u.err().message();
}

TEST(ucx, transport_that_is_absent_here_is_a_clear_error) {
  transport_config c;
  c.tls = "rc";  // InfiniBand: no such hardware on CI machines
  auto t = make_ucx_transport(c);
  if (t) GTEST_SKIP() << "this machine has an InfiniBand transport";
  EXPECT_NE(t.err().message().find("TLS=rc"), std::string::npos) << t.err().message();
}

TEST(ucx, garbage_address_is_refused) {
  auto t = make_ucx_transport(tcp_config(1));
  ASSERT_TRUE(t) << t.err().to_string();
  std::vector<std::byte> junk(40, std::byte{7});
  EXPECT_FALSE((*t)->connect(junk));
  EXPECT_FALSE((*t)->connect(std::span<const std::byte>(junk).first(5)));
}

// ---- error mode: what each end offers and what a pair settles on --------------------------

std::array<std::uint8_t, 16> host_of(std::uint8_t b) {
  std::array<std::uint8_t, 16> h{};
  h.fill(b);
  return h;
}

TEST(ucx_error_mode, names_parse_and_bad_ones_are_named) {
  EXPECT_EQ(*parse_error_mode("auto", "x"), error_mode::automatic);
  EXPECT_EQ(*parse_error_mode("peer", "x"), error_mode::peer);
  EXPECT_EQ(*parse_error_mode("minimal", "x"), error_mode::minimal);
  auto bad = parse_error_mode("none", "transport.error_mode");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code(), afd::errc::invalid_config);
  EXPECT_NE(bad.err().message().find("transport.error_mode \"none\""), std::string::npos) << bad.err().message();
  EXPECT_NE(bad.err().message().find("auto, peer or minimal"), std::string::npos);
}

TEST(ucx_error_mode, minimal_is_offered_only_where_no_rdma_or_cuda_transport_can_be_used) {
  auto h = host_of(1);
  // Explicit socket / shared-memory lists: minimal accepted whatever devices exist.
  for (const char* tls : {"tcp", "tcp,self", "sm", "tcp,sm,self", "posix,sysv,cma"}) {
    EXPECT_TRUE(make_error_mode_offer(error_mode::automatic, tls, true, true, h).minimal_ok) << tls;
  }
  // A list that names an RDMA or CUDA transport: peer.
  for (const char* tls : {"rc", "tcp,rc_x", "ud,sm", "tcp,cuda_copy", "dc_x"}) {
    EXPECT_FALSE(make_error_mode_offer(error_mode::automatic, tls, false, false, h).minimal_ok) << tls;
  }
  // UCX's own choice ("", "all", "^...") is safe only without RDMA devices and CUDA memory.
  for (const char* tls : {"", "all", "^ud"}) {
    EXPECT_TRUE(make_error_mode_offer(error_mode::automatic, tls, false, false, h).minimal_ok) << tls;
    EXPECT_FALSE(make_error_mode_offer(error_mode::automatic, tls, true, false, h).minimal_ok) << tls;
    EXPECT_FALSE(make_error_mode_offer(error_mode::automatic, tls, false, true, h).minimal_ok) << tls;
  }
  // Explicit settings override the rule.
  EXPECT_FALSE(make_error_mode_offer(error_mode::peer, "tcp", false, false, h).minimal_ok);
  EXPECT_TRUE(make_error_mode_offer(error_mode::minimal, "rc", true, true, h).minimal_ok);
}

TEST(ucx_error_mode, both_ends_settle_on_the_same_mode) {
  const error_mode_offer offers[] = {
      make_error_mode_offer(error_mode::automatic, "tcp", false, false, host_of(1)),
      make_error_mode_offer(error_mode::automatic, "tcp,sm,self", false, false, host_of(1)),
      make_error_mode_offer(error_mode::automatic, "tcp,sm,self", false, false, host_of(2)),
      make_error_mode_offer(error_mode::automatic, "", true, false, host_of(2)),
      make_error_mode_offer(error_mode::peer, "tcp", false, false, host_of(1)),
      make_error_mode_offer(error_mode::minimal, "tcp", false, false, host_of(1)),
      make_error_mode_offer(error_mode::minimal, "sm", false, false, host_of(2)),
  };
  for (const auto& a : offers) {
    for (const auto& b : offers) EXPECT_EQ(settle_error_mode(a, b), settle_error_mode(b, a));
  }
  // Sockets and shared memory, on one host or two: minimal.
  EXPECT_EQ(settle_error_mode(offers[0], offers[0]), error_mode::minimal);
  EXPECT_EQ(settle_error_mode(offers[1], offers[1]), error_mode::minimal);
  EXPECT_EQ(settle_error_mode(offers[1], offers[2]), error_mode::minimal);
  EXPECT_EQ(settle_error_mode(offers[0], offers[1]), error_mode::minimal);
  // An end with RDMA devices, or one set to peer: peer.
  EXPECT_EQ(settle_error_mode(offers[2], offers[3]), error_mode::peer);
  EXPECT_EQ(settle_error_mode(offers[0], offers[4]), error_mode::peer);
  // Minimal asked for explicitly holds, unless the other end says peer.
  EXPECT_EQ(settle_error_mode(offers[5], offers[3]), error_mode::peer);
  EXPECT_EQ(settle_error_mode(offers[5], offers[6]), error_mode::minimal);
  EXPECT_EQ(settle_error_mode(offers[5], offers[4]), error_mode::peer);
}

TEST(ucx_error_mode, this_host_has_an_identity) {
  auto a = host_identity(), b = host_identity();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, (std::array<std::uint8_t, 16>{}));
}

// Two UCX workers in one process, each progressed by its own thread.
struct ucx_pair : ::testing::Test {
  void start(const transport_config& ca, const transport_config& cb, const ucx_options& opt = {}) {
    auto ta = make_ucx_transport(ca, opt);
    auto tb = make_ucx_transport(cb, opt);
    ASSERT_TRUE(ta) << ta.err().to_string();
    ASSERT_TRUE(tb) << tb.err().to_string();
    a = std::move(*ta);
    b = std::move(*tb);
    a_to_b = *a->connect(b->address());
    b_to_a = *b->connect(a->address());
  }
  std::unique_ptr<transport> a, b;
  peer_id a_to_b = 0, b_to_a = 0;
};

TEST_F(ucx_pair, messages_of_every_benchmark_size_arrive_intact_over_tcp) {
  start(tcp_config(1), tcp_config(2));
  std::vector<std::byte> src(1835008), dst(1835008);
  region rs = *a->register_memory(src.data(), src.size(), memory_kind::host);
  region rd = *b->register_memory(dst.data(), dst.size(), memory_kind::host);
  for (std::size_t n : {std::size_t{8}, std::size_t{8192}, std::size_t{917504}, std::size_t{1835008}}) {
    for (std::size_t i = 0; i < n; ++i) src[i] = std::byte((i * 13 + n) & 0xff);
    std::memset(dst.data(), 0, dst.size());
    op_handle s, r;
    b->post_recv(b_to_a, 5, rd, 0, dst.size(), r);
    a->post_send(a_to_b, 5, rs, 0, n, s);
    std::thread pump([&] { EXPECT_EQ(a->wait(s, after(10s)), op_status::done); });
    EXPECT_EQ(b->wait(r, after(10s)), op_status::done) << b->describe(r, "receive").to_string();
    pump.join();
    EXPECT_EQ(b->result(r).bytes, n);
    EXPECT_EQ(std::memcmp(src.data(), dst.data(), n), 0) << n;
    a->release(s);
    b->release(r);
  }
}

TEST_F(ucx_pair, truncated_message_fails_the_receive_and_silence_times_out) {
  start(tcp_config(1), tcp_config(2));
  std::vector<std::byte> src(4096), dst(4096);
  region rs = *a->register_memory(src.data(), src.size(), memory_kind::host);
  region rd = *b->register_memory(dst.data(), dst.size(), memory_kind::host);
  op_handle s, r;
  b->post_recv(b_to_a, 1, rd, 0, 16, r);
  a->post_send(a_to_b, 1, rs, 0, 1024, s);
  std::thread pump([&] { a->wait(s, after(5s)); });
  EXPECT_EQ(b->wait(r, after(5s)), op_status::error);
  pump.join();
  EXPECT_EQ(b->result(r).code, afd::errc::bad_message);
  a->release(s);
  b->release(r);

  b->post_recv(b_to_a, 2, rd, 0, 16, r);
  auto t0 = clock::now();
  EXPECT_EQ(b->wait(r, after(80ms)), op_status::timeout);
  EXPECT_LT(clock::now() - t0, 1s);
  b->release(r);  // cancels the receive
}

// Host memory playing the device, to test the staging path without a GPU.
std::atomic<int> to_host_calls{0}, to_device_calls{0};
const device_memory_ops fake_device_ops{
    [](std::size_t n) -> void* { return std::malloc(n); },
    [](void* p) { std::free(p); },
    [](void* h, const void* d, std::size_t n) { ++to_host_calls; std::memcpy(h, d, n); return true; },
    [](void* d, const void* h, std::size_t n) { ++to_device_calls; std::memcpy(d, h, n); return true; }};

TEST_F(ucx_pair, device_memory_is_staged_through_pinned_buffers_transparently) {
  ucx_options opt;
  opt.staging = &fake_device_ops;
  opt.force_staging = true;
  start(tcp_config(1), tcp_config(2), opt);
  EXPECT_TRUE(a->caps().device_memory_staged);
  std::vector<std::byte> dev_src(70000), dev_dst(70000);
  for (std::size_t i = 0; i < dev_src.size(); ++i) dev_src[i] = std::byte(i % 251);
  region rs = *a->register_memory(dev_src.data(), dev_src.size(), memory_kind::device);
  region rd = *b->register_memory(dev_dst.data(), dev_dst.size(), memory_kind::device);
  to_host_calls = to_device_calls = 0;
  op_handle s, r;
  b->post_recv(b_to_a, 3, rd, 100, 65536, r);
  a->post_send(a_to_b, 3, rs, 4, 65536, s);
  std::thread pump([&] { a->wait(s, after(5s)); });
  ASSERT_EQ(b->wait(r, after(5s)), op_status::done);
  pump.join();
  EXPECT_EQ(std::memcmp(dev_dst.data() + 100, dev_src.data() + 4, 65536), 0);
  EXPECT_EQ(to_host_calls.load(), 1);
  EXPECT_EQ(to_device_calls.load(), 1);
  a->release(s);
  b->release(r);
}

TEST(ucx, device_memory_without_cuda_support_or_staging_is_unsupported) {
  ucx_options opt;
  opt.staging = nullptr;
  auto t = make_ucx_transport(tcp_config(1), opt);
  ASSERT_TRUE(t);
  if ((*t)->caps().device_memory_direct || (*t)->caps().device_memory_staged) {
    GTEST_SKIP() << "this build or UCX handles device memory";
  }
  std::vector<std::byte> b(64);
  auto r = (*t)->register_memory(b.data(), b.size(), memory_kind::device);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code(), afd::errc::unsupported);
  EXPECT_NE(r.err().message().find("CUDA"), std::string::npos);
}

TEST(ucx, exchange_2a2f_over_tcp_matches_oracle) {
  run_plan plan;
  plan.shape.hidden = 512;
  plan.shape.top_k = 2;
  plan.shape.max_tokens = 16;
  plan.shape.micro_batches = 2;
  plan.shape.dispatch_dtype = afd::dtype::f8_e4m3;
  plan.shape.mode = combine_mode::deterministic;
  plan.layers = 3;
  std::vector<std::unique_ptr<transport>> owned;
  std::vector<transport*> attn, ffn;
  for (rank_t i = 0; i < 4; ++i) {
    auto t = make_ucx_transport(tcp_config(static_cast<rank_t>(i + 1)));
    ASSERT_TRUE(t) << t.err().to_string();
    owned.push_back(std::move(*t));
    (i < 2 ? attn : ffn).push_back(owned.back().get());
  }
  auto t0 = clock::now();
  auto r = run_exchange(attn, ffn, plan);
  std::printf("exchange ran in %.1f ms\n", std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  expect_matches_oracle(plan, r, 1e-6);
  // Workers shut down concurrently, as processes do: each flush needs its peers' progress.
  t0 = clock::now();
  std::vector<std::thread> closers;
  for (auto& t : owned) closers.emplace_back([&t] { EXPECT_TRUE(t->shutdown(after(5s))); });
  for (auto& c : closers) c.join();
  std::printf("teardown in %.1f ms\n", std::chrono::duration<double, std::milli>(clock::now() - t0).count());
}

}  // namespace
