#pragma once
/// The server's Prometheus metrics, written in the text exposition format (version 0.0.4): vLLM's
/// request metrics under the `afd:` prefix, and the cluster's own figures (per worker and layer
/// compute and network wait, transport bytes and messages, epoch, recoveries, fault firings) read
/// from the coordinator's status at scrape time. Thread-safe.

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <afd/client.hpp>

namespace afd::serve {

/// A Prometheus histogram: cumulative buckets, sum and count.
class histogram {
 public:
  explicit histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<std::uint64_t>& counts() const { return counts_; }  ///< per bucket, not cumulative; last: +Inf
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

class metrics {
 public:
  explicit metrics(std::string model_name);

  /// A request the cluster accepted, with its prompt's tokens.
  void request_accepted(std::int64_t prompt_tokens);
  /// Tokens the server received from the cluster (of any request, finished or not).
  void tokens_generated(std::int64_t n);
  void time_to_first_token(double seconds);
  void inter_token_latency(double seconds);
  /// A request that ended with its output: its finish reason ("stop", "length"), end-to-end latency
  /// and the time it waited for a worker.
  void request_succeeded(const std::string& finish_reason, double e2e_seconds, std::optional<double> queue_seconds);
  /// A request that ended without its full output: "abort" (client gone), "error" (cluster error).
  void request_failed(const std::string& why);
  /// An HTTP response sent.
  void http_response(const std::string& endpoint, int status);

  /// The exposition text; `cluster` (when the coordinator answered) adds its gauges and counters.
  std::string render(const std::optional<client::cluster_status>& cluster) const;

 private:
  mutable std::mutex mutex_;
  std::string model_name_;
  std::uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  std::map<std::string, std::uint64_t> success_, failure_;
  std::map<std::pair<std::string, int>, std::uint64_t> http_;
  histogram ttft_, itl_, e2e_, queue_;
};

}  // namespace afd::serve
