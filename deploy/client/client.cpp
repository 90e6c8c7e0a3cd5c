// The client API over the cluster's actors. A receiver actor (one per client) submits on behalf of
// the caller, so the coordinator streams that request's tokens and its end to it; the receiver
// records them in a mutex-protected table the API threads wait on, and runs token callbacks.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <functional>
#include <algorithm>

#include "actors/local_cluster.hpp"
#include "actors/messages.hpp"
#include "actors/timeouts.hpp"
#include <afd/client.hpp>
#include "deploy/topology/cluster_spec_from_topology.hpp"
#include "deploy/client/embedded.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/succession.hpp"
#include "deploy/launch/tls.hpp"
#include "deploy/topology/topology.hpp"

namespace afd::client {

namespace {

using client_submit_atom = caf::atom_constant<caf::atom("csubmit")>;

/// What the API threads wait on; filled by the receiver actor.
class request_table {
 public:
  struct entry {
    actors::request_msg msg;  ///< as submitted: resubmitted (with its tokens so far) after a failover
    token_callback on_token;
    std::vector<token> tokens;
    std::size_t taken = 0;  ///< tokens handed out by next_token
    bool done = false;
    afd::error failure;     ///< set when the request ended with an error
    response result;
  };

  void expect_callback(std::uint64_t key, token_callback cb) {
    std::lock_guard lock(mutex_);
    callbacks_[key] = std::move(cb);
  }
  void drop_callback(std::uint64_t key) {
    std::lock_guard lock(mutex_);
    callbacks_.erase(key);
  }
  /// The coordinator accepted the request as `remote`: its tokens may arrive from now on. Returns
  /// the id the caller sees, this client's own (a coordinator that replaces a lost one numbers
  /// the resumed requests anew).
  request_id add(request_id remote, std::uint64_t key, const actors::request_msg& msg) {
    std::lock_guard lock(mutex_);
    const request_id id = next_id_++;
    entry& e = entries_[id];
    e.msg = msg;
    to_local_[remote] = id;
    to_remote_[id] = remote;
    if (auto it = callbacks_.find(key); it != callbacks_.end()) {
      e.on_token = std::move(it->second);
      callbacks_.erase(it);
    }
    return id;
  }

  /// The requests still pending, to resume at a new coordinator: (id, message with the tokens
  /// received so far as `resume`). Forgets the old coordinator's ids.
  std::vector<std::pair<request_id, actors::request_msg>> pending_for_resume() {
    std::lock_guard lock(mutex_);
    to_local_.clear();
    to_remote_.clear();
    std::vector<std::pair<request_id, actors::request_msg>> out;
    for (auto& [id, e] : entries_) {
      if (e.done) continue;
      actors::request_msg m = e.msg;
      m.resume.clear();
      for (const auto& t : e.tokens) m.resume.push_back(t.value);
      out.emplace_back(id, std::move(m));
    }
    return out;
  }

  /// Request `id` resumed at the new coordinator as `remote`.
  void remap(request_id id, request_id remote) {
    std::lock_guard lock(mutex_);
    to_local_[remote] = id;
    to_remote_[id] = remote;
  }

  /// The coordinator's id of request `id` (0 when it has none now: a failover is under way).
  request_id remote_id(request_id id) const {
    std::lock_guard lock(mutex_);
    auto it = to_remote_.find(id);
    return it == to_remote_.end() ? 0 : it->second;
  }

  /// A request all of whose tokens came before the coordinator was lost (its end record did
  /// not): it ends here with them.
  void finish_locally(request_id id, const char* reason) {
    {
      std::lock_guard lock(mutex_);
      auto it = entries_.find(id);
      if (it == entries_.end() || it->second.done) return;
      entry& e = it->second;
      e.done = true;
      e.result.id = id;
      for (const auto& t : e.tokens) e.result.tokens.push_back(t.value);
      e.result.finish_reason = reason;
      e.result.prompt_tokens = static_cast<std::int64_t>(e.msg.prompt.size());
      e.result.recoveries = 1;
    }
    cv_.notify_all();
  }

