#include "actors/coordinator.hpp"

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

namespace afd::actors {

namespace {

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
  std::chrono::steady_clock::time_point accepted = std::chrono::steady_clock::now();
  double queue_seconds = -1;            ///< accepted until first admitted; -1 until then
  std::uint32_t recoveries = 0;         ///< times a recovery moved it

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
class coordinator_state {
 public:
  explicit coordinator_state(coordinator_actor* self) : self_(self) {}

  void init(dataplane::cluster_spec spec) {
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
  }

  caf::result<std::uint32_t> on_register(register_worker_msg& m) {
    if (failure_) return to_caf_error(fail(errc::unavailable, "cluster failed: ", failure_->message()));
    worker_entry* w = find(m.name);
    if (w == nullptr)
      return to_caf_error(fail(errc::invalid_argument, "worker '", m.name, "' is not in the topology of cluster '",
                               spec_.name, "'"));
    if (static_cast<std::uint8_t>(w->role) != m.role)
      return to_caf_error(fail(errc::invalid_argument, "worker '", m.name, "' registered as ",
                               to_string(static_cast<dataplane::worker_role>(m.role)), " but the topology says ",
                               to_string(w->role)));
    if (w->registered)
      return to_caf_error(fail(errc::invalid_argument, "worker '", m.name, "' is already registered"));
    w->registered = true;
    w->handle = caf::actor_cast<caf::actor>(self_->current_sender());
    w->address = std::move(m.address);
    if (!m.device.empty()) w->device = m.device;
    self_->monitor(w->handle);
    if (all_of([](const worker_entry& x) { return x.registered; })) {
      started_ = true;
      start_epoch();
    }
    return epoch_;
  }

  caf::result<std::int64_t> on_submit(request_msg& m) {
    if (failure_) return to_caf_error(fail(errc::unavailable, "cluster failed: ", failure_->message()));
    if (stopping_) return to_caf_error(fail(errc::unavailable, "cluster is shutting down"));
    if (!ready_) {
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
      self_->send(w.handle, cancel_atom::value, id);
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
    if (m.epoch != epoch_ || failure_) return;  // a report of an old epoch, or after a failure
    if (m.index < 0 || static_cast<std::size_t>(m.index) >= attention_.size()) return;
    worker_entry& w = attention_[static_cast<std::size_t>(m.index)];
    w.reported_free = m.free_kv_blocks;
    w.reserved_since_report = 0;
    // Tokens go to each client in one message per report, in the order produced.
    std::vector<std::pair<caf::actor, token_batch_msg>> batches;
    for (auto& t : m.tokens) {
      auto it = requests_.find(t.id);
      if (it == requests_.end()) continue;  // cancelled or failed meanwhile
      it->second.generated.push_back(t.token);
      auto b = std::find_if(batches.begin(), batches.end(),
                            [&](const auto& x) { return x.first == it->second.client; });
      if (b == batches.end()) {
        batches.emplace_back(it->second.client, token_batch_msg{});
        b = std::prev(batches.end());
      }
      b->second.tokens.push_back(t);
    }
    for (auto& [client, batch] : batches) self_->send(client, std::move(batch));
    for (auto& f : m.finished) {
      auto it = requests_.find(f.id);
      if (it == requests_.end()) continue;
      if (it->second.worker >= 0) --attention_[static_cast<std::size_t>(it->second.worker)].assigned;
      it->second.describe(f);
      self_->send(it->second.client, std::move(f));
      requests_.erase(it);
      ++finished_count_;
    }
    admit_queued();
  }

  void on_worker_failed(worker_failed_msg& m) {
    if (m.epoch != epoch_ || failure_) return;
    // A worker whose peer died usually notices (transport error) before the monitor's down
    // message names the worker that died: wait a moment so that the error names the cause.
    if (reported_failures_.empty()) self_->delayed_send(self_, timeouts::failure_grace, confirm_failure_atom::value);
    reported_failures_.push_back(std::move(m));
  }

  void on_confirm_failure() {
    reported_failures_.erase(std::remove_if(reported_failures_.begin(), reported_failures_.end(),
                                            [this](const worker_failed_msg& x) { return x.epoch != epoch_; }),
                             reported_failures_.end());
    if (failure_ || reported_failures_.empty()) return;
    const auto& m = reported_failures_.front();
    if (worker_entry* w = find(m.name)) w->state = worker_state::failed;
    fail_cluster(fail(errc::unavailable, "worker '", m.name, "' failed: ", m.message));
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
    result->recoveries = recoveries_;
    std::vector<worker_entry*> asked;
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
        result->workers.push_back(s);
        if (w.handle && w.state != worker_state::failed) asked.push_back(&w);
      }
    if (asked.empty()) {
      rp.deliver(*result);
      return rp;
    }
    // Live figures (KV use right after a cancel) come from the workers themselves, with a deadline.
    auto pending = std::make_shared<std::size_t>(asked.size());
    auto finish = [rp, result, pending]() mutable {
      if (--*pending == 0) rp.deliver(*result);
    };
    for (auto* w : asked) {
      const std::size_t slot = static_cast<std::size_t>(w - (w->role == dataplane::worker_role::attention ? attention_.data()
                                                                                                : ffn_.data())) +
                               (w->role == dataplane::worker_role::attention ? 0 : attention_.size());
      const std::int64_t running = w->role == dataplane::worker_role::attention ? w->assigned : 0;
      self_->request(w->handle, timeouts::worker_status, status_atom::value)
          .then(
              [result, slot, running, finish](worker_status_msg& s) mutable {
                s.running = running;
                result->workers[slot] = std::move(s);
                finish();
              },
              [finish](caf::error&) mutable { finish(); });
    }
    return rp;
  }

