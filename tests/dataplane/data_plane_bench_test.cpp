// Not a correctness test (LABELS slow): decode throughput of engine-thread clusters over the
// loopback transport against the reference engine on one thread, for K = 1 and 3, on a model a
// little larger than the tiny preset. Prints one line per configuration.

#include <cstdio>

#include "tests/dataplane/data_plane_harness.hpp"

namespace afd::dataplane::testing {
namespace {

const std::string& bench_model() {
  static const std::string dir = [] {
    auto c = model::preset_config("tiny");
    model::synthetic_options o;
    o.config = *c;
    o.config.hidden_size = 512;
    o.config.num_attention_heads = 8;
    o.config.head_dim = 64;
    o.config.share_q_dim = 256;
    o.config.intermediate_size = 1024;
    o.config.moe_num_experts = 16;
    o.config.moe_top_k = 3;
    o.config.moe_intermediate_size = 512;
    o.config.share_expert_dim = 512;
    o.config.vocab_size = 2048;
    o.seed = 5;
    const auto d = scratch_root() / "bench";
    auto w = model::write_synthetic_checkpoint(o, d.string(), true);
    EXPECT_TRUE(w.has_value());
    return d.string();
  }();
  return dir;
}

std::vector<engine::request> bench_requests() {
  std::vector<engine::request> out;
  for (int i = 0; i < 32; ++i) {
    engine::request r;
    for (int j = 0; j < 16; ++j) r.prompt.push_back((i * 131 + j * 17) % 2048);
    r.max_new_tokens = 32;
    out.push_back(std::move(r));
  }
  return out;
}

TEST(data_plane_bench, decode_throughput) {
  const auto reqs = bench_requests();
  std::size_t tokens = reqs.size() * 32;
  {
    engine::engine_options eo;
    eo.num_blocks = 512;
    auto e = engine::reference_engine::create(load(engine::weight_selection::all(), bench_model()), eo);
    ASSERT_TRUE(e.has_value());
    const auto t0 = std::chrono::steady_clock::now();
    auto r = e->generate(reqs);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(r.has_value());
    std::printf("reference engine, 1 thread: %zu tokens in %.2f s = %.0f tokens/s\n", tokens, s, double(tokens) / s);
  }
  for (auto [A, F, K] : {std::tuple{1u, 1u, 1u}, std::tuple{1u, 1u, 3u}, std::tuple{2u, 2u, 1u}, std::tuple{2u, 2u, 3u}}) {
    cluster_options o;
    o.A = A;
    o.F = F;
    o.model = bench_model();
    o.plane.micro_batches = K;
    o.num_blocks = 512;
    o.max_running = 64;
    cluster c(o);
    c.start();
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < reqs.size(); ++i)
      c.admit(static_cast<std::uint32_t>(i % A), static_cast<engine::request_id>(i + 1), reqs[i]);
    ASSERT_TRUE(c.wait_finished(reqs.size(), std::chrono::seconds(300)));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%uA%uF K=%u (one kernel thread per engine): %zu tokens in %.2f s = %.0f tokens/s\n", A, F, K, tokens,
                s, double(tokens) / s);
  }
}

}  // namespace
}  // namespace afd::dataplane::testing
