#include "deploy/serve/loadgen.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "runtime/core/stats.hpp"

namespace afd::serve {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

struct target {
  std::string host, port, path;
};

expected<target> parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0)
    return fail(errc::invalid_argument, "--url '", url, "': only http://HOST:PORT[/PATH] is supported");
  std::string rest = url.substr(scheme.size());
  target t;
  const auto slash = rest.find('/');
  t.path = slash == std::string::npos ? "" : rest.substr(slash);
  rest = rest.substr(0, slash);
  if (!rest.empty() && rest[0] == '[') {
    const auto close = rest.find(']');
    if (close == std::string::npos) return fail(errc::invalid_argument, "--url '", url, "': unclosed [");
    t.host = rest.substr(1, close - 1);
    t.port = close + 1 < rest.size() && rest[close + 1] == ':' ? rest.substr(close + 2) : "80";
  } else {
    const auto colon = rest.find(':');
    t.host = rest.substr(0, colon);
    t.port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  }
  if (t.host.empty()) return fail(errc::invalid_argument, "--url '", url, "': no host");
  if (t.path.empty() || t.path == "/") t.path = "/v1/completions";
  return t;
}

/// One client: a kept-alive connection, reopened after a failure.
class http_client {
 public:
  explicit http_client(target t) : t_(std::move(t)), stream_(ioc_) {}

  loadgen_sample post_stream(const std::string& body) {
    loadgen_sample s;
    const auto start = steady::now();
    beast::error_code ec;
    if (!connected_) {
      tcp::resolver resolver(ioc_);
      auto endpoints = resolver.resolve(t_.host, t_.port, ec);
      if (!ec) stream_.connect(endpoints, ec);
      if (ec) {
        s.error = "connect: " + ec.message();
        return s;
      }
      stream_.socket().set_option(tcp::no_delay(true), ec);
      connected_ = true;
    }
    http::request<http::string_body> req{http::verb::post, t_.path, 11};
    req.set(http::field::host, t_.host);
    req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    http::write(stream_, req, ec);
    if (ec) return broken(s, "send: " + ec.message());
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    http::read_header(stream_, buffer, parser, ec);
    if (ec) return broken(s, "read: " + ec.message());
    const int status = static_cast<int>(parser.get().result_int());
    std::string pending, error_body;
    std::optional<steady::time_point> last;
    char chunk[16384];
    bool done = false;
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      http::read_some(stream_, buffer, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return broken(s, "read: " + ec.message());
      const std::size_t n = sizeof chunk - parser.get().body().size;
      const auto now = steady::now();
      if (status != 200) {
        error_body.append(chunk, n);
        continue;
      }
      pending.append(chunk, n);
      for (std::size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
        const std::string event = pending.substr(0, end);
        pending.erase(0, end + 2);
        if (event.compare(0, 6, "data: ") != 0) continue;
        const std::string data = event.substr(6);
        if (data == "[DONE]") {
          done = true;
          continue;
        }
        const json j = json::parse(data, nullptr, false);
        if (j.is_discarded()) {
          s.error = "a chunk is not JSON: " + data.substr(0, 200);
          continue;
        }
        if (j.contains("error")) {
          s.error = j["error"].value("message", data);
          continue;
        }
        if (j.contains("usage") && j["usage"].is_object()) s.prompt_tokens = j["usage"].value("prompt_tokens", 0);
        if (!j.contains("choices") || j["choices"].empty()) continue;
        const auto& c = j["choices"][0];
        const auto k = c.contains("token_ids") && c["token_ids"].is_array() ? c["token_ids"].size() : 0;
        if (k == 0) continue;
        if (!last) s.ttft = std::chrono::duration<double>(now - start).count();
        else s.itl.push_back(std::chrono::duration<double>(now - *last).count());
        last = now;
        s.output_tokens += static_cast<std::int64_t>(k);
      }
    }
    s.e2e = std::chrono::duration<double>(steady::now() - start).count();
    if (!parser.get().keep_alive()) close();
    if (status != 200) {
      s.error = "HTTP " + std::to_string(status) + ": " + error_body.substr(0, 300);
      return s;
    }
    if (s.error.empty() && !done) s.error = "the stream ended without [DONE]";
    s.ok = s.error.empty();
    return s;
  }

 private:
  loadgen_sample& broken(loadgen_sample& s, std::string why) {
    s.error = std::move(why);
    close();
    return s;
  }
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    connected_ = false;
  }
  target t_;
  net::io_context ioc_;
  beast::tcp_stream stream_;
  bool connected_ = false;
};

}  // namespace

