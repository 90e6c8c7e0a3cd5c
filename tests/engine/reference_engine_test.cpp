// Continuous batching, batch invariance, sampling, validation and finish reasons of the reference
// engine, and the canonical combine order of the layer functions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/engine/reference_engine.hpp"
#include "tests/engine/test_models.hpp"

namespace afd::engine {
namespace {

namespace cpu = kernels::cpu;

std::shared_ptr<const model_weights> tiny_weights() {
  static const auto w = [] {
    auto loaded = model_weights::load(testing::tiny_model());
    EXPECT_TRUE(loaded.has_value()) << loaded.err().to_string();
    return loaded ? *loaded : nullptr;
  }();
  return w;
}

std::vector<std::int32_t> prompt_of(std::int64_t n, std::uint32_t salt, std::int64_t vocab = 512) {
  std::vector<std::int32_t> p;
  std::uint32_t s = 0x9e3779b9u * (salt + 1);
  for (std::int64_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    p.push_back(static_cast<std::int32_t>((s >> 8) % static_cast<std::uint32_t>(vocab)));
  }
  return p;
}

reference_engine make_engine(engine_options o = {}) {
  auto e = reference_engine::create(tiny_weights(), o);
  EXPECT_TRUE(e.has_value()) << e.err().to_string();
  return std::move(*e);
}

/// Requests of different lengths; odd ones sampled.
std::vector<request> mixed_requests() {
  std::vector<request> reqs;
  const std::int64_t lengths[] = {5, 37, 1, 70, 16};
  for (std::uint32_t i = 0; i < 5; ++i) {
    request r;
    r.prompt = prompt_of(lengths[i], i);
    r.max_new_tokens = 6 + i * 2;
    r.logits_rows = 3;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.9f;
      r.sampling.top_p = 0.95f;
      r.sampling.top_k = 40;
      r.sampling.seed = 1000 + i;
    }
    reqs.push_back(r);
  }
  return reqs;
}

bool bitwise_equal(const result& a, const result& b) {
  if (a.tokens != b.tokens || a.reason != b.reason || a.logits.size() != b.logits.size()) return false;
  for (std::size_t i = 0; i < a.logits.size(); ++i) {
    if (a.logits[i].size() != b.logits[i].size()) return false;
    if (std::memcmp(a.logits[i].data(), b.logits[i].data(), a.logits[i].size() * sizeof(float)) != 0) return false;
  }
  return true;
}

/// Each request run alone, one thread, whole prompts in one chunk.
std::vector<result> run_alone(const std::vector<request>& reqs, const numerics& num) {
  cpu::set_num_threads(1);
  std::vector<result> out;
  for (const auto& r : reqs) {
    engine_options o;
    o.num = num;
    auto eng = make_engine(o);
    auto res = eng.generate({r});
    EXPECT_TRUE(res.has_value()) << res.err().to_string();
    out.push_back((*res)[0]);
  }
  return out;
}

/// All requests in one engine, joining at different steps, with a given chunk and thread count.
std::vector<result> run_batched(const std::vector<request>& reqs, const numerics& num, std::int64_t chunk,
                                int threads) {
  cpu::set_num_threads(threads);
  engine_options o;
  o.num = num;
  o.prefill_chunk = chunk;
  auto eng = make_engine(o);
  std::vector<request_id> ids;
  std::size_t next = 0;
  while (next < reqs.size() || !eng.idle()) {
    // One request joins every other step, so requests enter mid-decode of others.
    if (next < reqs.size() && (eng.stats().steps % 2 == 0 || eng.idle())) {
      auto id = eng.submit(reqs[next++]);
      EXPECT_TRUE(id.has_value());
      ids.push_back(*id);
    }
    eng.step();
  }
  std::vector<result> out;
  for (auto id : ids) {
    auto r = eng.take_result(id);
    EXPECT_TRUE(r.has_value());
    out.push_back(std::move(*r));
  }
  return out;
}

void expect_batch_invariant(const numerics& num) {
  const auto reqs = mixed_requests();
  const auto alone = run_alone(reqs, num);
  struct shape {
    std::int64_t chunk;
    int threads;
  };
  for (shape s : {shape{256, 2}, shape{16, 1}, shape{7, 3}}) {
    const auto batched = run_batched(reqs, num, s.chunk, s.threads);
    ASSERT_EQ(batched.size(), alone.size());
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(batched[i].tokens.size(), static_cast<std::size_t>(reqs[i].max_new_tokens));
      EXPECT_TRUE(bitwise_equal(alone[i], batched[i]))
          << "request " << i << " differs batched (chunk " << s.chunk << ", " << s.threads << " threads)";
    }
  }
  cpu::set_num_threads(2);
}

