#include "deploy/plan/hardware.hpp"

#include <cmath>
#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace afd::plan {

expected<void> hardware::validate() const {
  auto bad = [&](const char* field, const char* why) {
    return fail(errc::invalid_config, "hardware '", name, "': field '", field, "' ", why);
  };
  if (name.empty()) return fail(errc::invalid_config, "hardware: field 'name' is empty");
  if (!(price_per_hour > 0)) return bad("price_per_hour", "must be positive");
  if (!(bf16_flops > 0)) return bad("bf16_flops", "must be positive");
  if (fp8_flops < 0) return bad("fp8_flops", "must not be negative");
  if (!(memory_bw > 0)) return bad("memory_bw", "must be positive");
  if (memory_bytes < 0) return bad("memory_gb", "must not be negative");
  if (!(network_per_server_bytes > 0)) return bad("network_per_server_gbps", "must be positive");
  if (gpus_per_server <= 0) return bad("gpus_per_server", "must be positive");
  return {};
}

namespace {

constexpr double gbit = 1e9 / 8.0;  // bytes/s in one Gb/s
constexpr double gbyte = 1e9;

hardware make(const char* name, const char* source, double price, double bf16, double fp8, double bw,
              double mem_gb, double nic_gbps_per_gpu) {
  hardware h;
  h.name = name;
  h.source = source;
  h.price_per_hour = price;
  h.bf16_flops = bf16;
  h.fp8_flops = fp8;
  h.memory_bw = bw;
  h.memory_bytes = mem_gb * gbyte;
  h.gpus_per_server = 8;
  h.network_per_server_bytes = 8 * nic_gbps_per_gpu * gbit;
  return h;
}

std::vector<hardware> builtin() {
  constexpr const char* report = "Step-3 system report (arXiv 2507.19427), Table 4";
  // h100 and h200: NVIDIA H100 SXM5 and H200 SXM datasheets (dense, no sparsity), with the 8 x
  // 400 Gb/s ConnectX-7 of a DGX/HGX server. Their prices are not from any datasheet: h100 takes
  // the report's h800 price, h200 is an assumption; override both with --hardware-file.
  return {
      make("h800", report, 2.00, 9.89e14, 1.98e15, 3.35e12, 80, 400),
      make("h20", report, 0.80, 1.48e14, 2.96e14, 4.00e12, 96, 400),
      make("a800", report, 0.75, 3.12e14, 0, 2.00e12, 80, 200),
      make("910b", report, 0.67, 2.80e14, 0, 1.60e12, 64, 200),
      make("h100", "NVIDIA H100 SXM5 datasheet; price assumed = report's h800", 2.00, 9.89e14, 1.979e15, 3.35e12, 80, 400),
      make("h200", "NVIDIA H200 SXM datasheet; price assumed", 2.50, 9.89e14, 1.979e15, 4.8e12, 141, 400),
  };
}

std::string trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return std::string(s.substr(b, e - b));
}

/// "file:line: " for a node (yaml-cpp counts lines from 0).
std::string where(const std::string& source, const YAML::Node& node) {
  return source + ":" + std::to_string(node.Mark().line + 1) + ": ";
}

expected<double> read_number(const std::string& source, const YAML::Node& entry, const char* field,
                             bool required, double fallback) {
  const YAML::Node v = entry[field];
  if (!v) {
    if (required) return fail(errc::invalid_config, where(source, entry), "missing field '", field, "'");
    return fallback;
  }
  if (!v.IsScalar()) return fail(errc::invalid_config, where(source, v), "field '", field, "' must be a number");
  try {
    const double d = v.as<double>();
    if (!std::isfinite(d)) throw YAML::Exception(v.Mark(), "not finite");
    return d;
  } catch (const YAML::Exception&) {
    return fail(errc::invalid_config, where(source, v), "field '", field, "' must be a number, not '", v.Scalar(), "'");
  }
}

}  // namespace

std::vector<std::string> hardware_preset_names() {
  std::vector<std::string> names;
  for (const auto& h : builtin()) names.push_back(h.name);
  return names;
}

expected<hardware> hardware_preset(std::string_view name) {
  for (auto& h : builtin()) {
    if (h.name == name) return h;
  }
  std::string known;
  for (const auto& n : hardware_preset_names()) known += (known.empty() ? "" : ", ") + n;
  return fail(errc::invalid_argument, "unknown hardware '", name, "' (presets: ", known,
              "; add others with --hardware-file)");
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::size_t end = comma == std::string_view::npos ? text.size() : comma;
    std::string item = trim(text.substr(start, end - start));
    if (!item.empty()) out.push_back(std::move(item));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

hardware_catalog::hardware_catalog() : entries_(builtin()) {}

expected<void> hardware_catalog::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::io_error, "cannot open hardware file '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return load_text(ss.str(), path);
}

