#include "runtime/engine/scheduler.hpp"

#include <algorithm>
#include <cmath>

namespace afd::engine {


const char* to_string(finish_reason r) noexcept {
  switch (r) {
    case finish_reason::length: return "length";
    case finish_reason::stop: return "stop";
    case finish_reason::context: return "context";
  }
  return "?";
}

request_limits request_limits::of(const model_config& c) {
  request_limits l;
  l.vocab_size = c.vocab_size;
  l.max_position_embedding = c.max_position_embedding;
  l.max_context = c.max_position_embedding;
  return l;
}

namespace {

std::string cited(const std::string& field) { return field.empty() ? std::string() : " (" + field + ")"; }

}  // namespace

expected<void> validate_request(const request_limits& limits, const request& r) {
  if (r.prompt.empty()) return fail(errc::invalid_argument, "empty prompt: a request needs at least one token");
  for (std::size_t i = 0; i < r.prompt.size(); ++i) {
    const std::int32_t t = r.prompt[i];
    if (t < 0 || t >= limits.vocab_size)
      return fail(errc::invalid_argument, "prompt token ", i, " has id ", t, ", outside the vocabulary [0, ",
                  limits.vocab_size, ")");
  }
  if (r.max_new_tokens < 1 || r.max_new_tokens > limits.max_new_tokens) {
    if (limits.max_new_tokens == std::numeric_limits<std::int64_t>::max())
      return fail(errc::invalid_argument, "max_new_tokens must be at least 1, got ", r.max_new_tokens);
    return fail(errc::invalid_argument, "max_new_tokens is ", r.max_new_tokens, "; it must be in [1, ",
                limits.max_new_tokens, "]", cited(limits.max_new_tokens_field));
  }
  const auto& s = r.sampling;
  if (!(s.temperature >= 0.0f) || !std::isfinite(s.temperature))
    return fail(errc::invalid_argument, "temperature must be a finite value >= 0, got ", s.temperature);
  if (s.top_k < 0) return fail(errc::invalid_argument, "top_k must be >= 0, got ", s.top_k);
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f))
    return fail(errc::invalid_argument, "top_p must be in (0, 1], got ", s.top_p);
  if (r.logits_rows < 0) return fail(errc::invalid_argument, "logits rows must be >= 0, got ", r.logits_rows);
  const auto model_context = limits.max_position_embedding;
  const auto context = limits.max_context > 0 ? std::min(limits.max_context, model_context) : model_context;
  const auto p = static_cast<std::int64_t>(r.prompt.size());
  if (p >= context)
    return fail(errc::rejected, "the prompt has ", p, " tokens; the context holds ", context,
                " (prompt + at least one generated token must fit)",
                context < model_context ? cited(limits.max_context_field) : std::string());
  // Below the model's context a request must fit whole; at the model's context it ends with
  // finish reason "context" instead.
  if (context < model_context && p + r.max_new_tokens > context)
    return fail(errc::rejected, "prompt (", p, " tokens) + max_new_tokens (", r.max_new_tokens,
                ") exceed the context limit of ", context, " tokens", cited(limits.max_context_field));
  return {};
}

expected<void> validate_request(const model_config& c, const request& r) {
  return validate_request(request_limits::of(c), r);
}

batch_scheduler::batch_scheduler(const model_config& c, kv_cache kv, scheduler_options options)
    : config_(c), kv_(std::move(kv)), options_(options) {}

std::int64_t batch_scheduler::positions_needed(const request& r) const {
  const auto p = static_cast<std::int64_t>(r.prompt.size());
  const std::int64_t n = std::min(r.max_new_tokens, config_.max_position_embedding - p);
  return p + n - 1;
}

