#pragma once
/// The cluster topology file (schema: docs/topology.md): nodes, the coordinator, attention
/// and FFN workers, transport, model settings, and which FFN worker owns which routed expert and
/// which shared-expert / dense-MLP columns. Every problem found is reported as
/// `FILE:LINE:COLUMN: message`, all of them at once. This header compiles without yaml-cpp.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"
#include "runtime/core/numerics.hpp"
#include "runtime/engine/placement.hpp"

namespace afd::topology {

/// A position in a topology file; line and column count from 1, 0 when unknown.
struct source_location {
  std::string file;
  int line = 0;
  int column = 0;
  /// "file:line:column" (or "file" when the position is unknown).
  std::string to_string() const;
};

/// One problem found in a topology file or in its placement against a model.
struct diagnostic {
  source_location where;
  std::string message;
  /// "file:line:column: message".
  std::string to_string() const;
};

/// Every problem found, in the order found.
using diagnostics = std::vector<diagnostic>;

/// A value together with every problem found while producing it; `value` is set only when
/// `errors` is empty.
template <class T>
struct checked {
  std::optional<T> value;
  diagnostics errors;
  /// True when there is a value (and no error).
  bool ok() const noexcept { return value.has_value() && errors.empty(); }
  /// One afd::error whose message lists every diagnostic, one per line.
  error to_error(errc code = errc::invalid_config) const {
    std::string text;
    for (const auto& d : errors) {
      if (!text.empty()) text += '\n';
      text += d.to_string();
    }
    return error{code, std::move(text)};
  }
};

/// Where a worker computes: the CPU backend or one CUDA device.
struct device {
  enum class kind : std::uint8_t { cpu, cuda };
  kind type = kind::cpu;
  int index = 0;  ///< CUDA device ordinal; 0 for cpu
  /// "cpu" or "cuda:N".
  std::string to_string() const;
  bool operator==(const device&) const = default;
};
/// Parses "cpu" or "cuda:N" (N a non-negative integer); nullopt otherwise.
std::optional<device> parse_device(std::string_view text);

/// The data plane between attention and FFN workers.
enum class transport_kind : std::uint8_t { ucx, loopback };
/// How FFN outputs are summed (DESIGN.md, "Determinism"): the run's setting, afd::combine_mode.
using combine_mode = afd::combine_mode;
/// "ucx" / "loopback".
std::string_view to_string(transport_kind k) noexcept;
/// "deterministic" / "throughput".
std::string_view to_string(combine_mode m) noexcept;

/// How the launcher reaches a node over ssh: a node's `ssh`, as written ("user@host[:port]" or
/// {user, host, port, identity}). Empty fields take the defaults ssh_target_of fills in.
struct ssh_spec {
  std::string user;      ///< login user; empty: the user running the launcher
  std::string host;      ///< empty: the node's `host`
  int port = 0;          ///< 1..65535; 0: 22
  std::string identity;  ///< private key file, absolute; empty: ssh's own default keys
  std::string identity_as_written;  ///< as in the file (relative to it, or "~/...")
  source_location where;
};

/// A machine of the cluster.
struct node_spec {
  std::string name;
  std::string host;  ///< address or host name the others reach it at
  std::optional<ssh_spec> ssh;  ///< how the launcher logs in to it; nullopt: the defaults
  std::string net_devices;      ///< UCX_NET_DEVICES for its workers; empty: transport.net_devices
  std::string afd;              ///< absolute path of the afd executable there; empty: the launcher's own
  source_location where;
};

/// Where and as whom the launcher runs ssh for a node, every default applied.
struct ssh_target {
  std::string user;      ///< never empty
  std::string host;      ///< never empty
  int port = 22;
  std::string identity;  ///< empty: ssh chooses (~/.ssh/id_*, the agent)
  /// "user@host": what ssh takes as its destination (the port goes to -p).
  std::string destination() const { return user + "@" + host; }
};

/// A standby coordinator: a coordinator process on `node` listening on `port`, which takes over
/// when every coordinator before it in the list (the primary first) is unreachable.
struct standby_spec {
  std::string node;
  int port = 0;  ///< 0: the primary's port
  source_location where;
};

/// The coordinator's control-plane endpoint.
struct coordinator_spec {
  std::string node;
  int port = 7600;  ///< TCP port of the CAF middleman, 1..65535
  /// Standby coordinators in order of succession (`standby: [b, {node: c, port: 7601}]`).
  std::vector<standby_spec> standby;
  /// Directory of the control plane's TLS files (ca.pem and coordinator/worker/client .pem + .key,
  /// as `afd launch` generates them), absolute; empty: `afd launch` makes them per cluster when a
  /// node is not on a loopback address.
  std::string credentials;
  source_location where;
};

/// The model run: checkpoint and numerics at the A/F boundary.
struct model_spec {
  std::string path;            ///< checkpoint directory; relative paths resolved against the file's directory
  std::string path_as_written; ///< as in the file
  dtype kv_dtype = dtype::bf16;           ///< f32 | bf16 | fp8
  dtype dispatch_dtype = dtype::f8_e4m3;  ///< A -> F activations: f32 | bf16 | fp8
  dtype combine_dtype = dtype::bf16;      ///< F -> A results: f32 | bf16
  combine_mode combine = combine_mode::deterministic;
};

/// Data-plane settings.
struct transport_spec {
  transport_kind kind = transport_kind::ucx;
  std::string tls;          ///< UCX_TLS, e.g. "tcp,sm,self"; empty = UCX's default
  std::string net_devices;  ///< UCX_NET_DEVICES, e.g. "lo"; empty = UCX's default
  /// How UCX notices a failed peer: "auto" | "peer" | "minimal" (transport::error_mode).
  std::string error_mode = "auto";
  int base_port = 0;        ///< 0: every worker listens on an ephemeral port; else worker i on base_port + i
};

/// The step pipeline.
struct pipeline_spec {
  int micro_batches = 3;         ///< K >= 1
  int prefill_chunk = 256;       ///< prompt tokens per prefill chunk
  int step_deadline_ms = 5000;   ///< a step slower than this is a failure
};

/// Admission limits of the coordinator.
struct limits_spec {
  int queue = 256;              ///< requests waiting for admission; beyond it they are rejected
  int max_new_tokens = 4096;    ///< upper bound a request may ask for
  int max_context = 0;          ///< prompt + output tokens; 0 = the model's max_position_embedding
};

/// One attention worker.
struct attention_worker_spec {
  std::string name;
  std::string node;
  device dev;
  std::int64_t kv_blocks = 4096;  ///< paged KV blocks
  int block_size = 16;            ///< tokens per KV block
  int max_batch = 64;             ///< sequences decoded at once
  source_location where;
};

/// One FFN worker.
struct ffn_worker_spec {
  std::string name;
  std::string node;
  device dev;
  int max_tokens = 0;  ///< tokens per (micro-batch, layer) it accepts; 0 = sum of attention max_batch
  source_location where;
};

/// Several workers (and possibly the coordinator) sharing one process.
struct process_spec {
  std::string name;
  std::vector<std::string> members;  ///< worker names, or "coordinator"
  source_location where;
};

/// Expert indices [first, last], both included.
struct expert_range {
  std::int64_t first = 0;
  std::int64_t last = 0;
  source_location where;
};

/// How the routed experts of the layers it covers are spread over FFN workers.
struct expert_rule {
  enum class policy : std::uint8_t {
    contiguous,       ///< worker i of F gets the i-th of F near-equal contiguous ranges
    round_robin,      ///< expert e goes to worker e mod F
    explicit_owners,  ///< the `owners` lists
  };
  /// The experts one worker owns.
  struct owner {
    std::string worker;
    std::vector<expert_range> experts;
    source_location where;
  };
  policy how = policy::contiguous;
  std::vector<owner> owners;
  source_location where;
};

/// How one unit (a layer's shared expert, or its dense MLP) is spread over FFN workers.
/// A slice is a range of the unit's intermediate columns [begin, end).
struct unit_rule {
  enum class policy : std::uint8_t {
    round_robin,      ///< whole; the k-th layer of this kind goes to worker k mod F
    sliced,           ///< F near-equal column slices (throughput mode only)
    explicit_owners,  ///< the `shares` (one worker `whole`, or slices tiling the width)
  };
  /// One worker's part.
  struct share {
    std::string worker;
    bool whole = true;
    std::int64_t begin = 0;
    std::int64_t end = 0;
    source_location where;
  };
  policy how = policy::round_robin;
  std::vector<share> shares;
  source_location where;
};

/// Rules for layers [first_layer, last_layer] that replace the cluster-wide ones.
struct layer_rule {
  std::int64_t first_layer = 0;
  std::int64_t last_layer = 0;
  std::optional<expert_rule> experts;
  std::optional<unit_rule> shared;
  std::optional<unit_rule> dense;
  source_location where;
};

/// The placement as written in the file; resolve_placement turns it into a `placement`.
struct placement_spec {
  expert_rule experts;
  unit_rule shared;
  unit_rule dense;
  std::vector<layer_rule> layers;
};

/// A parsed and validated topology file.
/// Fault rules armed in the running cluster once it is ready (`faults:`; docs/faults.md).
struct faults_spec {
  std::uint64_t seed = 1;
  std::vector<std::string> rules;  ///< as written, each already checked
};

struct topology {
  std::string file;        ///< the file as named by the caller
  std::string directory;   ///< its directory; base of relative paths
  std::string cluster_name = "afd";
  model_spec model;
  std::vector<node_spec> nodes;
  coordinator_spec coordinator;
  transport_spec transport;
  pipeline_spec pipeline;
  limits_spec limits;
  std::vector<attention_worker_spec> attention_workers;
  std::vector<ffn_worker_spec> ffn_workers;
  std::vector<process_spec> processes;  ///< empty: one process per worker, and one for the coordinator
  placement_spec placement;
  faults_spec faults;
  /// Position of each value by its path in the file ("coordinator.port", "ffn_workers[1].node"),
  /// so that later checks (launch, ports) can name the line they refer to.
  std::map<std::string, source_location, std::less<>> locations;

