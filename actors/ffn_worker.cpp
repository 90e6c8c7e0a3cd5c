// The FFN worker's actor: registration, start of an epoch (connect to every attention worker,
// load the units and unit slices it owns, start the engine), status. Its engine thread needs nothing from the
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

/// True when `a` computes any layer's shared expert / dense MLP, whole or a slice of it.
bool needs_shared(const ffn_assignment& a) {
  for (const auto& units : a.units)
    if (std::find(units.begin(), units.end(), engine::shared_unit) != units.end()) return true;
  for (const auto& sl : a.shared_slices)
    if (sl.count > 0) return true;
  return false;
}

/// What to load for `a`: the routed experts of each layer (shared_unit removed), and the dense /
/// shared units when any layer's unit is owned whole or in part (a slice reads the whole unit's
/// rows and columns it needs from the same tensors).
engine::weight_selection selection_of(const ffn_assignment& a) {
  std::vector<std::vector<std::int32_t>> experts(a.units.size());
  bool shared = needs_shared(a);
  for (std::size_t l = 0; l < a.units.size(); ++l)
    for (auto u : a.units[l])
      if (u != engine::shared_unit) experts[l].push_back(u);
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
    if (!m.ffn_slices.empty() && m.ffn_slices.size() != m.ffn_names.size())
      return to_caf_error(fail(errc::internal, "start_epoch ", m.epoch, " has slices for ", m.ffn_slices.size(),
                               " FFN workers and units for ", m.ffn_names.size()));
    const auto f = static_cast<std::size_t>(position - m.ffn_names.begin());
    ffn_assignment assignment{m.ffn_units[f], {}};
    if (!m.ffn_slices.empty())
      for (const auto& sl : m.ffn_slices[f]) assignment.shared_slices.push_back({sl.first, sl.count});
    auto peers = connect_all(*ctx.transport, m.attention_addresses, "attention worker", peers_known);
    if (!peers) return to_caf_error(peers.err());
    // Weights are loaded again only when they lack something of the new assignment.
    const bool shared = needs_shared(assignment);
    if (!weights || assignment.units != loaded_units || (shared && !loaded_shared)) {
      auto loaded = engine::model_weights::load(ctx.spec.model_path, selection_of(assignment));
      if (!loaded)
        return to_caf_error(fail(loaded.err().code(), "worker '", ctx.name, "': ", loaded.err().message()));
      weights = *loaded;
      loaded_units = assignment.units;
      loaded_shared = shared;
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
  bool loaded_shared = false;  ///< the dense/shared units are in `weights`
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
