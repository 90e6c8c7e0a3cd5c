#include <algorithm>
#include <thread>

#include "runtime/dataplane/data_plane_internal.hpp"
#include "kernels/views.hpp"

namespace afd::dataplane {

void engine_progress::record(const step_timing& t) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (layer_compute_.size() < t.layer_compute_seconds.size()) layer_compute_.resize(t.layer_compute_seconds.size());
    if (layer_wait_.size() < t.layer_wait_seconds.size()) layer_wait_.resize(t.layer_wait_seconds.size());
    for (std::size_t l = 0; l < t.layer_compute_seconds.size(); ++l) layer_compute_[l] += t.layer_compute_seconds[l];
    for (std::size_t l = 0; l < t.layer_wait_seconds.size(); ++l) layer_wait_[l] += t.layer_wait_seconds[l];
  }
  compute_ns.fetch_add(static_cast<std::uint64_t>(t.compute_seconds * 1e9), std::memory_order_relaxed);
  wait_ns.fetch_add(static_cast<std::uint64_t>(t.wait_seconds * 1e9), std::memory_order_relaxed);
  steps.fetch_add(1, std::memory_order_relaxed);
}

void engine_progress::layers(std::vector<double>& compute, std::vector<double>& wait) const {
  std::lock_guard<std::mutex> lock(mutex_);
  compute = layer_compute_;
  wait = layer_wait_;
}

}  // namespace afd::dataplane

namespace afd::dataplane::detail {

expected<void> check_plane_options(const data_plane_options& o, const model_config& c) {
  const numerics& n = o.num;
  // The wire carries exactly these payloads: fp8 codes + scales, bf16 bits or f32 A -> F, bf16
  // bits or f32 F -> A. Anything else would need a rounding the reference engine does not do.
  if (n.dispatch != dtype::f8_e4m3 && n.dispatch != dtype::bf16 && n.dispatch != dtype::f32)
    return fail(errc::unsupported, "data plane: numerics.dispatch must be f8_e4m3, bf16 or f32, got ",
                to_string(n.dispatch));
  if (n.combine != dtype::bf16 && n.combine != dtype::f32)
    return fail(errc::unsupported, "data plane: numerics.combine must be bf16 or f32, got ", to_string(n.combine));
  if (n.kv != dtype::f32 && n.kv != dtype::bf16 && n.kv != dtype::f8_e4m3)
    return fail(errc::invalid_argument, "data plane: KV cache dtype must be f32, bf16 or fp8, got ", to_string(n.kv));
  if (o.micro_batches < 1 || o.micro_batches > 0xFFFF)
    return fail(errc::invalid_argument, "data plane: micro_batches must be in [1, 65535], got ", o.micro_batches);
  if (o.max_tokens_per_micro_batch < 1)
    return fail(errc::invalid_argument, "data plane: max_tokens_per_micro_batch must be at least 1");
  if (o.prefill_chunk < 1)
    return fail(errc::invalid_argument, "data plane: prefill_chunk must be positive, got ", o.prefill_chunk);
  if (o.step_deadline.count() <= 0)
    return fail(errc::invalid_argument, "data plane: step_deadline must be positive");
  if (o.idle_wait.count() < 0) return fail(errc::invalid_argument, "data plane: idle_wait must be >= 0");
  if (c.num_hidden_layers < 1 || c.num_hidden_layers > 0xFFFF)
    return fail(errc::invalid_argument, "data plane: the model has ", c.num_hidden_layers,
                " layers; the wire header holds 1 to 65535");
  if (c.moe_top_k > 0xFFFF) return fail(errc::invalid_argument, "data plane: moe_top_k too large for the wire");
  return {};
}

transport::exchange_shape exchange_shape_of(const data_plane_options& o, const model_config& c) {
  transport::exchange_shape s;
  s.hidden = static_cast<std::uint32_t>(c.hidden_size);
  bool any_moe = false;
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) any_moe = any_moe || c.is_moe_layer(l);
  s.top_k = any_moe ? static_cast<std::uint32_t>(c.moe_top_k) : 0;
  s.max_tokens = o.max_tokens_per_micro_batch;
  s.micro_batches = o.micro_batches;
  s.dispatch_dtype = o.num.dispatch;
  s.scale_block = static_cast<std::uint32_t>(kernels::fp8_activation_block);
  s.combine_dtype = o.num.combine;
  s.mode = o.num.mode;  // transport::combine_mode is afd::combine_mode
  return s;
}

void step_faults(const data_plane_options& o, std::uint64_t step) {
  if (!o.faults || !o.faults->armed()) [[likely]]
    return;
  std::shared_ptr<faults::fault_plan> plan;
  const faults::data_context ctx{step, -1, 0, {}};
  const faults::decision d =
      o.faults->decide({faults::fault_kind::hang_engine, faults::fault_kind::slow_worker}, ctx, plan,
                       [](const faults::fault_rule& r) { return !r.per_layer; });
  if (!d) return;
  std::this_thread::sleep_for(d.rule->kind == faults::fault_kind::hang_engine ? d.rule->duration : d.rule->delay);
}

void layer_faults(const data_plane_options& o, std::uint64_t step, std::int64_t layer) {
  if (!o.faults || !o.faults->armed()) [[likely]]
    return;
  std::shared_ptr<faults::fault_plan> plan;
  const faults::data_context ctx{step, layer, 0, {}};
  const faults::decision d = o.faults->decide({faults::fault_kind::slow_worker}, ctx, plan,
                                              [](const faults::fault_rule& r) { return r.per_layer; });
  if (d) std::this_thread::sleep_for(d.rule->delay);
}

numerics unrounded_dispatch(numerics n) {
  n.dispatch = dtype::f32;
  return n;
}

}  // namespace afd::dataplane::detail
