// The benchmark report as text and as JSON. The JSON keys are an interface (scripts read them):
// add keys, never rename or remove one.

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "deploy/bench/bench.hpp"

namespace afd::bench {
namespace {

std::string format(const char* fmt, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

const reference_run* reference_of(const bench_report& r, combine_mode m) {
  for (const auto& ref : r.references)
    if (ref.mode == m) return &ref;
  return nullptr;
}

std::string figures_line(const load_figures& f) {
  return format("%lld tokens in %.2f s: %.1f tok/s generated, %.1f tok/s with prompt; TPOT p50 %.2f ms, p99 %.2f ms; "
                "TTFT p50 %.1f ms; CPU %.2f cores",
                static_cast<long long>(f.generated_tokens), f.seconds, f.tokens_per_s, f.total_tokens_per_s,
                f.tpot_p50_ms, f.tpot_p99_ms, f.ttft_p50_ms, f.cpu_cores_used);
}

std::string list(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += format(" %.1f", x);
  return s;
}

nlohmann::json figures_json(const load_figures& f) {
  return {{"seconds", f.seconds},
          {"generated_tokens", f.generated_tokens},
          {"prompt_tokens", f.prompt_tokens},
          {"tokens_per_s", f.tokens_per_s},
          {"total_tokens_per_s", f.total_tokens_per_s},
          {"tpot_p50_ms", f.tpot_p50_ms},
          {"tpot_p99_ms", f.tpot_p99_ms},
          {"itl_p50_ms", f.itl_p50_ms},
          {"itl_p99_ms", f.itl_p99_ms},
          {"ttft_p50_ms", f.ttft_p50_ms},
          {"ttft_p99_ms", f.ttft_p99_ms},
          {"cpu_cores_used", f.cpu_cores_used}};
}

nlohmann::json straggler_json(const straggler& s) {
  return {{"name", s.name}, {"compute_ms_per_layer", s.compute_ms_per_layer}, {"above_mean", s.above_mean}};
}

}  // namespace

std::string to_text(const bench_report& r) {
  std::string out;
  auto line = [&](const std::string& s) { out += s + "\n"; };
  line("afd bench: " + r.shape + " cluster, " + r.cluster_kind);
  line(format("machine: %u cores (%u usable); load average %.2f %.2f %.2f at start, %.2f %.2f %.2f at end",
              r.machine.cores, r.machine.usable_cores, r.machine.load_start[0], r.machine.load_start[1],
              r.machine.load_start[2], r.machine.load_end[0], r.machine.load_end[1], r.machine.load_end[2]));
  if (r.machine.loaded)
    line("  NOTE: the machine was loaded when the run started (1-min load >= half the usable cores): other processes "
         "took CPU time, so absolute figures are low and noisy; compare ratios, and the 'CPU cores' each run got");
  line(format("model: %s (%s): %lld layers (%lld dense), hidden %lld, %lld experts top-%lld, vocab %lld",
              r.model_name.c_str(), r.model_dir.c_str(), static_cast<long long>(r.layers),
              static_cast<long long>(r.dense_layers), static_cast<long long>(r.hidden),
              static_cast<long long>(r.experts), static_cast<long long>(r.top_k), static_cast<long long>(r.vocab)));
  line(format("load: %lld requests submitted together, prompt %lld tokens, %lld new tokens each (greedy, no stop "
              "ids), continuous batching, prefill chunk %lld%s",
              static_cast<long long>(r.requests), static_cast<long long>(r.prompt_len),
              static_cast<long long>(r.max_new_tokens), static_cast<long long>(r.prefill_chunk),
              r.quick ? " (--quick)" : ""));
  line(format("numerics: KV %s, dispatch %s, combine %s", std::string(afd::to_string(r.num.kv)).c_str(),
              std::string(afd::to_string(r.num.dispatch)).c_str(), std::string(afd::to_string(r.num.combine)).c_str()));
  line(format("threads: reference engine %d kernel threads; cluster %d engine threads (%uA + %uF), %d kernel thread "
              "each; on %u usable cores",
              r.reference_threads, r.cluster_engine_threads, r.attention_workers, r.ffn_workers,
              r.cluster_kernel_threads, r.machine.usable_cores));
  line("placement: " + r.placement);
  line("TPOT: per request, (last token - first token) / (tokens - 1); TTFT: submission to first token");
  if (r.repeats > 1)
    line(format("repeats: %d runs of each configuration, interleaved; the run with the median tokens/s is shown",
                r.repeats));
  for (const auto& ref : r.references) {
    line("");
    line(std::string("reference engine (") + to_string(ref.mode) + "): " + figures_line(ref.figures));
    if (ref.tokens_per_s_repeats.size() > 1) line("  tok/s of each repeat:" + list(ref.tokens_per_s_repeats));
  }
  for (const auto& run : r.runs) {
    line("");
    line(format("cluster %s K=%u %s: ", r.shape.c_str(), run.micro_batches, to_string(run.mode)) +
         figures_line(run.figures));
    if (run.tokens_per_s_repeats.size() > 1) line("  tok/s of each repeat:" + list(run.tokens_per_s_repeats));
    const reference_run* ref = reference_of(r, run.mode);
    line(format("  vs reference engine: tokens/s x%.2f, TPOT p50 x%.2f (%.1f vs %.1f tok/s)", run.ratio_tokens_per_s,
                run.ratio_tpot_p50, run.figures.tokens_per_s, ref ? ref->figures.tokens_per_s : 0.0));
    const accuracy_figures& a = run.accuracy;
    if (run.mode == combine_mode::deterministic)
      line(format("  bitwise equal: %s (%lld of %lld requests: tokens, finish reason and %lld logits rows)",
                  a.bitwise_equal ? "yes" : "no", static_cast<long long>(a.requests_bitwise),
                  static_cast<long long>(r.requests), static_cast<long long>(a.logits_rows_compared)));
    else
      line(format("  max relative L2 error of logits: %.3g (tolerance %.3g: %s) over %lld rows; same tokens in %lld "
                  "of %lld requests; bitwise equal: %s",
                  a.max_rel_l2, a.tolerance, a.within_tolerance ? "within" : "EXCEEDED",
                  static_cast<long long>(a.logits_rows_compared), static_cast<long long>(a.requests_same_tokens),
                  static_cast<long long>(r.requests), a.bitwise_equal ? "yes" : "no"));
    line("  worker  role       steps  compute ms/layer  network wait ms/layer  other ms/layer");
    for (const auto& w : run.workers)
      line(format("  %-7s %-10s %5lld  %16.3f  %21.3f  %14.3f", w.name.c_str(), w.role.c_str(),
                  static_cast<long long>(w.steps), w.compute_ms_per_layer, w.wait_ms_per_layer, w.other_ms_per_layer));
    if (!run.workers.empty() && !run.workers.front().layer_compute_ms.empty()) {
      std::string head = "  per layer, ms per step (compute/wait):";
      std::string pad(head.size() > 9 ? head.size() - 9 : 0, ' ');
      for (std::size_t l = 0; l < run.workers.front().layer_compute_ms.size(); ++l)
        head += format(" %13s", format("L%zu%s", l, l < r.moe_layers.size() && !r.moe_layers[l] ? " dense" : "").c_str());
      line(head);
      for (const auto& w : run.workers) {
        std::string row = format("  %-7s", w.name.c_str()) + pad;
        for (std::size_t l = 0; l < w.layer_compute_ms.size(); ++l)
          row += format(" %13s", format("%.2f/%.2f", w.layer_compute_ms[l], w.layer_wait_ms[l]).c_str());
        line(row);
      }
    }
    line(format("  stragglers (most compute per layer): attention %s (%.3f ms, %+.0f%% vs mean), ffn %s (%.3f ms, "
                "%+.0f%% vs mean)",
                run.attention_straggler.name.c_str(), run.attention_straggler.compute_ms_per_layer,
                run.attention_straggler.above_mean * 100, run.ffn_straggler.name.c_str(),
                run.ffn_straggler.compute_ms_per_layer, run.ffn_straggler.above_mean * 100));
  }
  line("");
  line("per layer = a worker's step time / (steps x layers), over the steps that carried tokens; attention compute "
       "includes embedding, LM head and sampling; attention wait = on the FFN workers, FFN wait = on the attention "
       "workers");
  return out;
}

std::string to_json(const bench_report& r) {
  nlohmann::json j;
  j["cluster_kind"] = r.cluster_kind;
  j["shape"] = r.shape;
  j["attention_workers"] = r.attention_workers;
  j["ffn_workers"] = r.ffn_workers;
  j["topology_file"] = r.topology_file;
  j["placement"] = r.placement;
  j["quick"] = r.quick;
  j["repeats"] = r.repeats;
  j["machine"] = {{"cores", r.machine.cores},
                  {"usable_cores", r.machine.usable_cores},
                  {"load_start", {r.machine.load_start[0], r.machine.load_start[1], r.machine.load_start[2]}},
                  {"load_end", {r.machine.load_end[0], r.machine.load_end[1], r.machine.load_end[2]}},
                  {"loaded", r.machine.loaded}};
  j["model"] = {{"name", r.model_name}, {"dir", r.model_dir},     {"layers", r.layers}, {"dense_layers", r.dense_layers},
                {"hidden", r.hidden},   {"experts", r.experts},   {"top_k", r.top_k},   {"vocab", r.vocab},
                {"moe_layers", r.moe_layers}};
  j["load"] = {{"requests", r.requests},
               {"prompt_len", r.prompt_len},
               {"max_new_tokens", r.max_new_tokens},
               {"prefill_chunk", r.prefill_chunk}};
  j["numerics"] = {{"kv", afd::to_string(r.num.kv)},
                   {"dispatch", afd::to_string(r.num.dispatch)},
                   {"combine", afd::to_string(r.num.combine)}};
  j["threads"] = {{"reference_kernel_threads", r.reference_threads},
                  {"cluster_engine_threads", r.cluster_engine_threads},
                  {"cluster_kernel_threads_per_engine", r.cluster_kernel_threads}};
  j["reference"] = nlohmann::json::array();
  for (const auto& ref : r.references)
    j["reference"].push_back({{"combine_mode", to_string(ref.mode)},
                              {"figures", figures_json(ref.figures)},
                              {"tokens_per_s_repeats", ref.tokens_per_s_repeats}});
  j["runs"] = nlohmann::json::array();
  for (const auto& run : r.runs) {
    nlohmann::json workers = nlohmann::json::array();
    for (const auto& w : run.workers)
      workers.push_back({{"name", w.name},
                         {"role", w.role},
                         {"steps", w.steps},
                         {"compute_seconds", w.compute_seconds},
                         {"wait_seconds", w.wait_seconds},
                         {"total_seconds", w.total_seconds},
                         {"compute_ms_per_layer", w.compute_ms_per_layer},
                         {"wait_ms_per_layer", w.wait_ms_per_layer},
                         {"other_ms_per_layer", w.other_ms_per_layer},
                         {"layer_compute_ms", w.layer_compute_ms},
                         {"layer_wait_ms", w.layer_wait_ms}});
    const accuracy_figures& a = run.accuracy;
    j["runs"].push_back({{"micro_batches", run.micro_batches},
                         {"combine_mode", to_string(run.mode)},
                         {"figures", figures_json(run.figures)},
                         {"tokens_per_s_repeats", run.tokens_per_s_repeats},
                         {"ratio", {{"tokens_per_s", run.ratio_tokens_per_s}, {"tpot_p50", run.ratio_tpot_p50}}},
                         {"accuracy",
                          {{"bitwise_equal", a.bitwise_equal},
                           {"requests_bitwise", a.requests_bitwise},
                           {"requests_same_tokens", a.requests_same_tokens},
                           {"logits_rows_compared", a.logits_rows_compared},
                           {"max_rel_l2", a.max_rel_l2},
                           {"tolerance", a.tolerance},
                           {"within_tolerance", a.within_tolerance}}},
                         {"workers", workers},
                         {"stragglers",
                          {{"attention", straggler_json(run.attention_straggler)},
                           {"ffn", straggler_json(run.ffn_straggler)}}}});
  }
  return j.dump(2);
}

}  // namespace afd::bench
