#pragma once
/// Step-3 checkpoints in Hugging Face layout: config.json and safetensors (single file, or shards
/// with model.safetensors.index.json), memory-mapped. Every tensor is validated against the config
/// when the checkpoint is opened; every problem is an error naming the file and the tensor.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"

namespace afd::model {

/// Parses a config.json (`model_type` step3_text, or step3_vl with the text fields under
/// `text_config`). Errors name the file and the field.
expected<model_config> parse_config_file(const std::string& path);
/// The same from JSON text; `source` names it in errors.
expected<model_config> parse_config_text(std::string_view json, const std::string& source);

/// One tensor of the checkpoint, as stored.
struct tensor_info {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::int64_t> shape;
  const std::byte* data = nullptr;  ///< inside the memory map
  std::size_t bytes = 0;
  std::string file;                 ///< the safetensors file holding it
  /// For F8_E4M3 weights with block scales: the `<name>_scale_inv` tensor, and the block size
  /// (rows, cols) of the last two dimensions it applies to.
  const tensor_info* scale_inv = nullptr;
  std::int64_t block_rows = 0;
  std::int64_t block_cols = 0;
  std::int64_t numel() const;
};

/// The tensors the model needs, by name (MODEL.md), with the shapes the config implies.
std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_tensors(const model_config& c);

/// An open checkpoint: config plus memory-mapped tensors. Move-only; the maps live as long as it.
class checkpoint {
 public:
  /// Opens DIR: reads config.json, maps the safetensors file(s), validates every header, offset,
  /// dtype and shape, and checks that exactly the expected tensors are present (vision tensors of a
  /// VL checkpoint are ignored).
  static expected<checkpoint> open(const std::string& dir);

  checkpoint(checkpoint&&) noexcept;
  checkpoint& operator=(checkpoint&&) noexcept;
  ~checkpoint();

  /// The model's hyper-parameters.
  const model_config& config() const;
  /// The directory it was opened from.
  const std::string& directory() const;
  /// The tensor named `name`, or nullptr.
  const tensor_info* find(std::string_view name) const;
  /// Names of all tensors the model uses.
  std::vector<std::string> tensor_names() const;

  /// Tensor `name` converted to f32 (FP8 block scales applied). With `first`/`count`, only the
  /// sub-tensors [first, first + count) along dimension 0 (e.g. some experts of a stacked tensor,
  /// some rows of a matrix).
  expected<std::vector<float>> load_f32(std::string_view name) const;
  expected<std::vector<float>> load_f32(std::string_view name, std::int64_t first, std::int64_t count) const;

 private:
  struct impl;
  explicit checkpoint(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace afd::model
