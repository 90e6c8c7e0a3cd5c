// `afd demo`: generates the `small` synthetic model once (cached), then runs several requests of
// different prompt lengths through the reference engine with continuous batching, streaming tokens
// as they come, and ends with throughput and latency figures.
#ifdef AFD_HAVE_ENGINE

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "deploy/cli/command_registry.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/reference_engine.hpp"
#include "runtime/model/make_model.hpp"

namespace afd::cli {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::min<double>(static_cast<double>(v.size()) - 1,
                                                           std::ceil(p * static_cast<double>(v.size())) - 1));
  return v[i];
}

/// Writes the small preset into `dir` unless a checkpoint is already there.
bool ensure_model(const std::string& dir) {
  if (std::filesystem::exists(std::filesystem::path(dir) / "config.json")) return true;
  model::synthetic_options o;
  auto config = model::preset_config("small");
  if (!config) {
    std::fprintf(stderr, "afd demo: %s\n", config.err().message().c_str());
    return false;
  }
  o.config = *config;
  std::fprintf(stderr, "afd demo: writing the 'small' synthetic model to %s (once)\n", dir.c_str());
  auto report = model::write_synthetic_checkpoint(o, dir, true);
  if (!report) {
    std::fprintf(stderr, "afd demo: cannot write the demo model: %s\n", report.err().message().c_str());
    return false;
  }
  std::fprintf(stderr, "afd demo: wrote %.0f MB in %.1f s\n", static_cast<double>(report->bytes) / 1e6,
               report->seconds);
  return true;
}

struct tracked {
  engine::request_id id = 0;
  std::size_t prompt_len = 0;
  clock_type::time_point submitted, last_token;
  double ttft_s = -1.0;
  std::vector<std::int32_t> pending;  ///< tokens not yet printed
  std::int64_t produced = 0;
  bool done = false;
};

