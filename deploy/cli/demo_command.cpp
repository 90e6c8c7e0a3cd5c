// `afd demo`: generates the `small` synthetic model once (cached), starts an embedded 2A2F cluster
// (deploy/examples/2a2f.yaml: two attention workers, two FFN workers, one process, loopback data
// plane), sends several concurrent requests of different prompt lengths through the client API,
// streams their tokens as they come, and ends with throughput and latency figures. `--check`
// also runs every request through the single-process reference engine and compares the tokens.

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/core/stats.hpp"
#include "deploy/cli/command_registry.hpp"
#include <afd/client.hpp>
#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/reference_engine.hpp"
#include "runtime/model/config.hpp"
#include "runtime/model/make_model.hpp"

namespace afd::cli {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
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

/// deploy/examples/2a2f.yaml from the working directory, else from the source tree the binary
/// was built in (build*/deploy/cli/afd).
std::string default_topology() {
  const std::filesystem::path rel = "deploy/examples/2a2f.yaml";
  if (std::filesystem::exists(rel)) return rel.string();
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto candidate = exe.parent_path().parent_path().parent_path().parent_path() / rel;
    if (std::filesystem::exists(candidate)) return candidate.string();
  }
  return rel.string();
}

/// A request's progress as its tokens stream in (updated on the client's callback thread).
struct tracked {
  client::request_id id = 0;
  std::size_t prompt_len = 0;
  clock_type::time_point submitted, last_token;
  double ttft_s = -1.0;
  std::vector<double> gaps;           ///< seconds between consecutive tokens (TPOT samples)
  std::vector<std::int32_t> pending;  ///< tokens not yet printed
  std::int64_t produced = 0;
};

