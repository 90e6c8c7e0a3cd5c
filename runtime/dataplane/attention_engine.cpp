// The attention worker's engine thread: the reference engine's scheduler (admission, chunked
// prefill, sampling, finish reasons) with each step split into K micro-batches that cross the
// transport layer by layer (DESIGN.md, "The step protocol").

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "runtime/dataplane/data_plane_internal.hpp"
#include "runtime/engine/kv_cache.hpp"

namespace afd::dataplane {

using transport::op_status;

namespace {

/// One micro-batch's buffers, reused across steps.
struct micro_batch {
  std::vector<std::int32_t> ids, positions;
  std::vector<kernels::kv_slot> slots;
  std::vector<float> x, n, topk_w, rows, logits, units;
  std::vector<std::int32_t> topk_ids, canonical;
  std::vector<const float*> unit_ptrs;
  std::vector<std::int64_t> logit_tokens;
  std::uint32_t tokens() const { return static_cast<std::uint32_t>(ids.size()); }
};

struct command {
  bool is_cancel = false;
  admitted_request admit;
  engine::request_id cancel = 0;
};

}  // namespace

struct attention_engine::state {
  std::shared_ptr<const engine::model_weights> weights;
  attention_engine_options options;
  transport::transport& t;
  std::vector<transport::peer_id> ffn_peers;
  report_fn on_report;
  failure_fn on_failure;
  std::unique_ptr<transport::attention_exchange> ex;
  std::unique_ptr<kernels::backend> backend;  // options.plane.device's, used by the engine thread only
  engine::batch_scheduler sched;  // the reference engine's scheduler; check() reads settings only
  numerics attn_num;  // dispatch rounding off: the wire rounds

  std::mutex mu;
  std::condition_variable cv;
  std::deque<command> commands;
  std::atomic<bool> stop{false};
  std::atomic<bool> finished{false};  // the engine thread left its loop
  std::atomic<std::int64_t> free_blocks{0};
  std::thread thread;
  bool started = false;

  // Engine-thread state.
  std::uint64_t step = 0;
  std::vector<micro_batch> mbs;
  engine::attention_workspace ws;
  std::vector<float> scratch;
  step_timing timing;
  std::uint64_t cluster_tokens = 0;  // every attention worker's tokens in the last step (FFN headers)
  int bad_peer = -1;                 // the FFN worker (index) whose results reduce() rejected

  state(std::shared_ptr<const engine::model_weights> w, attention_engine_options o, transport::transport& tr,
        std::vector<transport::peer_id> peers, report_fn rep, failure_fn fail_fn, engine::kv_cache k)
      : weights(std::move(w)), options(o), t(tr), ffn_peers(std::move(peers)), on_report(std::move(rep)),
        on_failure(std::move(fail_fn)),
        sched(weights->config(), std::move(k),
              {o.plane.prefill_chunk, o.max_running,
               std::int64_t{o.plane.micro_batches} * o.plane.max_tokens_per_micro_batch}),
        attn_num(detail::unrounded_dispatch(o.plane.num)) {
    free_blocks = sched.kv().free_blocks();
    mbs.resize(options.plane.micro_batches);
  }

  const model_config& config() const { return weights->config(); }

  // ----------------------------------------------------------------------------------------------
  // Step boundary.

  /// Applies queued admissions and cancellations in arrival order. True when any arrived.
  bool take_commands() {
    std::deque<command> cmds;
    {
      std::lock_guard lock(mu);
      cmds.swap(commands);
    }
    for (command& c : cmds) {
      if (c.is_cancel)
        sched.cancel(c.cancel);
      else
        sched.add(c.admit.id, std::move(c.admit.req), std::move(c.admit.generated));
    }
    return !cmds.empty();
  }