  void on_tokens(const actors::token_batch_msg& m) {
    for (const auto& t : m.tokens) {
      token tok{t.id, t.token, t.index, t.last};
      token_callback cb;
      {
        std::lock_guard lock(mutex_);
        auto local = to_local_.find(t.id);
        if (local == to_local_.end()) continue;
        tok.id = local->second;
        auto it = entries_.find(tok.id);
        if (it == entries_.end() || it->second.done) continue;
        // Once each, in order: a token the client already has (resent around a failover) is not
        // handed out again.
        if (tok.index != static_cast<std::int64_t>(it->second.tokens.size())) continue;
        it->second.tokens.push_back(tok);
        cb = it->second.on_token;
      }
      cv_.notify_all();
      if (cb) cb(tok);  // outside the lock: a callback may call back into the client
    }
  }

  void on_done(actors::finished_rec& f) {
    {
      std::lock_guard lock(mutex_);
      auto local = to_local_.find(f.id);
      if (local == to_local_.end()) return;
      f.id = local->second;
      auto it = entries_.find(f.id);
      if (it == entries_.end() || it->second.done) return;
      entry& e = it->second;
      e.done = true;
      if (f.code != 0) {
        e.failure = afd::error{static_cast<errc>(f.code), f.message};
      } else {
        e.result.id = f.id;
        e.result.tokens = std::move(f.tokens);
        e.result.finish_reason = std::move(f.reason);
        e.result.logits = std::move(f.logits);
        e.result.prompt_tokens = f.prompt_tokens;
        e.result.queue_seconds = f.queue_seconds;
        e.result.recoveries = f.recoveries;
      }
    }
    cv_.notify_all();
  }

  /// Ends one request locally with `e` (a confirmed cancel).
  void end(request_id id, afd::error e) {
    {
      std::lock_guard lock(mutex_);
      auto it = entries_.find(id);
      if (it == entries_.end() || it->second.done) return;
      it->second.done = true;
      it->second.failure = std::move(e);
    }
    cv_.notify_all();
  }

  /// Ends every request still pending with `e`; later calls fail with it too.
  void close(afd::error e) {
    {
      std::lock_guard lock(mutex_);
      if (closed_) return;
      closed_ = e;
      for (auto& [id, entry] : entries_)
        if (!entry.done) {
          entry.done = true;
          entry.failure = afd::error{e.code(), "request " + std::to_string(id) + ": " + e.message()};
        }
    }
    cv_.notify_all();
  }

  afd::error closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }

  /// Drops a finished request's entry: 0 unknown, 1 still pending (kept), 2 dropped.
  int forget(request_id id) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return 0;
    if (!it->second.done) return 1;
    entries_.erase(it);
    if (auto r = to_remote_.find(id); r != to_remote_.end()) {
      to_local_.erase(r->second);
      to_remote_.erase(r);
    }
    return 2;
  }

  /// 0: unknown; 1: pending; 2: done.
  int state(request_id id) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(id);
    return it == entries_.end() ? 0 : (it->second.done ? 2 : 1);
  }

  expected<token> next_token(request_id id, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return fail(errc::invalid_argument, "unknown request id ", id);
    entry& e = it->second;
    auto ready = [&] { return e.taken < e.tokens.size() || e.done; };
    if (!cv_.wait_for(lock, timeout, ready))
      return fail(errc::timeout, "no token of request ", id, " within ", timeout.count(), " ms");
    if (e.taken < e.tokens.size()) return e.tokens[e.taken++];
    if (e.failure) return e.failure;
    return fail(errc::out_of_range, "request ", id, " has no more tokens (", e.tokens.size(), " were produced)");
  }

  expected<response> wait(request_id id, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return fail(errc::invalid_argument, "unknown request id ", id);
    entry& e = it->second;
    if (!cv_.wait_for(lock, timeout, [&] { return e.done; }))
      return fail(errc::timeout, "request ", id, " did not finish within ", timeout.count(), " ms (it goes on)");
    if (e.failure) return e.failure;
    return e.result;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<request_id, entry> entries_;
  std::map<std::uint64_t, token_callback> callbacks_;
  std::map<request_id, request_id> to_local_;   ///< the coordinator's id -> the caller's
  std::map<request_id, request_id> to_remote_;  ///< the caller's id -> the coordinator's
  request_id next_id_ = 1;
  afd::error closed_;
};