  caf::result<bool> on_await_ready() {
    if (failure_) return to_caf_error(*failure_);
    if (ready_) return true;
    ready_waiters_.push_back(self_->make_response_promise());
    return ready_waiters_.back();
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
  std::size_t count_if(Pred p) const {
    return static_cast<std::size_t>(std::count_if(attention_.begin(), attention_.end(), p) +
                                    std::count_if(ffn_.begin(), ffn_.end(), p));
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
      if (!w.ready || w.assigned >= w.max_batch) continue;
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
      it->second.worker = w;
      if (it->second.queue_seconds < 0)
        it->second.queue_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - it->second.accepted).count();
      ++worker.assigned;
      worker.reserved_since_report += blocks_needed(it->second.req, worker.block_size);
      self_->send(worker.handle, admit_msg{epoch_, it->first, it->second.req, it->second.generated});
    }
  }

  static bool live(const worker_entry& w) { return w.state != worker_state::failed; }

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
    for (const auto& w : attention_)
      if (live(w)) m.attention_addresses.push_back(w.address);
    for (std::size_t f = 0; f < ffn_.size(); ++f)
      if (live(ffn_[f])) {
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
        if (!live(w)) continue;
        w.ready = false;
        const std::string name = w.name;
        const std::uint32_t epoch = epoch_;
        self_->request(w.handle, spec_.start_timeout, m)
            .then(
                [this, name](ready_atom, std::uint32_t answered) {
                  if (answered != epoch_ || failure_) return;
                  worker_entry* x = find(name);
                  x->ready = true;
                  x->state = worker_state::ready;
                  if (all_of([](const worker_entry& y) { return y.ready || !live(y); })) become_ready();
                },
                [this, name, epoch](caf::error& e) {
                  if (epoch != epoch_) return;
                  if (worker_entry* x = find(name)) x->state = worker_state::failed;
                  fail_cluster(fail(errc::unavailable, "worker '", name, "' did not start epoch ", epoch, ": ",
                                    from_caf_error(e).message()));
                });
      }
  }

  /// An FFN worker is gone and others survive: a new epoch whose placement is the topology's for
  /// the live workers (engine::placement_for_live: the lost units spread over the survivors, which
  /// load them), and every request in flight is re-admitted with the tokens generated so far (the
  /// engines prefill prompt + generated; in deterministic mode the tokens that follow are those of
  /// an uninterrupted run).
  void recover_from_ffn_loss() {
    std::vector<bool> alive;
    for (const auto& f : ffn_) alive.push_back(live(f));
    auto next = engine::placement_for_live(spec_.placement, alive);
    if (!next) {
      fail_cluster(next.err());
      return;
    }
    placement_ = std::move(*next);
    start_recovery();
  }

  /// Attention worker lost, others survive: a new epoch without it; its requests (and every other
  /// request in flight, whose engines restart) are re-admitted to the survivors, which rebuild
  /// their KV by prefilling prompt + tokens generated so far.
  void recover_from_attention_loss() { start_recovery(); }