  /// Places the scheduler's chunks (decode tokens, then prefill chunks) into the K micro-batches,
  /// each chunk whole in one: prefill chunks largest first into the least loaded one, cut to the
  /// room left there (the remainder waits for the next step), then the decode tokens. Kernels are
  /// batch-invariant, so the split changes timing only, never a value.
  void assign_micro_batches(std::vector<engine::scheduled_chunk>& chunks) {
    const std::uint32_t K = options.plane.micro_batches;
    const std::int64_t cap = options.plane.max_tokens_per_micro_batch;
    std::vector<std::int64_t> load(K, 0);
    auto least = [&] { return static_cast<std::uint32_t>(std::min_element(load.begin(), load.end()) - load.begin()); };
    std::vector<std::size_t> prefill;
    for (std::size_t i = 0; i < chunks.size(); ++i)
      if (!chunks[i].seq->decoding()) prefill.push_back(i);
    std::stable_sort(prefill.begin(), prefill.end(),
                     [&](std::size_t a, std::size_t b) { return chunks[a].count > chunks[b].count; });
    for (std::size_t i : prefill) {
      engine::scheduled_chunk& c = chunks[i];
      const std::uint32_t m = least();
      c.count = std::min(c.count, cap - load[m]);
      c.micro_batch = m;
      load[m] += c.count;
    }
    for (engine::scheduled_chunk& c : chunks)  // decode tokens: room is guaranteed by the step budget
      if (c.seq->decoding()) {
        const std::uint32_t m = least();
        c.micro_batch = m;
        load[m] += 1;
      }
    std::erase_if(chunks, [](const engine::scheduled_chunk& c) { return c.count == 0; });
  }

  /// Fills each micro-batch's token lists from the plan.
  void lay_out() {
    const std::int64_t hidden = config().hidden_size;
    const std::int64_t k = std::max<std::int64_t>(config().moe_top_k, 1);
    for (micro_batch& mb : mbs) {
      mb.ids.clear();
      mb.positions.clear();
      mb.slots.clear();
      mb.logit_tokens.clear();
    }
    for (engine::scheduled_chunk& ch : sched.chunks()) {
      micro_batch& mb = mbs[ch.micro_batch];
      for (std::int64_t t = ch.first; t < ch.first + ch.count; ++t) {
        mb.ids.push_back(ch.seq->tokens[static_cast<std::size_t>(t)]);
        mb.positions.push_back(static_cast<std::int32_t>(t));
        mb.slots.push_back({ch.seq->blocks.data(), static_cast<std::int32_t>(t)});
      }
      if (ch.ends_known_tokens()) {
        ch.logits_row = static_cast<std::int64_t>(mb.logit_tokens.size());
        mb.logit_tokens.push_back(static_cast<std::int64_t>(mb.ids.size()) - 1);
      }
    }
    for (micro_batch& mb : mbs) {
      const std::size_t m = mb.tokens();
      mb.x.resize(m * static_cast<std::size_t>(hidden));
      mb.n.resize(mb.x.size());
      mb.topk_ids.resize(m * static_cast<std::size_t>(k));
      mb.topk_w.resize(mb.topk_ids.size());
    }
  }

  // ----------------------------------------------------------------------------------------------
  // The pipeline.

  /// Reports a failed wait or post (fatal), or a wait past the step deadline (not fatal: the
  /// wait goes on), naming the peer at fault.
  void report_failure(const std::string& what, std::uint32_t m, std::int64_t layer, detail::wait_outcome o) {
    if (!on_failure) return;
    const error e = ex->last_error(m);
    const bool overdue = o == detail::wait_outcome::timed_out;
    const errc code = overdue ? errc::timeout : (e.code() == errc::none ? errc::transport_error : e.code());
    engine_fault f;
    f.fatal = !overdue;
    f.what = fail(code, "attention worker (rank ", t.rank(), "): epoch ", options.plane.epoch, ", step ", step,
                  ", micro-batch ", m, ", layer ", layer, ": ", what,
                  overdue ? " exceeded the step deadline" : " failed", ": ",
                  e.message().empty() ? std::string("no detail") : e.message());
    if (const int r = ex->last_peer_rank(m); r >= 0) f.suspects.push_back(static_cast<transport::rank_t>(r));
    on_failure(f);
  }

  /// A kernel the backend refused or the device failed: fatal, nobody else to suspect.
  void report_kernel_failure(const kernels::op_failure& e) {
    if (!on_failure) return;
    engine_fault f;
    f.what = fail(errc::internal, "attention worker (rank ", t.rank(), ") on ", options.plane.device, ": epoch ",
                  options.plane.epoch, ", step ", step, ": ", e.what());
    on_failure(f);
  }

