#pragma once
/// The data plane between attention and FFN workers: an interface that knows nothing of CAF or
/// UCX. Implementations: loopback (in-process, transport/loopback.hpp) and UCX
/// (transport/ucx/ucx_transport.hpp). The shape follows a NIXL backend: capabilities, memory
/// registered once, then post / poll / release of operations on the hot path.
///
/// Hot path (post_send, post_recv, test, progress, release): no allocation, no throw; results are
/// an op_status. Setup and teardown (connect, register_memory, shutdown) return afd::expected.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::transport {

/// State of one posted operation.
enum class op_status : std::uint8_t {
  pending,  ///< posted, not complete
  done,     ///< complete; the buffer may be reused (send) or read (receive)
  error,    ///< failed; result() says why (peer_failed, bad_message, transport_error...)
  timeout,  ///< a wait's deadline passed; the operation itself is still pending
};

/// Stable lowercase name, e.g. "pending".
const char* to_string(op_status s) noexcept;

/// Where registered memory lives.
enum class memory_kind : std::uint8_t { host, device };

/// A worker's rank on the data plane: unique among the workers that talk to each other.
using rank_t = std::uint16_t;
/// Index of a connected peer in one transport's peer table.
using peer_id = std::uint32_t;
/// Deadlines are absolute steady-clock times.
using clock = std::chrono::steady_clock;
using deadline = clock::time_point;

/// A deadline `d` from now.
inline deadline after(std::chrono::nanoseconds d) { return clock::now() + d; }

/// Tags carry 48 bits of the caller's choice; the transport adds the sender's rank above them so
/// that a receive names the peer it expects.
inline constexpr std::uint64_t user_tag_bits = 48;
inline constexpr std::uint64_t user_tag_mask = (std::uint64_t{1} << user_tag_bits) - 1;

/// Handle to memory registered with a transport (returned by register_memory).
struct region {
  std::uint32_t id = UINT32_MAX;
  bool valid() const noexcept { return id != UINT32_MAX; }
};

/// Handle to a posted operation; valid until release().
struct op_handle {
  std::uint32_t slot = UINT32_MAX;
  std::uint32_t generation = 0;
  bool valid() const noexcept { return slot != UINT32_MAX; }
};

/// The outcome of an operation once it is no longer pending.
struct op_result {
  op_status status = op_status::pending;
  std::size_t bytes = 0;     ///< bytes received (receive) or sent (send)
  errc code = errc::none;    ///< why it failed, when status is error
};

/// Called from progress() (on the thread that drives this transport) when an operation completes
/// or fails. Must not post or release operations of the same transport.
using completion_fn = void (*)(void* user, op_handle op, op_status status) noexcept;

/// What an implementation can do.
struct capabilities {
  std::string_view name;              ///< "loopback", "ucx"
  bool cross_process = false;         ///< peers may live in other processes / hosts
  bool device_memory_direct = false;  ///< device pointers go straight to the fabric
  bool device_memory_staged = false;  ///< device memory is staged through pinned host buffers
};

/// One worker's end of the data plane. Not thread-safe: one thread (the worker's engine thread)
/// drives an instance; the loopback fabric is the only thing shared between threads.
class transport {
 public:
  virtual ~transport() = default;

  /// What this implementation supports.
  virtual capabilities caps() const noexcept = 0;
  /// This worker's rank.
  virtual rank_t rank() const noexcept = 0;
  /// Opaque address to hand to peers out of band (the actors carry it).
  virtual std::vector<std::byte> address() const = 0;
  /// Connects to the worker whose address() is given. Both sides connect to each other.
  virtual expected<peer_id> connect(std::span<const std::byte> address) = 0;
  /// The rank of a connected peer.
  virtual rank_t peer_rank(peer_id peer) const noexcept = 0;

  /// Registers memory once (per micro-batch slot, not per message).
  virtual expected<region> register_memory(void* base, std::size_t bytes, memory_kind kind) = 0;
  /// Releases a registration; no operation on it may be pending.
  virtual void deregister(region r) noexcept = 0;

