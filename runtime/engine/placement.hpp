#pragma once
/// Placement: which FFN worker computes which FFN unit of every layer (DESIGN.md, "Who computes
/// what"), in one value that every part of afd uses: the topology resolves it from a file, the
/// cluster spec carries it, the coordinator hands it out per epoch and recomputes it when workers
/// are lost or return, the benchmark and the planner read it, and each FFN worker loads the
/// weights it names. Pure data and pure functions; no I/O.
///
/// Units of a layer: every routed expert of an MoE layer (owned whole by one worker), and the
/// layer's shared expert (MoE) or dense MLP, computed whole by one worker or, in throughput
/// combine mode, as column slices that tile its inner width.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/engine/model_weights.hpp"

namespace afd::engine {

/// The FFN unit id of the shared expert (MoE layer) or the dense MLP (dense layer); routed experts
/// are 0 .. E-1.
inline constexpr std::int32_t shared_unit = -1;

/// A part of a layer's shared/dense unit: columns [begin, end) of its inner width, computed by
/// one FFN worker.
struct unit_slice {
  int worker = -1;  ///< index into the FFN workers
  std::int64_t begin = 0;
  std::int64_t end = 0;
  bool operator==(const unit_slice&) const = default;
};

/// Who computes what in one layer.
struct layer_placement {
  std::int64_t layer = 0;
  bool moe = false;
  /// MoE layers: owner (FFN worker index) of each routed expert; empty for dense layers.
  std::vector<int> expert_owner;
  /// The shared expert (MoE) or the dense MLP: slices tiling [0, unit_width) in ascending order;
  /// one slice = computed whole; empty when the unit has width 0 (no shared expert).
  std::vector<unit_slice> unit;
  std::int64_t unit_width = 0;
  bool operator==(const layer_placement&) const = default;
};

/// What one FFN worker owns, per layer, in the form its engine runs: units[layer] lists routed
/// expert ids ascending, then shared_unit when it computes the layer's shared/dense unit whole;
/// shared_slices[layer] the columns it computes when that unit is sliced (count 0: none).
struct ffn_assignment {
  struct slice {
    std::int64_t first = 0;
    std::int64_t count = 0;
    bool operator==(const slice&) const = default;
  };
  std::vector<std::vector<std::int32_t>> units;
  std::vector<slice> shared_slices;
  bool operator==(const ffn_assignment&) const = default;
};

/// The placement of a whole cluster: for every layer, the owner of every unit.
struct placement {
  std::vector<std::string> ffn_workers;  ///< names, by FFN worker index
  std::vector<layer_placement> layers;   ///< one per model layer, in order

  /// Routed experts of `layer` owned by FFN worker `worker`, ascending.
  std::vector<std::int64_t> experts_of(int worker, std::int64_t layer) const;
  /// The columns of `layer`'s shared expert / dense MLP computed by `worker`, if any.
  std::optional<unit_slice> unit_slice_of(int worker, std::int64_t layer) const;
  /// True when every unit of every layer is computed whole by one worker.
  bool units_whole() const;
  /// What FFN worker `worker` owns, as its engine takes it.
  ffn_assignment assignment_of(int worker) const;
  /// Checks the invariants: owners are valid worker indices, and each layer's unit slices tile
  /// [0, unit_width) in ascending order. errc::invalid_config naming the layer otherwise.
  expected<void> validate() const;
  bool operator==(const placement&) const = default;
};

/// The weights an FFN worker with `assignment` loads: its routed experts of each layer, and the
/// shared expert / dense MLP of exactly the layers where it owns that unit whole or a slice of it.
weight_selection ffn_weight_selection(const ffn_assignment& assignment);

/// The placement of a cluster whose live FFN workers are those with live[w] true, derived from the
/// placement its topology describes (`planned`, every worker live). Pure and deterministic, so the
/// same live set always gives the same answer and a returning worker gets back exactly what the
/// topology gives it:
///   - a unit owned by a live worker stays where it is;
///   - the routed experts and whole shared/dense units of lost workers are dealt one at a time,
///     in (lost worker, unit) order, to the live workers in turn starting at layer l mod count
///     (so each survivor loads a share);
///   - a run of lost slices of a sliced unit joins the adjacent live slice (the narrower of the
///     two neighbours, so the tensor-parallel split stays even), keeping every slice contiguous;
///     with no live slice holder the unit goes whole to one survivor; a unit left with one slice
///     is owned whole.
/// Every unit stays covered exactly once. errc::unavailable when no FFN worker is live;
/// errc::invalid_argument when live.size() differs from the number of workers.
expected<placement> placement_for_live(const placement& planned, const std::vector<bool>& live);

/// Units that change owner between two placements of the same model, for logs and status:
/// "layer 5 expert 3: f1 -> f0" lines (at most `limit`, then a count of the rest).
std::string describe_moves(const placement& from, const placement& to, std::size_t limit = 8);

}  // namespace afd::engine
