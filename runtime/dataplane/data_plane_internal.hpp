#pragma once
/// Pieces shared by the attention and FFN engine threads (no CAF): option checks, the exchange
/// shape both sides must agree on, and waits cut into short slices so that stop() is prompt
/// while the total wait stays bounded by the step deadline.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>

#include "runtime/dataplane/data_plane.hpp"
#include "runtime/core/model_config.hpp"
#include "transport/exchange.hpp"

namespace afd::dataplane::detail {

/// Longest single wait before the stop flag is looked at again.
inline constexpr std::chrono::milliseconds wait_slice{10};

/// Checks the settings both roles share against the model and what the wire can carry.
expected<void> check_plane_options(const data_plane_options& o, const model_config& c);

/// The dispatch/combine shape of a run: identical on every worker of the cluster.
transport::exchange_shape exchange_shape_of(const data_plane_options& o, const model_config& c);

/// Numerics with dispatch rounding turned off: attention_block then leaves x_f unrounded, and the
/// wire rounds it (fp8 codes + scales, or bf16 bits) exactly as round_activations would.
numerics unrounded_dispatch(numerics n);

/// Outcome of a sliced wait.
enum class wait_outcome { done, failed, timed_out, stopped };

/// Repeats `attempt(until)` (which returns an op_status) with `until` at most wait_slice ahead
/// until it returns done or error, `stop` is set, or `limit` passes.
template <class Attempt>
wait_outcome sliced_wait(Attempt&& attempt, const std::atomic<bool>& stop, transport::deadline limit) {
  for (;;) {
    if (stop.load(std::memory_order_relaxed)) return wait_outcome::stopped;
    const auto now = transport::clock::now();
    const auto until = std::min(limit, now + wait_slice);
    const transport::op_status s = attempt(until);
    if (s == transport::op_status::done) return wait_outcome::done;
    if (s == transport::op_status::error) return wait_outcome::failed;
    if (transport::clock::now() >= limit) return wait_outcome::timed_out;
  }
}

/// The engines' wait: sliced_wait under the step deadline, published as the waiting phase. Each
/// time the deadline passes, `overdue()` reports the peer waited on (a suspect, not a failure: a
/// slow peer is a straggler, and only the coordinator, which sees every worker's progress, decides
/// that one has failed) and the wait goes on. Returns done, failed or stopped.
template <class Attempt, class Overdue>
wait_outcome patient_wait(Attempt&& attempt, const std::atomic<bool>& stop, std::chrono::milliseconds deadline,
                          engine_progress* progress, Overdue&& overdue) {
  if (progress) progress->enter(engine_progress::waiting);
  wait_outcome o;
  for (;;) {
    o = sliced_wait(attempt, stop, transport::after(deadline));
    if (o != wait_outcome::timed_out) break;
    overdue();
  }
  if (progress) progress->enter(engine_progress::computing);
  return o;
}

/// The fault points of a step boundary: hang_engine blocks the engine thread for the rule's
/// duration (as a stuck kernel would: stop() cannot cut it short); slow_worker adds its delay
/// (per step here; per layer through layer_faults). Inert unless a rule is armed.
void step_faults(const data_plane_options& o, std::uint64_t step);
/// slow_worker's per-layer delay.
void layer_faults(const data_plane_options& o, std::uint64_t step, std::int64_t layer);

/// Reads vector `index` of a combine payload (bf16 bits or f32) into out[H] as f32.
inline void read_vector(const transport::combine_view& v, std::size_t index, std::size_t H, float* out) {
  if (v.vectors_f32 != nullptr) {
    std::copy(v.vectors_f32 + index * H, v.vectors_f32 + (index + 1) * H, out);
    return;
  }
  for (std::size_t j = 0; j < H; ++j) out[j] = bf16_to_f32(v.vectors[index * H + j]);
}

/// Writes row[H] (already rounded to the combine dtype) as vector `index` of a combine payload.
inline void write_vector(const transport::combine_view& v, std::size_t index, std::size_t H, const float* row) {
  if (v.vectors_f32 != nullptr) {
    std::copy(row, row + H, v.vectors_f32 + index * H);
    return;
  }
  for (std::size_t j = 0; j < H; ++j) v.vectors[index * H + j] = f32_to_bf16(row[j]);
}

/// Seconds between two steady-clock points.
inline double seconds(transport::clock::time_point a, transport::clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Zeroes a step's timing, per-layer entries sized for `layers` (their buffers are kept).
inline void reset_timing(step_timing& t, std::int64_t layers) {
  t.compute_seconds = t.wait_seconds = t.total_seconds = 0;
  t.layer_compute_seconds.assign(static_cast<std::size_t>(layers), 0.0);
  t.layer_wait_seconds.assign(static_cast<std::size_t>(layers), 0.0);
}

/// Adds `s` seconds to a step total and to layer `layer`'s entry of the per-layer split.
inline void add_time(double& total, std::vector<double>& per_layer, std::int64_t layer, double s) {
  total += s;
  per_layer[static_cast<std::size_t>(layer)] += s;
}

/// True when layer `layer` of the model has a shared expert / dense MLP unit.
inline bool has_shared_unit(const model_config& c, std::int64_t layer) {
  return !c.is_moe_layer(layer) || c.share_expert_dim > 0;
}

}  // namespace afd::dataplane::detail
