#pragma once
// Runs A attention and F FFN workers (one thread each) over given transports through several
// steps, layers and micro-batches of dispatch/combine, checks every received byte against the
// generator, and returns each attention worker's combined outputs for comparison with oracles.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "transport/exchange.hpp"

namespace afd::transport::testing {

struct run_plan {
  exchange_shape shape;
  std::uint32_t steps = 2;
  std::uint32_t layers = 3;       // layer 0 is dense (no routing), the rest MoE
  std::uint32_t experts = 6;
  std::uint32_t epoch = 1;
  std::chrono::milliseconds deadline{10000};
};

// Generators: plain functions of indices, shared by senders and checkers.
inline std::uint32_t tokens_of(std::uint32_t a, std::uint32_t step, std::uint32_t mb,
                               std::uint32_t max_tokens) {
  std::uint32_t n = (a * 7 + step * 3 + mb * 5) % (max_tokens + 1);
  return (a + mb) % 4 == 1 ? 0 : n;  // some workers have nothing to send
}
inline std::uint8_t token_byte(std::uint32_t a, std::uint32_t step, std::uint32_t layer,
                               std::uint32_t mb, std::uint32_t t, std::uint32_t h) {
  // Finite E4M3 / bf16-low-byte patterns (0x7F and 0xFF are E4M3 NaN: avoid them).
  return static_cast<std::uint8_t>((a * 31 + step * 17 + layer * 13 + mb * 11 + t * 7 + h) % 0x7E);
}
inline std::int32_t expert_of(std::uint32_t a, std::uint32_t step, std::uint32_t layer,
                              std::uint32_t t, std::uint32_t k, std::uint32_t experts) {
  // Distinct experts per token: a stride through the experts.
  return static_cast<std::int32_t>((a + step + layer + t * 3 + k * 1) % experts);
}
inline float weight_of(std::uint32_t t, std::uint32_t k) { return 0.25f + 0.125f * float(k) + 0.001f * float(t); }
// A unit's output vector element, as the FFN worker computes it from what it received.
inline std::uint16_t unit_output(std::uint8_t token_byte, float scale, std::uint32_t unit, float weight,
                                 std::uint32_t h) {
  float u = unit == shared_unit ? 0.75f : float(unit + 1) * 0.1f;
  return afd::f32_to_bf16((float(token_byte) * scale * u + float(h % 5) * 0.01f) * weight);
}

struct worker_output {
  std::vector<float> values;  // [T, H]
  std::uint32_t tokens = 0;
};
using output_key = std::tuple<std::uint32_t, std::uint32_t, std::uint32_t, std::uint32_t>;  // a, step, layer, mb

// Owner of unit u among F FFN workers in deterministic mode.
inline std::uint32_t owner_of(std::uint32_t unit, std::uint32_t layer, std::uint32_t ffn_count) {
  return unit == shared_unit ? layer % ffn_count : unit % ffn_count;
}

// The test's own sum of what an attention worker received for a slot (the exchange moves bytes;
// the data plane sums with engine::combine_units), into out [T, H] in fp32. Deterministic: per
// token, the units in `units[t]` by ascending id (shared_unit sorts last), each received exactly
// once from some FFN worker, in any order; throughput: the FFN workers' partials in worker order.
// "" or what is wrong.
inline std::string sum_received(const attention_exchange& ex, std::uint32_t slot, std::uint32_t F,
                                std::uint32_t T, std::vector<std::vector<std::uint32_t>> units,
                                std::vector<float>& out) {
  const std::size_t H = ex.shape().hidden;
  out.assign(std::size_t{T} * H, 0.0f);
  auto value = [](const combine_view& v, std::size_t i) {
    return v.vectors_f32 != nullptr ? v.vectors_f32[i] : afd::bf16_to_f32(v.vectors[i]);
  };
  for (std::uint32_t f = 0; f < F; ++f) {
    if (ex.received(slot, f).token_count != T) return "FFN worker " + std::to_string(f) + ": wrong token count";
  }
  if (ex.shape().mode == combine_mode::throughput) {
    for (std::uint32_t f = 0; f < F; ++f) {
      const combine_view v = ex.received(slot, f);
      if (v.vector_count != T) return "FFN worker " + std::to_string(f) + ": wrong vector count";
      for (std::size_t i = 0; i < std::size_t{T} * H; ++i) out[i] += value(v, i);
    }
    return {};
  }
  struct entry {
    std::uint32_t token, unit, f, i;
  };
  std::vector<entry> all;
  for (std::uint32_t f = 0; f < F; ++f) {
    const combine_view v = ex.received(slot, f);
    for (std::uint32_t i = 0; i < v.vector_count; ++i) all.push_back({v.entries[i].token, v.entries[i].unit, f, i});
  }
  std::sort(all.begin(), all.end(), [](const entry& x, const entry& y) {
    return std::tie(x.token, x.unit) < std::tie(y.token, y.unit);
  });
  std::size_t next = 0;
  for (std::uint32_t t = 0; t < T; ++t) {
    std::sort(units[t].begin(), units[t].end());
    for (std::uint32_t unit : units[t]) {
      if (next >= all.size() || all[next].token != t || all[next].unit != unit) {
        return "token " + std::to_string(t) + ": unit " + std::to_string(unit) + " missing or not unique";
      }
      const combine_view v = ex.received(slot, all[next].f);
      const std::size_t base = std::size_t{all[next].i} * H;
      for (std::size_t h = 0; h < H; ++h) out[std::size_t{t} * H + h] += value(v, base + h);
      ++next;
    }
  }
  if (next != all.size()) return std::to_string(all.size() - next) + " vectors of units not dispatched";
  return {};
}

struct run_result {
  std::map<output_key, worker_output> outputs;
  std::vector<std::string> failures;
};

inline run_result run_exchange(std::vector<transport*> attn, std::vector<transport*> ffn,
                               const run_plan& plan) {
  run_result result;
  std::mutex mu;
  auto failure = [&](std::string s) {
    std::lock_guard lock(mu);
    result.failures.push_back(std::move(s));
  };
  const auto A = static_cast<std::uint32_t>(attn.size());
  const auto F = static_cast<std::uint32_t>(ffn.size());
  const exchange_shape& sh = plan.shape;
  const std::uint32_t H = sh.hidden, K = sh.top_k, M = sh.micro_batches;
  const std::size_t n_scales = sh.dispatch_dtype == afd::dtype::f8_e4m3 ? (H + sh.scale_block - 1) / sh.scale_block : 0;
  const std::size_t elem = afd::size_of(sh.dispatch_dtype);

  // Connect every pair, both ways, before any thread runs.
  std::vector<std::vector<peer_id>> a_peers(A), f_peers(F);
  for (std::uint32_t a = 0; a < A; ++a) {
    for (std::uint32_t f = 0; f < F; ++f) {
      auto p = attn[a]->connect(ffn[f]->address());
      auto q = ffn[f]->connect(attn[a]->address());
      if (!p || !q) {
        result.failures.push_back("connect failed");
        return result;
      }
      a_peers[a].push_back(*p);
      f_peers[f].push_back(*q);
    }
  }
  // f_peers[f] was filled a-major: index a. Good.
  auto scale_of = [](std::uint32_t t, std::size_t b) { return 1.0f / 64.0f * float(1 + (t + b) % 3); };

  std::vector<std::thread> threads;
  for (std::uint32_t f = 0; f < F; ++f) {
    threads.emplace_back([&, f] {
      auto x = ffn_exchange::create(*ffn[f], sh, f_peers[f]);
      if (!x) return failure(x.err().to_string());
      auto& ex = **x;
      for (std::uint32_t m = 0; m < M; ++m) ex.post_dispatch_receives(m);
      for (std::uint32_t step = 0; step < plan.steps; ++step) {
        for (std::uint32_t layer = 0; layer < plan.layers; ++layer) {
          for (std::uint32_t m = 0; m < M; ++m) {
            step_id id{plan.epoch, step, static_cast<std::uint16_t>(m), static_cast<std::uint16_t>(layer)};
            if (ex.wait_dispatch(m, id, after(plan.deadline)) != op_status::done) {
              return failure("ffn " + std::to_string(f) + ": " + ex.last_error(m).to_string());
            }
            for (std::uint32_t a = 0; a < A; ++a) {
              dispatch_view d = ex.received(m, a);
              std::uint32_t T = tokens_of(a, step, m, sh.max_tokens);
              bool routed = layer != 0;
              if (d.token_count != T || ex.routed(m, a) != (routed && T > 0)) {
                return failure("ffn: wrong token count or routing");
              }
              std::size_t bad = 0;
              for (std::uint32_t t = 0; t < T; ++t) {
                for (std::uint32_t h = 0; h < H; ++h) {
                  bad += std::uint8_t(d.tokens[(std::size_t{t} * H + h) * elem]) != token_byte(a, step, layer, m, t, h);
                }
                for (std::size_t b = 0; b < n_scales; ++b) bad += d.scales[t * n_scales + b] != scale_of(t, b);
                for (std::uint32_t k = 0; routed && k < K; ++k) {
                  bad += d.topk_ids[t * K + k] != expert_of(a, step, layer, t, k, plan.experts);
                  bad += d.topk_weights[t * K + k] != weight_of(t, k);
                }
              }
              if (bad != 0) return failure("ffn: " + std::to_string(bad) + " payload values differ");
              // Units this worker computes for these tokens.
              std::vector<std::pair<std::uint32_t, std::uint32_t>> mine;  // (token, k or K for shared)
              for (std::uint32_t t = 0; t < T; ++t) {
                for (std::uint32_t k = 0; routed && k < K; ++k) {
                  auto unit = static_cast<std::uint32_t>(d.topk_ids[t * K + k]);
                  if (sh.mode == combine_mode::throughput || owner_of(unit, layer, F) == f) mine.push_back({t, k});
                }
                if (sh.mode == combine_mode::throughput || owner_of(shared_unit, layer, F) == f) mine.push_back({t, K});
              }
              auto value = [&](std::uint32_t t, std::uint32_t k, std::uint32_t h) {
                std::uint32_t unit = k == K ? shared_unit : static_cast<std::uint32_t>(d.topk_ids[t * K + k]);
                float w = k == K ? 1.0f : d.topk_weights[t * K + k];
                float s = n_scales ? d.scales[t * n_scales + h / sh.scale_block] : 1.0f;
                return unit_output(std::uint8_t(d.tokens[(std::size_t{t} * H + h) * elem]), s, unit, w, h);
              };
              if (sh.mode == combine_mode::deterministic) {
                auto v = static_cast<std::uint32_t>(mine.size());
                combine_view c = ex.begin_combine(m, a, v, after(plan.deadline));
                if (c.vectors == nullptr && v != 0) return failure("ffn: begin_combine: " + ex.last_error(m).to_string());
                // Reverse order on purpose: the receiver must not depend on arrival order.
                for (std::uint32_t i = 0; i < v; ++i) {
                  auto [t, k] = mine[v - 1 - i];
                  c.entries[i] = {t, k == K ? shared_unit : static_cast<std::uint32_t>(d.topk_ids[t * K + k])};
                  for (std::uint32_t h = 0; h < H; ++h) c.vectors[std::size_t{i} * H + h] = value(t, k, h);
                }
              } else {
                // Throughput: this worker's slice of units: routed units it owns (unit % F == f),
                // the shared unit on worker layer % F; pre-summed in fp32 in canonical order.
                combine_view c = ex.begin_combine(m, a, T, after(plan.deadline));
                if (c.vectors == nullptr && T != 0) return failure("ffn: begin_combine: " + ex.last_error(m).to_string());
                for (std::uint32_t t = 0; t < T; ++t) {
                  for (std::uint32_t h = 0; h < H; ++h) {
                    float acc = 0;
                    std::vector<std::pair<std::uint32_t, std::uint32_t>> order;
                    for (std::uint32_t k = 0; routed && k < K; ++k) order.push_back({std::uint32_t(d.topk_ids[t * K + k]), k});
                    std::sort(order.begin(), order.end());
                    for (auto [unit, k] : order) if (owner_of(unit, layer, F) == f) acc += afd::bf16_to_f32(value(t, k, h));
                    if (owner_of(shared_unit, layer, F) == f) acc += afd::bf16_to_f32(value(t, K, h));
                    c.vectors[std::size_t{t} * H + h] = afd::f32_to_bf16(acc);
                  }
                }
              }
              if (ex.post_combine(m, a) == op_status::error) return failure("ffn: post_combine: " + ex.last_error(m).to_string());
            }
            ex.post_dispatch_receives(m);  // its dispatch buffers are consumed
          }
        }
      }
      for (std::uint32_t m = 0; m < M; ++m) {
        if (ex.wait_combine_sent(m, after(plan.deadline)) != op_status::done) {
          return failure("ffn: final sends: " + ex.last_error(m).to_string());
        }
      }
    });
  }
  for (std::uint32_t a = 0; a < A; ++a) {
    threads.emplace_back([&, a] {
      auto x = attention_exchange::create(*attn[a], sh, a_peers[a]);
      if (!x) return failure(x.err().to_string());
      auto& ex = **x;
      for (std::uint32_t step = 0; step < plan.steps; ++step) {
        for (std::uint32_t layer = 0; layer < plan.layers; ++layer) {
          bool routed = layer != 0;
          for (std::uint32_t m = 0; m < M; ++m) {
            std::uint32_t T = tokens_of(a, step, m, sh.max_tokens);
            dispatch_view d = ex.begin_dispatch(m, T, routed && T > 0, after(plan.deadline));
            if (d.tokens == nullptr && T != 0) return failure("attention: begin_dispatch: " + ex.last_error(m).to_string());
            for (std::uint32_t t = 0; t < T; ++t) {
              for (std::uint32_t h = 0; h < H; ++h) {
                for (std::size_t e = 0; e < elem; ++e) {
                  d.tokens[(std::size_t{t} * H + h) * elem + e] = e == 0 ? std::byte(token_byte(a, step, layer, m, t, h)) : std::byte{0x3c};
                }
              }
              for (std::size_t b = 0; b < n_scales; ++b) d.scales[t * n_scales + b] = scale_of(t, b);
              for (std::uint32_t k = 0; routed && k < K; ++k) {
                d.topk_ids[t * K + k] = expert_of(a, step, layer, t, k, plan.experts);
                d.topk_weights[t * K + k] = weight_of(t, k);
              }
            }
            step_id id{plan.epoch, step, static_cast<std::uint16_t>(m), static_cast<std::uint16_t>(layer)};
            if (ex.post_dispatch(m, id) == op_status::error) return failure("attention: post_dispatch: " + ex.last_error(m).to_string());
          }
          for (std::uint32_t m = 0; m < M; ++m) {
            if (ex.wait_combine(m, after(plan.deadline)) != op_status::done) {
              return failure("attention " + std::to_string(a) + ": " + ex.last_error(m).to_string());
            }
            std::uint32_t T = tokens_of(a, step, m, sh.max_tokens);
            worker_output out;
            out.tokens = T;
            std::vector<std::vector<std::uint32_t>> units(T);
            for (std::uint32_t t = 0; t < T; ++t) {
              for (std::uint32_t k = 0; routed && k < K; ++k) {
                units[t].push_back(static_cast<std::uint32_t>(expert_of(a, step, layer, t, k, plan.experts)));
              }
              units[t].push_back(shared_unit);
            }
            if (std::string bad = sum_received(ex, m, F, T, units, out.values); !bad.empty()) {
              return failure("attention " + std::to_string(a) + ": " + bad);
            }
            std::lock_guard lock(mu);
            result.outputs[{a, step, layer, m}] = std::move(out);
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  return result;
}

// The float64 oracle of one attention worker's combined output, written from the design, not
// from the code under test: the sum over the token's units of the unit outputs.
inline double oracle_value(const run_plan& plan, std::uint32_t a, std::uint32_t step,
                           std::uint32_t layer, std::uint32_t m, std::uint32_t t, std::uint32_t h) {
  const exchange_shape& sh = plan.shape;
  bool fp8 = sh.dispatch_dtype == afd::dtype::f8_e4m3;
  float scale = fp8 ? 1.0f / 64.0f * float(1 + (t + h / sh.scale_block) % 3) : 1.0f;
  std::uint8_t b = token_byte(a, step, layer, m, t, h);
  double sum = afd::bf16_to_f32(unit_output(b, scale, shared_unit, 1.0f, h));
  for (std::uint32_t k = 0; layer != 0 && k < sh.top_k; ++k) {
    auto e = static_cast<std::uint32_t>(expert_of(a, step, layer, t, k, plan.experts));
    sum += afd::bf16_to_f32(unit_output(b, scale, e, weight_of(t, k), h));
  }
  return sum;
}

inline void expect_matches_oracle(const run_plan& plan, const run_result& r, double rel_tol) {
  ASSERT_TRUE(r.failures.empty()) << r.failures.front();
  std::size_t checked = 0;
  for (const auto& [key, out] : r.outputs) {
    auto [a, step, layer, m] = key;
    for (std::uint32_t t = 0; t < out.tokens; ++t) {
      for (std::uint32_t h = 0; h < plan.shape.hidden; ++h) {
        double want = oracle_value(plan, a, step, layer, m, t, h);
        double got = out.values[std::size_t{t} * plan.shape.hidden + h];
        ASSERT_NEAR(got, want, rel_tol * std::abs(want) + 1e-6)
            << "a=" << a << " step=" << step << " layer=" << layer << " mb=" << m << " t=" << t << " h=" << h;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0u);
}

}  // namespace afd::transport::testing
