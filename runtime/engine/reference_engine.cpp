#include "runtime/engine/reference_engine.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <utility>

namespace afd::engine {

namespace cpu = kernels::cpu;

const char* to_string(finish_reason r) noexcept {
  switch (r) {
    case finish_reason::length: return "length";
    case finish_reason::stop: return "stop";
    case finish_reason::context: return "context";
  }
  return "?";
}

namespace {

/// A request in flight: its tokens so far and where its KV lives.
struct sequence {
  request_id id = 0;
  request req;
  std::vector<std::int32_t> tokens;  ///< prompt, then generated tokens
  std::int64_t computed = 0;         ///< leading tokens whose KV is in the cache
  std::vector<std::int32_t> blocks;  ///< block table, reserved whole at admission
  std::int64_t blocks_needed = 0;
  result res;
  bool ended = false;

  std::int64_t generated() const { return static_cast<std::int64_t>(res.tokens.size()); }
  std::int64_t pending() const { return static_cast<std::int64_t>(tokens.size()) - computed; }
};

/// One sequence's tokens in a step: tokens [first, first + count) of the sequence.
struct chunk {
  sequence* seq = nullptr;
  std::int64_t first = 0;
  std::int64_t count = 0;
  std::int64_t logits_row = -1;  ///< row in the step's logits when the chunk ends the known tokens
};

}  // namespace

expected<void> validate_request(const model_config& c, const request& r) {
  if (r.prompt.empty()) return fail(errc::invalid_argument, "empty prompt: a request needs at least one token");
  for (std::size_t i = 0; i < r.prompt.size(); ++i) {
    const std::int32_t t = r.prompt[i];
    if (t < 0 || t >= c.vocab_size)
      return fail(errc::invalid_argument, "prompt token ", i, " has id ", t, ", outside the vocabulary [0, ",
                  c.vocab_size, ")");
  }
  const auto p = static_cast<std::int64_t>(r.prompt.size());
  if (p >= c.max_position_embedding)
    return fail(errc::rejected, "prompt of ", p, " tokens does not fit the context of ", c.max_position_embedding);
  if (r.max_new_tokens < 1)
    return fail(errc::invalid_argument, "max_new_tokens must be at least 1, got ", r.max_new_tokens);
  const auto& s = r.sampling;
  if (!(s.temperature >= 0.0f) || !std::isfinite(s.temperature))
    return fail(errc::invalid_argument, "temperature must be a finite value >= 0, got ", s.temperature);
  if (s.top_k < 0) return fail(errc::invalid_argument, "top_k must be >= 0, got ", s.top_k);
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f))
    return fail(errc::invalid_argument, "top_p must be in (0, 1], got ", s.top_p);
  if (r.logits_rows < 0) return fail(errc::invalid_argument, "logits rows must be >= 0, got ", r.logits_rows);
  return {};
}

struct reference_engine::state {
  std::shared_ptr<const model_weights> weights;
  engine_options options;
  kv_cache kv;
  engine_stats stats;
  request_id next_id = 1;
  std::deque<std::unique_ptr<sequence>> waiting;
  std::vector<std::unique_ptr<sequence>> running;  ///< admission order
  std::unordered_map<request_id, result> done;

  // Step buffers, reused.
  std::vector<std::int32_t> ids, positions;
  std::vector<cpu::kv_slot> slots;
  std::vector<float> x, x_f, topk_w, rows, logits, scratch;
  std::vector<std::int32_t> topk_ids;
  attention_workspace attn_ws;
  ffn_workspace ffn_ws;

  state(std::shared_ptr<const model_weights> w, engine_options o, kv_cache k)
      : weights(std::move(w)), options(o), kv(std::move(k)) {}

  const model_config& config() const { return weights->config(); }

  /// KV positions a request can ever write: its prompt and every generated token but the last,
  /// within the context.
  std::int64_t positions_needed(const request& r) const {
    const auto p = static_cast<std::int64_t>(r.prompt.size());
    const std::int64_t n = std::min(r.max_new_tokens, config().max_position_embedding - p);
    return p + n - 1;
  }

  expected<void> validate(const request& r) const {
    if (auto ok = validate_request(config(), r); !ok) return ok;
    const std::int64_t positions = positions_needed(r);
    const std::int64_t blocks = kv.blocks_for(positions);
    if (blocks > kv.num_blocks())
      return fail(errc::rejected, "request needs ", blocks, " KV blocks (", positions,
                  " positions) but the cache holds only ", kv.num_blocks(), " blocks of ", kv.block_size(), " tokens");
    return {};
  }

