#pragma once
/// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON header
/// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
/// The reader maps a file read-only and validates the header; the writer produces such files
/// (deterministically: same input, same bytes).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"

namespace afd::model {

/// Headers larger than this are treated as corrupt (real ones are a few MB at most).
inline constexpr std::uint64_t max_safetensors_header_bytes = 100ull << 20;

/// One tensor entry of a safetensors header, validated against the file.
struct safetensors_entry {
  std::string name;
  std::string dtype_name;       ///< as written, e.g. "BF16"
  std::optional<dtype> type;    ///< set for the dtypes afd computes with (BF16, F16, F32, F8_E4M3)
  std::vector<std::int64_t> shape;
  const std::byte* data = nullptr;
  std::size_t bytes = 0;
};

/// A read-only memory map of one safetensors file and its parsed header. Move-only.
class safetensors_file {
 public:
  /// Maps `path` and validates: header length, JSON, dtypes, shapes, offsets inside the data
  /// area, byte counts equal to numel * element size, no two tensors overlapping.
  static expected<safetensors_file> open(const std::string& path);

  safetensors_file(safetensors_file&& other) noexcept;
  safetensors_file& operator=(safetensors_file&& other) noexcept;
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file();

  /// The file's path.
  const std::string& path() const { return path_; }
  /// Tensors in header order of their data offsets.
  const std::vector<safetensors_entry>& tensors() const { return tensors_; }
  /// The "__metadata__" string map (empty if absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  safetensors_file() = default;
  std::string path_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  std::vector<safetensors_entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// The safetensors name of an afd dtype ("BF16", "F16", "F32", "F8_E4M3").
const char* safetensors_dtype_name(dtype t) noexcept;
/// Element size of any safetensors dtype name (BOOL, U8 ... F64), or 0 when unknown.
std::size_t safetensors_element_size(std::string_view name) noexcept;

/// One tensor to write.
struct tensor_to_write {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::int64_t> shape;
  std::size_t bytes() const;
};

/// Writes a safetensors file: the header (keys sorted, padded with spaces to a multiple of 8),
/// then each tensor's bytes in the order given, produced by `fill(index, out)` into a buffer of
/// exactly tensors[index].bytes(). Returns the file size.
expected<std::uint64_t> write_safetensors(
    const std::string& path, const std::vector<tensor_to_write>& tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<void(std::size_t index, std::span<std::byte> out)>& fill);

}  // namespace afd::model
