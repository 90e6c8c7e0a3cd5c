#include "deploy/serve/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace afd::serve {

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void histogram::observe(double v) {
  const auto at = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  ++counts_[static_cast<std::size_t>(at)];
  sum_ += v;
  ++count_;
}

namespace {

// vLLM's buckets, so dashboards made for vLLM read afd the same way.
std::vector<double> ttft_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
          2.5,   5.0,   7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}
std::vector<double> itl_buckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
}
std::vector<double> request_buckets() {
  return {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
          960.0, 1920.0, 7680.0};
}

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // The shortest form that reads back as the same double ("0.005", not "0.0050000000000000001").
  char buf[64];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

/// Writes one metric family at a time.
class writer {
 public:
  void family(const std::string& name, const char* type, const std::string& help) {
    out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, const std::vector<std::pair<std::string, std::string>>& labels, double v) {
    out_ += name;
    if (!labels.empty()) {
      out_ += "{";
      for (std::size_t i = 0; i < labels.size(); ++i)
        out_ += (i ? "," : "") + labels[i].first + "=\"" + escape_label(labels[i].second) + "\"";
      out_ += "}";
    }
    out_ += " " + number(v) + "\n";
  }
  void hist(const std::string& name, const std::string& help, const std::string& model, const histogram& h) {
    family(name, "histogram", help);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < h.bounds().size(); ++i) {
      cumulative += h.counts()[i];
      sample(name + "_bucket", {{"model_name", model}, {"le", number(h.bounds()[i])}}, static_cast<double>(cumulative));
    }
    sample(name + "_bucket", {{"model_name", model}, {"le", "+Inf"}}, static_cast<double>(h.count()));
    sample(name + "_sum", {{"model_name", model}}, h.sum());
    sample(name + "_count", {{"model_name", model}}, static_cast<double>(h.count()));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

metrics::metrics(std::string model_name)
    : model_name_(std::move(model_name)),
      ttft_(ttft_buckets()),
      itl_(itl_buckets()),
      e2e_(request_buckets()),
      queue_(request_buckets()) {}

void metrics::request_accepted(std::int64_t prompt_tokens) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += static_cast<std::uint64_t>(prompt_tokens);
}
void metrics::tokens_generated(std::int64_t n) {
  std::lock_guard lock(mutex_);
  generation_tokens_ += static_cast<std::uint64_t>(n);
}
void metrics::time_to_first_token(double s) {
  std::lock_guard lock(mutex_);
  ttft_.observe(s);
}
void metrics::inter_token_latency(double s) {
  std::lock_guard lock(mutex_);
  itl_.observe(s);
}
void metrics::request_succeeded(const std::string& reason, double e2e, std::optional<double> queue) {
  std::lock_guard lock(mutex_);
  ++success_[reason];
  e2e_.observe(e2e);
  if (queue) queue_.observe(*queue);
}
void metrics::request_failed(const std::string& why) {
  std::lock_guard lock(mutex_);
  ++failure_[why];
}
void metrics::http_response(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++http_[{endpoint, status}];
}

