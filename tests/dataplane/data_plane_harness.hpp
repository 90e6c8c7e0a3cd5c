#pragma once
// A cluster of attention and FFN engine threads in one process over the loopback transport, a
// tiny synthetic model, per-role weights, and the reference engine to compare with.

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tests/common/process_scratch.hpp"
#include "runtime/dataplane/data_plane.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/model/make_model.hpp"
#include "transport/loopback.hpp"

namespace afd::dataplane::testing {

/// A directory removed at process exit.
inline const std::filesystem::path& scratch_root() {
  static const test_support::process_scratch root{"afd-data-plane-test"};
  return root.path;
}

/// The tiny preset (4 layers, layer 0 dense, 8 experts, top-3, a shared expert), written once.
inline const std::string& tiny_model() {
  static const std::string dir = [] {
    auto c = model::preset_config("tiny");
    EXPECT_TRUE(c.has_value());
    model::synthetic_options o;
    o.config = *c;
    o.seed = 11;
    const auto d = scratch_root() / "tiny";
    auto w = model::write_synthetic_checkpoint(o, d.string(), true);
    EXPECT_TRUE(w.has_value()) << (w ? "" : w.err().to_string());
    // The engines run one kernel thread each: results do not depend on it and the tests share
    // a small machine.
    kernels::cpu::set_num_threads(1);
    return d.string();
  }();
  return dir;
}

/// The tiny preset without a shared expert, renormalised top-2 routing, and dense layers 0 and 2.
inline const std::string& variant_model() {
  static const std::string dir = [] {
    auto c = model::preset_config("tiny");
    EXPECT_TRUE(c.has_value());
    model::synthetic_options o;
    o.config = *c;
    o.config.share_expert_dim = 0;
    o.config.norm_expert_weight = true;
    o.config.moe_top_k = 2;
    o.config.moe_layers = {false, true, false, true};
    o.seed = 23;
    const auto d = scratch_root() / "variant";
    auto w = model::write_synthetic_checkpoint(o, d.string(), true);
    EXPECT_TRUE(w.has_value()) << (w ? "" : w.err().to_string());
    return d.string();
  }();
  return dir;
}

inline std::shared_ptr<const engine::model_weights> load(const engine::weight_selection& s,
                                                         const std::string& dir = tiny_model()) {
  auto w = engine::model_weights::load(dir, s);
  EXPECT_TRUE(w.has_value()) << (w ? "" : w.err().to_string());
  return w ? *w : nullptr;
}

inline const std::shared_ptr<const engine::model_weights>& all_weights() {
  static const auto w = load(engine::weight_selection::all());
  return w;
}

/// How routed experts are spread over F workers.
enum class placement { contiguous, round_robin, uneven };

/// Units of FFN worker f: experts per scheme; the shared/dense unit of layer l on worker
/// (l + 1) % F, so that different layers' shared units live on different workers.
inline ffn_assignment assignment_of(const model_config& c, placement p, std::uint32_t F, std::uint32_t f) {
  ffn_assignment a;
  a.units.resize(static_cast<std::size_t>(c.num_hidden_layers));
  const auto E = static_cast<std::uint32_t>(c.moe_num_experts);
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto& u = a.units[static_cast<std::size_t>(l)];
    if (c.is_moe_layer(l)) {
      for (std::uint32_t e = 0; e < E; ++e) {
        std::uint32_t owner = 0;
        switch (p) {
          case placement::contiguous: owner = e * F / E; break;
          case placement::round_robin: owner = e % F; break;
          case placement::uneven: owner = e < E / 2 ? 0 : 1 + (e % (F > 1 ? F - 1 : 1)); break;
        }
        if (owner >= F) owner = F - 1;
        if (owner == f) u.push_back(static_cast<std::int32_t>(e));
      }
    }
    if (static_cast<std::uint32_t>(l + 1) % F == f) u.push_back(engine::shared_unit);
  }
  return a;
}