/// The coordinator a client talks to now; replaced after a failover. Shared by the API threads,
/// the receiver actor and the failover thread.
struct coordinator_ref {
  mutable std::mutex mutex;
  caf::actor handle;
  caf::actor get() const {
    std::lock_guard lock(mutex);
    return handle;
  }
  void set(caf::actor a) {
    std::lock_guard lock(mutex);
    handle = std::move(a);
  }
};

using new_coordinator_atom = caf::atom_constant<caf::atom("newcoord")>;

/// Submits for the API, receives this client's tokens and request ends. When the coordinator is
/// lost and `on_lost` is set (a remote cluster whose coordinator can be replaced), the requests
/// stay pending: `on_lost` looks for the new coordinator, and new_coordinator_atom resumes every
/// pending request there with the tokens received so far.
/// Reports to the failover thread: the coordinator was lost (or a new one did not become ready),
/// or the requests were resumed at the new one.
struct failover_events {
  std::function<void()> lost;
  std::function<void()> resumed;
  explicit operator bool() const { return static_cast<bool>(lost); }
};

caf::behavior receiver_behavior(caf::event_based_actor* self, std::shared_ptr<coordinator_ref> coordinator,
                                std::shared_ptr<request_table> table, failover_events failover) {
  // The client may already be shut down when this actor starts (then there is nothing to watch).
  if (auto c = coordinator->get()) self->monitor(c);
  self->set_down_handler([coordinator, table, failover](caf::down_msg& m) {
    if (!coordinator->get() || m.source != coordinator->get().address()) return;
    if (failover) {
      coordinator->set(nullptr);
      failover.lost();
      return;
    }
    table->close(fail(errc::unavailable, "lost the cluster's coordinator (", caf::to_string(m.reason), ")"));
  });
  return {
      [self, coordinator, table](client_submit_atom, actors::request_msg& m, std::uint64_t key) {
        auto rp = self->make_response_promise();
        auto to = coordinator->get();
        if (!to) {
          table->drop_callback(key);
          rp.deliver(actors::to_caf_error(fail(errc::unavailable, "the cluster's coordinator is being replaced; retry")));
          return rp;
        }
        self->request(to, actors::timeouts::client_request, m)
            .then(
                [rp, table, key, m](std::int64_t remote) mutable { rp.deliver(table->add(remote, key, m)); },
                [rp, table, key](caf::error& e) mutable {
                  table->drop_callback(key);
                  rp.deliver(e);
                });
        return rp;
      },
      [self, failover](new_coordinator_atom, caf::actor next) {
        // Resumed once the new coordinator has its first epoch (every worker registered again);
        // one that does not answer is looked for again.
        self->request(next, actors::timeouts::coordinator_ready, actors::await_ready_atom::value)
            .then([self, next](bool) { self->send(self, new_coordinator_atom::value, next, true); },
                  [failover](caf::error&) { failover.lost(); });
      },
      [self, coordinator, table, failover](new_coordinator_atom, caf::actor next, bool) {
        coordinator->set(next);
        self->monitor(next);
        failover.resumed();
        for (auto& [id, m] : table->pending_for_resume()) {
          if (static_cast<std::int64_t>(m.resume.size()) >= m.max_new_tokens) {
            table->finish_locally(id, "length");
            continue;
          }
          if (!m.resume.empty() && std::find(m.stop_ids.begin(), m.stop_ids.end(), m.resume.back()) != m.stop_ids.end()) {
            table->finish_locally(id, "stop");
            continue;
          }
          self->request(next, actors::timeouts::client_request, m)
              .then([table, id = id](std::int64_t remote) { table->remap(id, remote); },
                    [table, id = id](caf::error& e) {
                      table->end(id, fail(errc::unavailable, "request ", id, " could not resume at the new coordinator: ",
                                          actors::from_caf_error(e).message()));
                    });
        }
      },
      [table](actors::token_batch_msg& m) { table->on_tokens(m); },
      [table](actors::finished_rec& f) { table->on_done(f); },
  };
}