  /// Computes micro-batch m's attention half of `layer` and posts its dispatch.
  detail::wait_outcome attend_and_dispatch(std::uint32_t m, std::int64_t layer) {
    micro_batch& mb = mbs[m];
    const model_config& c = config();
    const std::uint32_t T = mb.tokens();
    const bool routed = c.is_moe_layer(layer) && T > 0;
    if (m == 0) detail::layer_faults(options.plane, step, layer);
    auto t0 = transport::clock::now();
    if (T > 0)
      engine::attention_block(*backend, *weights, layer, attn_num, sched.kv().layer(layer), mb.slots, mb.positions, mb.x.data(),
                              mb.n.data(), mb.topk_ids.data(), mb.topk_w.data(), ws);
    auto t1 = transport::clock::now();
    transport::dispatch_view v;
    auto o = detail::patient_wait(
        [&](transport::deadline until) {
          v = ex->begin_dispatch(m, T, routed, until);
          if (v.tokens != nullptr) return op_status::done;
          return ex->last_error(m).code() == errc::timeout ? op_status::timeout : op_status::error;
        },
        stop, options.plane.step_deadline, options.plane.progress.get(),
        [&] { report_failure("waiting to reuse the dispatch buffer", m, layer, detail::wait_outcome::timed_out); });
    auto t2 = transport::clock::now();
    detail::add_time(timing.compute_seconds, timing.layer_compute_seconds, layer, detail::seconds(t0, t1));
    detail::add_time(timing.wait_seconds, timing.layer_wait_seconds, layer, detail::seconds(t1, t2));
    if (o != detail::wait_outcome::done) {
      if (o != detail::wait_outcome::stopped) report_failure("waiting to reuse the dispatch buffer", m, layer, o);
      return o;
    }
    const std::int64_t hidden = c.hidden_size;
    if (T > 0) {
      if (options.plane.num.dispatch == dtype::f8_e4m3) {
        // The codes and scales round_activations would produce: the FFN side dequantizes them
        // into exactly the reference engine's x_f.
        kernels::require(
            backend->quantize_fp8({mb.n.data(), T, hidden, reinterpret_cast<std::uint8_t*>(v.tokens), v.scales}),
            *backend);
      } else if (options.plane.num.dispatch == dtype::f32) {
        std::memcpy(v.tokens, mb.n.data(), mb.n.size() * sizeof(float));
      } else {
        auto* out = reinterpret_cast<std::uint16_t*>(v.tokens);
        for (std::size_t i = 0; i < mb.n.size(); ++i) out[i] = f32_to_bf16(mb.n[i]);
      }
      if (routed) {
        const std::size_t kk = static_cast<std::size_t>(T) * static_cast<std::size_t>(c.moe_top_k);
        std::memcpy(v.topk_ids, mb.topk_ids.data(), kk * sizeof(std::int32_t));
        std::memcpy(v.topk_weights, mb.topk_w.data(), kk * sizeof(float));
      }
    }
    const transport::step_id id{options.plane.epoch, step, static_cast<std::uint16_t>(m),
                                static_cast<std::uint16_t>(layer)};
    detail::add_time(timing.compute_seconds, timing.layer_compute_seconds, layer,
                     detail::seconds(t2, transport::clock::now()));
    if (ex->post_dispatch(m, id) == op_status::error) {
      report_failure("posting the dispatch", m, layer, detail::wait_outcome::failed);
      return detail::wait_outcome::failed;
    }
    return detail::wait_outcome::done;
  }

  /// Waits for every FFN worker's results of micro-batch m's `layer` and adds them to its h.
  detail::wait_outcome combine(std::uint32_t m, std::int64_t layer) {
    auto t0 = transport::clock::now();
    auto o = detail::patient_wait(
        [&](transport::deadline until) { return ex->wait_combine(m, until); }, stop, options.plane.step_deadline,
        options.plane.progress.get(),
        [&] { report_failure("waiting for the FFN workers' results", m, layer, detail::wait_outcome::timed_out); });
    auto t1 = transport::clock::now();
    detail::add_time(timing.wait_seconds, timing.layer_wait_seconds, layer, detail::seconds(t0, t1));
    if (o != detail::wait_outcome::done) {
      if (o != detail::wait_outcome::stopped) report_failure("waiting for the FFN workers' results", m, layer, o);
      return o;
    }
    std::string bad = reduce(m, layer);
    detail::add_time(timing.compute_seconds, timing.layer_compute_seconds, layer,
                     detail::seconds(t1, transport::clock::now()));
    if (!bad.empty()) {
      if (on_failure) {
        engine_fault f;
        f.what = fail(errc::bad_message, "attention worker (rank ", t.rank(), "): epoch ", options.plane.epoch,
                      ", step ", step, ", micro-batch ", m, ", layer ", layer, ": ", bad);
        if (bad_peer >= 0) f.suspects.push_back(t.peer_rank(ffn_peers[static_cast<std::size_t>(bad_peer)]));
        on_failure(f);
      }
      return detail::wait_outcome::failed;
    }
    return detail::wait_outcome::done;
  }

