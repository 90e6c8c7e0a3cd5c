#pragma once
/// The versioned header at the front of every data-plane message, and its validation. A message
/// is `wire_header` followed by `byte_count` payload bytes, in one transport message, so a
/// header-only message (a worker with no tokens) costs one small send.

#include <cstddef>
#include <cstdint>
#include <span>

#include "runtime/core/dtype.hpp"
#include "runtime/core/numerics.hpp"
#include "transport/transport.hpp"

namespace afd::transport {

/// Current format version; a receiver accepts exactly this version.
inline constexpr std::uint16_t wire_version = 1;
/// "AFDW" in little-endian byte order.
inline constexpr std::uint32_t wire_magic = 0x57444641u;

/// What a message carries.
enum class message_kind : std::uint8_t {
  dispatch = 1,  ///< attention -> FFN: tokens, scales, top-k ids and weights
  combine = 2,   ///< FFN -> attention: BF16 results
};

/// How FFN results are returned (DESIGN.md, Determinism): the run's setting, afd::combine_mode.
/// deterministic: one vector per (token, unit), the attention worker sums in canonical order;
/// throughput: one pre-summed partial per token per FFN worker. On the wire, wire_header::mode.
using afd::combine_mode;
// The header's mode byte is the enum's value: these are part of the wire format.
static_assert(static_cast<std::uint8_t>(combine_mode::deterministic) == 0);
static_assert(static_cast<std::uint8_t>(combine_mode::throughput) == 1);

/// Identifies one exchange of one layer of one micro-batch.
struct step_id {
  std::uint32_t epoch = 0;
  std::uint64_t step = 0;
  std::uint16_t micro_batch = 0;
  std::uint16_t layer = 0;
};

/// 64 bytes, host byte order (every supported host is little-endian), payload follows at 64 so
/// that it stays 64-byte aligned in a registered buffer.
struct wire_header {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t header_bytes;
  std::uint8_t kind;
  std::uint8_t dtype;
  std::uint8_t mode;
  std::uint8_t reserved0;
  std::uint32_t epoch;
  std::uint64_t step;
  std::uint16_t micro_batch;
  std::uint16_t layer;
  std::uint16_t source;
  std::uint16_t top_k;
  std::uint32_t token_count;   ///< tokens of the attention worker's micro-batch
  std::uint32_t vector_count;  ///< combine: BF16 vectors carried; dispatch: equals token_count
  std::uint64_t byte_count;    ///< payload bytes after the header
  std::uint32_t hidden;
  /// Combine: tokens of all attention workers in this (step, micro-batch, layer) as the FFN
  /// worker received them, so that an idle attention worker knows whether the whole cluster is
  /// idle (DESIGN.md); dispatch: 0.
  std::uint32_t cluster_tokens;
  std::uint32_t reserved2;
  std::uint32_t checksum;      ///< FNV-1a over the 60 bytes before it
};
static_assert(sizeof(wire_header) == 64);
inline constexpr std::size_t header_bytes = sizeof(wire_header);

/// Fields of a header to write.
struct header_fields {
  message_kind kind = message_kind::dispatch;
  afd::dtype payload_dtype = afd::dtype::bf16;
  combine_mode mode = combine_mode::deterministic;
  step_id id;
  rank_t source = 0;
  std::uint16_t top_k = 0;
  std::uint32_t hidden = 0;
  std::uint32_t token_count = 0;
  std::uint32_t vector_count = 0;
  std::uint64_t byte_count = 0;
  std::uint32_t cluster_tokens = 0;  ///< combine only (see wire_header)
};

/// Writes a complete header (with checksum) at `out` (64 bytes).
void write_header(std::byte* out, const header_fields& f) noexcept;

/// What a receiver expects of a header.
struct header_expectation {
  message_kind kind = message_kind::dispatch;
  step_id id;
  rank_t source = 0;
};

/// Outcome of validating a header; every value but ok and stale_epoch is a bad message.
enum class header_check : std::uint8_t {
  ok,
  stale_epoch,        ///< from an older epoch: drop it
  duplicate,          ///< this epoch, an earlier (step, layer) than expected: a copy or a late one; drop it
  short_message,      ///< fewer bytes than a header
  bad_magic,
  bad_version,
  bad_checksum,
  bad_kind,
  bad_dtype,
  bad_length,         ///< byte_count disagrees with the bytes received
  reserved_nonzero,
  wrong_source,
  future_epoch,       ///< from a newer epoch than ours: we are the stale one
  wrong_step,
  wrong_micro_batch,
  wrong_layer,
};

/// Stable name, e.g. "bad_magic".
const char* to_string(header_check c) noexcept;

/// Validates the first `received` bytes of a message against what the receiver expects.
/// Reads only within the span; never trusts a length field before checking it.
header_check check_header(std::span<const std::byte> message,
                          const header_expectation& expect) noexcept;

/// The header at the front of a message already checked with check_header.
inline const wire_header& header_of(const std::byte* message) noexcept {
  return *reinterpret_cast<const wire_header*>(message);
}

/// errc for a header_check (stale_epoch, bad_message, or none).
errc to_errc(header_check c) noexcept;

}  // namespace afd::transport
