#include "deploy/topology/cluster_spec_from_topology.hpp"

#include <filesystem>

#include "runtime/engine/layer.hpp"
#include "transport/transport.hpp"

namespace afd::client {

expected<dataplane::cluster_spec> to_cluster_spec(const topology::topology& t, const model_config& config) {
  auto resolved = topology::resolve_placement(t, config);
  if (!resolved.ok()) return resolved.to_error(errc::invalid_config);
  dataplane::cluster_spec s;
  s.name = t.cluster_name;
  s.model_path = t.model.path;
  s.model.vocab_size = config.vocab_size;
  s.model.max_position_embedding = config.max_position_embedding;
  s.model.num_layers = config.num_hidden_layers;
  s.plane.num.kv = t.model.kv_dtype;
  s.plane.num.dispatch = t.model.dispatch_dtype;
  s.plane.num.combine = t.model.combine_dtype;
  s.plane.num.mode = t.model.combine == topology::combine_mode::deterministic ? combine_mode::deterministic
                                                                              : combine_mode::throughput;
  s.plane.micro_batches = static_cast<std::uint32_t>(t.pipeline.micro_batches);
  s.plane.prefill_chunk = t.pipeline.prefill_chunk;
  s.plane.step_deadline = std::chrono::milliseconds(t.pipeline.step_deadline_ms);
  for (const auto& a : t.attention_workers) {
    dataplane::attention_worker_spec w;
    w.name = a.name;
    w.device = a.dev.to_string();
    w.kv_blocks = a.kv_blocks;
    w.block_size = a.block_size;
    w.max_batch = a.max_batch;
    s.attention_workers.push_back(std::move(w));
  }
  for (const auto& f : t.ffn_workers) s.ffn_workers.push_back({f.name, f.dev.to_string()});
  s.placement = *resolved.value;
  s.transport.type = t.transport.kind == topology::transport_kind::loopback ? dataplane::transport_settings::kind::loopback
                                                                            : dataplane::transport_settings::kind::ucx;
  s.transport.tls = t.transport.tls;
  s.transport.net_devices = t.transport.net_devices;
  if (auto m = transport::parse_error_mode(t.transport.error_mode, "transport.error_mode")) {
    s.transport.errors = *m;
  } else {
    return fail(m.err().code(), t.file, ": ", m.err().message());
  }
  s.limits.queue = t.limits.queue;
  s.limits.max_new_tokens = t.limits.max_new_tokens;
  s.limits.max_context = t.limits.max_context > 0 ? t.limits.max_context : config.max_position_embedding;
  if (auto ok = s.validate(); !ok) return fail(ok.err().code(), t.file, ": ", ok.err().message());
  return s;
}

expected<dataplane::cluster_spec> load_cluster_spec(const std::string& topology_file, const std::string& model_path) {
  auto t = topology::load_file(topology_file);
  if (!t) return t.err();
  if (!model_path.empty()) t->model.path = model_path;
  auto config = topology::read_model_config(*t);
  if (!config) return config.err();
  return to_cluster_spec(*t, *config);
}

}  // namespace afd::client
