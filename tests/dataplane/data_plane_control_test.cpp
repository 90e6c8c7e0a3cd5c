// The engines' life cycle: per-role weights, cancellation, re-admission with generated tokens,
// failures within the deadline, prompt stop, validation, and throughput mode's tolerance.

#include <cmath>
#include <thread>

#include "kernels/backend.hpp"
#include "tests/dataplane/data_plane_harness.hpp"

namespace afd::dataplane::testing {
namespace {

using namespace std::chrono_literals;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(data_plane_weights, each_role_loads_only_its_part) {
  cluster_options o;
  o.A = 1;
  o.F = 3;
  o.place = placement::uneven;
  cluster c(o);
  const model_config& cfg = c.attention_weights()->config();
  // Attention side: attention, embedding, head; no FFN unit at all.
  EXPECT_TRUE(c.attention_weights()->has_attention());
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const auto& f = c.attention_weights()->ffn(l);
    EXPECT_FALSE(f.shared.loaded()) << "layer " << l;
    for (const auto& e : f.experts) EXPECT_FALSE(e.loaded()) << "layer " << l;
  }
  // FFN side: no attention; exactly the routed experts assigned, and the shared expert / dense
  // MLP of exactly the layers whose unit the worker owns (each layer's on one worker).
  std::vector<std::vector<int>> owners(static_cast<std::size_t>(cfg.num_hidden_layers),
                                       std::vector<int>(static_cast<std::size_t>(cfg.moe_num_experts), 0));
  std::vector<int> shared_owners(static_cast<std::size_t>(cfg.num_hidden_layers), 0);
  for (std::uint32_t f = 0; f < o.F; ++f) {
    const auto& w = *c.ffn_weights()[f];
    EXPECT_FALSE(w.has_attention());
    const auto& a = c.assignments()[f];
    for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
      const auto& units = a.units[static_cast<std::size_t>(l)];
      const bool owns_shared = std::find(units.begin(), units.end(), engine::shared_unit) != units.end();
      EXPECT_EQ(w.ffn(l).shared.loaded(), owns_shared) << "ffn " << f << " layer " << l;
      shared_owners[static_cast<std::size_t>(l)] += w.ffn(l).shared.loaded();
      if (!cfg.is_moe_layer(l)) continue;
      for (std::int32_t e = 0; e < cfg.moe_num_experts; ++e) {
        const bool mine = std::find(units.begin(), units.end(), e) != units.end();
        EXPECT_EQ(w.ffn(l).experts[static_cast<std::size_t>(e)].loaded(), mine) << "ffn " << f << " layer " << l;
        owners[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)] += mine;
      }
    }
  }
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    if (!cfg.is_moe_layer(l)) continue;
    for (int n : owners[static_cast<std::size_t>(l)]) EXPECT_EQ(n, 1);  // each expert on one worker (4/2/2)
  }
  // The tiny model has a dense MLP in layer 0 and a shared expert in the others; 3 workers own
  // them on different workers, so loading every layer's unit on each would show here.
  for (int n : shared_owners) EXPECT_EQ(n, 1);
}

TEST(data_plane_weights, a_slice_of_a_shared_unit_loads_that_layer_only) {
  const model_config& cfg = all_weights()->config();
  ffn_assignment a;
  a.units.resize(static_cast<std::size_t>(cfg.num_hidden_layers));
  a.units[1] = {3};
  a.shared_slices.resize(3);
  a.shared_slices[2] = {0, 4};
  const engine::weight_selection s = ffn_weight_selection(a);
  EXPECT_FALSE(s.attention);
  auto w = load(s);
  ASSERT_TRUE(w);
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l)
    EXPECT_EQ(w->ffn(l).shared.loaded(), l == 2) << "layer " << l;
  EXPECT_TRUE(w->ffn(1).experts[3].loaded());
  EXPECT_FALSE(w->ffn(1).experts[2].loaded());
  // The engine accepts what the selection loaded.
  auto fabric = transport::loopback_fabric::create();
  auto t = transport::make_loopback_transport(fabric, 5);
  ASSERT_TRUE(t.has_value());
  data_plane_options o;
  o.num.mode = combine_mode::throughput;
  auto e = ffn_engine::create(w, o, a, **t, {0}, {}, {});
  EXPECT_TRUE(e.has_value()) << (e ? "" : e.err().to_string());
}

