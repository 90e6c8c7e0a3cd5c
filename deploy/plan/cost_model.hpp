#pragma once
/// The decoding cost model of the Step-3 system report (sections 4 and 5): per-token attention,
/// linear and FFN work, their dollar cost on each hardware kind, the cheapest AFD pairing, and the
/// minimum MoE sparsity a network allows.

#include <cstdint>
#include <string>
#include <vector>

#include "deploy/plan/architecture.hpp"
#include "deploy/plan/hardware.hpp"

namespace afd::plan {

/// Work of one decoded token at one context length, summed over all layers.
struct token_work {
  std::int64_t context = 0;
  double kv_bytes = 0;         ///< KV cache read
  double attention_flops = 0;  ///< attention core, projections excluded
  double linear_flops = 0;     ///< 2 x attention projection parameters
  double ffn_flops = 0;        ///< 2 x activated FFN parameters
  /// attention_flops / kv_bytes.
  double intensity() const { return kv_bytes > 0 ? attention_flops / kv_bytes : 0; }
};

/// Work per token of `a` at `context`, with the KV cache at `kv_bytes_per_value` (1 = 8-bit).
token_work compute_token_work(const architecture& a, std::int64_t context, double kv_bytes_per_value = 1.0);

/// Dollar cost of one token's work on one hardware kind.
struct hardware_cost {
  std::string hardware;
  double attention_core_dollars = 0;  ///< max(attention FLOPs x $/FLOP, KV bytes x $/byte)
  double linear_dollars = 0;          ///< linear FLOPs x $/FLOP
  double ffn_dollars = 0;             ///< FFN FLOPs x $/FLOP
  bool attention_memory_bound = false;  ///< KV term is the larger one
  /// (attention core + linear) per million tokens.
  double attention_per_million() const { return 1e6 * (attention_core_dollars + linear_dollars); }
  /// FFN per million tokens.
  double ffn_per_million() const { return 1e6 * ffn_dollars; }
  /// Attention and FFN on this hardware alone, per million tokens.
  double total_per_million() const { return attention_per_million() + ffn_per_million(); }
};

/// Cost of `w` on `h`.
hardware_cost compute_hardware_cost(const token_work& w, const hardware& h);

/// The cheapest attention hardware with the cheapest FFN hardware.
struct afd_pairing {
  std::string attention_hardware;
  std::string ffn_hardware;
  double attention_per_million = 0;
  double ffn_per_million = 0;
  double total_per_million() const { return attention_per_million + ffn_per_million; }
};

/// Figures of one context length.
struct cost_at_context {
  token_work work;
  std::vector<hardware_cost> costs;  ///< in the order of the hardware list
  afd_pairing best;
};

/// `afd plan cost`: the model, the hardware and a row per context.
struct cost_report {
  architecture model;
  std::vector<hardware> hardware_kinds;
  double kv_bytes_per_value = 1.0;
  std::vector<cost_at_context> contexts;
};

/// Computes the report; `hw` must not be empty.
cost_report compute_cost_report(const architecture& a, const std::vector<hardware>& hw,
                                const std::vector<std::int64_t>& contexts, double kv_bytes_per_value = 1.0);

/// Assumptions of the minimum-sparsity bound.
struct sparsity_assumptions {
  double tpot_s = 0.050;      ///< target time per output token
  int stages = 3;             ///< pipeline stages (attention, communication, FFN)
  double bytes_per_hidden = 3;  ///< A->F at 8 bits plus F->A at 16 bits, per hidden unit and token
};

/// The smallest MoE sparsity with which an FFN server is compute-bound while a layer's A<->F
/// traffic fits its share of a stage: S >= (FLOP/s / (2 x memory B/s)) x bytes_per_hidden x hidden
/// x layers / (network B/s of one server x TPOT / stages). With the defaults this is the report's
/// hidden x FLOP/s x L / (net x BW x 11.1 ms). `network_override` (> 0) replaces h's network.
double minimum_sparsity(const hardware& h, std::int64_t hidden, std::int64_t layers,
                        const sparsity_assumptions& s = {}, double network_override = 0);

/// One row of `afd plan sparsity`.
struct sparsity_row {
  std::string hardware;
  double network_bytes = 0;  ///< per server
  std::string model;
  double minimum = 0;
  double model_sparsity = 0;
  /// True when the model is at least as dense in experts as the bound asks (FFN can be compute-bound).
  bool model_meets() const { return model_sparsity >= minimum; }
};

/// Rows for every hardware x network x model.
std::vector<sparsity_row> compute_sparsity(const std::vector<hardware>& hw, const std::vector<architecture>& models,
                                           const sparsity_assumptions& s, const std::vector<double>& network_overrides);

}  // namespace afd::plan