  /// Sums the received units into h. Deterministic: per token, each of its units exactly once, in
  /// canonical order (engine::combine_units, as the reference engine). Throughput: the FFN
  /// workers' partials in worker order, the sum rounded to numerics.combine. "" or what is wrong.
  std::string reduce(std::uint32_t m, std::int64_t layer) {
    bad_peer = -1;
    micro_batch& mb = mbs[m];
    const model_config& c = config();
    const std::uint32_t T = mb.tokens();
    const std::int64_t hidden = c.hidden_size;
    const auto F = static_cast<std::uint32_t>(ffn_peers.size());
    const auto H = static_cast<std::size_t>(hidden);
    std::size_t vectors = 0;
    for (std::uint32_t f = 0; f < F; ++f) {
      const transport::combine_view v = ex->received(m, f);
      if (v.token_count != T) {
        bad_peer = static_cast<int>(f);
        return "FFN worker " + std::to_string(f) + " answered for " + std::to_string(v.token_count) +
               " tokens, not " + std::to_string(T);
      }
      vectors += v.vector_count;
    }
    if (T == 0) return {};
    mb.units.resize(vectors * H);
    std::size_t next = 0;
    if (options.plane.num.mode == combine_mode::throughput) {
      mb.unit_ptrs.assign(static_cast<std::size_t>(T) * F, nullptr);
      for (std::uint32_t f = 0; f < F; ++f) {
        const transport::combine_view v = ex->received(m, f);
        for (std::uint32_t i = 0; i < T; ++i) {
          float* row = mb.units.data() + (next++) * H;
          detail::read_vector(v, i, H, row);
          mb.unit_ptrs[static_cast<std::size_t>(i) * F + f] = row;
        }
      }
      for (std::uint32_t i = 0; i < T; ++i)
        engine::combine_units(std::span<const float* const>(mb.unit_ptrs.data() + static_cast<std::size_t>(i) * F, F),
                              hidden, options.plane.num.combine, mb.x.data() + i * H, mb.x.data() + i * H);
      return {};
    }
    // Deterministic: each token's expected units in canonical order.
    const bool moe = c.is_moe_layer(layer);
    const std::size_t k = moe ? static_cast<std::size_t>(c.moe_top_k) : 0;
    const bool shared = detail::has_shared_unit(c, layer);
    const std::size_t per = k + (shared ? 1 : 0);
    mb.canonical.resize(static_cast<std::size_t>(T) * per);
    for (std::uint32_t i = 0; i < T; ++i) {
      std::int32_t* u = mb.canonical.data() + i * per;
      std::copy(mb.topk_ids.data() + i * k, mb.topk_ids.data() + (i + 1) * k, u);
      engine::canonical_expert_order(std::span<std::int32_t>(u, k));
      if (shared) u[k] = engine::shared_unit;
    }
    mb.unit_ptrs.assign(static_cast<std::size_t>(T) * per, nullptr);
    for (std::uint32_t f = 0; f < F; ++f) {
      const transport::combine_view v = ex->received(m, f);
      for (std::uint32_t i = 0; i < v.vector_count; ++i) {
        const transport::combine_entry e = v.entries[i];
        const std::int32_t unit =
            e.unit == transport::shared_unit ? engine::shared_unit : static_cast<std::int32_t>(e.unit);
        std::size_t slot = per;
        if (e.token < T) {
          const std::int32_t* u = mb.canonical.data() + static_cast<std::size_t>(e.token) * per;
          slot = static_cast<std::size_t>(std::find(u, u + per, unit) - u);
        }
        if (slot == per || mb.unit_ptrs[e.token * per + slot] != nullptr) {
          bad_peer = static_cast<int>(f);
          return "FFN worker " + std::to_string(f) + " (rank " + std::to_string(t.peer_rank(ffn_peers[f])) +
                 ") sent unit " + std::to_string(unit) + " for token " + std::to_string(e.token) +
                 (slot == per ? ", which that token did not choose" : " a second time");
        }
        float* row = mb.units.data() + (next++) * H;
        detail::read_vector(v, i, H, row);
        mb.unit_ptrs[e.token * per + slot] = row;
      }
    }
    for (std::uint32_t i = 0; i < T; ++i) {
      for (std::size_t s = 0; s < per; ++s)
        if (mb.unit_ptrs[i * per + s] == nullptr)
          return "no FFN worker sent unit " + std::to_string(mb.canonical[i * per + s]) + " for token " +
                 std::to_string(i) + " (is every unit of the layer owned?)";
      engine::combine_units(std::span<const float* const>(mb.unit_ptrs.data() + i * per, per), hidden, dtype::f32,
                            mb.x.data() + i * H, mb.x.data() + i * H);
    }
    return {};
  }

