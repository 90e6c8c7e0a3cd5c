// The worker actor, one for both roles: registration (again after being fenced), heartbeats with
// the engine's progress, start of an epoch (connect to the peers of the other role, load what this
// worker owns, start the engine), admissions (attention), cancellations, status, stopping the
// engine without blocking, and the actor-level fault points (crash_actor, the control plane's send
// wrapper and handler guard). Its engine thread reports tokens straight to the coordinator,
// batched once per step.

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <memory>
#include <set>

#include "actors/timeouts.hpp"
#include "actors/worker_common.hpp"
#include "runtime/dataplane/data_plane.hpp"

namespace afd::actors::detail {

namespace {

struct worker_actor_state;
using worker_actor = caf::stateful_actor<worker_actor_state>;

/// Figures the engine thread updates and the actor reads for status (hence atomics).
struct live_figures {
  std::atomic<std::int64_t> running{0};
  std::atomic<bool> failed{false};
};

std::int64_t now_ns() { return std::chrono::steady_clock::now().time_since_epoch().count(); }

struct worker_actor_state {
  explicit worker_actor_state(worker_actor* s) : self(s) {}
  ~worker_actor_state() {
    // The engine drives the transport: stop it before the transport goes away.
    reset_engines();
    if (ctx.transport) (void)ctx.transport->shutdown(transport::after(timeouts::transport_shutdown));
  }

  bool is_attention() const { return ctx.role == dataplane::worker_role::attention; }
  std::int64_t kv_blocks() const {
    return is_attention() ? ctx.spec.attention_workers[static_cast<std::size_t>(ctx.index)].kv_blocks : 0;
  }
  const std::string& device() const {
    return is_attention() ? ctx.spec.attention_workers[static_cast<std::size_t>(ctx.index)].device
                          : ctx.spec.ffn_workers[static_cast<std::size_t>(ctx.index)].device;
  }
  bool has_engine() const { return attention || ffn; }
  bool engine_finished() const {
    return (!attention || attention->finished()) && (!ffn || ffn->finished());
  }
  void reset_engines() {
    attention.reset();  // joins its thread
    ffn.reset();
  }

  void start() {
    link = std::make_shared<control_link>(ctx.coordinator, ctx.site);
    self->monitor(ctx.coordinator);
    self->set_down_handler([this](caf::down_msg& m) {
      if (!ctx.coordinator || m.source != ctx.coordinator.address()) return;
      // Without a coordinator a worker has nothing to serve. When its coordinator can be
      // replaced, it keeps its weights and connections and looks for the new one (within
      // reconnect_grace); otherwise it ends (its process exits).
      if (!ctx.reconnect) {
        self->quit(m.reason);
        return;
      }
      on_coordinator_lost();
    });
    register_now();
    self->delayed_send(self, timeouts::heartbeat_interval, tick_atom::value);
  }

  /// The coordinator is gone: stop the engine (its requests live on with the clients, which
  /// resume them at the next coordinator) and look for the next coordinator.
  /// `refused`: the coordinator is alive but refused this worker's registration (a standby, or
  /// one deposed meanwhile): it may still become the active one, so it is not excluded.
  void on_coordinator_lost(bool refused = false) {
    if (!looking)
      std::fprintf(stderr, "worker '%s': %s; looking for the active coordinator (for up to %lld ms)\n",
                   ctx.name.c_str(), refused ? "the coordinator refused the registration" : "lost the coordinator",
                   static_cast<long long>(ctx.reconnect_grace.count()));
    if (has_engine()) {
      if (attention) attention->request_stop();
      if (ffn) ffn->request_stop();
      reset_engines();
    }
    if (refused) self->demonitor(ctx.coordinator);
    ctx.coordinator = nullptr;
    state = worker_state::starting;
    if (!looking) lost_coordinator_at = std::chrono::steady_clock::now();
    looking = true;
    self->send(self, reconnect_atom::value);
  }

  void on_reconnect() {
    if (ctx.coordinator) return;
    if (std::chrono::steady_clock::now() - lost_coordinator_at > ctx.reconnect_grace) {
      self->quit(caf::make_error(caf::sec::remote_linking_failed,
                                 "worker '" + ctx.name + "': no coordinator came back within " +
                                     std::to_string(ctx.reconnect_grace.count()) + " ms"));
      return;
    }
    // The reconnect function returns only a coordinator that answered as the active one (a proxy
    // CAF still holds for a lost one cannot answer): possibly the same process, back from a pause.
    auto found = ctx.reconnect();
    if (!found) {
      self->delayed_send(self, timeouts::coordinator_retry, reconnect_atom::value);
      return;
    }
    std::fprintf(stderr, "worker '%s': found the coordinator again; registering\n", ctx.name.c_str());
    ctx.coordinator = *found;
    link = std::make_shared<control_link>(ctx.coordinator, ctx.site);
    self->monitor(ctx.coordinator);
    register_new_life();
  }

