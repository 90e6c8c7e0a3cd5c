// `afd generate`: runs one request through the single-process reference engine, or through an
// AFD cluster: `--topology FILE` runs the cluster the file describes inside this process for this
// one call (`--model DIR` overrides the file's model path), `--connect HOST:PORT` sends it to a
// launched cluster. The output (tokens, JSON with logits) is the same in every case.
// Exit codes: 0 success, 2 bad usage (malformed options, a request the model cannot take: token
// id outside the vocabulary, prompt longer than the context), 1 runtime failure (missing model
// directory, bad checkpoint, cluster unreachable or failed).

#include "deploy/cli/generate_command.hpp"

#include <chrono>
#include <climits>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <string>

#include "deploy/cli/cluster_target.hpp"
#include "deploy/cli/command_registry.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/engine/model_weights.hpp"
#include <afd/client.hpp>
#include "deploy/topology/cluster_spec_from_topology.hpp"
#include "deploy/client/embedded.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/topology/topology.hpp"

namespace afd::cli {

void add_generate_options(CLI::App& app, generate_args& a) {
  // Required unless a cluster command adds --topology / --connect (checked in run_generate).
  app.add_option("--model", a.model_dir, "checkpoint directory (config.json + safetensors)");
  app.add_option("--prompt-ids", a.prompt_ids, "prompt token ids, comma-separated: 5,17,300")->required();
  app.add_option("--max-new-tokens", a.max_new_tokens, "tokens to generate at most (default 16)");
  app.add_option("--temperature", a.temperature, "sampling temperature; 0 (default) is greedy");
  app.add_option("--top-p", a.top_p, "nucleus sampling mass in (0, 1] (default 1: off)");
  app.add_option("--top-k", a.top_k, "sample among the k most likely tokens (default 0: off)");
  app.add_option("--seed", a.seed, "sampling seed (default 0)");
  app.add_option("--stop-ids", a.stop_ids, "token ids that end generation, comma-separated");
  app.add_option("--kv-dtype", a.kv_dtype, "KV cache: f32, bf16 (default) or fp8");
  app.add_option("--dispatch-dtype", a.dispatch_dtype,
                 "FFN input (A->F) rounding: fp8 (default), bf16 or f32; f32 when --kv-dtype f32 is given alone");
  app.add_option("--combine-dtype", a.combine_dtype,
                 "FFN unit output (F->A) rounding: bf16 (default) or f32; f32 when --kv-dtype f32 is given alone");
  app.add_option("--combine-mode", a.combine_mode, "deterministic (default) or throughput");
  app.add_flag("--json", a.json, "print one JSON object {\"tokens\": [...], \"logits\": [[...]]}");
  app.add_option("--logits", a.logits, "with --json: the fp32 logits of the first K generated positions");
}

expected<std::vector<std::int32_t>> parse_token_list(const std::string& text, const std::string& what) {
  std::vector<std::int32_t> ids;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < INT32_MIN || v > INT32_MAX)
      return fail(errc::invalid_argument, what, ": '", item, "' is not a token id (expected e.g. 5,17,300)");
    ids.push_back(static_cast<std::int32_t>(v));
    pos = end + 1;
    if (end + 1 == text.size()) return fail(errc::invalid_argument, what, ": trailing comma in '", text, "'");
  }
  return ids;
}

