#pragma once
/// The launcher of a multi-process cluster on this machine (`afd launch`): hosts the coordinator,
/// forks one `afd worker` process per process of the launch plan (logs in the run directory),
/// waits until every worker is ready, serves until stopped, then stops the workers and reaps every
/// process. CAF stays in launcher.cpp.

#include <chrono>
#include <memory>
#include <string>

#include "deploy/launch/launch_plan.hpp"
#include "deploy/topology/topology.hpp"
#include "runtime/dataplane/cluster_spec.hpp"

namespace afd::launch {

/// Everything a launcher starts from, validated by the caller (`afd launch`).
struct launcher_options {
  topology::topology topology;
  dataplane::cluster_spec spec;
  launch_plan plan;
  worker_command_options worker;
  std::string file;                     ///< the topology file as the user named it
  std::chrono::seconds start_timeout{120};
};

/// Owns the actor system, the coordinator and every worker process it starts.
class launcher {
 public:
  explicit launcher(launcher_options options);
  ~launcher();
  launcher(const launcher&) = delete;
  launcher& operator=(const launcher&) = delete;

  /// Starts everything and waits until ready; false (after stopping what started, with the
  /// reason on stderr) on failure. Logs go to `run_dir`.
  bool start(const std::string& run_dir);
  /// Prints the summary of the running cluster on stdout.
  void print(bool foreground) const;
  /// Serves until a stop signal or the coordinator's end (`afd stop`); then stops everything and
  /// returns the exit code.
  int serve();
  /// Stops the coordinator (which stops every worker) and reaps every process. Idempotent.
  void stop();

 private:
  std::unique_ptr<class launcher_impl> impl_;
};

}  // namespace afd::launch