  void register_now() {
    register_worker_msg m;
    m.last_epoch = last_epoch;
    m.role = static_cast<std::uint8_t>(ctx.role);
    m.name = ctx.name;
    m.address = address_bytes(*ctx.transport);
    m.kv_blocks = kv_blocks();
    m.device = device();
    m.incarnation = ctx.incarnation;
    state = worker_state::starting;
    registering = true;
    self->request(ctx.coordinator, ctx.spec.start_timeout, std::move(m))
        .then([this](std::uint32_t) {
                registering = false;
                looking = false;
              },
              [this](caf::error& e) {
                registering = false;
                // A standby (or a coordinator deposed meanwhile) refuses: look for the active one.
                if (ctx.reconnect && ctx.coordinator && from_caf_error(e).code() == errc::unavailable) {
                  on_coordinator_lost(true);
                  return;
                }
                self->quit(e);
              });
  }

  /// Every heartbeat_interval: the crash_actor fault point, then the heartbeat.
  void on_tick() {
    if (ctx.site && ctx.site->armed()) {
      std::shared_ptr<faults::fault_plan> plan;
      faults::data_context c;
      c.step = progress->steps.load(std::memory_order_relaxed);
      if (ctx.site->decide({faults::fault_kind::crash_actor}, c, plan)) {
        send_heartbeat();  // carries the firing counts; the down message is what reports the crash
        self->quit(caf::make_error(caf::sec::runtime_error, "worker '" + ctx.name + "': crash_actor fault"));
        return;
      }
    }
    send_heartbeat();
    self->delayed_send(self, timeouts::heartbeat_interval, tick_atom::value);
  }

  void send_heartbeat() {
    if (!ctx.coordinator) return;  // looking for a lost coordinator
    heartbeat_msg h;
    h.name = ctx.name;
    h.incarnation = ctx.incarnation;
    h.epoch = has_engine() ? epoch : 0;
    h.steps = progress->steps.load(std::memory_order_relaxed);
    h.phase = progress->phase.load(std::memory_order_relaxed);
    h.phase_ms = (now_ns() - progress->phase_since_ns.load(std::memory_order_relaxed)) / 1000000;
    h.admitted.swap(acks);
    if (reports_sent && attention) h.reports = reports_sent->load(std::memory_order_acquire);
    if (auto plan = ctx.site ? ctx.site->plan() : nullptr)
      for (std::size_t i = 0; i < plan->rules().size(); ++i) h.fired.push_back(plan->fired(i));
    link->send(std::move(h));
  }

  caf::result<ready_atom, std::uint32_t> on_start_epoch(start_epoch_msg& m) {
    if (link->blocked_incoming()) return caf::make_error(caf::sec::request_timeout);
    // A new epoch starts from a fresh engine (the coordinator stopped the old one first; joining
    // here is immediate). Attention: requests come back through admissions carrying the tokens
    // generated so far. FFN: the new placement may hand this worker more units.
    if (has_engine()) {
      if (attention) attention->request_stop();
      if (ffn) ffn->request_stop();
      reset_engines();
    }
    figures->failed.store(false);
    figures->running.store(0);
    admitted.clear();
    epoch = m.epoch;
    last_epoch = std::max(last_epoch, epoch);
    auto made = is_attention() ? start_attention(m) : start_ffn(m);
    if (!made) {
      state = worker_state::failed;
      return to_caf_error(made.err());
    }
    state = worker_state::ready;
    return {ready_atom::value, epoch};
  }

  dataplane::failure_fn failure_reporter() {
    auto l = link;
    auto fig = figures;
    const std::string name = ctx.name;
    const auto ep = epoch;
    auto names = rank_names();
    return [l, fig, name, ep, names](const dataplane::engine_fault& f) {
      if (f.fatal) fig->failed.store(true);
      worker_failed_msg out{ep, name, static_cast<std::uint8_t>(f.what.code()), f.what.message(), {}, f.fatal};
      for (auto r : f.suspects)
        if (r < names.size() && !names[r].empty()) out.suspects.push_back(names[r]);
      l->send(std::move(out));
    };
  }

