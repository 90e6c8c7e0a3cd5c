#include "actors/coordinator.hpp"

#include <unistd.h>

#include <cstdio>

#include <caf/io/all.hpp>

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "actors/messages.hpp"
#include "actors/timeouts.hpp"
#include "runtime/faults/faults.hpp"
#include "runtime/dataplane/data_plane.hpp"

namespace afd::actors {

namespace {

using steady = std::chrono::steady_clock;

/// A worker as the coordinator sees it.
struct worker_entry {
  dataplane::worker_role role = dataplane::worker_role::attention;
  int index = 0;
  std::string name;
  std::string device;
  caf::actor handle;
  std::vector<std::uint8_t> address;
  worker_state state = worker_state::starting;
  bool registered = false;
  bool ready = false;
  std::uint64_t incarnation = 0;  ///< the life registered now
  std::uint32_t rejoins = 0;      ///< lives after the first
  // Liveness and progress, from heartbeats.
  steady::time_point last_heartbeat{};
  steady::time_point last_progress{};  ///< when `steps` last grew
  std::uint64_t steps = 0;
  std::uint8_t phase = 0;
  std::int64_t phase_ms = 0;
  bool slow = false;
  steady::time_point slow_since{};
  std::vector<std::uint64_t> fired;  ///< this life's fault firings (heartbeats)
  std::uint64_t next_report = 1;     ///< attention: the report sequence number expected next
  std::optional<steady::time_point> report_missing_since;  ///< heartbeats count a report not received
  // Attention workers: load, as piggy-backed on their step reports.
  std::int64_t kv_total = 0;
  std::int64_t reported_free = 0;
  std::int64_t reserved_since_report = 0;  ///< blocks of requests admitted after the last report
  std::int64_t assigned = 0;               ///< requests admitted and not finished
  std::int64_t max_batch = 0;
  std::int64_t block_size = 16;
};

/// A request the coordinator is responsible for until it ends.
struct request_entry {
  std::int64_t id = 0;
  caf::actor client;
  request_msg req;
  std::vector<std::int32_t> generated;  ///< kept so that a lost worker's requests can be rebuilt
  int worker = -1;                      ///< attention worker index; -1 while queued
  steady::time_point accepted = steady::now();
  double queue_seconds = -1;            ///< accepted until first admitted; -1 until then
  std::uint32_t recoveries = 0;         ///< times a recovery moved it
  steady::time_point admitted_at{};     ///< last admission message sent
  bool acknowledged = false;            ///< the worker acknowledged this admission

  /// Fills what the coordinator knows of the request into its end record.
  void describe(finished_rec& f) const {
    f.prompt_tokens = static_cast<std::int64_t>(req.prompt.size());
    f.queue_seconds = std::max(queue_seconds, 0.0);
    f.recoveries = recoveries;
  }
};

class coordinator_state;
using coordinator_actor = caf::stateful_actor<coordinator_state>;

/// The coordinator's state and logic; the behaviour below only forwards to it.
///
/// Failure handling (actors/README.md, "Failure model"): a worker is declared failed when its
/// actor or process is lost (monitor), when its heartbeats stop (paused, partitioned), when its
/// engine computes without progress for too long (hung), or when it does not do what an epoch
/// change asks in time. A witness's report about a peer is checked against that peer's
/// heartbeats; the witness is never blamed. Declared failed, a worker is fenced (a new epoch
/// without it; its messages of older epochs are dropped everywhere) and told so when it is heard
/// from again; it rejoins as a new member. A data plane that stalls with every worker alive
/// (a lost message) is retried: a new epoch with the same members.
class coordinator_state {
 public:
  explicit coordinator_state(coordinator_actor* self) : self_(self) {}

  void init(dataplane::cluster_spec spec, bool standby) {
    standby_ = standby;
    spec_ = std::move(spec);
    if (spec_.limits.max_context <= 0) spec_.limits.max_context = spec_.model.max_position_embedding;
    for (std::size_t i = 0; i < spec_.attention_workers.size(); ++i) {
      const auto& a = spec_.attention_workers[i];
      worker_entry w;
      w.role = dataplane::worker_role::attention;
      w.index = static_cast<int>(i);
      w.name = a.name;
      w.device = a.device;
      w.kv_total = a.kv_blocks;
      w.reported_free = a.kv_blocks;
      w.max_batch = a.max_batch;
      w.block_size = a.block_size;
      attention_.push_back(std::move(w));
    }
    for (std::size_t i = 0; i < spec_.ffn_workers.size(); ++i) {
      worker_entry w;
      w.role = dataplane::worker_role::ffn;
      w.index = static_cast<int>(i);
      w.name = spec_.ffn_workers[i].name;
      w.device = spec_.ffn_workers[i].device;
      ffn_.push_back(std::move(w));
    }
    placement_ = spec_.placement;
    self_->set_down_handler([this](caf::down_msg& m) { on_down(m); });
    self_->delayed_send(self_, timeouts::liveness_check, tick_atom::value);
  }

  /// A standby serves nothing: workers, clients and launchers go on to the active coordinator.
  afd::error standby_refusal() const {
    return fail(errc::unavailable, "this coordinator of cluster '", spec_.name, "' is a standby; the active one serves");
  }

  /// (active, term): a standby's term is the highest it has been told of (role_atom + term from its
  /// process), so that a coordinator promoted later picks a higher one even when it sees no active
  /// coordinator.
  std::tuple<bool, std::uint64_t> on_role() const { return {!standby_, term_}; }
  void on_seen_term(std::uint64_t term) {
    if (standby_ && term > term_) term_ = term;
  }

