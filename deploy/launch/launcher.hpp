#pragma once
/// The launcher of a cluster (`afd launch`) and the node agent (`afd node`): one class, because an
/// agent is the launcher restricted to one node. It may host the coordinator (the launcher; the
/// agent of the coordinator's node), forks one `afd worker` process per process of the launch plan
/// placed on its node(s) (logs in the run directory), starts the agents of other nodes (over ssh,
/// or one `srun` for all of them), waits until every worker is ready, serves until stopped, and
/// supervises its worker processes meanwhile: one that exits unexpectedly is restarted within a
/// restart budget (supervision.hpp), then given up. Finally it stops everything it started and
/// reaps every process. CAF stays in launcher.cpp.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/supervision.hpp"
#include "deploy/launch/tls.hpp"
#include "deploy/topology/topology.hpp"
#include "runtime/dataplane/cluster_spec.hpp"

namespace afd::launch {

/// An agent of another node, started by the launcher (`ssh ... afd node ...`, or one `srun` for
/// every node). Not restarted: its worker processes are supervised by the agent itself.
struct agent_process {
  std::string name;               ///< "node b", or "srun"
  std::vector<std::string> argv;  ///< the command that starts it here
  bool stdin_pipe = false;        ///< its stdin stays open while the launcher lives (ssh passes the end on)
};

/// Everything a launcher starts from, validated by the caller (`afd launch`, `afd node`).
struct launcher_options {
  topology::topology topology;
  dataplane::cluster_spec spec;
  launch_plan plan;
  worker_command_options worker;
  std::string file;                     ///< the topology file as the user named it
  std::chrono::seconds start_timeout{120};
  std::string who = "afd launch";       ///< how its messages start
  /// Agent mode: the worker processes of this node only (empty: every process on this machine).
  std::string node;
  /// Hosts the coordinator (and the plan's in-launcher process); otherwise the coordinator is
  /// reached at worker.coordinator.
  bool host_coordinator = true;
  /// Without the coordinator: wait for the whole cluster to be ready (the launcher over Slurm) or
  /// only for the own processes to be started (an agent).
  bool wait_for_cluster = false;
  std::vector<agent_process> agents;    ///< agents of other nodes to start
  bool exit_with_stdin = false;         ///< an agent started over ssh: stdin's end means the launcher is gone
  restart_policy restarts;
  /// The control plane's TLS credentials of this process's role (coordinator, or client for a
  /// launcher that only connects); nullopt: plain TCP.
  std::optional<tls::credentials> credentials;
  /// Fault rules armed once the cluster is ready (the topology's `faults:` and `--fault`), checked
  /// by the caller, with their seed. Process rules (kill_process, pause_process) are applied by
  /// this launcher to its own worker processes, `after=` arming; the others by the workers.
  std::vector<std::string> fault_rules;
  std::uint64_t fault_seed = 1;
};

/// What `afd coordinator` runs: the coordinator of a cluster in a process of its own (started and
/// restarted by the launcher), published at host:port.
struct coordinator_process_options {
  dataplane::cluster_spec spec;
  std::string host;  ///< as the topology's coordinator node says (0.0.0.0 / :: : every interface)
  int port = 0;
  std::optional<tls::credentials> credentials;
  std::string who = "afd coordinator";
  /// Every coordinator of the cluster (primary first) and this one's place in the list; more than
  /// one: a succession decides which one is active (succession.hpp).
  address_list coordinators;
  int index = 0;
};

/// Runs the coordinator until it is stopped (`afd stop`: exit code 0) or a stop signal (it stops
/// the workers first); 1 when it cannot be published, 2 on bad credentials, 3 when it was deposed
/// (another coordinator of the cluster is active with a higher term).
int run_coordinator_process(const coordinator_process_options& o);

/// Owns the actor system, the coordinator (when it hosts it) and every process it starts.
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
  /// Serves until a stop signal or the coordinator's end (`afd stop`); an agent also ends when all
  /// its processes ended, or no coordinator answered for timeouts::coordinator_grace. Then stops
  /// everything and returns the exit code.
  int serve();
  /// Stops the coordinator (which stops every worker) and reaps every process. Idempotent.
  void stop();

 private:
  std::unique_ptr<class launcher_impl> impl_;
};

}  // namespace afd::launch