  /// Sends bytes [offset, offset+bytes) of a registered region to a peer, tagged with the low
  /// 48 bits of `tag`. The buffer must stay untouched until the operation is done.
  /// `op` is valid afterwards unless the operation table is full (then status is error).
  virtual op_status post_send(peer_id peer, std::uint64_t tag, region r, std::size_t offset,
                              std::size_t bytes, op_handle& op, completion_fn on_done = nullptr,
                              void* user = nullptr) noexcept = 0;
  /// Receives one message from `peer` with `tag` into [offset, offset+capacity) of a region.
  /// A message longer than capacity fails the receive with bad_message.
  virtual op_status post_recv(peer_id peer, std::uint64_t tag, region r, std::size_t offset,
                              std::size_t capacity, op_handle& op,
                              completion_fn on_done = nullptr, void* user = nullptr) noexcept = 0;

  /// Current status of an operation, without progressing.
  virtual op_result result(op_handle op) const noexcept = 0;
  /// Releases an operation; a pending one is cancelled first.
  virtual void release(op_handle op) noexcept = 0;
  /// Advances communication once; returns how many events it handled.
  virtual std::size_t progress() noexcept = 0;
  /// Progresses for a short budget, then sleeps until there may be something to do or the
  /// deadline passes. Returns false when the deadline passed.
  virtual bool wait_for_activity(deadline until) noexcept = 0;

  /// True until a peer failure was detected (or the peer was never connected).
  virtual bool peer_alive(peer_id peer) const noexcept = 0;
  /// Why a peer failed ("" when it has not), for error messages; allocates.
  virtual std::string peer_failure(peer_id peer) const = 0;
  /// How the connection to a peer was set up, e.g. "UCX error mode minimal" ("" if nothing to
  /// say); for logs and benchmarks, allocates.
  virtual std::string peer_setup(peer_id) const { return {}; }

  /// Closes every connection, cancels pending operations, releases registrations.
  virtual expected<void> shutdown(deadline until) = 0;

  /// Progresses, then status of `op`.
  op_status test(op_handle op) noexcept {
    progress();
    return result(op).status;
  }
  /// Waits for `op` to leave pending, or returns timeout at the deadline (op stays pending).
  op_status wait(op_handle op, deadline until) noexcept;
  /// Waits for all ops; returns done, or the first error, or timeout.
  op_status wait_all(std::span<const op_handle> ops, deadline until) noexcept;
  /// An afd::error describing a failed op (allocates: not for the hot path).
  error describe(op_handle op, std::string_view what) const;
};

/// How a transport that reaches other processes learns that a peer failed (UCX only).
enum class error_mode : std::uint8_t {
  /// `minimal` between two workers that can only use sockets and shared memory; `peer`
  /// otherwise (RDMA, CUDA transports). The default.
  automatic,
  /// UCX's peer error mode: keepalive probes, and UCX's data-integrity rules, which over TCP
  /// (UCX 1.13) forbid the zero-copy rendezvous: large messages cost an extra copy.
  peer,
  /// UCX's minimal error mode with the failure callback still installed: a dropped connection
  /// still fails every operation to that peer (TCP reports it within milliseconds), at full
  /// zero-copy speed; no keepalive, so a host that vanishes silently is reported by the wait's
  /// deadline instead. Not for RDMA transports.
  minimal,
};

/// "auto", "peer", "minimal".
const char* to_string(error_mode m) noexcept;
/// Parses "auto" | "peer" | "minimal"; `source` names the setting in the error message.
expected<error_mode> parse_error_mode(std::string_view text, std::string_view source);

/// Network and memory selection for transports that reach other processes.
struct transport_config {
  rank_t rank = 0;
  /// UCX transports, e.g. "tcp", "sm", "tcp,sm,self"; empty: UCX_TLS from the environment, or
  /// UCX's default.
  std::string tls;
  /// Network devices, e.g. "eth0" or "lo,veth-a" ("mlx5_0:1" form accepted); empty:
  /// UCX_NET_DEVICES from the environment, or all.
  std::string net_devices;
  /// Microseconds to busy-progress before blocking on the worker's event fd; 0 blocks at once.
  /// Busy-polling workers starve each other on small machines, so the default is short.
  unsigned spin_us = 50;
  /// Capacity of the operation table (fixed at start; the hot path never grows it).
  std::uint32_t max_ops = 4096;
  /// How often UCX probes a silent peer to notice that it died (0: UCX's default).
  std::chrono::milliseconds keepalive = std::chrono::milliseconds(1000);
  /// How a failed peer is noticed; both ends of a connection settle on the same mode, and
  /// `peer` on either end wins.
  error_mode errors = error_mode::automatic;
};

}  // namespace afd::transport