  /// Becomes the active coordinator with `term` (its process won the succession).
  void on_promote(std::uint64_t term) {
    if (!standby_) return;
    standby_ = false;
    term_ = term;
    last_member_at_ = steady::now();
    event("promoted", "", "term " + std::to_string(term));
  }

  caf::result<std::uint32_t> on_register(register_worker_msg& m) {
    if (standby_) return to_caf_error(standby_refusal());
    if (failure_) return to_caf_error(fail(errc::unavailable, "cluster failed: ", failure_->message()));
    if (stopping_) return to_caf_error(fail(errc::unavailable, "cluster is shutting down"));
    worker_entry* w = find(m.name);
    if (w == nullptr)
      return to_caf_error(fail(errc::invalid_argument, "worker '", m.name, "' is not in the topology of cluster '",
                               spec_.name, "'"));
    if (static_cast<std::uint8_t>(w->role) != m.role)
      return to_caf_error(fail(errc::invalid_argument, "worker '", m.name, "' registered as ",
                               to_string(static_cast<dataplane::worker_role>(m.role)), " but the topology says ",
                               to_string(w->role)));
    if (w->registered && w->incarnation == m.incarnation)
      return to_caf_error(fail(errc::invalid_argument, "worker '", m.name, "' is already registered"));
    auto sender = caf::actor_cast<caf::actor>(self_->current_sender());
    // Two live processes under one name: the second is refused. A new life of a member whose
    // heartbeats already stopped (a restart faster than detection) replaces it.
    if (member(*w) && w->handle && steady::now() - w->last_heartbeat < timeouts::heartbeat_timeout)
      return to_caf_error(fail(errc::invalid_argument, "worker '", m.name, "' is already registered and alive"));
    if (member(*w)) declare_failed(*w, "replaced by a new incarnation that registered");
    // Workers that ran under a lost coordinator: the epochs continue above theirs.
    if (!started_ && m.last_epoch >= epoch_) epoch_ = m.last_epoch + 1;
    const bool rejoining = w->registered;
    const bool new_actor = w->handle != sender;
    if (w->handle && new_actor) self_->demonitor(w->handle);
    w->registered = true;
    w->handle = sender;
    w->address = std::move(m.address);
    w->incarnation = m.incarnation;
    w->state = worker_state::starting;
    w->ready = false;
    w->slow = false;
    // A new actor brings a new fault plan (counts from zero): keep the old life's firings. A
    // fenced actor that rejoins keeps its plan and its counts.
    if (new_actor) {
      for (std::size_t i = 0; i < w->fired.size() && i < fired_before_.size(); ++i) fired_before_[i] += w->fired[i];
      w->fired.clear();
    }
    w->last_heartbeat = w->last_progress = steady::now();
    if (!m.device.empty()) w->device = m.device;
    self_->monitor(w->handle);
    if (rejoining) {
      ++w->rejoins;
      event("rejoined", w->name, "incarnation " + std::to_string(m.incarnation));
    }
    if (!started_) {
      if (all_of([](const worker_entry& x) { return x.registered; })) {
        started_ = true;
        start_epoch();
      }
    } else {
      // Capacity returns: a new epoch with the placement of the topology for the members now.
      recover("worker '" + w->name + "' joined");
    }
    return epoch_;
  }

  caf::result<std::int64_t> on_submit(request_msg& m) {
    if (standby_) return to_caf_error(standby_refusal());
    if (failure_) return to_caf_error(fail(errc::unavailable, "cluster failed: ", failure_->message()));
    if (stopping_) return to_caf_error(fail(errc::unavailable, "cluster is shutting down"));
    // Before the first epoch the cluster cannot take requests. During a recovery (a new epoch
    // starting, or a role waiting for a member within recovery_wait) it queues them, bounded by
    // limits.queue, and admits them once the epoch is ready: a recovery costs clients time, not
    // refusals.
    // Gave up waiting for a lost role (until a member comes back): refused with the cause.
    if (!ready_ && gave_up_) return to_caf_error(gave_up_);
    if (!ready_ && !started_) {
      const auto n = count_if([](const worker_entry& x) { return x.ready; });
      return to_caf_error(fail(errc::unavailable, "cluster '", spec_.name, "' is not ready (", n, " of ",
                               attention_.size() + ffn_.size(), " workers ready)"));
    }
    if (auto e = validate(m)) return to_caf_error(e);
    // Requests wait for a worker only when none has room; the wait is bounded.
    if (pick_worker(m) < 0 && static_cast<std::int64_t>(queue_.size()) >= spec_.limits.queue)
      return to_caf_error(fail(errc::rejected, "admission queue full: ", queue_.size(),
                               " requests are waiting for a worker (limits.queue = ", spec_.limits.queue, ")"));
    request_entry r;
    r.id = next_id_++;
    r.client = caf::actor_cast<caf::actor>(self_->current_sender());
    r.generated = std::move(m.resume);  // a resumed request goes on from its tokens so far
    m.resume.clear();
    r.req = std::move(m);
    const auto id = r.id;
    requests_.emplace(id, std::move(r));
    queue_.push_back(id);
    admit_queued();
    return id;
  }

