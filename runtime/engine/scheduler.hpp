#pragma once
/// The one batch scheduler of afd: requests, their validation, admission with whole-request KV
/// reservation, continuous batching (decode tokens first, then prefill chunks under a budget),
/// sampling, finish reasons and retirement. The reference engine and every attention worker of a
/// cluster run this same code, so a request gets the same tokens from both (kernels are
/// batch-invariant: how the scheduler groups tokens changes timing only, never a value).

#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"
#include "runtime/engine/kv_cache.hpp"

namespace afd::engine {

/// One generation request.
struct request {
  std::vector<std::int32_t> prompt;        ///< token ids, at least one
  std::int64_t max_new_tokens = 16;        ///< at least one
  kernels::sampling_params sampling;  ///< greedy when temperature is 0
  std::vector<std::int32_t> stop_ids;      ///< generation ends after producing one of these
  std::int64_t logits_rows = 0;            ///< keep the logits of the first K generated positions
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

/// What a request is checked against: the model, and the limits of whoever accepts it.
struct request_limits {
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embedding = 0;
  /// Largest max_new_tokens a request may ask for (a cluster's limits.max_new_tokens).
  std::int64_t max_new_tokens = std::numeric_limits<std::int64_t>::max();
  /// prompt + generated tokens the acceptor allows; the model's context when 0 or larger.
  std::int64_t max_context = 0;
  /// A field name to cite for each limit in messages ("limits.max_new_tokens"), when it comes from a file.
  std::string max_new_tokens_field, max_context_field;

  /// The model's own limits (what the reference engine accepts).
  static request_limits of(const model_config& c);
};

/// The one validation of a request, for the reference engine, the attention workers and the
/// coordinator: a non-empty prompt of ids inside the vocabulary, max_new_tokens in [1, limit],
/// sampling parameters in range; errc::invalid_argument. A prompt that leaves no room for one
/// generated token, or that with max_new_tokens exceeds a context limit below the model's:
/// errc::rejected.
expected<void> validate_request(const request_limits& limits, const request& r);
/// validate_request against the model's own limits.
expected<void> validate_request(const model_config& c, const request& r);

/// A request in flight: its tokens so far and where its KV lives.
struct sequence {
  request_id id = 0;
  request req;
  std::vector<std::int32_t> tokens;  ///< prompt, then generated tokens
  std::int64_t computed = 0;         ///< leading tokens whose KV is in the cache
  std::vector<std::int32_t> blocks;  ///< block table, reserved whole at admission
  std::int64_t blocks_needed = 0;
  result res;                        ///< res.tokens: every generated token, resumed ones included
  bool ended = false;

  std::int64_t generated() const { return static_cast<std::int64_t>(res.tokens.size()); }
  std::int64_t pending() const { return static_cast<std::int64_t>(tokens.size()) - computed; }
  /// One token fed back after sampling. A resumed request (admitted with generated tokens) has
  /// more pending and is prefilled in chunks first.
  bool decoding() const { return generated() > 0 && pending() == 1; }
};

/// Tokens [first, first + count) of one sequence in a step. The engine that runs the step may
/// place it (micro_batch) and must set logits_row when the chunk ends the sequence's known tokens.
struct scheduled_chunk {
  sequence* seq = nullptr;
  std::int64_t first = 0;
  std::int64_t count = 0;
  std::uint32_t micro_batch = 0;
  std::int64_t logits_row = -1;
  /// True when the chunk reaches the last known token (a token is sampled after it).
  bool ends_known_tokens() const { return first + count == static_cast<std::int64_t>(seq->tokens.size()); }
};

/// Settings of a scheduler.
struct scheduler_options {
  std::int64_t prefill_chunk = 256;  ///< prefill tokens per step (decode tokens come on top)
  std::int64_t max_running = 64;     ///< requests in the batch at once; others wait
  /// Tokens one step may hold in all (decode + prefill); 0: no cap besides prefill_chunk.
  std::int64_t max_step_tokens = 0;
};

/// Requests in, chunks per step out, tokens back in. Not thread-safe: one thread drives it.
class batch_scheduler {
 public:
  batch_scheduler(const model_config& c, kv_cache kv, scheduler_options options);

  /// validate_request against the model (the acceptor checked its own limits), plus this cache's
  /// capacity and, for a resumed request, its generated tokens (in the vocabulary, and the request
  /// not already finished).
  expected<void> check(request_id id, const request& r, std::span<const std::int32_t> generated) const;
  /// Queues a checked request; `generated` holds tokens produced elsewhere (a resumed request):
  /// they are prefilled with the prompt and the tokens that follow are an uninterrupted run's.
  void add(request_id id, request r, std::vector<std::int32_t> generated = {});
  /// Removes a waiting or running request and frees its KV. False when unknown.
  bool cancel(request_id id);

  /// Admits waiting requests first come first served (nobody overtakes) while the batch has room
  /// and their whole KV fits, then plans the step: every decoding request's token, then prefill
  /// chunks up to the budget. The engine may shrink a chunk's count (the rest waits for the next
  /// step) or drop chunks of count 0, and sets logits_row; then calls complete().
  std::vector<scheduled_chunk>& plan();
  /// The chunks of the last plan().
  std::vector<scheduled_chunk>& chunks() { return chunks_; }

  /// Logits row of a chunk with logits_row >= 0 (the engine's buffer).
  using logits_fn = std::function<const float*(const scheduled_chunk&)>;
  /// Ends the step: the chunks' tokens are computed; a token is sampled for each chunk with a
  /// logits row (token index = tokens generated so far, so a resumed request draws as an
  /// uninterrupted one); requests that end leave the batch and give their blocks back.
  /// Appends the tokens to `events` and the ended requests' results to `finished`.
  /// Sampling runs on `be` (kernels/backend.hpp).
  void complete(kernels::backend& be, const logits_fn& logits_of, std::vector<token_event>& events,
                std::vector<std::pair<request_id, result>>& finished);

  bool idle() const { return waiting_.empty() && running_.empty(); }
  std::int64_t running() const { return static_cast<std::int64_t>(running_.size()); }
  std::int64_t waiting() const { return static_cast<std::int64_t>(waiting_.size()); }
  const kv_cache& kv() const { return kv_; }
  const scheduler_options& options() const { return options_; }

 private:
  /// KV positions a request can ever write: prompt and every generated token but the last,
  /// within the context.
  std::int64_t positions_needed(const request& r) const;
  void admit();

  model_config config_;
  kv_cache kv_;
  scheduler_options options_;
  std::deque<std::unique_ptr<sequence>> waiting_;
  std::vector<std::unique_ptr<sequence>> running_;  ///< admission order
  std::vector<scheduled_chunk> chunks_;
};

}  // namespace afd::engine
