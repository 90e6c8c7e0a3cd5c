#pragma once
/// The single-process reference engine: every layer's attention and FFN halves in one process,
/// over the batch scheduler the attention workers use too (scheduler.hpp: paged KV, continuous
/// batching, prompts prefilled in chunks mixed with decode tokens). The AFD cluster must reproduce
/// its tokens bitwise in deterministic combine mode.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/numerics.hpp"
#include "runtime/engine/kv_cache.hpp"
#include "runtime/engine/layer.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/scheduler.hpp"

namespace afd::engine {

/// Settings of the reference engine.
struct engine_options {
  numerics num;                          ///< rounding points; numerics::exact() for f32 everywhere
  std::int64_t block_size = 16;          ///< KV tokens per block
  std::int64_t num_blocks = 0;           ///< KV blocks; 0: from kv_memory_bytes
  std::int64_t kv_memory_bytes = 256ll << 20;  ///< KV budget when num_blocks is 0
  std::int64_t prefill_chunk = 256;      ///< prefill tokens per step (decode tokens come on top)
  std::int64_t max_running = 64;         ///< requests in the batch at once; others wait
};

/// Timings of the steps run so far.
struct engine_stats {
  std::int64_t steps = 0;
  std::int64_t prefill_tokens = 0;   ///< prompt tokens computed
  std::int64_t decode_tokens = 0;    ///< generated tokens fed back
  std::int64_t generated_tokens = 0; ///< tokens sampled
  double step_seconds = 0.0;         ///< total time inside step()
};

/// Runs requests to completion with continuous batching. Not thread-safe; one thread drives it.
class reference_engine {
 public:
  /// An engine over fully loaded weights (weight_selection::all()).
  static expected<reference_engine> create(std::shared_ptr<const model_weights> weights, engine_options options = {});

  reference_engine(reference_engine&&) noexcept;
  reference_engine& operator=(reference_engine&&) noexcept;
  ~reference_engine();

  /// Validates and queues a request; it joins the batch at the next step with room.
  /// Errors: errc::invalid_argument (empty prompt, token id outside the vocabulary, bad sampling
  /// parameters), errc::rejected (prompt does not fit the context; KV cache too small for it alone).
  expected<request_id> submit(request r);

  /// Runs one step: admits waiting requests, computes decode tokens and prefill chunks together,
  /// samples. Returns the tokens produced. Throws kernels::op_failure when a kernel fails (generate() returns it as errc::internal).
  std::vector<token_event> step();

  /// True when nothing is waiting or running.
  bool idle() const;
  /// True when request `id` has finished.
  bool finished(request_id id) const;
  /// The result of a finished request (moved out; a second call fails).
  expected<result> take_result(request_id id);

  /// Submits all, steps until all finish, returns results in order. Stops at the first invalid request.
  expected<std::vector<result>> generate(std::vector<request> requests);

  /// The model's hyper-parameters.
  const model_config& config() const;
  /// The options in force (num_blocks resolved).
  const engine_options& options() const;
  /// Counters and timings so far.
  const engine_stats& stats() const;

 private:
  struct state;
  explicit reference_engine(std::unique_ptr<state> s);
  std::unique_ptr<state> s_;
};

}  // namespace afd::engine