  caf::result<bool> on_cancel(std::int64_t id) {
    auto it = requests_.find(id);
    if (it == requests_.end())
      return to_caf_error(fail(errc::invalid_argument, "request ", id, " is unknown or already finished"));
    request_entry& r = it->second;
    if (r.worker < 0) {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
    } else {
      worker_entry& w = attention_[static_cast<std::size_t>(r.worker)];
      if (w.handle) self_->send(w.handle, cancel_atom::value, id);
      --w.assigned;
    }
    finished_rec done;
    done.id = id;
    done.code = static_cast<std::uint8_t>(errc::cancelled);
    done.message = "request " + std::to_string(id) + " was cancelled";
    self_->send(r.client, std::move(done));
    requests_.erase(it);
    admit_queued();
    return true;
  }

  void on_report(worker_report_msg& m) {
    if (m.epoch != epoch_ || failure_ || !ready_) return;  // a report of an old epoch, or during a change
    if (m.index < 0 || static_cast<std::size_t>(m.index) >= attention_.size()) return;
    worker_entry& w = attention_[static_cast<std::size_t>(m.index)];
    if (!member(w)) return;  // fenced
    if (m.seq != 0) {
      if (m.seq < w.next_report) return;  // a repeat
      if (m.seq > w.next_report) {
        // A report was lost with tokens the clients never saw: the epoch is retried, and the
        // engines regenerate from what was forwarded.
        retry_epoch("report " + std::to_string(w.next_report) + " of worker '" + w.name + "' was lost", {});
        return;
      }
      ++w.next_report;
    }
    w.reported_free = m.free_kv_blocks;
    w.reserved_since_report = 0;
    // Tokens go to each client in one message per report, in the order produced; each token must
    // be the next of its request (no repeat, no gap: a client sees every index exactly once).
    std::vector<std::pair<caf::actor, token_batch_msg>> batches;
    for (auto& t : m.tokens) {
      auto it = requests_.find(t.id);
      if (it == requests_.end()) continue;  // cancelled or failed meanwhile
      request_entry& r = it->second;
      if (r.worker != m.index) continue;
      r.acknowledged = true;
      const auto expected = static_cast<std::int64_t>(r.generated.size());
      if (t.index < expected) continue;
      if (t.index > expected) {
        retry_epoch("request " + std::to_string(t.id) + " skipped from token " + std::to_string(expected) + " to " +
                        std::to_string(t.index),
                    {});
        return;
      }
      r.generated.push_back(t.token);
      auto b = std::find_if(batches.begin(), batches.end(), [&](const auto& x) { return x.first == r.client; });
      if (b == batches.end()) {
        batches.emplace_back(r.client, token_batch_msg{});
        b = std::prev(batches.end());
      }
      b->second.tokens.push_back(t);
    }
    for (auto& [client, batch] : batches) self_->send(client, std::move(batch));
    for (auto& f : m.finished) {
      auto it = requests_.find(f.id);
      if (it == requests_.end() || it->second.worker != m.index) continue;
      request_entry& r = it->second;
      // The result carries every token; those the client has are exactly r.generated.
      if (f.code == 0 && f.tokens.size() != r.generated.size()) continue;  // its last tokens are in a lost report
      --attention_[static_cast<std::size_t>(r.worker)].assigned;
      r.describe(f);
      self_->send(r.client, std::move(f));
      requests_.erase(it);
      ++finished_count_;
    }
    admit_queued();
  }

  void on_heartbeat(heartbeat_msg& h) {
    worker_entry* w = find(h.name);
    if (w == nullptr) return;
    if (h.incarnation != w->incarnation) return;  // a life that was replaced: its actor is gone
    if (!member(*w)) {
      // Declared failed, then resumed or healed: tell it, so that it rejoins as a new member.
      if (w->handle) self_->send(w->handle, fenced_atom::value, h.incarnation);
      return;
    }
    const auto now = steady::now();
    w->last_heartbeat = now;
    if (h.steps != w->steps) {
      w->steps = h.steps;
      w->last_progress = now;
    }
    w->phase = h.phase;
    w->phase_ms = h.phase_ms;
    if (!h.fired.empty()) w->fired = std::move(h.fired);
    // A report the heartbeats count but that never came (lost, and no later one shows the gap).
    if (w->role == dataplane::worker_role::attention && ready_ && h.epoch == epoch_) {
      if (h.reports >= w->next_report) {
        if (!w->report_missing_since) {
          w->report_missing_since = now;
        } else if (now - *w->report_missing_since > timeouts::report_missing) {
          w->report_missing_since.reset();
          retry_epoch("report " + std::to_string(w->next_report) + " of worker '" + w->name + "' never arrived", {});
          return;
        }
      } else {
        w->report_missing_since.reset();
      }
    }
    for (auto id : h.admitted)
      if (auto it = requests_.find(id); it != requests_.end() && it->second.worker == w->index &&
                                        w->role == dataplane::worker_role::attention)
        it->second.acknowledged = true;
  }

  /// A witness's engine met trouble about `suspects`.
  void on_worker_failed(worker_failed_msg& m) {
    if (m.epoch != epoch_ || failure_ || stopping_) return;
    worker_entry* witness = find(m.name);
    if (witness == nullptr || !member(*witness)) return;
    const auto now = steady::now();
    bool suspect_progressing = false;
    std::string blamed;
    for (const auto& name : m.suspects) {
      worker_entry* s = find(name);
      if (s == nullptr || !member(*s) || s == witness) continue;
      if (auto why = failed_by_heartbeat(*s, now)) {
        declare_failed(*s, *why + " (reported by '" + m.name + "': " + m.message + ")");
        return;
      }
      // Alive and computing (not hung yet), or progressing: a straggler, not a failure.
      if (s->phase == dataplane::engine_progress::computing || now - s->last_progress < spec_.plane.step_deadline) {
        suspect_progressing = true;
        if (!s->slow) event("slow", s->name, "progressing, but '" + m.name + "' waited past the step deadline");
        s->slow = true;
        s->slow_since = now;
      }
      if (blamed.empty()) blamed = name;
    }
    if (m.fatal) {
      // The witness's engine stopped (a failed send, a rejected message): the epoch is over for
      // everyone; the same members try again.
      retry_epoch("worker '" + m.name + "': " + m.message, blamed);
      return;
    }
    if (suspect_progressing) return;  // a straggler: no failover
    // Everyone alive and nobody progressing: a message was lost; retry.
    const bool stalled = all_members_of([&](const worker_entry& x) { return now - x.last_progress >= spec_.plane.step_deadline; });
    if (stalled) retry_epoch("data plane stalled: " + m.message, blamed);
  }