  /// Worker names by data-plane rank.
  std::vector<std::string> rank_names() const {
    std::vector<std::string> names;
    auto put = [&](dataplane::worker_role role, int i, const std::string& n) {
      const auto r = ctx.spec.rank_of(role, i);
      if (names.size() <= r) names.resize(r + 1u);
      names[r] = n;
    };
    for (std::size_t i = 0; i < ctx.spec.attention_workers.size(); ++i)
      put(dataplane::worker_role::attention, static_cast<int>(i), ctx.spec.attention_workers[i].name);
    for (std::size_t i = 0; i < ctx.spec.ffn_workers.size(); ++i)
      put(dataplane::worker_role::ffn, static_cast<int>(i), ctx.spec.ffn_workers[i].name);
    return names;
  }

  dataplane::data_plane_options plane_options() const {
    dataplane::data_plane_options o = ctx.spec.plane;
    o.epoch = epoch;
    o.progress = progress;
    o.faults = ctx.site;
    return o;
  }

  expected<void> start_attention(start_epoch_msg& m) {
    auto peers = connect_all(*ctx.transport, m.ffn_addresses, "FFN worker", peers_known);
    if (!peers) return peers.err();
    if (!weights) {
      auto loaded = engine::model_weights::load(ctx.spec.model_path, engine::weight_selection::attention_side());
      if (!loaded) return fail(loaded.err().code(), "worker '", ctx.name, "': ", loaded.err().message());
      weights = *loaded;
    }
    const auto& spec = ctx.spec.attention_workers[static_cast<std::size_t>(ctx.index)];
    dataplane::attention_engine_options o;
    o.plane = plane_options();
    o.block_size = spec.block_size;
    o.num_blocks = spec.kv_blocks;
    o.max_running = spec.max_batch;
    auto l = link;
    auto fig = figures;
    const auto index = static_cast<std::int32_t>(ctx.index);
    const auto ep = epoch;
    auto seq = std::make_shared<std::uint64_t>(0);
    reports_sent = std::make_shared<std::atomic<std::uint64_t>>(0);
    auto sent = reports_sent;
    auto on_report = [l, fig, index, ep, seq, sent](dataplane::step_report&& r) {
      fig->running.store(r.running, std::memory_order_relaxed);
      worker_report_msg out;
      out.epoch = ep;
      out.index = index;
      out.seq = ++*seq;
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
      l->send(std::move(out));
      sent->store(*seq, std::memory_order_release);  // after the send: a heartbeat never counts a report not yet sent
    };
    auto created = dataplane::attention_engine::create(weights, o, *ctx.transport, std::move(*peers),
                                                       std::move(on_report), failure_reporter());
    if (!created) return created.err();
    attention = std::move(*created);
    if (auto started = attention->start(); !started) {
      attention.reset();
      return started.err();
    }
    return {};
  }

  expected<void> start_ffn(start_epoch_msg& m) {
    const auto position = std::find(m.ffn_names.begin(), m.ffn_names.end(), ctx.name);
    if (position == m.ffn_names.end() || m.ffn_units.size() != m.ffn_names.size())
      return fail(errc::internal, "start_epoch ", m.epoch, " has no units for FFN worker '", ctx.name, "'");
    if (!m.ffn_slices.empty() && m.ffn_slices.size() != m.ffn_names.size())
      return fail(errc::internal, "start_epoch ", m.epoch, " has slices for ", m.ffn_slices.size(),
                  " FFN workers and units for ", m.ffn_names.size());
    const auto f = static_cast<std::size_t>(position - m.ffn_names.begin());
    dataplane::ffn_assignment assignment{m.ffn_units[f], {}};
    if (!m.ffn_slices.empty())
      for (const auto& sl : m.ffn_slices[f]) assignment.shared_slices.push_back({sl.first, sl.count});
    auto peers = connect_all(*ctx.transport, m.attention_addresses, "attention worker", peers_known);
    if (!peers) return peers.err();
    // Weights are loaded again only when they lack something of the new assignment. The
    // selection holds exactly this worker's routed experts and the shared/dense units of the
    // layers it owns whole or in part, nothing of other layers.
    engine::weight_selection selection = dataplane::ffn_weight_selection(assignment);
    const std::vector<bool> shared = selection.shared_layers.value_or(std::vector<bool>{});
    if (!weights || assignment.units != loaded_units || shared != loaded_shared) {
      auto loaded = engine::model_weights::load(ctx.spec.model_path, selection);
      if (!loaded) return fail(loaded.err().code(), "worker '", ctx.name, "': ", loaded.err().message());
      weights = *loaded;
      loaded_units = assignment.units;
      loaded_shared = shared;
    }
    auto created = dataplane::ffn_engine::create(weights, plane_options(), std::move(assignment), *ctx.transport,
                                                 std::move(*peers), [](dataplane::step_report&&) {},
                                                 failure_reporter());
    if (!created) return created.err();
    ffn = std::move(*created);
    if (auto started = ffn->start(); !started) {
      ffn.reset();
      return started.err();
    }
    return {};
  }