TEST(data_plane_weights, an_unloaded_unit_is_refused) {
  auto fabric = transport::loopback_fabric::create();
  auto t = transport::make_loopback_transport(fabric, 5);
  ASSERT_TRUE(t.has_value());
  auto w = load(engine::weight_selection::ffn_side({{}, {0, 1}}, false));
  ffn_assignment a;
  a.units = {{}, {0, 2}};  // expert 2 of layer 1 is not loaded
  auto e = ffn_engine::create(w, {}, a, **t, {0}, {}, {});
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.err().message().find("expert 2"), std::string::npos) << e.err().message();
  a.units = {{engine::shared_unit}};  // the dense MLP of layer 0 is not loaded either
  auto e2 = ffn_engine::create(w, {}, a, **t, {0}, {}, {});
  ASSERT_FALSE(e2.has_value());
  auto attn = attention_engine::create(w, {}, **t, {0}, {}, {});
  ASSERT_FALSE(attn.has_value());  // no attention side
}

TEST(data_plane_options_check, payloads_the_wire_cannot_carry_are_refused) {
  auto fabric = transport::loopback_fabric::create();
  auto t = transport::make_loopback_transport(fabric, 5);
  ASSERT_TRUE(t.has_value());
  for (numerics num : {numerics{dtype::bf16, dtype::f16, dtype::bf16, combine_mode::deterministic},
                       numerics{dtype::bf16, dtype::bf16, dtype::f8_e4m3, combine_mode::deterministic}}) {
    attention_engine_options ao;
    ao.plane.num = num;
    auto e = attention_engine::create(load(engine::weight_selection::attention_side()), ao, **t, {0}, {}, {});
    ASSERT_FALSE(e.has_value());
    EXPECT_EQ(e.err().code(), errc::unsupported);
  }
  attention_engine_options ao;
  ao.max_running = 1000;  // more decode tokens than 3 micro-batches of 256 hold
  EXPECT_FALSE(attention_engine::create(load(engine::weight_selection::attention_side()), ao, **t, {0}, {}, {}));
}

TEST(data_plane_options_check, an_engine_on_an_unusable_device_is_refused_with_the_reason) {
  const std::string device = "cuda:0";
  auto usable = kernels::probe_device(device);
  if (usable) GTEST_SKIP() << device << " is usable in this process";
  auto fabric = transport::loopback_fabric::create();
  auto t = transport::make_loopback_transport(fabric, 5);
  ASSERT_TRUE(t.has_value());
  attention_engine_options ao;
  ao.plane.device = device;
  auto attn = attention_engine::create(load(engine::weight_selection::attention_side()), ao, **t, {0}, {}, {});
  ASSERT_FALSE(attn.has_value());
  EXPECT_EQ(attn.err().message(), "attention_engine: " + usable.err().message());
  EXPECT_NE(attn.err().message().find("device cuda:0"), std::string::npos) << attn.err().message();
  data_plane_options fo;
  fo.device = device;
  ffn_assignment a;
  auto ffn = ffn_engine::create(load(engine::weight_selection::ffn_side({}, false)), fo, a, **t, {0}, {}, {});
  ASSERT_FALSE(ffn.has_value());
  EXPECT_EQ(ffn.err().message(), "ffn_engine: " + usable.err().message());
  ao.plane.device = "tpu:0";
  auto odd = attention_engine::create(load(engine::weight_selection::attention_side()), ao, **t, {0}, {}, {});
  ASSERT_FALSE(odd.has_value());
  EXPECT_NE(odd.err().message().find("'tpu:0'"), std::string::npos) << odd.err().message();
}

