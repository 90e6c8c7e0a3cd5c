#pragma once
/// Attention and FFN worker actors: a CAF actor for control (registration, start of an epoch,
/// admissions, cancellations, status) plus the engine thread of actors/data_plane.hpp for the step
/// loop. Each worker runs as a detached actor (its own thread), so loading weights and connecting
/// the transport never block the scheduler's shared threads.

#include <caf/all.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/dataplane/cluster_spec.hpp"
#include "runtime/core/error.hpp"
#include "transport/loopback.hpp"

namespace afd::actors {

/// What a worker needs from its process besides the spec.
struct worker_environment {
  /// The in-process fabric for transport kind loopback (one per embedded cluster); must be set
  /// when the spec says loopback.
  std::shared_ptr<transport::loopback_fabric> fabric;
};

/// Creates the worker `name` of `spec` (its transport first, so that a bad transport setting
/// fails here) and spawns its actor, which registers with `coordinator`.
/// errc::invalid_argument when `name` is not in the spec; the transport's errors otherwise.
expected<caf::actor> spawn_worker(caf::actor_system& sys, const dataplane::cluster_spec& spec, const std::string& name,
                                  caf::actor coordinator, worker_environment env = {});

/// The same for a worker whose coordinator lives in another process: connects to it through the
/// middleman (which `sys` must have loaded) at host:port. errc::unavailable when unreachable.
expected<caf::actor> start_worker(caf::actor_system& sys, const dataplane::cluster_spec& spec, const std::string& name,
                                  const std::string& coordinator_host, std::uint16_t coordinator_port,
                                  worker_environment env = {});

}  // namespace afd::actors
