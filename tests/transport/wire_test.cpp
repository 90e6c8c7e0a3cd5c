#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "transport/wire.hpp"

namespace {

using namespace afd::transport;

header_fields sample() {
  header_fields f;
  f.kind = message_kind::dispatch;
  f.payload_dtype = afd::dtype::f8_e4m3;
  f.mode = combine_mode::throughput;
  f.id = {7, 123456789012ull, 2, 44};
  f.source = 5;
  f.top_k = 3;
  f.hidden = 7168;
  f.token_count = 128;
  f.vector_count = 128;
  f.byte_count = 100;
  return f;
}

header_expectation expect_of(const header_fields& f) { return {f.kind, f.id, f.source}; }

std::vector<std::byte> message(const header_fields& f) {
  std::vector<std::byte> m(header_bytes + f.byte_count);
  write_header(m.data(), f);
  return m;
}

TEST(wire, header_round_trips_every_field) {
  header_fields f = sample();
  auto m = message(f);
  ASSERT_EQ(check_header(m, expect_of(f)), header_check::ok);
  const wire_header& h = header_of(m.data());
  EXPECT_EQ(h.version, wire_version);
  EXPECT_EQ(h.epoch, 7u);
  EXPECT_EQ(h.step, 123456789012ull);
  EXPECT_EQ(h.micro_batch, 2);
  EXPECT_EQ(h.layer, 44);
  EXPECT_EQ(h.source, 5);
  EXPECT_EQ(h.token_count, 128u);
  EXPECT_EQ(h.dtype, static_cast<std::uint8_t>(afd::dtype::f8_e4m3));
  EXPECT_EQ(h.byte_count, 100u);
}

TEST(wire, header_only_message_is_valid) {
  header_fields f = sample();
  f.token_count = f.vector_count = 0;
  f.byte_count = 0;
  auto m = message(f);
  EXPECT_EQ(m.size(), 64u);
  EXPECT_EQ(check_header(m, expect_of(f)), header_check::ok);
}

TEST(wire, each_mismatch_is_named) {
  header_fields f = sample();
  auto m = message(f);
  header_expectation e = expect_of(f);
  EXPECT_EQ(check_header(std::span(m).first(63), e), header_check::short_message);
  EXPECT_EQ(check_header(std::span(m).first(100), e), header_check::bad_length);
  auto older = e;
  older.id.epoch = 8;
  EXPECT_EQ(check_header(m, older), header_check::stale_epoch);
  EXPECT_EQ(to_errc(header_check::stale_epoch), afd::errc::stale_epoch);
  auto newer = e;
  newer.id.epoch = 6;
  EXPECT_EQ(check_header(m, newer), header_check::future_epoch);
  // A message ahead of what is expected is wrong; one behind (same epoch and micro-batch) is a
  // duplicate or a late copy, dropped by the exchange.
  auto x = e;
  x.id.step -= 1;
  EXPECT_EQ(check_header(m, x), header_check::wrong_step);
  x = e;
  x.id.layer = 3;
  EXPECT_EQ(check_header(m, x), header_check::wrong_layer);
  x = e;
  x.id.step += 1;
  EXPECT_EQ(check_header(m, x), header_check::duplicate);
  x = e;
  x.id.layer = 45;
  EXPECT_EQ(check_header(m, x), header_check::duplicate);
  x = e;
  x.id.micro_batch = 0;
  EXPECT_EQ(check_header(m, x), header_check::wrong_micro_batch);
  x = e;
  x.source = 4;
  EXPECT_EQ(check_header(m, x), header_check::wrong_source);
  x = e;
  x.kind = message_kind::combine;
  EXPECT_EQ(check_header(m, x), header_check::bad_kind);
  EXPECT_EQ(to_errc(header_check::wrong_layer), afd::errc::bad_message);
}

TEST(wire, corrupted_fields_are_rejected) {
  header_fields f = sample();
  auto e = expect_of(f);
  {
    auto m = message(f);
    m[0] = std::byte{'X'};
    EXPECT_EQ(check_header(m, e), header_check::bad_magic);
  }
  {
    auto m = message(f);
    wire_header h;
    std::memcpy(&h, m.data(), 64);
    h.version = 2;
    std::memcpy(m.data(), &h, 64);
    EXPECT_EQ(check_header(m, e), header_check::bad_version);
  }
  // Any single flipped bit in the checksummed fields is caught.
  for (std::size_t byte = 8; byte < 60; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto m = message(f);
      m[byte] ^= std::byte(1 << bit);
      EXPECT_NE(check_header(m, e), header_check::ok) << byte << ":" << bit;
    }
  }
  // A header whose checksum was recomputed but carries an impossible dtype or reserved bits.
  header_fields bad = f;
  bad.payload_dtype = static_cast<afd::dtype>(9);
  EXPECT_EQ(check_header(message(bad), e), header_check::bad_dtype);
}

TEST(wire, random_bytes_never_pass) {
  std::mt19937_64 rng(42);
  header_expectation e = expect_of(sample());
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> m(64 + rng() % 64);
    for (auto& b : m) b = std::byte(rng());
    if (i % 2 == 0) std::memcpy(m.data(), &wire_magic, 4);  // get past the first gate
    EXPECT_NE(check_header(m, e), header_check::ok);
  }
}

}  // namespace
