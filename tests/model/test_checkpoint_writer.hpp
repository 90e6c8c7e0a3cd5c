#pragma once
// An independent safetensors writer and float decoders for the model tests. Written from the
// format description (8-byte little-endian header length, JSON header, data) and the IEEE/OCP
// bit layouts; it shares no code with runtime/model, so the loader is checked against it.

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace afd_test {

namespace fs = std::filesystem;

/// One tensor as raw bytes, with optional header-level damage.
struct raw_tensor {
  std::string name;
  std::string dtype;  // "BF16", "F16", "F32", "F8_E4M3" or anything, to test rejection
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> offsets;  // overrides the computed offsets
  std::vector<double> values;  // what the bytes mean, in float64 (the oracle); empty for raw data
};

inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

/// The header JSON, hand-built; data offsets follow the order given unless overridden.
inline std::string header_text(const std::vector<raw_tensor>& ts, std::uint64_t* data_bytes = nullptr) {
  std::string h = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::uint64_t off = 0;
  for (const auto& t : ts) {
    std::uint64_t b = off, e = off + t.bytes.size();
    if (t.offsets) std::tie(b, e) = *t.offsets;
    h += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":" + shape_text(t.shape) +
         ",\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
    off += t.bytes.size();
  }
  if (data_bytes) *data_bytes = off;
  return h + "}";
}

/// Writes a safetensors file; `header_override` replaces the JSON, `length_override` the length field.
inline void write_safetensors(const fs::path& path, const std::vector<raw_tensor>& ts,
                              std::optional<std::string> header_override = std::nullopt,
                              std::optional<std::uint64_t> length_override = std::nullopt) {
  std::string h = header_override ? *header_override : header_text(ts);
  const std::uint64_t n = length_override ? *length_override : h.size();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& t : ts) out.write(reinterpret_cast<const char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
}

/// Cuts `n` bytes off the end of a file.
inline void truncate_by(const fs::path& path, std::uintmax_t n) { fs::resize_file(path, fs::file_size(path) - n); }

// ---- decoders (float64 oracles) ----

inline double decode_bf16(std::uint16_t b) {
  const int sign = b >> 15, e = (b >> 7) & 0xff, m = b & 0x7f;
  const double v = e == 0 ? std::ldexp(m / 128.0, -126) : std::ldexp(1.0 + m / 128.0, e - 127);
  return sign ? -v : v;
}
inline double decode_f16(std::uint16_t b) {
  const int sign = b >> 15, e = (b >> 10) & 0x1f, m = b & 0x3ff;
  const double v = e == 0 ? std::ldexp(m / 1024.0, -14) : std::ldexp(1.0 + m / 1024.0, e - 15);
  return sign ? -v : v;
}
// OCP E4M3 "fn": bias 7, no infinities, S.1111.111 is NaN.
inline double decode_e4m3(std::uint8_t b) {
  const int sign = b >> 7, e = (b >> 3) & 0xf, m = b & 7;
  const double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return sign ? -v : v;
}

/// Random finite values of `dtype` with `n` elements; bytes and their float64 meaning.
inline raw_tensor random_tensor(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape,
                                std::mt19937_64& rng) {
  raw_tensor t{name, dtype, std::move(shape), {}, std::nullopt, {}};
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  for (std::int64_t i = 0; i < n; ++i) {
    if (dtype == "BF16" || dtype == "F16") {
      std::uint16_t b;
      do {
        b = static_cast<std::uint16_t>(rng());
      } while (dtype == "BF16" ? ((b >> 7) & 0xff) == 0xff : ((b >> 10) & 0x1f) == 0x1f);  // no inf/NaN
      t.bytes.push_back(static_cast<std::uint8_t>(b & 0xff));
      t.bytes.push_back(static_cast<std::uint8_t>(b >> 8));
      t.values.push_back(dtype == "BF16" ? decode_bf16(b) : decode_f16(b));
    } else if (dtype == "F32") {
      const double v = std::ldexp(static_cast<double>(static_cast<std::int32_t>(rng())), -31) * 3.0;
      const float f = static_cast<float>(v);
      std::uint8_t raw[4];
      std::memcpy(raw, &f, 4);
      t.bytes.insert(t.bytes.end(), raw, raw + 4);
      t.values.push_back(static_cast<double>(f));
    } else if (dtype == "F8_E4M3") {
      std::uint8_t b;
      do {
        b = static_cast<std::uint8_t>(rng());
      } while ((b & 0x7f) == 0x7f);
      t.bytes.push_back(b);
      t.values.push_back(decode_e4m3(b));
    }
  }
  return t;
}

/// Positive f32 scales that are exact in BF16 too (8 significant bits), so either dtype stores them.
inline raw_tensor random_scales(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape,
                                std::mt19937_64& rng) {
  raw_tensor t{name, dtype, std::move(shape), {}, std::nullopt, {}};
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  for (std::int64_t i = 0; i < n; ++i) {
    const double v = std::ldexp(128.0 + static_cast<double>(rng() % 128), -7 - static_cast<int>(rng() % 12));
    const float f = static_cast<float>(v);
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    if (dtype == "F32") {
      for (int k = 0; k < 4; ++k) t.bytes.push_back(static_cast<std::uint8_t>(u >> (8 * k)));
    } else {  // BF16: the top half, exact by construction
      t.bytes.push_back(static_cast<std::uint8_t>((u >> 16) & 0xff));
      t.bytes.push_back(static_cast<std::uint8_t>(u >> 24));
    }
    t.values.push_back(v);
  }
  return t;
}

/// A scratch directory removed at the end of the test.
struct scratch_dir {
  fs::path path;
  explicit scratch_dir(const std::string& tag) {
    path = fs::temp_directory_path() / ("afd_model_test_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& name) const { return path / name; }
};

inline void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace afd_test