expected<void> hardware_catalog::load_text(std::string_view text, const std::string& source) {
  try {
    const YAML::Node doc = YAML::Load(std::string(text));
    return load_entries(doc, source);
  } catch (const YAML::ParserException& e) {
    return fail(errc::parse_error, source, ":", e.mark.line + 1, ": ", e.msg);
  } catch (const YAML::Exception& e) {
    return fail(errc::invalid_config, source, ":", e.mark.line + 1, ": ", e.msg);
  }
}

expected<void> hardware_catalog::load_entries(const YAML::Node& doc, const std::string& source) {
  if (!doc.IsSequence()) {
    return fail(errc::invalid_config, source, ": the top level must be a list of hardware entries");
  }
  std::vector<hardware> loaded;
  for (const auto& entry : doc) {
    if (!entry.IsMap()) return fail(errc::invalid_config, where(source, entry), "each entry must be a map");
    static const char* const known[] = {"name", "price_per_hour", "bf16_flops", "fp8_flops", "memory_bw",
                                        "memory_gb", "network_per_server_gbps", "network_per_server_bytes",
                                        "gpus_per_server", "source"};
    for (const auto& kv : entry) {
      const std::string key = kv.first.Scalar();
      bool ok = false;
      for (const char* k : known) ok = ok || key == k;
      if (!ok) return fail(errc::invalid_config, where(source, kv.first), "unknown field '", key, "'");
    }
    hardware h;
    if (!entry["name"] || !entry["name"].IsScalar() || entry["name"].Scalar().empty())
      return fail(errc::invalid_config, where(source, entry), "missing field 'name'");
    h.name = entry["name"].Scalar();
    h.source = entry["source"] ? entry["source"].Scalar() : source;
    auto num = [&](const char* field, bool required, double fallback, double& out) -> expected<void> {
      auto v = read_number(source, entry, field, required, fallback);
      if (!v) return std::move(v).err();
      out = *v;
      return {};
    };
    double gbps = 0, bytes = 0, mem_gb = 0, gpus = 8;
    for (auto r : {num("price_per_hour", true, 0, h.price_per_hour), num("bf16_flops", true, 0, h.bf16_flops),
                   num("fp8_flops", false, 0, h.fp8_flops), num("memory_bw", true, 0, h.memory_bw),
                   num("memory_gb", false, 0, mem_gb), num("network_per_server_gbps", false, 0, gbps),
                   num("network_per_server_bytes", false, 0, bytes), num("gpus_per_server", false, 8, gpus)}) {
      if (!r) return std::move(r).err();
    }
    if (entry["network_per_server_gbps"] && entry["network_per_server_bytes"])
      return fail(errc::invalid_config, where(source, entry["network_per_server_bytes"]),
                  "give either 'network_per_server_gbps' or 'network_per_server_bytes', not both");
    if (!entry["network_per_server_gbps"] && !entry["network_per_server_bytes"])
      return fail(errc::invalid_config, where(source, entry),
                  "missing field 'network_per_server_gbps' (or 'network_per_server_bytes')");
    h.network_per_server_bytes = entry["network_per_server_gbps"] ? gbps * gbit : bytes;
    h.memory_bytes = mem_gb * gbyte;
    if (gpus != std::floor(gpus) || gpus < 1)
      return fail(errc::invalid_config, where(source, entry["gpus_per_server"]), "field 'gpus_per_server' must be a positive integer");
    h.gpus_per_server = static_cast<std::int64_t>(gpus);
    if (auto ok = h.validate(); !ok)
      return fail(errc::invalid_config, where(source, entry), ok.err().message());
    loaded.push_back(std::move(h));
  }
  for (auto& h : loaded) {
    bool replaced = false;
    for (auto& e : entries_) {
      if (e.name == h.name) {
        e = h;
        replaced = true;
      }
    }
    if (!replaced) entries_.push_back(std::move(h));
  }
  return {};
}

expected<hardware> hardware_catalog::find(std::string_view name) const {
  for (const auto& h : entries_) {
    if (h.name == name) return h;
  }
  std::string known;
  for (const auto& h : entries_) known += (known.empty() ? "" : ", ") + h.name;
  return fail(errc::invalid_argument, "unknown hardware '", name, "' (known: ", known,
              "; add others with --hardware-file)");
}

expected<std::vector<hardware>> hardware_catalog::find_list(std::string_view names) const {
  const auto items = split_list(names);
  if (items.empty()) return entries_;
  std::vector<hardware> out;
  for (const auto& n : items) {
    auto h = find(n);
    if (!h) return std::move(h).err();
    out.push_back(std::move(*h));
  }
  return out;
}

}  // namespace afd::plan
