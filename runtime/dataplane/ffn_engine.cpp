// The FFN worker's engine thread: for each (step, micro-batch, layer), in the order every
// attention worker sends them, it takes all attention workers' dispatches, computes the units it
// owns for the tokens that chose them, and returns the results (DESIGN.md, "Who computes what").

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "runtime/dataplane/data_plane_internal.hpp"

namespace afd::dataplane {

using transport::op_status;

namespace {

/// A column slice of a shared expert / dense MLP (throughput mode): gate and up rows
/// [first, first + count) viewed in place, down's columns copied once (exactly, as f32).
struct sliced_unit {
  bool active = false;
  kernels::weight_view gate, up, down;
  std::vector<float> down_columns;  // [H, count]
  std::int64_t width = 0;
};

}  // namespace

struct ffn_engine::state {
  std::shared_ptr<const engine::model_weights> weights;
  data_plane_options options;
  ffn_assignment assignment;
  transport::transport& t;
  std::vector<transport::peer_id> attention_peers;
  report_fn on_report;
  failure_fn on_failure;
  std::unique_ptr<transport::ffn_exchange> ex;
  std::unique_ptr<kernels::backend> backend;  // options.device's, used by the engine thread only

  std::mutex mu;
  std::atomic<bool> stop{false};
  std::atomic<bool> finished{false};  // the engine thread left its loop
  int bad_peer = -1;                  // the attention worker (index) whose dispatch gather() rejected
  std::thread thread;
  bool started = false;

  // Engine-thread state.
  std::uint64_t step = 0;
  std::vector<std::vector<bool>> owned;  // [layer][expert]
  std::vector<bool> owns_shared;          // [layer]
  std::vector<sliced_unit> slices;        // [layer]
  std::vector<std::uint32_t> offset;      // first token of each attention worker in the concatenation
  std::vector<float> x_f, topk_w, units, shared_out, slice_out, slice_scratch, gathered, partial;
  std::vector<std::int32_t> topk_ids, order;
  std::vector<const float*> unit_of;      // [token * E + expert] -> its output row
  engine::ffn_workspace ws;
  step_timing timing;
  std::uint64_t step_tokens = 0;

  state(std::shared_ptr<const engine::model_weights> w, data_plane_options o, ffn_assignment a,
        transport::transport& tr, std::vector<transport::peer_id> peers, report_fn rep, failure_fn fail_fn)
      : weights(std::move(w)), options(o), assignment(std::move(a)), t(tr), attention_peers(std::move(peers)),
        on_report(std::move(rep)), on_failure(std::move(fail_fn)) {
    const model_config& c = weights->config();
    owned.assign(static_cast<std::size_t>(c.num_hidden_layers),
                 std::vector<bool>(static_cast<std::size_t>(std::max<std::int64_t>(c.moe_num_experts, 0)), false));
    owns_shared.assign(static_cast<std::size_t>(c.num_hidden_layers), false);
    for (std::size_t l = 0; l < assignment.units.size(); ++l)
      for (std::int32_t u : assignment.units[l]) {
        if (u == engine::shared_unit)
          owns_shared[l] = true;
        else
          owned[l][static_cast<std::size_t>(u)] = true;
      }
    offset.resize(attention_peers.size() + 1);
    slices.resize(static_cast<std::size_t>(c.num_hidden_layers));
    for (std::size_t l = 0; l < assignment.shared_slices.size() && l < slices.size(); ++l) {
      const ffn_assignment::slice sl = assignment.shared_slices[l];
      if (sl.count <= 0) continue;
      const engine::swiglu_weights& u = weights->ffn(static_cast<std::int64_t>(l)).shared;
      sliced_unit& s = slices[l];
      s.active = true;
      s.width = sl.count;
      s.gate = u.gate.row_slice(sl.first, sl.count);
      s.up = u.up.row_slice(sl.first, sl.count);
      const std::int64_t H = c.hidden_size, I = u.width();
      s.down_columns.resize(static_cast<std::size_t>(H * sl.count));
      for (std::int64_t r = 0; r < H; ++r)
        for (std::int64_t j = 0; j < sl.count; ++j)
          s.down_columns[static_cast<std::size_t>(r * sl.count + j)] =
              load_as_f32(u.down.type, u.down.data, static_cast<std::size_t>(r * I + sl.first + j));
      s.down = {dtype::f32, s.down_columns.data(), H, sl.count};
    }
  }

