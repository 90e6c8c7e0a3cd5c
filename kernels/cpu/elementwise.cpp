// Per-token kernels: rmsnorm, rope, the router, FP8 activation quantization, KV append.

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/dot.hpp"

namespace afd::kernels::cpu {

void rmsnorm(const float* x, std::int64_t m, std::int64_t n, const float* weight, float eps, float* y) {
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * n;
    float* yi = y + i * n;
    // Sum of squares with the backend's one dot-product order; then mean, rsqrt as 1 / sqrt in f32.
    float ss = 0.0f;
    detail::dot_tile(xi, n, 1, dtype::f32, xi, n, 1, n, &ss, 1);
    const float mean = ss / static_cast<float>(n);
    const float r = 1.0f / std::sqrt(mean + eps);
    for (std::int64_t c = 0; c < n; ++c) yi[c] = (xi[c] * r) * weight[c];
  }
}

void rope_neox(float* x, std::int64_t m, std::int64_t heads, std::int64_t head_dim, const std::int32_t* positions,
               double theta) {
  const std::int64_t half = head_dim / 2;
  // inv_freq_i = theta^(-2i/d), evaluated in double and rounded once to f32; the angle is the f32
  // product position * inv_freq (as the reference implementations compute it), cos/sin in f32.
  std::vector<float> inv_freq(static_cast<std::size_t>(half)), c(inv_freq.size()), s(inv_freq.size());
  for (std::int64_t i = 0; i < half; ++i)
    inv_freq[i] = static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim)));
  for (std::int64_t t = 0; t < m; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (std::int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      c[i] = std::cos(angle);
      s[i] = std::sin(angle);
    }
    for (std::int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (std::int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void kv_append(const kv_layer_view& cache, std::span<const kv_slot> slots, const float* k, const float* v) {
  const std::int64_t d = cache.head_dim;
  for (std::size_t t = 0; t < slots.size(); ++t) {
    const std::int64_t p = slots[t].position;
    const std::int64_t block = slots[t].block_table[p / cache.block_size];
    const std::size_t row = static_cast<std::size_t>((block * cache.block_size + p % cache.block_size) * d);
    for (std::int64_t c = 0; c < d; ++c) {
      store_from_f32(cache.type, cache.k, row + static_cast<std::size_t>(c), k[static_cast<std::int64_t>(t) * d + c]);
      store_from_f32(cache.type, cache.v, row + static_cast<std::size_t>(c), v[static_cast<std::int64_t>(t) * d + c]);
    }
  }
}

void router_topk(const float* logits, std::int64_t m, std::int64_t n_experts, std::int64_t k, bool renormalise,
                 std::int32_t* ids, float* weights) {
  std::vector<float> p(static_cast<std::size_t>(n_experts));
  std::vector<char> taken(p.size());
  for (std::int64_t t = 0; t < m; ++t) {
    const float* l = logits + t * n_experts;
    float mx = l[0];
    for (std::int64_t e = 1; e < n_experts; ++e) mx = std::max(mx, l[e]);
    float sum = 0.0f;  // in index order
    for (std::int64_t e = 0; e < n_experts; ++e) {
      p[e] = std::exp(l[e] - mx);
      sum += p[e];
    }
    for (std::int64_t e = 0; e < n_experts; ++e) p[e] = p[e] / sum;
    std::fill(taken.begin(), taken.end(), 0);
    float selected = 0.0f;  // in selection order
    for (std::int64_t j = 0; j < k; ++j) {
      std::int64_t best = -1;
      for (std::int64_t e = 0; e < n_experts; ++e)  // strict '>' in index order: ties to the lower id
        if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
      taken[best] = 1;
      ids[t * k + j] = static_cast<std::int32_t>(best);
      weights[t * k + j] = p[best];
      selected += p[best];
    }
    if (renormalise)
      for (std::int64_t j = 0; j < k; ++j) weights[t * k + j] = weights[t * k + j] / selected;
  }
}

void quantize_fp8(const float* x, std::int64_t m, std::int64_t n, std::uint8_t* q, float* scales) {
  const std::int64_t blocks = (n + fp8_activation_block - 1) / fp8_activation_block;
  for (std::int64_t t = 0; t < m; ++t) {
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t c0 = b * fp8_activation_block, c1 = std::min(n, c0 + fp8_activation_block);
      const float* xr = x + t * n;
      float amax = 0.0f;
      for (std::int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(xr[c]));
      const float scale = amax == 0.0f ? 1.0f : amax / fp8_e4m3_max;
      scales[t * blocks + b] = scale;
      for (std::int64_t c = c0; c < c1; ++c) q[t * n + c] = f32_to_fp8_e4m3(xr[c] / scale);
    }
  }
}

void dequantize_fp8(const std::uint8_t* q, const float* scales, std::int64_t m, std::int64_t n, float* x) {
  const std::int64_t blocks = (n + fp8_activation_block - 1) / fp8_activation_block;
  for (std::int64_t t = 0; t < m; ++t)
    for (std::int64_t c = 0; c < n; ++c)
      x[t * n + c] = fp8_e4m3_to_f32(q[t * n + c]) * scales[t * blocks + c / fp8_activation_block];
}

void round_activations(dtype wire, float* x, std::int64_t m, std::int64_t n) {
  switch (wire) {
    case dtype::f32: return;
    case dtype::bf16:
    case dtype::f16:
      for (std::int64_t i = 0; i < m * n; ++i) x[i] = round_to(wire, x[i]);
      return;
    case dtype::f8_e4m3: {
      std::vector<std::uint8_t> q(static_cast<std::size_t>(n));
      std::vector<float> scales(static_cast<std::size_t>((n + fp8_activation_block - 1) / fp8_activation_block));
      for (std::int64_t t = 0; t < m; ++t) {
        quantize_fp8(x + t * n, 1, n, q.data(), scales.data());
        dequantize_fp8(q.data(), scales.data(), 1, n, x + t * n);
      }
      return;
    }
  }
}

}  // namespace afd::kernels::cpu
