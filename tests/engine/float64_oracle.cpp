#include "tests/engine/float64_oracle.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace afd::engine::testing {

namespace {

using vec = std::vector<double>;

// y[r] = sum_c W[r, c] x[c], W row-major [rows, cols].
vec matvec(const vec& w, std::int64_t rows, std::int64_t cols, const double* x) {
  vec y(static_cast<std::size_t>(rows), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    const double* wr = w.data() + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) s += wr[c] * x[c];
    y[static_cast<std::size_t>(r)] = s;
  }
  return y;
}

vec rmsnorm(const double* x, std::int64_t n, const vec& w, double eps) {
  double ss = 0.0;
  for (std::int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  vec y(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) y[static_cast<std::size_t>(i)] = x[i] * inv * w[static_cast<std::size_t>(i)];
  return y;
}

// NeoX rotate-half over the full head: pairs (i, i + d/2), inv_freq_i = theta^(-2i/d).
void rope(double* x, std::int64_t d, std::int64_t position, double theta) {
  const std::int64_t half = d / 2;
  for (std::int64_t i = 0; i < half; ++i) {
    const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const double angle = static_cast<double>(position) * inv_freq;
    const double c = std::cos(angle), s = std::sin(angle);
    const double a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

double silu(double z) { return z / (1.0 + std::exp(-z)); }

}  // namespace

float64_oracle::vec float64_oracle::load(const model::checkpoint& ckpt, const std::string& name) {
  auto t = ckpt.load_f32(name);
  if (!t) {
    ADD_FAILURE() << "oracle cannot load " << name << ": " << t.err().to_string();
    ok_ = false;
    return {};
  }
  return vec(t->begin(), t->end());
}

float64_oracle::vec float64_oracle::load_part(const model::checkpoint& ckpt, const std::string& name,
                                              std::int64_t first) {
  auto t = ckpt.load_f32(name, first, 1);
  if (!t) {
    ADD_FAILURE() << "oracle cannot load " << name << "[" << first << "]: " << t.err().to_string();
    ok_ = false;
    return {};
  }
  return vec(t->begin(), t->end());
}

float64_oracle::float64_oracle(const model::checkpoint& ckpt) : c_(ckpt.config()) {
  embed_ = load(ckpt, "model.embed_tokens.weight");
  final_norm_ = load(ckpt, "model.norm.weight");
  lm_head_ = load(ckpt, "lm_head.weight");
  for (std::int64_t i = 0; i < c_.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    layer l;
    l.input_norm = load(ckpt, p + "input_layernorm.weight");
    l.post_norm = load(ckpt, p + "post_attention_layernorm.weight");
    l.inter_norm = load(ckpt, p + "self_attn.inter_norm.weight");
    l.q_proj = load(ckpt, p + "self_attn.q_proj.weight");
    l.k_proj = load(ckpt, p + "self_attn.k_proj.weight");
    l.v_proj = load(ckpt, p + "self_attn.v_proj.weight");
    l.wq = load(ckpt, p + "self_attn.wq.weight");
    l.o_proj = load(ckpt, p + "self_attn.o_proj.weight");
    l.moe = c_.is_moe_layer(i);
    if (l.moe) {
      l.router = load(ckpt, p + "moe.gate.weight");
      for (std::int64_t e = 0; e < c_.moe_num_experts; ++e) {
        mlp m;
        m.gate = load_part(ckpt, p + "moe.gate_proj.weight", e);
        m.up = load_part(ckpt, p + "moe.up_proj.weight", e);
        m.down = load_part(ckpt, p + "moe.down_proj.weight", e);
        m.width = c_.moe_intermediate_size;
        l.experts.push_back(std::move(m));
      }
      if (c_.share_expert_dim > 0) {
        l.has_shared = true;
        l.shared = {load(ckpt, p + "share_expert.gate_proj.weight"), load(ckpt, p + "share_expert.up_proj.weight"),
                    load(ckpt, p + "share_expert.down_proj.weight"), c_.share_expert_dim};
      }
    } else {
      l.has_shared = true;
      l.shared = {load(ckpt, p + "mlp.gate_proj.weight"), load(ckpt, p + "mlp.up_proj.weight"),
                  load(ckpt, p + "mlp.down_proj.weight"), c_.intermediate_size};
    }
    layers_.push_back(std::move(l));
  }
}

float64_oracle::vec float64_oracle::swiglu(const mlp& m, const vec& x) const {
  const std::int64_t h = c_.hidden_size;
  const vec g = matvec(m.gate, m.width, h, x.data());
  const vec u = matvec(m.up, m.width, h, x.data());
  vec a(static_cast<std::size_t>(m.width));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = silu(g[i]) * u[i];
  return matvec(m.down, h, m.width, a.data());
}

std::vector<std::vector<double>> float64_oracle::logits(const std::vector<std::int32_t>& tokens) const {
  const std::int64_t h = c_.hidden_size, d = c_.head_dim, heads = c_.num_attention_heads;
  const std::int64_t sq = c_.share_q_dim;
  const auto t_count = static_cast<std::int64_t>(tokens.size());
  const double eps = c_.rms_norm_eps;

  std::vector<vec> x(static_cast<std::size_t>(t_count));
  for (std::int64_t t = 0; t < t_count; ++t) {
    const double* row = embed_.data() + tokens[static_cast<std::size_t>(t)] * h;
    x[static_cast<std::size_t>(t)] = vec(row, row + h);
  }

  for (const layer& l : layers_) {
    // Keys and values of every position (after RoPE for k), then causal attention per token.
    std::vector<vec> ks(static_cast<std::size_t>(t_count)), vs(ks.size()), qs(ks.size());
    for (std::int64_t t = 0; t < t_count; ++t) {
      const vec n = rmsnorm(x[static_cast<std::size_t>(t)].data(), h, l.input_norm, eps);
      vec q_lr = matvec(l.q_proj, sq, h, n.data());
      vec k = matvec(l.k_proj, d, h, n.data());
      vec v = matvec(l.v_proj, d, h, n.data());
      q_lr = rmsnorm(q_lr.data(), sq, l.inter_norm, eps);
      vec q = matvec(l.wq, heads * d, sq, q_lr.data());
      for (std::int64_t hh = 0; hh < heads; ++hh) rope(q.data() + hh * d, d, t, c_.rope_theta);
      rope(k.data(), d, t, c_.rope_theta);
      qs[static_cast<std::size_t>(t)] = std::move(q);
      ks[static_cast<std::size_t>(t)] = std::move(k);
      vs[static_cast<std::size_t>(t)] = std::move(v);
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    for (std::int64_t t = 0; t < t_count; ++t) {
      vec attn(static_cast<std::size_t>(heads * d), 0.0);
      for (std::int64_t hh = 0; hh < heads; ++hh) {
        const double* q = qs[static_cast<std::size_t>(t)].data() + hh * d;
        vec s(static_cast<std::size_t>(t + 1));
        double mx = -1e300;
        for (std::int64_t j = 0; j <= t; ++j) {
          double dot = 0.0;
          for (std::int64_t i = 0; i < d; ++i) dot += q[i] * ks[static_cast<std::size_t>(j)][static_cast<std::size_t>(i)];
          s[static_cast<std::size_t>(j)] = dot * scale;
          mx = std::max(mx, s[static_cast<std::size_t>(j)]);
        }
        double z = 0.0;
        for (auto& e : s) {
          e = std::exp(e - mx);
          z += e;
        }
        for (std::int64_t j = 0; j <= t; ++j)
          for (std::int64_t i = 0; i < d; ++i)
            attn[static_cast<std::size_t>(hh * d + i)] +=
                s[static_cast<std::size_t>(j)] / z * vs[static_cast<std::size_t>(j)][static_cast<std::size_t>(i)];
      }
      const vec o = matvec(l.o_proj, h, heads * d, attn.data());
      vec& xt = x[static_cast<std::size_t>(t)];
      for (std::int64_t i = 0; i < h; ++i) xt[static_cast<std::size_t>(i)] += o[static_cast<std::size_t>(i)];

      const vec n = rmsnorm(xt.data(), h, l.post_norm, eps);
      vec ffn(static_cast<std::size_t>(h), 0.0);
      if (l.moe) {
        const std::int64_t e_count = c_.moe_num_experts;
        vec p = matvec(l.router, e_count, h, n.data());
        const double mx = *std::max_element(p.begin(), p.end());
        double z = 0.0;
        for (auto& e : p) {
          e = std::exp(e - mx);
          z += e;
        }
        for (auto& e : p) e /= z;
        std::vector<std::int64_t> order(static_cast<std::size_t>(e_count));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
          return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)];
        });
        double wsum = 0.0;
        for (std::int64_t j = 0; j < c_.moe_top_k; ++j) wsum += p[static_cast<std::size_t>(order[static_cast<std::size_t>(j)])];
        for (std::int64_t j = 0; j < c_.moe_top_k; ++j) {
          const std::int64_t e = order[static_cast<std::size_t>(j)];
          double w = p[static_cast<std::size_t>(e)];
          if (c_.norm_expert_weight) w /= wsum;
          const vec y = swiglu(l.experts[static_cast<std::size_t>(e)], n);
          for (std::int64_t i = 0; i < h; ++i) ffn[static_cast<std::size_t>(i)] += w * y[static_cast<std::size_t>(i)];
        }
      }
      if (l.has_shared) {
        const vec y = swiglu(l.shared, n);
        for (std::int64_t i = 0; i < h; ++i) ffn[static_cast<std::size_t>(i)] += y[static_cast<std::size_t>(i)];
      }
      for (std::int64_t i = 0; i < h; ++i) xt[static_cast<std::size_t>(i)] += ffn[static_cast<std::size_t>(i)];
    }
  }

  std::vector<vec> out;
  for (std::int64_t t = 0; t < t_count; ++t) {
    const vec n = rmsnorm(x[static_cast<std::size_t>(t)].data(), h, final_norm_, eps);
    out.push_back(matvec(lm_head_, c_.vocab_size, h, n.data()));
  }
  return out;
}

double relative_l2(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double diff = static_cast<double>(a[i]) - b[i];
    num += diff * diff;
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace afd::engine::testing
