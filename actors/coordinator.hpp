#pragma once
/// The coordinator (one per cluster): worker registry, epoch, placement hand-out, request table,
/// bounded admission queue, token fan-out to clients, failure detection. A plain state class
/// driven by a thin CAF behaviour (coordinator.cpp); here only the functions that start it.

#include <caf/all.hpp>

#include <cstdint>
#include <string>

#include "runtime/dataplane/cluster_spec.hpp"
#include "runtime/core/error.hpp"

namespace afd::actors {

/// Spawns the coordinator of `spec` in `sys` (not published; workers in this process use the handle).
/// A `standby` one refuses workers, requests and readiness waits (errc::unavailable) until its
/// process promotes it (promote_atom with a term); role_atom answers (active, term) either way.
caf::actor spawn_coordinator(caf::actor_system& sys, dataplane::cluster_spec spec, bool standby = false);

/// A started coordinator and the TCP port it is published on.
struct published_coordinator {
  caf::actor handle;
  std::uint16_t port = 0;
};

/// Spawns the coordinator and publishes it through the middleman (which `sys` must have loaded)
/// on `port` (0: any free port) of `host` (empty: every interface), for workers and clients of
/// other processes. errc::unavailable naming the port when it cannot be bound.
expected<published_coordinator> start_coordinator(caf::actor_system& sys, dataplane::cluster_spec spec, std::uint16_t port,
                                                  const std::string& host = "");

}  // namespace afd::actors
