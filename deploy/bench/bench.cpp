// The benchmark runner: builds the cluster from engine threads over the loopback transport (as the
// worker actors do, minus the control plane), drives the load, times it, and compares its results
// with the reference engine's under the same numerics.

#include "runtime/core/stats.hpp"
#include "deploy/bench/bench.hpp"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <thread>

#include "runtime/dataplane/data_plane.hpp"
#include "deploy/topology/topology.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "runtime/engine/layer.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/reference_engine.hpp"
#include "runtime/model/make_model.hpp"
#include "transport/loopback.hpp"

namespace afd::bench {

const char* to_string(combine_mode m) noexcept {
  return m == combine_mode::throughput ? "throughput" : "deterministic";
}

// bf16 results: each layer's FFN output carries up to F extra bf16 roundings of pre-summed
// partials (relative 2^-9 each), amplified by the later layers; the data plane's own tests bound
// this by 5e-2 (whole units) and 1e-1 (sliced units) on the tiny model. f32 results: only the
// order of sums differs.
double throughput_tolerance(dtype combine) { return combine == dtype::f32 ? 1e-4 : 1e-1; }

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double process_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

void read_loadavg(double out[3]) {
  std::ifstream f("/proc/loadavg");
  if (!(f >> out[0] >> out[1] >> out[2])) out[0] = out[1] = out[2] = -1;
}

unsigned usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

/// When each request was submitted and when each of its tokens arrived.
struct request_trace {
  clock_type::time_point submitted;
  std::vector<clock_type::time_point> tokens;
};

load_figures figures_of(const std::vector<request_trace>& traces, clock_type::time_point t0, double cpu_seconds,
                        std::int64_t prompt_tokens) {
  load_figures f;
  clock_type::time_point last = t0;
  std::vector<double> tpot, itl, ttft;
  for (const request_trace& r : traces) {
    f.generated_tokens += static_cast<std::int64_t>(r.tokens.size());
    if (r.tokens.empty()) continue;
    last = std::max(last, r.tokens.back());
    ttft.push_back(seconds_between(r.submitted, r.tokens.front()) * 1e3);
    for (std::size_t i = 1; i < r.tokens.size(); ++i) itl.push_back(seconds_between(r.tokens[i - 1], r.tokens[i]) * 1e3);
    if (r.tokens.size() > 1)
      tpot.push_back(seconds_between(r.tokens.front(), r.tokens.back()) * 1e3 / static_cast<double>(r.tokens.size() - 1));
  }
  f.prompt_tokens = prompt_tokens;
  f.seconds = seconds_between(t0, last);
  if (f.seconds > 0) {
    f.tokens_per_s = static_cast<double>(f.generated_tokens) / f.seconds;
    f.total_tokens_per_s = static_cast<double>(f.generated_tokens + f.prompt_tokens) / f.seconds;
    f.cpu_cores_used = cpu_seconds / f.seconds;
  }
  f.tpot_p50_ms = percentile(tpot, 0.50);
  f.tpot_p99_ms = percentile(tpot, 0.99);
  f.itl_p50_ms = percentile(itl, 0.50);
  f.itl_p99_ms = percentile(itl, 0.99);
  f.ttft_p50_ms = percentile(ttft, 0.50);
  f.ttft_p99_ms = percentile(ttft, 0.99);
  return f;
}

/// The load: N prompts of fixed length, greedy, no stop ids (every request produces exactly
/// max_new_tokens), logits kept for the comparison with the reference engine.
std::vector<engine::request> make_load(const bench_options& o, const model_config& c) {
  std::vector<engine::request> out;
  // Keep at most ~1 GiB of logits rows per run.
  const std::int64_t row_bytes = c.vocab_size * static_cast<std::int64_t>(sizeof(float));
  const std::int64_t budget_rows = std::max<std::int64_t>(1, (std::int64_t{1} << 30) / (row_bytes * o.requests));
  for (std::int64_t i = 0; i < o.requests; ++i) {
    engine::request r;
    for (std::int64_t j = 0; j < o.prompt_len; ++j)
      r.prompt.push_back(static_cast<std::int32_t>((i * 131 + j * 17 + 7) % c.vocab_size));
    r.max_new_tokens = o.max_new_tokens;
    r.logits_rows = std::min(o.max_new_tokens, budget_rows);
    out.push_back(std::move(r));
  }
  return out;
}

/// `n` requests of the load cut to two new tokens, for the untimed warm-up.
std::vector<engine::request> warm_up_load(const std::vector<engine::request>& load, std::size_t n) {
  std::vector<engine::request> out;
  for (std::size_t i = 0; i < n; ++i) {
    engine::request r = load[i % load.size()];
    r.max_new_tokens = std::min<std::int64_t>(r.max_new_tokens, 2);
    r.logits_rows = 0;
    out.push_back(std::move(r));
  }
  return out;
}

/// How the cluster is laid out, independent of K and of the combine mode.
struct layout {
  struct attention_worker {
    std::string name;
    std::int64_t kv_blocks = 0, block_size = 16, max_running = 1;
  };
  std::vector<attention_worker> attention;
  std::vector<std::string> ffn;
  engine::placement whole;                  ///< deterministic (and throughput without slices)
  std::optional<engine::placement> sliced;  ///< throughput with sliced shared/dense units
  std::string placement;
  bool whole_units = true;  ///< deterministic mode possible