TEST(data_plane_cancel, cancellation_frees_kv_and_others_continue) {
  cluster_options o;
  o.A = 1;
  o.F = 2;
  o.num_blocks = 32;
  o.max_running = 1;  // the second request waits behind the first
  cluster c(o);
  c.start();
  engine::request longr;
  longr.prompt = {1, 2, 3, 4, 5};
  longr.max_new_tokens = 400;
  engine::request waiting = longr;
  waiting.max_new_tokens = 3;
  engine::request after = waiting;
  after.prompt = {9, 8, 7};
  c.admit(0, 1, longr);
  c.admit(0, 2, waiting);
  ASSERT_TRUE(c.wait_token(1));
  EXPECT_LT(c.attn(0).free_kv_blocks(), o.num_blocks);
  c.attn(0).cancel(2);  // still waiting
  c.attn(0).cancel(1);  // running
  const auto t0 = std::chrono::steady_clock::now();
  while (c.attn(0).free_kv_blocks() != o.num_blocks && seconds_since(t0) < 10) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(c.attn(0).free_kv_blocks(), o.num_blocks);
  const auto streamed = c.streamed();
  EXPECT_LT(streamed.at(1).size(), 400u);
  EXPECT_EQ(streamed.count(2), 0u);
  // The engine goes on serving.
  c.admit(0, 3, after);
  ASSERT_TRUE(c.wait_finished(1));
  const auto want = reference({after}, numerics{});
  EXPECT_TRUE(same_result(c.results().at(3), want[0]));
  EXPECT_EQ(c.results().count(1), 0u);
  EXPECT_EQ(c.results().count(2), 0u);
}

TEST(data_plane_readmit, generated_tokens_continue_as_the_uninterrupted_run) {
  auto reqs = workload(4, 5);
  for (auto& r : reqs) {
    r.max_new_tokens = 9;
    r.logits_rows = 0;
    r.stop_ids.clear();
  }
  const auto want = reference(reqs, numerics{});
  cluster_options o;
  o.A = 2;
  o.F = 2;
  o.plane.max_tokens_per_micro_batch = 8;
  o.plane.prefill_chunk = 10;
  cluster c(o);
  c.start();
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const std::size_t g = 1 + i * 2;  // 1, 3, 5, 7 tokens produced "elsewhere"
    std::vector<std::int32_t> generated(want[i].tokens.begin(), want[i].tokens.begin() + static_cast<long>(g));
    c.admit(static_cast<std::uint32_t>(i % 2), static_cast<engine::request_id>(i + 1), reqs[i], generated);
  }
  ASSERT_TRUE(c.wait_finished(reqs.size())) << (c.failures().empty() ? "timeout" : c.failures()[0]);
  const auto got = c.results();
  const auto streamed = c.streamed();
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const auto id = static_cast<engine::request_id>(i + 1);
    EXPECT_TRUE(same_result(got.at(id), want[i])) << "request " << id;
    // Only the new tokens are streamed, with their true indices.
    const auto& st = streamed.at(id);
    ASSERT_EQ(st.size(), want[i].tokens.size() - (1 + i * 2));
    EXPECT_EQ(st.front().first, static_cast<std::int64_t>(1 + i * 2));
  }
  // A request that already ended is refused.
  auto bad = c.attn(0).admit({99, reqs[0], want[0].tokens});
  EXPECT_FALSE(bad.has_value());
}

TEST(data_plane_finish, context_limit_ends_a_request) {
  engine::request r;
  const auto max_pos = all_weights()->config().max_position_embedding;
  for (std::int64_t j = 0; j < max_pos - 3; ++j) r.prompt.push_back(static_cast<std::int32_t>(j % 500));
  r.max_new_tokens = 10;
  const auto want = reference({r}, numerics{});
  ASSERT_EQ(want[0].reason, engine::finish_reason::context);
  cluster_options o;
  o.A = 1;
  o.F = 2;
  o.plane.max_tokens_per_micro_batch = 256;
  o.plane.prefill_chunk = 768;
  o.num_blocks = 160;
  cluster c(o);
  c.start();
  c.admit(0, 1, r);
  ASSERT_TRUE(c.wait_finished(1)) << (c.failures().empty() ? "timeout" : c.failures()[0]);
  EXPECT_TRUE(same_result(c.results().at(1), want[0]));
}