  const model_config& config() const { return weights->config(); }

  void report_failure(const std::string& what, std::uint32_t m, std::int64_t layer, detail::wait_outcome o,
                      errc code_if_none = errc::transport_error) {
    if (!on_failure) return;
    const error e = ex->last_error(m);
    const bool overdue = o == detail::wait_outcome::timed_out;
    const errc code = overdue ? errc::timeout : (e.code() == errc::none ? code_if_none : e.code());
    engine_fault f;
    f.fatal = !overdue;
    f.what = fail(code, "FFN worker (rank ", t.rank(), "): epoch ", options.epoch, ", step ", step, ", micro-batch ", m,
                  ", layer ", layer, ": ", what, overdue ? " exceeded the step deadline" : " failed", ": ",
                  e.message().empty() ? std::string("no detail") : e.message());
    if (const int r = ex->last_peer_rank(m); r >= 0) f.suspects.push_back(static_cast<transport::rank_t>(r));
    on_failure(f);
  }

  /// Concatenates every attention worker's tokens (dequantized: exactly the reference engine's
  /// x_f) and, in MoE layers, their top-k choices. "" or what is wrong.
  std::string gather(std::uint32_t m, bool moe) {
    const model_config& c = config();
    const auto H = static_cast<std::size_t>(c.hidden_size);
    const std::size_t k = static_cast<std::size_t>(c.moe_top_k);
    const auto A = static_cast<std::uint32_t>(attention_peers.size());
    offset[0] = 0;
    for (std::uint32_t a = 0; a < A; ++a) offset[a + 1] = offset[a] + ex->received(m, a).token_count;
    const std::size_t N = offset[A];
    x_f.resize(N * H);
    if (moe) {
      topk_ids.resize(N * k);
      topk_w.resize(N * k);
    }
    for (std::uint32_t a = 0; a < A; ++a) {
      bad_peer = static_cast<int>(a);  // whatever this loop rejects came from attention worker a
      const transport::dispatch_view v = ex->received(m, a);
      const std::size_t T = v.token_count;
      if (T == 0) continue;
      float* x = x_f.data() + offset[a] * H;
      if (options.num.dispatch == dtype::f8_e4m3) {
        kernels::require(backend->dequantize_fp8({reinterpret_cast<const std::uint8_t*>(v.tokens), v.scales,
                                                  static_cast<std::int64_t>(T), c.hidden_size, x}),
                         *backend);
      } else if (options.num.dispatch == dtype::f32) {
        std::memcpy(x, v.tokens, T * H * sizeof(float));
      } else {
        const auto* in = reinterpret_cast<const std::uint16_t*>(v.tokens);
        for (std::size_t i = 0; i < T * H; ++i) x[i] = bf16_to_f32(in[i]);
      }
      if (moe != (v.topk_ids != nullptr))
        return "attention worker " + std::to_string(a) + (moe ? " sent no expert choices for an MoE layer"
                                                              : " sent expert choices for a dense layer");
      if (moe) {
        for (std::size_t i = 0; i < T * k; ++i) {
          const std::int32_t e = v.topk_ids[i];
          if (e < 0 || e >= c.moe_num_experts)
            return "attention worker " + std::to_string(a) + " chose expert " + std::to_string(e) +
                   ", outside [0, " + std::to_string(c.moe_num_experts) + ")";
        }
        std::memcpy(topk_ids.data() + offset[a] * k, v.topk_ids, T * k * sizeof(std::int32_t));
        std::memcpy(topk_w.data() + offset[a] * k, v.topk_weights, T * k * sizeof(float));
      }
    }
    return {};
  }