  /// What FFN worker f computes in a run of mode `sliced_run`.
  engine::ffn_assignment assignment(std::size_t f, bool sliced_run) const {
    return (sliced_run && sliced ? *sliced : whole).assignment_of(static_cast<int>(f));
  }
};

/// Width of layer l's shared expert / dense MLP (0: none).
std::int64_t unit_width(const model_config& c, std::int64_t l) {
  return c.is_moe_layer(l) ? c.share_expert_dim : c.intermediate_size;
}

layout layout_of_shape(const bench_options& o, const model_config& c, std::int64_t blocks_per_request) {
  layout lay;
  const std::uint32_t A = o.attention_workers, F = o.ffn_workers;
  const std::int64_t per_worker = (o.requests + A - 1) / A;
  for (std::uint32_t a = 0; a < A; ++a)
    lay.attention.push_back({"a" + std::to_string(a), per_worker * blocks_per_request + 1, 16, per_worker});
  for (std::uint32_t f = 0; f < F; ++f) lay.ffn.push_back("f" + std::to_string(f));
  lay.whole.ffn_workers = lay.ffn;
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    engine::layer_placement lp;
    lp.layer = l;
    lp.moe = c.is_moe_layer(l);
    if (lp.moe)
      for (std::int64_t e = 0; e < c.moe_num_experts; ++e)
        lp.expert_owner.push_back(static_cast<int>(e * F / c.moe_num_experts));
    lp.unit_width = unit_width(c, l);
    if (lp.unit_width > 0) lp.unit = {{static_cast<int>(l % F), 0, lp.unit_width}};
    lay.whole.layers.push_back(std::move(lp));
  }
  if (o.slice_shared) {
    lay.sliced = lay.whole;
    for (auto& lp : lay.sliced->layers) {
      if (lp.unit_width <= 0) continue;
      lp.unit.clear();
      for (std::uint32_t f = 0; f < F; ++f)
        lp.unit.push_back({static_cast<int>(f), f * lp.unit_width / F, (f + 1) * lp.unit_width / F});
    }
  }
  lay.placement = "routed experts in contiguous ranges; shared/dense units whole, layer l on FFN worker l mod F";
  if (o.slice_shared) lay.placement += " (throughput mode: sliced into F column ranges)";
  return lay;
}

expected<layout> layout_of_topology(const topology::topology& t, const model_config& c) {
  auto resolved = topology::resolve_placement(t, c);
  if (!resolved.ok()) return resolved.to_error(errc::invalid_config);
  layout lay;
  for (const auto& a : t.attention_workers)
    lay.attention.push_back({a.name, a.kv_blocks, a.block_size, a.max_batch});
  for (const auto& f : t.ffn_workers) lay.ffn.push_back(f.name);
  lay.whole_units = resolved.value->units_whole();
  if (lay.whole_units)
    lay.whole = *resolved.value;
  else
    lay.sliced = *resolved.value;
  lay.placement = "from " + t.file + (lay.whole_units ? " (units whole)" : " (shared/dense units sliced)");
  return lay;
}

/// The weights FFN worker f needs for both modes.
engine::weight_selection selection_of(const layout& lay, std::size_t f) {
  engine::ffn_assignment a = lay.whole_units ? lay.assignment(f, false) : lay.assignment(f, true);
  if (lay.whole_units && lay.sliced) a.shared_slices = lay.assignment(f, true).shared_slices;
  return engine::ffn_weight_selection(a);
}

