// `afd plan`: the decoding cost model and the AFD deployment planner (docs/planner.md).
//   afd plan cost      --model M [--context 4k,8k] [--hardware h800,h20] [--json]
//   afd plan sparsity  [--hardware ...] [--model ...] [--network-gbps 3200,...] [--json]
//   afd plan deploy    --model M --hardware A[,F] [--tpot 50ms] [--context 4k] [--topology FILE] [--json]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "deploy/cli/command_registry.hpp"
#include "deploy/plan/architecture.hpp"
#include "deploy/plan/cost_model.hpp"
#include "deploy/plan/deploy_planner.hpp"
#include "deploy/plan/hardware.hpp"
#include "deploy/plan/report.hpp"
#include "deploy/plan/units.hpp"

namespace {

using namespace afd::plan;

int report_error(const afd::error& e) {
  std::fprintf(stderr, "afd plan: %s\n", e.message().c_str());
  return e.code() == afd::errc::invalid_argument ? 2 : 1;
}

void print(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

afd::expected<hardware_catalog> load_catalog(const std::vector<std::string>& files) {
  hardware_catalog c;
  for (const auto& f : files) {
    if (auto ok = c.load_file(f); !ok) return std::move(ok).err();
  }
  return c;
}

afd::expected<double> kv_bytes(int bits) {
  if (bits != 8 && bits != 16 && bits != 32) return afd::fail(afd::errc::invalid_argument, "--kv-bits must be 8, 16 or 32");
  return bits / 8.0;
}

/// "2x8" -> (2, 8); "x8" -> (any, 8); "2x" or "2" -> (2, any).
afd::expected<std::pair<int, int>> parse_shape(const std::string& text) {
  const auto x = text.find('x');
  auto number = [&](const std::string& s) -> int {
    if (s.empty()) return 0;
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    return (*end != '\0' || v < 1 || v > 4096) ? -1 : static_cast<int>(v);
  };
  const int instances = number(text.substr(0, x));
  const int gpus = x == std::string::npos ? 0 : number(text.substr(x + 1));
  if (instances < 0 || gpus < 0 || (instances == 0 && gpus == 0))
    return afd::fail(afd::errc::invalid_argument, "'", text, "' is not INSTANCESxGPUS (e.g. 2x8)");
  return std::pair{instances, gpus};
}

int run_plan(int argc, char** argv) {
  CLI::App app{"Decoding cost and AFD deployment planning (docs/planner.md)", "afd plan"};
  app.require_subcommand(1);
  std::vector<std::string> hardware_files;

  // ---- cost
  auto* cost = app.add_subcommand("cost", "cost per 1M decoded tokens of attention and FFN on each hardware");
  std::string cost_model;
  std::string cost_contexts = "4k,8k,32k";
  std::string cost_hw;
  int cost_kv_bits = 8;
  bool cost_json = false;
  cost->add_option("--model", cost_model, "preset (" + [] {
    std::string s;
    for (const auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }() + ") or a config.json path")->required();
  cost->add_option("--context", cost_contexts, "context lengths, comma-separated (k = 1024)")->capture_default_str();
  cost->add_option("--hardware", cost_hw, "hardware names, comma-separated (default: all known)");
  cost->add_option("--hardware-file", hardware_files, "YAML list of extra hardware (repeatable)");
  cost->add_option("--kv-bits", cost_kv_bits, "KV cache precision: 8, 16 or 32")->capture_default_str();
  cost->add_flag("--json", cost_json, "JSON output");

  // ---- sparsity
  auto* sparsity = app.add_subcommand("sparsity", "minimum MoE sparsity each hardware's network allows");
  std::string sp_hw;
  std::string sp_models;
  std::string sp_networks;
  std::string sp_tpot = "50ms";
  int sp_stages = 3;
  bool sp_json = false;
  sparsity->add_option("--hardware", sp_hw, "hardware names, comma-separated (default: all known)");
  sparsity->add_option("--hardware-file", hardware_files, "YAML list of extra hardware (repeatable)");
  sparsity->add_option("--model", sp_models, "models, comma-separated (default: every preset)");
  sparsity->add_option("--network-gbps", sp_networks,
                       "network per server in Gb/s, comma-separated, instead of each hardware's own");
  sparsity->add_option("--tpot", sp_tpot, "TPOT target")->capture_default_str();
  sparsity->add_option("--stages", sp_stages, "pipeline stages")->capture_default_str();
  sparsity->add_flag("--json", sp_json, "JSON output");

  // ---- deploy
  auto* deploy = app.add_subcommand("deploy", "recommend an AFD layout meeting a TPOT target, or check a topology");
  deploy_assumptions da;
  std::string d_model, d_hw, d_tpot = "50ms", d_context = "4k", d_combine = "throughput", d_topology;
  int d_kv_bits = 8;
  double d_latency_us = da.network_latency_s * 1e6;
  std::size_t d_top = 5;
  bool d_json = false;
  deploy->add_option("--model", d_model, "preset or config.json path")->required();
  deploy->add_option("--hardware", d_hw, "attention hardware, and FFN hardware after a comma (default: the same)")
      ->required();
  deploy->add_option("--hardware-file", hardware_files, "YAML list of extra hardware (repeatable)");
  deploy->add_option("--tpot", d_tpot, "TPOT target")->capture_default_str();
  deploy->add_option("--context", d_context, "context length of every request (k = 1024)")->capture_default_str();
  deploy->add_option("--micro-batches", da.micro_batches, "micro-batches per step")->capture_default_str();
  deploy->add_option("--attention-bw-util", da.attention_bw_util, "attention memory bandwidth utilisation")->capture_default_str();
  deploy->add_option("--attention-mfu", da.attention_mfu, "attention FLOP utilisation")->capture_default_str();
  deploy->add_option("--ffn-mfu", da.ffn_mfu, "FFN FLOP utilisation")->capture_default_str();
  deploy->add_option("--ffn-bw-util", da.ffn_bw_util, "FFN memory bandwidth utilisation")->capture_default_str();
  deploy->add_option("--ffn-imbalance", da.ffn_imbalance, "busiest FFN GPU's load over the mean")->capture_default_str();
  deploy->add_option("--network-util", da.network_util, "network utilisation")->capture_default_str();
  deploy->add_option("--network-latency-us", d_latency_us, "latency per transfer, microseconds")->capture_default_str();
  deploy->add_option("--memory-util", da.memory_util, "usable fraction of device memory")->capture_default_str();
  deploy->add_option("--kv-bits", d_kv_bits, "KV cache precision: 8, 16 or 32")->capture_default_str();
  deploy->add_option("--combine", d_combine, "throughput (one partial sum per FFN instance) or deterministic")->capture_default_str();
  deploy->add_option("--max-gpus", da.max_gpus, "most attention + FFN GPUs the search considers")->capture_default_str();
  deploy->add_option("--top", d_top, "layouts listed")->capture_default_str();
  std::string d_attention_shape, d_ffn_shape;
  deploy->add_option("--attention", d_attention_shape, "fix the attention side: INSTANCESxGPUS (e.g. 2x8) or xGPUS");
  deploy->add_option("--ffn", d_ffn_shape, "fix the FFN side: INSTANCESxGPUS (e.g. 2x8) or xGPUS");
  deploy->add_option("--batch", da.micro_batch_tokens, "fix the tokens of one micro-batch (all attention GPUs)");
  deploy->add_option("--topology", d_topology, "check this topology file's layout instead of searching");
  deploy->add_flag("--json", d_json, "JSON output");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto catalog = load_catalog(hardware_files);
  if (!catalog) return report_error(catalog.err());

  if (*cost) {
    auto model = resolve_model(cost_model);
    if (!model) return report_error(model.err());
    auto contexts = parse_context_list(cost_contexts);
    if (!contexts) return report_error(contexts.err());
    auto hw = catalog->find_list(cost_hw);
    if (!hw) return report_error(hw.err());
    auto kv = kv_bytes(cost_kv_bits);
    if (!kv) return report_error(kv.err());
    const cost_report r = compute_cost_report(*model, *hw, *contexts, *kv);
    print(cost_json ? format_cost_json(r) : format_cost_text(r));
    return 0;
  }

  if (*sparsity) {
    auto hw = catalog->find_list(sp_hw);
    if (!hw) return report_error(hw.err());
    std::vector<architecture> models;
    const auto names = sp_models.empty() ? preset_names() : split_list(sp_models);
    for (const auto& n : names) {
      auto m = resolve_model(n);
      if (!m) return report_error(m.err());
      models.push_back(std::move(*m));
    }
    std::vector<double> networks;
    for (const auto& n : split_list(sp_networks)) {
      char* end = nullptr;
      const double gbps = std::strtod(n.c_str(), &end);
      if (end == n.c_str() || *end != '\0' || !(gbps > 0))
        return report_error(afd::fail(afd::errc::invalid_argument, "--network-gbps: '", n, "' is not a positive number"));
      networks.push_back(gbps * 1e9 / 8.0);
    }
    sparsity_assumptions s;
    auto tpot = parse_duration(sp_tpot);
    if (!tpot) return report_error(tpot.err());
    s.tpot_s = *tpot;
    if (sp_stages < 1) return report_error(afd::fail(afd::errc::invalid_argument, "--stages must be at least 1"));
    s.stages = sp_stages;
    const auto rows = compute_sparsity(*hw, models, s, networks);
    print(sp_json ? format_sparsity_json(rows, s) : format_sparsity_text(rows, s));
    return 0;
  }

  // deploy
  auto model = resolve_model(d_model);
  if (!model) return report_error(model.err());
  const auto hw_names = split_list(d_hw);
  if (hw_names.empty() || hw_names.size() > 2)
    return report_error(afd::fail(afd::errc::invalid_argument, "--hardware takes ATTENTION_HW or ATTENTION_HW,FFN_HW"));
  auto ha = catalog->find(hw_names[0]);
  if (!ha) return report_error(ha.err());
  auto hf = catalog->find(hw_names.back());
  if (!hf) return report_error(hf.err());
  auto tpot = parse_duration(d_tpot);
  if (!tpot) return report_error(tpot.err());
  da.tpot_s = *tpot;
  auto ctx = parse_context(d_context);
  if (!ctx) return report_error(ctx.err());
  da.context = *ctx;
  auto kv = kv_bytes(d_kv_bits);
  if (!kv) return report_error(kv.err());
  da.kv_bytes_per_value = *kv;
  if (d_combine != "throughput" && d_combine != "deterministic")
    return report_error(afd::fail(afd::errc::invalid_argument, "--combine must be throughput or deterministic"));
  da.deterministic_combine = d_combine == "deterministic";
  da.network_latency_s = d_latency_us * 1e-6;
  for (double u : {da.attention_bw_util, da.attention_mfu, da.ffn_mfu, da.ffn_bw_util, da.network_util, da.memory_util}) {
    if (!(u > 0 && u <= 1))
      return report_error(afd::fail(afd::errc::invalid_argument, "utilisations must be in (0, 1]"));
  }
  if (da.micro_batches < 1 || da.max_gpus < 2 || da.ffn_imbalance < 1 || d_latency_us < 0)
    return report_error(afd::fail(afd::errc::invalid_argument,
                                  "--micro-batches >= 1, --max-gpus >= 2, --ffn-imbalance >= 1, latency >= 0"));

  for (auto [text, instances, gpus] : {std::tuple{&d_attention_shape, &da.attention_instances, &da.attention_gpus_per_instance},
                                      std::tuple{&d_ffn_shape, &da.ffn_instances, &da.ffn_gpus_per_instance}}) {
    if (text->empty()) continue;
    auto shape = parse_shape(*text);
    if (!shape) return report_error(shape.err());
    *instances = shape->first;
    *gpus = shape->second;
  }
  if (da.micro_batch_tokens < 0) return report_error(afd::fail(afd::errc::invalid_argument, "--batch must be positive"));

  if (!d_topology.empty()) {
    auto t = read_topology_file(d_topology);
    if (!t) return report_error(t.err());
    const deploy_evaluation e = check_topology(*model, *ha, *hf, *t, da);
    deploy_plan context;
    context.model = *model;
    context.attention_hardware = *ha;
    context.ffn_hardware = *hf;
    context.assumptions = da;
    context.assumptions.micro_batches = t->micro_batches;
    if (t->kv_bytes_per_value) context.assumptions.kv_bytes_per_value = *t->kv_bytes_per_value;
    if (t->deterministic_combine) context.assumptions.deterministic_combine = *t->deterministic_combine;
    print(d_json ? format_topology_json(context, *t, e, d_topology) : format_topology_text(context, *t, e, d_topology));
    return e.violations.empty() ? 0 : 1;
  }
  const deploy_plan p = search_layouts(*model, *ha, *hf, da, d_top);
  print(d_json ? format_deploy_json(p) : format_deploy_text(p));
  return p.layouts.empty() ? 1 : 0;
}

const bool registered = afd::cli::register_command(
    {"plan", "decoding cost per 1M tokens, minimum MoE sparsity, AFD layouts for a TPOT target", run_plan});

}  // namespace