  /// Computes the owned units of `layer` for all N gathered tokens (one ffn_unit call per unit over
  /// the tokens of every attention worker: kernels are batch-invariant).
  void compute(std::int64_t layer, bool moe, dtype unit_type) {
    const model_config& c = config();
    const auto H = static_cast<std::size_t>(c.hidden_size);
    const std::size_t N = offset.back();
    const auto l = static_cast<std::size_t>(layer);
    const bool shared = owns_shared[l] && detail::has_shared_unit(c, layer);
    if (shared) {
      shared_out.resize(N * H);
      engine::ffn_unit(*backend, *weights, layer, engine::shared_unit, x_f.data(), static_cast<std::int64_t>(N), nullptr,
                       unit_type, shared_out.data(), ws);
    }
    if (slices[l].active && N > 0) {
      // This worker's columns of the shared/dense MLP: a partial sum of its down projection.
      const sliced_unit& s = slices[l];
      slice_out.resize(N * H);
      slice_scratch.resize(2 * N * static_cast<std::size_t>(s.width));
      kernels::require(backend->swiglu({x_f.data(), static_cast<std::int64_t>(N), c.hidden_size, s.gate, s.up, s.down,
                                        slice_out.data(), slice_scratch}),
                       *backend);
    }
    if (!moe) return;
    const std::int64_t k = c.moe_top_k, E = c.moe_num_experts;
    engine::group_by_expert(topk_ids.data(), topk_w.data(), static_cast<std::int64_t>(N), k, ws.groups);
    const auto groups = ws.groups.view();  // storage kept across layers and steps
    std::size_t rows = 0;
    for (const auto& g : groups)
      if (owned[l][static_cast<std::size_t>(g.expert)]) rows += g.tokens.size();
    units.resize(rows * H);
    unit_of.assign(N * static_cast<std::size_t>(E), nullptr);
    std::size_t row = 0;
    for (const auto& g : groups) {
      if (!owned[l][static_cast<std::size_t>(g.expert)]) continue;
      const std::size_t n = g.tokens.size();
      gathered.resize(n * H);
      for (std::size_t i = 0; i < n; ++i)
        std::memcpy(gathered.data() + i * H, x_f.data() + static_cast<std::size_t>(g.tokens[i]) * H, H * sizeof(float));
      float* y = units.data() + row * H;
      engine::ffn_unit(*backend, *weights, layer, g.expert, gathered.data(), static_cast<std::int64_t>(n), g.weights.data(),
                       unit_type, y, ws);
      for (std::size_t i = 0; i < n; ++i)
        unit_of[static_cast<std::size_t>(g.tokens[i]) * static_cast<std::size_t>(E) +
                static_cast<std::size_t>(g.expert)] = y + i * H;
      row += n;
    }
  }

