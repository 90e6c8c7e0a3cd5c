#pragma once
/// Synthetic Step-3 checkpoints for tests, demos and benchmarks (`afd make-model`): real HF layout
/// (config.json + safetensors, single or sharded, optionally VL or block-FP8), weights drawn from a
/// counter-based generator so that the same seed always gives the same bytes.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"
#include "runtime/model/safetensors.hpp"

namespace afd::model {

/// Names of the built-in presets: "tiny", "small", "step3".
std::vector<std::string> preset_names();
/// The hyper-parameters of a preset; errc::invalid_argument for an unknown name.
expected<model_config> preset_config(std::string_view name);

/// What to generate.
struct synthetic_options {
  model_config config;
  dtype weight_dtype = dtype::bf16;  ///< f8_e4m3: block-FP8 matrices, BF16 norms, embedding, router, LM head
  std::uint64_t seed = 0;
  int shards = 1;                    ///< 1: model.safetensors; N > 1: N shards + index
  bool vl = false;                   ///< step3_vl config (text_config) plus one vision tensor
};

/// FP8 block size of the generated block-FP8 weights.
inline constexpr std::int64_t synthetic_fp8_block = 128;

/// The files and tensors a synthetic checkpoint consists of.
struct synthetic_plan {
  std::vector<std::string> file_names;               ///< safetensors files
  std::vector<std::vector<tensor_to_write>> files;   ///< tensors of each file, in write order
  std::uint64_t tensor_bytes = 0;                    ///< sum of all tensor bytes
};

/// Plans the tensors (names, dtypes, shapes) and their split into files; invalid_argument when
/// the options cannot be honoured (e.g. more shards than tensors).
expected<synthetic_plan> plan_synthetic(const synthetic_options& o);

/// The config.json text for the options.
std::string synthetic_config_json(const synthetic_options& o);

/// The standard deviation the generator draws tensor `name` with (norm weights: of w - 1).
double synthetic_weight_std(const model_config& c, std::string_view name);

/// Fills `out` with the f32 values of tensor `name` (before rounding to the stored dtype).
void synthetic_values(std::uint64_t seed, const model_config& c, std::string_view name, std::span<float> out);

/// Progress of a write: bytes done of total, the file being written.
using write_progress = std::function<void(const std::string& file, std::uint64_t done, std::uint64_t total)>;

/// What a write produced.
struct write_report {
  std::vector<std::string> files;  ///< every file written, config and index included
  std::uint64_t bytes = 0;         ///< total bytes written
  double seconds = 0;
};

/// Writes the checkpoint into `dir` (created if needed). A non-empty `dir` is refused with
/// errc::invalid_argument unless `force`, which replaces the checkpoint files there.
expected<write_report> write_synthetic_checkpoint(const synthetic_options& o, const std::string& dir, bool force,
                                                  const write_progress& progress = {});

}  // namespace afd::model