std::string metrics::render(const std::optional<client::cluster_status>& cluster) const {
  writer w;
  const std::string& m = model_name_;
  {
    std::lock_guard lock(mutex_);
    w.family("afd:prompt_tokens_total", "counter", "Prompt tokens of the requests the cluster accepted.");
    w.sample("afd:prompt_tokens_total", {{"model_name", m}}, static_cast<double>(prompt_tokens_));
    w.family("afd:generation_tokens_total", "counter", "Generated tokens received from the cluster.");
    w.sample("afd:generation_tokens_total", {{"model_name", m}}, static_cast<double>(generation_tokens_));
    w.family("afd:request_success_total", "counter", "Requests that ended with their output, by finish reason.");
    for (const char* reason : {"stop", "length"})
      w.sample("afd:request_success_total", {{"model_name", m}, {"finished_reason", reason}},
               static_cast<double>(success_.count(reason) ? success_.at(reason) : 0));
    w.family("afd:request_failure_total", "counter",
             "Requests that ended without their full output: abort (the client left), error (cluster error).");
    for (const char* why : {"abort", "error"})
      w.sample("afd:request_failure_total", {{"model_name", m}, {"reason", why}},
               static_cast<double>(failure_.count(why) ? failure_.at(why) : 0));
    w.family("afd:http_responses_total", "counter", "HTTP responses by endpoint and status.");
    for (const auto& [key, n] : http_)
      w.sample("afd:http_responses_total", {{"endpoint", key.first}, {"status", std::to_string(key.second)}},
               static_cast<double>(n));
    w.hist("afd:time_to_first_token_seconds", "Time from receiving a request to its first token.", m, ttft_);
    w.hist("afd:inter_token_latency_seconds", "Time between two tokens of a request, as the server received them.", m,
           itl_);
    w.hist("afd:e2e_request_latency_seconds", "Time from receiving a request to its end.", m, e2e_);
    w.hist("afd:request_queue_time_seconds", "Time a request waited in the coordinator's queue for a worker.", m,
           queue_);
  }
  w.family("afd:cluster_up", "gauge", "1 when the coordinator answered this scrape.");
  w.sample("afd:cluster_up", {}, cluster ? 1 : 0);
  if (!cluster) return w.take();
  const auto& s = *cluster;
  w.family("afd:cluster_ready", "gauge", "1 when every worker is ready and requests are admitted.");
  w.sample("afd:cluster_ready", {}, s.ready ? 1 : 0);
  w.family("afd:num_requests_running", "gauge", "Requests in the attention workers' batches.");
  w.sample("afd:num_requests_running", {{"model_name", m}}, static_cast<double>(s.running));
  w.family("afd:num_requests_waiting", "gauge", "Requests in the coordinator's admission queue.");
  w.sample("afd:num_requests_waiting", {{"model_name", m}}, static_cast<double>(s.queued));
  w.family("afd:cluster_epoch", "gauge", "The cluster's epoch (bumped by every membership change).");
  w.sample("afd:cluster_epoch", {}, s.epoch);
  w.family("afd:cluster_recoveries_total", "counter", "Epochs started after a worker was lost or came back.");
  w.sample("afd:cluster_recoveries_total", {}, static_cast<double>(s.recoveries));
  w.family("afd:kv_cache_usage_perc", "gauge", "KV cache blocks in use, as a fraction (1 = full), per attention worker.");
  for (const auto& wk : s.workers)
    if (wk.role == "attention")
      w.sample("afd:kv_cache_usage_perc", {{"model_name", m}, {"worker", wk.name}},
               wk.kv_blocks_total > 0 ? static_cast<double>(wk.kv_blocks_used) / static_cast<double>(wk.kv_blocks_total)
                                      : 0.0);
  w.family("afd:worker_ready", "gauge", "1 when the worker is ready.");
  for (const auto& wk : s.workers)
    w.sample("afd:worker_ready", {{"worker", wk.name}, {"role", wk.role}}, wk.state == worker_state::ready ? 1 : 0);
  w.family("afd:worker_steps_total", "counter", "Engine steps the worker completed (divide the seconds below by it for per-step figures).");
  for (const auto& wk : s.workers)
    w.sample("afd:worker_steps_total", {{"worker", wk.name}, {"role", wk.role}}, static_cast<double>(wk.steps));
  w.family("afd:worker_compute_seconds_total", "counter", "Seconds the worker spent in kernels.");
  for (const auto& wk : s.workers)
    w.sample("afd:worker_compute_seconds_total", {{"worker", wk.name}, {"role", wk.role}}, wk.compute_seconds);
  w.family("afd:worker_network_wait_seconds_total", "counter", "Seconds the worker was blocked on the data plane.");
  for (const auto& wk : s.workers)
    w.sample("afd:worker_network_wait_seconds_total", {{"worker", wk.name}, {"role", wk.role}},
             wk.network_wait_seconds);
  w.family("afd:layer_compute_seconds_total", "counter", "Seconds in kernels, per worker and layer.");
  for (const auto& wk : s.workers)
    for (std::size_t l = 0; l < wk.layer_compute_seconds.size(); ++l)
      w.sample("afd:layer_compute_seconds_total", {{"worker", wk.name}, {"role", wk.role}, {"layer", std::to_string(l)}},
               wk.layer_compute_seconds[l]);
  w.family("afd:layer_network_wait_seconds_total", "counter", "Seconds blocked on the data plane, per worker and layer.");
  for (const auto& wk : s.workers)
    for (std::size_t l = 0; l < wk.layer_wait_seconds.size(); ++l)
      w.sample("afd:layer_network_wait_seconds_total",
               {{"worker", wk.name}, {"role", wk.role}, {"layer", std::to_string(l)}}, wk.layer_wait_seconds[l]);
  // The same per step, averaged over the worker's life (rates of the counters above give it over a window).
  w.family("afd:layer_compute_seconds_per_step", "gauge", "Mean seconds in kernels per engine step, per worker and layer.");
  for (const auto& wk : s.workers)
    if (wk.steps > 0)
      for (std::size_t l = 0; l < wk.layer_compute_seconds.size(); ++l)
        w.sample("afd:layer_compute_seconds_per_step",
                 {{"worker", wk.name}, {"role", wk.role}, {"layer", std::to_string(l)}},
                 wk.layer_compute_seconds[l] / static_cast<double>(wk.steps));
  w.family("afd:layer_network_wait_seconds_per_step", "gauge",
           "Mean seconds blocked on the data plane per engine step, per worker and layer.");
  for (const auto& wk : s.workers)
    if (wk.steps > 0)
      for (std::size_t l = 0; l < wk.layer_wait_seconds.size(); ++l)
        w.sample("afd:layer_network_wait_seconds_per_step",
                 {{"worker", wk.name}, {"role", wk.role}, {"layer", std::to_string(l)}},
                 wk.layer_wait_seconds[l] / static_cast<double>(wk.steps));
  w.family("afd:transport_bytes_total", "counter", "Data-plane bytes, per worker and direction.");
  for (const auto& wk : s.workers) {
    w.sample("afd:transport_bytes_total", {{"worker", wk.name}, {"role", wk.role}, {"direction", "sent"}},
             static_cast<double>(wk.bytes_sent));
    w.sample("afd:transport_bytes_total", {{"worker", wk.name}, {"role", wk.role}, {"direction", "received"}},
             static_cast<double>(wk.bytes_received));
  }
  w.family("afd:transport_messages_total", "counter", "Data-plane messages, per worker and direction.");
  for (const auto& wk : s.workers) {
    w.sample("afd:transport_messages_total", {{"worker", wk.name}, {"role", wk.role}, {"direction", "sent"}},
             static_cast<double>(wk.messages_sent));
    w.sample("afd:transport_messages_total", {{"worker", wk.name}, {"role", wk.role}, {"direction", "received"}},
             static_cast<double>(wk.messages_received));
  }
  w.family("afd:worker_rejoins_total", "counter", "Times the worker came back and joined again.");
  for (const auto& wk : s.workers)
    w.sample("afd:worker_rejoins_total", {{"worker", wk.name}, {"role", wk.role}}, wk.rejoins);
  w.family("afd:fault_firings_total", "counter", "Firings of each armed fault-injection rule, summed over the workers.");
  for (const auto& f : s.faults) w.sample("afd:fault_firings_total", {{"rule", f.rule}}, static_cast<double>(f.fired));
  return w.take();
}

}  // namespace afd::serve