TEST(reference_engine, batch_invariant_default_numerics) { expect_batch_invariant(numerics{}); }

TEST(reference_engine, batch_invariant_exact_numerics) { expect_batch_invariant(numerics::exact()); }

TEST(reference_engine, batch_invariant_fp8_kv_throughput_combine) {
  numerics n;
  n.kv = dtype::f8_e4m3;
  n.dispatch = dtype::bf16;
  n.mode = combine_mode::throughput;
  expect_batch_invariant(n);
}

TEST(reference_engine, numerics_change_results_within_tolerance) {
  request r;
  r.prompt = prompt_of(20, 3);
  r.max_new_tokens = 4;
  r.logits_rows = 4;
  engine_options exact_o;
  exact_o.num = numerics::exact();
  auto exact = make_engine(exact_o).generate({r});
  auto rounded = make_engine().generate({r});
  ASSERT_TRUE(exact && rounded);
  // Default numerics round the KV to bf16, dispatch to fp8 and units to bf16: the first position's
  // logits differ, but only by a little.
  const auto& a = (*exact)[0].logits[0];
  const auto& b = (*rounded)[0].logits[0];
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += a[i] * a[i];
  }
  const double rel = std::sqrt(num / den);
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 0.1);

  // With f32 units, throughput and deterministic combine are the same sum in the same order.
  engine_options tp = exact_o;
  tp.num.mode = combine_mode::throughput;
  auto through = make_engine(tp).generate({r});
  ASSERT_TRUE(through.has_value());
  EXPECT_TRUE(bitwise_equal((*exact)[0], (*through)[0]));
}

TEST(reference_engine, seeded_sampling_is_reproducible_and_seed_dependent) {
  request r;
  r.prompt = prompt_of(12, 9);
  r.max_new_tokens = 16;
  r.sampling.temperature = 1.5f;
  r.sampling.seed = 42;
  auto a = make_engine().generate({r});
  auto b = make_engine().generate({r});
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*a)[0].tokens, (*b)[0].tokens);
  int differing = 0;
  for (std::uint64_t seed : {1, 2, 3}) {
    request other = r;
    other.sampling.seed = seed;
    auto c = make_engine().generate({other});
    ASSERT_TRUE(c.has_value());
    differing += (*c)[0].tokens != (*a)[0].tokens;
  }
  EXPECT_GE(differing, 2);
}

TEST(reference_engine, greedy_is_the_argmax_of_the_kept_logits) {
  request r;
  r.prompt = prompt_of(8, 4);
  r.max_new_tokens = 5;
  r.logits_rows = 5;
  auto res = make_engine().generate({r});
  ASSERT_TRUE(res.has_value());
  for (std::size_t i = 0; i < 5; ++i) {
    const auto& row = (*res)[0].logits[i];
    EXPECT_EQ((*res)[0].tokens[i], std::max_element(row.begin(), row.end()) - row.begin());
  }
}

TEST(reference_engine, stop_ids_end_generation) {
  request r;
  r.prompt = prompt_of(10, 5);
  r.max_new_tokens = 12;
  auto full = make_engine().generate({r});
  ASSERT_TRUE(full.has_value());
  const auto& tokens = (*full)[0].tokens;
  EXPECT_EQ((*full)[0].reason, finish_reason::length);
  r.stop_ids = {tokens[3]};
  auto stopped = make_engine().generate({r});
  ASSERT_TRUE(stopped.has_value());
  const auto first = std::find(tokens.begin(), tokens.end(), tokens[3]) - tokens.begin();
  EXPECT_EQ((*stopped)[0].tokens, std::vector<std::int32_t>(tokens.begin(), tokens.begin() + first + 1));
  EXPECT_EQ((*stopped)[0].reason, finish_reason::stop);
}

