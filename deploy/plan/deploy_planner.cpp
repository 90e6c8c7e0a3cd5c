#include "deploy/plan/deploy_planner.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <sstream>


namespace afd::plan {

namespace {

/// Weights are FP8 where the card computes in FP8, BF16 otherwise.
double weight_bytes(const hardware& h) { return h.has_fp8() ? 1.0 : 2.0; }

std::string micros(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f us", s * 1e6);
  return buf;
}

std::string gigabytes(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GB", b / 1e9);
  return buf;
}

}  // namespace

deploy_evaluation evaluate_layout(const architecture& a, const hardware& ha, const hardware& hf,
                                  const deploy_layout& l, const deploy_assumptions& s) {
  deploy_evaluation e;
  e.layout = l;
  const double layers = static_cast<double>(a.num_layers);
  const double k = static_cast<double>(l.micro_batches);
  const double b = static_cast<double>(l.tokens_per_attention_gpu);  // per attention GPU, per micro-batch
  const double tokens = static_cast<double>(l.micro_batch_tokens());
  const double ctx = static_cast<double>(s.context);
  const double hidden = static_cast<double>(a.hidden_size);
  e.layer_budget_s = s.tpot_s / (layers * k);

  // Attention GPU (data-parallel: each owns its requests and a full copy of the attention weights).
  stage_times& t = e.times;
  const double a_flops = ha.peak_flops() * s.attention_mfu;
  const double a_bw = ha.memory_bw * s.attention_bw_util;
  const double wa = weight_bytes(ha);
  t.attention_kv = b * ctx * static_cast<double>(a.kv_values_per_token()) * s.kv_bytes_per_value / a_bw;
  const double core_flops = b * ctx * static_cast<double>(a.attention_flops_per_context_token()) / a_flops;
  t.attention_core = std::max(t.attention_kv, core_flops);
  const double linear_params = static_cast<double>(a.attention_projection_params() + a.router_params());
  t.attention_linear = std::max(2.0 * b * linear_params / a_flops, linear_params * wa / a_bw);
  t.attention = t.attention_core + t.attention_linear;

  // Network: every token goes once to every FFN instance (which spreads it inside over its own
  // links); FFN instances answer with one BF16 partial sum each, or every unit whole when the
  // combine is deterministic. Each GPU has its share of its server's network.
  const double act_out = hf.has_fp8() ? hidden + hidden / 128.0 * 4.0 : 2.0 * hidden;  // FP8 + fp32 block scales
  const double route_meta = a.is_moe() ? static_cast<double>(a.top_k) * 8.0 : 0.0;   // expert id + weight
  const double fan_out = static_cast<double>(l.ffn_instances);
  const double a_link = ha.network_per_gpu_bytes() * s.network_util;
  const double f_link = hf.network_per_gpu_bytes() * s.network_util;
  const double a2f_bytes = tokens * (act_out + route_meta) * fan_out;
  const double units = a.is_moe() ? static_cast<double>(a.top_k + a.num_shared_experts) : 1.0;
  const double f2a_bytes = tokens * 2.0 * hidden * (s.deterministic_combine ? units : fan_out);
  auto transfer = [&](double bytes) {
    return std::max(bytes / (l.attention_gpus() * a_link), bytes / (l.ffn_gpus() * f_link)) + s.network_latency_s;
  };
  t.a2f = transfer(a2f_bytes);
  t.f2a = transfer(f2a_bytes);
  t.communication = t.a2f + t.f2a;

  // FFN GPUs: all tokens of the micro-batch, the layer's units spread evenly (times imbalance).
  const double f_gpus = static_cast<double>(l.ffn_gpus());
  const double f_flops = hf.peak_flops() * s.ffn_mfu;
  const double f_bw = hf.memory_bw * s.ffn_bw_util;
  const double wf = weight_bytes(hf);
  if (a.num_moe_layers > 0) {
    const double experts = static_cast<double>(a.num_experts);
    const double expert = static_cast<double>(a.expert_params());
    // Only experts some token chose are read: expected count under uniform routing.
    const double hit = experts * (1.0 - std::pow(1.0 - static_cast<double>(a.top_k) / experts, tokens));
    const double flops = tokens * 2.0 * (static_cast<double>(a.top_k) * expert + static_cast<double>(a.shared_expert_params()));
    const double bytes = (hit * expert + static_cast<double>(a.shared_expert_params())) * wf;
    t.ffn_moe = s.ffn_imbalance * std::max(flops / f_gpus / f_flops, bytes / f_gpus / f_bw);
  }
  if (a.num_dense_layers > 0) {
    const double dense = static_cast<double>(a.dense_mlp_params());
    t.ffn_dense = std::max(tokens * 2.0 * dense / f_gpus / f_flops, dense * wf / f_gpus / f_bw);
  }
  t.ffn = std::max(t.ffn_moe, t.ffn_dense);
  const double head = static_cast<double>(a.vocab_size * a.hidden_size);
  t.lm_head = std::max(2.0 * b * head / a_flops, head * 2.0 /* BF16 */ / a_bw);

  // A micro-batch's layer runs its stages in sequence; K micro-batches interleave, so a layer
  // takes the longer of (K x the slowest stage) and one micro-batch's A + C + F.
  auto layer_time = [&](double ffn) {
    return std::max(k * std::max({t.attention, t.communication, ffn}), t.attention + t.communication + ffn);
  };
  e.tpot_s = static_cast<double>(a.num_moe_layers) * layer_time(t.ffn_moe) +
             static_cast<double>(a.num_dense_layers) * layer_time(t.ffn_dense) + k * t.lm_head;
  e.tokens_per_s_per_gpu = static_cast<double>(l.total_batch()) / e.tpot_s / static_cast<double>(l.total_gpus());
  const double dollars_per_s = (l.attention_gpus() * ha.price_per_hour + l.ffn_gpus() * hf.price_per_hour) / 3600.0;
  e.dollars_per_million_tokens = 1e6 * dollars_per_s / (e.tokens_per_s_per_gpu * static_cast<double>(l.total_gpus()));

  // Memory: attention GPUs hold the attention weights, embedding and LM head (BF16) and the KV
  // of their K x b requests at full context; FFN GPUs hold their share of every FFN weight.
  e.attention_memory_bytes =
      (layers * static_cast<double>(a.attention_projection_params()) + static_cast<double>(a.num_moe_layers * a.router_params())) * wa +
      static_cast<double>(a.embedding_params()) * 2.0 +
      k * b * ctx * layers * static_cast<double>(a.kv_values_per_token()) * s.kv_bytes_per_value;
  e.ffn_memory_bytes = static_cast<double>(a.ffn_params_total()) * wf / f_gpus * s.ffn_imbalance;
  e.attention_memory_capacity = ha.memory_bytes * s.memory_util;
  e.ffn_memory_capacity = hf.memory_bytes * s.memory_util;
  e.fits_memory = true;
  if (ha.memory_bytes > 0 && e.attention_memory_bytes > e.attention_memory_capacity) {
    e.fits_memory = false;
    e.violations.push_back("attention GPU memory " + gigabytes(e.attention_memory_bytes) + " > usable " +
                           gigabytes(e.attention_memory_capacity));
  }
  if (hf.memory_bytes > 0 && e.ffn_memory_bytes > e.ffn_memory_capacity) {
    e.fits_memory = false;
    e.violations.push_back("FFN GPU memory " + gigabytes(e.ffn_memory_bytes) + " > usable " +
                           gigabytes(e.ffn_memory_capacity));
  }
  e.meets_tpot = e.tpot_s <= s.tpot_s;
  if (t.attention > e.layer_budget_s)
    e.violations.push_back("attention stage " + micros(t.attention) + " > budget " + micros(e.layer_budget_s));
  if (t.communication > e.layer_budget_s)
    e.violations.push_back("communication stage " + micros(t.communication) + " > budget " + micros(e.layer_budget_s));
  if (t.ffn > e.layer_budget_s)
    e.violations.push_back("FFN stage " + micros(t.ffn) + " > budget " + micros(e.layer_budget_s));
  if (!e.meets_tpot) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "predicted TPOT %.1f ms > target %.1f ms", e.tpot_s * 1e3, s.tpot_s * 1e3);
    e.violations.push_back(buf);
  }
  return e;
}