actors::request_msg to_message(const request& r) {
  actors::request_msg m;
  m.prompt = r.prompt;
  m.max_new_tokens = r.max_new_tokens;
  m.temperature = r.sampling.temperature;
  m.top_k = r.sampling.top_k;
  m.top_p = r.sampling.top_p;
  m.seed = r.sampling.seed;
  m.stop_ids = r.stop_ids;
  m.logits_rows = r.logits_rows;
  return m;
}

/// A request to the coordinator from a scoped actor: the answer, or an afd::error. A timeout means
/// the cluster did not answer: unavailable.
template <class T>
expected<T> ask(caf::actor_system& sys, const caf::actor& to, std::chrono::milliseconds timeout, auto... xs) {
  if (!to) return fail(errc::unavailable, "the cluster's coordinator is being replaced; retry");
  caf::scoped_actor self{sys};
  std::optional<T> value;
  afd::error failure;
  self->request(to, timeout, xs...)
      .receive([&](T& v) { value = std::move(v); }, [&](caf::error& e) { failure = actors::from_caf_error(e); });
  if (value) return std::move(*value);
  if (failure.code() == errc::timeout)
    return fail(errc::unavailable, "the cluster did not answer within ", timeout.count(), " ms");
  return failure;
}

class cluster_impl final : public cluster {
 public:
  /// Finds the coordinator again after it was lost (blocking, bounded); empty: none.
  using reconnect_fn = std::function<expected<caf::actor>(caf::actor_system&)>;

  /// Embedded.
  explicit cluster_impl(std::unique_ptr<actors::local_cluster> local) : local_(std::move(local)) {
    coordinator_->set(local_->coordinator());
    receiver_ = system().spawn(receiver_behavior, coordinator_, table_, failover_events{});
  }
  /// Remote: when the coordinator is lost, `reconnect` is tried until a new one answers (within
  /// timeouts::coordinator_failover_grace) and every pending request resumes there.
  cluster_impl(std::unique_ptr<caf::actor_system_config> cfg, std::unique_ptr<caf::actor_system> sys,
               caf::actor coordinator, reconnect_fn reconnect)
      : config_(std::move(cfg)), system_(std::move(sys)), reconnect_(std::move(reconnect)) {
    coordinator_->set(std::move(coordinator));
    failover_events events;
    if (reconnect_) {
      failover_ = std::thread([this] { failover_loop(); });
      events.lost = [this] {
        std::lock_guard lock(failover_mutex_);
        lost_ = true;
        failover_cv_.notify_all();
      };
      events.resumed = [this] {
        std::lock_guard lock(failover_mutex_);
        resumed_ = true;
        failover_cv_.notify_all();
      };
    }
    receiver_ = system().spawn(receiver_behavior, coordinator_, table_, events);
  }
  ~cluster_impl() override { shutdown(); }

  expected<request_id> submit(request r, token_callback on_token) override {
    if (auto e = table_->closed()) return e;
    const std::uint64_t key = next_key_++;
    table_->expect_callback(key, std::move(on_token));
    auto id = ask<std::int64_t>(system(), receiver_, std::chrono::seconds(15), client_submit_atom::value,
                                to_message(r), key);
    if (!id) table_->drop_callback(key);
    return id;
  }

  expected<token> next_token(request_id id, std::chrono::milliseconds timeout) override {
    return table_->next_token(id, timeout);
  }

  expected<response> wait(request_id id, std::chrono::milliseconds timeout) override {
    return table_->wait(id, timeout);
  }

  expected<void> cancel(request_id id) override {
    const int st = table_->state(id);
    if (st == 0) return fail(errc::invalid_argument, "unknown request id ", id);
    if (st == 2) return fail(errc::invalid_argument, "request ", id, " has already finished");
    if (auto e = table_->closed()) return e;
    const request_id remote = table_->remote_id(id);
    if (remote == 0) return fail(errc::unavailable, "request ", id, " is moving to a new coordinator; retry");
    auto ok = ask<bool>(system(), current(), actors::timeouts::client_request, actors::cancel_atom::value, remote);
    if (!ok) return ok.err();
    table_->end(id, fail(errc::cancelled, "request ", id, " was cancelled"));
    return {};
  }

  expected<void> forget(request_id id) override {
    const int st = table_->forget(id);
    if (st == 0) return fail(errc::invalid_argument, "unknown request id ", id);
    if (st == 1) return fail(errc::invalid_argument, "request ", id, " is still running (cancel it first)");
    return {};
  }