int run_demo(int argc, char** argv) {
  CLI::App app{"Runs concurrent requests through an embedded 2A2F AFD cluster (two attention and two FFN\n"
               "workers in this process) on a generated 'small' model, streaming tokens, and reports\n"
               "throughput and TPOT.",
               "afd demo"};
  std::string model_dir;
  std::string topology_file;
  std::string transport = "loopback";
  int requests = 8;
  std::int64_t max_new = 32;
  std::int64_t chunk = 256;
  int threads = 0;
  bool check = false;
  app.add_option("--model", model_dir,
                 "checkpoint directory; default $AFD_DEMO_DIR or build/demo-model, written if absent");
  app.add_option("--requests", requests, "number of requests (default 8)");
  app.add_option("--max-new-tokens", max_new, "tokens per request (default 32)");
  app.add_option("--prefill-chunk", chunk, "prompt tokens computed per step (default 256)");
  app.add_option("--threads", threads, "kernel threads (default: all cores)");
  app.add_option("--topology", topology_file, "cluster topology (default deploy/examples/2a2f.yaml)");
  app.add_option("--transport", transport, "data plane inside the process: loopback (default) or ucx");
  app.add_flag("--check", check, "also run every request through the reference engine and compare tokens");
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
  if (chunk < 1) {
    std::fprintf(stderr, "afd demo: --prefill-chunk must be at least 1\n");
    return 2;
  }
  if (threads > 0) kernels::cpu::set_num_threads(threads);
  if (model_dir.empty()) {
    const char* env = std::getenv("AFD_DEMO_DIR");
    model_dir = env && *env ? env : "build/demo-model";
  }
  if (topology_file.empty()) topology_file = default_topology();
  if (!ensure_model(model_dir)) return 1;

  const auto t_start = clock_type::now();
  client::embed_options eo;
  eo.model_path = model_dir;
  eo.transport = transport;
  eo.prefill_chunk = chunk;
  auto cluster = client::cluster::embed(topology_file, eo);
  if (!cluster) {
    std::fprintf(stderr, "afd demo: cannot start the cluster of %s: %s\n", topology_file.c_str(),
                 cluster.err().to_string().c_str());
    return 1;
  }
  client::cluster& c = **cluster;
  auto st = c.status();
  if (!st) {
    std::fprintf(stderr, "afd demo: %s\n", st.err().to_string().c_str());
    return 1;
  }
  std::printf("cluster %s: ", topology_file.c_str());
  for (const auto& w : st->workers) std::printf("%s (%s, %s) ", w.name.c_str(), w.role.c_str(), w.device.c_str());
  std::printf("\n  ready in %.2f s; %s data plane; model %s; %d kernel threads\n",
              seconds_between(t_start, clock_type::now()), transport.c_str(), model_dir.c_str(),
              kernels::cpu::num_threads());

  // Prompts of different lengths; every other request sampled (seeded), the rest greedy.
  const std::int64_t lengths[] = {24, 180, 60, 7, 120, 40, 250, 90};
  std::vector<client::request> reqs;
  std::uint32_t state = 12345;
  auto model_cfg = model::parse_checkpoint_config_file((std::filesystem::path(model_dir) / "config.json").string());
  if (!model_cfg) {
    std::fprintf(stderr, "afd demo: %s\n", model_cfg.err().to_string().c_str());
    return 1;
  }
  const std::int64_t vocab_size = model_cfg->model.vocab_size;
  const std::int64_t max_prompt = model_cfg->model.max_position_embedding - max_new;
  for (int i = 0; i < requests; ++i) {
    client::request r;
    const std::int64_t len = std::max<std::int64_t>(1, std::min<std::int64_t>(lengths[i % 8] + i / 8, max_prompt));
    for (std::int64_t t = 0; t < len; ++t) {
      state = state * 1664525u + 1013904223u;
      r.prompt.push_back(static_cast<std::int32_t>((state >> 8) % static_cast<std::uint32_t>(vocab_size)));
    }
    r.max_new_tokens = max_new;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = static_cast<std::uint64_t>(i);
    }
    reqs.push_back(std::move(r));
  }

  // All requests are submitted at once: the cluster batches them continuously, spread over both
  // attention workers; tokens stream back through the callbacks.
  std::mutex print_mutex;
  std::vector<tracked> track(reqs.size());
  const std::int64_t print_every = 16;
  const auto t0 = clock_type::now();
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    tracked& t = track[i];
    t.prompt_len = reqs[i].prompt.size();
    t.submitted = clock_type::now();
    auto on_token = [&, i](const client::token& tok) {
      std::lock_guard lock(print_mutex);
      tracked& x = track[i];
      const auto now = clock_type::now();
      if (x.ttft_s < 0)
        x.ttft_s = seconds_between(x.submitted, now);
      else
        x.gaps.push_back(seconds_between(x.last_token, now));
      x.last_token = now;
      x.pending.push_back(tok.value);
      ++x.produced;
      if (static_cast<std::int64_t>(x.pending.size()) >= print_every || tok.last) {
        std::string line;
        for (auto v : x.pending) line += " " + std::to_string(v);
        std::printf("req %zu [%3lld/%lld]%s%s\n", i, static_cast<long long>(x.produced),
                    static_cast<long long>(max_new), line.c_str(), tok.last ? "  (done)" : "");
        std::fflush(stdout);
        x.pending.clear();
      }
    };
    auto id = c.submit(reqs[i], on_token);
    if (!id) {
      std::fprintf(stderr, "afd demo: request %zu: %s\n", i, id.err().to_string().c_str());
      return 1;
    }
    t.id = *id;
  }
  std::vector<client::response> results;
  for (auto& t : track) {
    auto r = c.wait(t.id, std::chrono::minutes(10));
    if (!r) {
      std::fprintf(stderr, "afd demo: request %lld: %s\n", static_cast<long long>(t.id), r.err().to_string().c_str());
      return 1;
    }
    results.push_back(std::move(*r));
  }
  const double wall = seconds_between(t0, clock_type::now());
  auto final_status = c.status();
  c.shutdown();

  std::int64_t prompt_tokens = 0, total_tokens = 0;
  std::vector<double> ttft, tpot;
  for (std::size_t i = 0; i < track.size(); ++i) {
    prompt_tokens += static_cast<std::int64_t>(track[i].prompt_len);
    total_tokens += static_cast<std::int64_t>(results[i].tokens.size());
    ttft.push_back(track[i].ttft_s);
    tpot.insert(tpot.end(), track[i].gaps.begin(), track[i].gaps.end());
  }
  std::printf("\nsummary\n");
  std::printf("  cluster           2 attention + 2 FFN workers in this process (%s)\n", topology_file.c_str());
  std::printf("  requests          %d concurrent (prompts of 7..250 tokens; greedy and seeded sampling)\n", requests);
  std::printf("  tokens            %lld generated, %lld prompt tokens prefilled\n",
              static_cast<long long>(total_tokens), static_cast<long long>(prompt_tokens));
  std::printf("  wall time         %.2f s\n", wall);
  std::printf("  throughput        %.1f generated tokens/s, %.1f tokens/s including prompts\n",
              static_cast<double>(total_tokens) / wall, static_cast<double>(total_tokens + prompt_tokens) / wall);
  std::printf("  TPOT              p50 %.1f ms, p99 %.1f ms (time between a request's tokens)\n",
              percentile(tpot, 0.5) * 1e3, percentile(tpot, 0.99) * 1e3);
  std::printf("  prefill (TTFT)    p50 %.1f ms, max %.1f ms\n", percentile(ttft, 0.5) * 1e3,
              percentile(ttft, 1.0) * 1e3);
  if (final_status) {
    std::printf("  workers          ");
    for (const auto& w : final_status->workers) std::printf(" %s:%s", w.name.c_str(), std::string(to_string(w.state)).c_str());
    std::printf("\n");
  }

  if (check) {
    auto weights = engine::model_weights::load(model_dir);
    if (!weights) {
      std::fprintf(stderr, "afd demo: %s\n", weights.err().to_string().c_str());
      return 1;
    }
    engine::engine_options o;  // the numerics of the topology's defaults: KV bf16, fp8 out, bf16 back
    o.prefill_chunk = chunk;
    auto eng = engine::reference_engine::create(*weights, o);
    if (!eng) {
      std::fprintf(stderr, "afd demo: %s\n", eng.err().to_string().c_str());
      return 1;
    }
    std::vector<engine::request> ereqs;
    for (const auto& r : reqs) {
      engine::request e;
      e.prompt = r.prompt;
      e.max_new_tokens = r.max_new_tokens;
      e.sampling.temperature = r.sampling.temperature;
      e.sampling.top_k = r.sampling.top_k;
      e.sampling.top_p = r.sampling.top_p;
      e.sampling.seed = r.sampling.seed;
      ereqs.push_back(std::move(e));
    }
    auto ref = eng->generate(ereqs);
    if (!ref) {
      std::fprintf(stderr, "afd demo: %s\n", ref.err().to_string().c_str());
      return 1;
    }
    std::size_t same = 0;
    for (std::size_t i = 0; i < results.size(); ++i) same += (*ref)[i].tokens == results[i].tokens ? 1 : 0;
    std::printf("  check             %zu of %zu requests bitwise equal to the single-process reference engine\n",
                same, results.size());
    if (same != results.size()) return 1;
  }
  return 0;
}

const bool registered =
    register_command({"demo", "run concurrent requests on an embedded 2A2F cluster and report speed", run_demo});

}  // namespace
}  // namespace afd::cli