std::int64_t max_feasible_tokens(const architecture& a, const hardware& ha, const hardware& hf, deploy_layout l,
                                 const deploy_assumptions& s) {
  // TPOT and memory grow with the batch, so feasibility is monotone: bisect.
  auto ok = [&](std::int64_t b) {
    l.tokens_per_attention_gpu = b;
    return evaluate_layout(a, ha, hf, l, s).feasible();
  };
  if (!ok(1)) return 0;
  std::int64_t lo = 1, hi = 2;
  while (hi < (std::int64_t{1} << 24) && ok(hi)) {
    lo = hi;
    hi *= 2;
  }
  if (hi >= (std::int64_t{1} << 24)) return lo;
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    (ok(mid) ? lo : hi) = mid;
  }
  return lo;
}

deploy_plan search_layouts(const architecture& a, const hardware& ha, const hardware& hf, const deploy_assumptions& s,
                           std::size_t keep) {
  deploy_plan plan;
  plan.model = a;
  plan.attention_hardware = ha;
  plan.ffn_hardware = hf;
  plan.assumptions = s;
  auto sizes = [](const hardware& h) {
    std::vector<int> out;
    for (int g = 1; g <= h.gpus_per_server; g *= 2) out.push_back(g);
    return out;
  };
  auto sizes_or = [&](const hardware& h, int fixed) {
    return fixed > 0 ? std::vector<int>{fixed} : sizes(h);
  };
  auto free_or = [](int fixed, int n) { return fixed == 0 || fixed == n; };
  std::vector<deploy_evaluation> found;
  for (int ga : sizes_or(ha, s.attention_gpus_per_instance)) {
    for (int na = 1; na * ga <= s.max_gpus; ++na) {
      if (!free_or(s.attention_instances, na)) continue;
      for (int gf : sizes_or(hf, s.ffn_gpus_per_instance)) {
        for (int nf = 1; na * ga + nf * gf <= s.max_gpus; ++nf) {
          if (!free_or(s.ffn_instances, nf)) continue;
          deploy_layout l{na, ga, nf, gf, s.micro_batches, 1};
          if (s.micro_batch_tokens > 0) {
            l.tokens_per_attention_gpu = (s.micro_batch_tokens + l.attention_gpus() - 1) / l.attention_gpus();
          } else {
            const std::int64_t b = max_feasible_tokens(a, ha, hf, l, s);
            if (b == 0) continue;
            l.tokens_per_attention_gpu = b;
          }
          found.push_back(evaluate_layout(a, ha, hf, l, s));
        }
      }
    }
  }
  // Best tokens/s/GPU first; among equals (within 0.1%) fewer GPUs, then fewer instances.
  std::sort(found.begin(), found.end(), [](const deploy_evaluation& x, const deploy_evaluation& y) {
    if (x.feasible() != y.feasible()) return x.feasible();
    const double tx = x.tokens_per_s_per_gpu, ty = y.tokens_per_s_per_gpu;
    if (std::abs(tx - ty) > 1e-3 * std::max(tx, ty)) return tx > ty;
    if (x.layout.total_gpus() != y.layout.total_gpus()) return x.layout.total_gpus() < y.layout.total_gpus();
    const int ix = x.layout.attention_instances + x.layout.ffn_instances;
    const int iy = y.layout.attention_instances + y.layout.ffn_instances;
    if (ix != iy) return ix < iy;
    return x.layout.attention_gpus_per_instance > y.layout.attention_gpus_per_instance;
  });
  if (found.size() > keep) found.resize(keep);
  plan.layouts = std::move(found);
  return plan;
}