// A silent peer past the step deadline is reported (naming it as the suspect) and the wait goes
// on: the control plane, which sees every worker's progress, decides whether it failed.
TEST(data_plane_failure, a_silent_ffn_worker_is_reported_as_the_suspect_at_the_deadline) {
  cluster_options o;
  o.A = 2;
  o.F = 2;
  o.plane.step_deadline = 400ms;
  cluster c(o);
  c.start();
  engine::request r;
  r.prompt = {3, 1, 4, 1, 5};
  r.max_new_tokens = 1000;
  c.admit(0, 1, r);
  ASSERT_TRUE(c.wait_token(1));
  const auto t0 = std::chrono::steady_clock::now();
  c.ffn(1).reset();  // engine and its buffers gone; the transport stays up and silent
  ASSERT_TRUE(c.wait_failure(5s));
  const double waited = seconds_since(t0);
  EXPECT_LT(waited, 2.0);
  const auto f = c.failures();
  EXPECT_NE(f[0].find("step"), std::string::npos) << f[0];
  EXPECT_NE(f[0].find("layer"), std::string::npos) << f[0];
  // The attention workers name FFN worker 1 (ranks: attention 0, 1; FFN 100, 101); FFN worker 0,
  // waiting for the next dispatch, names an attention worker. Nothing is fatal.
  bool named = false;
  for (const auto& x : c.faults()) {
    EXPECT_FALSE(x.fatal) << x.what.to_string();
    EXPECT_EQ(x.suspects.size(), 1u) << x.what.to_string();
    named = named || (x.suspects.size() == 1 && x.suspects[0] == 101);
  }
  EXPECT_TRUE(named);
  // Still waiting: another report one deadline later.
  std::this_thread::sleep_for(700ms);
  EXPECT_GE(c.faults().size(), 2u);
  const auto stop0 = std::chrono::steady_clock::now();
  c.stop();
  EXPECT_LT(seconds_since(stop0), 1.0);
}

TEST(data_plane_failure, a_killed_peer_is_reported_as_peer_failed) {
  cluster_options o;
  o.A = 1;
  o.F = 2;
  o.plane.step_deadline = 10s;  // the failure must come from the transport, not the deadline
  cluster c(o);
  c.start();
  engine::request r;
  r.prompt = {2, 7, 1, 8};
  r.max_new_tokens = 1000;
  c.admit(0, 1, r);
  ASSERT_TRUE(c.wait_token(1));
  const auto t0 = std::chrono::steady_clock::now();
  c.fabric().kill(101);
  ASSERT_TRUE(c.wait_failure(5s));
  EXPECT_LT(seconds_since(t0), 2.0);
  const auto codes = c.failure_codes();
  EXPECT_NE(std::find(codes.begin(), codes.end(), errc::peer_failed), codes.end()) << c.failures()[0];
}

// The recovery the control plane runs: an FFN worker dies mid-run, the epoch is bumped, engines are
// rebuilt over the survivors (the lost worker's experts move), unfinished requests are re-admitted
// with the tokens streamed so far: every request ends with the reference engine's tokens.
TEST(data_plane_recovery, a_rebuilt_cluster_finishes_every_request_bitwise) {
  auto reqs = workload(8, 4);
  for (auto& r : reqs) {
    r.max_new_tokens = 12 + static_cast<std::int64_t>(r.prompt.size() % 5);
    r.logits_rows = 0;
    r.stop_ids.clear();
  }
  const auto want = reference(reqs, numerics{});
  cluster_options o;
  o.A = 2;
  o.F = 3;
  o.place = placement::round_robin;
  o.plane.step_deadline = 2s;
  o.plane.micro_batches = 2;
  cluster c(o);
  c.start();
  for (std::size_t i = 0; i < reqs.size(); ++i)
    c.admit(static_cast<std::uint32_t>(i % 2), static_cast<engine::request_id>(i + 1), reqs[i]);
  ASSERT_TRUE(c.wait_token(8));
  c.fabric().kill(101);
  ASSERT_TRUE(c.wait_failure(5s));
  c.rebuild(2, {0, 2});
  c.clear_failures();
  c.start();
  const auto done = c.results();
  const auto streamed = c.streamed();
  std::size_t readmitted = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const auto id = static_cast<engine::request_id>(i + 1);
    if (done.count(id)) continue;
    std::vector<std::int32_t> generated;
    if (auto it = streamed.find(id); it != streamed.end())
      for (auto [index, token] : it->second) {
        ASSERT_EQ(index, static_cast<std::int64_t>(generated.size()));
        generated.push_back(token);
      }
    c.admit(static_cast<std::uint32_t>((i + 1) % 2), id, reqs[i], generated);  // the other worker
    ++readmitted;
  }
  EXPECT_GT(readmitted, 0u);
  ASSERT_TRUE(c.wait_finished(reqs.size())) << (c.failures().empty() ? "timeout" : c.failures()[0]);
  const auto got = c.results();
  for (std::size_t i = 0; i < reqs.size(); ++i)
    EXPECT_TRUE(same_result(got.at(static_cast<engine::request_id>(i + 1)), want[i])) << "request " << i + 1;
}

