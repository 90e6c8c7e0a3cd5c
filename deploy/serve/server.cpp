// The HTTP server. One session per connection, its handlers serialised on a strand; the cluster's
// token callbacks (on the client's receiver thread) only append to a request's inbox and post a
// wake-up to that strand. Blocking client calls (submit, cancel, status) run on a small thread pool,
// never on an I/O thread. A tracker thread notices requests that end (with or without a last token).

#include "deploy/serve/server.hpp"

#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "deploy/serve/choice_output.hpp"
#include "deploy/serve/metrics.hpp"
#include "deploy/serve/openai_api.hpp"
#include "deploy/serve/timeouts.hpp"
#include "deploy/serve/trace.hpp"
#include "runtime/text/chat_template.hpp"

namespace afd::serve {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// The deepest nesting of arrays and objects in JSON text (strings skipped); stops counting past `limit`.
int json_depth(const std::string& text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) break;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

/// Request bodies nest no deeper than this: OpenAI's are 5 deep, and copying or printing a deeper
/// value recurses once per level.
constexpr int max_json_depth = 64;

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Runs blocking client calls off the I/O threads.
class blocking_pool {
 public:
  explicit blocking_pool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~blocking_pool() { stop(); }
  void post(std::function<void()> f) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      queue_.push_back(std::move(f));
    }
    cv_.notify_one();
  }
  /// Runs what is queued, then joins.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        f = std::move(queue_.front());
        queue_.pop_front();
      }
      f();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

/// Between the cluster's threads and one request's session.
struct inbox {
  struct arrival {
    client::token tok;
    clock_type::time_point at;
  };
  std::mutex mutex;
  std::vector<arrival> tokens;
  std::atomic<bool> last_seen{false};
  bool ended = false;
  std::optional<client::response> result;
  afd::error failure;
  client::request_id id = -1;
  std::function<void()> wake;  ///< schedules the session's pump; cleared when the session is done with it
};

/// Notices requests that ended: cluster.wait with no timeout, in a loop.
class end_tracker {
 public:
  explicit end_tracker(client::cluster& c) : cluster_(c), thread_([this] { loop(); }) {}
  ~end_tracker() { stop(); }
  void add(std::shared_ptr<inbox> b) {
    {
      std::lock_guard lock(mutex_);
      watched_.push_back(std::move(b));
    }
    cv_.notify_one();
  }
  void poke() {
    {
      std::lock_guard lock(mutex_);
      poked_ = true;
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  void loop() {
    auto poll = timeouts::end_poll;
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::duration_cast<std::chrono::nanoseconds>(poll),
                   [&] { return stopping_ || poked_; });
      poked_ = false;
      auto watched = std::move(watched_);
      watched_.clear();
      lock.unlock();
      std::vector<std::shared_ptr<inbox>> keep;
      bool due = false;
      for (auto& b : watched) {
        auto r = cluster_.wait(b->id, std::chrono::milliseconds(0));
        if (!r && r.err().code() == errc::timeout) {
          due = due || b->last_seen.load();
          keep.push_back(std::move(b));
          continue;
        }
        std::function<void()> wake;
        {
          std::lock_guard box_lock(b->mutex);
          b->ended = true;
          if (r) b->result = std::move(*r);
          else b->failure = std::move(r).err();
          wake = b->wake;
        }
        // The result is in the inbox now: the client need not keep the request (its tokens, logits).
        (void)cluster_.forget(b->id);
        if (wake) wake();
      }
      poll = due ? std::chrono::duration_cast<std::chrono::milliseconds>(timeouts::end_poll_after_last_token)
                 : std::chrono::duration_cast<std::chrono::milliseconds>(timeouts::end_poll);
      lock.lock();
      for (auto& b : keep) watched_.push_back(std::move(b));
    }
  }

  client::cluster& cluster_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<inbox>> watched_;
  bool poked_ = false, stopping_ = false;
  std::thread thread_;
};

class session;

}  // namespace

struct server::impl {
  impl(client::cluster& c, const text::tokenizer& t, server_options o)
      : cluster(c),
        tok(t),
        options(std::move(o)),
        stats(options.served_model_name),
        acceptor(ioc),
        pool(4),
        tracker(std::make_shared<end_tracker>(c)) {}