/// Relative L2 distance of two logits rows.
double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t v = 0; v < want.size() && v < got.size(); ++v) {
    const double d = static_cast<double>(got[v]) - static_cast<double>(want[v]);
    num += d * d;
    den += static_cast<double>(want[v]) * static_cast<double>(want[v]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

accuracy_figures compare(const std::map<engine::request_id, engine::result>& got,
                         const std::vector<engine::result>& want, const numerics& num) {
  accuracy_figures a;
  a.bitwise_equal = got.size() == want.size();
  for (std::size_t i = 0; i < want.size(); ++i) {
    auto it = got.find(static_cast<engine::request_id>(i + 1));
    if (it == got.end()) {
      a.bitwise_equal = false;
      continue;
    }
    const engine::result& g = it->second;
    const engine::result& w = want[i];
    bool bitwise = g.tokens == w.tokens && g.reason == w.reason && g.logits.size() == w.logits.size();
    a.requests_same_tokens += g.tokens == w.tokens;
    for (std::size_t r = 0; r < std::min(g.logits.size(), w.logits.size()); ++r) {
      const bool same = g.logits[r].size() == w.logits[r].size() &&
                        std::memcmp(g.logits[r].data(), w.logits[r].data(), w.logits[r].size() * sizeof(float)) == 0;
      bitwise = bitwise && same;
      a.max_rel_l2 = std::max(a.max_rel_l2, same ? 0.0 : rel_l2(g.logits[r], w.logits[r]));
      ++a.logits_rows_compared;
      // After a different token the rows belong to another text: stop comparing this request.
      if (r >= g.tokens.size() || r >= w.tokens.size() || g.tokens[r] != w.tokens[r]) break;
    }
    a.requests_bitwise += bitwise;
    a.bitwise_equal = a.bitwise_equal && bitwise;
  }
  if (num.mode == combine_mode::deterministic) {
    a.tolerance = 0;
    a.within_tolerance = a.bitwise_equal;
  } else {
    a.tolerance = throughput_tolerance(num.combine);
    a.within_tolerance = a.max_rel_l2 <= a.tolerance && a.logits_rows_compared > 0;
  }
  return a;
}

struct reference_outcome {
  reference_run run;
  std::vector<engine::result> results;
};

expected<reference_outcome> run_reference(std::shared_ptr<const engine::model_weights> weights,
                                          const std::vector<engine::request>& load, const numerics& num,
                                          std::int64_t blocks_per_request, std::int64_t prefill_chunk, int threads,
                                          std::size_t warm_up) {
  kernels::cpu::set_num_threads(threads);
  engine::engine_options eo;
  eo.num = num;
  eo.block_size = 16;
  eo.num_blocks = static_cast<std::int64_t>(load.size()) * blocks_per_request + 1;
  eo.prefill_chunk = prefill_chunk;
  eo.max_running = static_cast<std::int64_t>(load.size());
  auto e = engine::reference_engine::create(std::move(weights), eo);
  if (!e) return std::move(e).err();
  // Warm-up (untimed): the first steps pay for page faults on the weights and the kernel threads'
  // start; the cluster runs get the same.
  for (const auto& r : warm_up_load(load, warm_up)) {
    auto id = e->submit(r);
    if (!id) return std::move(id).err();
    while (!e->idle()) e->step();
    if (auto res = e->take_result(*id); !res) return std::move(res).err();
  }
  std::vector<request_trace> traces(load.size());
  std::map<engine::request_id, std::size_t> index;
  std::int64_t prompt_tokens = 0;
  const double cpu0 = process_cpu_seconds();
  const auto t0 = clock_type::now();
  for (std::size_t i = 0; i < load.size(); ++i) {
    traces[i].submitted = clock_type::now();
    auto id = e->submit(load[i]);
    if (!id) return std::move(id).err();
    index[*id] = i;
    prompt_tokens += static_cast<std::int64_t>(load[i].prompt.size());
  }
  while (!e->idle()) {
    const auto events = e->step();
    const auto now = clock_type::now();
    for (const auto& ev : events) traces[index.at(ev.id)].tokens.push_back(now);
  }
  const double cpu = process_cpu_seconds() - cpu0;
  reference_outcome out;
  out.run.mode = num.mode;
  out.run.figures = figures_of(traces, t0, cpu, prompt_tokens);
  for (const auto& [id, i] : index) {
    (void)i;
    auto r = e->take_result(id);
    if (!r) return std::move(r).err();
    out.results.push_back(std::move(*r));
  }
  return out;
}

/// What the engine threads report, gathered under one lock.
struct collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<request_trace> traces;
  std::map<engine::request_id, engine::result> results;
  std::vector<worker_figures> workers;
  std::vector<std::string> failures;
  /// Reports of steps up to this one belong to the warm-up (every worker runs the same steps).
  std::uint64_t warm_up_through = 0;
  bool timed = false;
  std::uint64_t last_step = 0;

  void on_attention(std::size_t worker, dataplane::step_report&& r) {
    const auto now = clock_type::now();
    std::lock_guard lock(mu);
    for (const auto& t : r.tokens)
      if (static_cast<std::size_t>(t.id - 1) < traces.size()) traces[static_cast<std::size_t>(t.id - 1)].tokens.push_back(now);
    for (auto& [id, res] : r.finished) results[id] = std::move(res);
    add(worker, r.step, r.timing);
    cv.notify_all();
  }
  void on_ffn(std::size_t worker, dataplane::step_report&& r) {
    std::lock_guard lock(mu);
    add(worker, r.step, r.timing);
  }
  void on_failure(const std::string& who, const error& e) {
    std::lock_guard lock(mu);
    failures.push_back(who + ": " + e.to_string());
    cv.notify_all();
  }
  void add(std::size_t worker, std::uint64_t step, const dataplane::step_timing& t) {
    last_step = std::max(last_step, step);
    if (timed && step <= warm_up_through) return;
    worker_figures& w = workers[worker];
    if (w.layer_compute_ms.size() < t.layer_compute_seconds.size()) {
      w.layer_compute_ms.resize(t.layer_compute_seconds.size());
      w.layer_wait_ms.resize(t.layer_compute_seconds.size());
    }
    for (std::size_t l = 0; l < t.layer_compute_seconds.size() && l < t.layer_wait_seconds.size(); ++l) {
      w.layer_compute_ms[l] += t.layer_compute_seconds[l];  // seconds until finished
      w.layer_wait_ms[l] += t.layer_wait_seconds[l];
    }
    ++w.steps;
    w.compute_seconds += t.compute_seconds;
    w.wait_seconds += t.wait_seconds;
    w.total_seconds += t.total_seconds;
  }
};

straggler straggler_of(const std::vector<worker_figures>& workers, const std::string& role) {
  straggler s;
  double sum = 0;
  int n = 0;
  for (const auto& w : workers) {
    if (w.role != role) continue;
    sum += w.compute_ms_per_layer;
    ++n;
    if (s.name.empty() || w.compute_ms_per_layer > s.compute_ms_per_layer) {
      s.name = w.name;
      s.compute_ms_per_layer = w.compute_ms_per_layer;
    }
  }
  if (n > 0 && sum > 0) s.above_mean = s.compute_ms_per_layer / (sum / n) - 1.0;
  return s;
}

struct cluster_outcome {
  cluster_run run;
  std::map<engine::request_id, engine::result> results;
};

expected<cluster_outcome> run_cluster(const layout& lay, const std::shared_ptr<const engine::model_weights>& attn_weights,
                                  const std::vector<std::shared_ptr<const engine::model_weights>>& ffn_weights,
                                  const std::vector<engine::request>& load, std::uint32_t K, const numerics& num,
                                  std::int64_t prefill_chunk, double timeout_seconds) {
  const model_config& c = attn_weights->config();
  const auto A = static_cast<std::uint32_t>(lay.attention.size());
  const auto F = static_cast<std::uint32_t>(lay.ffn.size());
  // One kernel thread per engine thread: A + F engine threads share the machine's cores.
  kernels::cpu::set_num_threads(1);

  dataplane::data_plane_options plane;
  plane.num = num;
  plane.micro_batches = K;
  plane.prefill_chunk = prefill_chunk;
  // A loaded shared machine may stall a thread for seconds; a benchmark should not fail for it.
  plane.step_deadline = std::chrono::milliseconds(120000);
  std::int64_t most_running = 1;
  for (const auto& a : lay.attention) most_running = std::max(most_running, a.max_running);
  plane.max_tokens_per_micro_batch =
      static_cast<std::uint32_t>(std::max<std::int64_t>(256, (most_running + K - 1) / K));

  auto fabric = transport::loopback_fabric::create();
  std::vector<std::unique_ptr<transport::transport>> at, ft;
  for (std::uint32_t a = 0; a < A; ++a) {
    auto t = transport::make_loopback_transport(fabric, static_cast<transport::rank_t>(a));
    if (!t) return std::move(t).err();
    at.push_back(std::move(*t));
  }
  for (std::uint32_t f = 0; f < F; ++f) {
    auto t = transport::make_loopback_transport(fabric, static_cast<transport::rank_t>(A + f));
    if (!t) return std::move(t).err();
    ft.push_back(std::move(*t));
  }
  std::vector<std::vector<transport::peer_id>> ap(A), fp(F);
  for (std::uint32_t a = 0; a < A; ++a)
    for (std::uint32_t f = 0; f < F; ++f) {
      auto p = at[a]->connect(ft[f]->address());
      if (!p) return std::move(p).err();
      auto q = ft[f]->connect(at[a]->address());
      if (!q) return std::move(q).err();
      ap[a].push_back(*p);
      fp[f].push_back(*q);
    }

  collector col;
  col.traces.resize(load.size());
  for (const auto& a : lay.attention) col.workers.push_back({a.name, "attention"});
  for (const auto& f : lay.ffn) col.workers.push_back({f, "ffn"});

  const bool sliced = num.mode == combine_mode::throughput && lay.sliced.has_value();
  std::vector<std::unique_ptr<dataplane::ffn_engine>> ffn;
  std::vector<std::unique_ptr<dataplane::attention_engine>> attn;
  auto stop_all = [&] {
    for (auto& e : attn) e->stop();
    for (auto& e : ffn) e->stop();
  };
  for (std::uint32_t f = 0; f < F; ++f) {
    const std::string who = lay.ffn[f];
    auto e = dataplane::ffn_engine::create(
        ffn_weights[f], plane, lay.assignment(f, sliced), *ft[f], fp[f],
        [&col, i = A + f](dataplane::step_report&& r) { col.on_ffn(i, std::move(r)); },
        [&col, who](const dataplane::engine_fault& f) { col.on_failure("FFN worker " + who, f.what); });
    if (!e) return fail(e.err().code(), "FFN worker ", who, ": ", e.err().message());
    ffn.push_back(std::move(*e));
  }
  for (std::uint32_t a = 0; a < A; ++a) {
    const std::string who = lay.attention[a].name;
    dataplane::attention_engine_options ao;
    ao.plane = plane;
    ao.block_size = lay.attention[a].block_size;
    ao.num_blocks = lay.attention[a].kv_blocks;
    ao.max_running = lay.attention[a].max_running;
    auto e = dataplane::attention_engine::create(
        attn_weights, ao, *at[a], ap[a], [&col, a](dataplane::step_report&& r) { col.on_attention(a, std::move(r)); },
        [&col, who](const dataplane::engine_fault& f) { col.on_failure("attention worker " + who, f.what); });
    if (!e) return fail(e.err().code(), "attention worker ", who, ": ", e.err().message());
    attn.push_back(std::move(*e));
  }
  for (auto& e : ffn)
    if (auto ok = e->start(); !ok) return ok.err();
  for (auto& e : attn)
    if (auto ok = e->start(); !ok) {
      stop_all();
      return ok.err();
    }

  // Warm-up (untimed): one short request per attention worker, then the counters start afresh.
  {
    const auto warm = warm_up_load(load, A);
    for (std::uint32_t a = 0; a < A; ++a) {
      auto ok = attn[a]->admit({static_cast<engine::request_id>(load.size() + 1 + a), warm[a], {}});
      if (!ok) {
        stop_all();
        return fail(ok.err().code(), "warm-up request on attention worker ", lay.attention[a].name, ": ",
                    ok.err().message());
      }
    }
    std::unique_lock lock(col.mu);
    const bool warmed = col.cv.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                                        [&] { return col.results.size() >= A || !col.failures.empty(); });
    if (!warmed || !col.failures.empty()) {
      lock.unlock();
      stop_all();
      return fail(errc::timeout, "cluster warm-up: ", col.failures.empty() ? "no answer" : col.failures.front());
    }
    col.results.clear();
    for (worker_figures& w : col.workers) w = {w.name, w.role};
    col.warm_up_through = col.last_step;
    col.timed = true;
  }

  // Requests go round-robin over the attention workers: what the coordinator's "most free KV
  // blocks" rule gives for equal requests arriving together.
  std::int64_t prompt_tokens = 0;
  const double cpu0 = process_cpu_seconds();
  const auto t0 = clock_type::now();
  for (std::size_t i = 0; i < load.size(); ++i) {
    {
      std::lock_guard lock(col.mu);
      col.traces[i].submitted = clock_type::now();
    }
    auto ok = attn[i % A]->admit({static_cast<engine::request_id>(i + 1), load[i], {}});
    if (!ok) {
      stop_all();
      return fail(ok.err().code(), "request ", i, " on attention worker ", lay.attention[i % A].name, ": ",
                  ok.err().message());
    }
    prompt_tokens += static_cast<std::int64_t>(load[i].prompt.size());
  }
  bool done = false;
  {
    std::unique_lock lock(col.mu);
    done = col.cv.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                           [&] { return col.results.size() >= load.size() || !col.failures.empty(); });
  }
  const double cpu = process_cpu_seconds() - cpu0;
  stop_all();
  if (!col.failures.empty()) return fail(errc::transport_error, "cluster run failed: ", col.failures.front());
  if (!done)
    return fail(errc::timeout, "cluster run: ", col.results.size(), " of ", load.size(), " requests finished in ",
                timeout_seconds, " s");

  cluster_outcome out;
  cluster_run& run = out.run;
  run.micro_batches = K;
  run.mode = num.mode;
  run.figures = figures_of(col.traces, t0, cpu, prompt_tokens);
  const double L = static_cast<double>(c.num_hidden_layers);
  for (worker_figures& w : col.workers) {
    if (w.steps > 0) {
      const double per = 1e3 / (static_cast<double>(w.steps) * L);
      w.compute_ms_per_layer = w.compute_seconds * per;
      w.wait_ms_per_layer = w.wait_seconds * per;
      w.other_ms_per_layer = std::max(0.0, w.total_seconds - w.compute_seconds - w.wait_seconds) * per;
      for (std::size_t l = 0; l < w.layer_compute_ms.size(); ++l) {
        w.layer_compute_ms[l] *= 1e3 / static_cast<double>(w.steps);
        w.layer_wait_ms[l] *= 1e3 / static_cast<double>(w.steps);
      }
    }
    run.workers.push_back(w);
  }
  run.attention_straggler = straggler_of(run.workers, "attention");
  run.ffn_straggler = straggler_of(run.workers, "ffn");
  out.results = std::move(col.results);
  return out;
}

}  // namespace

