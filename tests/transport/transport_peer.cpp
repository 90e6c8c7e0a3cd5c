// A UCX transport peer in its own process, driven by the multi-process tests through pipes:
// prints "ADDR <hex>" on stdout, reads "PEER <hex>" from stdin, then plays its mode.
//   echo:   answers each message of the size sequence with every byte plus one
//   client: sends the size sequence, checks each answer, prints "RESULT ok"
//   stall:  connects, receives nothing, sleeps until killed (a peer that dies mid-transfer)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "transport/ucx/ucx_transport.hpp"

using namespace afd::transport;

namespace {

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

const std::vector<std::size_t> sizes = {8, 8192, 65536, 917504, 1835008};

int die(const std::string& what) {
  std::printf("FAIL %s\n", what.c_str());
  std::fflush(stdout);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "echo";
  transport_config cfg;
  int rounds = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--mode") mode = v;
    else if (k == "--tls") cfg.tls = v;
    else if (k == "--devices") cfg.net_devices = v;
    else if (k == "--rank") cfg.rank = static_cast<rank_t>(std::stoi(v));
    else if (k == "--rounds") rounds = std::stoi(v);
    else if (k == "--errors") {
      auto m = parse_error_mode(v, "--errors");
      if (!m) return die(m.err().to_string());
      cfg.errors = *m;
    }
  }
  auto made = make_ucx_transport(cfg);
  if (!made) return die(made.err().to_string());
  transport& t = **made;
  std::printf("ADDR %s\n", to_hex(t.address()).c_str());
  std::fflush(stdout);
  std::string word, hex;
  if (!(std::cin >> word >> hex) || word != "PEER") return die("no peer address on stdin");
  auto peer = t.connect(from_hex(hex));
  if (!peer) return die(peer.err().to_string());

  std::vector<std::byte> buf(sizes.back());
  region r = *t.register_memory(buf.data(), buf.size(), memory_kind::host);
  auto until = [] { return after(std::chrono::seconds(10)); };

  if (mode == "stall") {
    std::printf("READY\n");
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return 0;
  }
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t n : sizes) {
      op_handle s, q;
      if (mode == "echo") {
        t.post_recv(*peer, 1, r, 0, buf.size(), q);
        if (t.wait(q, until()) != op_status::done) return die("echo receive: " + t.describe(q, "receive").to_string());
        if (t.result(q).bytes != n) return die("echo: wrong size");
        t.release(q);
        for (std::size_t i = 0; i < n; ++i) buf[i] = std::byte(std::to_integer<int>(buf[i]) + 1);
        t.post_send(*peer, 2, r, 0, n, s);
        if (t.wait(s, until()) != op_status::done) return die("echo send: " + t.describe(s, "send").to_string());
        t.release(s);
      } else {
        for (std::size_t i = 0; i < n; ++i) buf[i] = std::byte((i * 7 + n + round) & 0xff);
        t.post_recv(*peer, 2, r, 0, buf.size(), q);
        t.post_send(*peer, 1, r, 0, n, s);
        if (t.wait(s, until()) != op_status::done) return die("client send: " + t.describe(s, "send").to_string());
        if (t.wait(q, until()) != op_status::done) return die("client receive: " + t.describe(q, "receive").to_string());
        if (t.result(q).bytes != n) return die("client: wrong size");
        t.release(s);
        t.release(q);
        for (std::size_t i = 0; i < n; ++i) {
          if (buf[i] != std::byte(((i * 7 + n + round) + 1) & 0xff)) return die("client: byte " + std::to_string(i) + " of " + std::to_string(n));
        }
      }
    }
  }
  if (mode == "client") std::printf("RESULT ok\n");
  // Let the last answer leave before closing.
  (void)t.shutdown(after(std::chrono::seconds(2)));
  std::printf("DONE\n");
  std::fflush(stdout);
  return 0;
}