expected<loadgen_report> run_loadgen(const loadgen_options& o) {
  auto t = parse_url(o.url);
  if (!t) return std::move(t).err();
  if (o.concurrency < 1) return fail(errc::invalid_argument, "--concurrency must be >= 1");
  if (o.requests < 1) return fail(errc::invalid_argument, "--requests must be >= 1");
  if (!(o.rate > 0)) return fail(errc::invalid_argument, "--rate must be > 0 (inf: all at once)");
  json body{{"max_tokens", o.max_tokens}, {"stream", true}, {"stream_options", {{"include_usage", true}}},
            {"ignore_eos", o.ignore_eos}, {"temperature", 0}};
  if (!o.model.empty()) body["model"] = o.model;
  if (t->path.find("chat") != std::string::npos)
    body["messages"] = json::array({json{{"role", "user"}, {"content", o.prompt}}});
  else if (!o.prompt_ids.empty())
    body["prompt"] = o.prompt_ids;
  else
    body["prompt"] = o.prompt;
  const std::string text = body.dump();

  // Arrival times: a Poisson process at `rate` (vLLM's default burstiness 1), seeded.
  std::vector<double> arrival(static_cast<std::size_t>(o.requests), 0.0);
  if (std::isfinite(o.rate)) {
    std::mt19937_64 rng(o.seed);
    std::exponential_distribution<double> gap(o.rate);
    double at = 0;
    for (auto& a : arrival) {
      a = at;
      at += gap(rng);
    }
  }
  loadgen_report report;
  report.samples.resize(arrival.size());
  std::atomic<std::size_t> next{0};
  const auto start = steady::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < std::min(o.concurrency, o.requests); ++c)
    clients.emplace_back([&] {
      http_client client(*t);
      for (std::size_t i; (i = next++) < arrival.size();) {
        std::this_thread::sleep_until(start + std::chrono::duration_cast<steady::duration>(
                                                  std::chrono::duration<double>(arrival[i])));
        report.samples[i] = client.post_stream(text);
      }
    });
  for (auto& c : clients) c.join();
  report.duration = std::chrono::duration<double>(steady::now() - start).count();
  return report;
}

json summarize(const loadgen_report& r) {
  std::vector<double> ttft, tpot, itl, e2e;
  std::int64_t ok = 0, input = 0, output = 0;
  json errors = json::array();
  for (const auto& s : r.samples) {
    if (!s.ok) {
      if (errors.size() < 5) errors.push_back(s.error);
      continue;
    }
    ++ok;
    input += s.prompt_tokens;
    output += s.output_tokens;
    ttft.push_back(s.ttft * 1e3);
    e2e.push_back(s.e2e * 1e3);
    if (s.output_tokens > 1) tpot.push_back((s.e2e - s.ttft) * 1e3 / static_cast<double>(s.output_tokens - 1));
    for (double v : s.itl) itl.push_back(v * 1e3);
  }
  auto stats = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return json{{"mean", v.empty() ? 0.0 : sum / static_cast<double>(v.size())},
                {"median", percentile(v, 0.5)},
                {"p90", percentile(v, 0.9)},
                {"p99", percentile(v, 0.99)}};
  };
  const double d = r.duration > 0 ? r.duration : 1;
  return json{{"successful_requests", ok},
              {"failed_requests", static_cast<std::int64_t>(r.samples.size()) - ok},
              {"errors", errors},
              {"duration_s", r.duration},
              {"total_input_tokens", input},
              {"total_output_tokens", output},
              {"request_throughput", static_cast<double>(ok) / d},
              {"output_throughput", static_cast<double>(output) / d},
              {"total_token_throughput", static_cast<double>(input + output) / d},
              {"ttft_ms", stats(ttft)},
              {"tpot_ms", stats(tpot)},
              {"itl_ms", stats(itl)},
              {"e2el_ms", stats(e2e)}};
}

std::string format_report(const json& s) {
  std::string out;
  char line[160];
  auto row = [&](const char* name, const std::string& value) {
    std::snprintf(line, sizeof line, "%-40s %-10s\n", name, value.c_str());
    out += line;
  };
  auto num = [](double v, int digits) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", digits, v);
    return std::string(b);
  };
  auto rule = [&](const char* title) {
    const int width = 50, len = static_cast<int>(std::string(title).size());
    const int left = (width - len) / 2;
    out += std::string(static_cast<std::size_t>(left), '-') + title +
           std::string(static_cast<std::size_t>(width - len - left), '-') + "\n";
  };
  out += "============ Serving Benchmark Result ============\n";
  row("Successful requests:", std::to_string(s["successful_requests"].get<std::int64_t>()));
  if (s["failed_requests"].get<std::int64_t>() > 0)
    row("Failed requests:", std::to_string(s["failed_requests"].get<std::int64_t>()));
  row("Benchmark duration (s):", num(s["duration_s"], 2));
  row("Total input tokens:", std::to_string(s["total_input_tokens"].get<std::int64_t>()));
  row("Total generated tokens:", std::to_string(s["total_output_tokens"].get<std::int64_t>()));
  row("Request throughput (req/s):", num(s["request_throughput"], 2));
  row("Output token throughput (tok/s):", num(s["output_throughput"], 2));
  row("Total Token throughput (tok/s):", num(s["total_token_throughput"], 2));
  const std::pair<const char*, const char*> sections[] = {{"ttft_ms", "TTFT"}, {"tpot_ms", "TPOT"}, {"itl_ms", "ITL"},
                                                          {"e2el_ms", "E2EL"}};
  const char* titles[] = {"Time to First Token", "Time per Output Token (excl. 1st token)", "Inter-token Latency",
                          "End-to-end Latency"};
  for (std::size_t i = 0; i < 4; ++i) {
    rule(titles[i]);
    const auto& v = s[sections[i].first];
    const std::string n = sections[i].second;
    row(("Mean " + n + " (ms):").c_str(), num(v["mean"], 2));
    row(("Median " + n + " (ms):").c_str(), num(v["median"], 2));
    row(("P90 " + n + " (ms):").c_str(), num(v["p90"], 2));
    row(("P99 " + n + " (ms):").c_str(), num(v["p99"], 2));
  }
  out += "==================================================\n";
  for (const auto& e : s["errors"]) out += "error: " + e.get<std::string>() + "\n";
  return out;
}

}  // namespace afd::serve