expected<void> ensure_preset_model(const std::string& name, const std::string& dir, const progress_fn& progress) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "config.json")) return {};
  auto config = model::preset_config(name);
  if (!config) return std::move(config).err();
  model::synthetic_options o;
  o.config = *config;
  o.seed = 1;
  // Written beside the target and renamed, so that a concurrent run never sees half a checkpoint.
  const fs::path partial = fs::path(dir).string() + ".partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::create_directories(fs::path(dir).parent_path(), ec);
  if (progress) progress("writing the '" + name + "' synthetic model to " + dir + " (once)");
  auto w = model::write_synthetic_checkpoint(o, partial.string(), true);
  if (!w) {
    fs::remove_all(partial, ec);
    return std::move(w).err();
  }
  fs::rename(partial, dir, ec);
  if (ec) {
    fs::remove_all(partial, ec);
    if (!fs::exists(fs::path(dir) / "config.json"))
      return fail(errc::io_error, "cannot move the generated model into ", dir);
  }
  return {};
}

expected<bench_report> run_bench(const bench_options& o, const progress_fn& progress) {
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  if (o.requests < 1) return fail(errc::invalid_argument, "--requests must be at least 1, got ", o.requests);
  if (o.prompt_len < 1) return fail(errc::invalid_argument, "--prompt-len must be at least 1, got ", o.prompt_len);
  if (o.max_new_tokens < 1)
    return fail(errc::invalid_argument, "--max-new-tokens must be at least 1, got ", o.max_new_tokens);
  for (std::uint32_t k : o.micro_batches)
    if (k < 1 || k > 64) return fail(errc::invalid_argument, "--micro-batches must be in [1, 64], got ", k);

  bench_report rep;
  rep.quick = o.quick;
  rep.machine.cores = std::max(1u, std::thread::hardware_concurrency());
  rep.machine.usable_cores = usable_cores();
  read_loadavg(rep.machine.load_start);
  rep.machine.loaded = rep.machine.load_start[0] >= 0.5 * rep.machine.usable_cores;

  std::optional<topology::topology> topo;
  std::string model_dir = o.model_dir;
  if (!o.topology_file.empty()) {
    auto t = topology::load_file(o.topology_file);
    if (!t) return std::move(t).err();
    topo = std::move(*t);
    if (model_dir.empty()) model_dir = topo->model.path;
  } else if (o.attention_workers < 1 || o.ffn_workers < 1) {
    return fail(errc::invalid_argument, "the shape needs at least one attention and one FFN worker, got ",
                o.attention_workers, "A", o.ffn_workers, "F");
  }
  if (model_dir.empty()) return fail(errc::invalid_argument, "no model: give --model DIR or --preset NAME");

  say("loading " + model_dir);
  auto all = engine::model_weights::load(model_dir, engine::weight_selection::all());
  if (!all) return std::move(all).err();
  const model_config& c = (*all)->config();
  if (o.prompt_len + o.max_new_tokens > c.max_position_embedding)
    return fail(errc::invalid_argument, "prompt (", o.prompt_len, ") + new tokens (", o.max_new_tokens,
                ") exceed the model's context of ", c.max_position_embedding);
  const std::int64_t blocks_per_request = (o.prompt_len + o.max_new_tokens + 15) / 16;

  layout lay;
  numerics num = o.num;
  std::vector<std::uint32_t> ks = o.micro_batches;
  std::vector<combine_mode> modes = o.modes;
  std::int64_t prefill_chunk = o.prefill_chunk;
  if (topo) {
    auto l = layout_of_topology(*topo, c);
    if (!l) return std::move(l).err();
    lay = std::move(*l);
    num.kv = topo->model.kv_dtype;
    num.dispatch = topo->model.dispatch_dtype;
    num.combine = topo->model.combine_dtype;
    if (ks.empty()) ks.push_back(static_cast<std::uint32_t>(topo->pipeline.micro_batches));
    if (modes.empty())
      modes.push_back(topo->model.combine == topology::combine_mode::throughput ? combine_mode::throughput
                                                                               : combine_mode::deterministic);
    if (prefill_chunk <= 0) prefill_chunk = topo->pipeline.prefill_chunk;
    rep.topology_file = o.topology_file;
  } else {
    lay = layout_of_shape(o, c, blocks_per_request);
  }
  if (o.combine_dtype) num.combine = *o.combine_dtype;
  if (ks.empty()) ks.push_back(3);
  if (modes.empty()) modes = {combine_mode::deterministic, combine_mode::throughput};
  if (prefill_chunk <= 0) prefill_chunk = 256;
  for (combine_mode m : modes)
    if (m == combine_mode::deterministic && !lay.whole_units)
      return fail(errc::invalid_argument, o.topology_file,
                  ": its placement slices shared/dense units, which deterministic mode cannot run; use "
                  "--combine-mode throughput");

  rep.attention_workers = static_cast<std::uint32_t>(lay.attention.size());
  rep.ffn_workers = static_cast<std::uint32_t>(lay.ffn.size());
  rep.shape = std::to_string(rep.attention_workers) + "A" + std::to_string(rep.ffn_workers) + "F";
  rep.cluster_kind =
      "in-process: attention and FFN engine threads (runtime/dataplane) over the loopback transport; no CAF "
      "control plane; per-worker timing from the engines' step reports";
  rep.placement = lay.placement;
  rep.model_name = o.model_name.empty() ? model_dir : o.model_name;
  rep.model_dir = model_dir;
  rep.layers = c.num_hidden_layers;
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    rep.dense_layers += !c.is_moe_layer(l);
    rep.moe_layers.push_back(c.is_moe_layer(l));
  }
  rep.hidden = c.hidden_size;
  rep.experts = c.moe_num_experts;
  rep.top_k = c.moe_top_k;
  rep.vocab = c.vocab_size;
  rep.requests = o.requests;
  rep.prompt_len = o.prompt_len;
  rep.max_new_tokens = o.max_new_tokens;
  rep.prefill_chunk = prefill_chunk;
  rep.num = num;
  rep.reference_threads = o.reference_threads > 0 ? o.reference_threads : static_cast<int>(rep.machine.usable_cores);
  rep.cluster_engine_threads = static_cast<int>(lay.attention.size() + lay.ffn.size());
  rep.cluster_kernel_threads = 1;

  say("loading per-role weights of " + rep.shape);
  auto attn_weights = engine::model_weights::load(model_dir, engine::weight_selection::attention_side());
  if (!attn_weights) return std::move(attn_weights).err();
  std::vector<std::shared_ptr<const engine::model_weights>> ffn_weights;
  for (std::size_t f = 0; f < lay.ffn.size(); ++f) {
    auto w = engine::model_weights::load(model_dir, selection_of(lay, f));
    if (!w) return fail(w.err().code(), "FFN worker ", lay.ffn[f], ": ", w.err().message());
    ffn_weights.push_back(std::move(*w));
  }

  const auto load = make_load(o, c);
  // Repeats run interleaved (reference, each K, reference, ...) so that a change in the machine's
  // load hits every configuration alike; the run with the median tokens/s is reported.
  const int repeats = std::max(1, o.repeats);
  rep.repeats = repeats;
  auto median_of = [](std::vector<load_figures*> v) {
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->tokens_per_s < b->tokens_per_s; });
    return v[(v.size() - 1) / 2];
  };
  for (combine_mode m : modes) {
    numerics mn = num;
    mn.mode = m;
    std::vector<reference_outcome> refs;
    std::vector<std::vector<cluster_run>> runs(ks.size());
    for (int r = 0; r < repeats; ++r) {
      const std::string of = repeats > 1 ? " (" + std::to_string(r + 1) + " of " + std::to_string(repeats) + ")" : "";
      say(std::string("reference engine, ") + to_string(m) + " mode, " + std::to_string(rep.reference_threads) +
          " kernel threads" + of);
      auto ref = run_reference(*all, load, mn, blocks_per_request, prefill_chunk, rep.reference_threads,
                               lay.attention.size());
      if (!ref) return std::move(ref).err();
      refs.push_back(std::move(*ref));
      for (std::size_t i = 0; i < ks.size(); ++i) {
        const std::uint32_t k = ks[i];
        say("cluster " + rep.shape + " K=" + std::to_string(k) + ", " + to_string(m) + " mode" + of);
        auto run = run_cluster(lay, *attn_weights, ffn_weights, load, k, mn, prefill_chunk, o.timeout_seconds);
        if (!run) return fail(run.err().code(), rep.shape, " K=", k, " ", to_string(m), ": ", run.err().message());
        // Results do not depend on timing: every repeat is checked against the first reference.
        run->run.accuracy = compare(run->results, refs.front().results, mn);
        runs[i].push_back(std::move(run->run));
      }
    }
    std::vector<load_figures*> rf_all;
    for (auto& ref : refs) rf_all.push_back(&ref.run.figures);
    const load_figures* rf = median_of(rf_all);
    reference_run chosen_ref;
    for (auto& ref : refs)
      if (&ref.run.figures == rf) chosen_ref = ref.run;
    for (auto& ref : refs) chosen_ref.tokens_per_s_repeats.push_back(ref.run.figures.tokens_per_s);
    rep.references.push_back(chosen_ref);
    for (auto& repeats_of_k : runs) {
      std::vector<load_figures*> all_f;
      for (auto& run : repeats_of_k) all_f.push_back(&run.figures);
      const load_figures* med = median_of(all_f);
      cluster_run chosen;
      accuracy_figures worst = repeats_of_k.front().accuracy;
      for (auto& run : repeats_of_k) {
        if (&run.figures == med) chosen = run;
        if (!run.accuracy.within_tolerance || run.accuracy.max_rel_l2 > worst.max_rel_l2) worst = run.accuracy;
      }
      chosen.accuracy = worst;
      for (auto& run : repeats_of_k) chosen.tokens_per_s_repeats.push_back(run.figures.tokens_per_s);
      if (rf->tokens_per_s > 0) chosen.ratio_tokens_per_s = chosen.figures.tokens_per_s / rf->tokens_per_s;
      if (rf->tpot_p50_ms > 0) chosen.ratio_tpot_p50 = chosen.figures.tpot_p50_ms / rf->tpot_p50_ms;
      rep.runs.push_back(std::move(chosen));
    }
  }
  read_loadavg(rep.machine.load_end);
  return rep;
}

}  // namespace afd::bench
