// safetensors: read-only mmap + header validation, and a deterministic writer.
#include "runtime/model/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

namespace afd::model {
namespace {

using json = nlohmann::json;

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A non-negative JSON integer that fits in int64.
std::optional<std::int64_t> non_negative(const json& v) {
  if (!v.is_number_integer()) return std::nullopt;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  const auto s = v.get<std::int64_t>();
  if (s < 0) return std::nullopt;
  return s;
}

}  // namespace

const char* safetensors_dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::f8_e4m3: return "F8_E4M3";
  }
  return "?";
}

std::size_t safetensors_element_size(std::string_view n) noexcept {
  if (n == "BOOL" || n == "U8" || n == "I8" || n == "F8_E4M3" || n == "F8_E5M2") return 1;
  if (n == "U16" || n == "I16" || n == "F16" || n == "BF16") return 2;
  if (n == "U32" || n == "I32" || n == "F32") return 4;
  if (n == "U64" || n == "I64" || n == "F64") return 8;
  return 0;
}

static std::optional<dtype> computable_dtype(std::string_view n) {
  if (n == "F32") return dtype::f32;
  if (n == "F16") return dtype::f16;
  if (n == "BF16") return dtype::bf16;
  if (n == "F8_E4M3") return dtype::f8_e4m3;
  return std::nullopt;
}

safetensors_file::safetensors_file(safetensors_file&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)),
      tensors_(std::move(o.tensors_)),
      metadata_(std::move(o.metadata_)) {}