TEST(data_plane_stop, stop_returns_promptly_while_blocked) {
  cluster_options o;
  o.A = 1;
  o.F = 1;
  o.plane.step_deadline = 30s;
  {
    cluster c(o);  // the attention engine alone: blocked waiting for results that never come
    ASSERT_TRUE(c.attn(0).start().has_value());
    std::this_thread::sleep_for(100ms);
    const auto t0 = std::chrono::steady_clock::now();
    c.attn(0).stop();
    EXPECT_LT(seconds_since(t0), 0.5);
    EXPECT_TRUE(c.failures().empty());
  }
  {
    cluster c(o);  // the FFN engine alone: blocked waiting for dispatches
    ASSERT_TRUE(c.ffn(0)->start().has_value());
    std::this_thread::sleep_for(100ms);
    const auto t0 = std::chrono::steady_clock::now();
    c.ffn(0)->stop();
    EXPECT_LT(seconds_since(t0), 0.5);
    EXPECT_TRUE(c.failures().empty());
  }
}

TEST(data_plane_stop, stop_from_the_report_callback_does_not_deadlock) {
  auto fabric = transport::loopback_fabric::create();
  auto ta = std::move(*transport::make_loopback_transport(fabric, 1));
  auto tf = std::move(*transport::make_loopback_transport(fabric, 2));
  auto pa = ta->connect(tf->address());
  auto pf = tf->connect(ta->address());
  ASSERT_TRUE(pa.has_value() && pf.has_value());
  const model_config& cfg = all_weights()->config();
  ffn_assignment all;
  all.units.resize(static_cast<std::size_t>(cfg.num_hidden_layers));
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    if (cfg.is_moe_layer(l))
      for (std::int32_t e = 0; e < cfg.moe_num_experts; ++e) all.units[static_cast<std::size_t>(l)].push_back(e);
    all.units[static_cast<std::size_t>(l)].push_back(engine::shared_unit);
  }
  data_plane_options plane;
  auto ffn = ffn_engine::create(all_weights(), plane, all, *tf, {*pf}, {}, {});
  ASSERT_TRUE(ffn.has_value());
  std::atomic<attention_engine*> self{nullptr};
  std::atomic<int> reports{0};
  attention_engine_options ao;
  ao.plane = plane;
  auto attn = attention_engine::create(all_weights(), ao, *ta, {*pa}, [&](step_report&&) {
    ++reports;
    self.load()->stop();
  }, {});
  ASSERT_TRUE(attn.has_value());
  self = attn->get();
  ASSERT_TRUE((*ffn)->start().has_value());
  ASSERT_TRUE((*attn)->start().has_value());
  engine::request r;
  r.prompt = {1, 2, 3};
  r.max_new_tokens = 50;
  ASSERT_TRUE((*attn)->admit({1, r, {}}).has_value());
  const auto t0 = std::chrono::steady_clock::now();
  while (reports.load() == 0 && seconds_since(t0) < 10) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(reports.load(), 1);  // the loop ended after the callback that asked
  (*attn)->stop();
  (*ffn)->stop();
}

TEST(data_plane_idle, an_idle_cluster_does_not_spin) {
  cluster_options o;
  o.A = 2;
  o.F = 1;
  o.plane.idle_wait = 5ms;
  cluster c(o);
  c.start();
  const auto cpu0 = std::clock();
  std::this_thread::sleep_for(300ms);
  const double cpu = double(std::clock() - cpu0) / CLOCKS_PER_SEC;
  EXPECT_LT(cpu, 0.15);  // process CPU time over 0.3 s of idling
  // And it still answers at once.
  engine::request r;
  r.prompt = {5, 6};
  r.max_new_tokens = 2;
  c.admit(1, 1, r);
  ASSERT_TRUE(c.wait_finished(1, std::chrono::seconds(5)));
  EXPECT_TRUE(same_result(c.results().at(1), reference({r}, numerics{})[0]));
}

TEST(data_plane_idle, an_idle_worker_does_not_slow_a_busy_one) {
  cluster_options o;
  o.A = 2;
  o.F = 1;
  o.plane.idle_wait = 40ms;  // were the busy worker's steps paced by it, 24 steps would take > 0.9 s
  cluster c(o);
  c.start();
  std::this_thread::sleep_for(100ms);  // both idle now
  engine::request r;
  r.prompt = {5, 6, 7};
  r.max_new_tokens = 24;
  const auto t0 = std::chrono::steady_clock::now();
  c.admit(1, 1, r);
  ASSERT_TRUE(c.wait_finished(1, std::chrono::seconds(10)));
  const double took = seconds_since(t0);
  EXPECT_LT(took, 0.5);
  EXPECT_TRUE(same_result(c.results().at(1), reference({r}, numerics{})[0]));
  std::printf("24 tokens beside an idle worker (idle_wait 40 ms): %.3f s\n", took);
}

