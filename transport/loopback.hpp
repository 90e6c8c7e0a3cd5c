#pragma once
/// In-process transport: workers in one process (unit tests, the embedded cluster) exchange
/// messages through a shared loopback_fabric. Same interface and semantics as UCX's tag
/// matching: a receive names its peer and tag, messages between one pair with one tag match in
/// order. A send completes when a receive takes it (the fabric keeps no copy of its own).

#include <memory>

#include "transport/transport.hpp"

namespace afd::transport {

class loopback_transport;

/// The shared medium of loopback transports; one per process-local cluster. Thread-safe.
class loopback_fabric {
 public:
  /// A new, empty fabric.
  static std::shared_ptr<loopback_fabric> create();
  ~loopback_fabric();
  loopback_fabric(const loopback_fabric&) = delete;
  loopback_fabric& operator=(const loopback_fabric&) = delete;

  /// Simulates the death of the worker with this rank: every pending operation to or from it,
  /// on every transport, fails with peer_failed.
  void kill(rank_t rank);

  struct state;  ///< internal
  state& internal() noexcept { return *state_; }

 private:
  loopback_fabric();
  std::unique_ptr<state> state_;
};

/// Creates a loopback transport on `fabric` with a rank unique on that fabric.
expected<std::unique_ptr<transport>> make_loopback_transport(
    std::shared_ptr<loopback_fabric> fabric, rank_t rank, std::uint32_t max_ops = 4096);

}  // namespace afd::transport