  caf::response_promise on_status() {
    auto rp = self_->make_response_promise();
    auto result = std::make_shared<cluster_status_msg>();
    result->epoch = epoch_;
    result->vocab_size = spec_.model.vocab_size;
    result->ready = ready_;
    result->queued = static_cast<std::int64_t>(queue_.size());
    result->running = static_cast<std::int64_t>(requests_.size() - queue_.size());
    result->finished = finished_count_;
    result->term = term_;
    result->standby = standby_;
    result->pid = static_cast<std::int64_t>(::getpid());
    result->recoveries = recoveries_;
    result->events = events_;
    result->now_ms = ms_since_start();
    result->fault_rules = fault_rules_;
    result->fault_fired = fired_before_;
    result->fault_fired.resize(fault_rules_.size(), 0);
    std::vector<std::size_t> asked;
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list) {
        worker_status_msg s;
        s.name = w.name;
        s.role = to_string(w.role);
        s.state = static_cast<std::uint8_t>(w.state);
        s.device = w.device;
        s.running = w.role == dataplane::worker_role::attention ? w.assigned : 0;
        s.kv_total = w.kv_total;
        s.kv_used = w.kv_total - w.reported_free;
        s.slow = w.slow;
        s.steps = w.steps;
        s.rejoins = w.rejoins;
        s.fired = w.fired;
        for (std::size_t i = 0; i < w.fired.size() && i < result->fault_fired.size(); ++i)
          result->fault_fired[i] += w.fired[i];
        result->workers.push_back(s);
        if (w.handle && member(w)) asked.push_back(result->workers.size() - 1);
      }
    if (asked.empty()) {
      rp.deliver(*result);
      return rp;
    }
    // Live figures (KV use right after a cancel, traffic) come from the workers themselves, with
    // a deadline; the coordinator's view (state, slow, rejoins, firings) stands.
    auto pending = std::make_shared<std::size_t>(asked.size());
    auto finish = [rp, result, pending]() mutable {
      if (--*pending == 0) rp.deliver(*result);
    };
    for (auto slot : asked) {
      worker_entry* w = find(result->workers[slot].name);
      self_->request(w->handle, timeouts::worker_status, status_atom::value)
          .then(
              [result, slot, finish](worker_status_msg& s) mutable {
                auto& out = result->workers[slot];
                out.kv_used = s.kv_used;
                out.compute_seconds = s.compute_seconds;
                out.wait_seconds = s.wait_seconds;
                out.layer_compute_seconds = std::move(s.layer_compute_seconds);
                out.layer_wait_seconds = std::move(s.layer_wait_seconds);
                out.bytes_sent = s.bytes_sent;
                out.bytes_received = s.bytes_received;
                out.messages_sent = s.messages_sent;
                out.messages_received = s.messages_received;
                out.steps = std::max(out.steps, s.steps);
                finish();
              },
              [finish](caf::error&) mutable { finish(); });
    }
    return rp;
  }

  caf::result<bool> on_await_ready() {
    if (standby_) return to_caf_error(standby_refusal());
    if (failure_) return to_caf_error(*failure_);
    if (ready_) return true;
    ready_waiters_.push_back(self_->make_response_promise());
    return ready_waiters_.back();
  }

  /// Arms a fault plan at every member (rules checked first: one bad rule arms nothing).
  caf::result<bool> on_arm_faults(fault_plan_msg& m) {
    if (standby_) return to_caf_error(standby_refusal());
    for (const auto& text : m.rules) {
      auto r = faults::parse_rule(text);
      if (!r) return to_caf_error(r.err());
      if (auto ok = faults::check_rule(*r); !ok) return to_caf_error(ok.err());
    }
    // Firings of the previous plan are forgotten with it.
    fault_rules_ = m.rules;
    fired_before_.assign(m.rules.size(), 0);
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list) w.fired.clear();
    auto rp = self_->make_response_promise();
    std::vector<caf::actor> targets;
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (w.handle && member(w)) targets.push_back(w.handle);
    if (targets.empty()) {
      rp.deliver(true);
      return rp;
    }
    auto pending = std::make_shared<std::size_t>(targets.size());
    auto failed = std::make_shared<std::string>();
    for (auto& t : targets)
      self_->request(t, timeouts::worker_status, arm_faults_atom::value, m)
          .then(
              [rp, pending, failed](bool) mutable {
                if (--*pending == 0) failed->empty() ? rp.deliver(true) : rp.deliver(to_caf_error(fail(errc::unavailable, *failed)));
              },
              [rp, pending, failed](caf::error& e) mutable {
                *failed = "a worker did not arm the fault plan: " + from_caf_error(e).message();
                if (--*pending == 0) rp.deliver(to_caf_error(fail(errc::unavailable, *failed)));
              });
    return rp;
  }

