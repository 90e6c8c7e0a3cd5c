#pragma once
/// The AFD deployment planner: predicts the step time of a layout (attention and FFN instances,
/// GPUs each, micro-batches, batch) with a roofline per stage, and searches for the layout that
/// meets a TPOT target with the most tokens/s per GPU. Also checks a topology file's layout.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "deploy/plan/architecture.hpp"
#include "deploy/plan/hardware.hpp"
#include "deploy/topology/topology.hpp"
#include "runtime/core/error.hpp"

namespace afd::plan {

/// The planner's parameters; every utilisation is a fraction of the hardware's peak.
struct deploy_assumptions {
  double tpot_s = 0.050;               ///< target time per output token
  std::int64_t context = 4096;         ///< every request's context length
  int micro_batches = 3;               ///< K; the pipeline has 3 stages (attention, network, FFN)
  double attention_bw_util = 0.8;      ///< KV and weight reads on attention GPUs
  double attention_mfu = 0.6;          ///< attention core and projections
  double ffn_mfu = 0.6;                ///< expert and dense MLP matmuls
  double ffn_bw_util = 0.8;            ///< expert weight reads
  double network_util = 0.7;           ///< of each GPU's share of its server's network
  double network_latency_s = 5e-6;     ///< per transfer (one A->F, one F->A per layer)
  double memory_util = 0.9;            ///< usable fraction of device memory
  double kv_bytes_per_value = 1.0;     ///< 8-bit KV cache
  bool deterministic_combine = false;  ///< F->A returns every unit whole (DESIGN.md) instead of one partial sum per FFN instance
  int max_gpus = 64;                   ///< the search's bound on attention + FFN GPUs
  double ffn_imbalance = 1.0;          ///< busiest FFN GPU's load over the mean
  // Constraints on the search (0 = free).
  int attention_instances = 0;
  int attention_gpus_per_instance = 0;
  int ffn_instances = 0;
  int ffn_gpus_per_instance = 0;
  std::int64_t micro_batch_tokens = 0;  ///< fixed: the layout is evaluated at this batch, feasible or not
};

/// Who runs what: A attention instances of gA GPUs, F FFN instances of gF GPUs.
struct deploy_layout {
  int attention_instances = 1;
  int attention_gpus_per_instance = 1;
  int ffn_instances = 1;
  int ffn_gpus_per_instance = 1;
  int micro_batches = 3;
  std::int64_t tokens_per_attention_gpu = 1;  ///< per micro-batch
  int attention_gpus() const { return attention_instances * attention_gpus_per_instance; }
  int ffn_gpus() const { return ffn_instances * ffn_gpus_per_instance; }
  int total_gpus() const { return attention_gpus() + ffn_gpus(); }
  /// Tokens of one micro-batch, over all attention GPUs.
  std::int64_t micro_batch_tokens() const { return tokens_per_attention_gpu * attention_gpus(); }
  /// Sequences decoded at once (all micro-batches).
  std::int64_t total_batch() const { return micro_batch_tokens() * micro_batches; }
};

/// Predicted times of one micro-batch through one layer, in seconds.
struct stage_times {
  double attention_kv = 0;      ///< KV read
  double attention_core = 0;    ///< max(KV read, attention FLOPs)
  double attention_linear = 0;  ///< projections + router: max(FLOPs, weight read)
  double attention = 0;         ///< core + linear
  double a2f = 0;
  double f2a = 0;
  double communication = 0;     ///< a2f + f2a
  double ffn_moe = 0;           ///< one MoE layer on the FFN side
  double ffn_dense = 0;         ///< one dense layer on the FFN side
  double ffn = 0;               ///< the larger of the two present
  double lm_head = 0;           ///< final norm + LM head, per micro-batch, once per step
};

/// A layout's prediction.
struct deploy_evaluation {
  deploy_layout layout;
  double layer_budget_s = 0;  ///< TPOT / (layers x micro-batches): each stage's share of one layer
  stage_times times;
  double tpot_s = 0;
  double tokens_per_s_per_gpu = 0;
  double dollars_per_million_tokens = 0;  ///< GPU-hours of the layout at the hardware's prices
  double attention_memory_bytes = 0;  ///< per attention GPU: weights + KV
  double ffn_memory_bytes = 0;        ///< per FFN GPU: weights
  double attention_memory_capacity = 0;
  double ffn_memory_capacity = 0;
  bool meets_tpot = false;
  bool fits_memory = false;
  /// What breaks the budget, one sentence each ("attention 312 us > budget 273 us").
  std::vector<std::string> violations;
  bool feasible() const { return meets_tpot && fits_memory; }
};

/// Predicts `l` for `a` on attention hardware `ha` and FFN hardware `hf`.
deploy_evaluation evaluate_layout(const architecture& a, const hardware& ha, const hardware& hf,
                                  const deploy_layout& l, const deploy_assumptions& s);

/// The largest tokens per attention GPU (per micro-batch) with which `l` is feasible, or 0.
std::int64_t max_feasible_tokens(const architecture& a, const hardware& ha, const hardware& hf, deploy_layout l,
                                 const deploy_assumptions& s);

/// The search's result: the best layout and runners-up (best first).
struct deploy_plan {
  architecture model;
  hardware attention_hardware;
  hardware ffn_hardware;
  deploy_assumptions assumptions;
  std::vector<deploy_evaluation> layouts;  ///< empty when none is feasible
};

/// Searches A, gA, F, gF (gA, gF powers of two up to a server; total GPUs <= max_gpus; the
/// assumptions' constraints honoured) and the batch; keeps the `keep` best by tokens/s/GPU (ties:
/// fewer GPUs). With a fixed micro-batch size, layouts are kept even when they miss the target.
deploy_plan search_layouts(const architecture& a, const hardware& ha, const hardware& hf, const deploy_assumptions& s,
                           std::size_t keep = 5);

/// What `--topology` takes from a topology file.
struct topology_counts {
  int attention_workers = 0;
  int ffn_workers = 0;
  int micro_batches = 3;
  std::vector<std::int64_t> max_batch;  ///< per attention worker; empty: the largest feasible batch
  std::optional<double> kv_bytes_per_value;        ///< model.kv_dtype
  std::optional<bool> deterministic_combine;       ///< model.combine_mode
};

/// The counts of a topology (deploy/topology parses and validates it).
topology_counts counts_of(const topology::topology& t);
/// Reads and validates a topology file (every problem as FILE:LINE:COLUMN) and takes its counts.
expected<topology_counts> read_topology_file(const std::string& path);

/// The layout a topology describes: one GPU per worker. With max_batch given, the busiest attention
/// worker's batch split into micro-batches; otherwise the largest feasible batch (at least 1).
deploy_evaluation check_topology(const architecture& a, const hardware& ha, const hardware& hf,
                                 const topology_counts& t, deploy_assumptions s);

}  // namespace afd::plan