TEST(reference_engine, generation_stops_at_the_context_limit) {
  model::synthetic_options o;
  o.config = testing::preset("tiny");
  o.config.max_position_embedding = 24;
  o.seed = 7;
  auto w = model_weights::load(testing::write_model("tiny_ctx24", o));
  ASSERT_TRUE(w.has_value()) << w.err().to_string();
  auto eng = reference_engine::create(*w, {});
  ASSERT_TRUE(eng.has_value());
  request r;
  r.prompt = prompt_of(20, 6);
  r.max_new_tokens = 10;
  auto res = eng->generate({r});
  ASSERT_TRUE(res.has_value()) << res.err().to_string();
  EXPECT_EQ((*res)[0].tokens.size(), 4u);
  EXPECT_EQ((*res)[0].reason, finish_reason::context);

  r.prompt = prompt_of(23, 6);
  r.max_new_tokens = 1;
  res = eng->generate({r});
  ASSERT_TRUE(res.has_value());
  EXPECT_EQ((*res)[0].reason, finish_reason::length);  // length wins when both hold

  r.prompt = prompt_of(24, 6);
  auto too_long = eng->submit(r);
  ASSERT_FALSE(too_long.has_value());
  EXPECT_EQ(too_long.err().code(), errc::rejected);
  EXPECT_EQ(too_long.err().message(), "the prompt has 24 tokens; the context holds 24 (prompt + at least one generated token must fit)");
}

TEST(reference_engine, invalid_requests_are_refused_with_a_message) {
  engine_options o;
  o.num_blocks = 2;  // 32 positions
  auto eng = make_engine(o);
  auto expect_error = [&](request r, errc code, const std::string& needle) {
    auto id = eng.submit(std::move(r));
    ASSERT_FALSE(id.has_value());
    EXPECT_EQ(id.err().code(), code);
    EXPECT_NE(id.err().message().find(needle), std::string::npos) << id.err().message();
  };
  request ok;
  ok.prompt = {1, 2, 3};
  ok.max_new_tokens = 4;
  request r = ok;
  r.prompt = {};
  expect_error(r, errc::invalid_argument, "empty prompt");
  r = ok;
  r.prompt = {1, 512, 3};
  expect_error(r, errc::invalid_argument, "prompt token 1 has id 512, outside the vocabulary [0, 512)");
  r.prompt = {-1};
  expect_error(r, errc::invalid_argument, "has id -1");
  r = ok;
  r.prompt = prompt_of(2048, 1);
  expect_error(r, errc::rejected, "the prompt has 2048 tokens; the context holds 2048");
  r = ok;
  r.prompt = prompt_of(30, 1);
  r.max_new_tokens = 8;  // 37 positions: 3 blocks of 16
  expect_error(r, errc::rejected, "needs 3 KV blocks");
  r = ok;
  r.max_new_tokens = 0;
  expect_error(r, errc::invalid_argument, "max_new_tokens");
  r = ok;
  r.sampling.top_p = 0.0f;
  expect_error(r, errc::invalid_argument, "top_p");
  r = ok;
  r.sampling.temperature = -1.0f;
  expect_error(r, errc::invalid_argument, "temperature");
  // A request that fits exactly is accepted and runs.
  r = ok;
  r.prompt = prompt_of(25, 1);
  r.max_new_tokens = 8;  // 32 positions
  auto res = eng.generate({r});
  ASSERT_TRUE(res.has_value()) << res.err().to_string();
  EXPECT_EQ((*res)[0].tokens.size(), 8u);
}

TEST(reference_engine, requests_wait_for_kv_blocks_and_all_finish) {
  engine_options o;
  o.num_blocks = 6;  // room for two of these at a time
  auto eng = make_engine(o);
  std::vector<request> reqs;
  for (std::uint32_t i = 0; i < 5; ++i) {
    request r;
    r.prompt = prompt_of(30 + i, i + 20);
    r.max_new_tokens = 3;
    reqs.push_back(r);
  }
  auto batched = eng.generate(reqs);
  ASSERT_TRUE(batched.has_value()) << batched.err().to_string();
  const auto alone = run_alone(reqs, numerics{});
  cpu::set_num_threads(2);
  for (std::size_t i = 0; i < reqs.size(); ++i) EXPECT_TRUE(bitwise_equal(alone[i], (*batched)[i])) << i;
}