struct cluster_options {
  std::uint32_t A = 1, F = 1;
  placement place = placement::contiguous;
  data_plane_options plane;
  std::int64_t block_size = 16;
  std::int64_t num_blocks = 64;
  std::int64_t max_running = 8;
  std::string model;  ///< checkpoint directory; empty: tiny_model()
  /// Throughput mode: every layer's shared/dense unit cut into F column slices, one per worker.
  bool slice_shared = false;
};

/// Worker f of F computes columns [f * I / F, (f + 1) * I / F) of every layer's shared/dense unit.
inline void slice_shared_units(const model_config& c, std::uint32_t F, std::uint32_t f, ffn_assignment& a) {
  a.shared_slices.resize(static_cast<std::size_t>(c.num_hidden_layers));
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto& u = a.units[static_cast<std::size_t>(l)];
    u.erase(std::remove(u.begin(), u.end(), engine::shared_unit), u.end());
    const std::int64_t I = all_weights()->ffn(l).shared.width();
    a.shared_slices[static_cast<std::size_t>(l)] = {f * I / F, (f + 1) * I / F - f * I / F};
  }
}

/// A running cluster: engines, transports, and what they reported.
class cluster {
 public:
  explicit cluster(const cluster_options& o) : o_(o) {
    fabric_ = transport::loopback_fabric::create();
    for (std::uint32_t a = 0; a < o.A; ++a) attn_t_.push_back(make(static_cast<transport::rank_t>(a)));
    for (std::uint32_t f = 0; f < o.F; ++f) ffn_t_.push_back(make(static_cast<transport::rank_t>(100 + f)));
    ap_.resize(o.A);
    fp_.resize(o.F);
    for (std::uint32_t a = 0; a < o.A; ++a)
      for (std::uint32_t f = 0; f < o.F; ++f) {
        auto p = attn_t_[a]->connect(ffn_t_[f]->address());
        auto q = ffn_t_[f]->connect(attn_t_[a]->address());
        EXPECT_TRUE(p.has_value() && q.has_value());
        ap_[a].push_back(*p);
        fp_[f].push_back(*q);
      }
    if (o_.model.empty()) o_.model = tiny_model();
    attn_weights_ = load(engine::weight_selection::attention_side(), o_.model);
    std::vector<std::uint32_t> all(o.F);
    for (std::uint32_t f = 0; f < o.F; ++f) all[f] = f;
    build(o.plane.epoch, all);
  }
  ~cluster() { stop(); }

  /// What the control plane does on a membership change: drops every engine, then builds new
  /// ones for `epoch` over the FFN workers `alive` (units placed anew over them). Requests must
  /// be re-admitted.
  void rebuild(std::uint32_t epoch, const std::vector<std::uint32_t>& alive) {
    stop();
    attn_.clear();
    ffn_.clear();
    build(epoch, alive);
  }

  void start() {
    for (auto& e : ffn_) {
      if (e) {
        ASSERT_TRUE(e->start().has_value());
      }
    }
    for (auto& e : attn_) ASSERT_TRUE(e->start().has_value());
  }
  void stop() {
    for (auto& e : attn_) if (e) e->stop();
    for (auto& e : ffn_) if (e) e->stop();
  }

  /// Admits request `r` with id `id` on attention worker `a`.
  void admit(std::uint32_t a, engine::request_id id, engine::request r, std::vector<std::int32_t> generated = {}) {
    auto ok = attn_[a]->admit({id, std::move(r), std::move(generated)});
    ASSERT_TRUE(ok.has_value()) << (ok ? "" : ok.err().to_string());
  }