  /// A process rule of the plan applied from outside (the launcher): counted with the others.
  void on_fault_fired(std::uint64_t rule) {
    if (rule < fired_before_.size()) ++fired_before_[rule];
  }

  bool on_shutdown() {
    stopping_ = true;
    fail_requests(fail(errc::unavailable, "the cluster was shut down"));
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list) {
        if (w.handle) {
          self_->demonitor(w.handle);
          self_->send_exit(w.handle, caf::exit_reason::user_shutdown);
        }
        w.state = worker_state::stopped;
      }
    for (auto& rp : ready_waiters_) rp.deliver(to_caf_error(fail(errc::unavailable, "the cluster was shut down")));
    ready_waiters_.clear();
    self_->quit();
    return true;
  }

  /// Every liveness_check: heartbeats, hung engines, unacknowledged admissions, the wait for a
  /// lost role to come back.
  void on_tick() {
    self_->delayed_send(self_, timeouts::liveness_check, tick_atom::value);
    if (term_ > 0 && !standby_ && !stopping_ && !failure_) {
      // A promoted coordinator (a cluster with standbys) without a single worker for start_timeout:
      // the cluster is gone (workers exit after their own failover grace). It stops in order, so
      // that no coordinator outlives its cluster (its process then stops the standbys too).
      const auto t = steady::now();
      if (count_if([](const worker_entry& w) { return member(w); }) > 0) {
        last_member_at_ = t;
      } else if (t - last_member_at_ > spec_.start_timeout) {
        event("cluster_gone", "", "no worker for " + std::to_string(spec_.start_timeout.count()) + " ms");
        std::fprintf(stderr, "coordinator of cluster '%s': no worker for %lld ms since it became active: stopping\n",
                     spec_.name.c_str(), static_cast<long long>(spec_.start_timeout.count()));
        on_shutdown();
        return;
      }
    }
    if (failure_ || stopping_ || !started_) return;
    const auto now = steady::now();
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list) {
        if (!member(w)) continue;
        if (auto why = failed_by_heartbeat(w, now)) {
          declare_failed(w, *why);
          return;  // the lists may have changed meaning (a new epoch): look again next tick
        }
        if (w.slow && now - w.slow_since > 5 * spec_.plane.step_deadline) w.slow = false;
      }
    if (ready_)
      for (auto& [id, r] : requests_) {
        if (r.worker < 0 || r.acknowledged || now - r.admitted_at < timeouts::admit_ack) continue;
        worker_entry& w = attention_[static_cast<std::size_t>(r.worker)];
        r.admitted_at = now;
        if (w.handle) self_->send(w.handle, admit_msg{epoch_, id, r.req, r.generated});
      }
    if (waiting_since_ && now - *waiting_since_ > spec_.recovery_wait) {
      event("gave_up", "", waiting_for_);
      waiting_since_.reset();
      gave_up_ = fail(errc::unavailable, waiting_for_, "; none came back within ", spec_.recovery_wait.count(), " ms");
      fail_requests(gave_up_);
    }
  }

 private:
  worker_entry* find(const std::string& name) {
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (w.name == name) return &w;
    return nullptr;
  }

  template <class Pred>
  bool all_of(Pred p) const {
    return std::all_of(attention_.begin(), attention_.end(), p) && std::all_of(ffn_.begin(), ffn_.end(), p);
  }

  template <class Pred>
  bool all_members_of(Pred p) const {
    return all_of([&](const worker_entry& w) { return !member(w) || p(w); });
  }

  template <class Pred>
  std::size_t count_if(Pred p) const {
    return static_cast<std::size_t>(std::count_if(attention_.begin(), attention_.end(), p) +
                                    std::count_if(ffn_.begin(), ffn_.end(), p));
  }

  /// Registered and not declared failed: part of the next epoch.
  static bool member(const worker_entry& w) { return w.registered && w.state != worker_state::failed; }

  std::int64_t ms_since_start() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started_at_).count();
  }

  void event(std::string kind, std::string worker, std::string detail) {
    events_.push_back(cluster_event_rec{ms_since_start(), std::move(kind), std::move(worker), epoch_, std::move(detail)});
    if (events_.size() > 1000) events_.erase(events_.begin(), events_.begin() + 500);
  }

  /// Why `w`'s heartbeats say it has failed, if they do: silent past heartbeat_timeout, or its
  /// engine computing without progress for hang_step_deadlines step deadlines.
  std::optional<std::string> failed_by_heartbeat(const worker_entry& w, steady::time_point now) const {
    const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(now - w.last_heartbeat);
    if (silent > timeouts::heartbeat_timeout)
      return "no heartbeat for " + std::to_string(silent.count()) + " ms (paused, hung process or cut off)";
    const auto hang = timeouts::hang_step_deadlines * spec_.plane.step_deadline;
    const auto computing =
        std::chrono::milliseconds(w.phase_ms) + std::chrono::duration_cast<std::chrono::milliseconds>(now - w.last_heartbeat);
    if (w.phase == dataplane::engine_progress::computing && computing > hang && now - w.last_progress > hang)
      return "engine computing for " + std::to_string(computing.count()) + " ms without finishing a step (hung)";
    return std::nullopt;
  }

  /// `w` has failed: fenced (the epoch moves on without it; it is told when heard from again)
  /// and the cluster recovers.
  void declare_failed(worker_entry& w, const std::string& why) {
    if (!member(w)) return;
    w.state = worker_state::failed;
    w.ready = false;
    event("failed", w.name, why);
    last_failure_ = std::string(to_string(w.role)) + " worker '" + w.name + "' failed: " + why;
    if (w.handle) self_->send(w.handle, fenced_atom::value, w.incarnation);
    if (started_) recover(last_failure_);
  }

  /// A new epoch with the members now: the topology's placement for the live FFN workers
  /// (engine::placement_for_live), every request in flight re-admitted with the tokens forwarded
  /// so far (the engines prefill prompt + generated; in deterministic mode the tokens that follow
  /// are those of an uninterrupted run). Without a member of a role, requests wait (up to
  /// recovery_wait) for one to join.
  void recover(const std::string& cause) {
    if (failure_ || stopping_) return;
    const bool attention_left = count_if([](const worker_entry& x) {
                                  return x.role == dataplane::worker_role::attention && member(x);
                                }) > 0;
    const bool ffn_left =
        count_if([](const worker_entry& x) { return x.role == dataplane::worker_role::ffn && member(x); }) > 0;
    if (!attention_left || !ffn_left) {
      waiting_for_ = std::string("no ") + (attention_left ? "FFN" : "attention") + " worker is left (" + cause + ")";
      if (!waiting_since_) {
        waiting_since_ = steady::now();
        event("waiting", "", waiting_for_);
      }
      start_recovery(/*start=*/false);
      return;
    }
    waiting_since_.reset();
    std::vector<bool> alive;
    for (const auto& f : ffn_) alive.push_back(member(f));
    auto next = engine::placement_for_live(spec_.placement, alive);
    if (!next) {
      fail_cluster(next.err());
      return;
    }
    placement_ = std::move(*next);
    start_recovery(/*start=*/true);
  }

  /// The data plane stopped or stalled with every member alive: the same members again, at a new
  /// epoch. Repeated within retry_window, the suspect (if any) is failed instead.
  void retry_epoch(const std::string& why, const std::string& suspect) {
    if (failure_ || stopping_ || !started_) return;
    const auto now = steady::now();
    while (!retries_.empty() && now - retries_.front() > timeouts::retry_window) retries_.pop_front();
    retries_.push_back(now);
    if (static_cast<int>(retries_.size()) > timeouts::retry_limit && !suspect.empty()) {
      if (worker_entry* s = find(suspect); s != nullptr && member(*s)) {
        retries_.clear();
        declare_failed(*s, "epochs failed " + std::to_string(timeouts::retry_limit + 1) + " times in a row: " + why);
        return;
      }
    }
    event("retry", suspect, why);
    recover(why);
  }

  std::int64_t blocks_needed(const request_msg& m, std::int64_t block_size) const {
    const auto tokens = static_cast<std::int64_t>(m.prompt.size()) + m.max_new_tokens;
    return (tokens + block_size - 1) / block_size;
  }

  /// The request checks every engine makes (engine::validate_request, against the cluster's
  /// limits), then the cluster's KV capacity: the request alone must fit the largest worker.
  afd::error validate(const request_msg& m) const {
    engine::request_limits limits;
    limits.vocab_size = spec_.model.vocab_size;
    limits.max_position_embedding = spec_.model.max_position_embedding;
    limits.max_new_tokens = spec_.limits.max_new_tokens;
    limits.max_context = spec_.limits.max_context;
    limits.max_new_tokens_field = "limits.max_new_tokens";
    limits.max_context_field = "limits.max_context";
    if (auto ok = engine::validate_request(limits, to_engine_request(m)); !ok) return ok.err();
    if (!m.resume.empty()) {
      if (static_cast<std::int64_t>(m.resume.size()) >= m.max_new_tokens)
        return fail(errc::invalid_argument, "resume: ", m.resume.size(), " tokens already produced, max_new_tokens is ",
                    m.max_new_tokens, " (a finished request cannot resume)");
      for (std::size_t i = 0; i < m.resume.size(); ++i)
        if (m.resume[i] < 0 || m.resume[i] >= spec_.model.vocab_size)
          return fail(errc::invalid_argument, "resume[", i, "] = ", m.resume[i], " is outside the vocabulary [0, ",
                      spec_.model.vocab_size, ")");
    }
    std::int64_t largest = 0, needed = 0;
    for (const auto& w : attention_)
      if (w.kv_total > largest) {
        largest = w.kv_total;
        needed = blocks_needed(m, w.block_size);
      }
    if (needed > largest)
      return fail(errc::rejected, "the request needs ", needed, " KV blocks; the largest attention worker has ",
                  largest);
    return {};
  }

  /// The ready attention worker with room in its batch and the most free KV blocks, or -1.
  int pick_worker(const request_msg& m) const {
    int best = -1;
    std::int64_t best_free = 0;
    for (const auto& w : attention_) {
      if (!w.ready || !member(w) || w.assigned >= w.max_batch) continue;
      const auto free = w.reported_free - w.reserved_since_report;
      if (free < blocks_needed(m, w.block_size)) continue;
      if (best < 0 || free > best_free ||
          (free == best_free && w.assigned < attention_[static_cast<std::size_t>(best)].assigned)) {
        best = w.index;
        best_free = free;
      }
    }
    return best;
  }

  void admit_queued() {
    while (ready_ && !queue_.empty()) {
      auto it = requests_.find(queue_.front());
      if (it == requests_.end()) {
        queue_.pop_front();
        continue;
      }
      if (finish_if_complete(it->second)) {
        queue_.pop_front();
        requests_.erase(it);
        ++finished_count_;
        continue;
      }
      const int w = pick_worker(it->second.req);
      if (w < 0) return;
      queue_.pop_front();
      worker_entry& worker = attention_[static_cast<std::size_t>(w)];
      request_entry& r = it->second;
      r.worker = w;
      r.acknowledged = false;
      r.admitted_at = steady::now();
      if (r.queue_seconds < 0) r.queue_seconds = std::chrono::duration<double>(steady::now() - r.accepted).count();
      ++worker.assigned;
      worker.reserved_since_report += blocks_needed(r.req, worker.block_size);
      self_->send(worker.handle, admit_msg{epoch_, it->first, r.req, r.generated});
    }
  }

  /// A request whose tokens were all forwarded before its worker's epoch ended (its end record
  /// was lost with the epoch): ends it from the tokens the coordinator kept.
  bool finish_if_complete(request_entry& r) {
    const auto& g = r.generated;
    if (g.empty()) return false;
    const bool stopped = std::find(r.req.stop_ids.begin(), r.req.stop_ids.end(), g.back()) != r.req.stop_ids.end();
    const bool full = static_cast<std::int64_t>(g.size()) >= r.req.max_new_tokens;
    if (!stopped && !full) return false;
    finished_rec done;
    done.id = r.id;
    done.tokens = g;
    done.reason = stopped ? "stop" : "length";
    r.describe(done);
    self_->send(r.client, std::move(done));
    return true;
  }

  void start_epoch() {
    start_epoch_msg m;
    m.epoch = epoch_;
    for (auto& w : attention_) {
      w.next_report = 1;
      w.report_missing_since.reset();
      if (member(w)) m.attention_addresses.push_back(w.address);
    }
    for (std::size_t f = 0; f < ffn_.size(); ++f)
      if (member(ffn_[f])) {
        const engine::ffn_assignment a = placement_.assignment_of(static_cast<int>(f));
        m.ffn_names.push_back(ffn_[f].name);
        m.ffn_addresses.push_back(ffn_[f].address);
        m.ffn_units.push_back(a.units);
        auto& slices = m.ffn_slices.emplace_back(a.units.size());
        for (std::size_t l = 0; l < a.shared_slices.size(); ++l)
          slices[l] = {a.shared_slices[l].first, a.shared_slices[l].count};
      }
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list) {
        if (!member(w)) continue;
        w.ready = false;
        const std::string name = w.name;
        const std::uint64_t incarnation = w.incarnation;
        const std::uint32_t epoch = epoch_;
        self_->request(w.handle, spec_.start_timeout, m)
            .then(
                [this, name](ready_atom, std::uint32_t answered) {
                  if (answered != epoch_ || failure_) return;
                  worker_entry* x = find(name);
                  if (!member(*x)) return;
                  x->ready = true;
                  x->state = worker_state::ready;
                  x->last_progress = steady::now();
                  if (all_members_of([](const worker_entry& y) { return y.ready; })) become_ready();
                },
                [this, name, epoch, incarnation](caf::error& e) {
                  if (epoch != epoch_) return;
                  worker_entry* x = find(name);
                  if (x == nullptr || x->incarnation != incarnation) return;
                  const afd::error err = from_caf_error(e);
                  // A worker that cannot start (a missing file, a bad setting) would fail the same
                  // way again: that ends the cluster. One that does not answer is failed and fenced.
                  if (err.code() != errc::timeout && err.code() != errc::unavailable) {
                    x->state = worker_state::failed;
                    fail_cluster(fail(errc::unavailable, "worker '", name, "' did not start epoch ", epoch, ": ",
                                      err.message()));
                    return;
                  }
                  declare_failed(*x, "did not start epoch " + std::to_string(epoch) + ": " + err.message());
                });
      }
  }

  /// epoch + 1; every request in flight goes back to the front of the queue (in submission
  /// order); every member stops its engine (an old engine's posted receives would otherwise take
  /// the new epoch's first messages); then, when `start`, the new epoch starts.
  void start_recovery(bool start) {
    ++epoch_;
    ++recoveries_;
    ready_ = false;
    for (auto& w : attention_) w.ready = false;
    for (auto& w : ffn_) w.ready = false;
    std::vector<std::int64_t> in_flight;
    for (auto& [id, r] : requests_)
      if (r.worker >= 0) {
        in_flight.push_back(id);
        r.worker = -1;
        ++r.recoveries;
      }
    queue_.insert(queue_.begin(), in_flight.begin(), in_flight.end());
    for (auto& w : attention_) {
      w.assigned = 0;
      w.reserved_since_report = 0;
      w.reported_free = w.kv_total;
    }
    stop_engines_then(start);
  }

  /// Every member stops its engine; one that does not within timeouts::stop_engine is failed.
  void stop_engines_then(bool start) {
    const std::uint32_t epoch = epoch_;
    auto pending = std::make_shared<std::size_t>(0);
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (member(w) && w.handle) ++*pending;
    if (*pending == 0) {
      if (start) start_epoch();
      return;
    }
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list) {
        if (!member(w) || !w.handle) continue;
        const std::string name = w.name;
        self_->request(w.handle, timeouts::stop_engine, stop_engine_atom::value)
            .then(
                [this, epoch, pending, start](bool) {
                  if (--*pending == 0 && epoch == epoch_ && !failure_ && start) start_epoch();
                },
                [this, epoch, name](caf::error& e) {
                  if (epoch != epoch_) return;
                  if (worker_entry* x = find(name))
                    declare_failed(*x, "did not stop its engine for epoch " + std::to_string(epoch) + ": " +
                                           from_caf_error(e).message());
                });
      }
  }

  void become_ready() {
    ready_ = true;
    gave_up_ = afd::error{};
    event("epoch_ready", "", std::to_string(count_if([](const worker_entry& w) { return member(w); })) + " members");
    for (auto& rp : ready_waiters_) rp.deliver(true);
    ready_waiters_.clear();
    admit_queued();
  }

  void fail_requests(const afd::error& e) {
    for (auto& [id, r] : requests_) {
      finished_rec done;
      done.id = id;
      done.code = static_cast<std::uint8_t>(e.code());
      done.message = "request " + std::to_string(id) + " failed: " + e.message();
      r.describe(done);
      self_->send(r.client, std::move(done));
    }
    requests_.clear();
    queue_.clear();
    for (auto& w : attention_) w.assigned = 0;
  }

  /// The cluster cannot go on (a worker that cannot start): every request it holds ends with `e`
  /// (nothing accepted is silently lost); the other workers stop their engines.
  void fail_cluster(const afd::error& e) {
    if (failure_ || stopping_) return;
    failure_ = e;
    ready_ = false;
    event("cluster_failed", "", e.message());
    fail_requests(e);
    for (auto& rp : ready_waiters_) rp.deliver(to_caf_error(e));
    ready_waiters_.clear();
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (w.handle && member(w))
          self_->request(w.handle, timeouts::stop_engine, stop_engine_atom::value).then([](bool) {}, [](caf::error&) {});
  }

  void on_down(const caf::down_msg& m) {
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (w.handle && w.handle.address() == m.source) {
          w.handle = nullptr;
          if (stopping_) return;
          if (!started_) {
            // Lost before the first epoch: it may register again (a restarted process).
            w.registered = false;
            event("failed", w.name, "lost before the cluster started (" + caf::to_string(m.reason) + ")");
            return;
          }
          declare_failed(w, "lost (" + caf::to_string(m.reason) + ")");
          return;
        }
  }

  coordinator_actor* self_;
  dataplane::cluster_spec spec_;
  std::uint32_t epoch_ = 1;
  bool ready_ = false;
  bool stopping_ = false;
  std::optional<afd::error> failure_;
  std::vector<worker_entry> attention_;
  std::vector<worker_entry> ffn_;
  std::map<std::int64_t, request_entry> requests_;
  std::deque<std::int64_t> queue_;
  std::int64_t next_id_ = 1;
  std::int64_t finished_count_ = 0;
  std::uint64_t recoveries_ = 0;
  std::vector<caf::response_promise> ready_waiters_;
  afd::error gave_up_;  ///< set when a lost role did not come back within recovery_wait; cleared when ready
  engine::placement placement_;  ///< this epoch's: the topology's for the live FFN workers
  bool started_ = false;         ///< the first epoch was started (recovery needs one)
  bool standby_ = false;         ///< a standby: refuses workers and requests until promoted
  std::uint64_t term_ = 0;       ///< the term it was promoted with
  steady::time_point last_member_at_{};  ///< promoted: when it last had a worker
  steady::time_point started_at_ = steady::now();
  std::vector<cluster_event_rec> events_;
  std::deque<steady::time_point> retries_;      ///< recent same-member retries
  std::optional<steady::time_point> waiting_since_;  ///< a role has no member since
  std::string waiting_for_;
  std::string last_failure_;
  std::vector<std::string> fault_rules_;        ///< the armed plan's rules
  std::vector<std::uint64_t> fired_before_;     ///< firings of lives that ended
};