  /// Runs every layer of every micro-batch: layer by layer, micro-batch m's attention runs while
  /// m-1 is on the FFN side. Order: for layer l, for m: wait (m, l-1), reduce, attention (m, l),
  /// dispatch; then the last layer's combines. Every worker of the cluster sends its (m, l) after
  /// receiving (m, l-1), and the FFN workers answer (m, l) in the same order, so the cluster never
  /// waits in a cycle for any K >= 1 and any A:F.
  detail::wait_outcome forward() {
    const model_config& c = config();
    const std::uint32_t K = options.plane.micro_batches;
    auto t0 = transport::clock::now();
    for (micro_batch& mb : mbs)
      if (mb.tokens() > 0) engine::embed(*backend, *weights, mb.ids, mb.x.data());
    timing.compute_seconds += detail::seconds(t0, transport::clock::now());
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      for (std::uint32_t m = 0; m < K; ++m) {
        if (l > 0)
          if (auto o = combine(m, l - 1); o != detail::wait_outcome::done) return o;
        if (auto o = attend_and_dispatch(m, l); o != detail::wait_outcome::done) return o;
      }
    }
    cluster_tokens = 0;
    for (std::uint32_t m = 0; m < K; ++m) {
      if (auto o = combine(m, c.num_hidden_layers - 1); o != detail::wait_outcome::done) return o;
      cluster_tokens += ex->received(m, 0).cluster_tokens;
    }
    return detail::wait_outcome::done;
  }

  /// Final norm, LM head and sampling, as the reference engine (token index = tokens generated so
  /// far); finished requests leave and give their blocks back.
  void finish_step(step_report& rep) {
    const model_config& c = config();
    const std::int64_t hidden = c.hidden_size, vocab = c.vocab_size;
    auto t0 = transport::clock::now();
    for (micro_batch& mb : mbs) {
      const auto r = static_cast<std::int64_t>(mb.logit_tokens.size());
      mb.rows.resize(static_cast<std::size_t>(r * hidden));
      for (std::int64_t i = 0; i < r; ++i)
        std::memcpy(mb.rows.data() + i * hidden, mb.x.data() + mb.logit_tokens[static_cast<std::size_t>(i)] * hidden,
                    static_cast<std::size_t>(hidden) * sizeof(float));
      mb.logits.resize(static_cast<std::size_t>(r * vocab));
      engine::final_logits(*backend, *weights, mb.rows.data(), r, mb.logits.data(), scratch);
    }
    std::vector<engine::token_event>& events = rep.tokens;
    sched.complete(
        *backend,
        [&](const engine::scheduled_chunk& ch) { return mbs[ch.micro_batch].logits.data() + ch.logits_row * vocab; },
        events, rep.finished);
    timing.compute_seconds += detail::seconds(t0, transport::clock::now());
  }

  void run() {
    engine_progress* progress = options.plane.progress.get();
    bool was_idle = false;
    while (!stop.load()) {
      // When the whole cluster was idle in the last step (the FFN workers' headers count every
      // attention worker's tokens) and nothing waits here, wait for work a little before the
      // next empty step, so that an idle cluster does not spin while a busy one is never slowed;
      // the empty steps keep the FFN workers' deadlines fed.
      if (was_idle && sched.idle() && options.plane.idle_wait.count() > 0) {
        if (progress) progress->enter(engine_progress::idle);
        std::unique_lock lock(mu);
        cv.wait_for(lock, options.plane.idle_wait, [&] { return stop.load() || !commands.empty(); });
      }
      if (stop.load()) break;
      if (progress) progress->enter(engine_progress::computing);
      detail::step_faults(options.plane, step);
      const auto start = transport::clock::now();
      detail::reset_timing(timing, config().num_hidden_layers);
      const bool changed = take_commands();
      assign_micro_batches(sched.plan());
      lay_out();
      step_report rep;
      rep.step = step;
      detail::wait_outcome o = detail::wait_outcome::failed;
      try {
        o = forward();
        if (o == detail::wait_outcome::done) finish_step(rep);
      } catch (const kernels::op_failure& e) {
        report_kernel_failure(e);
        break;
      }
      if (o != detail::wait_outcome::done) break;  // failure reported, or stopping
      was_idle = cluster_tokens == 0;
      free_blocks = sched.kv().free_blocks();
      timing.total_seconds = detail::seconds(start, transport::clock::now());
      if (on_report && (changed || !rep.tokens.empty() || !rep.finished.empty())) {
        rep.free_kv_blocks = sched.kv().free_blocks();
        rep.running = sched.running();
        rep.waiting = sched.waiting();
        rep.timing = timing;
        on_report(std::move(rep));
      }
      ++step;
      if (progress) progress->record(timing);
    }
    free_blocks = sched.kv().free_blocks();
    if (progress) progress->enter(engine_progress::stopped);
    finished.store(true);
  }
};

