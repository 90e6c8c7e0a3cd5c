#include "deploy/plan/cost_model.hpp"

#include <algorithm>

namespace afd::plan {

token_work compute_token_work(const architecture& a, std::int64_t context, double kv_bytes_per_value) {
  const double layers = static_cast<double>(a.num_layers);
  const double c = static_cast<double>(context);
  token_work w;
  w.context = context;
  w.kv_bytes = layers * static_cast<double>(a.kv_values_per_token()) * kv_bytes_per_value * c;
  w.attention_flops = layers * static_cast<double>(a.attention_flops_per_context_token()) * c;
  w.linear_flops = 2.0 * layers * static_cast<double>(a.attention_projection_params());
  w.ffn_flops = 2.0 * static_cast<double>(a.ffn_params_activated());
  return w;
}

hardware_cost compute_hardware_cost(const token_work& w, const hardware& h) {
  hardware_cost c;
  c.hardware = h.name;
  const double flop_dollars = w.attention_flops * h.dollars_per_flop();
  const double kv_dollars = w.kv_bytes * h.dollars_per_byte();
  c.attention_memory_bound = kv_dollars >= flop_dollars;
  c.attention_core_dollars = std::max(flop_dollars, kv_dollars);
  c.linear_dollars = w.linear_flops * h.dollars_per_flop();
  c.ffn_dollars = w.ffn_flops * h.dollars_per_flop();
  return c;
}

cost_report compute_cost_report(const architecture& a, const std::vector<hardware>& hw,
                                const std::vector<std::int64_t>& contexts, double kv_bytes_per_value) {
  cost_report r;
  r.model = a;
  r.hardware_kinds = hw;
  r.kv_bytes_per_value = kv_bytes_per_value;
  for (std::int64_t ctx : contexts) {
    cost_at_context row;
    row.work = compute_token_work(a, ctx, kv_bytes_per_value);
    for (const auto& h : hw) row.costs.push_back(compute_hardware_cost(row.work, h));
    // Cheapest attention and cheapest FFN are chosen independently: that is what AFD allows.
    // Ties keep the earlier hardware of the list, so the result does not depend on float noise.
    const hardware_cost* best_a = nullptr;
    const hardware_cost* best_f = nullptr;
    for (const auto& c : row.costs) {
      if (!best_a || c.attention_per_million() < best_a->attention_per_million()) best_a = &c;
      if (!best_f || c.ffn_per_million() < best_f->ffn_per_million()) best_f = &c;
    }
    if (best_a && best_f) {
      row.best.attention_hardware = best_a->hardware;
      row.best.ffn_hardware = best_f->hardware;
      row.best.attention_per_million = best_a->attention_per_million();
      row.best.ffn_per_million = best_f->ffn_per_million();
    }
    r.contexts.push_back(std::move(row));
  }
  return r;
}

double minimum_sparsity(const hardware& h, std::int64_t hidden, std::int64_t layers, const sparsity_assumptions& s,
                        double network_override) {
  // Compute-bound FFN: an expert's FP8 weights (1 byte per parameter, 2 FLOPs per parameter and
  // token) need FLOP/s / (2 x B/s) tokens. A layer's traffic, bytes_per_hidden x hidden per token,
  // must cross one server's network within TPOT / (stages x layers). Tokens per expert = tokens
  // x sparsity, hence the bound.
  const double network = network_override > 0 ? network_override : h.network_per_server_bytes;
  const double tokens_per_expert = h.peak_flops() / (2.0 * h.memory_bw);
  const double layer_time = s.tpot_s / static_cast<double>(s.stages) / static_cast<double>(layers);
  const double max_tokens = network * layer_time / (s.bytes_per_hidden * static_cast<double>(hidden));
  return tokens_per_expert / max_tokens;
}

std::vector<sparsity_row> compute_sparsity(const std::vector<hardware>& hw, const std::vector<architecture>& models,
                                           const sparsity_assumptions& s, const std::vector<double>& network_overrides) {
  std::vector<sparsity_row> rows;
  for (const auto& h : hw) {
    std::vector<double> networks = network_overrides;
    if (networks.empty()) networks.push_back(h.network_per_server_bytes);
    for (double net : networks) {
      for (const auto& m : models) {
        sparsity_row r;
        r.hardware = h.name;
        r.network_bytes = net;
        r.model = m.name;
        r.minimum = minimum_sparsity(h, m.hidden_size, m.num_layers, s, net);
        r.model_sparsity = m.sparsity();
        rows.push_back(std::move(r));
      }
    }
  }
  return rows;
}

}  // namespace afd::plan
