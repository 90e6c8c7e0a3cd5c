// `afd loadgen --url URL`: N concurrent streamed completions at a request rate against an
// OpenAI-compatible server; prints TTFT, TPOT, ITL and end-to-end latency percentiles and
// throughput as vLLM's serving benchmark does. Exit codes: 0 every request succeeded, 1 some
// failed, 2 bad usage.

#include <cstdio>
#include <limits>
#include <string>

#include <CLI/CLI.hpp>

#include "deploy/cli/command_registry.hpp"
#include "deploy/cli/generate_command.hpp"
#include "deploy/serve/loadgen.hpp"

namespace afd::cli {
namespace {

int run_loadgen(int argc, char** argv) {
  CLI::App app{"Load generator for an OpenAI-compatible server (afd serve): --requests streamed completions,\n"
               "--concurrency at a time, arriving at --rate per second (Poisson; inf: all at once). Prints time\n"
               "to first token, time per output token, inter-token latency and end-to-end latency (mean,\n"
               "median, p90, p99, in ms) and throughput, as vLLM's serving benchmark does.\n"
               "Exit codes: 0 every request succeeded, 1 some failed, 2 bad usage.",
               "afd loadgen"};
  serve::loadgen_options o;
  std::string rate = "inf", prompt_ids;
  bool json = false, with_eos = false;
  app.add_option("--url", o.url, "the server, http://HOST:PORT (a path such as /v1/chat/completions selects the endpoint)")
      ->required();
  app.add_option("--concurrency", o.concurrency, "requests in flight at most (default 1)");
  app.add_option("--rate", rate, "requests per second, Poisson arrivals (default inf: all at once)");
  app.add_option("--requests", o.requests, "requests in all (default 100)");
  app.add_option("--prompt", o.prompt, "the prompt text of every request");
  app.add_option("--prompt-ids", prompt_ids, "the prompt as token ids, comma-separated (instead of --prompt)");
  app.add_option("--max-tokens", o.max_tokens, "max_tokens of every request (default 64)");
  app.add_flag("--stop-at-eos", with_eos, "let EOS end a request (default: ignore_eos, every request gives max-tokens)");
  app.add_option("--model", o.model, "the request's model field (default: left out)");
  app.add_option("--seed", o.seed, "seed of the arrival times");
  app.add_flag("--json", json, "print the summary as one JSON object");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.ignore_eos = !with_eos;
  if (rate == "inf") {
    o.rate = std::numeric_limits<double>::infinity();
  } else {
    try {
      o.rate = std::stod(rate);
    } catch (const std::exception&) {
      std::fprintf(stderr, "afd loadgen: --rate '%s' is not a number (or inf)\n", rate.c_str());
      return 2;
    }
  }
  if (!prompt_ids.empty()) {
    auto ids = parse_token_list(prompt_ids, "--prompt-ids");
    if (!ids) {
      std::fprintf(stderr, "afd loadgen: %s\n", ids.err().message().c_str());
      return 2;
    }
    o.prompt_ids = std::move(*ids);
  }
  auto report = serve::run_loadgen(o);
  if (!report) {
    std::fprintf(stderr, "afd loadgen: %s\n", report.err().message().c_str());
    return 2;
  }
  const auto summary = serve::summarize(*report);
  if (json)
    std::printf("%s\n", summary.dump(2).c_str());
  else
    std::printf("%s", serve::format_report(summary).c_str());
  return summary["failed_requests"].get<std::int64_t>() == 0 ? 0 : 1;
}

const bool registered = register_command(
    {"loadgen", "drive an OpenAI-compatible server with concurrent streams; TTFT, ITL, TPOT percentiles", run_loadgen});

}  // namespace
}  // namespace afd::cli
