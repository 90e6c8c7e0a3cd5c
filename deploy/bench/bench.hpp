#pragma once
/// `afd bench`: the cluster benchmark. Builds an AFD cluster in this process (attention and FFN
/// engine threads of runtime/dataplane/data_plane.hpp over the loopback transport, no control plane), runs
/// N concurrent requests through it with continuous batching, runs the same load through the
/// single-process reference engine, and reports throughput, TPOT/TTFT percentiles, per-worker
/// compute / network-wait time per layer with the straggler of each role, and the numerical
/// agreement with the reference in both combine modes. No CAF and no YAML in this header.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/core/numerics.hpp"

namespace afd::bench {

/// What to run.
struct bench_options {
  std::string topology_file;          ///< a topology YAML; empty: the shape below
  std::uint32_t attention_workers = 2;  ///< A (when no topology file)
  std::uint32_t ffn_workers = 2;        ///< F (when no topology file)
  bool slice_shared = false;          ///< throughput mode with a shape: shared/dense units sliced over F
  std::string model_dir;              ///< checkpoint directory (required; see ensure_preset_model)
  std::string model_name;             ///< shown in the report (preset name or directory)
  std::int64_t requests = 16;         ///< N, submitted together
  std::int64_t prompt_len = 32;       ///< tokens per prompt
  std::int64_t max_new_tokens = 32;   ///< tokens generated per request (no stop ids: exactly this many)
  std::int64_t prefill_chunk = 256;   ///< prompt tokens per step per attention worker (and reference)
  std::vector<std::uint32_t> micro_batches;  ///< K values; empty: the topology's, or 3
  std::vector<combine_mode> modes;    ///< empty: the topology's mode, else both
  numerics num;                       ///< kv / dispatch / combine dtypes without a topology (mode: `modes`)
  std::optional<dtype> combine_dtype; ///< replaces num.combine, or the topology's combine dtype
  int reference_threads = 0;          ///< kernel threads of the reference engine; 0: usable cores
  int repeats = 1;                    ///< runs of each configuration; the median by tokens/s is reported
  double timeout_seconds = 600;       ///< per cluster run
  bool quick = false;                 ///< recorded in the report only
};

/// Throughput and latency of one run of the load.
struct load_figures {
  double seconds = 0;                  ///< first submission to last token
  std::int64_t generated_tokens = 0;
  std::int64_t prompt_tokens = 0;
  double tokens_per_s = 0;             ///< generated / seconds
  double total_tokens_per_s = 0;       ///< (prompt + generated) / seconds
  double tpot_p50_ms = 0;              ///< per request: (last token - first token) / (tokens - 1)
  double tpot_p99_ms = 0;
  double itl_p50_ms = 0;               ///< per gap between consecutive tokens of a request
  double itl_p99_ms = 0;
  double ttft_p50_ms = 0;              ///< submission to first token
  double ttft_p99_ms = 0;
  double cpu_cores_used = 0;           ///< process CPU seconds / wall seconds during the run
};

/// One worker's time over the run (only steps that carried tokens are counted).
struct worker_figures {
  std::string name;                    ///< a0, a1, f0...
  std::string role;                    ///< "attention" or "ffn"
  std::int64_t steps = 0;
  double compute_seconds = 0;          ///< kernels (attention side: embedding, LM head, sampling included)
  double wait_seconds = 0;             ///< blocked on the network (on the other role)
  double total_seconds = 0;            ///< sum of step wall times
  double compute_ms_per_layer = 0;     ///< compute / (steps x layers)
  double wait_ms_per_layer = 0;        ///< wait / (steps x layers)
  double other_ms_per_layer = 0;       ///< total - compute - wait (bookkeeping, planning, copies)
  /// Per layer l, mean ms per step: compute (attention side: attention, router, combine sum; FFN
  /// side: its units) and network wait, over the same steps.
  std::vector<double> layer_compute_ms, layer_wait_ms;
};

/// The slowest worker of a role: the one with most compute per layer.
struct straggler {
  std::string name;
  double compute_ms_per_layer = 0;
  double above_mean = 0;               ///< its compute over the role's mean compute, minus 1
};

/// Agreement of a cluster run with the reference engine under the same numerics.
struct accuracy_figures {
  bool bitwise_equal = false;          ///< every request's tokens, finish reason and logits rows bitwise
  std::int64_t requests_bitwise = 0;
  std::int64_t requests_same_tokens = 0;
  std::int64_t logits_rows_compared = 0;   ///< rows compared while the sampled tokens agreed
  double max_rel_l2 = 0;               ///< worst ||logits - ref|| / ||ref|| over those rows
  double tolerance = 0;                ///< stated bound of max_rel_l2 (0: bitwise is required)
  bool within_tolerance = false;       ///< deterministic: bitwise_equal; throughput: max_rel_l2 <= tolerance
};

/// One cluster configuration.
struct cluster_run {
  std::uint32_t micro_batches = 0;
  combine_mode mode = combine_mode::deterministic;
  load_figures figures;
  double ratio_tokens_per_s = 0;       ///< cluster / reference engine (same mode), generated tokens/s
  double ratio_tpot_p50 = 0;           ///< cluster / reference engine TPOT p50
  std::vector<double> tokens_per_s_repeats;  ///< every repeat's tokens/s, in run order
  accuracy_figures accuracy;            ///< the worst over the repeats
  std::vector<worker_figures> workers;
  straggler attention_straggler, ffn_straggler;
};

/// The reference engine on the same load.
struct reference_run {
  combine_mode mode = combine_mode::deterministic;
  load_figures figures;
  std::vector<double> tokens_per_s_repeats;  ///< every repeat's tokens/s, in run order
};

/// The machine the figures were measured on.
struct machine_figures {
  unsigned cores = 0;                  ///< hardware threads
  unsigned usable_cores = 0;           ///< in this process's affinity mask
  double load_start[3] = {0, 0, 0};    ///< /proc/loadavg at start (1, 5, 15 min)
  double load_end[3] = {0, 0, 0};
  bool loaded = false;                 ///< load at start >= half the usable cores: figures are noisy
};

/// Everything `afd bench` reports.
struct bench_report {
  std::string cluster_kind;            ///< how the cluster was built
  std::string shape;                   ///< "2A2F"
  std::uint32_t attention_workers = 0, ffn_workers = 0;
  std::string topology_file;           ///< empty for --shape
  std::string placement;               ///< how units were placed
  std::string model_name, model_dir;
  std::int64_t layers = 0, dense_layers = 0, hidden = 0, experts = 0, top_k = 0, vocab = 0;
  std::vector<bool> moe_layers;        ///< per layer
  std::int64_t requests = 0, prompt_len = 0, max_new_tokens = 0, prefill_chunk = 0;
  numerics num;
  int reference_threads = 0;           ///< kernel threads of the reference engine
  int cluster_engine_threads = 0;      ///< A + F engine threads
  int cluster_kernel_threads = 1;      ///< kernel threads per engine thread
  bool quick = false;
  int repeats = 1;                     ///< runs per configuration (median reported)
  machine_figures machine;
  std::vector<reference_run> references;
  std::vector<cluster_run> runs;
};

/// Progress lines (stderr in the CLI).
using progress_fn = std::function<void(const std::string&)>;

/// Runs the benchmark. Errors: invalid_argument for bad options, the model's or topology's load
/// errors, timeout / transport errors of a cluster run.
expected<bench_report> run_bench(const bench_options& o, const progress_fn& progress = {});

/// Writes the preset `name` ("tiny", "small") into `dir` unless a checkpoint is there already.
expected<void> ensure_preset_model(const std::string& name, const std::string& dir, const progress_fn& progress = {});

/// The stated max relative L2 error of logits in throughput mode for a combine dtype.
double throughput_tolerance(dtype combine);

/// The report as text for a terminal.
std::string to_text(const bench_report& r);
/// The report as one JSON object (stable keys), without a trailing newline.
std::string to_json(const bench_report& r);

/// "deterministic" / "throughput".
const char* to_string(combine_mode m) noexcept;

}  // namespace afd::bench