  /// The node named `name`, or nullptr.
  const node_spec* find_node(std::string_view name) const;
  /// Index of the FFN worker named `name` in ffn_workers, or -1.
  int ffn_worker_index(std::string_view name) const;
  /// Index of the attention worker named `name` in attention_workers, or -1.
  int attention_worker_index(std::string_view name) const;
  /// Position of the value at `path`; the file with line 0 when unknown.
  source_location location_of(std::string_view path) const;
  /// Data-plane port of attention worker i (role = 'a') or FFN worker i ('f'); 0 = ephemeral.
  int data_port(char role, int i) const;
};

/// One coordinator of the cluster: the primary (index 0) or a standby, where it listens.
struct coordinator_endpoint {
  int index = 0;      ///< 0: the primary; i: the i-th standby
  std::string node;
  std::string host;   ///< its node's host
  int port = 0;
};
/// Every coordinator of `t` in order of succession: the primary first, then the standbys.
std::vector<coordinator_endpoint> coordinator_endpoints(const topology& t);

/// Checks one fault rule (docs/faults.md) against the topology: its syntax, its fields for its
/// kind, and that the workers it names exist. errc::invalid_argument naming what is wrong.
expected<void> check_fault_rule(const topology& t, std::string_view text);

/// The ssh target of `node`: its `ssh` fields where given, else the user running this process
/// (root when it runs as root) at the node's `host`, port 22.
ssh_target ssh_target_of(const node_spec& node);
/// UCX_NET_DEVICES for the workers on node `node`: the node's `net_devices`, else
/// `transport.net_devices` (empty: UCX's default).
std::string net_devices_of(const topology& t, std::string_view node);
/// The afd executable to run on `node`: its `afd`, else `self` (the launcher's own absolute path).
std::string afd_path_of(const node_spec& node, const std::string& self);
/// The nodes in rank order, the one numbering every launcher uses (Slurm's node index, a
/// Kubernetes pod index, `afd node --node-index`): the coordinator's node is rank 0, the others
/// follow in file order.
std::vector<const node_spec*> nodes_by_rank(const topology& t);

/// Reads and validates the topology file at `path`.
checked<topology> parse_file(const std::string& path);
/// The same from text; `file` names it in diagnostics and `directory` resolves relative paths.
checked<topology> parse_text(std::string_view yaml, const std::string& file,
                             const std::string& directory = ".");
/// parse_file as an expected: errc::invalid_config (or parse_error) listing every diagnostic.
expected<topology> load_file(const std::string& path);

/// True when `host` names this machine: 127.0.0.0/8, ::1, localhost, 0.0.0.0, its host name, or
/// an address of one of its interfaces (in this network namespace). Names are not resolved.
bool is_local_host(std::string_view host);
/// Tries to bind the TCP ports this machine would listen on (the coordinator's port, and fixed
/// data ports when transport.base_port is set) for nodes whose host is local; one diagnostic per
/// port in use. Ports of remote nodes are not checked.
diagnostics check_ports(const topology& t);
/// check_ports, plus the net devices of nodes on this machine that run workers (the node's
/// `net_devices`, else transport.net_devices) checked against this machine's interfaces, the `afd`
/// of local nodes checked to be executable, and the ssh identity of every remote node checked to
/// be a readable file that ssh accepts (not readable by others): the checks `afd check` and the
/// launcher make before starting anything.
diagnostics check_environment(const topology& t);

/// The resolved placement (runtime/engine/placement.hpp: one value for the whole of afd).
using engine::layer_placement;
using engine::placement;
using engine::unit_slice;

/// Applies the placement rules of `t` to the model `config`: checks every expert of every MoE
/// layer has exactly one owner, indices and slices are in range, overrides name existing layers of
/// the right kind, and units are whole in deterministic mode. Pure: no file or network access.
checked<placement> resolve_placement(const topology& t, const model_config& config);

/// A sorted list of indices as ranges: "4-59", or "1, 3, 5-7" with separator ", ".
std::string ranges_text(const std::vector<std::int64_t>& sorted, std::string_view separator = ", ");

/// Reads `<model.path>/config.json` when the build has the checkpoint reader.
expected<model_config> read_model_config(const topology& t);

/// A human-readable summary for `afd check`: workers, transport, and the placement of experts
/// per layer and of shared/dense slices (or the rules as written when `resolved` is null).
std::string summarize(const topology& t, const placement* resolved, const model_config* config);

}  // namespace afd::topology
