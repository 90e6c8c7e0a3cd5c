// UCX between real processes: over TCP, over shared memory, across two network namespaces
// joined by a veth pair, and with a peer killed mid-transfer.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "tests/transport/child_process.hpp"
#include "transport/net_devices.hpp"
#include "transport/ucx/ucx_transport.hpp"

#ifndef AFD_TRANSPORT_PEER
#error "AFD_TRANSPORT_PEER must name the peer executable"
#endif

namespace {

using namespace afd::transport;
using namespace afd::transport::testing;
using namespace std::chrono_literals;

std::string to_hex(const std::vector<std::byte>& b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    s += digits[std::to_integer<int>(x) >> 4];
    s += digits[std::to_integer<int>(x) & 15];
  }
  return s;
}
std::vector<std::byte> from_hex(const std::string& s) {
  std::vector<std::byte> b(s.size() / 2);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::byte(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return b;
}

std::vector<std::string> peer_args(const std::string& mode, const std::string& tls,
                                   const std::string& devices, int rank,
                                   error_mode errors = error_mode::automatic) {
  std::vector<std::string> a = {AFD_TRANSPORT_PEER, "--mode", mode, "--tls", tls, "--rank", std::to_string(rank),
                                "--errors", to_string(errors)};
  if (!devices.empty()) {
    a.push_back("--devices");
    a.push_back(devices);
  }
  return a;
}

// This process plays the client against an echo peer; sizes as the peer's list. `mine` and
// `theirs` are the two ends' error-mode settings; `expected` the mode they must settle on (UCX
// refuses a connection whose ends disagree, so the exchange succeeding shows they agreed).
void ping_pong_with_child(const std::string& tls, const std::string& devices,
                          error_mode mine = error_mode::automatic,
                          error_mode theirs = error_mode::automatic,
                          const char* expected = nullptr) {
  child_process child(peer_args("echo", tls, devices, 2, theirs));
  ASSERT_TRUE(child.started());
  std::string seen;
  std::string addr = child.expect("ADDR ", 10s, &seen);
  ASSERT_FALSE(addr.empty()) << "peer said: " << seen;
  transport_config cfg;
  cfg.rank = 1;
  cfg.tls = tls;
  cfg.net_devices = devices;
  cfg.errors = mine;
  auto made = make_ucx_transport(cfg);
  ASSERT_TRUE(made) << made.err().to_string();
  transport& t = **made;
  child.write_line("PEER " + to_hex(t.address()));
  auto peer = t.connect(from_hex(addr));
  ASSERT_TRUE(peer) << peer.err().to_string();
  if (expected != nullptr) {
    EXPECT_EQ(t.peer_setup(*peer), std::string("UCX error mode ") + expected);
  }
  std::vector<std::byte> buf(1835008);
  region r = *t.register_memory(buf.data(), buf.size(), memory_kind::host);
  for (int round = 0; round < 2; ++round) {
    for (std::size_t n : {std::size_t{8}, std::size_t{8192}, std::size_t{65536}, std::size_t{917504}, std::size_t{1835008}}) {
      for (std::size_t i = 0; i < n; ++i) buf[i] = std::byte((i * 7 + n + round) & 0xff);
      op_handle s, q;
      t.post_recv(*peer, 2, r, 0, buf.size(), q);
      t.post_send(*peer, 1, r, 0, n, s);
      ASSERT_EQ(t.wait(s, after(10s)), op_status::done) << t.describe(s, "send").to_string();
      ASSERT_EQ(t.wait(q, after(10s)), op_status::done) << t.describe(q, "receive").to_string();
      ASSERT_EQ(t.result(q).bytes, n);
      t.release(s);
      t.release(q);
      std::size_t bad = 0;
      for (std::size_t i = 0; i < n; ++i) bad += buf[i] != std::byte(((i * 7 + n + round) + 1) & 0xff);
      ASSERT_EQ(bad, 0u) << n;
    }
  }
  // Close this end too, so that the peer's flush at shutdown is not left waiting for us.
  EXPECT_TRUE(t.shutdown(after(2s)));
  EXPECT_EQ(child.wait_exit(10s), 0);
}

TEST(multiproc, tcp_between_processes) {
  // Sockets only: the minimal error mode (full-speed zero-copy rendezvous).
  ping_pong_with_child("tcp", "lo", error_mode::automatic, error_mode::automatic, "minimal");
}

TEST(multiproc, tcp_with_peer_error_mode_on_either_end_settles_on_peer) {
  ping_pong_with_child("tcp", "lo", error_mode::peer, error_mode::automatic, "peer");
  ping_pong_with_child("tcp", "lo", error_mode::automatic, error_mode::peer, "peer");
  ping_pong_with_child("tcp", "lo", error_mode::minimal, error_mode::peer, "peer");
}

TEST(multiproc, shared_memory_between_processes) {
  ping_pong_with_child("sm,self", "", error_mode::automatic, error_mode::automatic, "minimal");
}

TEST(multiproc, shared_memory_in_peer_mode_when_asked) {
  ping_pong_with_child("sm,self", "", error_mode::automatic, error_mode::peer, "peer");
}

// `detected`: the death is reported before the deadline: by UCX (TCP sees the connection drop),
// or, for a peer process on this host, by the transport watching the process (UCX 1.13 notices
// nothing over shared memory). Otherwise the wait's deadline turns the silence into an error.
void killed_peer_is_an_error_within_the_deadline(const std::string& tls, const std::string& devices,
                                                 bool detected,
                                                 error_mode errors = error_mode::automatic) {
  child_process child(peer_args("stall", tls, devices, 2, errors));
  std::string addr = child.expect("ADDR ", 10s);
  ASSERT_FALSE(addr.empty());
  transport_config cfg;
  cfg.rank = 1;
  cfg.tls = tls;
  cfg.net_devices = devices;
  cfg.errors = errors;
  auto made = make_ucx_transport(cfg);
  ASSERT_TRUE(made) << made.err().to_string();
  transport& t = **made;
  child.write_line("PEER " + to_hex(t.address()));
  auto peer = t.connect(from_hex(addr));
  ASSERT_TRUE(peer);
  std::printf("%s\n", t.peer_setup(*peer).c_str());
  std::string seen;
  child.expect("READY", 10s, &seen);
  ASSERT_NE(seen.find("READY"), std::string::npos) << seen;
  std::vector<std::byte> buf(2 * 1835008);
  region r = *t.register_memory(buf.data(), buf.size(), memory_kind::host);
  // A large send the peer never takes (rendezvous: stays pending) and a receive it never answers.
  op_handle s, q;
  t.post_send(*peer, 1, r, 0, 1835008, s);
  t.post_recv(*peer, 2, r, 1835008, 1835008, q);
  t.wait(q, after(100ms));  // get the transfer going
  child.kill();
  const auto deadline = 2s;
  auto t0 = clock::now();
  op_status st = t.wait(q, after(deadline));
  auto took = clock::now() - t0;
  EXPECT_LT(took, deadline + 500ms) << "no hang past the deadline";
  std::printf("%s: dead peer surfaced as %s after %.0f ms %s\n", tls.c_str(), to_string(st),
              std::chrono::duration<double, std::milli>(took).count(), t.peer_failure(*peer).c_str());
  if (detected) {
    EXPECT_EQ(st, op_status::error) << "receive from a dead peer must fail, not " << to_string(st);
    EXPECT_EQ(t.result(q).code, afd::errc::peer_failed);
    EXPECT_LT(took, 1s);
    EXPECT_NE(t.wait(s, after(1s)), op_status::pending);
    EXPECT_EQ(t.result(s).status, op_status::error);
    EXPECT_FALSE(t.peer_alive(*peer));
    EXPECT_NE(t.peer_failure(*peer).find("rank 2"), std::string::npos) << t.peer_failure(*peer);
  } else {
    EXPECT_TRUE(st == op_status::error || st == op_status::timeout) << to_string(st);
    EXPECT_NE(t.describe(q, "receive").code(), afd::errc::none);
  }
  t.release(s);
  t.release(q);
  EXPECT_LT(clock::now() - t0, 10s);
  (void)t.shutdown(after(500ms));
}

// The default over TCP is UCX's minimal error mode, where UCX documents no error callback:
// this checks that UCX still reports the dropped connection through it.
TEST(multiproc, killed_peer_over_tcp_fails_pending_operations) {
  killed_peer_is_an_error_within_the_deadline("tcp", "lo", true, error_mode::minimal);
}

TEST(multiproc, killed_peer_over_tcp_in_peer_error_mode_fails_pending_operations) {
  killed_peer_is_an_error_within_the_deadline("tcp", "lo", true, error_mode::peer);
}

TEST(multiproc, killed_peer_over_shared_memory_fails_pending_operations) {
  killed_peer_is_an_error_within_the_deadline("sm,self", "", true, error_mode::peer);
}

TEST(multiproc, killed_peer_over_shared_memory_in_minimal_mode_fails_pending_operations) {
  killed_peer_is_an_error_within_the_deadline("sm,self", "", true, error_mode::minimal);
}

// Two network namespaces joined by a veth pair, each end only in a namespace this test made.
class netns_pair {
 public:
  netns_pair() {
    std::string id = std::to_string(::getpid() % 100000);
    a_ = "afdT" + id + "a";
    b_ = "afdT" + id + "b";
    veth_a_ = "afdva" + id;
    veth_b_ = "afdvb" + id;
    ok_ = run("ip netns add " + a_) && run("ip netns add " + b_) &&
          run("ip link add " + veth_a_ + " netns " + a_ + " type veth peer name " + veth_b_ + " netns " + b_) &&
          run("ip -n " + a_ + " addr add 192.168.250.1/30 dev " + veth_a_) &&
          run("ip -n " + b_ + " addr add 192.168.250.2/30 dev " + veth_b_) &&
          run("ip -n " + a_ + " link set " + veth_a_ + " up") && run("ip -n " + b_ + " link set " + veth_b_ + " up") &&
          run("ip -n " + a_ + " link set lo up") && run("ip -n " + b_ + " link set lo up") &&
          carrier_up();
  }
  ~netns_pair() {
    // Always remove what was made, even after a failure; deleting a namespace removes its veth.
    run("ip netns del " + a_ + " 2>/dev/null");
    run("ip netns del " + b_ + " 2>/dev/null");
  }
  bool ok() const { return ok_; }
  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  const std::string& veth_a() const { return veth_a_; }
  const std::string& veth_b() const { return veth_b_; }

 private:
  // UCX ignores an interface until its link is running; a veth pair needs a moment.
  bool carrier_up() const {
    for (int i = 0; i < 200; ++i) {
      if (run("ip -n " + a_ + " link show " + veth_a_ + " | grep -q LOWER_UP") &&
          run("ip -n " + b_ + " link show " + veth_b_ + " | grep -q LOWER_UP")) {
        return true;
      }
      ::usleep(10000);
    }
    return false;
  }
  static bool run(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }
  std::string a_, b_, veth_a_, veth_b_;
  bool ok_ = false;
};

TEST(multiproc, tcp_across_network_namespaces_over_veth) {
  if (::geteuid() != 0) GTEST_SKIP() << "creating network namespaces needs root";
  netns_pair ns;
  if (!ns.ok()) GTEST_SKIP() << "cannot create network namespaces here (ip netns failed)";
  auto in_ns = [](const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), {"ip", "netns", "exec", name});
    return args;
  };
  child_process echo(in_ns(ns.b(), peer_args("echo", "tcp", ns.veth_b(), 2)));
  child_process client(in_ns(ns.a(), peer_args("client", "tcp", ns.veth_a(), 1)));
  std::string seen_echo, seen_client;
  std::string ea = echo.expect("ADDR ", 10s, &seen_echo);
  std::string ca = client.expect("ADDR ", 10s, &seen_client);
  ASSERT_FALSE(ea.empty()) << seen_echo;
  ASSERT_FALSE(ca.empty()) << seen_client;
  echo.write_line("PEER " + ca);
  client.write_line("PEER " + ea);
  std::string result = client.expect("RESULT ", 30s, &seen_client);
  EXPECT_EQ(result, "ok") << seen_client;
  EXPECT_EQ(client.wait_exit(10s), 0);
  EXPECT_EQ(echo.wait_exit(10s), 0);
}

TEST(multiproc, wrong_device_inside_a_namespace_names_the_devices_there) {
  if (::geteuid() != 0) GTEST_SKIP() << "creating network namespaces needs root";
  netns_pair ns;
  if (!ns.ok()) GTEST_SKIP() << "cannot create network namespaces here (ip netns failed)";
  // eth0 exists outside, not in the namespace: the peer must say so and exit, not hang.
  child_process peer({"ip", "netns", "exec", ns.a(), AFD_TRANSPORT_PEER, "--mode", "echo", "--tls", "tcp", "--devices", "eth0"});
  std::string seen;
  std::string why = peer.expect("FAIL ", 10s, &seen);
  EXPECT_NE(why.find("network device \"eth0\" does not exist"), std::string::npos) << seen;
  EXPECT_NE(why.find(ns.veth_a()), std::string::npos) << why;
  EXPECT_EQ(peer.wait_exit(5s), 1);
}

}  // namespace
