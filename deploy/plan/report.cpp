#include "deploy/plan/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

namespace afd::plan {

namespace {

using json = nlohmann::json;

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// 1.23 G / 456.7 M style with a unit.
std::string scaled(double v, const char* unit) {
  const char* prefixes[] = {"", " k", " M", " G", " T", " P"};
  int i = 0;
  double x = v;
  while (std::abs(x) >= 1000.0 && i < 5) {
    x /= 1000.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g%s%s", x, i == 0 ? " " : prefixes[i], unit);
  return buf;
}

/// Parameter counts in billions ("316.3 B") or millions below that.
std::string params(std::int64_t n) {
  char buf[64];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.1f B", static_cast<double>(n) / 1e9);
  else std::snprintf(buf, sizeof buf, "%.1f M", static_cast<double>(n) / 1e6);
  return buf;
}

std::string us(double s) { return fmt("%.0f us", s * 1e6); }

/// Rows of cells printed with columns padded to their widest cell; the first column is left-aligned,
/// the others right-aligned (they hold numbers).
class table {
 public:
  explicit table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string str(const std::string& indent = "  ") const {
    std::vector<std::size_t> width;
    for (const auto& r : rows_) {
      if (width.size() < r.size()) width.resize(r.size(), 0);
      for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    std::string out;
    for (const auto& r : rows_) {
      std::string line = indent;
      for (std::size_t i = 0; i < r.size(); ++i) {
        const std::string pad(width[i] - r[i].size(), ' ');
        if (i > 0) line += "  ";
        line += i == 0 ? r[i] + pad : pad + r[i];
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

json num(double v) { return round6(v); }

json model_json(const architecture& a) {
  json m;
  m["name"] = a.name;
  m["source"] = a.source;
  m["model_type"] = a.model_type;
  m["attention"] = to_string(a.attention);
  m["layers"] = a.num_layers;
  m["hidden_size"] = a.hidden_size;
  m["dense_layers"] = a.num_dense_layers;
  m["moe_layers"] = a.num_moe_layers;
  m["experts"] = a.num_experts;
  m["top_k"] = a.top_k;
  m["shared_experts"] = a.num_shared_experts;
  m["attention_projection_params_per_layer"] = a.attention_projection_params();
  m["kv_values_per_token_per_layer"] = a.kv_values_per_token();
  m["attention_flops_per_context_token_per_layer"] = a.attention_flops_per_context_token();
  m["total_params"] = a.total_params();
  m["activated_params"] = a.activated_params();
  m["sparsity"] = num(a.sparsity());
  return m;
}

json hardware_json(const hardware& h) {
  json j;
  j["name"] = h.name;
  j["source"] = h.source;
  j["price_per_hour"] = num(h.price_per_hour);
  j["bf16_flops"] = num(h.bf16_flops);
  j["fp8_flops"] = num(h.fp8_flops);
  j["peak_flops_used"] = num(h.peak_flops());
  j["memory_bw"] = num(h.memory_bw);
  j["memory_bytes"] = num(h.memory_bytes);
  j["network_per_server_bytes"] = num(h.network_per_server_bytes);
  j["gpus_per_server"] = h.gpus_per_server;
  j["ridge_intensity"] = num(h.ridge_intensity());
  return j;
}

std::string model_header(const architecture& a) {
  std::string s = "model " + a.name + " (" + a.model_type + ", " + to_string(a.attention) + "; " + a.source + ")\n";
  s += "  " + std::to_string(a.num_layers) + " layers (" + std::to_string(a.num_dense_layers) + " dense, " +
       std::to_string(a.num_moe_layers) + " MoE), hidden " + std::to_string(a.hidden_size) + "; parameters " +
       params(a.total_params()) + " total, " + params(a.activated_params()) + " activated\n";
  if (a.is_moe()) {
    s += "  experts " + std::to_string(a.num_experts) + ", top-k " + std::to_string(a.top_k) + ", shared " +
         std::to_string(a.num_shared_experts) + ": sparsity " + fmt("%.4f", a.sparsity()) + "\n";
  }
  s += "  per layer: attention projections " + params(a.attention_projection_params()) +
       ", KV " + std::to_string(a.kv_values_per_token()) + " values/token, attention " +
       std::to_string(a.attention_flops_per_context_token()) + " FLOP/context token\n";
  return s;
}

}  // namespace

double round6(double v) {
  if (v == 0 || !std::isfinite(v)) return v;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return std::strtod(buf, nullptr);
}

// ------------------------------------------------------------------------------------------------
// cost

std::string format_cost_text(const cost_report& r) {
  std::string s = model_header(r.model);
  s += "  KV cache at " + fmt("%g", r.kv_bytes_per_value * 8) + " bits\n\n";
  s += "Work per decoded token (all layers)\n";
  table w({"context", "KV bytes", "attention FLOPs", "linear FLOPs", "FFN FLOPs", "intensity FLOP/B"});
  for (const auto& c : r.contexts) {
    w.add({std::to_string(c.work.context), scaled(c.work.kv_bytes, "B"), scaled(c.work.attention_flops, "FLOP"),
           scaled(c.work.linear_flops, "FLOP"), scaled(c.work.ffn_flops, "FLOP"), fmt("%.1f", c.work.intensity())});
  }
  s += w.str();
  s += "\nHardware (peak = FP8 where present, else BF16; ridge = peak / memory bandwidth)\n";
  table h({"hardware", "$/h", "peak FLOP/s", "memory B/s", "ridge FLOP/B", "network/server"});
  for (const auto& hw : r.hardware_kinds) {
    h.add({hw.name, fmt("%.2f", hw.price_per_hour), scaled(hw.peak_flops(), "") + (hw.has_fp8() ? " fp8" : " bf16"),
           scaled(hw.memory_bw, ""), fmt("%.0f", hw.ridge_intensity()), scaled(hw.network_per_server_bytes, "B/s")});
  }
  s += h.str();
  for (const auto& c : r.contexts) {
    s += "\n$ per 1M tokens at context " + std::to_string(c.work.context) + "\n";
    table t({"hardware", "attention", "bound", "FFN", "attention+FFN"});
    for (const auto& hc : c.costs) {
      t.add({hc.hardware, fmt("%.4f", hc.attention_per_million()), hc.attention_memory_bound ? "KV" : "FLOPs",
             fmt("%.4f", hc.ffn_per_million()), fmt("%.4f", hc.total_per_million())});
    }
    s += t.str();
    s += "  AFD: attention on " + c.best.attention_hardware + " (" + fmt("%.4f", c.best.attention_per_million) +
         ") + FFN on " + c.best.ffn_hardware + " (" + fmt("%.4f", c.best.ffn_per_million) + ") = " +
         fmt("%.4f", c.best.total_per_million()) + " $ per 1M tokens\n";
  }
  return s;
}

std::string format_cost_json(const cost_report& r) {
  json j;
  j["model"] = model_json(r.model);
  j["kv_bits"] = num(r.kv_bytes_per_value * 8);
  j["hardware"] = json::array();
  for (const auto& h : r.hardware_kinds) j["hardware"].push_back(hardware_json(h));
  j["contexts"] = json::array();
  for (const auto& c : r.contexts) {
    json row;
    row["context"] = c.work.context;
    row["kv_bytes"] = num(c.work.kv_bytes);
    row["attention_flops"] = num(c.work.attention_flops);
    row["linear_flops"] = num(c.work.linear_flops);
    row["ffn_flops"] = num(c.work.ffn_flops);
    row["intensity"] = num(c.work.intensity());
    row["costs"] = json::array();
    for (const auto& hc : c.costs) {
      json x;
      x["hardware"] = hc.hardware;
      x["attention_per_million"] = num(hc.attention_per_million());
      x["attention_bound"] = hc.attention_memory_bound ? "kv" : "flops";
      x["ffn_per_million"] = num(hc.ffn_per_million());
      x["total_per_million"] = num(hc.total_per_million());
      row["costs"].push_back(x);
    }
    json b;
    b["attention_hardware"] = c.best.attention_hardware;
    b["ffn_hardware"] = c.best.ffn_hardware;
    b["attention_per_million"] = num(c.best.attention_per_million);
    b["ffn_per_million"] = num(c.best.ffn_per_million);
    b["total_per_million"] = num(c.best.total_per_million());
    row["afd"] = b;
    j["contexts"].push_back(row);
  }
  return j.dump(2) + "\n";
}

// ------------------------------------------------------------------------------------------------
// sparsity

std::string format_sparsity_text(const std::vector<sparsity_row>& rows, const sparsity_assumptions& s) {
  std::string out = "Minimum MoE sparsity for a compute-bound FFN whose A<->F traffic (" + fmt("%g", s.bytes_per_hidden) +
                    " x hidden bytes per token per layer) fits " + fmt("%.1f", s.tpot_s * 1e3) + " ms / " +
                    std::to_string(s.stages) + " stages\n";
  table t({"hardware", "network/server", "model", "minimum", "model's", "FFN compute-bound"});
  for (const auto& r : rows) {
    t.add({r.hardware, scaled(r.network_bytes, "B/s"), r.model, fmt("%.4f", r.minimum), fmt("%.4f", r.model_sparsity),
           r.model_meets() ? "yes" : "no"});
  }
  out += t.str();
  out += "  sparsity = (top-k + shared) / (experts + shared); a model below the minimum cannot keep its\n"
         "  FFN compute-bound on that network within the TPOT target.\n";
  return out;
}

std::string format_sparsity_json(const std::vector<sparsity_row>& rows, const sparsity_assumptions& s) {
  json j;
  j["tpot_s"] = num(s.tpot_s);
  j["stages"] = s.stages;
  j["bytes_per_hidden"] = num(s.bytes_per_hidden);
  j["rows"] = json::array();
  for (const auto& r : rows) {
    json x;
    x["hardware"] = r.hardware;
    x["network_per_server_bytes"] = num(r.network_bytes);
    x["model"] = r.model;
    x["minimum_sparsity"] = num(r.minimum);
    x["model_sparsity"] = num(r.model_sparsity);
    x["ffn_compute_bound"] = r.model_meets();
    j["rows"].push_back(x);
  }
  return j.dump(2) + "\n";
}

// ------------------------------------------------------------------------------------------------
// deploy

namespace {

std::string assumptions_text(const deploy_assumptions& s, const hardware& ha, const hardware& hf) {
  std::string o = "Assumptions (change with the options in brackets)\n";
  o += "  TPOT target " + fmt("%.1f", s.tpot_s * 1e3) + " ms [--tpot], every request at context " +
       std::to_string(s.context) + " [--context], " + std::to_string(s.micro_batches) +
       " micro-batches [--micro-batches], 3-stage pipeline (attention, network, FFN)\n";
  o += "  attention: memory BW util " + fmt("%.2f", s.attention_bw_util) + " [--attention-bw-util], MFU " +
       fmt("%.2f", s.attention_mfu) + " [--attention-mfu], KV " + fmt("%g", s.kv_bytes_per_value * 8) +
       "-bit [--kv-bits], data-parallel (each GPU owns its requests and all attention weights)\n";
  o += "  FFN: MFU " + fmt("%.2f", s.ffn_mfu) + " [--ffn-mfu], memory BW util " + fmt("%.2f", s.ffn_bw_util) +
       " [--ffn-bw-util], load imbalance " + fmt("%.2f", s.ffn_imbalance) + " [--ffn-imbalance]\n";
  o += "  network: util " + fmt("%.2f", s.network_util) + " [--network-util] of " +
       scaled(ha.network_per_gpu_bytes(), "B/s") + " per attention GPU and " + scaled(hf.network_per_gpu_bytes(), "B/s") +
       " per FFN GPU, latency " + us(s.network_latency_s) + " per transfer [--network-latency-us], combine " +
       (s.deterministic_combine ? "deterministic" : "throughput") + " [--combine]\n";
  o += "  weights FP8 on FP8 hardware, else BF16; LM head and embedding BF16; usable memory " +
       fmt("%.2f", s.memory_util) + " [--memory-util]\n";
  return o;
}

std::string layout_text(const deploy_evaluation& e, bool list_violations = true) {
  const auto& l = e.layout;
  const auto& t = e.times;
  std::string o;
  o += "  attention  " + std::to_string(l.attention_instances) + " instance(s) x " +
       std::to_string(l.attention_gpus_per_instance) + " GPU(s)\n";
  o += "  FFN        " + std::to_string(l.ffn_instances) + " instance(s) x " + std::to_string(l.ffn_gpus_per_instance) +
       " GPU(s)\n";
  o += "  batch      " + std::to_string(l.micro_batches) + " micro-batches x " + std::to_string(l.micro_batch_tokens()) +
       " tokens (" + std::to_string(l.tokens_per_attention_gpu) + " per attention GPU) = " +
       std::to_string(l.total_batch()) + " sequences\n\n";
  o += "  Per layer and micro-batch, each stage against its budget TPOT / (layers x micro-batches) = " +
       us(e.layer_budget_s) + "\n";
  table st({"stage", "predicted", "budget", "detail"});
  auto ok = [&](double v) { return v <= e.layer_budget_s ? "" : "  OVER"; };
  st.add({"attention", us(t.attention), us(e.layer_budget_s),
          "KV read " + us(t.attention_kv) + ", core " + us(t.attention_core) + ", projections " + us(t.attention_linear) +
              ok(t.attention)});
  st.add({"network", us(t.communication), us(e.layer_budget_s),
          "A->F " + us(t.a2f) + ", F->A " + us(t.f2a) + ok(t.communication)});
  if (e.times.ffn_moe > 0)
    st.add({"FFN (MoE layer)", us(t.ffn_moe), us(e.layer_budget_s), std::string("") + ok(t.ffn_moe)});
  if (e.times.ffn_dense > 0)
    st.add({"FFN (dense layer)", us(t.ffn_dense), us(e.layer_budget_s), std::string("") + ok(t.ffn_dense)});
  st.add({"LM head", us(t.lm_head), "-", "once per step and micro-batch, on the attention GPUs"});
  o += st.str();
  o += "\n  predicted TPOT     " + fmt("%.1f", e.tpot_s * 1e3) + " ms\n";
  o += "  tokens/s per GPU   " + fmt("%.0f", e.tokens_per_s_per_gpu) + "  (" + std::to_string(l.total_gpus()) +
       " GPUs, " + fmt("%.0f", e.tokens_per_s_per_gpu * l.total_gpus()) + " tokens/s in all)\n";
  o += "  $ per 1M tokens    " + fmt("%.4f", e.dollars_per_million_tokens) + "  (GPU-hours at the hardware's prices)\n";
  o += "  memory per GPU     attention " + fmt("%.1f", e.attention_memory_bytes / 1e9) + " GB of " +
       fmt("%.1f", e.attention_memory_capacity / 1e9) + " usable, FFN " + fmt("%.1f", e.ffn_memory_bytes / 1e9) +
       " GB of " + fmt("%.1f", e.ffn_memory_capacity / 1e9) + " usable\n";
  if (list_violations) {
    for (const auto& v : e.violations) o += "  MISSES: " + v + "\n";
  }
  return o;
}

json evaluation_json(const deploy_evaluation& e) {
  json j;
  const auto& l = e.layout;
  j["attention_instances"] = l.attention_instances;
  j["attention_gpus_per_instance"] = l.attention_gpus_per_instance;
  j["ffn_instances"] = l.ffn_instances;
  j["ffn_gpus_per_instance"] = l.ffn_gpus_per_instance;
  j["micro_batches"] = l.micro_batches;
  j["tokens_per_attention_gpu_per_micro_batch"] = l.tokens_per_attention_gpu;
  j["micro_batch_tokens"] = l.micro_batch_tokens();
  j["total_batch"] = l.total_batch();
  j["total_gpus"] = l.total_gpus();
  j["layer_budget_s"] = num(e.layer_budget_s);
  json t;
  t["attention_s"] = num(e.times.attention);
  t["attention_kv_s"] = num(e.times.attention_kv);
  t["attention_core_s"] = num(e.times.attention_core);
  t["attention_linear_s"] = num(e.times.attention_linear);
  t["a2f_s"] = num(e.times.a2f);
  t["f2a_s"] = num(e.times.f2a);
  t["communication_s"] = num(e.times.communication);
  t["ffn_moe_s"] = num(e.times.ffn_moe);
  t["ffn_dense_s"] = num(e.times.ffn_dense);
  t["lm_head_s"] = num(e.times.lm_head);
  j["stage_times"] = t;
  j["tpot_s"] = num(e.tpot_s);
  j["tokens_per_s_per_gpu"] = num(e.tokens_per_s_per_gpu);
  j["dollars_per_million_tokens"] = num(e.dollars_per_million_tokens);
  j["attention_memory_bytes"] = num(e.attention_memory_bytes);
  j["ffn_memory_bytes"] = num(e.ffn_memory_bytes);
  j["meets_tpot"] = e.meets_tpot;
  j["fits_memory"] = e.fits_memory;
  j["violations"] = e.violations;
  return j;
}

json assumptions_json(const deploy_assumptions& s) {
  json j;
  j["tpot_s"] = num(s.tpot_s);
  j["context"] = s.context;
  j["micro_batches"] = s.micro_batches;
  j["attention_bw_util"] = num(s.attention_bw_util);
  j["attention_mfu"] = num(s.attention_mfu);
  j["ffn_mfu"] = num(s.ffn_mfu);
  j["ffn_bw_util"] = num(s.ffn_bw_util);
  j["ffn_imbalance"] = num(s.ffn_imbalance);
  j["network_util"] = num(s.network_util);
  j["network_latency_s"] = num(s.network_latency_s);
  j["memory_util"] = num(s.memory_util);
  j["kv_bits"] = num(s.kv_bytes_per_value * 8);
  j["combine"] = s.deterministic_combine ? "deterministic" : "throughput";
  j["max_gpus"] = s.max_gpus;
  j["fixed"] = {{"attention_instances", s.attention_instances},
                {"attention_gpus_per_instance", s.attention_gpus_per_instance},
                {"ffn_instances", s.ffn_instances},
                {"ffn_gpus_per_instance", s.ffn_gpus_per_instance},
                {"micro_batch_tokens", s.micro_batch_tokens}};
  return j;
}

std::string deploy_header(const deploy_plan& p) {
  return "Deploying " + p.model.name + ": attention on " + p.attention_hardware.name + ", FFN on " +
         p.ffn_hardware.name + "\n\n" + assumptions_text(p.assumptions, p.attention_hardware, p.ffn_hardware) + "\n";
}

}  // namespace

std::string format_deploy_text(const deploy_plan& p) {
  std::string o = deploy_header(p);
  if (p.layouts.empty()) {
    o += "No layout of at most " + std::to_string(p.assumptions.max_gpus) +
         " GPUs meets the TPOT target and fits in memory (raise --max-gpus or --tpot, or lower --context).\n";
    return o;
  }
  o += std::string(p.layouts.front().feasible() ? "Recommended layout" : "Best layout found (misses the target)") + "\n" +
       layout_text(p.layouts.front());
  if (p.layouts.size() > 1) {
    o += "\nOther layouts, best first\n";
    table t({"attention", "FFN", "GPUs", "micro-batch", "TPOT ms", "tokens/s/GPU", "$/1M tokens", "meets"});
    for (const auto& e : p.layouts) {
      const auto& l = e.layout;
      t.add({std::to_string(l.attention_instances) + " x " + std::to_string(l.attention_gpus_per_instance),
             std::to_string(l.ffn_instances) + " x " + std::to_string(l.ffn_gpus_per_instance),
             std::to_string(l.total_gpus()), std::to_string(l.micro_batch_tokens()), fmt("%.1f", e.tpot_s * 1e3),
             fmt("%.0f", e.tokens_per_s_per_gpu), fmt("%.4f", e.dollars_per_million_tokens), e.feasible() ? "yes" : "no"});
    }
    o += t.str();
  }
  return o;
}

std::string format_deploy_json(const deploy_plan& p) {
  json j;
  j["model"] = model_json(p.model);
  j["attention_hardware"] = hardware_json(p.attention_hardware);
  j["ffn_hardware"] = hardware_json(p.ffn_hardware);
  j["assumptions"] = assumptions_json(p.assumptions);
  j["layouts"] = json::array();
  for (const auto& e : p.layouts) j["layouts"].push_back(evaluation_json(e));
  return j.dump(2) + "\n";
}

std::string format_topology_text(const deploy_plan& p, const topology_counts& t, const deploy_evaluation& e,
                                 const std::string& file) {
  std::string o = deploy_header(p);
  o += "Topology " + file + ": " + std::to_string(t.attention_workers) + " attention worker(s), " +
       std::to_string(t.ffn_workers) + " FFN worker(s), one GPU each, " + std::to_string(t.micro_batches) +
       " micro-batches; batch " + (t.max_batch.empty() ? "not given: the largest that fits is used" : "from max_batch") +
       "\n";
  o += layout_text(e, false);
  if (e.violations.empty()) {
    o += "\nOK: every stage is within its budget and the predicted TPOT meets the target.\n";
  } else {
    o += "\nBREAKS THE BUDGET:\n";
    for (const auto& v : e.violations) o += "  - " + v + "\n";
  }
  return o;
}

std::string format_topology_json(const deploy_plan& p, const topology_counts& t, const deploy_evaluation& e,
                                 const std::string& file) {
  json j;
  j["model"] = model_json(p.model);
  j["attention_hardware"] = hardware_json(p.attention_hardware);
  j["ffn_hardware"] = hardware_json(p.ffn_hardware);
  j["assumptions"] = assumptions_json(p.assumptions);
  j["topology"] = {{"file", file},
                   {"attention_workers", t.attention_workers},
                   {"ffn_workers", t.ffn_workers},
                   {"micro_batches", t.micro_batches},
                   {"max_batch", t.max_batch}};
  j["evaluation"] = evaluation_json(e);
  j["ok"] = e.violations.empty();
  return j.dump(2) + "\n";
}

}  // namespace afd::plan