  void start_recovery() {
    ++epoch_;
    ready_ = false;
    reported_failures_.clear();
    for (auto& w : attention_) w.ready = false;
    for (auto& w : ffn_) w.ready = false;
    // Every request in flight goes back to the front of the queue, in submission order.
    ++recoveries_;
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
    stop_engines_then_start_epoch();
  }

  /// Every live worker stops its engine (an old engine's posted receives would otherwise take the
  /// new epoch's first messages), then the new epoch starts.
  void stop_engines_then_start_epoch() {
    const std::uint32_t epoch = epoch_;
    auto pending = std::make_shared<std::size_t>(0);
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (live(w) && w.handle) ++*pending;
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list) {
        if (!live(w) || !w.handle) continue;
        const std::string name = w.name;
        self_->request(w.handle, spec_.start_timeout, stop_engine_atom::value)
            .then(
                [this, epoch, pending](bool) {
                  if (--*pending == 0 && epoch == epoch_ && !failure_) start_epoch();
                },
                [this, epoch, name](caf::error& e) {
                  if (epoch != epoch_) return;
                  fail_cluster(fail(errc::unavailable, "worker '", name, "' did not stop its engine for epoch ",
                                    epoch, ": ", from_caf_error(e).message()));
                });
      }
  }

  void become_ready() {
    ready_ = true;
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
      self_->send(r.client, std::move(done));
    }
    requests_.clear();
    queue_.clear();
    for (auto& w : attention_) w.assigned = 0;
  }

  /// Detection only in this version: the cluster stops serving, and every request it holds ends
  /// with `e` (nothing accepted is silently lost); the surviving workers stop their engines.
  void fail_cluster(const afd::error& e) {
    if (failure_ || stopping_) return;
    failure_ = e;
    ready_ = false;
    fail_requests(e);
    for (auto& rp : ready_waiters_) rp.deliver(to_caf_error(e));
    ready_waiters_.clear();
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (w.handle && w.state != worker_state::failed)
          self_->request(w.handle, timeouts::stop_engine, stop_engine_atom::value).then([](bool) {}, [](caf::error&) {});
  }

  void on_down(const caf::down_msg& m) {
    for (auto* list : {&attention_, &ffn_})
      for (auto& w : *list)
        if (w.handle && w.handle.address() == m.source) {
          w.state = worker_state::failed;
          w.handle = nullptr;
          w.ready = false;
          const dataplane::worker_role role = w.role;
          const bool survivors =
              count_if([role](const worker_entry& x) { return x.role == role && live(x); }) > 0;
          if (survivors && !failure_ && !stopping_ && started_) {
            if (role == dataplane::worker_role::ffn)
              recover_from_ffn_loss();
            else
              recover_from_attention_loss();
            return;
          }
          fail_cluster(fail(errc::unavailable, to_string(w.role), " worker '", w.name,
                            "' was lost (", caf::to_string(m.reason), "); the cluster stopped serving"));
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
  std::vector<worker_failed_msg> reported_failures_;  ///< engine failures waiting for a root cause
  engine::placement placement_;  ///< this epoch's: the topology's for the live FFN workers
  bool started_ = false;      ///< the first epoch was started (recovery needs one)
};

caf::behavior coordinator_behavior(coordinator_actor* self, dataplane::cluster_spec spec) {
  auto& s = self->state;
  s.init(std::move(spec));
  return {
      [&s](register_worker_msg& m) { return s.on_register(m); },
      [&s](request_msg& m) { return s.on_submit(m); },
      [&s](cancel_atom, std::int64_t id) { return s.on_cancel(id); },
      [&s](worker_report_msg& m) { s.on_report(m); },
      [&s](worker_failed_msg& m) { s.on_worker_failed(m); },
      [&s](status_atom) { return s.on_status(); },
      [&s](await_ready_atom) { return s.on_await_ready(); },
      [&s](shutdown_atom) { return s.on_shutdown(); },
      [&s](confirm_failure_atom) { s.on_confirm_failure(); },
  };
}

}  // namespace

caf::actor spawn_coordinator(caf::actor_system& sys, dataplane::cluster_spec spec) {
  return sys.spawn(coordinator_behavior, std::move(spec));
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
