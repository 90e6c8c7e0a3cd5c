#pragma once
/// Request traces: for each request the times it was received, queued (accepted by the coordinator),
/// admitted to a worker, gave its first token and finished, with the recoveries it lived through,
/// its x-request-id and its W3C trace context; written as Chrome trace-event JSON (Perfetto and
/// chrome://tracing open it). Thread-safe.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace afd::serve {

using clock_type = std::chrono::steady_clock;

/// A W3C traceparent ("00-<trace id>-<parent span id>-<flags>").
struct trace_context {
  std::string trace_id;   ///< 32 hex digits
  std::string parent_id;  ///< 16 hex digits of the caller's span; empty when the request had none
  std::string span_id;    ///< 16 hex digits: this server's span of the request
  std::string flags = "01";
  /// The header value this server answers with (its own span as the parent).
  std::string header() const;
};

/// Parses a traceparent header; a new trace (random ids) when absent or malformed.
trace_context make_trace_context(const std::string& traceparent_header);

/// One request's life.
struct request_trace {
  std::string request_id;  ///< x-request-id, or the server's own id
  std::string endpoint;
  trace_context trace;
  clock_type::time_point received;
  std::optional<clock_type::time_point> queued, admitted, first_token, finished;
  std::uint32_t recoveries = 0;
  /// The cluster's events while it ran (failures, retried epochs, rejoins, epochs ready), when it
  /// lived through a recovery: when, and what ("failed f0: ...").
  std::vector<std::pair<clock_type::time_point, std::string>> cluster_events;
  std::int64_t prompt_tokens = 0, completion_tokens = 0;
  std::string outcome;  ///< "stop", "length", "abort", "error: ..."
};

class trace_log {
 public:
  trace_log();
  void add(request_trace t);
  std::size_t size() const;
  /// The Chrome trace-event JSON of every request so far.
  std::string chrome_json() const;
  /// Writes chrome_json() to `path` (through a temporary file, so a reader never sees half of it).
  bool write(const std::string& path) const;

 private:
  mutable std::mutex mutex_;
  clock_type::time_point origin_;
  std::vector<request_trace> traces_;
};

}  // namespace afd::serve
