#pragma once
/// config.json beyond the plain hyper-parameters: the model type and the FP8 block layout, which
/// the checkpoint loader needs and model_config does not carry.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"

namespace afd::model {

/// Everything afd reads from a config.json.
struct checkpoint_config {
  model_config model;
  std::string model_type;  ///< "step3_text" or "step3_vl"
  /// quantization_config.weight_block_size (rows, cols), when the config names one.
  std::optional<std::pair<std::int64_t, std::int64_t>> weight_block_size;
};

/// Parses config.json text; `source` names it in errors.
expected<checkpoint_config> parse_checkpoint_config_text(std::string_view json, const std::string& source);
/// Reads and parses a config.json file.
expected<checkpoint_config> parse_checkpoint_config_file(const std::string& path);

}  // namespace afd::model
