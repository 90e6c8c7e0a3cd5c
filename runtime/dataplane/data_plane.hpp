#pragma once
/// The data plane of the cluster's workers: the engine threads that run the step loop (kernels +
/// transport). No CAF here: the worker actors drive these objects through thread-safe calls and
/// receive their reports through callbacks (DESIGN.md: a mailbox handler never runs a kernel or
/// waits on the network).
///
/// Step protocol (DESIGN.md): every attention worker runs the same sequence of steps; a step is
/// K micro-batches, each going layer by layer A -> F -> A; while micro-batch m is on the F side the
/// attention worker computes micro-batch m+1. An FFN worker runs (step, m, layer) once every
/// attention worker's dispatch for it has arrived; an attention worker with no tokens sends
/// header-only messages. Tokens are bitwise the reference engine's in deterministic combine mode
/// (same per-layer functions of runtime/engine, same rounding points, canonical combine order).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/core/numerics.hpp"
#include "runtime/engine/layer.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/placement.hpp"
#include "runtime/engine/reference_engine.hpp"
#include "runtime/faults/faults.hpp"
#include "transport/transport.hpp"

namespace afd::dataplane {

/// Live progress of a worker's engines, read from any thread (the worker's heartbeats and status).
/// The worker owns it across epochs; each engine it runs updates it.
struct engine_progress {
  enum phase_kind : std::uint8_t { stopped = 0, idle = 1, computing = 2, waiting = 3 };
  std::atomic<std::uint64_t> steps{0};            ///< steps completed, over every engine
  std::atomic<std::uint8_t> phase{stopped};       ///< what the engine thread does now
  std::atomic<std::int64_t> phase_since_ns{0};    ///< steady-clock time it entered it
  std::atomic<std::uint64_t> compute_ns{0}, wait_ns{0};  ///< totals over completed steps
  /// Adds a completed step: its compute and wait time, in all and per layer, and one step.
  void record(const struct step_timing& t);
  /// Per-layer totals (index = layer), copied under the lock.
  void layers(std::vector<double>& compute, std::vector<double>& wait) const;
  /// Enters `p` (relaxed stores: figures, not synchronisation).
  void enter(phase_kind p) noexcept {
    phase.store(p, std::memory_order_relaxed);
    phase_since_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }

