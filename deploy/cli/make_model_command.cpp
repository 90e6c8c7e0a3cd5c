// `afd make-model`: writes a deterministic synthetic Step-3 checkpoint, or with --dry-run prints
// what a preset would weigh (parameters, bytes, KV cache).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "deploy/cli/command_registry.hpp"
#include "runtime/core/model_config.hpp"
#include "runtime/model/make_model.hpp"
#include "runtime/text/tokenizer.hpp"

namespace {

using json = nlohmann::json;

// 3 significant digits with a decimal unit: 316 B, 38.8 B, 169 M, 256 MB.
std::string short_count(double v, const char* suffix_unit) {
  static const char* prefixes[] = {"", " K", " M", " B", " T"};
  static const char* byte_prefixes[] = {" B", " KB", " MB", " GB", " TB"};
  const bool bytes = std::string(suffix_unit) == "bytes";
  int k = 0;
  while (std::fabs(v) >= 999.5 && k < 4) {
    v /= 1000.0;
    ++k;
  }
  const char* unit = bytes ? byte_prefixes[k] : prefixes[k];
  char buf[64];
  if (v >= 99.95 || k == 0)
    std::snprintf(buf, sizeof buf, "%.0f%s", v, unit);
  else if (v >= 9.995)
    std::snprintf(buf, sizeof buf, "%.1f%s", v, unit);
  else
    std::snprintf(buf, sizeof buf, "%.2f%s", v, unit);
  return buf;
}

// 31232 -> "31,232".
std::string grouped(std::uint64_t v) {
  std::string s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

json summary_json(const std::string& preset, const std::string& dtype_name, const afd::model::synthetic_options& o,
                  const afd::model::synthetic_plan& plan) {
  const auto s = afd::compute_model_size(o.config);
  const std::int64_t kv8 = s.kv_bytes_per_token_fp8;
  return json{{"preset", preset},
              {"model_type", o.vl ? "step3_vl" : "step3_text"},
              {"dtype", dtype_name},
              {"layers", o.config.num_hidden_layers},
              {"moe_layers", o.config.num_moe_layers()},
              {"parameters",
               {{"total", s.total_params},
                {"activated_per_token", s.activated_params},
                {"attention_per_layer", s.attention_params_per_layer},
                {"dense_mlp", s.dense_mlp_params},
                {"expert", s.expert_params},
                {"shared_expert", s.shared_expert_params},
                {"router", s.router_params}}},
              {"weight_bytes", plan.tensor_bytes},
              {"files", plan.file_names},
              {"kv_bytes_per_token", {{"fp8", kv8}, {"bf16", 2 * kv8}}},
              {"kv_bytes_8k_context", {{"fp8", 8192 * kv8}, {"bf16", 8192 * 2 * kv8}}}};
}

// Copies `tokenizer_file` into `out` as tokenizer.json, and writes tokenizer_config.json with the
// BOS/EOS tokens, their add_* flags and the chat template when a tokenizer_config.json sits beside
// the file. Returns the files written.
afd::expected<std::vector<std::string>> install_tokenizer(const std::string& tokenizer_file, const std::string& out) {
  namespace fs = std::filesystem;
  std::vector<std::string> written;
  std::error_code ec;
  const fs::path target = fs::path(out) / "tokenizer.json";
  if (fs::absolute(tokenizer_file, ec) != fs::absolute(target, ec)) {
    fs::copy_file(tokenizer_file, target, fs::copy_options::overwrite_existing, ec);
    if (ec) return afd::fail(afd::errc::io_error, "cannot copy ", tokenizer_file, " to ", target.string(), ": ", ec.message());
  }
  written.push_back(target.string());
  const fs::path source_config = fs::path(tokenizer_file).parent_path() / "tokenizer_config.json";
  if (!fs::exists(source_config, ec)) return written;
  std::ifstream in(source_config);
  json source = json::parse(in, nullptr, false);
  if (source.is_discarded() || !source.is_object())
    return afd::fail(afd::errc::parse_error, source_config.string(), ": not a JSON object");
  json config = json::object();
  for (const char* key : {"add_bos_token", "add_eos_token", "bos_token", "eos_token", "pad_token", "chat_template",
                          "model_max_length", "tokenizer_class", "clean_up_tokenization_spaces", "legacy"})
    if (source.contains(key)) config[key] = source[key];
  const fs::path config_path = fs::path(out) / "tokenizer_config.json";
  std::ofstream(config_path) << config.dump(2) << "\n";
  written.push_back(config_path.string());
  // The written directory must load as a whole (bos/eos present in the vocabulary, ...).
  auto check = afd::text::tokenizer::from_model_dir(out);
  if (!check) return std::move(check).err();
  return written;
}

void print_summary(const json& j) {
  const auto& p = j["parameters"];
  auto num = [](const json& v) { return static_cast<double>(v.get<std::int64_t>()); };
  std::printf("preset %s: %s, %lld layers (%lld MoE), dtype %s\n", j["preset"].get<std::string>().c_str(),
              j["model_type"].get<std::string>().c_str(), static_cast<long long>(j["layers"].get<std::int64_t>()),
              static_cast<long long>(j["moe_layers"].get<std::int64_t>()), j["dtype"].get<std::string>().c_str());
  std::printf("parameters: total %s (%s), activated per token %s (%s)\n",
              grouped(p["total"].get<std::uint64_t>()).c_str(), short_count(num(p["total"]), "").c_str(),
              grouped(p["activated_per_token"].get<std::uint64_t>()).c_str(),
              short_count(num(p["activated_per_token"]), "").c_str());
  std::printf("  per layer attention %s, dense MLP %s, one expert %s, shared expert %s, router %s\n",
              short_count(num(p["attention_per_layer"]), "").c_str(), short_count(num(p["dense_mlp"]), "").c_str(),
              short_count(num(p["expert"]), "").c_str(), short_count(num(p["shared_expert"]), "").c_str(),
              short_count(num(p["router"]), "").c_str());
  std::printf("weights: %s bytes (%s) at %s in %zu file(s)\n", grouped(j["weight_bytes"].get<std::uint64_t>()).c_str(),
              short_count(static_cast<double>(j["weight_bytes"].get<std::uint64_t>()), "bytes").c_str(),
              j["dtype"].get<std::string>().c_str(), j["files"].size());
  const auto& kv = j["kv_bytes_per_token"];
  const auto& kv8k = j["kv_bytes_8k_context"];
  std::printf("KV cache: %s B/token at FP8, %s B/token at BF16; 8K context: %s (FP8), %s (BF16)\n",
              grouped(kv["fp8"].get<std::uint64_t>()).c_str(), grouped(kv["bf16"].get<std::uint64_t>()).c_str(),
              short_count(num(kv8k["fp8"]), "bytes").c_str(), short_count(num(kv8k["bf16"]), "bytes").c_str());
}

int run_make_model(int argc, char** argv) {
  CLI::App app{"Writes a deterministic synthetic Step-3 checkpoint (config.json + safetensors, HF layout).\n"
               "Exit codes: 0 done, 1 failure (I/O), 2 bad usage (unknown preset, non-empty --out without --force, ...)."};
  std::string preset, out, dtype_name = "bf16", tokenizer_file;
  std::uint64_t seed = 0;
  int shards = 1;
  bool vl = false, dry_run = false, as_json = false, force = false;
  app.add_option("--preset", preset, "tiny, small or step3 (step3 only with --dry-run)")->required();
  app.add_option("--out", out, "output directory");
  app.add_option("--seed", seed, "seed of the weights (same seed, same bytes)");
  app.add_option("--shards", shards, "number of safetensors files (> 1 writes an index)");
  app.add_option("--dtype", dtype_name, "bf16, f32, f16 or fp8 (block-FP8 matrices with 128x128 scales)");
  app.add_flag("--vl", vl, "write a step3_vl config with text_config, plus a dummy vision tensor");
  app.add_flag("--dry-run", dry_run, "print parameter, byte and KV-cache counts; write nothing");
  app.add_flag("--json", as_json, "print the summary as JSON");
  app.add_flag("--force", force, "replace the checkpoint in a non-empty --out");
  app.add_option("--tokenizer", tokenizer_file,
                 "a Hugging Face tokenizer.json: the vocabulary fits it (max id + 1) and it is copied into --out "
                 "(with bos/eos and the chat template of a tokenizer_config.json beside it)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  auto config = afd::model::preset_config(preset);
  if (!config) {
    std::fprintf(stderr, "afd make-model: %s\n", config.err().message().c_str());
    return 2;
  }
  std::optional<afd::text::tokenizer> tokenizer;
  if (!tokenizer_file.empty()) {
    auto loaded = afd::text::tokenizer::load(tokenizer_file);
    if (!loaded) {
      std::fprintf(stderr, "afd make-model: --tokenizer: %s\n", loaded.err().message().c_str());
      return 1;
    }
    tokenizer = std::move(*loaded);
    config->vocab_size = tokenizer->vocab_size();
  }
  afd::model::synthetic_options o;
  o.config = *config;
  o.seed = seed;
  o.shards = shards;
  o.vl = vl;
  if (dtype_name == "fp8" || dtype_name == "f8_e4m3") {
    o.weight_dtype = afd::dtype::f8_e4m3;
    dtype_name = "fp8";
  } else if (dtype_name == "bf16") {
    o.weight_dtype = afd::dtype::bf16;
  } else if (dtype_name == "f16") {
    o.weight_dtype = afd::dtype::f16;
  } else if (dtype_name == "f32") {
    o.weight_dtype = afd::dtype::f32;
  } else {
    std::fprintf(stderr, "afd make-model: unknown --dtype '%s' (bf16, f32, f16 or fp8)\n", dtype_name.c_str());
    return 2;
  }
  auto plan = afd::model::plan_synthetic(o);
  if (!plan) {
    std::fprintf(stderr, "afd make-model: %s\n", plan.err().message().c_str());
    return 2;
  }
  const json summary = summary_json(preset, dtype_name, o, *plan);
  if (dry_run) {
    if (as_json)
      std::printf("%s\n", summary.dump(2).c_str());
    else
      print_summary(summary);
    return 0;
  }
  if (preset == "step3") {
    std::fprintf(stderr,
                 "afd make-model: refusing to write the step3 preset (%s of weights); it is for --dry-run only. "
                 "Use tiny or small.\n",
                 short_count(static_cast<double>(plan->tensor_bytes), "bytes").c_str());
    return 2;
  }
  if (out.empty()) {
    std::fprintf(stderr, "afd make-model: --out DIR is required (or --dry-run)\n");
    return 2;
  }

  // Progress for writes long enough to wait for: a line per tenth.
  const bool chatty = plan->tensor_bytes >= (64ull << 20) && !as_json;
  int last_tenth = 0;
  auto progress = [&](const std::string& file, std::uint64_t done, std::uint64_t total) {
    if (!chatty || total == 0) return;
    const int tenth = static_cast<int>(10 * done / total);
    if (tenth <= last_tenth) return;
    last_tenth = tenth;
    std::fprintf(stderr, "  %3d%%  %s of %s  (%s)\n", 10 * tenth, short_count(static_cast<double>(done), "bytes").c_str(),
                 short_count(static_cast<double>(total), "bytes").c_str(), file.c_str());
  };
  auto report = afd::model::write_synthetic_checkpoint(o, out, force, progress);
  if (!report) {
    std::fprintf(stderr, "afd make-model: %s\n", report.err().message().c_str());
    return report.err().code() == afd::errc::invalid_argument ? 2 : 1;
  }
  if (tokenizer) {
    auto files = install_tokenizer(tokenizer_file, out);
    if (!files) {
      std::fprintf(stderr, "afd make-model: --tokenizer: %s\n", files.err().message().c_str());
      return 1;
    }
    report->files.insert(report->files.end(), files->begin(), files->end());
  }
  if (as_json) {
    json j = summary;
    j["out"] = out;
    j["written_files"] = report->files;
    j["written_bytes"] = report->bytes;
    j["seconds"] = report->seconds;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("wrote %s (%s bytes) in %zu files to %s in %.2f s\n",
                short_count(static_cast<double>(report->bytes), "bytes").c_str(), grouped(report->bytes).c_str(),
                report->files.size(), out.c_str(), report->seconds);
  }
  return 0;
}

const bool registered = afd::cli::register_command(
    {"make-model", "write a synthetic Step-3 checkpoint (or --dry-run: its sizes)", run_make_model});

}  // namespace
