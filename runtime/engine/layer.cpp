#include "runtime/engine/layer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace afd::engine {

using kernels::require;

namespace {

float* sized(std::vector<float>& v, std::int64_t n) {
  if (v.size() < static_cast<std::size_t>(n)) v.resize(static_cast<std::size_t>(n));
  return v.data();
}

void round_rows(dtype type, float* y, std::int64_t n) {
  if (type == dtype::f32) return;
  for (std::int64_t i = 0; i < n; ++i) y[i] = round_to(type, y[i]);
}

}  // namespace

void embed(kernels::backend& be, const model_weights& w, std::span<const std::int32_t> ids, float* x) {
  require(be.gather_rows({w.embedding(), ids, x}), be);
}

void attention_block(kernels::backend& be, const model_weights& w, std::int64_t layer, const numerics& num,
                     const kernels::kv_layer_view& cache, std::span<const kernels::kv_slot> slots, std::span<const std::int32_t> positions, float* x,
                     float* x_f, std::int32_t* topk_ids, float* topk_weights, attention_workspace& ws) {
  const model_config& c = w.config();
  const attention_weights& a = w.attention(layer);
  const auto m = static_cast<std::int64_t>(slots.size());
  if (m == 0) return;
  const std::int64_t hidden = c.hidden_size, hd = c.head_dim, heads = c.num_attention_heads;
  const std::int64_t qw = c.q_width(), sq = c.share_q_dim;
  const auto eps = static_cast<float>(c.rms_norm_eps);

  float* normed = sized(ws.normed, m * hidden);
  float* q_lr = sized(ws.q_lr, m * sq);
  float* q = sized(ws.q, m * qw);
  float* k = sized(ws.k, m * hd);
  float* v = sized(ws.v, m * hd);
  float* attn = sized(ws.attn, m * qw);

  require(be.rmsnorm({x, m, hidden, a.input_norm, eps, normed}), be);
  require(be.gemm({normed, m, hidden, a.q_proj, q_lr}), be);
  require(be.gemm({normed, m, hidden, a.k_proj, k}), be);
  require(be.gemm({normed, m, hidden, a.v_proj, v}), be);
  require(be.rmsnorm({q_lr, m, sq, a.inter_norm, eps, q_lr}), be);
  require(be.gemm({q_lr, m, sq, a.wq, q}), be);
  require(be.rope({q, m, heads, hd, positions, c.rope_theta}), be);
  require(be.rope({k, m, 1, hd, positions, c.rope_theta}), be);
  require(be.kv_append({cache, slots, k, v, hd}), be);
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  require(be.attention({cache, slots, q, heads, hd, scale, attn}), be);
  require(be.gemm({attn, m, qw, a.o_proj, normed}), be);  // normed now holds o_proj's output
  for (std::int64_t i = 0; i < m * hidden; ++i) x[i] += normed[i];

  require(be.rmsnorm({x, m, hidden, a.post_norm, eps, x_f}), be);
  if (c.is_moe_layer(layer)) {
    float* logits = sized(ws.router_logits, m * c.moe_num_experts);
    // The router reads the unrounded norm output, before the dispatch rounding below.
    require(be.gemm({x_f, m, hidden, a.router, logits}), be);
    require(be.router_topk({logits, m, c.moe_num_experts, c.moe_top_k, c.norm_expert_weight, topk_ids, topk_weights}),
            be);
  }
  require(be.round_activations({num.dispatch, x_f, m, hidden}), be);
}

void group_by_expert(const std::int32_t* topk_ids, const float* topk_weights, std::int64_t m, std::int64_t k,
                     expert_groups& out) {
  out.count = 0;
  out.order.clear();
  for (std::int64_t i = 0; i < m * k; ++i) out.order.emplace_back(topk_ids[i], i);
  std::sort(out.order.begin(), out.order.end());
  expert_tokens* g = nullptr;
  for (const auto& [expert, flat] : out.order) {
    if (g == nullptr || g->expert != expert) {
      if (out.count == out.groups.size()) out.groups.emplace_back();
      g = &out.groups[out.count++];
      g->expert = expert;
      g->tokens.clear();
      g->weights.clear();
    }
    g->tokens.push_back(static_cast<std::int32_t>(flat / k));
    g->weights.push_back(topk_weights[flat]);
  }
}

std::vector<expert_tokens> group_by_expert(const std::int32_t* topk_ids, const float* topk_weights, std::int64_t m,
                                           std::int64_t k) {
  expert_groups out;
  group_by_expert(topk_ids, topk_weights, m, k, out);
  out.groups.resize(out.count);
  return std::move(out.groups);
}

