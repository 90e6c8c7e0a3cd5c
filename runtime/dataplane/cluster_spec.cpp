// The plain functions of cluster_spec (no CAF).

#include "runtime/dataplane/cluster_spec.hpp"

#include <set>

namespace afd::dataplane {

const char* to_string(worker_role r) noexcept { return r == worker_role::attention ? "attention" : "ffn"; }

int cluster_spec::attention_index(const std::string& n) const {
  for (std::size_t i = 0; i < attention_workers.size(); ++i)
    if (attention_workers[i].name == n) return static_cast<int>(i);
  return -1;
}

int cluster_spec::ffn_index(const std::string& n) const {
  for (std::size_t i = 0; i < ffn_workers.size(); ++i)
    if (ffn_workers[i].name == n) return static_cast<int>(i);
  return -1;
}

std::uint16_t cluster_spec::rank_of(worker_role role, int index) const {
  return static_cast<std::uint16_t>(role == worker_role::attention ? index
                                                                    : static_cast<int>(attention_workers.size()) + index);
}

expected<void> cluster_spec::validate() const {
  if (attention_workers.empty() || ffn_workers.empty())
    return fail(errc::invalid_config, "cluster '", name, "' needs at least one attention and one FFN worker (has ",
                attention_workers.size(), " and ", ffn_workers.size(), ")");
  std::set<std::string> names;
  for (const auto& a : attention_workers)
    if (!names.insert(a.name).second) return fail(errc::invalid_config, "worker name '", a.name, "' is used twice");
  for (const auto& f : ffn_workers)
    if (!names.insert(f.name).second) return fail(errc::invalid_config, "worker name '", f.name, "' is used twice");
  for (const auto& a : attention_workers)
    if (a.kv_blocks < 1 || a.block_size < 1 || a.max_batch < 1)
      return fail(errc::invalid_config, "attention worker '", a.name, "': kv_blocks, block_size and max_batch must be >= 1");
  if (static_cast<std::int64_t>(placement.layers.size()) != model.num_layers)
    return fail(errc::invalid_config, "the placement has ", placement.layers.size(), " layers; the model has ",
                model.num_layers);
  if (placement.ffn_workers.size() != ffn_workers.size())
    return fail(errc::invalid_config, "the placement names ", placement.ffn_workers.size(), " FFN workers; the cluster has ",
                ffn_workers.size());
  for (std::size_t f = 0; f < ffn_workers.size(); ++f)
    if (placement.ffn_workers[f] != ffn_workers[f].name)
      return fail(errc::invalid_config, "the placement's FFN worker ", f, " is '", placement.ffn_workers[f],
                  "', the cluster's is '", ffn_workers[f].name, "'");
  if (auto ok = placement.validate(); !ok) return ok;
  if (plane.micro_batches < 1) return fail(errc::invalid_config, "micro_batches must be >= 1");
  if (limits.queue < 0) return fail(errc::invalid_config, "limits.queue must be >= 0");
  return {};
}

}  // namespace afd::dataplane
