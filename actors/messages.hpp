#pragma once
/// The control-plane messages of the cluster (actors/README.md): typed structs with CAF inspect
/// functions, atoms, the conversion of afd::error to and from caf::error (category "afd"), and one
/// function that registers all of it with an actor system's config. Every message that concerns a
/// placement carries the cluster epoch.

#include <caf/all.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/core/worker_state.hpp"
#include "runtime/engine/scheduler.hpp"

namespace afd::actors {

// Atoms (at most 10 characters each).
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;           ///< client -> coordinator -> worker
using status_atom = caf::atom_constant<caf::atom("status")>;           ///< cluster_status_msg / worker_status_msg
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;       ///< stop the cluster
using await_ready_atom = caf::atom_constant<caf::atom("awaitready")>;  ///< answered once every worker is ready
using stop_engine_atom = caf::atom_constant<caf::atom("stopengine")>;  ///< a worker stops its engine (cluster failed)
using ready_atom = caf::atom_constant<caf::atom("ready")>;             ///< a worker's answer to start_epoch
using report_atom = caf::atom_constant<caf::atom("report")>;           ///< engine thread -> own actor
using failure_atom = caf::atom_constant<caf::atom("failure")>;         ///< engine thread -> own actor
using tick_atom = caf::atom_constant<caf::atom("tick")>;               ///< an actor's own timer (heartbeats, checks)
using fenced_atom = caf::atom_constant<caf::atom("fenced")>;           ///< coordinator -> worker: you were declared failed
using arm_faults_atom = caf::atom_constant<caf::atom("armfaults")>;    ///< arm a fault plan (rules + seed)
using fault_fired_atom = caf::atom_constant<caf::atom("faultfire")>;  ///< launcher -> coordinator: it applied process rule i
using reconnect_atom = caf::atom_constant<caf::atom("reconnect")>;    ///< a worker tries to find its lost coordinator again
using poll_stop_atom = caf::atom_constant<caf::atom("pollstop")>;      ///< a worker looks whether its engine stopped
/// Anyone -> coordinator: active or standby, and its term (answer: bool active, std::uint64_t term;
/// a standby's term is the highest it knows of). Its process -> a standby, with a term: the highest
/// term seen among the other coordinators.
using role_atom = caf::atom_constant<caf::atom("coordrole")>;
/// Its process -> a standby coordinator: become the active one with this term.
using promote_atom = caf::atom_constant<caf::atom("promote")>;

/// Worker -> coordinator: join the cluster. Answered with the coordinator's epoch, or an error
/// (unknown or duplicate name, role mismatch).
struct register_worker_msg {
  std::uint8_t role = 0;               ///< dataplane::worker_role
  std::string name;
  std::vector<std::uint8_t> address;   ///< the worker's transport address blob
  std::int64_t kv_blocks = 0;
  std::string device;
  /// Distinguishes the lives of one worker name: a restarted process or a fenced worker that
  /// rejoins registers with a new incarnation and is a new member.
  std::uint64_t incarnation = 0;
  /// The last epoch this worker ran under any coordinator (0: none): a coordinator that replaced
  /// a lost one continues the epochs above it, so fencing by epoch still holds.
  std::uint32_t last_epoch = 0;
};

/// Worker -> coordinator, every timeouts::heartbeat_interval from the worker's actor thread:
/// liveness (the actor answers) and progress (the engine's step counter and phase).
struct heartbeat_msg {
  std::string name;
  std::uint64_t incarnation = 0;
  std::uint32_t epoch = 0;   ///< the epoch the worker's engine runs (0: none)
  std::uint64_t steps = 0;   ///< engine steps completed over the worker's life
  std::uint8_t phase = 0;    ///< dataplane::engine_progress::phase_kind
  std::int64_t phase_ms = 0; ///< how long the engine has been in that phase
  std::vector<std::int64_t> admitted;  ///< attention: requests admitted since the last heartbeat
  std::vector<std::uint64_t> fired;    ///< per rule of the armed fault plan: firings at this worker so far
  std::uint64_t reports = 0;           ///< attention: step reports sent in `epoch` (a lost last report shows)
};

/// Columns [first, first + count) of a layer's shared expert / dense MLP inner width that one FFN
/// worker computes (throughput combine, tensor parallel); count 0: no slice of that layer.
struct unit_slice_rec {
  std::int64_t first = 0;
  std::int64_t count = 0;
};

/// Coordinator -> every worker, once all are registered: connect the transport, load the weights
/// owned, start the engine, answer ready_atom + epoch.
struct start_epoch_msg {
  std::uint32_t epoch = 0;
  std::vector<std::vector<std::uint8_t>> attention_addresses;  ///< by attention worker index
  std::vector<std::string> ffn_names;                          ///< the FFN workers of this epoch, in order
  std::vector<std::vector<std::uint8_t>> ffn_addresses;        ///< by position in ffn_names
  /// ffn_units[f][layer]: routed experts (ascending) and engine::shared_unit owned by ffn_names[f].
  std::vector<std::vector<std::vector<std::int32_t>>> ffn_units;
  /// ffn_slices[f][layer]: the slice of that layer's shared/dense unit computed by ffn_names[f]
  /// (empty or count 0: none). A layer's unit is covered exactly once: whole by one worker (in
  /// ffn_units) or by slices that tile its width.
  std::vector<std::vector<unit_slice_rec>> ffn_slices;
};

/// A generation request (client -> coordinator, answered with the request id or an error).
struct request_msg {
  std::vector<std::int32_t> prompt;
  std::int64_t max_new_tokens = 16;
  float temperature = 0.0f;
  std::int32_t top_k = 0;
  float top_p = 1.0f;
  std::uint64_t seed = 0;
  std::vector<std::int32_t> stop_ids;
  std::int64_t logits_rows = 0;
  /// Tokens this request already produced (a client resuming it at a coordinator that replaced a
  /// lost one): generation continues at index resume.size(), as after a worker's loss.
  std::vector<std::int32_t> resume;
};

/// Coordinator -> attention worker: run this request. `generated` is non-empty when it resumes
/// after a failure (the worker prefills prompt + generated).
struct admit_msg {
  std::uint32_t epoch = 0;
  std::int64_t id = 0;
  request_msg req;
  std::vector<std::int32_t> generated;
};

/// One generated token.
struct token_rec {
  std::int64_t id = 0;
  std::int32_t token = 0;
  std::int64_t index = 0;
  bool last = false;
};

/// The end of a request: its result, or an error (code != 0).
struct finished_rec {
  std::int64_t id = 0;
  std::uint8_t code = 0;  ///< afd::errc; 0: finished normally
  std::string message;
  std::vector<std::int32_t> tokens;
  std::string reason;     ///< "length", "stop", "context"
  std::vector<std::vector<float>> logits;
  std::int64_t prompt_tokens = 0;  ///< filled by the coordinator
  double queue_seconds = 0;        ///< accepted until first admitted (coordinator's clock)
  std::uint32_t recoveries = 0;    ///< failures the request lived through
};

/// Attention worker -> coordinator, once per step that produced anything (batched, asynchronous).
/// `seq` numbers the reports of one epoch from 1: the coordinator drops a repeat and treats a gap
/// (a lost report, whose tokens it never saw) as a failure of the epoch.
struct worker_report_msg {
  std::uint32_t epoch = 0;
  std::int32_t index = 0;  ///< attention worker index
  std::uint64_t seq = 0;
  std::uint64_t step = 0;
  std::vector<token_rec> tokens;
  std::vector<finished_rec> finished;
  std::int64_t free_kv_blocks = 0;
  std::int64_t running = 0;
  std::int64_t waiting = 0;
};

/// Worker -> coordinator: its engine met trouble. `fatal`: the engine stopped (transport error,
/// bad message); otherwise a wait passed the step deadline and goes on. `suspects` names the peers
/// at fault (never the witness itself); the coordinator confirms with their heartbeats.
struct worker_failed_msg {
  std::uint32_t epoch = 0;
  std::string name;
  std::uint8_t code = 0;
  std::string message;
  std::vector<std::string> suspects;
  bool fatal = true;
};

/// A fault plan as it travels: rules as text (faults::parse_rule) and the seed.
struct fault_plan_msg {
  std::vector<std::string> rules;
  std::uint64_t seed = 0;
};

/// Coordinator -> client: tokens of this client's requests, in order.
struct token_batch_msg {
  std::vector<token_rec> tokens;
};

/// One worker's state (answer of a worker to status_atom, and part of cluster_status_msg).
struct worker_status_msg {
  std::string name;
  std::string role;
  std::uint8_t state = 0;  ///< afd::worker_state
  std::string device;
  std::int64_t running = 0;
  std::int64_t kv_used = 0;
  std::int64_t kv_total = 0;
  bool slow = false;
  std::uint64_t steps = 0;
  std::uint32_t rejoins = 0;
  double compute_seconds = 0;
  double wait_seconds = 0;
  std::vector<double> layer_compute_seconds, layer_wait_seconds;
  std::uint64_t bytes_sent = 0, bytes_received = 0, messages_sent = 0, messages_received = 0;
  std::vector<std::uint64_t> fired;  ///< per rule of the armed plan: firings at this worker
};

/// One event of the cluster's life (failures, epochs, rejoins), with the coordinator's
/// steady-clock time in ms: the fault matrix measures detection and recovery from them.
struct cluster_event_rec {
  std::int64_t at_ms = 0;
  std::string kind;  ///< "failed", "fenced", "slow", "retry", "epoch_ready", "rejoined", "gave_up"
  std::string worker;
  std::uint32_t epoch = 0;
  std::string detail;
};

/// The cluster as the coordinator sees it.
struct cluster_status_msg {
  std::uint32_t epoch = 0;
  std::int64_t vocab_size = 0;
  bool ready = false;
  std::int64_t queued = 0;
  std::int64_t running = 0;
  std::int64_t finished = 0;
  std::uint64_t recoveries = 0;
  std::vector<worker_status_msg> workers;
  std::vector<std::string> fault_rules;    ///< the armed plan's rules
  std::vector<std::uint64_t> fault_fired;  ///< per rule, summed over the coordinator and every worker
  std::vector<cluster_event_rec> events;
  std::int64_t now_ms = 0;                 ///< the coordinator's steady clock when it answered
  std::uint64_t term = 0;                  ///< its term: 0 until a cluster with standbys promoted it
  bool standby = false;                    ///< a standby coordinator (it serves nothing)
  std::int64_t pid = 0;                    ///< the coordinator's process
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, register_worker_msg& x) {
  return f(caf::meta::type_name("register_worker_msg"), x.role, x.name, x.address, x.kv_blocks, x.device,
           x.incarnation, x.last_epoch);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, heartbeat_msg& x) {
  return f(caf::meta::type_name("heartbeat_msg"), x.name, x.incarnation, x.epoch, x.steps, x.phase, x.phase_ms,
           x.admitted, x.fired, x.reports);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fault_plan_msg& x) {
  return f(caf::meta::type_name("fault_plan_msg"), x.rules, x.seed);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_event_rec& x) {
  return f(caf::meta::type_name("cluster_event_rec"), x.at_ms, x.kind, x.worker, x.epoch, x.detail);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, unit_slice_rec& x) {
  return f(caf::meta::type_name("unit_slice_rec"), x.first, x.count);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, start_epoch_msg& x) {
  return f(caf::meta::type_name("start_epoch_msg"), x.epoch, x.attention_addresses, x.ffn_names, x.ffn_addresses,
           x.ffn_units, x.ffn_slices);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_msg& x) {
  return f(caf::meta::type_name("request_msg"), x.prompt, x.max_new_tokens, x.temperature, x.top_k, x.top_p,
           x.seed, x.stop_ids, x.logits_rows, x.resume);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, admit_msg& x) {
  return f(caf::meta::type_name("admit_msg"), x.epoch, x.id, x.req, x.generated);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_rec& x) {
  return f(caf::meta::type_name("token_rec"), x.id, x.token, x.index, x.last);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, finished_rec& x) {
  return f(caf::meta::type_name("finished_rec"), x.id, x.code, x.message, x.tokens, x.reason, x.logits,
           x.prompt_tokens, x.queue_seconds, x.recoveries);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_report_msg& x) {
  return f(caf::meta::type_name("worker_report_msg"), x.epoch, x.index, x.seq, x.step, x.tokens, x.finished,
           x.free_kv_blocks, x.running, x.waiting);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_failed_msg& x) {
  return f(caf::meta::type_name("worker_failed_msg"), x.epoch, x.name, x.code, x.message, x.suspects, x.fatal);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_batch_msg& x) {
  return f(caf::meta::type_name("token_batch_msg"), x.tokens);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_status_msg& x) {
  return f(caf::meta::type_name("worker_status_msg"), x.name, x.role, x.state, x.device, x.running, x.kv_used,
           x.kv_total, x.slow, x.steps, x.rejoins, x.compute_seconds, x.wait_seconds, x.layer_compute_seconds,
           x.layer_wait_seconds, x.bytes_sent, x.bytes_received,
           x.messages_sent, x.messages_received, x.fired);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_status_msg& x) {
  return f(caf::meta::type_name("cluster_status_msg"), x.epoch, x.vocab_size, x.ready, x.queued, x.running, x.finished,
           x.recoveries, x.workers, x.fault_rules, x.fault_fired, x.events, x.now_ms, x.term, x.standby, x.pid);
}

/// The request as the engines take it.
engine::request to_engine_request(const request_msg& m);

/// Registers every message type above and the "afd" error category with `cfg`, and turns on CAF's
/// middleman heartbeats and connection timeout. Call it once per actor system, before the system
/// starts, in every process of a cluster.
void register_message_types(caf::actor_system_config& cfg);

/// Sets the scheduler to `threads` worker threads (small machines: the engines need the cores).
void configure_scheduler(caf::actor_system_config& cfg, std::size_t threads);

/// An afd::error as a caf::error of category "afd" (the message travels as context).
caf::error to_caf_error(const afd::error& e);
/// A caf::error back as an afd::error: category "afd" keeps code and message; CAF's own errors
/// become errc::timeout (request timeouts) or errc::unavailable (anything else: peer gone...).
afd::error from_caf_error(const caf::error& e);

}  // namespace afd::actors