  expected<cluster_status> status(std::chrono::milliseconds timeout) override {
    if (auto e = table_->closed()) return e;
    auto s = ask<actors::cluster_status_msg>(system(), current(), timeout, actors::status_atom::value);
    if (!s) return s.err();
    cluster_status out;
    out.epoch = s->epoch;
    out.vocab_size = s->vocab_size;
    out.ready = s->ready;
    out.queued = s->queued;
    out.running = s->running;
    out.finished = s->finished;
    out.recoveries = s->recoveries;
    for (auto& w : s->workers) {
      worker_status ws;
      ws.name = w.name;
      ws.role = w.role;
      ws.state = static_cast<worker_state>(w.state);
      ws.device = w.device;
      ws.running = w.running;
      ws.kv_blocks_used = w.kv_used;
      ws.kv_blocks_total = w.kv_total;
      ws.slow = w.slow;
      ws.steps = w.steps;
      ws.rejoins = w.rejoins;
      ws.compute_seconds = w.compute_seconds;
      ws.network_wait_seconds = w.wait_seconds;
      ws.layer_compute_seconds = w.layer_compute_seconds;
      ws.layer_wait_seconds = w.layer_wait_seconds;
      ws.bytes_sent = w.bytes_sent;
      ws.bytes_received = w.bytes_received;
      ws.messages_sent = w.messages_sent;
      ws.messages_received = w.messages_received;
      out.workers.push_back(std::move(ws));
    }
    for (std::size_t i = 0; i < s->fault_rules.size(); ++i)
      out.faults.push_back(fault_rule_status{s->fault_rules[i], i < s->fault_fired.size() ? s->fault_fired[i] : 0});
    for (auto& e : s->events) out.events.push_back(cluster_event{e.at_ms, e.kind, e.worker, e.epoch, e.detail});
    out.now_ms = s->now_ms;
    out.term = s->term;
    out.coordinator_pid = s->pid;
    return out;
  }

  expected<void> arm_faults(const std::vector<std::string>& rules, std::uint64_t seed) override {
    if (auto e = table_->closed()) return e;
    actors::fault_plan_msg m{rules, seed};
    auto ok = ask<bool>(system(), current(), actors::timeouts::client_request, actors::arm_faults_atom::value, m);
    if (!ok) return ok.err();
    return {};
  }

  void shutdown() override {
    std::lock_guard lock(shutdown_mutex_);
    if (down_) return;
    down_ = true;
    if (failover_.joinable()) {
      {
        std::lock_guard l(failover_mutex_);
        stopping_ = true;
        failover_cv_.notify_all();
      }
      failover_.join();
    }
    table_->close(fail(errc::unavailable, local_ ? "the cluster was shut down" : "disconnected from the cluster"));
    caf::anon_send_exit(receiver_, caf::exit_reason::user_shutdown);
    receiver_ = nullptr;
    coordinator_->set(nullptr);
    if (local_) {
      local_->stop();
      local_.reset();  // joins every actor and thread of the cluster
    } else {
      system_.reset();
      config_.reset();
    }
  }

  expected<void> stop_cluster() override {
    if (!local_) {
      if (auto e = table_->closed()) return e;
      auto ok = ask<bool>(system(), current(), actors::timeouts::client_request, actors::shutdown_atom::value);
      if (!ok) return ok.err();
    }
    shutdown();
    return {};
  }

  expected<void> kill(const std::string& name) {
    if (!local_) return fail(errc::unsupported, "kill_worker needs an embedded cluster");
    return local_->kill_worker(name);
  }

 private:
  caf::actor_system& system() { return local_ ? local_->system() : *system_; }

  /// The coordinator now: during a failover, a dead handle (asks fail with unavailable).
  caf::actor current() const {
    auto c = coordinator_->get();
    return c ? c : caf::actor{};
  }

