// The attention worker's actor: registration, start of an epoch (connect to every FFN worker, load
// the attention side of the model, start the engine), admissions, cancellations, status. Its
// engine thread reports tokens straight to the coordinator, batched once per step.

#include <chrono>
#include <memory>

#include "runtime/dataplane/data_plane.hpp"
#include "actors/timeouts.hpp"
#include "actors/worker_common.hpp"

namespace afd::actors::detail {

namespace {

struct attention_worker_state;
using attention_actor = caf::stateful_actor<attention_worker_state>;

/// The state of one attention worker; the behaviour below forwards to it.
struct attention_worker_state {
  explicit attention_worker_state(attention_actor* s) : self(s) {}
  ~attention_worker_state() {
    // The engine drives the transport: stop it before the transport goes away.
    if (engine) engine->stop();
    engine.reset();
    if (ctx.transport) (void)ctx.transport->shutdown(transport::after(timeouts::transport_shutdown));
  }

  const dataplane::attention_worker_spec& spec() const { return ctx.spec.attention_workers[static_cast<std::size_t>(ctx.index)]; }

  caf::result<ready_atom, std::uint32_t> on_start_epoch(start_epoch_msg& m) {
    // A new epoch (after a failure) starts from a fresh engine: the requests come back through
    // admissions carrying the tokens generated so far.
    if (engine) engine->stop();
    engine.reset();
    figures->failed.store(false);
    figures->running.store(0);
    auto peers = connect_all(*ctx.transport, m.ffn_addresses, "FFN worker", peers_known);
    if (!peers) return to_caf_error(peers.err());
    if (!weights) {
      auto loaded = engine::model_weights::load(ctx.spec.model_path, engine::weight_selection::attention_side());
      if (!loaded)
        return to_caf_error(fail(loaded.err().code(), "worker '", ctx.name, "': ", loaded.err().message()));
      weights = *loaded;
    }
    dataplane::attention_engine_options o;
    o.plane = ctx.spec.plane;
    o.plane.epoch = m.epoch;
    o.block_size = spec().block_size;
    o.num_blocks = spec().kv_blocks;
    o.max_running = spec().max_batch;
    epoch = m.epoch;
    auto coordinator = ctx.coordinator;
    auto fig = figures;
    const auto index = static_cast<std::int32_t>(ctx.index);
    const auto ep = epoch;
    auto on_report = [coordinator, fig, index, ep](dataplane::step_report&& r) {
      fig->running.store(r.running, std::memory_order_relaxed);
      worker_report_msg out;
      out.epoch = ep;
      out.index = index;
      out.step = r.step;
      out.free_kv_blocks = r.free_kv_blocks;
      out.running = r.running;
      out.waiting = r.waiting;
      out.tokens.reserve(r.tokens.size());
      for (const auto& t : r.tokens) out.tokens.push_back(token_rec{t.id, t.token, t.index, t.finished});
      for (auto& [id, res] : r.finished) {
        finished_rec f;
        f.id = id;
        f.tokens = std::move(res.tokens);
        f.reason = engine::to_string(res.reason);
        f.logits = std::move(res.logits);
        out.finished.push_back(std::move(f));
      }
      caf::anon_send(coordinator, std::move(out));
    };
    const std::string name = ctx.name;
    auto on_failure = [coordinator, fig, name, ep](const dataplane::engine_fault& f) {
      if (f.fatal) fig->failed.store(true);
      caf::anon_send(coordinator,
                     worker_failed_msg{ep, name, static_cast<std::uint8_t>(f.what.code()), f.what.message()});
    };
    auto created = dataplane::attention_engine::create(weights, o, *ctx.transport, std::move(*peers),
                                            std::move(on_report), std::move(on_failure));
    if (!created) return to_caf_error(created.err());
    engine = std::move(*created);
    if (auto started = engine->start(); !started) {
      engine.reset();
      return to_caf_error(started.err());
    }
    state = worker_state::ready;
    return {ready_atom::value, epoch};
  }

  void on_admit(admit_msg& m) {
    if (m.epoch != epoch || !engine) return;
    dataplane::admitted_request r;
    r.id = m.id;
    r.req = to_engine_request(m.req);
    r.generated = std::move(m.generated);
    if (auto ok = engine->admit(std::move(r)); !ok) {
      // The request ends here; the coordinator hears it like any other end.
      worker_report_msg out;
      out.epoch = epoch;
      out.index = static_cast<std::int32_t>(ctx.index);
      out.free_kv_blocks = engine->free_kv_blocks();
      finished_rec f;
      f.id = m.id;
      f.code = static_cast<std::uint8_t>(ok.err().code());
      f.message = ok.err().message();
      out.finished.push_back(std::move(f));
      self->send(ctx.coordinator, std::move(out));
    }
  }

  void on_cancel(std::int64_t id) {
    if (engine) engine->cancel(id);
  }

  worker_status_msg on_status() const {
    worker_status_msg s;
    s.name = ctx.name;
    s.role = "attention";
    s.state = static_cast<std::uint8_t>(figures->failed.load() ? worker_state::failed : state);
    s.device = spec().device;
    s.running = figures->running.load(std::memory_order_relaxed);
    s.kv_total = spec().kv_blocks;
    s.kv_used = engine ? spec().kv_blocks - engine->free_kv_blocks() : 0;
    return s;
  }

  bool on_stop_engine() {
    if (engine) engine->stop();
    engine.reset();  // releases its transport operations before another epoch's engine posts any
    if (state != worker_state::failed) state = worker_state::stopped;
    return true;
  }

  attention_actor* self;
  worker_context ctx;
  std::unique_ptr<dataplane::attention_engine> engine;
  std::shared_ptr<const engine::model_weights> weights;  ///< the attention side, loaded once
  peer_table peers_known;
  std::shared_ptr<live_figures> figures = std::make_shared<live_figures>();
  worker_state state = worker_state::starting;
  std::uint32_t epoch = 0;
};

caf::behavior attention_worker_behavior(attention_actor* self, worker_context ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  register_with_coordinator(self, s.ctx, s.spec().kv_blocks, s.spec().device);
  return {
      [&s](start_epoch_msg& m) { return s.on_start_epoch(m); },
      [&s](admit_msg& m) { s.on_admit(m); },
      [&s](cancel_atom, std::int64_t id) { s.on_cancel(id); },
      [&s](status_atom) { return s.on_status(); },
      [&s](stop_engine_atom) { return s.on_stop_engine(); },
  };
}

}  // namespace

caf::actor spawn_attention_worker(caf::actor_system& sys, worker_context ctx) {
  return sys.spawn<caf::detached>(attention_worker_behavior, std::move(ctx));
}

}  // namespace afd::actors::detail
