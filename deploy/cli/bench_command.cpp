// `afd bench`: the cluster benchmark (deploy/bench). Builds an AFD cluster in this process, runs N
// concurrent requests through it and through the reference engine, and prints throughput,
// TPOT/TTFT, per-worker compute / network-wait time per layer, stragglers, and the numerical
// agreement of both combine modes with the reference. Exit code 1 when a run fails or a combine
// mode misses its bound (deterministic: bitwise; throughput: the stated tolerance).

#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "deploy/bench/bench.hpp"
#include "deploy/cli/command_registry.hpp"

namespace afd::cli {
namespace {

/// "2A2F" (any case) -> {2, 2}.
bool parse_shape(const std::string& s, std::uint32_t& a, std::uint32_t& f) {
  static const std::regex re("^([0-9]{1,3})[aA]([0-9]{1,3})[fF]$");
  std::smatch m;
  if (!std::regex_match(s, m, re)) return false;
  a = static_cast<std::uint32_t>(std::stoul(m[1]));
  f = static_cast<std::uint32_t>(std::stoul(m[2]));
  return a > 0 && f > 0;
}

/// "1,3" -> {1, 3}.
bool parse_list(const std::string& s, std::vector<std::uint32_t>& out) {
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 4) return false;
    out.push_back(static_cast<std::uint32_t>(std::stoul(item)));
  }
  return !out.empty();
}

/// Where generated preset models are kept between runs.
std::string preset_dir(const std::string& preset) {
  const char* env = std::getenv("AFD_BENCH_DIR");
  const std::filesystem::path base =
      env && *env ? std::filesystem::path(env) : std::filesystem::temp_directory_path() / "afd-bench-models";
  return (base / preset).string();
}