  void on_admit(admit_msg& m) {
    if (link->blocked_incoming()) return;
    if (m.epoch != epoch || !attention) return;
    // A repeat (the coordinator re-sends an admission no heartbeat acknowledged) is acknowledged
    // again, never run twice.
    acks.push_back(m.id);
    if (!admitted.insert(m.id).second) return;
    dataplane::admitted_request r;
    r.id = m.id;
    r.req = to_engine_request(m.req);
    r.generated = std::move(m.generated);
    if (auto ok = attention->admit(std::move(r)); !ok) {
      // The request ends here; the coordinator hears it like any other end.
      worker_report_msg out;
      out.epoch = epoch;
      out.index = static_cast<std::int32_t>(ctx.index);
      out.free_kv_blocks = attention->free_kv_blocks();
      finished_rec f;
      f.id = m.id;
      f.code = static_cast<std::uint8_t>(ok.err().code());
      f.message = ok.err().message();
      out.finished.push_back(std::move(f));
      link->send(std::move(out));
    }
  }

  void on_cancel(std::int64_t id) {
    if (link->blocked_incoming()) return;
    if (attention) attention->cancel(id);
  }

  caf::result<worker_status_msg> on_status() {
    if (link->blocked_incoming()) return caf::make_error(caf::sec::request_timeout);
    worker_status_msg s;
    s.name = ctx.name;
    s.role = to_string(ctx.role);
    s.state = static_cast<std::uint8_t>(figures->failed.load() ? worker_state::failed : state);
    s.device = device();
    s.running = figures->running.load(std::memory_order_relaxed);
    s.kv_total = kv_blocks();
    s.kv_used = attention ? kv_blocks() - attention->free_kv_blocks() : 0;
    s.steps = progress->steps.load(std::memory_order_relaxed);
    s.rejoins = rejoins;
    s.compute_seconds = static_cast<double>(progress->compute_ns.load(std::memory_order_relaxed)) * 1e-9;
    s.wait_seconds = static_cast<double>(progress->wait_ns.load(std::memory_order_relaxed)) * 1e-9;
    progress->layers(s.layer_compute_seconds, s.layer_wait_seconds);
    if (ctx.counters) {
      s.bytes_sent = ctx.counters->bytes_sent.load(std::memory_order_relaxed);
      s.bytes_received = ctx.counters->bytes_received.load(std::memory_order_relaxed);
      s.messages_sent = ctx.counters->messages_sent.load(std::memory_order_relaxed);
      s.messages_received = ctx.counters->messages_received.load(std::memory_order_relaxed);
    }
    if (auto plan = ctx.site ? ctx.site->plan() : nullptr)
      for (std::size_t i = 0; i < plan->rules().size(); ++i) s.fired.push_back(plan->fired(i));
    return s;
  }

  /// Asks the engine to stop and answers once its thread left (polling, so that the actor keeps
  /// answering heartbeats and status meanwhile: an engine in a long kernel or a hang may take a
  /// while, and the coordinator decides what that means).
  caf::result<bool> on_stop_engine() {
    if (link->blocked_incoming()) return caf::make_error(caf::sec::request_timeout);
    if (!has_engine()) {
      if (state != worker_state::failed) state = worker_state::stopped;
      return true;
    }
    if (attention) attention->request_stop();
    if (ffn) ffn->request_stop();
    stop_waiters.push_back(self->make_response_promise());
    if (stop_waiters.size() == 1) self->delayed_send(self, timeouts::stop_poll, poll_stop_atom::value);
    return stop_waiters.back();
  }

  void on_poll_stop() {
    if (!engine_finished()) {
      self->delayed_send(self, timeouts::stop_poll, poll_stop_atom::value);
      return;
    }
    reset_engines();  // releases its transport operations before another epoch's engine posts any
    if (state != worker_state::failed) state = worker_state::stopped;
    for (auto& rp : stop_waiters) rp.deliver(true);
    stop_waiters.clear();
    if (rejoin_after_stop) {
      rejoin_after_stop = false;
      rejoin();
    }
  }