  client::cluster& cluster;
  const text::tokenizer& tok;
  std::optional<text::chat_template> chat;
  server_options options;
  api_context api;
  metrics stats;
  trace_log traces;
  std::int64_t started_at = std::time(nullptr);
  net::io_context ioc;
  tcp::acceptor acceptor;
  std::vector<std::thread> io_threads;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  blocking_pool pool;
  /// Shared with the token callbacks the client keeps (they may outlive the server).
  std::shared_ptr<end_tracker> tracker;
  std::atomic<bool> draining{false};
  std::atomic<int> in_flight{0};
  std::atomic<std::uint64_t> next_id{1};
  std::mutex drain_mutex;
  bool drained = false;
  /// Sessions with a generation in flight (to end them when the grace period is over).
  std::mutex active_mutex;
  std::map<session*, std::weak_ptr<session>> active;

  void accept();
};

namespace {

/// One connection.
class session : public std::enable_shared_from_this<session> {
 public:
  static constexpr std::uint32_t max_header_bytes = 64 * 1024;

  session(tcp::socket socket, server::impl& s) : stream_(std::move(socket)), srv_(s) {}

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); });
  }

  /// The grace period of a drain is over: end the generation in flight with an error.
  void abort_for_shutdown() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->job_ || self->job_->finished) return;
      api_error e;
      e.status = 503;
      e.type = "service_unavailable";
      e.code = "server_shutting_down";
      e.message = "the server is shutting down; the request was cancelled";
      self->fail_job(e, "error");
    });
  }

 private:
  struct slot {
    std::shared_ptr<inbox> box;
    client::request req;
    std::optional<client::request_id> id;
    std::unique_ptr<choice_output> out;
    std::size_t consumed = 0;  ///< tokens taken from the inbox (the response's tokens beyond it are added at the end)
    bool done = false, cancelled = false;
    bool last_seen = false;  ///< the cluster's last token arrived; its end (finish reason) follows
    std::string finish_reason;
    std::optional<client::response> result;
    afd::error failure;
    std::optional<clock_type::time_point> first_token, last_token;
  };
  struct job {
    generation_request g;
    std::vector<slot> slots;
    std::string id;  ///< "cmpl-..." / "chatcmpl-..."
    std::int64_t created = 0;
    request_trace trace;
    bool streaming_started = false;
    bool finished = false;
  };

  // ---- reading requests -------------------------------------------------------------------------

  void read_request() {
    if (closing_) return;
    parser_.emplace();
    parser_->body_limit(srv_.options.max_body_bytes);
    parser_->header_limit(max_header_bytes);
    stream_.expires_after(timeouts::idle_read);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  /// Answers what cannot be read as a request; false when there is nobody to answer.
  bool answer_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      api_error e;
      e.status = 413;
      e.code = "body_too_large";
      e.message = "the request body is larger than " + std::to_string(srv_.options.max_body_bytes) + " bytes";
      send_error(e, /*close_after=*/true);
      return true;
    }
    if (ec == http::error::header_limit) {
      api_error e;
      e.status = 431;
      e.message = "the request header is larger than " + std::to_string(max_header_bytes) + " bytes";
      send_error(e, true);
      return true;
    }
    // Beast's parse errors (bad method, bad version, bad chunk, ...); not the end of a stream or a
    // message cut short by a client that went away.
    if (ec.category() == make_error_code(http::error::bad_method).category() && ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      send_error(bad_request(std::string("malformed HTTP request: ") + ec.message()), true);
      return true;
    }
    return false;
  }

  void on_header(beast::error_code ec) {
    if (ec) {
      if (!answer_read_error(ec)) close();
      return;
    }
    if (parser_->is_done()) return on_request();
    auto continue_body = [self = shared_from_this()] {
      self->stream_.expires_after(timeouts::idle_read);
      http::async_read(self->stream_, self->buffer_, *self->parser_, [self](beast::error_code ec, std::size_t) {
        if (ec) {
          if (!self->answer_read_error(ec)) self->close();
          return;
        }
        self->on_request();
      });
    };
    // A client that asked before sending its body (curl does for large ones) hears yes at once.
    const auto& h = parser_->get();
    if (auto it = h.find(http::field::expect); it != h.end() && beast::iequals(it->value(), "100-continue")) {
      static const std::string go_on = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(go_on),
                       [self = shared_from_this(), continue_body](beast::error_code ec, std::size_t) {
                         if (ec) return self->close();
                         continue_body();
                       });
      return;
    }
    continue_body();
  }

  void on_request() {
    stream_.expires_never();
    request_ = parser_->release();
    keep_alive_ = request_.keep_alive();
    handle();
  }

  std::string header(const char* name) const {
    auto it = request_.find(name);
    return it == request_.end() ? std::string() : std::string(it->value());
  }

  void handle() {
    std::string target(request_.target());
    if (auto q = target.find('?'); q != std::string::npos) target.resize(q);
    const auto method = request_.method();
    endpoint_ = target;
    if (target == "/health") {
      if (method != http::verb::get) return method_not_allowed("GET");
      return handle_status(true);
    }
    if (target == "/metrics") {
      if (method != http::verb::get) return method_not_allowed("GET");
      return handle_status(false);
    }
    if (target == "/v1/models") {
      if (method != http::verb::get) return method_not_allowed("GET");
      json model{{"id", srv_.options.served_model_name}, {"object", "model"}, {"created", srv_.started_at},
                 {"owned_by", "afd"}, {"root", srv_.options.served_model_name}, {"parent", nullptr}};
      return send_json(200, json{{"object", "list"}, {"data", json::array({model})}});
    }
    if (target == "/v1/completions" || target == "/v1/chat/completions") {
      if (method != http::verb::post) return method_not_allowed("POST");
      return handle_generation(target == "/v1/chat/completions" ? api_kind::chat : api_kind::completion);
    }
    endpoint_ = "other";
    api_error e;
    e.status = 404;
    e.type = "NotFoundError";
    e.message = "no route for " + std::string(request_.method_string()) + " " + target;
    send_error(e, false);
  }

  void method_not_allowed(const char* allowed) {
    api_error e;
    e.status = 405;
    e.message = "method " + std::string(request_.method_string()) + " is not allowed here; use " + allowed;
    send_error(e, false);
  }

  // ---- plain responses --------------------------------------------------------------------------

  void send_response(int status, std::string body, const char* content_type, bool close_after,
                     const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    srv_.stats.http_response(endpoint_, status);
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), request_.version());
    res->set(http::field::server, "afd");
    res->set(http::field::content_type, content_type);
    for (const auto& [k, v] : extra) res->set(k, v);
    const bool keep = keep_alive_ && !close_after && !srv_.draining;
    res->keep_alive(keep);
    res->body() = std::move(body);
    res->prepare_payload();
    stream_.expires_after(timeouts::write);
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      self->next_request(keep);
    });
  }

  void send_json(int status, const json& body, bool close_after = false,
                 const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    send_response(status, dump(body) + "\n", "application/json", close_after, extra);
  }

  void send_error(const api_error& e, bool close_after) {
    std::vector<std::pair<std::string, std::string>> extra;
    if (e.status == 405) extra.emplace_back("Allow", e.message.substr(e.message.rfind(' ') + 1));
    send_json(e.status, e.to_json(), close_after, extra);
  }

  /// Half-closes, discards what the client still sends for a moment, then closes: the client reads
  /// the answer before the connection goes.
  void linger_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(timeouts::linger);
    discard_ = std::make_shared<std::array<char, 4096>>();
    discard();
  }
  void discard() {
    stream_.async_read_some(net::buffer(*discard_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      self->discard();
    });
  }

  void close() {
    closing_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  // ---- /health and /metrics -----------------------------------------------------------------------

  void handle_status(bool health) {
    auto self = shared_from_this();
    srv_.pool.post([self, health] {
      auto s = self->srv_.cluster.status(timeouts::cluster_status);
      net::post(self->stream_.get_executor(), [self, health, s = std::move(s)]() mutable {
        if (health) {
          if (s && s->ready && !self->srv_.draining) return self->send_json(200, json{{"status", "ready"}});
          api_error e;
          e.status = 503;
          e.type = "service_unavailable";
          e.code = "cluster_unavailable";
          e.message = self->srv_.draining ? "the server is shutting down"
                      : !s                ? "cluster unavailable: " + s.err().message()
                                          : "the cluster is not ready";
          return self->send_error(e, false);
        }
        std::optional<client::cluster_status> st;
        if (s) st = std::move(*s);
        self->send_response(200, self->srv_.stats.render(st), "text/plain; version=0.0.4; charset=utf-8", false);
      });
    });
  }

  // ---- generation ---------------------------------------------------------------------------------

  void handle_generation(api_kind kind) {
    const auto received = clock_type::now();
    if (srv_.draining) {
      api_error e;
      e.status = 503;
      e.type = "service_unavailable";
      e.code = "server_shutting_down";
      e.message = "the server is shutting down";
      return send_error(e, true);
    }
    if (json_depth(request_.body(), max_json_depth) > max_json_depth)
      return send_error(bad_request("the request body nests deeper than " + std::to_string(max_json_depth) + " levels"),
                        false);
    json body = json::parse(request_.body(), nullptr, false);
    if (body.is_discarded()) return send_error(bad_request("the request body is not valid JSON"), false);
    auto j = std::make_shared<job>();
    auto problem = kind == api_kind::chat ? parse_chat(body, srv_.api, j->g) : parse_completion(body, srv_.api, j->g);
    if (problem) return send_error(*problem, false);

    std::string request_id = header("x-request-id");
    if (request_id.empty() || request_id.size() > 256) request_id = std::to_string(srv_.next_id++);
    j->id = (kind == api_kind::chat ? "chatcmpl-" : "cmpl-") + request_id;
    j->created = std::time(nullptr);
    j->trace.request_id = request_id;
    j->trace.endpoint = endpoint_;
    j->trace.trace = make_trace_context(header("traceparent"));
    j->trace.received = received;
    extra_headers_ = {{"x-request-id", request_id}, {"traceparent", j->trace.trace.header()}};

    std::weak_ptr<session> weak = weak_from_this();
    auto wake = [weak] {
      if (auto s = weak.lock()) s->schedule_pump();
    };
    std::vector<std::int32_t> hidden = j->g.stop_token_ids;
    if (auto eos = srv_.tok.eos_id()) hidden.push_back(*eos);
    for (std::size_t i = 0; i < j->g.prompts.size(); ++i) {
      slot s;
      s.box = std::make_shared<inbox>();
      s.box->wake = wake;
      s.req = to_cluster_request(j->g, i, srv_.tok.eos_id());
      s.out = std::make_unique<choice_output>(srv_.tok, j->g.skip_special_tokens, j->g.stop, hidden);
      j->slots.push_back(std::move(s));
    }
    job_ = j;
    ++srv_.in_flight;
    {
      std::lock_guard lock(srv_.active_mutex);
      srv_.active[this] = weak;
    }
    watch_disconnect();

    // Submit every prompt from the pool; the answers come back to this strand.
    std::vector<std::pair<client::request, std::shared_ptr<inbox>>> work;
    for (auto& s : j->slots) work.emplace_back(s.req, s.box);
    auto self = shared_from_this();
    server::impl* srv = &srv_;
    srv_.pool.post([self, srv, work = std::move(work), j]() mutable {
      std::vector<expected<client::request_id>> ids;
      for (auto& [req, box] : work) {
        if (!ids.empty() && !ids.back()) break;  // one refused: do not submit the rest
        std::weak_ptr<end_tracker> tracker = srv->tracker;
        auto on_token = [box, tracker](const client::token& t) {
          std::function<void()> wake;
          {
            std::lock_guard lock(box->mutex);
            box->tokens.push_back({t, clock_type::now()});
            wake = box->wake;
          }
          if (t.last) {
            box->last_seen = true;
            if (auto live = tracker.lock()) live->poke();
          }
          if (wake) wake();
        };
        auto id = srv->cluster.submit(req, on_token);
        if (id) {
          {
            std::lock_guard lock(box->mutex);
            box->id = *id;
          }
          srv->stats.request_accepted(static_cast<std::int64_t>(req.prompt.size()));
          srv->tracker->add(box);
        }
        ids.push_back(std::move(id));
      }
      net::post(self->stream_.get_executor(),
                [self, j, ids = std::move(ids)]() mutable { self->on_submitted(j, std::move(ids)); });
    });
  }

  void on_submitted(const std::shared_ptr<job>& j, std::vector<expected<client::request_id>> ids) {
    const auto now = clock_type::now();
    afd::error refused;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i]) {
        j->slots[i].id = *ids[i];
        if (!j->trace.queued) j->trace.queued = now;
      } else {
        refused = ids[i].err();
      }
    }
    if (j->finished) {  // the client left or the server is shutting down: cancel what got in
      for (auto& s : j->slots)
        if (s.id) cancel(s);
      return;
    }
    if (refused) {
      for (std::size_t i = 0; i < j->slots.size(); ++i) {
        auto& s = j->slots[i];
        if (s.id) cancel(s);
        s.done = true;
      }
      auto e = from_cluster_error(refused);
      if (e.status == 400)
        e.param = e.message.find("max_new_tokens") != std::string::npos ? "max_tokens"
                  : j->g.kind == api_kind::chat                          ? "messages"
                                                                         : "prompt";
      fail_job(e, "error");
      return;
    }
    if (j->g.stream) start_stream();
    pump();
  }

  void cancel(slot& s) {
    if (!s.id || s.cancelled) return;
    s.cancelled = true;
    const auto id = *s.id;
    server::impl* srv = &srv_;
    srv_.pool.post([srv, id] { (void)srv->cluster.cancel(id); });
  }

  void schedule_pump() {
    if (pump_posted_.exchange(true)) return;
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->pump(); });
  }

  /// Moves what arrived into the choices; streams it; finishes the job when every choice is done.
  void pump() {
    pump_posted_ = false;
    auto j = job_;
    if (!j || j->finished) return;
    for (std::size_t i = 0; i < j->slots.size(); ++i) {
      slot& s = j->slots[i];
      if (s.done || !s.id) continue;
      std::vector<inbox::arrival> got;
      bool ended = false;
      {
        std::lock_guard lock(s.box->mutex);
        got.swap(s.box->tokens);
        ended = s.box->ended;
        if (ended) {
          s.result = s.box->result;
          s.failure = s.box->failure;
        }
      }
      const bool keep_all = j->g.logprobs >= 0;  // logprobs come with the end: wait for it
      for (const auto& a : got) {
        ++s.consumed;
        if (a.tok.last) s.last_seen = true;
        if (s.out->stopped()) continue;
        add_token(j->trace, s, a.tok.value, a.at);
        if (s.out->stopped() && !keep_all) {
          s.done = true;
          s.finish_reason = "stop";
          if (!ended) cancel(s);
          break;
        }
      }
      if (!s.done && ended) {
        if (s.failure) {
          s.done = true;
        } else {
          const auto now = clock_type::now();
          for (std::size_t k = s.consumed; k < s.result->tokens.size(); ++k) {
            if (!s.out->stopped()) add_token(j->trace, s, s.result->tokens[k], now);
            ++s.consumed;
          }
          s.out->finish();
          s.done = true;
          s.finish_reason = s.out->stopped() ? "stop" : openai_finish_reason(s.result->finish_reason);
        }
      }
      if (j->g.stream && !s.failure) emit_stream_piece(*j, i);
    }
    for (const auto& s : j->slots)
      if (s.failure) {
        for (auto& other : j->slots)
          if (!other.done) {
            cancel(other);
            other.done = true;
          }
        auto e = from_cluster_error(s.failure);
        return fail_job(e, "error");
      }
    for (const auto& s : j->slots)
      if (!s.done) return;
    complete_job();
  }

  void add_token(request_trace& trace, slot& s, std::int32_t id, clock_type::time_point at) {
    if (!s.first_token) {
      s.first_token = at;
      if (!trace.first_token) trace.first_token = at;
      srv_.stats.time_to_first_token(seconds_between(trace.received, at));
    } else {
      srv_.stats.inter_token_latency(std::max(0.0, seconds_between(*s.last_token, at)));
    }
    s.last_token = at;
    srv_.stats.tokens_generated(1);
    s.out->push(id);
  }

  json usage_json(const job& j) const {
    std::int64_t prompt = 0, completion = 0;
    for (const auto& s : j.slots) {
      prompt += static_cast<std::int64_t>(s.req.prompt.size());
      completion += static_cast<std::int64_t>(s.out->token_ids().size());
    }
    return json{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }

  json logprobs_of(const job& j, const slot& s, std::size_t text_offset) const {
    if (j.g.logprobs < 0 || !s.result) return nullptr;
    const auto lp = compute_logprobs(s.result->logits, s.out->token_ids(), j.g.logprobs);
    return j.g.kind == api_kind::chat ? chat_logprobs_json(lp, srv_.tok)
                                      : completion_logprobs_json(lp, srv_.tok, text_offset);
  }

  json chunk_base(const job& j) const {
    json c{{"id", j.id},
           {"object", j.g.kind == api_kind::chat ? "chat.completion.chunk" : "text_completion"},
           {"created", j.created},
           {"model", srv_.options.served_model_name}};
    return c;
  }

  void emit_stream_piece(job& j, std::size_t i) {
    slot& s = j.slots[i];
    const bool keep_all = j.g.logprobs >= 0;
    if (keep_all && !s.done) return;
    if (s.last_seen && !s.done) return;  // the last token goes out with the finish reason
    auto piece = s.out->take(s.done);
    if (piece.text.empty() && piece.token_ids.empty() && !s.done) return;
    // With logprobs the whole text goes in this one chunk: its offsets start at 0.
    json choice{{"index", i}, {"logprobs", s.done ? logprobs_of(j, s, 0) : json(nullptr)},
                {"finish_reason", s.done ? json(s.finish_reason) : json(nullptr)}, {"token_ids", piece.token_ids}};
    if (j.g.kind == api_kind::chat) {
      choice["delta"] = json{{"content", piece.text}};
    } else {
      choice["text"] = piece.text;
      choice["stop_reason"] = nullptr;
    }
    json c = chunk_base(j);
    c["choices"] = json::array({choice});
    if (j.g.include_usage) c["usage"] = nullptr;
    queue_event(dump(c));
  }

  // ---- streaming --------------------------------------------------------------------------------

  void start_stream() {
    auto& j = *job_;
    j.streaming_started = true;
    srv_.stats.http_response(endpoint_, 200);
    // HTTP/1.0 has no chunked encoding: its stream ends when the connection closes.
    chunked_ = request_.version() >= 11;
    if (!chunked_) keep_alive_ = false;
    std::string head = chunked_ ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.0 200 OK\r\n";
    head += "Server: afd\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n";
    if (chunked_) head += "Transfer-Encoding: chunked\r\n";
    for (const auto& [k, v] : extra_headers_) head += k + ": " + v + "\r\n";
    head += keep_alive_ && !srv_.draining ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    out_.push_back(std::move(head));
    if (j.g.kind == api_kind::chat)
      for (std::size_t i = 0; i < j.slots.size(); ++i) {
        json c = chunk_base(j);
        c["choices"] = json::array({json{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                         {"logprobs", nullptr}, {"finish_reason", nullptr}}});
        if (j.g.include_usage) c["usage"] = nullptr;
        queue_event(dump(c));
      }
    write_more();
  }

  /// One SSE event as one HTTP chunk.
  void queue_event(const std::string& data) {
    const std::string event = "data: " + data + "\n\n";
    if (!chunked_) {
      out_.push_back(event);
    } else {
      char size[32];
      std::snprintf(size, sizeof size, "%zx\r\n", event.size());
      out_.push_back(size + event + "\r\n");
    }
    write_more();
  }

  void end_stream() {
    queue_event("[DONE]");
    if (chunked_) out_.push_back("0\r\n\r\n");
    stream_ending_ = true;
    write_more();
  }

  void write_more() {
    if (writing_ || out_.empty() || closing_) return;
    writing_buf_.clear();
    for (auto& s : out_) writing_buf_ += s;
    out_.clear();
    writing_ = true;
    stream_.expires_after(timeouts::write);
    net::async_write(stream_, net::buffer(writing_buf_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->writing_ = false;
      self->stream_.expires_never();
      if (ec) return self->on_disconnect();
      if (!self->out_.empty()) return self->write_more();
      if (self->stream_ending_) {
        self->stream_ending_ = false;
        self->after_response();
      }
    });
  }

  /// The response is out: next request on this connection, or close.
  void after_response() { next_request(keep_alive_ && !srv_.draining); }

  void next_request(bool keep) {
    if (!keep) return linger_close();
    if (watching_) {
      read_after_watch_ = true;
      beast::error_code ec;
      stream_.socket().cancel(ec);
      return;
    }
    read_request();
  }

  // ---- the client leaving -------------------------------------------------------------------------

  /// Waits for the socket to become readable while a generation runs: end of stream means the client
  /// left (its request is cancelled); bytes mean a pipelined request (left for after this one).
  void watch_disconnect() {
    if (watching_ || closing_) return;
    if (buffer_.size() > 0) return;  // bytes of a next request are already here: nothing to learn
    watching_ = true;
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      self->watching_ = false;
      if (self->read_after_watch_) {
        self->read_after_watch_ = false;
        return self->read_request();
      }
      if (ec == net::error::operation_aborted) return;
      if (!self->job_ || self->job_->finished) return;
      if (ec) return self->on_disconnect();
      char c;
      const auto n = ::recv(self->stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return self->on_disconnect();
      if (n < 0) return self->watch_disconnect();
      // A pipelined request: stop watching; a write failure will tell if the client goes.
    });
  }

  void on_disconnect() {
    auto j = job_;
    if (j && !j->finished) {
      for (auto& s : j->slots)
        if (!s.done) {
          cancel(s);
          s.done = true;
        }
      finish_job("abort");
    }
    close();
  }

  // ---- the end of a generation --------------------------------------------------------------------

  /// Ends the job with an error: an error event in a stream that started, an error response otherwise.
  void fail_job(const api_error& e, const char* outcome) {
    auto j = job_;
    if (!j || j->finished) return;
    for (auto& s : j->slots)
      if (!s.done) {
        cancel(s);
        s.done = true;
      }
    finish_job(outcome, e.message);
    if (j->streaming_started) {
      queue_event(dump(e.to_json()));
      end_stream();
    } else {
      send_json(e.status, e.to_json(), e.status == 503, extra_headers_);
    }
  }

  void complete_job() {
    auto j = job_;
    finish_job("ok");
    if (j->g.stream) {
      if (j->g.include_usage) {
        json c = chunk_base(*j);
        c["choices"] = json::array();
        c["usage"] = usage_json(*j);
        queue_event(dump(c));
      }
      end_stream();
      return;
    }
    json choices = json::array();
    for (std::size_t i = 0; i < j->slots.size(); ++i) {
      const slot& s = j->slots[i];
      json choice{{"index", i}, {"logprobs", logprobs_of(*j, s, 0)}, {"finish_reason", s.finish_reason},
                  {"token_ids", s.out->token_ids()}};
      if (j->g.kind == api_kind::chat) {
        choice["message"] = json{{"role", "assistant"}, {"content", s.out->text()}};
      } else {
        choice["text"] = s.out->text();
        choice["stop_reason"] = nullptr;
        choice["prompt_token_ids"] = s.req.prompt;
      }
      choices.push_back(std::move(choice));
    }
    json body = chunk_base(*j);
    body["object"] = j->g.kind == api_kind::chat ? "chat.completion" : "text_completion";
    body["choices"] = std::move(choices);
    body["usage"] = usage_json(*j);
    send_json(200, body, false, extra_headers_);
  }

  /// Metrics, trace, bookkeeping; `outcome` "ok", "abort" or "error".
  void finish_job(const std::string& outcome, const std::string& why = {}) {
    auto j = job_;
    j->finished = true;
    const auto now = clock_type::now();
    auto& t = j->trace;
    t.finished = now;
    for (auto& s : j->slots) {
      std::lock_guard lock(s.box->mutex);
      s.box->wake = nullptr;  // the cluster's later callbacks have no one to wake
    }
    std::string reasons;
    for (const auto& s : j->slots) {
      t.prompt_tokens += static_cast<std::int64_t>(s.req.prompt.size());
      t.completion_tokens += static_cast<std::int64_t>(s.out->token_ids().size());
      if (s.result) {
        t.recoveries = std::max(t.recoveries, s.result->recoveries);
        if (t.queued && !t.admitted)
          t.admitted = *t.queued + std::chrono::duration_cast<clock_type::duration>(
                                       std::chrono::duration<double>(s.result->queue_seconds));
      }
      if (outcome == "ok") {
        std::optional<double> queue;
        if (s.result) queue = s.result->queue_seconds;
        srv_.stats.request_succeeded(s.finish_reason, seconds_between(t.received, now), queue);
        reasons += (reasons.empty() ? "" : ",") + s.finish_reason;
      } else if (s.id) {
        srv_.stats.request_failed(outcome);
      }
    }
    t.outcome = outcome == "ok" ? reasons : outcome + (why.empty() ? "" : ": " + why);
    if (t.recoveries == 0 || srv_.options.trace_file.empty()) {
      srv_.traces.add(t);
    } else {
      // The times of the recoveries it lived through: the coordinator's events, on its clock.
      server::impl* srv = &srv_;
      srv_.pool.post([srv, t]() mutable {
        auto s = srv->cluster.status(timeouts::cluster_status);
        const auto answered = clock_type::now();
        if (s)
          for (const auto& e : s->events) {
            if (e.kind == "slow" || e.kind == "waiting") continue;
            const auto at = answered - std::chrono::milliseconds(s->now_ms - e.at_ms);
            if (at < t.received || (t.finished && at > *t.finished)) continue;
            t.cluster_events.emplace_back(at, e.kind + (e.worker.empty() ? "" : " " + e.worker) +
                                                  (e.detail.empty() ? "" : ": " + e.detail));
          }
        srv->traces.add(std::move(t));
      });
    }
    {
      std::lock_guard lock(srv_.active_mutex);
      srv_.active.erase(this);
    }
    --srv_.in_flight;
  }

  beast::tcp_stream stream_;
  server::impl& srv_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  bool keep_alive_ = true;
  std::string endpoint_;
  std::vector<std::pair<std::string, std::string>> extra_headers_;
  std::shared_ptr<job> job_;
  std::atomic<bool> pump_posted_{false};
  std::deque<std::string> out_;
  std::string writing_buf_;
  bool writing_ = false, stream_ending_ = false, closing_ = false, chunked_ = true;
  bool watching_ = false, read_after_watch_ = false;
  std::shared_ptr<std::array<char, 4096>> discard_;
};

}  // namespace