  void admit() {
    while (!waiting.empty() && static_cast<std::int64_t>(running.size()) < options.max_running) {
      sequence& s = *waiting.front();
      if (s.blocks_needed > kv.free_blocks()) break;  // first come, first served: nobody overtakes
      auto blocks = kv.allocate(s.blocks_needed);
      if (!blocks) break;
      s.blocks = std::move(*blocks);
      running.push_back(std::move(waiting.front()));
      waiting.pop_front();
    }
  }

  std::vector<chunk> plan() {
    std::vector<chunk> chunks;
    for (auto& s : running)
      if (s->generated() > 0 && s->pending() > 0) chunks.push_back({s.get(), s->computed, s->pending(), -1});
    std::int64_t budget = options.prefill_chunk;
    for (auto& s : running) {
      if (budget <= 0) break;
      if (s->generated() > 0 || s->pending() <= 0) continue;
      const std::int64_t take = std::min(budget, s->pending());
      chunks.push_back({s.get(), s->computed, take, -1});
      budget -= take;
    }
    return chunks;
  }

  void forward(std::vector<chunk>& chunks) {
    const model_config& c = config();
    const model_weights& w = *weights;
    ids.clear();
    positions.clear();
    slots.clear();
    std::vector<std::int64_t> logit_tokens;  // batch row of each token whose logits are needed
    for (auto& ch : chunks) {
      for (std::int64_t t = ch.first; t < ch.first + ch.count; ++t) {
        ids.push_back(ch.seq->tokens[static_cast<std::size_t>(t)]);
        positions.push_back(static_cast<std::int32_t>(t));
        slots.push_back({ch.seq->blocks.data(), static_cast<std::int32_t>(t)});
      }
      if (ch.first + ch.count == static_cast<std::int64_t>(ch.seq->tokens.size())) {
        ch.logits_row = static_cast<std::int64_t>(logit_tokens.size());
        logit_tokens.push_back(static_cast<std::int64_t>(ids.size()) - 1);
      }
    }
    const auto m = static_cast<std::int64_t>(ids.size());
    const std::int64_t hidden = c.hidden_size;
    x.resize(static_cast<std::size_t>(m * hidden));
    x_f.resize(static_cast<std::size_t>(m * hidden));
    topk_ids.resize(static_cast<std::size_t>(m * std::max<std::int64_t>(c.moe_top_k, 1)));
    topk_w.resize(topk_ids.size());
    embed(w, ids, x.data());
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      attention_block(w, l, options.num, kv.layer(l), slots, positions, x.data(), x_f.data(), topk_ids.data(),
                      topk_w.data(), attn_ws);
      ffn_block(w, l, options.num, x_f.data(), m, topk_ids.data(), topk_w.data(), x.data(), ffn_ws);
    }
    const auto r = static_cast<std::int64_t>(logit_tokens.size());
    rows.resize(static_cast<std::size_t>(r * hidden));
    for (std::int64_t i = 0; i < r; ++i)
      std::memcpy(rows.data() + i * hidden, x.data() + logit_tokens[static_cast<std::size_t>(i)] * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
    logits.resize(static_cast<std::size_t>(r * c.vocab_size));
    final_logits(w, rows.data(), r, logits.data(), scratch);
  }

  std::vector<token_event> step() {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<token_event> events;
    admit();
    auto chunks = plan();
    if (chunks.empty()) return events;
    forward(chunks);
    const std::int64_t vocab = config().vocab_size;
    for (auto& ch : chunks) {
      sequence& s = *ch.seq;
      s.computed += ch.count;
      (s.generated() > 0 ? stats.decode_tokens : stats.prefill_tokens) += ch.count;
      if (ch.logits_row < 0) continue;
      const float* row = logits.data() + ch.logits_row * vocab;
      const std::int64_t index = s.generated();
      const std::int32_t token = cpu::sample(row, vocab, s.req.sampling, static_cast<std::uint64_t>(index));
      if (index < s.req.logits_rows) s.res.logits.emplace_back(row, row + vocab);
      s.res.tokens.push_back(token);
      s.tokens.push_back(token);
      ++stats.generated_tokens;
      bool finished = true;
      if (std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), token) != s.req.stop_ids.end())
        s.res.reason = finish_reason::stop;
      else if (s.generated() >= s.req.max_new_tokens)
        s.res.reason = finish_reason::length;
      else if (static_cast<std::int64_t>(s.tokens.size()) >= config().max_position_embedding)
        s.res.reason = finish_reason::context;
      else
        finished = false;
      s.ended = finished;
      events.push_back({s.id, token, index, finished});
    }
    // Finished requests leave the batch and give their blocks back.
    for (auto it = running.begin(); it != running.end();) {
      sequence& s = **it;
      if (s.ended) {
        kv.release(s.blocks);
        done.emplace(s.id, std::move(s.res));
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    ++stats.steps;
    stats.step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return events;
  }
};