void ffn_unit(kernels::backend& be, const model_weights& w, std::int64_t layer, std::int32_t unit, const float* x_f, std::int64_t m,
              const float* token_weights, dtype out, float* y, ffn_workspace& ws) {
  if (m == 0) return;
  const ffn_weights& f = w.ffn(layer);
  const swiglu_weights& s = unit == shared_unit ? f.shared : f.experts[static_cast<std::size_t>(unit)];
  const std::int64_t hidden = w.config().hidden_size;
  float* scratch = sized(ws.scratch, 2 * m * s.width());
  require(be.swiglu({x_f, m, hidden, s.gate, s.up, s.down, y, {scratch, static_cast<std::size_t>(2 * m * s.width())}}),
          be);
  if (unit != shared_unit) {
    for (std::int64_t i = 0; i < m; ++i) {
      const float wi = token_weights[i];
      float* row = y + i * hidden;
      for (std::int64_t j = 0; j < hidden; ++j) row[j] = wi * row[j];
    }
  }
  round_rows(out, y, m * hidden);
}

void canonical_expert_order(std::span<std::int32_t> experts) { std::sort(experts.begin(), experts.end()); }

void combine_units(std::span<const float* const> units, std::int64_t width, dtype sum_rounding, const float* h,
                   float* out) {
  for (std::int64_t j = 0; j < width; ++j) {
    float sum = 0.0f;
    for (const float* u : units) sum += u[j];
    out[j] = h[j] + round_to(sum_rounding, sum);
  }
}

void ffn_block(kernels::backend& be, const model_weights& w, std::int64_t layer, const numerics& num, const float* x_f, std::int64_t m,
               const std::int32_t* topk_ids, const float* topk_weights, float* x, ffn_workspace& ws) {
  if (m == 0) return;
  const model_config& c = w.config();
  const std::int64_t hidden = c.hidden_size;
  const bool deterministic = num.mode == combine_mode::deterministic;
  const dtype unit_type = deterministic ? num.combine : dtype::f32;
  const dtype sum_type = deterministic ? dtype::f32 : num.combine;
  const ffn_weights& f = w.ffn(layer);
  const bool has_shared = f.shared.loaded();

  if (!c.is_moe_layer(layer)) {
    float* u = sized(ws.units, m * hidden);
    ffn_unit(be, w, layer, shared_unit, x_f, m, nullptr, unit_type, u, ws);
    for (std::int64_t i = 0; i < m; ++i) {
      const float* row = u + i * hidden;
      combine_units(std::span<const float* const>(&row, 1), hidden, sum_type, x + i * hidden, x + i * hidden);
    }
    return;
  }

  // Units of the routed experts, laid out group by group; then the shared unit for every token.
  const std::int64_t k = c.moe_top_k;
  group_by_expert(topk_ids, topk_weights, m, k, ws.groups);
  const std::int64_t routed_rows = m * k;
  float* units = sized(ws.units, (routed_rows + (has_shared ? m : 0)) * hidden);
  std::vector<const float*>& unit_of = ws.unit_of;
  unit_of.assign(static_cast<std::size_t>(m * c.moe_num_experts), nullptr);
  std::int64_t row = 0;
  for (const auto& g : ws.groups.view()) {
    const auto n = static_cast<std::int64_t>(g.tokens.size());
    float* gathered = sized(ws.gathered, n * hidden);
    for (std::int64_t t = 0; t < n; ++t)
      std::memcpy(gathered + t * hidden, x_f + g.tokens[static_cast<std::size_t>(t)] * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
    float* y = units + row * hidden;
    ffn_unit(be, w, layer, g.expert, gathered, n, g.weights.data(), unit_type, y, ws);
    for (std::int64_t t = 0; t < n; ++t)
      unit_of[static_cast<std::size_t>(g.tokens[static_cast<std::size_t>(t)] * c.moe_num_experts + g.expert)] =
          y + t * hidden;
    row += n;
  }
  float* shared = units + routed_rows * hidden;
  if (has_shared) ffn_unit(be, w, layer, shared_unit, x_f, m, nullptr, unit_type, shared, ws);

  std::vector<std::int32_t>& experts = ws.experts;
  experts.resize(static_cast<std::size_t>(k));
  std::vector<const float*>& ordered = ws.ordered;
  for (std::int64_t i = 0; i < m; ++i) {
    std::copy(topk_ids + i * k, topk_ids + (i + 1) * k, experts.begin());
    canonical_expert_order(experts);
    ordered.clear();
    for (std::int32_t e : experts) ordered.push_back(unit_of[static_cast<std::size_t>(i * c.moe_num_experts + e)]);
    if (has_shared) ordered.push_back(shared + i * hidden);
    combine_units(ordered, hidden, sum_type, x + i * hidden, x + i * hidden);
  }
}

void final_logits(kernels::backend& be, const model_weights& w, const float* x, std::int64_t rows, float* logits,
                  std::vector<float>& scratch) {
  if (rows == 0) return;
  const model_config& c = w.config();
  float* normed = sized(scratch, rows * c.hidden_size);
  require(be.rmsnorm({x, rows, c.hidden_size, w.final_norm(), static_cast<float>(c.rms_norm_eps), normed}), be);
  require(be.gemm({normed, rows, c.hidden_size, w.lm_head(), logits}), be);
}

}  // namespace afd::engine