caf::behavior coordinator_behavior(coordinator_actor* self, dataplane::cluster_spec spec, bool standby) {
  auto& s = self->state;
  s.init(std::move(spec), standby);
  return {
      [&s](register_worker_msg& m) { return s.on_register(m); },
      [&s](request_msg& m) { return s.on_submit(m); },
      [&s](cancel_atom, std::int64_t id) { return s.on_cancel(id); },
      [&s](worker_report_msg& m) { s.on_report(m); },
      [&s](heartbeat_msg& m) { s.on_heartbeat(m); },
      [&s](worker_failed_msg& m) { s.on_worker_failed(m); },
      [&s](status_atom) { return s.on_status(); },
      [&s](await_ready_atom) { return s.on_await_ready(); },
      [&s](arm_faults_atom, fault_plan_msg& m) { return s.on_arm_faults(m); },
      [&s](fault_fired_atom, std::uint64_t rule) { s.on_fault_fired(rule); },
      [&s](shutdown_atom) { return s.on_shutdown(); },
      [&s](tick_atom) { s.on_tick(); },
      [&s](role_atom) { return s.on_role(); },
      [&s](role_atom, std::uint64_t seen) { s.on_seen_term(seen); },
      [&s](promote_atom, std::uint64_t term) { s.on_promote(term); },
  };
}

}  // namespace

caf::actor spawn_coordinator(caf::actor_system& sys, dataplane::cluster_spec spec, bool standby) {
  return sys.spawn(coordinator_behavior, std::move(spec), standby);
}

expected<published_coordinator> start_coordinator(caf::actor_system& sys, dataplane::cluster_spec spec, std::uint16_t port,
                                                  const std::string& host) {
  auto handle = spawn_coordinator(sys, std::move(spec));
  auto bound = sys.middleman().publish(handle, port, host.empty() ? nullptr : host.c_str(), true);
  if (!bound) {
    caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
    return fail(errc::unavailable, "cannot publish the coordinator on port ", port, ": ", sys.render(bound.error()));
  }
  return published_coordinator{handle, *bound};
}

}  // namespace afd::actors