expected<generate_plan> resolve_generate_args(const generate_args& a) {
  generate_plan p;
  auto prompt = parse_token_list(a.prompt_ids, "--prompt-ids");
  if (!prompt) return std::move(prompt).err();
  if (prompt->empty()) return fail(errc::invalid_argument, "empty prompt: --prompt-ids needs at least one token id");
  p.request.prompt = std::move(*prompt);
  auto stops = parse_token_list(a.stop_ids, "--stop-ids");
  if (!stops) return std::move(stops).err();
  p.request.stop_ids = std::move(*stops);
  p.request.max_new_tokens = a.max_new_tokens;
  p.request.sampling.temperature = a.temperature;
  p.request.sampling.top_p = a.top_p;
  p.request.sampling.top_k = a.top_k;
  p.request.sampling.seed = a.seed;
  if (a.logits < 0) return fail(errc::invalid_argument, "--logits must be >= 0, got ", a.logits);
  p.request.logits_rows = a.logits;

  auto pick = [](const std::string& name, const char* option, std::initializer_list<dtype> allowed,
                 const char* choices) -> expected<dtype> {
    const auto t = parse_dtype(name);
    bool ok = t.has_value();
    if (ok) {
      ok = false;
      for (dtype d : allowed) ok = ok || *t == d;
    }
    if (!ok) return fail(errc::invalid_argument, "unknown ", option, " '", name, "' (", choices, ")");
    return *t;
  };
  if (!a.kv_dtype.empty()) {
    auto t = pick(a.kv_dtype, "--kv-dtype", {dtype::f32, dtype::bf16, dtype::f8_e4m3}, "f32, bf16 or fp8");
    if (!t) return std::move(t).err();
    p.num.kv = *t;
    // An f32 cache alone asks for the exact run: the other rounding points follow unless given.
    if (*t == dtype::f32) p.num.dispatch = p.num.combine = dtype::f32;
  }
  if (!a.dispatch_dtype.empty()) {
    auto t = pick(a.dispatch_dtype, "--dispatch-dtype", {dtype::f32, dtype::bf16, dtype::f8_e4m3}, "fp8, bf16 or f32");
    if (!t) return std::move(t).err();
    p.num.dispatch = *t;
  }
  if (!a.combine_dtype.empty()) {
    auto t = pick(a.combine_dtype, "--combine-dtype", {dtype::f32, dtype::bf16}, "bf16 or f32");
    if (!t) return std::move(t).err();
    p.num.combine = *t;
  }
  if (a.combine_mode == "throughput") {
    p.num.mode = combine_mode::throughput;
  } else if (a.combine_mode.empty() || a.combine_mode == "deterministic") {
    p.num.mode = combine_mode::deterministic;
  } else {
    return fail(errc::invalid_argument, "unknown --combine-mode '", a.combine_mode,
                "' (deterministic or throughput)");
  }
  return p;
}

void print_generation(std::FILE* out, const engine::result& r, bool json) {
  if (!json) {
    for (std::size_t i = 0; i < r.tokens.size(); ++i) std::fprintf(out, "%s%d", i ? " " : "", r.tokens[i]);
    std::fprintf(out, "\n");
    return;
  }
  std::fprintf(out, "{\"tokens\": [");
  for (std::size_t i = 0; i < r.tokens.size(); ++i) std::fprintf(out, "%s%d", i ? ", " : "", r.tokens[i]);
  std::fprintf(out, "], \"finish_reason\": \"%s\"", engine::to_string(r.reason));
  if (!r.logits.empty()) {
    std::fprintf(out, ", \"logits\": [");
    for (std::size_t i = 0; i < r.logits.size(); ++i) {
      std::fprintf(out, "%s[", i ? ", " : "");
      for (std::size_t j = 0; j < r.logits[i].size(); ++j)
        std::fprintf(out, "%s%.9g", j ? ", " : "", static_cast<double>(r.logits[i][j]));
      std::fprintf(out, "]");
    }
    std::fprintf(out, "]");
  }
  std::fprintf(out, "}\n");
}

