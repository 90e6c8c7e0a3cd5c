#include "transport/wire.hpp"

#include <cstring>

namespace afd::transport {

namespace {

std::uint32_t fnv1a(const std::byte* p, std::size_t n) noexcept {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint8_t>(p[i]);
    h *= 16777619u;
  }
  return h;
}

constexpr std::size_t checksummed_bytes = offsetof(wire_header, checksum);

}  // namespace

void write_header(std::byte* out, const header_fields& f) noexcept {
  wire_header h{};
  h.magic = wire_magic;
  h.version = wire_version;
  h.header_bytes = static_cast<std::uint16_t>(header_bytes);
  h.kind = static_cast<std::uint8_t>(f.kind);
  h.dtype = static_cast<std::uint8_t>(f.payload_dtype);
  h.mode = static_cast<std::uint8_t>(f.mode);
  h.epoch = f.id.epoch;
  h.step = f.id.step;
  h.micro_batch = f.id.micro_batch;
  h.layer = f.id.layer;
  h.source = f.source;
  h.top_k = f.top_k;
  h.token_count = f.token_count;
  h.vector_count = f.vector_count;
  h.byte_count = f.byte_count;
  h.hidden = f.hidden;
  h.cluster_tokens = f.kind == message_kind::combine ? f.cluster_tokens : 0;
  h.checksum = fnv1a(reinterpret_cast<const std::byte*>(&h), checksummed_bytes);
  std::memcpy(out, &h, sizeof h);
}

const char* to_string(header_check c) noexcept {
  switch (c) {
    case header_check::ok: return "ok";
    case header_check::stale_epoch: return "stale_epoch";
    case header_check::duplicate: return "duplicate";
    case header_check::short_message: return "short_message";
    case header_check::bad_magic: return "bad_magic";
    case header_check::bad_version: return "bad_version";
    case header_check::bad_checksum: return "bad_checksum";
    case header_check::bad_kind: return "bad_kind";
    case header_check::bad_dtype: return "bad_dtype";
    case header_check::bad_length: return "bad_length";
    case header_check::reserved_nonzero: return "reserved_nonzero";
    case header_check::wrong_source: return "wrong_source";
    case header_check::future_epoch: return "future_epoch";
    case header_check::wrong_step: return "wrong_step";
    case header_check::wrong_micro_batch: return "wrong_micro_batch";
    case header_check::wrong_layer: return "wrong_layer";
  }
  return "unknown";
}

errc to_errc(header_check c) noexcept {
  if (c == header_check::ok) return errc::none;
  if (c == header_check::stale_epoch || c == header_check::future_epoch) return errc::stale_epoch;
  return errc::bad_message;
}

header_check check_header(std::span<const std::byte> message,
                          const header_expectation& expect) noexcept {
  if (message.size() < header_bytes) return header_check::short_message;
  wire_header h;
  std::memcpy(&h, message.data(), sizeof h);  // the buffer may be unaligned for all we know
  if (h.magic != wire_magic) return header_check::bad_magic;
  if (h.version != wire_version || h.header_bytes != header_bytes) return header_check::bad_version;
  if (h.checksum != fnv1a(message.data(), checksummed_bytes)) return header_check::bad_checksum;
  if (h.kind != static_cast<std::uint8_t>(message_kind::dispatch) &&
      h.kind != static_cast<std::uint8_t>(message_kind::combine)) {
    return header_check::bad_kind;
  }
  if (h.kind != static_cast<std::uint8_t>(expect.kind)) return header_check::bad_kind;
  if (h.dtype > static_cast<std::uint8_t>(afd::dtype::f8_e4m3) ||
      h.mode > static_cast<std::uint8_t>(combine_mode::throughput)) {
    return header_check::bad_dtype;
  }
  if (h.byte_count != message.size() - header_bytes) return header_check::bad_length;
  if (h.reserved0 != 0 || h.reserved2 != 0) return header_check::reserved_nonzero;
  if (h.kind == static_cast<std::uint8_t>(message_kind::dispatch) && h.cluster_tokens != 0)
    return header_check::reserved_nonzero;
  if (h.source != expect.source) return header_check::wrong_source;
  if (h.epoch < expect.id.epoch) return header_check::stale_epoch;
  if (h.epoch > expect.id.epoch) return header_check::future_epoch;
  // Messages of one (kind, micro-batch) arrive in (step, layer) order, so an earlier one is a
  // duplicate or a re-sent leftover.
  if (h.micro_batch == expect.id.micro_batch &&
      (h.step < expect.id.step || (h.step == expect.id.step && h.layer < expect.id.layer)))
    return header_check::duplicate;
  if (h.step != expect.id.step) return header_check::wrong_step;
  if (h.micro_batch != expect.id.micro_batch) return header_check::wrong_micro_batch;
  if (h.layer != expect.id.layer) return header_check::wrong_layer;
  return header_check::ok;
}

}  // namespace afd::transport