  /// Writes and posts the combine message of every attention worker. "" or what failed.
  detail::wait_outcome answer(std::uint32_t m, std::int64_t layer, bool moe) {
    const model_config& c = config();
    const auto H = static_cast<std::size_t>(c.hidden_size);
    const std::size_t k = moe ? static_cast<std::size_t>(c.moe_top_k) : 0;
    const auto E = static_cast<std::size_t>(std::max<std::int64_t>(c.moe_num_experts, 0));
    const auto A = static_cast<std::uint32_t>(attention_peers.size());
    const bool shared = owns_shared[static_cast<std::size_t>(layer)] && detail::has_shared_unit(c, layer);
    const bool deterministic = options.num.mode == combine_mode::deterministic;
    std::vector<std::int32_t>& sorted = order;
    sorted.resize(k);
    for (std::uint32_t a = 0; a < A; ++a) {
      const std::uint32_t first = offset[a], T = offset[a + 1] - offset[a];
      std::uint32_t vectors = T;
      if (deterministic) {
        vectors = 0;
        for (std::uint32_t i = first; i < first + T; ++i) {
          for (std::size_t j = 0; j < k; ++j) vectors += unit_of[i * E + static_cast<std::size_t>(topk_ids[i * k + j])] != nullptr;
          vectors += shared ? 1 : 0;
        }
      }
      transport::combine_view v;
      auto o = detail::patient_wait(
          [&](transport::deadline until) {
            v = ex->begin_combine(m, a, vectors, until);
            if (v.vectors != nullptr || v.vectors_f32 != nullptr || (vectors == 0 && ex->last_error(m).code() == errc::none)) return op_status::done;
            return ex->last_error(m).code() == errc::timeout ? op_status::timeout : op_status::error;
          },
          stop, options.step_deadline, options.progress.get(),
          [&] { report_failure("waiting to reuse a combine buffer", m, layer, detail::wait_outcome::timed_out); });
      if (o != detail::wait_outcome::done) {
        if (o != detail::wait_outcome::stopped) report_failure("waiting to reuse a combine buffer", m, layer, o);
        return o;
      }
      std::uint32_t out = 0;
      for (std::uint32_t i = first; i < first + T; ++i) {
        // This token's units, canonical order: its experts ascending, the shared unit last.
        for (std::size_t j = 0; j < k; ++j) sorted[j] = topk_ids[i * k + j];
        engine::canonical_expert_order(std::span<std::int32_t>(sorted.data(), k));
        if (deterministic) {
          auto put = [&](std::int32_t unit, const float* y) {
            v.entries[out] = {i - first, unit == engine::shared_unit ? transport::shared_unit
                                                                     : static_cast<std::uint32_t>(unit)};
            detail::write_vector(v, out, H, y);  // exact: y is rounded to numerics.combine
            ++out;
          };
          for (std::size_t j = 0; j < k; ++j)
            if (const float* y = unit_of[i * E + static_cast<std::size_t>(sorted[j])]) put(sorted[j], y);
          if (shared) put(engine::shared_unit, shared_out.data() + static_cast<std::size_t>(i) * H);
        } else {
          // Throughput: this worker's units of the token summed in canonical order in f32, rounded
          // once to numerics.combine (zeros when it owns none of them) by the wire.
          partial.assign(H, 0.0f);
          for (std::size_t j = 0; j < k; ++j)
            if (const float* y = unit_of[i * E + static_cast<std::size_t>(sorted[j])])
              for (std::size_t h = 0; h < H; ++h) partial[h] += y[h];
          if (shared)
            for (std::size_t h = 0; h < H; ++h) partial[h] += shared_out[static_cast<std::size_t>(i) * H + h];
          else if (slices[static_cast<std::size_t>(layer)].active)
            for (std::size_t h = 0; h < H; ++h) partial[h] += slice_out[static_cast<std::size_t>(i) * H + h];
          detail::write_vector(v, out, H, partial.data());
          ++out;
        }
      }
      if (ex->post_combine(m, a) == op_status::error) {
        report_failure("posting the results", m, layer, detail::wait_outcome::failed);
        return detail::wait_outcome::failed;
      }
    }
    return detail::wait_outcome::done;
  }

