#pragma once
/// `afd loadgen`: drives an OpenAI-compatible server (afd serve, vLLM, ...) with streamed
/// completions from N concurrent clients at a request rate, and reports time to first token,
/// inter-token latency, time per output token and end-to-end latency the way vLLM's serving
/// benchmark does (benchmarks/benchmark_serving.py).

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/error.hpp"

namespace afd::serve {

struct loadgen_options {
  std::string url = "http://127.0.0.1:8000";  ///< the server; the path, when given, replaces /v1/completions
  int concurrency = 1;                         ///< requests in flight at most
  double rate = std::numeric_limits<double>::infinity();  ///< requests per second (Poisson arrivals); inf: all at once
  int requests = 100;
  std::string prompt = "The quick brown fox jumps over the lazy dog.";
  std::vector<std::int32_t> prompt_ids;        ///< instead of prompt when not empty
  std::int64_t max_tokens = 64;
  bool ignore_eos = true;                      ///< every request generates max_tokens
  std::string model;                           ///< the "model" field; empty: left out
  std::uint64_t seed = 0;                      ///< of the arrival times
};

/// One request as the client saw it.
struct loadgen_sample {
  bool ok = false;
  std::string error;
  double ttft = 0, e2e = 0;  ///< seconds
  std::vector<double> itl;   ///< seconds between successive chunks that carried tokens
  std::int64_t prompt_tokens = 0, output_tokens = 0;
};

struct loadgen_report {
  std::vector<loadgen_sample> samples;
  double duration = 0;  ///< seconds from the first send to the last end
};

/// Runs the benchmark; errc::invalid_argument for a bad URL or options.
expected<loadgen_report> run_loadgen(const loadgen_options& options);

/// The summary figures (milliseconds, per second) as JSON.
nlohmann::json summarize(const loadgen_report& r);
/// The summary as vLLM's benchmark prints it.
std::string format_report(const nlohmann::json& summary);

}  // namespace afd::serve
