// Reads the model's config.json through runtime/model.
#include <filesystem>

#include "deploy/topology/topology.hpp"
#include "runtime/model/checkpoint.hpp"

namespace afd::topology {

expected<model_config> read_model_config(const topology& t) {
  const std::string config = (std::filesystem::path(t.model.path) / "config.json").string();
  std::error_code ec;
  if (t.model.path.empty() || !std::filesystem::exists(config, ec))
    return fail(errc::io_error, "no model config at ", config);
  return model::parse_config_file(config);
}

}  // namespace afd::topology
