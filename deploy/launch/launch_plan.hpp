#pragma once
/// What `afd launch FILE` starts where: the topology's workers grouped into processes (one per
/// worker unless the file's `processes` groups them), each process placed on its node's host, the
/// command line that starts it (`afd worker ...` here, `ssh HOST afd worker ...` on another host),
/// and the checks made before anything starts. No CAF, no process is started here.

#include <cstdint>
#include <string>
#include <vector>

#include "deploy/topology/topology.hpp"
#include "runtime/core/error.hpp"

namespace afd::launch {

/// Coordinator addresses ("HOST", PORT) in order of succession: the primary first.
using address_list = std::vector<std::pair<std::string, int>>;

/// One operating-system process of a launched cluster.
struct process_plan {
  std::string name;                  ///< the file's process name, or the worker's name
  std::vector<std::string> workers;  ///< worker names it runs (may be empty for the launcher)
  std::string node;                  ///< node name in the topology
  std::string host;                  ///< that node's host
  bool local = true;                 ///< the host is this machine
  bool in_launcher = false;          ///< runs inside the launcher (grouped with the coordinator)
  topology::source_location where;   ///< where the file defines it (the process or the worker)
};

/// One coordinator process: the primary (index 0) or a standby, on its node.
struct coordinator_plan {
  int index = 0;
  std::string node;
  std::string host;
  int port = 0;
  bool local = true;  ///< its host is this machine
};

/// Every process of the cluster, and where the coordinator is reached.
struct launch_plan {
  std::vector<process_plan> processes;  ///< the launcher's own (in_launcher) first when it hosts workers
  std::string coordinator_host;         ///< host workers and clients connect to
  int coordinator_port = 0;
  bool coordinator_local = true;
  /// Every coordinator in order of succession (the primary first, then the topology's standbys).
  std::vector<coordinator_plan> coordinators;
  /// "HOST:PORT[,HOST:PORT...]" of every coordinator, as workers and clients of other machines
  /// reach them (wildcard hosts as the loopback address).
  std::string coordinator_addresses() const;
};

/// Options that travel to every worker process.
struct worker_command_options {
  std::string afd_executable = "afd";  ///< path of the `afd` program on the worker's host
  std::string topology_file;           ///< absolute path of the topology file
  std::string model_override;          ///< --model, when given
  std::string coordinator;             ///< HOST:PORT of every coordinator, comma-separated, primary first
  std::string credentials;             ///< directory of the cluster's TLS files (tls.hpp); empty: plain
};

/// Groups the workers of `t` into processes and places them on hosts.
launch_plan plan_launch(const topology::topology& t);

/// The argv of the process that runs `p`'s workers on its own host:
/// `afd worker --topology FILE --name W [--name W2...] --coordinator HOST:PORT [--model DIR]`.
std::vector<std::string> worker_command(const process_plan& p, const worker_command_options& o);

/// The same for a process on another host, as it will be started: `ssh -o BatchMode=yes HOST --
/// afd worker ...` (the file and the model must be at the same paths there).
std::vector<std::string> remote_worker_command(const process_plan& p, const worker_command_options& o);

/// The node agent of `node`: `AFD node FILE --node NAME --coordinator HOST:PORT [--model DIR]
/// [--credentials DIR] [--exit-with-stdin]`, AFD being o.afd_executable.
std::vector<std::string> agent_command(const std::string& node, const worker_command_options& o,
                                       bool exit_with_stdin);

/// `ssh -o BatchMode=yes -o ConnectTimeout=S [-p PORT] [-i KEY] USER@HOST -- 'REMOTE...'`: no
/// prompt ever (a missing key or an unknown host key is an error), a bounded connect, the remote
/// command quoted once for the remote shell.
std::vector<std::string> ssh_command(const topology::ssh_target& target, const std::vector<std::string>& remote);

/// How `afd launch` reaches the nodes that are not this machine.
enum class launch_via : std::uint8_t { ssh, slurm };

/// The nodes `afd launch` starts an agent on over ssh: those with workers whose host is not this
/// machine, in rank order.
std::vector<const topology::node_spec*> remote_nodes(const topology::topology& t, const launch_plan& plan);

/// Checks made before anything starts, one diagnostic each: over ssh, the coordinator on another
/// host; with other nodes (ssh or Slurm), a coordinator address they cannot reach (loopback or
/// wildcard); a loopback transport across several processes.
topology::diagnostics check_launchable(const topology::topology& t, const launch_plan& plan,
                                       const worker_command_options& o, launch_via via = launch_via::ssh);

/// True when every node of `t` is on a loopback address (127.0.0.0/8, ::1, localhost): a
/// single-host cluster nobody else can reach, whose control plane may stay plain TCP.
bool loopback_only(const topology::topology& t);

/// Where a cluster's coordinator is reached, from a topology file or "HOST:PORT".
struct cluster_address {
  std::string host;  ///< the primary coordinator's
  int port = 0;
  address_list coordinators;  ///< every coordinator, primary first (a FILE's standbys, or --connect's list)
  std::string cluster_name;  ///< from the file; empty for HOST:PORT
  std::string run_directory; ///< the launcher's run directory when known (a file on this machine)
  /// The directory of the cluster's TLS files a client presents (tls::credentials_of(DIR, client)):
  /// the launcher's RUN/tls when it exists on this machine, else $AFD_CREDENTIALS; empty: plain.
  std::string credentials;
  std::vector<std::string> node_names;  ///< the file's nodes (their agents' run directories)
};

/// `afd stop` / `afd status`: exactly one of `topology_file` and `connect` must be given. A file's
/// coordinator host 0.0.0.0 / :: is reached at the loopback address. errc::invalid_argument (usage),
/// errc::invalid_config (the file's diagnostics).
expected<cluster_address> resolve_cluster_address(const std::string& topology_file, const std::string& connect);

/// Where processes of this machine reach a coordinator listening on `host`: the loopback address
/// for a wildcard address (0.0.0.0, ::), `host` otherwise.
std::string connect_host(const std::string& host);

/// A command line as a shell would read it (arguments with spaces or quotes are quoted).
std::string shell_join(const std::vector<std::string>& argv);

/// "HOST:PORT", bracketing IPv6 addresses ("[::1]:7600").
std::string host_port(const std::string& host, int port);

/// Splits "HOST:PORT" or "[V6]:PORT"; errc::invalid_argument naming `text` otherwise.
expected<std::pair<std::string, int>> parse_host_port(const std::string& text);

/// Splits "HOST:PORT[,HOST:PORT...]" (each as parse_host_port reads it).
expected<address_list> parse_host_ports(const std::string& text);
/// "HOST:PORT,HOST:PORT".
std::string join_host_ports(const address_list& addresses);

}  // namespace afd::launch