  /// Waits until `n` requests finished or a failure was reported (false on timeout or failure).
  bool wait_finished(std::size_t n, std::chrono::seconds limit = std::chrono::seconds(60)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return results_.size() >= n || !failures_.empty(); }) && failures_.empty();
  }
  /// Waits for a failure report.
  bool wait_failure(std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return !failures_.empty(); });
  }
  /// Waits until some token of request `id` was reported.
  bool wait_token(engine::request_id id, std::chrono::seconds limit = std::chrono::seconds(30)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return streamed_.count(id) != 0; });
  }

  std::map<engine::request_id, engine::result> results() {
    std::lock_guard lock(mu_);
    return results_;
  }
  std::vector<std::string> failures() {
    std::lock_guard lock(mu_);
    return failures_;
  }
  /// Forgets the failures reported so far (after a rebuild).
  void clear_failures() {
    std::lock_guard lock(mu_);
    failures_.clear();
    codes_.clear();
    faults_.clear();
  }
  /// Every fault the engines reported, in order (fatal or not, with their suspects).
  std::vector<engine_fault> faults() {
    std::lock_guard lock(mu_);
    return faults_;
  }
  std::vector<errc> failure_codes() {
    std::lock_guard lock(mu_);
    return codes_;
  }
  /// Streamed tokens per request, with their indices, in order.
  std::map<engine::request_id, std::vector<std::pair<std::int64_t, std::int32_t>>> streamed() {
    std::lock_guard lock(mu_);
    return streamed_;
  }

  attention_engine& attn(std::uint32_t a) { return *attn_[a]; }
  std::unique_ptr<ffn_engine>& ffn(std::uint32_t f) { return ffn_[f]; }
  transport::loopback_fabric& fabric() { return *fabric_; }
  const std::shared_ptr<const engine::model_weights>& attention_weights() const { return attn_weights_; }
  const std::vector<std::shared_ptr<const engine::model_weights>>& ffn_weights() const { return ffn_weights_; }
  const std::vector<ffn_assignment>& assignments() const { return assignments_; }

 private:
  void build(std::uint32_t epoch, const std::vector<std::uint32_t>& alive) {
    const model_config& c = attn_weights_->config();
    data_plane_options plane = o_.plane;
    plane.epoch = epoch;
    const auto F = static_cast<std::uint32_t>(alive.size());
    assignments_.clear();
    ffn_weights_.clear();
    ffn_.clear();
    ffn_.resize(o_.F);
    for (std::uint32_t i = 0; i < F; ++i) {
      const std::uint32_t f = alive[i];
      assignments_.push_back(assignment_of(c, o_.place, F, i));
      if (o_.slice_shared) slice_shared_units(c, F, i, assignments_.back());
      ffn_weights_.push_back(load(ffn_weight_selection(assignments_.back()), o_.model));
      auto e = ffn_engine::create(
          ffn_weights_.back(), plane, assignments_.back(), *ffn_t_[f], fp_[f], [](step_report&&) {},
          [this, f](const engine_fault& e) { note_failure("ffn " + std::to_string(f) + ": " + e.what.to_string(), e); });
      EXPECT_TRUE(e.has_value()) << (e ? "" : e.err().to_string());
      ffn_[f] = std::move(*e);
    }
    for (std::uint32_t a = 0; a < o_.A; ++a) {
      attention_engine_options ao;
      ao.plane = plane;
      ao.block_size = o_.block_size;
      ao.num_blocks = o_.num_blocks;
      ao.max_running = o_.max_running;
      std::vector<transport::peer_id> peers;
      for (std::uint32_t f : alive) peers.push_back(ap_[a][f]);
      auto e = attention_engine::create(
          attn_weights_, ao, *attn_t_[a], peers, [this](step_report&& r) { on_report(std::move(r)); },
          [this, a](const engine_fault& e) {
            note_failure("attention " + std::to_string(a) + ": " + e.what.to_string(), e);
          });
      EXPECT_TRUE(e.has_value()) << (e ? "" : e.err().to_string());
      attn_.push_back(std::move(*e));
    }
  }

  std::unique_ptr<transport::transport> make(transport::rank_t r) {
    auto t = transport::make_loopback_transport(fabric_, r);
    EXPECT_TRUE(t.has_value());
    return std::move(*t);
  }
  void on_report(step_report&& r) {
    std::lock_guard lock(mu_);
    for (const auto& t : r.tokens) streamed_[t.id].emplace_back(t.index, t.token);
    for (auto& [id, res] : r.finished) results_[id] = std::move(res);
    cv_.notify_all();
  }
  void note_failure(std::string s, const engine_fault& f) {
    std::lock_guard lock(mu_);
    failures_.push_back(std::move(s));
    codes_.push_back(f.what.code());
    faults_.push_back(f);
    cv_.notify_all();
  }

  std::vector<engine_fault> faults_;
  cluster_options o_;
  std::shared_ptr<transport::loopback_fabric> fabric_;
  std::vector<std::unique_ptr<transport::transport>> attn_t_, ffn_t_;
  std::vector<std::vector<transport::peer_id>> ap_, fp_;
  std::shared_ptr<const engine::model_weights> attn_weights_;
  std::vector<std::shared_ptr<const engine::model_weights>> ffn_weights_;
  std::vector<ffn_assignment> assignments_;
  std::vector<std::unique_ptr<ffn_engine>> ffn_;
  std::vector<std::unique_ptr<attention_engine>> attn_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<engine::request_id, engine::result> results_;
  std::map<engine::request_id, std::vector<std::pair<std::int64_t, std::int32_t>>> streamed_;
  std::vector<std::string> failures_;
  std::vector<errc> codes_;
};