expected<void> batch_scheduler::check(request_id id, const request& r, std::span<const std::int32_t> generated) const {
  if (auto ok = validate_request(config_, r); !ok) return ok;
  for (std::size_t i = 0; i < generated.size(); ++i) {
    const std::int32_t t = generated[i];
    if (t < 0 || t >= config_.vocab_size)
      return fail(errc::invalid_argument, "generated token ", i, " has id ", t, ", outside the vocabulary [0, ",
                  config_.vocab_size, ")");
  }
  const auto p = static_cast<std::int64_t>(r.prompt.size());
  const auto g = static_cast<std::int64_t>(generated.size());
  // A resumed request must not have ended already: it would produce nothing.
  if (g > 0 && (g >= r.max_new_tokens || p + g >= config_.max_position_embedding ||
                std::find(r.stop_ids.begin(), r.stop_ids.end(), generated.back()) != r.stop_ids.end()))
    return fail(errc::invalid_argument, "request ", id, " already finished with ", g, " generated tokens");
  const std::int64_t positions = positions_needed(r);
  const std::int64_t blocks = kv_.blocks_for(positions);
  if (blocks > kv_.num_blocks())
    return fail(errc::rejected, "request needs ", blocks, " KV blocks (", positions,
                " positions) but the cache holds only ", kv_.num_blocks(), " blocks of ", kv_.block_size(), " tokens");
  return {};
}

void batch_scheduler::add(request_id id, request r, std::vector<std::int32_t> generated) {
  auto seq = std::make_unique<sequence>();
  seq->id = id;
  seq->blocks_needed = kv_.blocks_for(positions_needed(r));
  seq->tokens = r.prompt;
  seq->tokens.insert(seq->tokens.end(), generated.begin(), generated.end());
  seq->res.tokens = std::move(generated);
  seq->req = std::move(r);
  waiting_.push_back(std::move(seq));
}

bool batch_scheduler::cancel(request_id id) {
  auto w = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& s) { return s->id == id; });
  if (w != waiting_.end()) {
    waiting_.erase(w);
    return true;
  }
  auto r = std::find_if(running_.begin(), running_.end(), [&](const auto& s) { return s->id == id; });
  if (r == running_.end()) return false;
  kv_.release((*r)->blocks);
  running_.erase(r);
  return true;
}

void batch_scheduler::admit() {
  while (!waiting_.empty() && static_cast<std::int64_t>(running_.size()) < options_.max_running) {
    sequence& s = *waiting_.front();
    if (s.blocks_needed > kv_.free_blocks()) break;  // first come, first served: nobody overtakes
    auto blocks = kv_.allocate(s.blocks_needed);
    if (!blocks) break;
    s.blocks = std::move(*blocks);
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

std::vector<scheduled_chunk>& batch_scheduler::plan() {
  admit();
  chunks_.clear();
  std::int64_t decode = 0;
  for (auto& s : running_)
    if (s->decoding()) {
      chunks_.push_back({s.get(), s->computed, 1});
      ++decode;
    }
  std::int64_t budget = options_.prefill_chunk;
  if (options_.max_step_tokens > 0) budget = std::min(budget, options_.max_step_tokens - decode);
  for (auto& s : running_) {
    if (budget <= 0) break;
    if (s->decoding() || s->pending() <= 0) continue;
    const std::int64_t take = std::min(budget, s->pending());
    chunks_.push_back({s.get(), s->computed, take});
    budget -= take;
  }
  return chunks_;
}

void batch_scheduler::complete(kernels::backend& be, const logits_fn& logits_of, std::vector<token_event>& events,
                               std::vector<std::pair<request_id, result>>& finished) {
  const std::int64_t vocab = config_.vocab_size;
  for (scheduled_chunk& ch : chunks_) {
    sequence& s = *ch.seq;
    s.computed += ch.count;
    if (ch.logits_row < 0) continue;
    const float* row = logits_of(ch);
    const std::int64_t index = s.generated();
    std::int32_t token = 0;
    kernels::require(be.sample({row, vocab, s.req.sampling, static_cast<std::uint64_t>(index), &token}), be);
    if (index < s.req.logits_rows) s.res.logits.emplace_back(row, row + vocab);
    s.res.tokens.push_back(token);
    s.tokens.push_back(token);
    bool ended = true;
    if (std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), token) != s.req.stop_ids.end())
      s.res.reason = finish_reason::stop;
    else if (s.generated() >= s.req.max_new_tokens)
      s.res.reason = finish_reason::length;
    else if (static_cast<std::int64_t>(s.tokens.size()) >= config_.max_position_embedding)
      s.res.reason = finish_reason::context;
    else
      ended = false;
    s.ended = ended;
    events.push_back({s.id, token, index, ended});
  }
  chunks_.clear();
  // Ended requests leave the batch and give their blocks back.
  for (auto it = running_.begin(); it != running_.end();) {
    sequence& s = **it;
    if (s.ended) {
      kv_.release(s.blocks);
      finished.emplace_back(s.id, std::move(s.res));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace afd::engine
