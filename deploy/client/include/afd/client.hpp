#pragma once
/// The afd client API: run an AFD cluster inside this process, or connect to a launched one, and
/// submit requests to it. No CAF, UCX or YAML types appear here; every failure is a value
/// (afd::expected / afd::error) and no exception escapes.
///
///   auto c = afd::client::cluster::embed("deploy/examples/2a2f.yaml");
///   auto id = (*c)->submit({.prompt = {5, 17, 300}, .max_new_tokens = 32});
///   auto r = (*c)->wait(*id, std::chrono::seconds(30));   // r->tokens
///
/// Errors: errc::invalid_argument (bad prompt or parameters), errc::rejected (admission queue
/// full, prompt too long for the context), errc::unavailable (cluster not ready or gone),
/// errc::cancelled, errc::timeout (a wait's deadline passed; the request goes on).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/core/worker_state.hpp"

namespace afd::client {

/// How the next token is chosen.
struct sampling_params {
  float temperature = 0.0f;  ///< 0: greedy
  std::int32_t top_k = 0;    ///< 0: off
  float top_p = 1.0f;        ///< 1: off
  std::uint64_t seed = 0;    ///< with (token index) decides every draw: same seed, same tokens
};

/// One generation request.
struct request {
  std::vector<std::int32_t> prompt;     ///< token ids, at least one
  std::int64_t max_new_tokens = 16;     ///< at least one
  sampling_params sampling;
  std::vector<std::int32_t> stop_ids;   ///< generation ends after producing one of these
  std::int64_t logits_rows = 0;         ///< return the full logits of the first K generated positions
};

/// Identifies a submitted request within its cluster.
using request_id = std::int64_t;

/// A token as it is produced.
struct token {
  request_id id = 0;
  std::int32_t value = 0;
  std::int64_t index = 0;  ///< 0 for the first generated token
  bool last = false;       ///< the request ended with this token
};

/// What a finished request produced.
struct response {
  request_id id = 0;
  std::vector<std::int32_t> tokens;
  std::string finish_reason;               ///< "length", "stop", "context"
  std::vector<std::vector<float>> logits;  ///< the first logits_rows rows (fp32, full vocabulary)
  std::int64_t prompt_tokens = 0;          ///< tokens of the prompt
  double queue_seconds = 0;                ///< accepted by the coordinator until first admitted to a worker
  std::uint32_t recoveries = 0;            ///< failures it lived through (moved and resumed each time)
};

/// Called on an internal thread for every token of a request, in order; must return quickly.
using token_callback = std::function<void(const token&)>;

/// One worker as the coordinator sees it.
struct worker_status {
  std::string name;
  std::string role;          ///< "attention" or "ffn"
  worker_state state = worker_state::starting;  ///< to_string(state) names it
  std::string device;        ///< "cpu", "cuda:0"
  std::int64_t running = 0;  ///< requests in its batch (attention)
  std::int64_t kv_blocks_used = 0;
  std::int64_t kv_blocks_total = 0;
  bool slow = false;             ///< progressing, but its steps take far longer than its peers' (a straggler)
  std::uint64_t steps = 0;       ///< engine steps it completed, over its life (its progress counter)
  std::uint32_t rejoins = 0;     ///< times it came back (restarted or resumed) and joined again
  /// Data plane, totals over its life: seconds in kernels and blocked on the network, in all and
  /// per layer (index = layer); bytes and messages it sent and received.
  double compute_seconds = 0;
  double network_wait_seconds = 0;
  std::vector<double> layer_compute_seconds;
  std::vector<double> layer_wait_seconds;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t messages_sent = 0;
  std::uint64_t messages_received = 0;
};

/// How often one fault rule fired (fault injection, when rules are armed).
struct fault_rule_status {
  std::string rule;     ///< the rule as written
  std::uint64_t fired = 0;
};

/// One event of the cluster's life as the coordinator recorded it (failures, retried epochs,
/// rejoins, epochs ready): what fault tests and the fault matrix measure detection and recovery by.
struct cluster_event {
  std::int64_t at_ms = 0;  ///< the coordinator's steady clock (ms since it started)
  std::string kind;        ///< "failed", "slow", "retry", "rejoined", "waiting", "gave_up", "epoch_ready", "cluster_failed"
  std::string worker;      ///< the worker concerned (may be empty)
  std::uint32_t epoch = 0; ///< the epoch when it happened
  std::string detail;      ///< why, in words
};

/// The cluster as the coordinator sees it.
struct cluster_status {
  std::uint32_t epoch = 0;
  std::int64_t vocab_size = 0;  ///< token ids of a prompt must be in [0, vocab_size)
  bool ready = false;
  std::int64_t queued = 0;
  std::int64_t running = 0;
  std::int64_t finished = 0;
  std::uint64_t recoveries = 0;  ///< epochs started after a worker was lost or came back
  std::vector<worker_status> workers;
  std::vector<fault_rule_status> faults;  ///< the armed plan's rules, firings summed over every worker
  std::vector<cluster_event> events;      ///< the most recent events, oldest first
  std::int64_t now_ms = 0;                ///< the coordinator's clock when it answered (as cluster_event::at_ms)
  std::uint64_t term = 0;  ///< the active coordinator's term (0: a cluster without standby coordinators)
  std::int64_t coordinator_pid = 0;  ///< the active coordinator's process (on its node)
};

/// Options of an embedded cluster.
struct embed_options {
  std::string model_path;  ///< overrides the topology's model path when not empty
  std::chrono::milliseconds start_timeout{60000};
  std::string transport;   ///< "loopback" or "ucx" overrides the file's transport.kind when not empty
  int prefill_chunk = 0;   ///< overrides the file's pipeline.prefill_chunk when > 0
};

/// A cluster to send requests to: embedded in this process, or remote.
class cluster {
 public:
  /// Starts every worker of the topology file inside this process (loopback or UCX transport, as
  /// the file says) and waits until all are ready.
  static expected<std::unique_ptr<cluster>> embed(const std::string& topology_file, embed_options options = {});
  /// Connects to the coordinator of a launched cluster (`afd launch`).
  static expected<std::unique_ptr<cluster>> connect(const std::string& host, std::uint16_t port,
                                                    std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// The same over TLS with the cluster's credentials: `credentials` is a directory holding
  /// ca.pem, client.pem and client.key (`afd launch` makes them in its run directory, RUN/tls);
  /// empty: plain TCP. A coordinator that requires TLS refuses a plain client, and the reverse.
  static expected<std::unique_ptr<cluster>> connect(const std::string& host, std::uint16_t port,
                                                    std::chrono::milliseconds timeout, const std::string& credentials);
  /// Connects to the active one of several coordinators ("HOST:PORT" each: a primary and its
  /// standbys, in order), waiting up to `timeout` for one to be active; after a coordinator's
  /// loss the client finds the next active one in the list and resumes its requests there.
  static expected<std::unique_ptr<cluster>> connect_any(const std::vector<std::string>& addresses,
                                                        std::chrono::milliseconds timeout,
                                                        const std::string& credentials = {});
  /// Connects to the cluster a topology file describes: its coordinators (the primary and the
  /// standbys), and the credentials `afd launch` made on this machine (else the directory
  /// $AFD_CREDENTIALS names).
  static expected<std::unique_ptr<cluster>> connect(const std::string& topology_file,
                                                    std::chrono::milliseconds timeout = std::chrono::seconds(10));

  virtual ~cluster() = default;

  /// Validates and submits a request; `on_token` (optional) streams its tokens.
  virtual expected<request_id> submit(request r, token_callback on_token = {}) = 0;
  /// The next token of a request (iterator style), waiting up to `timeout`; after the last token,
  /// errc::out_of_range. Tokens are also recorded for wait() whether or not they were taken here.
  virtual expected<token> next_token(request_id id, std::chrono::milliseconds timeout) = 0;
  /// Waits until the request finishes; errc::timeout leaves it running.
  virtual expected<response> wait(request_id id, std::chrono::milliseconds timeout) = 0;
  /// Cancels a request: it ends with errc::cancelled and its KV is freed at once.
  virtual expected<void> cancel(request_id id) = 0;
  /// Forgets a finished request: the client releases its tokens, logits and callback, and later
  /// calls about it answer errc::invalid_argument (unknown id). A long-lived client (a server)
  /// calls it once it has taken the result. errc::invalid_argument while the request runs.
  virtual expected<void> forget(request_id id) = 0;
  /// Per-worker state, load and KV use.
  virtual expected<cluster_status> status(std::chrono::milliseconds timeout = std::chrono::seconds(5)) = 0;
  /// Arms a fault plan in every worker (rules as in docs/faults.md; decisions replay from `seed`);
  /// an empty list disarms. errc::invalid_argument naming a bad rule; nothing is armed then.
  virtual expected<void> arm_faults(const std::vector<std::string>& rules, std::uint64_t seed) = 0;
  /// Embedded: stops every worker. Remote: disconnects (the cluster keeps running; see
  /// stop_cluster). Idempotent.
  virtual void shutdown() = 0;
  /// Asks the cluster to stop (remote) or stops it (embedded).
  virtual expected<void> stop_cluster() = 0;
};

}  // namespace afd::client