  /// One (step, micro-batch, layer).
  detail::wait_outcome run_one(std::uint32_t m, std::int64_t layer) {
    const model_config& c = config();
    const transport::step_id id{options.epoch, step, static_cast<std::uint16_t>(m), static_cast<std::uint16_t>(layer)};
    auto t0 = transport::clock::now();
    auto o = detail::patient_wait(
        [&](transport::deadline until) { return ex->wait_dispatch(m, id, until); }, stop, options.step_deadline,
        options.progress.get(),
        [&] { report_failure("waiting for the attention workers' dispatch", m, layer, detail::wait_outcome::timed_out); });
    auto t1 = transport::clock::now();
    detail::add_time(timing.wait_seconds, timing.layer_wait_seconds, layer, detail::seconds(t0, t1));
    if (o != detail::wait_outcome::done) {
      if (o != detail::wait_outcome::stopped) report_failure("waiting for the attention workers' dispatch", m, layer, o);
      return o;
    }
    const bool moe = c.is_moe_layer(layer);
    if (std::string bad = gather(m, moe); !bad.empty()) {
      if (on_failure) {
        engine_fault f;
        f.what = fail(errc::bad_message, "FFN worker (rank ", t.rank(), "): epoch ", options.epoch, ", step ", step,
                      ", micro-batch ", m, ", layer ", layer, ": ", bad);
        if (bad_peer >= 0) f.suspects.push_back(t.peer_rank(attention_peers[static_cast<std::size_t>(bad_peer)]));
        on_failure(f);
      }
      return detail::wait_outcome::failed;
    }
    step_tokens += offset.back();
    const dtype unit_type = options.num.mode == combine_mode::deterministic ? options.num.combine : dtype::f32;
    compute(layer, moe, unit_type);
    auto t2 = transport::clock::now();
    o = answer(m, layer, moe);
    detail::add_time(timing.compute_seconds, timing.layer_compute_seconds, layer, detail::seconds(t1, t2));
    if (o != detail::wait_outcome::done) return o;
    // The slot's dispatch buffers are consumed: listen for its next layer.
    if (ex->post_dispatch_receives(m) == op_status::error) {
      report_failure("re-posting dispatch receives", m, layer, detail::wait_outcome::failed);
      return detail::wait_outcome::failed;
    }
    return detail::wait_outcome::done;
  }

  void run() {
    try {
      run_steps();
    } catch (const kernels::op_failure& e) {
      // A kernel the backend refused or the device failed: fatal, nobody else to suspect.
      if (on_failure) {
        engine_fault f;
        f.what = fail(errc::internal, "FFN worker (rank ", t.rank(), ") on ", options.device, ": epoch ", options.epoch,
                      ", step ", step, ": ", e.what());
        on_failure(f);
      }
    }
    if (options.progress) options.progress->enter(engine_progress::stopped);
    finished.store(true);
  }

