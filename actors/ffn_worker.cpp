// The FFN worker's actor: registration, start of an epoch (connect to every attention worker,
// load the units and unit slices it owns, start the engine), status. Its engine thread needs nothing from the
// control plane per step: it is paced by the attention workers' dispatches.

#include <algorithm>
#include <chrono>
#include <memory>

#include "runtime/dataplane/data_plane.hpp"
#include "actors/timeouts.hpp"
#include "actors/worker_common.hpp"

namespace afd::actors::detail {

namespace {

struct ffn_worker_state;
using ffn_actor = caf::stateful_actor<ffn_worker_state>;

struct ffn_worker_state {
  explicit ffn_worker_state(ffn_actor* s) : self(s) {}
  ~ffn_worker_state() {
    if (engine) engine->stop();
    engine.reset();
    if (ctx.transport) (void)ctx.transport->shutdown(transport::after(timeouts::transport_shutdown));
  }

  const dataplane::ffn_worker_spec& spec() const { return ctx.spec.ffn_workers[static_cast<std::size_t>(ctx.index)]; }

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
    dataplane::ffn_assignment assignment{m.ffn_units[f], {}};
    if (!m.ffn_slices.empty())
      for (const auto& sl : m.ffn_slices[f]) assignment.shared_slices.push_back({sl.first, sl.count});
    auto peers = connect_all(*ctx.transport, m.attention_addresses, "attention worker", peers_known);
    if (!peers) return to_caf_error(peers.err());
    // Weights are loaded again only when they lack something of the new assignment.
    // The selection holds exactly this worker's routed experts and the shared/dense units of the
    // layers it owns whole or in part, nothing of other layers.
    engine::weight_selection selection = dataplane::ffn_weight_selection(assignment);
    const std::vector<bool> shared = selection.shared_layers.value_or(std::vector<bool>{});
    if (!weights || assignment.units != loaded_units || shared != loaded_shared) {
      auto loaded = engine::model_weights::load(ctx.spec.model_path, selection);
      if (!loaded)
        return to_caf_error(fail(loaded.err().code(), "worker '", ctx.name, "': ", loaded.err().message()));
      weights = *loaded;
      loaded_units = assignment.units;
      loaded_shared = shared;
    }
    dataplane::data_plane_options o = ctx.spec.plane;
    o.epoch = m.epoch;
    epoch = m.epoch;
    auto coordinator = ctx.coordinator;
    auto fig = figures;
    const std::string name = ctx.name;
    const auto ep = epoch;
    auto on_failure = [coordinator, fig, name, ep](const dataplane::engine_fault& f) {
      if (f.fatal) fig->failed.store(true);
      caf::anon_send(coordinator,
                     worker_failed_msg{ep, name, static_cast<std::uint8_t>(f.what.code()), f.what.message()});
    };
    auto created = dataplane::ffn_engine::create(weights, o, std::move(assignment), *ctx.transport,
                                      std::move(*peers), [](dataplane::step_report&&) {}, std::move(on_failure));
    if (!created) return to_caf_error(created.err());
    engine = std::move(*created);
    if (auto started = engine->start(); !started) {
      engine.reset();
      return to_caf_error(started.err());
    }
    state = worker_state::ready;
    return {ready_atom::value, epoch};
  }

  worker_status_msg on_status() const {
    worker_status_msg s;
    s.name = ctx.name;
    s.role = "ffn";
    s.state = static_cast<std::uint8_t>(figures->failed.load() ? worker_state::failed : state);
    s.device = spec().device;
    return s;
  }

  bool on_stop_engine() {
    if (engine) engine->stop();
    engine.reset();  // releases its transport operations before another epoch's engine posts any
    if (state != worker_state::failed) state = worker_state::stopped;
    return true;
  }

  ffn_actor* self;
  worker_context ctx;
  std::unique_ptr<dataplane::ffn_engine> engine;
  std::shared_ptr<const engine::model_weights> weights;  ///< the units of loaded_units
  std::vector<std::vector<std::int32_t>> loaded_units;
  std::vector<bool> loaded_shared;  ///< per layer: its dense/shared unit is in `weights`
  peer_table peers_known;
  std::shared_ptr<live_figures> figures = std::make_shared<live_figures>();
  worker_state state = worker_state::starting;
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