// ------------------------------------------------------------------------------------------------
// Topology files, read and validated by deploy/topology: only the counts the planner needs.

topology_counts counts_of(const topology::topology& t) {
  topology_counts c;
  c.attention_workers = static_cast<int>(t.attention_workers.size());
  c.ffn_workers = static_cast<int>(t.ffn_workers.size());
  c.micro_batches = t.pipeline.micro_batches;
  for (const auto& a : t.attention_workers) c.max_batch.push_back(a.max_batch);
  c.kv_bytes_per_value = static_cast<double>(size_of(t.model.kv_dtype));
  c.deterministic_combine = t.model.combine == combine_mode::deterministic;
  return c;
}

expected<topology_counts> read_topology_file(const std::string& path) {
  auto t = topology::load_file(path);
  if (!t) return t.err();
  return counts_of(*t);
}

deploy_evaluation check_topology(const architecture& a, const hardware& ha, const hardware& hf,
                                 const topology_counts& t, deploy_assumptions s) {
  s.micro_batches = t.micro_batches;
  if (t.kv_bytes_per_value) s.kv_bytes_per_value = *t.kv_bytes_per_value;
  if (t.deterministic_combine) s.deterministic_combine = *t.deterministic_combine;
  // One worker per GPU: each worker is an instance of one GPU, and receives every token (FFN).
  deploy_layout l{t.attention_workers, 1, t.ffn_workers, 1, t.micro_batches, 1};
  if (!t.max_batch.empty()) {
    const std::int64_t busiest = *std::max_element(t.max_batch.begin(), t.max_batch.end());
    l.tokens_per_attention_gpu = (busiest + t.micro_batches - 1) / t.micro_batches;
  } else {
    l.tokens_per_attention_gpu = std::max<std::int64_t>(1, max_feasible_tokens(a, ha, hf, l, s));
  }
  return evaluate_layout(a, ha, hf, l, s);
}

}  // namespace afd::plan