  void run_steps() {
    engine_progress* progress = options.progress.get();
    const std::uint32_t K = options.micro_batches;
    for (std::uint32_t m = 0; m < K; ++m) {
      if (ex->post_dispatch_receives(m) == op_status::error) {
        report_failure("posting dispatch receives", m, 0, detail::wait_outcome::failed);
        return;
      }
    }
    const std::int64_t L = config().num_hidden_layers;
    while (!stop.load()) {
      detail::step_faults(options, step);
      const auto start = transport::clock::now();
      detail::reset_timing(timing, L);
      step_tokens = 0;
      for (std::int64_t l = 0; l < L; ++l) {
        detail::layer_faults(options, step, l);
        for (std::uint32_t m = 0; m < K; ++m)
          if (run_one(m, l) != detail::wait_outcome::done) return;
      }
      timing.total_seconds = detail::seconds(start, transport::clock::now());
      if (on_report && step_tokens > 0) {
        step_report rep;
        rep.step = step;
        rep.timing = timing;
        on_report(std::move(rep));
      }
      ++step;
      if (progress) progress->record(timing);
    }
  }
};

ffn_engine::ffn_engine(std::unique_ptr<state> s) : s_(std::move(s)) {}

ffn_engine::~ffn_engine() { stop(); }

expected<std::unique_ptr<ffn_engine>> ffn_engine::create(std::shared_ptr<const engine::model_weights> weights,
                                                         data_plane_options options, ffn_assignment assignment,
                                                         transport::transport& t,
                                                         std::vector<transport::peer_id> attention_peers,
                                                         report_fn on_report, failure_fn on_failure) {
  if (!weights) return fail(errc::invalid_argument, "ffn_engine: no weights");
  const model_config& c = weights->config();
  if (auto ok = detail::check_plane_options(options, c); !ok) return std::move(ok).err();
  if (attention_peers.empty()) return fail(errc::invalid_argument, "ffn_engine: no attention workers");
  auto backend = kernels::make_backend(options.device);
  if (!backend) return fail(backend.err().code(), "ffn_engine: ", backend.err().message());
  if (static_cast<std::int64_t>(assignment.units.size()) > c.num_hidden_layers)
    return fail(errc::invalid_argument, "ffn_engine: the assignment names ", assignment.units.size(),
                " layers; the model has ", c.num_hidden_layers);
  for (std::size_t l = 0; l < assignment.units.size(); ++l) {
    const engine::ffn_weights& f = weights->ffn(static_cast<std::int64_t>(l));
    const bool moe = c.is_moe_layer(static_cast<std::int64_t>(l));
    std::vector<std::int32_t> seen;
    for (std::int32_t u : assignment.units[l]) {
      if (std::find(seen.begin(), seen.end(), u) != seen.end())
        return fail(errc::invalid_argument, "ffn_engine: layer ", l, " lists unit ", u, " twice");
      seen.push_back(u);
      if (u == engine::shared_unit) {
        if (detail::has_shared_unit(c, static_cast<std::int64_t>(l)) && !f.shared.loaded())
          return fail(errc::invalid_argument, "ffn_engine: layer ", l, " owns its ",
                      moe ? "shared expert" : "dense MLP", " but its weights are not loaded");
        continue;
      }
      if (!moe || u < 0 || u >= c.moe_num_experts)
        return fail(errc::invalid_argument, "ffn_engine: layer ", l, " has no routed expert ", u);
      if (!f.experts[static_cast<std::size_t>(u)].loaded())
        return fail(errc::invalid_argument, "ffn_engine: layer ", l, " owns expert ", u,
                    " but its weights are not loaded");
    }
  }
  for (std::size_t l = 0; l < assignment.shared_slices.size(); ++l) {
    const ffn_assignment::slice sl = assignment.shared_slices[l];
    if (sl.count <= 0) continue;
    const auto layer = static_cast<std::int64_t>(l);
    if (options.num.mode != combine_mode::throughput)
      return fail(errc::invalid_argument, "ffn_engine: layer ", l,
                  ": a slice of the shared/dense unit needs throughput mode (deterministic mode returns whole units)");
    if (layer >= c.num_hidden_layers || !detail::has_shared_unit(c, layer))
      return fail(errc::invalid_argument, "ffn_engine: layer ", l, " has no shared/dense unit to slice");
    const engine::swiglu_weights& u = weights->ffn(layer).shared;
    if (!u.loaded())
      return fail(errc::invalid_argument, "ffn_engine: layer ", l, " slices its shared/dense unit but its weights are not loaded");
    if (sl.first < 0 || sl.first + sl.count > u.width())
      return fail(errc::invalid_argument, "ffn_engine: layer ", l, " slice [", sl.first, ", ", sl.first + sl.count,
                  ") is outside the unit's width ", u.width());
    if (l < assignment.units.size()) {
      const auto& units = assignment.units[l];
      if (std::find(units.begin(), units.end(), engine::shared_unit) != units.end())
        return fail(errc::invalid_argument, "ffn_engine: layer ", l, " owns its shared/dense unit whole and a slice of it");
    }
  }
  auto s = std::make_unique<state>(std::move(weights), options, std::move(assignment), t, std::move(attention_peers),
                                   std::move(on_report), std::move(on_failure));
  auto ex = transport::ffn_exchange::create(t, detail::exchange_shape_of(options, c), s->attention_peers);
  if (!ex) return std::move(ex).err();
  s->ex = std::move(*ex);
  s->backend = std::move(*backend);
  return std::unique_ptr<ffn_engine>(new ffn_engine(std::move(s)));
}

expected<void> ffn_engine::start() {
  if (s_->started) return fail(errc::invalid_argument, "ffn_engine: already started");
  s_->started = true;
  s_->thread = std::thread([st = s_.get()] { st->run(); });
  return {};
}

void ffn_engine::request_stop() { s_->stop = true; }

bool ffn_engine::finished() const { return !s_->started || s_->finished.load(); }

void ffn_engine::stop() {
  if (!s_) return;
  s_->stop = true;
  // From a callback on the engine thread itself: the loop ends on return (see attention_engine).
  if (s_->thread.joinable() && s_->thread.get_id() != std::this_thread::get_id()) s_->thread.join();
}

}  // namespace afd::dataplane
