#pragma once
/// The single-process reference engine: every layer's attention and FFN halves in one process,
/// paged KV, continuous batching (requests join and leave at step boundaries, prompts prefilled in
/// chunks mixed with decode tokens). The AFD cluster must reproduce its tokens bitwise in
/// deterministic combine mode.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/numerics.hpp"
#include "runtime/engine/kv_cache.hpp"
#include "runtime/engine/layer.hpp"
#include "runtime/engine/model_weights.hpp"

namespace afd::engine {

/// One generation request.
struct request {
  std::vector<std::int32_t> prompt;      ///< token ids, at least one
  std::int64_t max_new_tokens = 16;      ///< at least one
  kernels::cpu::sampling_params sampling;  ///< greedy when temperature is 0
  std::vector<std::int32_t> stop_ids;    ///< generation ends after producing one of these
  std::int64_t logits_rows = 0;          ///< keep the logits of the first K generated positions
};

/// Why a request ended.
enum class finish_reason : std::uint8_t {
  length,   ///< max_new_tokens produced
  stop,     ///< a stop id was produced (and is the last token)
  context,  ///< prompt + generated tokens filled max_position_embedding
};

/// "length", "stop", "context".
const char* to_string(finish_reason r) noexcept;

/// What a request produced.
struct result {
  std::vector<std::int32_t> tokens;        ///< generated tokens
  finish_reason reason = finish_reason::length;
  std::vector<std::vector<float>> logits;  ///< [min(K, tokens), V]; row 0 predicts tokens[0]
};

/// Identifies a submitted request.
using request_id = std::int64_t;

/// A token produced by a step.
struct token_event {
  request_id id = 0;
  std::int32_t token = 0;
  std::int64_t index = 0;  ///< 0 for the request's first generated token
  bool finished = false;   ///< the request ended with this token
};

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

/// Checks a request against the model: a non-empty prompt of ids inside the vocabulary that fits
/// the context, max_new_tokens >= 1, sampling parameters in range. The validation of submit(),
/// shared with the cluster's attention workers so both refuse the same requests the same way.
expected<void> validate_request(const model_config& c, const request& r);

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
  /// samples. Returns the tokens produced.
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
