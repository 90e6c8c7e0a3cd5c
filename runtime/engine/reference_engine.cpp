#include "runtime/engine/reference_engine.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <utility>

namespace afd::engine {


struct reference_engine::state {
  std::shared_ptr<const model_weights> weights;
  engine_options options;
  std::unique_ptr<kernels::backend> backend;  // the checked CPU backend: this engine is the reference
  batch_scheduler scheduler;
  engine_stats stats;
  request_id next_id = 1;
  std::unordered_map<request_id, result> done;

  // Step buffers, reused.
  std::vector<std::int32_t> ids, positions;
  std::vector<kernels::kv_slot> slots;
  std::vector<std::int64_t> logit_tokens;  ///< batch row of each token whose logits are needed
  std::vector<float> x, x_f, topk_w, rows, logits, scratch;
  std::vector<std::int32_t> topk_ids;
  attention_workspace attn_ws;
  ffn_workspace ffn_ws;
  std::vector<token_event> events;
  std::vector<std::pair<request_id, result>> finished;

  state(std::shared_ptr<const model_weights> w, engine_options o, kv_cache k, std::unique_ptr<kernels::backend> b)
      : weights(std::move(w)), options(o), backend(std::move(b)),
        scheduler(weights->config(), std::move(k), {o.prefill_chunk, o.max_running, 0}) {}

  const model_config& config() const { return weights->config(); }

  void forward(std::vector<scheduled_chunk>& chunks) {
    const model_config& c = config();
    const model_weights& w = *weights;
    ids.clear();
    positions.clear();
    slots.clear();
    logit_tokens.clear();
    for (auto& ch : chunks) {
      for (std::int64_t t = ch.first; t < ch.first + ch.count; ++t) {
        ids.push_back(ch.seq->tokens[static_cast<std::size_t>(t)]);
        positions.push_back(static_cast<std::int32_t>(t));
        slots.push_back({ch.seq->blocks.data(), static_cast<std::int32_t>(t)});
      }
      if (ch.ends_known_tokens()) {
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
    embed(*backend, w, ids, x.data());
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      attention_block(*backend, w, l, options.num, scheduler.kv().layer(l), slots, positions, x.data(), x_f.data(),
                      topk_ids.data(), topk_w.data(), attn_ws);
      ffn_block(*backend, w, l, options.num, x_f.data(), m, topk_ids.data(), topk_w.data(), x.data(), ffn_ws);
    }
    const auto r = static_cast<std::int64_t>(logit_tokens.size());
    rows.resize(static_cast<std::size_t>(r * hidden));
    for (std::int64_t i = 0; i < r; ++i)
      std::memcpy(rows.data() + i * hidden, x.data() + logit_tokens[static_cast<std::size_t>(i)] * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
    logits.resize(static_cast<std::size_t>(r * c.vocab_size));
    final_logits(*backend, w, rows.data(), r, logits.data(), scratch);
  }

  std::vector<token_event> step() {
    const auto t0 = std::chrono::steady_clock::now();
    events.clear();
    auto& chunks = scheduler.plan();
    if (chunks.empty()) return {};
    forward(chunks);
    for (const auto& ch : chunks) (ch.seq->generated() > 0 ? stats.decode_tokens : stats.prefill_tokens) += ch.count;
    const std::int64_t vocab = config().vocab_size;
    finished.clear();
    scheduler.complete(*backend, [&](const scheduled_chunk& ch) { return logits.data() + ch.logits_row * vocab; }, events,
                       finished);
    stats.generated_tokens += static_cast<std::int64_t>(events.size());
    for (auto& [id, res] : finished) done.emplace(id, std::move(res));
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
  auto backend = kernels::make_backend("cpu");
  if (!backend) return std::move(backend).err();
  return reference_engine(std::make_unique<state>(std::move(weights), options, std::move(*kv), std::move(*backend)));
}

expected<request_id> reference_engine::submit(request r) {
  const request_id id = s_->next_id;
  if (auto ok = s_->scheduler.check(id, r, {}); !ok) return ok.err();
  ++s_->next_id;
  s_->scheduler.add(id, std::move(r));
  return id;
}

std::vector<token_event> reference_engine::step() { return s_->step(); }

bool reference_engine::idle() const { return s_->scheduler.idle(); }

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
  try {
    while (!idle()) step();
  } catch (const kernels::op_failure& e) {
    return fail(errc::internal, "reference_engine: ", e.what());
  }
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