void server::impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<session>(std::move(socket), *this)->start();
    }
    accept();
  });
}

server::server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

server::~server() { drain(std::chrono::milliseconds(0)); }

namespace {
/// An IP address, or the first address a host name resolves to ("localhost").
expected<net::ip::address> listen_address(const std::string& host) {
  beast::error_code ec;
  auto address = net::ip::make_address(host, ec);
  if (!ec) return address;
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  const auto found = resolver.resolve(host, "", tcp::resolver::passive, ec);
  if (ec || found.empty())
    return fail(errc::invalid_argument, "--host '", host, "' is neither an IP address nor a known host name",
                ec ? ": " + ec.message() : std::string());
  return found.begin()->endpoint().address();
}
}  // namespace

expected<std::unique_ptr<server>> server::start(client::cluster& cluster, const text::tokenizer& tokenizer,
                                                server_options options) {
  auto p = std::make_unique<impl>(cluster, tokenizer, std::move(options));
  if (auto source = tokenizer.chat_template()) {
    auto parsed = text::chat_template::parse(*source);
    if (!parsed) return fail(errc::invalid_config, "the model's chat_template: ", parsed.err().message());
    p->chat = std::move(*parsed);
  }
  p->api.tokenizer = &p->tok;
  p->api.chat_template = p->chat ? &*p->chat : nullptr;
  p->api.served_model_name = p->options.served_model_name;
  p->api.default_chat_max_tokens = p->options.default_chat_max_tokens;

  beast::error_code ec;
  auto resolved = listen_address(p->options.host);
  if (!resolved) return std::move(resolved).err();
  const tcp::endpoint endpoint{*resolved, p->options.port};
  p->acceptor.open(endpoint.protocol(), ec);
  if (!ec) p->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) p->acceptor.bind(endpoint, ec);
  if (!ec) p->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return fail(errc::unavailable, "cannot listen on ", p->options.host, ":", p->options.port, ": ", ec.message());
  p->work.emplace(p->ioc.get_executor());
  p->accept();
  const int threads = std::max(1, p->options.io_threads);
  for (int i = 0; i < threads; ++i) p->io_threads.emplace_back([raw = p.get()] { raw->ioc.run(); });
  return std::unique_ptr<server>(new server(std::move(p)));
}