namespace {

/// Exit code of a cluster error: the request's own mistakes are usage errors.
int cluster_exit_code(const error& e) {
  return e.code() == errc::invalid_argument || e.code() == errc::rejected ? 2 : 1;
}

/// `--topology FILE` / `--connect HOST:PORT`: the request through an AFD cluster.
int generate_on_cluster(const generate_args& args, const generate_plan& plan, const std::string& topology_file,
                        const std::string& connect) {
  std::unique_ptr<client::cluster> c;
  if (!connect.empty()) {
    if (!args.kv_dtype.empty() || !args.dispatch_dtype.empty() || !args.combine_dtype.empty() ||
        !args.combine_mode.empty() || !args.model_dir.empty()) {
      std::fprintf(stderr,
                   "afd generate: --connect: the cluster runs the model and numerics of its topology file; leave "
                   "out --model, --kv-dtype, --dispatch-dtype, --combine-dtype and --combine-mode\n");
      return 2;
    }
    // HOST:PORT, or the topology file of a launched cluster (its coordinator and credentials).
    const bool is_file = connect.find(':') == std::string::npos || std::filesystem::exists(connect);
    auto address = launch::resolve_cluster_address(is_file ? connect : "", is_file ? "" : connect);
    if (!address) {
      std::fprintf(stderr, "afd generate: --connect: %s\n", address.err().message().c_str());
      return 2;
    }
    auto connected = connect_cluster(*address, std::chrono::seconds(10));
    if (!connected) {
      std::fprintf(stderr, "afd generate: %s\n", connected.err().message().c_str());
      return 1;
    }
    c = std::move(*connected);
  } else {
    auto t = topology::load_file(topology_file);
    if (!t) {
      std::fprintf(stderr, "%s\n", t.err().message().c_str());
      return 2;
    }
    if (!args.model_dir.empty()) t->model.path = args.model_dir;
    // Numerics given on the command line replace the file's.
    if (!args.kv_dtype.empty()) t->model.kv_dtype = plan.num.kv;
    if (!args.kv_dtype.empty() || !args.dispatch_dtype.empty()) t->model.dispatch_dtype = plan.num.dispatch;
    if (!args.kv_dtype.empty() || !args.combine_dtype.empty()) t->model.combine_dtype = plan.num.combine;
    if (!args.combine_mode.empty())
      t->model.combine = plan.num.mode == combine_mode::deterministic ? topology::combine_mode::deterministic
                                                                      : topology::combine_mode::throughput;
    auto config = topology::read_model_config(*t);
    if (!config) {
      std::fprintf(stderr, "afd generate: cannot read the model config of %s: %s\n", topology_file.c_str(),
                   config.err().message().c_str());
      return 1;
    }
    auto spec = client::to_cluster_spec(*t, *config);
    if (!spec) {
      std::fprintf(stderr, "%s\n", spec.err().message().c_str());
      return 2;
    }
    auto embedded = client::embed_spec(std::move(*spec));
    if (!embedded) {
      std::fprintf(stderr, "afd generate: cluster of %s: %s\n", topology_file.c_str(),
                   embedded.err().message().c_str());
      return 1;
    }
    c = std::move(*embedded);
  }
  client::request r;
  r.prompt = plan.request.prompt;
  r.max_new_tokens = plan.request.max_new_tokens;
  r.sampling.temperature = plan.request.sampling.temperature;
  r.sampling.top_k = plan.request.sampling.top_k;
  r.sampling.top_p = plan.request.sampling.top_p;
  r.sampling.seed = plan.request.sampling.seed;
  r.stop_ids = plan.request.stop_ids;
  r.logits_rows = plan.request.logits_rows;
  const auto t0 = std::chrono::steady_clock::now();
  auto id = c->submit(r);
  if (!id) {
    std::fprintf(stderr, "afd generate: %s\n", id.err().message().c_str());
    c->shutdown();
    return cluster_exit_code(id.err());
  }
  auto res = c->wait(*id, std::chrono::hours(1));
  const auto t1 = std::chrono::steady_clock::now();
  c->shutdown();
  if (!res) {
    std::fprintf(stderr, "afd generate: %s\n", res.err().message().c_str());
    return cluster_exit_code(res.err());
  }
  engine::result out;
  out.tokens = res->tokens;
  out.reason = res->finish_reason == "stop"      ? engine::finish_reason::stop
               : res->finish_reason == "context" ? engine::finish_reason::context
                                                 : engine::finish_reason::length;
  out.logits = std::move(res->logits);
  print_generation(stdout, out, args.json);
  if (!args.json)
    std::fprintf(stderr, "%zu tokens (finish: %s) in %.1f ms on the cluster %s\n", out.tokens.size(),
                 res->finish_reason.c_str(), std::chrono::duration<double>(t1 - t0).count() * 1e3,
                 connect.empty() ? ("of " + topology_file).c_str() : ("at " + connect).c_str());
  return 0;
}

int run_generate(int argc, char** argv) {
  CLI::App app{"Generates tokens for one prompt with the single-process reference engine, or with an AFD\n"
               "cluster: --topology FILE runs the cluster the file describes for this call, --connect\n"
               "HOST:PORT uses a launched one (`afd launch`). The output is the same in every case.\n"
               "Numerics default to the cluster's (KV bf16, dispatch fp8, combine bf16, deterministic);\n"
               "--kv-dtype f32 alone runs f32 everywhere, reproducing the float64 model definition.",
               "afd generate"};
  generate_args args;
  add_generate_options(app, args);
  std::string topology_file, connect;
  auto* topo = app.add_option("--topology", topology_file,
                              "run on the cluster this topology file describes (in this process, for this call); "
                              "--model overrides its model path");
  app.add_option("--connect", connect, "run on the launched cluster whose coordinator is at HOST:PORT, or that a topology FILE describes")
      ->excludes(topo);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (args.model_dir.empty() && topology_file.empty() && connect.empty()) {
    std::fprintf(stderr, "afd generate: --model is required (or --topology FILE, or --connect HOST:PORT)\n");
    return 2;
  }
  auto plan = resolve_generate_args(args);
  if (!plan) {
    std::fprintf(stderr, "afd generate: %s\n", plan.err().message().c_str());
    return 2;
  }
  if (plan->request.logits_rows > 0 && !args.json)
    std::fprintf(stderr, "afd generate: note: --logits is printed only with --json\n");
  if (!topology_file.empty() || !connect.empty()) return generate_on_cluster(args, *plan, topology_file, connect);

  const auto t0 = std::chrono::steady_clock::now();
  auto weights = engine::model_weights::load(args.model_dir);
  if (!weights) {
    std::fprintf(stderr, "afd generate: cannot load model '%s': %s\n", args.model_dir.c_str(),
                 weights.err().message().c_str());
    return 1;
  }
  engine::engine_options options;
  options.num = plan->num;
  auto eng = engine::reference_engine::create(*weights, options);
  if (!eng) {
    std::fprintf(stderr, "afd generate: %s\n", eng.err().message().c_str());
    return 1;
  }
  const auto t1 = std::chrono::steady_clock::now();
  auto id = eng->submit(plan->request);
  if (!id) {
    std::fprintf(stderr, "afd generate: %s\n", id.err().message().c_str());
    return 2;
  }
  double first_token_s = 0.0;
  while (!eng->idle()) {
    const auto events = eng->step();
    if (first_token_s == 0.0 && !events.empty())
      first_token_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  const auto t2 = std::chrono::steady_clock::now();
  auto res = eng->take_result(*id);
  if (!res) {
    std::fprintf(stderr, "afd generate: %s\n", res.err().message().c_str());
    return 1;
  }
  print_generation(stdout, *res, args.json);
  if (!args.json) {
    const double load_s = std::chrono::duration<double>(t1 - t0).count();
    const double gen_s = std::chrono::duration<double>(t2 - t1).count();
    const auto n = static_cast<double>(res->tokens.size());
    const double tpot_ms = n > 1 ? (gen_s - first_token_s) / (n - 1) * 1e3 : 0.0;
    std::fprintf(stderr,
                 "%zu tokens (finish: %s); load %.2f s, prefill of %zu tokens %.1f ms, %.2f ms per output token, "
                 "%d threads\n",
                 res->tokens.size(), engine::to_string(res->reason), load_s, plan->request.prompt.size(),
                 first_token_s * 1e3, tpot_ms, kernels::cpu::num_threads());
  }
  return 0;
}

const bool registered = register_command(
    {"generate", "generate tokens with the reference engine, or a cluster (--topology, --connect)", run_generate});

}  // namespace
}  // namespace afd::cli