 private:
  mutable std::mutex mutex_;
  std::vector<double> layer_compute_, layer_wait_;
};

/// Settings shared by both roles; every worker of a cluster must use the same values.
struct data_plane_options {
  numerics num;                                     ///< rounding points of the run
  std::uint32_t micro_batches = 3;                  ///< K
  std::uint32_t max_tokens_per_micro_batch = 256;   ///< per attention worker (prefill + decode)
  std::int64_t prefill_chunk = 256;                 ///< prefill tokens per step per attention worker
  std::chrono::milliseconds step_deadline{10000};   ///< a wait longer than this fails the step
  std::chrono::milliseconds idle_wait{2};           ///< idle cluster: wait this long for work per empty step
  std::uint32_t epoch = 1;                          ///< cluster epoch; messages of older epochs are dropped
  /// The compute device of this worker's engine, "cpu" or "cuda:N" (kernels::make_backend): the one
  /// setting that is per worker (the worker sets it from its spec). An engine on a device it cannot
  /// use is refused at create(), naming the device and the reason; never run on the CPU instead.
  std::string device = "cpu";
  /// Where the engine publishes its progress (may be null).
  std::shared_ptr<engine_progress> progress;
  /// The worker's fault site: hang_engine and slow_worker are decided at each step (may be null).
  std::shared_ptr<faults::fault_site> faults;
};

/// A request as an attention worker runs it. `generated` holds tokens already produced elsewhere
/// (re-admission after a failure): the worker prefills prompt + generated and continues, so the
/// tokens that follow are those an uninterrupted run gives. Its result's tokens include
/// `generated`; only new tokens are streamed (with their true index); logits rows are kept for
/// new indices below req.logits_rows, so they start at index generated.size().
struct admitted_request {
  engine::request_id id = 0;
  engine::request req;
  std::vector<std::int32_t> generated;
};

/// Per-step timing of one worker, for `afd bench` and stragglers.
struct step_timing {
  double compute_seconds = 0;  ///< kernels (attention side or FFN side)
  double wait_seconds = 0;     ///< blocked on the network
  double total_seconds = 0;
  /// The same split per layer (index = layer, summed over micro-batches). The attention side's
  /// embedding, LM head and sampling belong to no layer: they count in compute_seconds only.
  std::vector<double> layer_compute_seconds, layer_wait_seconds;
};

/// What an attention worker reports after each step that produced anything (one call per step).
struct step_report {
  std::uint64_t step = 0;
  std::vector<engine::token_event> tokens;  ///< in the order produced
  /// Requests that ended in this step, with their results (tokens, reason, kept logits).
  std::vector<std::pair<engine::request_id, engine::result>> finished;
  std::int64_t free_kv_blocks = 0;
  std::int64_t running = 0;   ///< requests in the batch
  std::int64_t waiting = 0;   ///< admitted, not yet in the batch
  step_timing timing;
};

/// What an FFN worker owns (runtime/engine/placement.hpp).
using engine::ffn_assignment;
using engine::ffn_weight_selection;

/// Called on the engine thread; must return quickly (it hands the report to the worker actor).
using report_fn = std::function<void(step_report&&)>;
/// What an engine reports when its step loop meets trouble.
struct engine_fault {
  error what;
  /// Data-plane ranks of the peers at fault: the one waited on, or the sender of a rejected
  /// message. The witness reporting the fault is never among them.
  std::vector<transport::rank_t> suspects;
  /// true: the loop stopped (transport error, bad message); the engine must be recreated for a
  /// new epoch. false: a wait passed the step deadline and goes on; the coordinator decides.
  bool fatal = true;
};
/// Called on the engine thread; must return quickly (it hands the fault to the worker actor).
using failure_fn = std::function<void(const engine_fault&)>;

/// Settings of an attention worker's engine.
struct attention_engine_options {
  data_plane_options plane;
  std::int64_t block_size = 16;          ///< KV tokens per block
  std::int64_t num_blocks = 1024;        ///< KV blocks of this worker
  std::int64_t max_running = 64;         ///< requests in the batch at once
};

/// The engine thread of an attention worker: owns its requests, their paged KV and sampling.
class attention_engine {
 public:
  /// `weights` must hold the attention side (weight_selection::attention_side() or more);
  /// `ffn_peers[f]` is the connected transport peer of FFN worker f, in cluster order.
  static expected<std::unique_ptr<attention_engine>> create(std::shared_ptr<const engine::model_weights> weights,
                                                            attention_engine_options options,
                                                            transport::transport& t,
                                                            std::vector<transport::peer_id> ffn_peers,
                                                            report_fn on_report, failure_fn on_failure);
  ~attention_engine();
  /// Starts the engine thread.
  expected<void> start();
  /// Thread-safe. Validates (vocab, context, KV capacity) and queues; joins at a step boundary.
  expected<void> admit(admitted_request r);
  /// Thread-safe. The request leaves the batch and its KV is freed at the next step boundary.
  void cancel(engine::request_id id);
  /// Stops the loop (after the step in flight, or at once when it is blocked) and joins. Called
  /// from on_report / on_failure (the engine thread), it only asks: the loop ends when the
  /// callback returns, and a later stop() or the destructor joins.
  void stop();
  /// Asks the loop to stop and returns at once (a loop blocked in a kernel or a hang may take
  /// long); finished() says when it has left. Thread-safe.
  void request_stop();
  /// True once the engine thread left its loop (or never started).
  bool finished() const;
  /// Thread-safe snapshot.
  std::int64_t free_kv_blocks() const;

 private:
  struct state;
  explicit attention_engine(std::unique_ptr<state> s);
  std::unique_ptr<state> s_;
};

/// The engine thread of an FFN worker: computes its units for every attention worker's tokens.
class ffn_engine {
 public:
  /// `weights` must hold the units in `assignment`; `attention_peers[a]` is the connected peer of
  /// attention worker a, in cluster order. `on_report` gets timing only (tokens empty).
  static expected<std::unique_ptr<ffn_engine>> create(std::shared_ptr<const engine::model_weights> weights,
                                                      data_plane_options options, ffn_assignment assignment,
                                                      transport::transport& t,
                                                      std::vector<transport::peer_id> attention_peers,
                                                      report_fn on_report, failure_fn on_failure);
  ~ffn_engine();
  expected<void> start();
  void stop();
  /// As attention_engine's.
  void request_stop();
  bool finished() const;

 private:
  struct state;
  explicit ffn_engine(std::unique_ptr<state> s);
  std::unique_ptr<state> s_;
};

}  // namespace afd::dataplane