reference_engine::reference_engine(std::unique_ptr<state> s) : s_(std::move(s)) {}
reference_engine::reference_engine(reference_engine&&) noexcept = default;
reference_engine& reference_engine::operator=(reference_engine&&) noexcept = default;
reference_engine::~reference_engine() = default;

expected<reference_engine> reference_engine::create(std::shared_ptr<const model_weights> weights,
                                                    engine_options options) {
  if (!weights) return fail(errc::invalid_argument, "reference_engine: no weights");
  const model_config& c = weights->config();
  if (!weights->has_attention())
    return fail(errc::invalid_argument, "reference_engine: the weights lack the attention side");
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const ffn_weights& f = weights->ffn(l);
    const bool shared_ok = f.shared.loaded() || (f.moe && c.share_expert_dim == 0);
    bool experts_ok = true;
    for (const auto& e : f.experts) experts_ok = experts_ok && e.loaded();
    if (!shared_ok || !experts_ok)
      return fail(errc::invalid_argument, "reference_engine: layer ", l,
                  " is missing FFN weights (load with weight_selection::all())");
  }
  const numerics& n = options.num;
  if (n.kv != dtype::f32 && n.kv != dtype::bf16 && n.kv != dtype::f8_e4m3)
    return fail(errc::invalid_argument, "KV cache dtype must be f32, bf16 or fp8, got ", std::string(to_string(n.kv)));
  if (n.dispatch != dtype::f32 && n.dispatch != dtype::bf16 && n.dispatch != dtype::f8_e4m3)
    return fail(errc::invalid_argument, "dispatch dtype must be f32, bf16 or fp8, got ",
                std::string(to_string(n.dispatch)));
  if (n.combine != dtype::f32 && n.combine != dtype::bf16)
    return fail(errc::invalid_argument, "combine dtype must be f32 or bf16, got ", std::string(to_string(n.combine)));
  if (options.block_size <= 0)
    return fail(errc::invalid_argument, "KV block size must be positive, got ", options.block_size);
  if (options.prefill_chunk <= 0)
    return fail(errc::invalid_argument, "prefill chunk must be positive, got ", options.prefill_chunk);
  if (options.max_running <= 0)
    return fail(errc::invalid_argument, "max running requests must be positive, got ", options.max_running);
  if (options.num_blocks <= 0) {
    const auto per_block = static_cast<std::int64_t>(kv_cache::bytes_per_block(c, n.kv, options.block_size));
    options.num_blocks = options.kv_memory_bytes / per_block;
    if (options.num_blocks <= 0)
      return fail(errc::invalid_argument, "KV memory budget of ", options.kv_memory_bytes,
                  " bytes holds no block of ", per_block, " bytes");
  }
  auto kv = kv_cache::create(c, n.kv, options.block_size, options.num_blocks);
  if (!kv) return std::move(kv).err();
  return reference_engine(std::make_unique<state>(std::move(weights), options, std::move(*kv)));
}

expected<request_id> reference_engine::submit(request r) {
  auto ok = s_->validate(r);
  if (!ok) return ok.err();
  auto seq = std::make_unique<sequence>();
  seq->id = s_->next_id++;
  seq->blocks_needed = s_->kv.blocks_for(s_->positions_needed(r));
  seq->tokens = r.prompt;
  seq->req = std::move(r);
  const request_id id = seq->id;
  s_->waiting.push_back(std::move(seq));
  return id;
}

std::vector<token_event> reference_engine::step() { return s_->step(); }

bool reference_engine::idle() const { return s_->waiting.empty() && s_->running.empty(); }

bool reference_engine::finished(request_id id) const { return s_->done.count(id) != 0; }

expected<result> reference_engine::take_result(request_id id) {
  auto it = s_->done.find(id);
  if (it == s_->done.end()) return fail(errc::invalid_argument, "request ", id, " has no result (yet)");
  result r = std::move(it->second);
  s_->done.erase(it);
  return r;
}

expected<std::vector<result>> reference_engine::generate(std::vector<request> requests) {
  std::vector<request_id> ids;
  for (auto& r : requests) {
    auto id = submit(std::move(r));
    if (!id) return std::move(id).err();
    ids.push_back(*id);
  }
  while (!idle()) step();
  std::vector<result> out;
  for (request_id id : ids) {
    auto r = take_result(id);
    if (!r) return std::move(r).err();
    out.push_back(std::move(*r));
  }
  return out;
}

const model_config& reference_engine::config() const { return s_->config(); }
const engine_options& reference_engine::options() const { return s_->options; }
const engine_stats& reference_engine::stats() const { return s_->stats; }

}  // namespace afd::engine