expected<void> server::check_listen(const std::string& host, std::uint16_t port) {
  beast::error_code ec;
  auto resolved = listen_address(host);
  if (!resolved) return std::move(resolved).err();
  const auto address = *resolved;
  net::io_context ioc;
  tcp::acceptor acceptor(ioc);
  const tcp::endpoint endpoint{address, port};
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (ec) return fail(errc::unavailable, "cannot listen on ", host, ":", port, ": ", ec.message());
  return {};
}

std::uint16_t server::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

int server::in_flight() const { return impl_->in_flight.load(); }

void server::drain(std::chrono::milliseconds grace) {
  std::lock_guard lock(impl_->drain_mutex);
  if (impl_->drained) return;
  impl_->drained = true;
  impl_->draining = true;
  net::post(impl_->ioc, [p = impl_.get()] {
    beast::error_code ec;
    p->acceptor.close(ec);
  });
  const auto until = clock_type::now() + grace;
  while (impl_->in_flight > 0 && clock_type::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (impl_->in_flight > 0) {
    std::vector<std::shared_ptr<session>> left;
    {
      std::lock_guard active_lock(impl_->active_mutex);
      for (auto& [raw, weak] : impl_->active)
        if (auto s = weak.lock()) left.push_back(s);
    }
    for (auto& s : left) s->abort_for_shutdown();
    // The error events and cancels go out (bounded: a client that does not read is cut by the write timeout).
    const auto deadline = clock_type::now() + std::chrono::seconds(5);
    while (impl_->in_flight > 0 && clock_type::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // Let the last responses leave before the loop stops.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->io_threads) t.join();
  impl_->io_threads.clear();
  impl_->pool.stop();
  impl_->tracker->stop();
  if (!impl_->options.trace_file.empty()) impl_->traces.write(impl_->options.trace_file);
}

}  // namespace afd::serve