int run_demo(int argc, char** argv) {
  CLI::App app{"Runs concurrent requests through the reference engine on a generated 'small' model\n"
               "and reports throughput and latency.",
               "afd demo"};
  std::string model_dir;
  int requests = 8;
  std::int64_t max_new = 32;
  std::int64_t chunk = 64;
  int threads = 0;
  app.add_option("--model", model_dir,
                 "checkpoint directory; default $AFD_DEMO_DIR or build/demo-model, written if absent");
  app.add_option("--requests", requests, "number of requests (default 8)");
  app.add_option("--max-new-tokens", max_new, "tokens per request (default 32)");
  app.add_option("--prefill-chunk", chunk, "prompt tokens computed per step (default 64)");
  app.add_option("--threads", threads, "kernel threads (default: all cores)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (requests < 1 || max_new < 1) {
    std::fprintf(stderr, "afd demo: --requests and --max-new-tokens must be at least 1\n");
    return 2;
  }
  if (threads > 0) kernels::cpu::set_num_threads(threads);
  if (model_dir.empty()) {
    const char* env = std::getenv("AFD_DEMO_DIR");
    model_dir = env && *env ? env : "build/demo-model";
  }
  if (!ensure_model(model_dir)) return 1;

  const auto t_load = clock_type::now();
  auto weights = engine::model_weights::load(model_dir);
  if (!weights) {
    std::fprintf(stderr, "afd demo: cannot load model '%s': %s\n", model_dir.c_str(), weights.err().message().c_str());
    return 1;
  }
  const model_config& c = (*weights)->config();
  engine::engine_options options;
  options.prefill_chunk = chunk;
  auto eng = engine::reference_engine::create(*weights, options);
  if (!eng) {
    std::fprintf(stderr, "afd demo: %s\n", eng.err().message().c_str());
    return 1;
  }
  std::printf("model %s: %lld layers, hidden %lld, %lld experts (top %lld), vocab %lld; loaded in %.2f s\n",
              model_dir.c_str(), static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.moe_num_experts), static_cast<long long>(c.moe_top_k),
              static_cast<long long>(c.vocab_size), seconds_between(t_load, clock_type::now()));
  std::printf("numerics: KV bf16, dispatch fp8, combine bf16 (deterministic); %d kernel threads\n",
              kernels::cpu::num_threads());

  // Prompts of different lengths; every other request sampled, the rest greedy.
  const std::int64_t lengths[] = {24, 180, 60, 7, 120, 40, 250, 90};
  std::vector<engine::request> reqs;
  std::uint32_t state = 12345;
  for (int i = 0; i < requests; ++i) {
    engine::request r;
    const std::int64_t len = std::min<std::int64_t>(lengths[i % 8] + i / 8, c.max_position_embedding - 1);
    for (std::int64_t t = 0; t < len; ++t) {
      state = state * 1664525u + 1013904223u;
      r.prompt.push_back(static_cast<std::int32_t>((state >> 8) % static_cast<std::uint32_t>(c.vocab_size)));
    }
    r.max_new_tokens = max_new;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = static_cast<std::uint64_t>(i);
    }
    reqs.push_back(std::move(r));
  }

  // Requests arrive one per step, so they join a batch that is already decoding.
  std::vector<tracked> track(reqs.size());
  std::vector<double> tpot;
  std::size_t next = 0;
  std::int64_t total_tokens = 0;
  const std::int64_t print_every = 16;
  const auto t0 = clock_type::now();
  while (next < reqs.size() || !eng->idle()) {
    if (next < reqs.size()) {
      tracked& t = track[next];
      t.prompt_len = reqs[next].prompt.size();
      t.submitted = clock_type::now();
      auto id = eng->submit(reqs[next]);
      if (!id) {
        std::fprintf(stderr, "afd demo: %s\n", id.err().message().c_str());
        return 1;
      }
      t.id = *id;
      ++next;
    }
    const auto events = eng->step();
    const auto now = clock_type::now();
    for (const auto& e : events) {
      tracked& t = track[static_cast<std::size_t>(
          std::find_if(track.begin(), track.end(), [&](const tracked& x) { return x.id == e.id; }) - track.begin())];
      if (t.ttft_s < 0)
        t.ttft_s = seconds_between(t.submitted, now);
      else
        tpot.push_back(seconds_between(t.last_token, now));
      t.last_token = now;
      t.pending.push_back(e.token);
      ++t.produced;
      ++total_tokens;
      if (static_cast<std::int64_t>(t.pending.size()) >= print_every || e.finished) {
        std::string line;
        for (auto tok : t.pending) line += " " + std::to_string(tok);
        std::printf("req %zu [%3lld/%lld]%s%s\n", static_cast<std::size_t>(&t - track.data()),
                    static_cast<long long>(t.produced), static_cast<long long>(max_new), line.c_str(),
                    e.finished ? "  (done)" : "");
        std::fflush(stdout);
        t.pending.clear();
      }
      t.done = e.finished;
    }
  }
  const double wall = seconds_between(t0, clock_type::now());

  std::int64_t prompt_tokens = 0;
  std::vector<double> ttft;
  for (const auto& t : track) {
    prompt_tokens += static_cast<std::int64_t>(t.prompt_len);
    ttft.push_back(t.ttft_s);
  }
  const auto& st = eng->stats();
  std::printf("\nsummary\n");
  std::printf("  requests          %d (prompts of 7..250 tokens, joined one per step)\n", requests);
  std::printf("  tokens            %lld generated, %lld prompt tokens prefilled\n",
              static_cast<long long>(total_tokens), static_cast<long long>(prompt_tokens));
  std::printf("  wall time         %.2f s over %lld steps\n", wall, static_cast<long long>(st.steps));
  std::printf("  throughput        %.1f generated tokens/s, %.1f tokens/s including prompts\n",
              static_cast<double>(total_tokens) / wall, static_cast<double>(total_tokens + prompt_tokens) / wall);
  std::printf("  TPOT              p50 %.1f ms, p99 %.1f ms\n", percentile(tpot, 0.5) * 1e3,
              percentile(tpot, 0.99) * 1e3);
  std::printf("  prefill (TTFT)    p50 %.1f ms, max %.1f ms\n", percentile(ttft, 0.5) * 1e3,
              percentile(ttft, 1.0) * 1e3);
  return 0;
}

const bool registered = register_command({"demo", "run concurrent requests on a generated model and report speed", run_demo});

}  // namespace
}  // namespace afd::cli

#endif  // AFD_HAVE_ENGINE