  /// Waits for the coordinator's loss; then tries to reach the new one every coordinator_retry
  /// until the failover grace ends (then every pending request fails, naming why). Only a
  /// coordinator that answers as the active one is taken (possibly the lost one, back from a pause).
  void failover_loop() {
    for (;;) {
      {
        std::unique_lock lock(failover_mutex_);
        failover_cv_.wait(lock, [&] { return lost_ || stopping_; });
        if (stopping_) return;
        lost_ = false;
        resumed_ = false;
      }
      const auto give_up = std::chrono::steady_clock::now() + actors::timeouts::coordinator_failover_grace;
      afd::error last = fail(errc::unavailable, "no answer");
      bool done = false;
      while (!done && std::chrono::steady_clock::now() < give_up) {
        auto next = reconnect_(*system_);
        std::unique_lock lock(failover_mutex_);
        if (stopping_) return;
        // Only a coordinator that answered as the active one comes back (connect_active): a proxy
        // CAF still holds for the lost one cannot answer.
        if (next) {
          caf::anon_send(receiver_, new_coordinator_atom::value, *next);
          // Resumed, or lost again (it died, or did not become ready): then look again.
          failover_cv_.wait_until(lock, give_up, [&] { return resumed_ || lost_ || stopping_; });
          if (stopping_) return;
          if (resumed_) {
            resumed_ = false;
            done = true;
            break;
          }
          lost_ = false;
          continue;
        }
        if (!next) last = next.err();
        failover_cv_.wait_for(lock, actors::timeouts::coordinator_retry, [&] { return stopping_; });
      }
      if (!done)
        table_->close(fail(errc::unavailable, "lost the cluster's coordinator and none answered within ",
                           actors::timeouts::coordinator_failover_grace.count(), " ms: ", last.message()));
    }
  }

  std::unique_ptr<actors::local_cluster> local_;
  std::unique_ptr<caf::actor_system_config> config_;  // remote: the system keeps a reference to it
  std::unique_ptr<caf::actor_system> system_;
  std::shared_ptr<coordinator_ref> coordinator_ = std::make_shared<coordinator_ref>();
  caf::actor receiver_;
  reconnect_fn reconnect_;
  std::thread failover_;
  std::mutex failover_mutex_;
  std::condition_variable failover_cv_;
  bool lost_ = false;
  bool resumed_ = false;
  bool stopping_ = false;
  std::shared_ptr<request_table> table_ = std::make_shared<request_table>();
  std::atomic<std::uint64_t> next_key_{1};
  std::mutex shutdown_mutex_;
  bool down_ = false;
};

/// A TCP connect with a deadline: CAF's own connect has none, and an unreachable host would hold
/// the caller for the system's TCP timeout.
afd::error probe(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    return fail(errc::unavailable, "cannot resolve '", host, "': ", ::gai_strerror(rc));
  afd::error result = fail(errc::unavailable, "no address for '", host, "'");
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      const int n = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
      if (n == 0) {
        err = ETIMEDOUT;
      } else {
        socklen_t len = sizeof(err);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    ::close(fd);
    if (err == 0) {
      result = afd::error{};
      break;
    }
    result = fail(errc::unavailable, "cannot connect to the coordinator at ", host, ":", port, ": ",
                  err == ETIMEDOUT ? std::string("no answer within ") + std::to_string(timeout.count()) + " ms"
                                   : std::string(std::strerror(err)));
  }
  ::freeaddrinfo(found);
  return result;
}

}  // namespace

expected<std::unique_ptr<cluster>> embed_spec(dataplane::cluster_spec spec) {
  try {
    auto local = actors::local_cluster::start(std::move(spec));
    if (!local) return local.err();
    return std::unique_ptr<cluster>(new cluster_impl(std::move(*local)));
  } catch (const std::exception& e) {
    return fail(errc::internal, "embedded cluster: ", e.what());
  }
}

expected<void> kill_worker(cluster& c, const std::string& name) {
  auto* impl = dynamic_cast<cluster_impl*>(&c);
  if (impl == nullptr) return fail(errc::unsupported, "kill_worker needs a cluster made by afd::client");
  return impl->kill(name);
}

