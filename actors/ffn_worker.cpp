// The FFN worker's actor: registration, start of an epoch (connect to every attention worker,
// load the units it owns, start the engine), status. Its engine thread needs nothing from the
// control plane per step: it is paced by the attention workers' dispatches.

#include <algorithm>
#include <chrono>
#include <memory>

#include "actors/data_plane.hpp"
#include "actors/worker_common.hpp"

namespace afd::actors::detail {

namespace {

struct ffn_worker_state;
using ffn_actor = caf::stateful_actor<ffn_worker_state>;

/// The routed experts of each layer in `units` (shared_unit removed), and whether any layer's
/// shared expert / dense MLP is among them: what to load.
engine::weight_selection selection_of(const std::vector<std::vector<std::int32_t>>& units) {
  std::vector<std::vector<std::int32_t>> experts(units.size());
  bool shared = false;
  for (std::size_t l = 0; l < units.size(); ++l)
    for (auto u : units[l]) {
      if (u == engine::shared_unit)
        shared = true;
      else
        experts[l].push_back(u);
    }
  return engine::weight_selection::ffn_side(std::move(experts), shared);
}

struct ffn_worker_state {
  explicit ffn_worker_state(ffn_actor* s) : self(s) {}
  ~ffn_worker_state() {
    if (engine) engine->stop();
    engine.reset();
    if (ctx.transport) (void)ctx.transport->shutdown(transport::after(std::chrono::seconds(1)));
  }

  const ffn_worker_spec& spec() const { return ctx.spec.ffn_workers[static_cast<std::size_t>(ctx.index)]; }

  caf::result<ready_atom, std::uint32_t> on_start_epoch(start_epoch_msg& m) {
    // A new epoch (after a failure) may hand this worker more units: a fresh engine over them.
    if (engine) engine->stop();
    engine.reset();
    figures->failed.store(false);
    const auto position = std::find(m.ffn_names.begin(), m.ffn_names.end(), ctx.name);
    if (position == m.ffn_names.end() || m.ffn_units.size() != m.ffn_names.size())
      return to_caf_error(fail(errc::internal, "start_epoch ", m.epoch, " has no units for FFN worker '", ctx.name, "'"));
    ffn_assignment assignment{m.ffn_units[static_cast<std::size_t>(position - m.ffn_names.begin())]};
    auto peers = connect_all(*ctx.transport, m.attention_addresses, "attention worker", peers_known);
    if (!peers) return to_caf_error(peers.err());
    if (!weights || assignment.units != loaded_units) {
      auto loaded = engine::model_weights::load(ctx.spec.model_path, selection_of(assignment.units));
      if (!loaded)
        return to_caf_error(fail(loaded.err().code(), "worker '", ctx.name, "': ", loaded.err().message()));
      weights = *loaded;
      loaded_units = assignment.units;
    }
    data_plane_options o = ctx.spec.plane;
    o.epoch = m.epoch;
    epoch = m.epoch;
    auto coordinator = ctx.coordinator;
    auto fig = figures;
    const std::string name = ctx.name;
    const auto ep = epoch;
    auto on_failure = [coordinator, fig, name, ep](const error& e) {
      fig->failed.store(true);
      caf::anon_send(coordinator,
                     worker_failed_msg{ep, name, static_cast<std::uint8_t>(e.code()), e.message()});
    };
    auto created = ffn_engine::create(weights, o, std::move(assignment), *ctx.transport,
                                      std::move(*peers), [](step_report&&) {}, std::move(on_failure));
    if (!created) return to_caf_error(created.err());
    engine = std::move(*created);
    if (auto started = engine->start(); !started) {
      engine.reset();
      return to_caf_error(started.err());
    }
    state = "ready";
    return {ready_atom::value, epoch};
  }

  worker_status_msg on_status() const {
    worker_status_msg s;
    s.name = ctx.name;
    s.role = "ffn";
    s.state = figures->failed.load() ? "failed" : state;
    s.device = spec().device;
    return s;
  }

  bool on_stop_engine() {
    if (engine) engine->stop();
    engine.reset();  // releases its transport operations before another epoch's engine posts any
    if (state != "failed") state = "stopped";
    return true;
  }

  ffn_actor* self;
  worker_context ctx;
  std::unique_ptr<ffn_engine> engine;
  std::shared_ptr<const engine::model_weights> weights;  ///< the units of loaded_units
  std::vector<std::vector<std::int32_t>> loaded_units;
  peer_table peers_known;
  std::shared_ptr<live_figures> figures = std::make_shared<live_figures>();
  std::string state = "starting";
  std::uint32_t epoch = 0;
};

caf::behavior ffn_worker_behavior(ffn_actor* self, worker_context ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  register_with_coordinator(self, s.ctx, 0, s.spec().device);
  return {
      [&s](start_epoch_msg& m) { return s.on_start_epoch(m); },
      [&s](status_atom) { return s.on_status(); },
      [&s](stop_engine_atom) { return s.on_stop_engine(); },
      [](cancel_atom, std::int64_t) {},
  };
}

}  // namespace

caf::actor spawn_ffn_worker(caf::actor_system& sys, worker_context ctx) {
  return sys.spawn<caf::detached>(ffn_worker_behavior, std::move(ctx));
}

}  // namespace afd::actors::detail
