#pragma once
// Shared by the cluster tests: the tiny generated model, cluster specs made from the example
// topologies, and the reference engine's tokens for a request (the oracle: the single-process
// engine of runtime/engine on the same numerics).

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "tests/common/process_scratch.hpp"
#include "runtime/dataplane/cluster_spec.hpp"
#include <afd/client.hpp>
#include "deploy/topology/cluster_spec_from_topology.hpp"
#include "deploy/topology/topology.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/reference_engine.hpp"
#include "runtime/model/make_model.hpp"

namespace afd::cluster_testing {

/// A directory removed at process exit.
inline const std::filesystem::path& scratch_root() {
  static const test_support::process_scratch root{"afd-cluster-test"};
  return root.path;
}

/// The tiny preset, bf16, written once per process.
inline std::string tiny_model() {
  static const std::string dir = [] {
    const auto d = scratch_root() / "tiny";
    model::synthetic_options o;
    auto c = model::preset_config("tiny");
    EXPECT_TRUE(c.has_value());
    o.config = *c;
    o.seed = 11;
    auto written = model::write_synthetic_checkpoint(o, d.string(), true);
    EXPECT_TRUE(written.has_value()) << (written ? "" : written.err().to_string());
    return d.string();
  }();
  return dir;
}

/// The example topology `name` (deploy/examples/<name>.yaml) on the tiny model, loopback transport,
/// `micro_batches` micro-batches; `edit` may change the spec further.
template <class Edit = void (*)(dataplane::cluster_spec&)>
dataplane::cluster_spec example_spec(const std::string& name, int micro_batches, Edit edit = [](dataplane::cluster_spec&) {}) {
  auto t = topology::load_file(std::string(AFD_SOURCE_DIR) + "/deploy/examples/" + name + ".yaml");
  EXPECT_TRUE(t.has_value()) << (t ? "" : t.err().to_string());
  t->model.path = tiny_model();
  t->transport.kind = topology::transport_kind::loopback;
  t->pipeline.micro_batches = micro_batches;
  // Bitwise equality with the reference engine is a property of the deterministic combine with
  // whole units (2a3f.yaml slices the shared expert for the throughput mode): same shape, whole units.
  t->model.combine = topology::combine_mode::deterministic;
  if (t->placement.shared.how == topology::unit_rule::policy::sliced) {
    t->placement.shared.how = topology::unit_rule::policy::round_robin;
    t->placement.shared.shares.clear();
  }
  auto config = topology::read_model_config(*t);
  EXPECT_TRUE(config.has_value()) << (config ? "" : config.err().to_string());
  auto spec = client::to_cluster_spec(*t, *config);
  EXPECT_TRUE(spec.has_value()) << (spec ? "" : spec.err().to_string());
  spec->start_timeout = std::chrono::seconds(60);
  edit(*spec);
  return *spec;
}

/// A request of the test mix: prompt of `len` tokens, `max_new` tokens, greedy or seeded sampling.
inline client::request make_request(int i, std::int64_t len, std::int64_t max_new, bool sampled) {
  client::request r;
  std::uint32_t s = 977u * static_cast<std::uint32_t>(i + 1);
  for (std::int64_t t = 0; t < len; ++t) {
    s = s * 1664525u + 1013904223u;
    r.prompt.push_back(static_cast<std::int32_t>((s >> 9) % 512u));
  }
  r.max_new_tokens = max_new;
  if (sampled) {
    r.sampling.temperature = 0.9f;
    r.sampling.top_k = 40;
    r.sampling.top_p = 0.95f;
    r.sampling.seed = 1000u + static_cast<std::uint64_t>(i);
  }
  return r;
}

/// What the reference engine generates for `r` with the numerics of `spec` (cached).
inline engine::result reference_result(const dataplane::cluster_spec& spec, const client::request& r) {
  static std::mutex m;
  static std::shared_ptr<const engine::model_weights> weights;
  static std::map<std::string, engine::result> cache;
  std::lock_guard lock(m);
  std::string key = std::to_string(static_cast<int>(spec.plane.num.kv)) + "/" +
                    std::to_string(static_cast<int>(spec.plane.num.dispatch)) + "/" +
                    std::to_string(static_cast<int>(spec.plane.num.combine)) + "/" +
                    std::to_string(static_cast<int>(spec.plane.num.mode)) + "/" +
                    std::to_string(r.max_new_tokens) + "/" + std::to_string(r.sampling.seed) + "/" +
                    std::to_string(r.sampling.temperature) + "/" + std::to_string(r.logits_rows) + "/";
  for (auto t : r.prompt) key += std::to_string(t) + ",";
  for (auto t : r.stop_ids) key += "s" + std::to_string(t) + ",";
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (!weights) {
    auto w = engine::model_weights::load(tiny_model());
    EXPECT_TRUE(w.has_value());
    weights = *w;
  }
  engine::engine_options o;
  o.num = spec.plane.num;
  auto eng = engine::reference_engine::create(weights, o);
  EXPECT_TRUE(eng.has_value());
  engine::request er;
  er.prompt = r.prompt;
  er.max_new_tokens = r.max_new_tokens;
  er.sampling.temperature = r.sampling.temperature;
  er.sampling.top_k = r.sampling.top_k;
  er.sampling.top_p = r.sampling.top_p;
  er.sampling.seed = r.sampling.seed;
  er.stop_ids = r.stop_ids;
  er.logits_rows = r.logits_rows;
  auto res = eng->generate({er});
  EXPECT_TRUE(res.has_value()) << (res ? "" : res.err().to_string());
  cache[key] = (*res)[0];
  return (*res)[0];
}

/// Threads of this process.
inline std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// thread_count() once it drops to `n` or after `grace` (threads that were told to end may take a
/// moment to leave the kernel's list after they were joined or detached).
inline std::size_t thread_count_settled(std::size_t n, std::chrono::milliseconds grace) {
  const auto until = std::chrono::steady_clock::now() + grace;
  std::size_t c = thread_count();
  while (c > n && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    c = thread_count();
  }
  return c;
}

/// Names of this process's threads, for failure messages.
inline std::string thread_names() {
  std::string out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(e.path() / "comm");
    std::string name;
    std::getline(in, name);
    out += name + " ";
  }
  return out;
}

