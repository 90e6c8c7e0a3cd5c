#pragma once
/// A whole cluster inside one process (the embedded mode): one actor system, one loopback fabric
/// (or UCX), the coordinator and every worker of the spec. The client library wraps it; tests use
/// it directly to reach the actors (e.g. to kill a worker).

#include <caf/all.hpp>

#include <memory>
#include <string>
#include <vector>

#include "runtime/dataplane/cluster_spec.hpp"
#include "runtime/core/error.hpp"

namespace afd::actors {

/// Options of an in-process cluster.
struct local_cluster_options {
  std::size_t scheduler_threads = 2;  ///< CAF's shared threads (workers have their own)
};

/// Owns the actor system; destroying it stops every actor and joins every thread.
class local_cluster {
 public:
  /// Starts every actor of `spec` and waits (up to spec.start_timeout) until all workers are ready.
  static expected<std::unique_ptr<local_cluster>> start(dataplane::cluster_spec spec, local_cluster_options options = {});
  ~local_cluster();
  local_cluster(const local_cluster&) = delete;
  local_cluster& operator=(const local_cluster&) = delete;

  /// The actor system everything runs in (clients of this process spawn their actors here).
  caf::actor_system& system();
  /// The coordinator.
  const caf::actor& coordinator() const;
  /// The spec it runs.
  const dataplane::cluster_spec& spec() const;
  /// Kills the actor of worker `name` as a crash would (no goodbye); it is restarted when the
  /// options say so. errc::invalid_argument when there is no such live worker.
  expected<void> kill_worker(const std::string& name);
  /// Stops the coordinator (which ends every request still running with errc::unavailable) and
  /// every worker, and waits for them. Idempotent.
  void stop();

  struct impl;

 private:
  explicit local_cluster(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace afd::actors