int run_bench_command(int argc, char** argv) {
  CLI::App app{"Benchmarks an AFD cluster built in this process (attention and FFN engine threads over the\n"
               "loopback transport) against the single-process reference engine on the same load:\n"
               "throughput, TPOT/TTFT, per-worker compute and network wait per layer, stragglers, and\n"
               "the numerical agreement of both combine modes.",
               "afd bench"};
  std::string topology_file, shape = "2A2F", model_dir, preset = "small", ks, mode = "both", combine_dtype;
  bench::bench_options o;
  bool json = false, quick = false;
  app.add_option("--topology", topology_file, "topology YAML (workers, placement, numerics, K); its transport is "
                                              "replaced by loopback");
  app.add_option("--shape", shape, "cluster shape when no topology is given, e.g. 2A2F (default)");
  app.add_option("--model", model_dir, "checkpoint directory (default: the preset, generated once)");
  app.add_option("--preset", preset, "synthetic model: tiny or small (default small; tiny with --quick)");
  app.add_option("--requests", o.requests, "concurrent requests (default 16)");
  app.add_option("--prompt-len", o.prompt_len, "prompt tokens per request (default 32)");
  app.add_option("--max-new-tokens", o.max_new_tokens, "tokens generated per request (default 32)");
  app.add_option("--prefill-chunk", o.prefill_chunk, "prompt tokens per step per attention worker (default 256)");
  app.add_option("--micro-batches", ks, "K, or a list such as 1,3 (default: the topology's, else 3)");
  app.add_option("--combine-mode", mode, "deterministic, throughput or both (default: both; with --topology, its mode)");
  app.add_option("--combine-dtype", combine_dtype, "F->A results: bf16 (default) or f32");
  app.add_flag("--slice-shared", o.slice_shared,
               "throughput mode with --shape: slice shared/dense units over the FFN workers (tensor parallel)");
  app.add_option("--threads", o.reference_threads, "kernel threads of the reference engine (default: usable cores)");
  app.add_option("--repeat", o.repeats, "runs of each configuration, interleaved; the median is shown (default 1)");
  app.add_option("--timeout", o.timeout_seconds, "seconds a cluster run may take (default 600)");
  app.add_flag("--json", json, "print one JSON object instead of the text report");
  app.add_flag("--quick", quick, "a small run for smoke tests: tiny preset, 4 requests, 8 + 8 tokens");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto usage = [](const std::string& what) {
    std::fprintf(stderr, "afd bench: %s\n", what.c_str());
    return 2;
  };
  if (!topology_file.empty() && app.count("--shape") > 0) return usage("give --topology or --shape, not both");
  if (!model_dir.empty() && app.count("--preset") > 0) return usage("give --model or --preset, not both");
  if (topology_file.empty() && !parse_shape(shape, o.attention_workers, o.ffn_workers))
    return usage("--shape must look like 2A2F (attention workers, then FFN workers), got '" + shape + "'");
  if (!ks.empty() && !parse_list(ks, o.micro_batches))
    return usage("--micro-batches must be a number or a comma-separated list such as 1,3, got '" + ks + "'");
  if (!topology_file.empty() && app.count("--combine-mode") == 0) {
    // The topology's mode.
  } else if (mode == "deterministic") {
    o.modes = {combine_mode::deterministic};
  } else if (mode == "throughput") {
    o.modes = {combine_mode::throughput};
  } else if (mode == "both") {
    o.modes = {combine_mode::deterministic, combine_mode::throughput};
  } else {
    return usage("--combine-mode must be deterministic, throughput or both, got '" + mode + "'");
  }
  if (!combine_dtype.empty()) {
    if (combine_dtype != "bf16" && combine_dtype != "f32")
      return usage("--combine-dtype must be bf16 or f32, got '" + combine_dtype + "'");
    o.combine_dtype = combine_dtype == "f32" ? dtype::f32 : dtype::bf16;
  }
  if (o.repeats < 1 || o.repeats > 99) return usage("--repeat must be in [1, 99], got " + std::to_string(o.repeats));
  o.quick = quick;
  if (quick) {
    if (app.count("--preset") == 0) preset = "tiny";
    if (app.count("--requests") == 0) o.requests = 4;
    if (app.count("--prompt-len") == 0) o.prompt_len = 8;
    if (app.count("--max-new-tokens") == 0) o.max_new_tokens = 8;
  }
  if (app.count("--prefill-chunk") == 0) o.prefill_chunk = 0;  // the topology's, else 256
  auto progress = [](const std::string& s) { std::fprintf(stderr, "afd bench: %s\n", s.c_str()); };

  if (model_dir.empty() && (!topology_file.empty() && app.count("--preset") == 0)) {
    // The topology's own model.
  } else if (model_dir.empty()) {
    if (preset != "tiny" && preset != "small") return usage("--preset must be tiny or small, got '" + preset + "'");
    o.model_dir = preset_dir(preset);
    o.model_name = preset + " (synthetic)";
    if (auto ok = bench::ensure_preset_model(preset, o.model_dir, progress); !ok) {
      std::fprintf(stderr, "afd bench: cannot generate the '%s' model: %s\n", preset.c_str(),
                   ok.err().to_string().c_str());
      return 1;
    }
  } else {
    o.model_dir = model_dir;
  }
  o.topology_file = topology_file;

  auto report = bench::run_bench(o, progress);
  if (!report) {
    std::fprintf(stderr, "afd bench: %s\n", report.err().to_string().c_str());
    return 1;
  }
  if (json)
    std::printf("%s\n", bench::to_json(*report).c_str());
  else
    std::printf("%s", bench::to_text(*report).c_str());
  bool ok = true;
  for (const auto& run : report->runs) ok = ok && run.accuracy.within_tolerance;
  if (!ok) {
    std::fprintf(stderr, "afd bench: a combine mode missed its bound (deterministic: bitwise; throughput: the "
                         "stated tolerance)\n");
    return 1;
  }
  return 0;
}

const bool registered = register_command(
    {"bench", "benchmark an in-process AFD cluster against the reference engine", run_bench_command});

}  // namespace
}  // namespace afd::cli