/// The cluster's status once it is ready with every worker ready (its full capacity), or the last
/// status seen when `limit` passes first (the caller's assertions then say what is missing).
inline expected<client::cluster_status> wait_full_capacity(client::cluster& c,
                                                           std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto s = c.status();
    if (!s) return s.err();
    const bool all_ready = std::all_of(s->workers.begin(), s->workers.end(), [](const client::worker_status& w) {
      return w.state == worker_state::ready;
    });
    if ((s->ready && all_ready) || std::chrono::steady_clock::now() > give_up) return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

/// Requests submitted together, each streaming its tokens: what their client saw.
struct streaming_batch {
  std::mutex m;
  std::map<client::request_id, std::vector<client::token>> streamed;
  std::vector<client::request> reqs;
  std::vector<client::request_id> ids;

  /// Submits `n` requests: prompt lengths first_len + len_step * i, first_new + i new tokens,
  /// greedy for even i, seeded sampling for odd i.
  void submit(client::cluster& c, int n, std::int64_t first_len, std::int64_t len_step, std::int64_t first_new) {
    for (int i = 0; i < n; ++i) {
      reqs.push_back(make_request(i, first_len + len_step * i, first_new + i, i % 2 == 0));
      auto id = c.submit(reqs.back(), [this](const client::token& t) {
        std::lock_guard lock(m);
        streamed[t.id].push_back(t);
      });
      ASSERT_TRUE(id.has_value()) << id.err().to_string();
      ids.push_back(*id);
    }
  }

  /// Waits (up to `limit`) until the first request has streamed `tokens` tokens: under way.
  void wait_streaming(std::size_t tokens, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      {
        std::lock_guard lock(m);
        if (!ids.empty() && streamed[ids[0]].size() >= tokens) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  /// Every request ends with exactly the reference engine's tokens, each streamed once, in order.
  void expect_reference_tokens(client::cluster& c, const dataplane::cluster_spec& spec, std::chrono::seconds limit) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto r = c.wait(ids[i], limit);
      ASSERT_TRUE(r.has_value()) << "request " << i << ": " << r.err().to_string();
      EXPECT_EQ(r->tokens, reference_result(spec, reqs[i]).tokens) << "request " << i;
      std::lock_guard lock(m);
      const auto& seen = streamed[ids[i]];
      ASSERT_EQ(seen.size(), r->tokens.size()) << "request " << i;
      for (std::size_t k = 0; k < seen.size(); ++k) {
        EXPECT_EQ(seen[k].index, static_cast<std::int64_t>(k)) << "request " << i;
        EXPECT_EQ(seen[k].value, r->tokens[k]) << "request " << i;
      }
    }
  }
};

}  // namespace afd::cluster_testing