// Throughput mode: each FFN worker pre-sums its units (f32, canonical order) and rounds once to
// numerics.combine; the attention side sums the partials in worker order and rounds the sum once.
// With one FFN worker this is the reference's throughput mode bitwise, whole or as one slice.
// With several, each layer's FFN output carries up to F extra bf16 roundings (relative 2^-9 of
// each partial, and partials can cancel) which the 4 layers and the attention of later positions
// amplify: the stated tolerances on logits rows (relative L2, for as long as the sampled tokens
// agree) are 5e-2 with whole units and 1e-1 with shared/dense units sliced over 3 workers (every
// partial then carries a third of the shared unit). With f32 results the slices' only difference
// is the order of the down projection's sums: 1e-4.
TEST(data_plane_throughput, within_tolerance_of_the_reference) {
  struct config {
    dtype combine;
    std::uint32_t F;
    bool sliced;
    double tolerance;  // 0: bitwise
  };
  const config configs[] = {{dtype::bf16, 1, false, 0},    {dtype::bf16, 1, true, 0},
                            {dtype::bf16, 3, false, 5e-2}, {dtype::bf16, 3, true, 1e-1},
                            {dtype::f32, 3, true, 1e-4}};
  auto reqs = workload(8, 2);
  for (auto& r : reqs) r.logits_rows = r.max_new_tokens;
  std::map<dtype, std::vector<engine::result>> want;
  for (const config& k : configs) {
    numerics num;
    num.mode = combine_mode::throughput;
    num.combine = k.combine;
    if (!want.count(k.combine)) want[k.combine] = reference(reqs, num);
    const auto& ref = want[k.combine];
    SCOPED_TRACE("F=" + std::to_string(k.F) + (k.sliced ? " sliced" : "") + " combine " + std::string(to_string(k.combine)));
    cluster_options o;
    o.A = 2;
    o.F = k.F;
    o.slice_shared = k.sliced;
    o.place = placement::round_robin;
    o.plane.num = num;
    o.plane.micro_batches = 2;
    cluster c(o);
    c.start();
    for (std::size_t i = 0; i < reqs.size(); ++i)
      c.admit(static_cast<std::uint32_t>(i % 2), static_cast<engine::request_id>(i + 1), reqs[i]);
    ASSERT_TRUE(c.wait_finished(reqs.size())) << (c.failures().empty() ? "timeout" : c.failures()[0]);
    const auto got = c.results();
    double worst = 0;
    std::size_t rows = 0, bitwise = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const auto& g = got.at(static_cast<engine::request_id>(i + 1));
      if (k.tolerance == 0) {
        EXPECT_TRUE(same_result(g, ref[i])) << "request " << i;
      }
      for (std::size_t r = 0; r < std::min(g.logits.size(), ref[i].logits.size()); ++r) {
        double num2 = 0, den2 = 0;
        for (std::size_t v = 0; v < g.logits[r].size(); ++v) {
          const double d = double(g.logits[r][v]) - double(ref[i].logits[r][v]);
          num2 += d * d;
          den2 += double(ref[i].logits[r][v]) * ref[i].logits[r][v];
        }
        worst = std::max(worst, std::sqrt(num2 / den2));
        ++rows;
        bitwise += g.logits[r] == ref[i].logits[r];
        if (g.tokens[r] != ref[i].tokens[r]) break;  // the rows after a different token are another text
      }
    }
    EXPECT_GT(rows, 10u);
    if (k.tolerance > 0) {
      EXPECT_LT(worst, k.tolerance);
      EXPECT_LT(bitwise, rows);  // pre-summing does change the values: the test can tell
    }
    std::printf("throughput mode, 2A%uF, %s combine%s: %zu logits rows, worst relative L2 error %.3g, %zu bitwise\n",
                k.F, std::string(to_string(k.combine)).c_str(), k.sliced ? ", shared/dense units sliced" : "", rows, worst, bitwise);
  }
}

}  // namespace
}  // namespace afd::dataplane::testing