/// A mixed workload: prompts of 1 to ~45 tokens, 1 to 9 new tokens, greedy and seeded sampling,
/// logits rows on some, a stop id on some.
inline std::vector<engine::request> workload(std::size_t n, std::uint64_t salt = 0) {
  std::vector<engine::request> out;
  for (std::size_t i = 0; i < n; ++i) {
    engine::request r;
    const std::size_t len = 1 + (i * 13 + salt * 7) % 45;
    for (std::size_t j = 0; j < len; ++j) r.prompt.push_back(static_cast<std::int32_t>((i * 97 + j * 31 + salt) % 512));
    r.max_new_tokens = 1 + static_cast<std::int64_t>((i * 5 + salt) % 9);
    if (i % 2 == 1) {
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = static_cast<std::int32_t>(i % 3 == 0 ? 0 : 40);
      r.sampling.top_p = i % 4 == 1 ? 0.85f : 1.0f;
      r.sampling.seed = 1000 + i + salt;
    }
    r.logits_rows = static_cast<std::int64_t>(i % 3);
    if (i % 5 == 4) r.stop_ids = {static_cast<std::int32_t>(i * 7 % 512), static_cast<std::int32_t>(i * 11 % 512)};
    out.push_back(std::move(r));
  }
  return out;
}

/// The reference engine's results for `requests` under `num`.
inline std::vector<engine::result> reference(const std::vector<engine::request>& requests, const numerics& num,
                                             std::shared_ptr<const engine::model_weights> weights = all_weights()) {
  engine::engine_options eo;
  eo.num = num;
  eo.num_blocks = 256;
  auto e = engine::reference_engine::create(std::move(weights), eo);
  EXPECT_TRUE(e.has_value()) << (e ? "" : e.err().to_string());
  auto r = e->generate(requests);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.err().to_string());
  return r ? *r : std::vector<engine::result>{};
}

/// Bitwise comparison of two results (tokens, reason, logits rows by bit pattern).
inline ::testing::AssertionResult same_result(const engine::result& got, const engine::result& want) {
  if (got.tokens != want.tokens) return ::testing::AssertionFailure() << "tokens differ";
  if (got.reason != want.reason)
    return ::testing::AssertionFailure() << "reason " << to_string(got.reason) << " vs " << to_string(want.reason);
  if (got.logits.size() != want.logits.size())
    return ::testing::AssertionFailure() << got.logits.size() << " logits rows vs " << want.logits.size();
  for (std::size_t i = 0; i < got.logits.size(); ++i) {
    if (got.logits[i].size() != want.logits[i].size()) return ::testing::AssertionFailure() << "row width differs";
    if (std::memcmp(got.logits[i].data(), want.logits[i].data(), got.logits[i].size() * sizeof(float)) != 0)
      return ::testing::AssertionFailure() << "logits row " << i << " differs bitwise";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace afd::dataplane::testing
