#pragma once
/// Accelerators as the cost model sees them: price, peak FLOP/s, memory bandwidth and capacity,
/// network per server. Built-in presets and user files (YAML).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace YAML {
class Node;
}

namespace afd::plan {

/// One accelerator kind.
struct hardware {
  std::string name;
  std::string source;                   ///< where the numbers come from
  double price_per_hour = 0;            ///< $ per card per hour
  double bf16_flops = 0;                ///< dense peak FLOP/s at BF16
  double fp8_flops = 0;                 ///< dense peak FLOP/s at FP8; 0 when the card has none
  double memory_bw = 0;                 ///< bytes/s
  double memory_bytes = 0;              ///< capacity in bytes; 0 when unknown (no capacity checks)
  double network_per_server_bytes = 0;  ///< bytes/s of all NICs of one server
  std::int64_t gpus_per_server = 8;

  /// True when the card computes in FP8.
  bool has_fp8() const { return fp8_flops > 0; }
  /// The peak the cost model uses: FP8 where available, else BF16.
  double peak_flops() const { return has_fp8() ? fp8_flops : bf16_flops; }
  /// Network bytes/s of one card (its server's network split evenly).
  double network_per_gpu_bytes() const { return network_per_server_bytes / static_cast<double>(gpus_per_server); }
  /// $ per FLOP at peak.
  double dollars_per_flop() const { return price_per_hour / (3600.0 * peak_flops()); }
  /// $ per byte of memory traffic at full bandwidth.
  double dollars_per_byte() const { return price_per_hour / (3600.0 * memory_bw); }
  /// Peak FLOP/s over bandwidth: the arithmetic intensity where the roofline bends.
  double ridge_intensity() const { return peak_flops() / memory_bw; }

  /// Checks the fields; an error names the first bad one.
  expected<void> validate() const;
};

/// Names of the built-in presets, in table order.
std::vector<std::string> hardware_preset_names();
/// A built-in preset.
expected<hardware> hardware_preset(std::string_view name);

/// A set of hardware kinds: the presets plus those of user files (a file's entry replaces a
/// preset of the same name).
class hardware_catalog {
 public:
  /// The built-in presets.
  hardware_catalog();
  /// Adds the entries of a YAML file: a list of maps {name, price_per_hour, bf16_flops,
  /// fp8_flops?, memory_bw, memory_gb?, network_per_server_gbps | network_per_server_bytes,
  /// gpus_per_server?}. Errors name the file, the line and the field.
  expected<void> load_file(const std::string& path);
  /// The same from YAML text; `source` names it in errors.
  expected<void> load_text(std::string_view yaml, const std::string& source);
  /// A kind by name.
  expected<hardware> find(std::string_view name) const;
  /// Kinds by a comma-separated list of names ("h800,h20"); empty list: all kinds.
  expected<std::vector<hardware>> find_list(std::string_view names) const;
  /// Every kind, in insertion order.
  const std::vector<hardware>& all() const { return entries_; }

 private:
  expected<void> load_entries(const YAML::Node& doc, const std::string& source);
  std::vector<hardware> entries_;
};

/// Splits "a,b,c" into its non-empty items (spaces trimmed).
std::vector<std::string> split_list(std::string_view text);

}  // namespace afd::plan