attention_engine::attention_engine(std::unique_ptr<state> s) : s_(std::move(s)) {}

attention_engine::~attention_engine() { stop(); }

expected<std::unique_ptr<attention_engine>> attention_engine::create(
    std::shared_ptr<const engine::model_weights> weights, attention_engine_options options, transport::transport& t,
    std::vector<transport::peer_id> ffn_peers, report_fn on_report, failure_fn on_failure) {
  if (!weights) return fail(errc::invalid_argument, "attention_engine: no weights");
  if (!weights->has_attention())
    return fail(errc::invalid_argument, "attention_engine: the weights lack the attention side "
                                        "(load with weight_selection::attention_side())");
  const model_config& c = weights->config();
  if (auto ok = detail::check_plane_options(options.plane, c); !ok) return std::move(ok).err();
  if (ffn_peers.empty()) return fail(errc::invalid_argument, "attention_engine: no FFN workers");
  auto backend = kernels::make_backend(options.plane.device);
  if (!backend) return fail(backend.err().code(), "attention_engine: ", backend.err().message());
  if (options.block_size <= 0)
    return fail(errc::invalid_argument, "attention_engine: KV block size must be positive, got ", options.block_size);
  if (options.num_blocks <= 0)
    return fail(errc::invalid_argument, "attention_engine: KV blocks must be positive, got ", options.num_blocks);
  const std::int64_t room = std::int64_t{options.plane.micro_batches} * options.plane.max_tokens_per_micro_batch;
  if (options.max_running <= 0 || options.max_running > room)
    return fail(errc::invalid_argument, "attention_engine: max_running must be in [1, ", room,
                "] (micro-batches x max tokens per micro-batch: every running request's decode token must fit a "
                "step), got ", options.max_running);
  auto kv = engine::kv_cache::create(c, options.plane.num.kv, options.block_size, options.num_blocks);
  if (!kv) return std::move(kv).err();
  auto s = std::make_unique<state>(std::move(weights), options, t, std::move(ffn_peers), std::move(on_report),
                                   std::move(on_failure), std::move(*kv));
  auto ex = transport::attention_exchange::create(t, detail::exchange_shape_of(options.plane, c), s->ffn_peers);
  if (!ex) return std::move(ex).err();
  s->ex = std::move(*ex);
  s->backend = std::move(*backend);
  return std::unique_ptr<attention_engine>(new attention_engine(std::move(s)));
}

expected<void> attention_engine::start() {
  if (s_->started) return fail(errc::invalid_argument, "attention_engine: already started");
  s_->started = true;
  s_->thread = std::thread([st = s_.get()] { st->run(); });
  return {};
}

expected<void> attention_engine::admit(admitted_request r) {
  if (auto ok = s_->sched.check(r.id, r.req, r.generated); !ok) return ok;
  {
    std::lock_guard lock(s_->mu);
    command c;
    c.admit = std::move(r);
    s_->commands.push_back(std::move(c));
  }
  s_->cv.notify_all();
  return {};
}

void attention_engine::cancel(engine::request_id id) {
  {
    std::lock_guard lock(s_->mu);
    command c;
    c.is_cancel = true;
    c.cancel = id;
    s_->commands.push_back(std::move(c));
  }
  s_->cv.notify_all();
}

void attention_engine::request_stop() {
  {
    std::lock_guard lock(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
}

bool attention_engine::finished() const { return !s_->started || s_->finished.load(); }

void attention_engine::stop() {
  if (!s_) return;
  {
    std::lock_guard lock(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
  // Called from a callback on the engine thread itself: the loop ends on return; joining is left
  // to the owner's later stop() or destructor.
  if (s_->thread.joinable() && s_->thread.get_id() != std::this_thread::get_id()) s_->thread.join();
}

std::int64_t attention_engine::free_kv_blocks() const { return s_->free_blocks.load(); }

}  // namespace afd::dataplane