expected<std::unique_ptr<cluster>> cluster::embed(const std::string& topology_file, embed_options options) {
  auto t = topology::load_file(topology_file);
  if (!t) return t.err();
  if (!options.model_path.empty()) t->model.path = options.model_path;
  if (options.transport == "loopback")
    t->transport.kind = topology::transport_kind::loopback;
  else if (options.transport == "ucx")
    t->transport.kind = topology::transport_kind::ucx;
  else if (!options.transport.empty())
    return fail(errc::invalid_argument, "embed_options.transport is '", options.transport,
                "'; it must be loopback, ucx or empty");
  if (options.prefill_chunk > 0) t->pipeline.prefill_chunk = options.prefill_chunk;
  auto config = topology::read_model_config(*t);
  if (!config) return config.err();
  auto spec = to_cluster_spec(*t, *config);
  if (!spec) return spec.err();
  spec->start_timeout = options.start_timeout;
  return embed_spec(std::move(*spec));
}

expected<std::unique_ptr<cluster>> cluster::connect(const std::string& host, std::uint16_t port,
                                                    std::chrono::milliseconds timeout) {
  return connect(host, port, timeout, std::string());
}

expected<std::unique_ptr<cluster>> cluster::connect(const std::string& host, std::uint16_t port,
                                                    std::chrono::milliseconds timeout, const std::string& credentials) {
  return connect_any({launch::host_port(host, port)}, timeout, credentials);
}

expected<std::unique_ptr<cluster>> cluster::connect_any(const std::vector<std::string>& addresses,
                                                        std::chrono::milliseconds timeout,
                                                        const std::string& credentials) {
  launch::address_list list;
  for (const auto& a : addresses) {
    auto hp = launch::parse_host_port(a);
    if (!hp) return hp.err();
    list.push_back(*hp);
  }
  if (list.empty()) return fail(errc::invalid_argument, "no coordinator address given");
  const bool single = list.size() == 1;
  if (single)
    if (auto e = probe(list.front().first, static_cast<std::uint16_t>(list.front().second), timeout)) return e;
  try {
    auto cfg = std::make_unique<caf::actor_system_config>();
    actors::register_message_types(*cfg);
    actors::configure_scheduler(*cfg, 2);
    cfg->load<caf::io::middleman>();
    const bool secure = !credentials.empty();
    if (secure)
      if (auto applied = launch::tls::apply(launch::tls::credentials_of(credentials, launch::tls::role::client), *cfg);
          !applied)
        return applied.err();
    auto sys = std::make_unique<caf::actor_system>(*cfg);
    expected<caf::actor> coordinator = fail(errc::unavailable, "not tried");
    if (single) {
      const auto& [host, port] = list.front();
      coordinator = launch::tls::connect(*sys, host, static_cast<std::uint16_t>(port), secure, timeout);
      if (!coordinator)
        return fail(errc::unavailable, "cannot reach the coordinator at ", host, ":", port, secure ? " (TLS)" : "",
                    ": ", coordinator.err().message());
    } else {
      // Standby coordinators: the active one, looked for until `timeout` (they may be choosing).
      const auto give_up = std::chrono::steady_clock::now() + timeout;
      for (;;) {
        coordinator = launch::connect_active(*sys, list, secure, actors::timeouts::coordinator_handshake);
        if (coordinator || std::chrono::steady_clock::now() >= give_up) break;
        std::this_thread::sleep_for(actors::timeouts::coordinator_retry);
      }
      if (!coordinator) return coordinator.err();
    }
    // The coordinator's process may be replaced (afd launch restarts it), or a standby may take
    // over: the active one is found again in the list.
    auto reconnect = [list, secure](caf::actor_system& s) {
      return launch::connect_active(s, list, secure, actors::timeouts::coordinator_handshake);
    };
    return std::unique_ptr<cluster>(
        new cluster_impl(std::move(cfg), std::move(sys), std::move(*coordinator), std::move(reconnect)));
  } catch (const std::exception& e) {
    return fail(errc::internal, "connect: ", e.what());
  }
}

expected<std::unique_ptr<cluster>> cluster::connect(const std::string& topology_file,
                                                    std::chrono::milliseconds timeout) {
  auto address = launch::resolve_cluster_address(topology_file, "");
  if (!address) return address.err();
  std::vector<std::string> list;
  for (const auto& [host, port] : address->coordinators) list.push_back(launch::host_port(host, port));
  return connect_any(list, timeout, address->credentials);
}

}  // namespace afd::client
