// Reads the model's config.json through runtime/model when this build has it (AFD_TOPOLOGY_HAS_MODEL);
// without it, topologies still parse and only the checks that need the model are skipped.
#include <filesystem>

#include "deploy/topology/topology.hpp"
#ifdef AFD_TOPOLOGY_HAS_MODEL
#include "runtime/model/checkpoint.hpp"
#endif

namespace afd::topology {

expected<model_config> read_model_config(const topology& t) {
  const std::string config = (std::filesystem::path(t.model.path) / "config.json").string();
  std::error_code ec;
  if (t.model.path.empty() || !std::filesystem::exists(config, ec))
    return fail(errc::io_error, "no model config at ", config);
#ifdef AFD_TOPOLOGY_HAS_MODEL
  return model::parse_config_file(config);
#else
  return fail(errc::unsupported, "this build has no checkpoint reader (runtime/model): cannot read ", config);
#endif
}

}  // namespace afd::topology