TEST(reference_engine, weights_load_in_parts) {
  const auto dir = testing::tiny_model();
  auto attn = model_weights::load(dir, weight_selection::attention_side());
  ASSERT_TRUE(attn.has_value()) << attn.err().to_string();
  EXPECT_TRUE((*attn)->has_attention());
  EXPECT_FALSE((*attn)->ffn(1).experts[0].loaded());
  EXPECT_FALSE((*attn)->ffn(0).shared.loaded());
  EXPECT_FALSE(reference_engine::create(*attn, {}).has_value());

  auto ffn = model_weights::load(dir, weight_selection::ffn_side({{}, {2, 5}, {}, {7}}, false));
  ASSERT_TRUE(ffn.has_value()) << ffn.err().to_string();
  EXPECT_FALSE((*ffn)->has_attention());
  EXPECT_TRUE((*ffn)->ffn(1).experts[2].loaded());
  EXPECT_TRUE((*ffn)->ffn(1).experts[5].loaded());
  EXPECT_FALSE((*ffn)->ffn(1).experts[3].loaded());
  EXPECT_TRUE((*ffn)->ffn(3).experts[7].loaded());
  EXPECT_FALSE((*ffn)->ffn(1).shared.loaded());

  // A unit computed from a partial load equals the same unit from the full load, bitwise.
  const auto full = tiny_weights();
  const std::int64_t h = full->config().hidden_size;
  std::vector<float> x(static_cast<std::size_t>(3 * h));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
  const float w[3] = {0.5f, 0.25f, 0.125f};
  std::vector<float> a(x.size()), b(x.size());
  ffn_workspace ws;
  const auto cpu = afd::kernels::make_cpu_backend();
  ffn_unit(*cpu, *full, 1, 5, x.data(), 3, w, dtype::bf16, a.data(), ws);
  ffn_unit(*cpu, **ffn, 1, 5, x.data(), 3, w, dtype::bf16, b.data(), ws);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));

  // Shared/dense units per layer: the tiny model's layer 0 is dense (its MLP is the unit), the
  // others MoE with a shared expert; only the selected layers' units load.
  auto per_layer = model_weights::load(dir, weight_selection::ffn_side({{}, {}, {}, {1}}, {true, false, false, true}));
  ASSERT_TRUE(per_layer.has_value()) << per_layer.err().to_string();
  EXPECT_TRUE((*per_layer)->ffn(0).shared.loaded());
  EXPECT_FALSE((*per_layer)->ffn(1).shared.loaded());
  EXPECT_FALSE((*per_layer)->ffn(2).shared.loaded());
  EXPECT_TRUE((*per_layer)->ffn(3).shared.loaded());
  EXPECT_TRUE((*per_layer)->ffn(3).experts[1].loaded());
  EXPECT_FALSE((*per_layer)->ffn(3).experts[0].loaded());
  auto short_list = model_weights::load(dir, weight_selection::ffn_side({}, std::vector<bool>{false, true}));
  ASSERT_TRUE(short_list.has_value()) << short_list.err().to_string();
  for (std::int64_t l = 0; l < 4; ++l) EXPECT_EQ((*short_list)->ffn(l).shared.loaded(), l == 1) << l;
  ffn_unit(*cpu, *full, 3, shared_unit, x.data(), 3, nullptr, dtype::bf16, a.data(), ws);
  ffn_unit(*cpu, **per_layer, 3, shared_unit, x.data(), 3, nullptr, dtype::bf16, b.data(), ws);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  EXPECT_TRUE(weight_selection::all().loads_shared(2));
  EXPECT_FALSE(weight_selection::attention_side().loads_shared(0));

  auto bad = model_weights::load(dir, weight_selection::ffn_side({{}, {8}}, false));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.err().code(), errc::invalid_argument);
}