safetensors_file& safetensors_file::operator=(safetensors_file&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    tensors_ = std::move(o.tensors_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

safetensors_file::~safetensors_file() {
  if (map_) ::munmap(map_, map_bytes_);
}

expected<safetensors_file> safetensors_file::open(const std::string& path) {
  safetensors_file f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errc::io_error, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return fail(errc::io_error, path, ": cannot stat: ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(errc::io_error, path, ": not a regular file");
  }
  const auto file_bytes = static_cast<std::uint64_t>(st.st_size);
  if (file_bytes < 8) {
    ::close(fd);
    return fail(errc::parse_error, path, ": truncated: ", file_bytes,
                " bytes, shorter than the 8-byte header length");
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) return fail(errc::io_error, path, ": cannot mmap: ", std::strerror(map_errno));
  f.map_ = map;
  f.map_bytes_ = file_bytes;
  const auto* base = static_cast<const std::byte*>(map);

  std::uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | std::to_integer<std::uint64_t>(base[i]);
  if (header_bytes > max_safetensors_header_bytes)
    return fail(errc::parse_error, path, ": header length ", header_bytes,
                " is absurd (limit ", max_safetensors_header_bytes, "); not a safetensors file?");
  if (header_bytes > file_bytes - 8)
    return fail(errc::parse_error, path, ": truncated: header length ", header_bytes, " but only ",
                file_bytes - 8, " bytes follow the length field");
  const std::string_view header_text(reinterpret_cast<const char*>(base + 8), header_bytes);
  const std::byte* data_area = base + 8 + header_bytes;
  const std::uint64_t data_bytes = file_bytes - 8 - header_bytes;

  json header;
  try {
    header = json::parse(header_text.begin(), header_text.end());
  } catch (const std::exception& e) {
    return fail(errc::parse_error, path, ": header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) return fail(errc::parse_error, path, ": header is not a JSON object");

  struct range {
    std::uint64_t begin, end;
    std::size_t index;
  };
  std::vector<range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return fail(errc::parse_error, path, ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        f.metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    auto where = [&] { return path + ": tensor '" + name + "'"; };
    if (!v.is_object()) return fail(errc::parse_error, where(), ": header entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string())
      return fail(errc::parse_error, where(), ": header entry has no string 'dtype'");
    if (sh == v.end() || !sh->is_array())
      return fail(errc::parse_error, where(), ": header entry has no 'shape' list");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      return fail(errc::parse_error, where(), ": header entry has no 'data_offsets' [begin, end]");
    safetensors_entry e;
    e.name = name;
    e.dtype_name = dt->get<std::string>();
    const std::size_t element = safetensors_element_size(e.dtype_name);
    if (element == 0)
      return fail(errc::dtype_mismatch, where(), ": unknown dtype \"", e.dtype_name, "\"");
    e.type = computable_dtype(e.dtype_name);
    std::uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      auto n = non_negative(d);
      if (!n) return fail(errc::parse_error, where(), ": shape ", sh->dump(), " has a bad dimension");
      e.shape.push_back(*n);
      overflow |= __builtin_mul_overflow(numel, static_cast<std::uint64_t>(*n), &numel);
    }
    std::uint64_t expect_bytes = 0;
    overflow |= __builtin_mul_overflow(numel, static_cast<std::uint64_t>(element), &expect_bytes);
    if (overflow) return fail(errc::out_of_range, where(), ": shape ", shape_string(e.shape), " is too large");
    auto b = non_negative((*off)[0]);
    auto en = non_negative((*off)[1]);
    if (!b || !en || *b > *en)
      return fail(errc::out_of_range, where(), ": data_offsets ", off->dump(), " are not [begin <= end]");
    const auto begin = static_cast<std::uint64_t>(*b), end = static_cast<std::uint64_t>(*en);
    if (end > data_bytes)
      return fail(errc::out_of_range, where(), ": data_offsets [", begin, ", ", end,
                  "] lie outside the data area of ", data_bytes, " bytes (file truncated?)");
    if (end - begin != expect_bytes)
      return fail(errc::parse_error, where(), ": data_offsets [", begin, ", ", end, "] hold ", end - begin,
                  " bytes, but shape ", shape_string(e.shape), " of ", e.dtype_name, " needs ", expect_bytes);
    e.data = data_area + begin;
    e.bytes = static_cast<std::size_t>(expect_bytes);
    ranges.push_back({begin, end, f.tensors_.size()});
    f.tensors_.push_back(std::move(e));
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const range& a, const range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  // Compare each tensor with the furthest-reaching one before it; empty tensors occupy no bytes.
  std::size_t reach = ranges.size();
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const range& cur = ranges[i];
    if (cur.end == cur.begin) continue;
    if (reach != ranges.size() && cur.begin < ranges[reach].end) {
      const range& prev = ranges[reach];
      return fail(errc::out_of_range, path, ": tensor '", f.tensors_[cur.index].name, "' data_offsets [",
                  cur.begin, ", ", cur.end, "] overlap tensor '", f.tensors_[prev.index].name, "' [",
                  prev.begin, ", ", prev.end, "]");
    }
    if (reach == ranges.size() || cur.end > ranges[reach].end) reach = i;
  }
  std::vector<safetensors_entry> ordered;
  ordered.reserve(f.tensors_.size());
  for (const range& r : ranges) ordered.push_back(std::move(f.tensors_[r.index]));
  f.tensors_ = std::move(ordered);
  return f;
}

std::size_t tensor_to_write::bytes() const {
  std::size_t n = size_of(type);
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

expected<std::uint64_t> write_safetensors(
    const std::string& path, const std::vector<tensor_to_write>& tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<void(std::size_t, std::span<std::byte>)>& fill) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const std::uint64_t end = offset + t.bytes();
    header[t.name] = {{"dtype", safetensors_dtype_name(t.type)}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data area 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return fail(errc::io_error, path, ": cannot create: ", std::strerror(errno));
  unsigned char length[8];
  std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::vector<std::byte> buffer;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    buffer.assign(tensors[i].bytes(), std::byte{0});
    fill(i, buffer);
    out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
    if (!out) return fail(errc::io_error, path, ": write failed at tensor '", tensors[i].name, "'");
  }
  out.close();
  if (!out) return fail(errc::io_error, path, ": write failed");
  return 8 + text.size() + offset;
}

}  // namespace afd::model