  /// The coordinator declared this worker failed (it was paused, partitioned or hung) and moved
  /// on without it: drop the engine and its state, and join again as a new member.
  void on_fenced(std::uint64_t fenced_incarnation) {
    if (link->blocked_incoming()) return;
    // A fence names the life it ends: one for an older life, or a repeat while the engine
    // stops, changes nothing.
    // A fence while this life's registration is on its way answers a heartbeat that overtook it.
    if (fenced_incarnation != ctx.incarnation || rejoin_after_stop || registering) return;
    if (has_engine()) {
      if (attention) attention->request_stop();
      if (ffn) ffn->request_stop();
      rejoin_after_stop = true;
      if (stop_waiters.empty()) self->delayed_send(self, timeouts::stop_poll, poll_stop_atom::value);
      return;
    }
    rejoin();
  }

  void rejoin() {
    ++rejoins;
    register_new_life();
  }

  /// Registers again as a new life of this worker (no engine, nothing admitted).
  void register_new_life() {
    ++ctx.incarnation;
    epoch = 0;
    admitted.clear();
    acks.clear();
    figures->failed.store(false);
    figures->running.store(0);
    register_now();
  }

  caf::result<bool> on_arm(fault_plan_msg& m) {
    std::vector<faults::fault_rule> rules;
    for (const auto& text : m.rules) {
      auto r = faults::parse_rule(text);
      if (!r) return to_caf_error(r.err());
      rules.push_back(std::move(*r));
    }
    if (ctx.site) ctx.site->arm(rules.empty() ? nullptr : std::make_shared<faults::fault_plan>(std::move(rules), m.seed));
    return true;
  }

  worker_actor* self;
  worker_context ctx;
  std::shared_ptr<control_link> link;
  std::unique_ptr<dataplane::attention_engine> attention;
  std::unique_ptr<dataplane::ffn_engine> ffn;
  std::shared_ptr<const engine::model_weights> weights;  ///< what this worker owns, loaded once per assignment
  std::vector<std::vector<std::int32_t>> loaded_units;    ///< FFN: the units of `weights`
  std::vector<bool> loaded_shared;                        ///< FFN, per layer: its dense/shared unit is loaded
  peer_table peers_known;
  std::shared_ptr<dataplane::engine_progress> progress = std::make_shared<dataplane::engine_progress>();
  std::shared_ptr<live_figures> figures = std::make_shared<live_figures>();
  std::set<std::int64_t> admitted;  ///< requests admitted in this epoch
  std::vector<std::int64_t> acks;   ///< admissions to acknowledge with the next heartbeat
  std::shared_ptr<std::atomic<std::uint64_t>> reports_sent;  ///< by this epoch's engine
  std::vector<caf::response_promise> stop_waiters;
  bool rejoin_after_stop = false;
  bool registering = false;  ///< this life's registration awaits its answer
  worker_state state = worker_state::starting;
  std::uint32_t epoch = 0;
  std::uint32_t last_epoch = 0;  ///< the highest epoch it ran, under any coordinator
  std::uint32_t rejoins = 0;
  std::chrono::steady_clock::time_point lost_coordinator_at{};
  bool looking = false;  ///< looking for a coordinator since lost_coordinator_at
};

caf::behavior worker_behavior(worker_actor* self, worker_context ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  if (s.ctx.on_exit) self->attach_functor([f = s.ctx.on_exit](const caf::error& reason) { f(reason); });
  s.start();
  return {
      [&s](start_epoch_msg& m) { return s.on_start_epoch(m); },
      [&s](admit_msg& m) { s.on_admit(m); },
      [&s](cancel_atom, std::int64_t id) { s.on_cancel(id); },
      [&s](status_atom) { return s.on_status(); },
      [&s](stop_engine_atom) { return s.on_stop_engine(); },
      [&s](poll_stop_atom) { s.on_poll_stop(); },
      [&s](tick_atom) { s.on_tick(); },
      [&s](fenced_atom, std::uint64_t incarnation) { s.on_fenced(incarnation); },
      [&s](arm_faults_atom, fault_plan_msg& m) { return s.on_arm(m); },
      [&s](reconnect_atom) { s.on_reconnect(); },
  };
}

}  // namespace

caf::actor spawn_worker_actor(caf::actor_system& sys, worker_context ctx) {
  return sys.spawn<caf::detached>(worker_behavior, std::move(ctx));
}

}  // namespace afd::actors::detail
