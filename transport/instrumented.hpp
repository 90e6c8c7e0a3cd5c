#pragma once
/// A decorator around any transport that counts the bytes and messages a worker sends and
/// receives, and carries the data plane's fault points (runtime/faults): data_fail, data_drop,
/// data_delay, data_duplicate, data_corrupt, peer_dead. With no rule armed, a send costs one
/// relaxed atomic load on top of the counting; nothing else changes.
///
/// Faults act on the sender's side of a message, on what the receiver would see from a real fault:
///   fail       the send fails (op_status::error, errc::transport_error)
///   drop       the send reports done, nothing arrives
///   delay      the message is posted `delay` later (the send stays pending until then)
///   duplicate  the message is sent twice
///   corrupt    the message arrives with one header byte flipped (a copy is sent: the caller's
///              buffer is untouched); the receiver's header check must catch it. Payload bytes
///              carry no checksum: the data plane trusts the fabric's integrity (TCP, RDMA CRCs)
///   peer_dead  the peer is declared failed: every operation to and from it fails (peer_failed)

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/faults/faults.hpp"
#include "transport/transport.hpp"

namespace afd::transport {

/// What a worker's data plane moved, over its life (read from any thread).
struct transport_counters {
  std::atomic<std::uint64_t> bytes_sent{0}, bytes_received{0}, messages_sent{0}, messages_received{0};
};

/// Wraps `inner`. `site` (may be null: no faults) decides faults for this worker; `peer_name`
/// names a peer rank for the rules' `peer=` (may be empty). Counters go to `counters` (not null).
std::unique_ptr<transport> make_instrumented_transport(std::unique_ptr<transport> inner,
                                                       std::shared_ptr<faults::fault_site> site,
                                                       std::function<std::string(rank_t)> peer_name,
                                                       std::shared_ptr<transport_counters> counters);

}  // namespace afd::transport
