#pragma once
/// Starting a worker: one actor for either role, for control (registration, heartbeats, start of
/// an epoch, admissions, cancellations, status, fencing) plus the engine thread of
/// runtime/dataplane for the step loop. Each worker runs as a detached actor (its own thread), so
/// loading weights and connecting the transport never block the scheduler's shared threads.

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "runtime/dataplane/cluster_spec.hpp"
#include "runtime/core/error.hpp"
#include "runtime/faults/faults.hpp"
#include "transport/loopback.hpp"

namespace afd::actors {

/// What a worker needs from its process besides the spec.
struct worker_environment {
  /// The in-process fabric for transport kind loopback (one per embedded cluster); must be set
  /// when the spec says loopback.
  std::shared_ptr<transport::loopback_fabric> fabric;
  /// This life of the worker; 0: taken from the clock (distinct across restarts).
  std::uint64_t incarnation = 0;
  /// A fault plan armed from the start (rules of `afd worker --fault`); may be null.
  std::shared_ptr<faults::fault_plan> faults;
  /// Called on the worker actor's thread when it ends (supervision); may be empty.
  std::function<void(const caf::error&)> on_exit;
  /// Finds the coordinator again when it is lost (its process was replaced): called on the
  /// worker's thread, blocking and bounded. Empty: a worker whose coordinator is gone ends.
  std::function<expected<caf::actor>()> reconnect;
  /// How long a worker without its coordinator keeps trying to find it before it ends (so that a
  /// cluster whose coordinator never returns leaves no orphan process).
  std::chrono::milliseconds reconnect_grace{30000};
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