TEST(layer, group_by_expert_reuses_its_output) {
  // Oracle: for each expert ascending, the tokens (ascending) that chose it, with their weights.
  constexpr std::int32_t E = 16;
  constexpr std::int64_t k = 3;
  auto choices = [](std::int64_t m, std::int32_t salt) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(m * k));
    std::vector<float> w(ids.size());
    for (std::int64_t t = 0; t < m; ++t)
      for (std::int64_t j = 0; j < k; ++j) {  // distinct per token: j * 5 < 16
        ids[static_cast<std::size_t>(t * k + j)] = static_cast<std::int32_t>((t * 7 + j * 5 + salt) % E);
        w[static_cast<std::size_t>(t * k + j)] = 1.0f / static_cast<float>(1 + t * k + j);
      }
    return std::pair{ids, w};
  };
  auto expect_groups = [&](std::span<const expert_tokens> got, const std::vector<std::int32_t>& ids,
                           const std::vector<float>& w, std::int64_t m) {
    std::size_t g = 0;
    for (std::int32_t e = 0; e < E; ++e) {
      std::vector<std::int32_t> tokens;
      std::vector<float> weights;
      for (std::int64_t t = 0; t < m; ++t)
        for (std::int64_t j = 0; j < k; ++j)
          if (ids[static_cast<std::size_t>(t * k + j)] == e) {
            tokens.push_back(static_cast<std::int32_t>(t));
            weights.push_back(w[static_cast<std::size_t>(t * k + j)]);
          }
      if (tokens.empty()) continue;
      ASSERT_LT(g, got.size());
      EXPECT_EQ(got[g].expert, e);
      EXPECT_EQ(got[g].tokens, tokens) << "expert " << e;
      EXPECT_EQ(got[g].weights, weights) << "expert " << e;
      ++g;
    }
    EXPECT_EQ(g, got.size());
  };
  expert_groups out;
  const auto [ids_big, w_big] = choices(40, 0);
  group_by_expert(ids_big.data(), w_big.data(), 40, k, out);
  expect_groups(out.view(), ids_big, w_big, 40);
  std::vector<const std::int32_t*> storage;
  for (const auto& g : out.view()) storage.push_back(g.tokens.data());
  const expert_tokens* slots = out.groups.data();
  // A smaller call: fewer groups, no reallocation of the group list.
  const auto [ids_small, w_small] = choices(3, 4);
  group_by_expert(ids_small.data(), w_small.data(), 3, k, out);
  expect_groups(out.view(), ids_small, w_small, 3);
  EXPECT_LT(out.count, out.groups.size());
  EXPECT_EQ(out.groups.data(), slots);
  // The first call again: same result as before and as the allocating form, same storage.
  group_by_expert(ids_big.data(), w_big.data(), 40, k, out);
  expect_groups(out.view(), ids_big, w_big, 40);
  ASSERT_EQ(out.count, storage.size());
  for (std::size_t i = 0; i < storage.size(); ++i) EXPECT_EQ(out.groups[i].tokens.data(), storage[i]) << i;
  EXPECT_EQ(out.groups.data(), slots);
  const auto fresh = group_by_expert(ids_big.data(), w_big.data(), 40, k);
  expect_groups(fresh, ids_big, w_big, 40);
}

TEST(layer, combine_sums_units_in_the_given_order_from_zero) {
  // Order matters in f32: (1e8 + 1) - 1e8 = 0 but (1e8 - 1e8) + 1 = 1.
  const float big[1] = {1e8f}, one[1] = {1.0f}, minus_big[1] = {-1e8f}, h[1] = {0.5f};
  float out[1];
  const float* order_a[] = {big, one, minus_big};
  combine_units(order_a, 1, dtype::f32, h, out);
  EXPECT_EQ(out[0], 0.5f);
  const float* order_b[] = {big, minus_big, one};
  combine_units(order_b, 1, dtype::f32, h, out);
  EXPECT_EQ(out[0], 1.5f);
  // Throughput mode rounds the sum once: 1 + 2^-9 is not a bf16 value.
  const float small[1] = {1.0f + 1.0f / 512.0f}, zero_h[1] = {0.0f};
  const float* single[] = {small};
  combine_units(single, 1, dtype::bf16, zero_h, out);
  EXPECT_EQ(out[0], 1.0f);

  std::int32_t experts[] = {5, 1, 3};
  canonical_expert_order(experts);
  EXPECT_EQ(experts[0], 1);
  EXPECT_EQ(experts[2], 5);

  const std::int32_t ids[] = {3, 0, 0, 2};
  const float ws[] = {0.6f, 0.4f, 0.7f, 0.3f};
  const auto groups = group_by_expert(ids, ws, 2, 2);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].expert, 0);
  EXPECT_EQ(groups[0].tokens, (std::vector<std::int32_t>{0, 1}));
  EXPECT_EQ(groups[0].weights, (std::vector<float>{0.4f, 0.7f}));
  EXPECT_EQ(groups[2].expert, 3);
}

}  // namespace
}  // namespace afd::engine
