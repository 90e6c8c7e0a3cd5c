#include "deploy/plan/units.hpp"

#include <cmath>
#include <cstdlib>
#include <string>

#include "deploy/plan/hardware.hpp"

namespace afd::plan {

namespace {

/// The number at the start of `s` and the rest; nullopt-like flag when there is no number.
bool split_number(std::string_view text, double& value, std::string& unit) {
  const std::string s(text);
  const char* begin = s.c_str();
  char* end = nullptr;
  value = std::strtod(begin, &end);
  if (end == begin || !std::isfinite(value)) return false;
  unit = std::string(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  return true;
}

}  // namespace

expected<std::int64_t> parse_context(std::string_view text) {
  double v = 0;
  std::string unit;
  if (!split_number(text, v, unit)) return fail(errc::invalid_argument, "context '", text, "' is not a number");
  double scale = 1;
  if (unit == "k" || unit == "K") scale = 1024;
  else if (unit == "m" || unit == "M") scale = 1024.0 * 1024.0;
  else if (!unit.empty()) return fail(errc::invalid_argument, "context '", text, "': unknown unit '", unit, "' (use k or m)");
  const double tokens = v * scale;
  if (tokens < 1 || tokens != std::floor(tokens) || tokens > 1e9)
    return fail(errc::invalid_argument, "context '", text, "' must be a whole number of tokens in [1, 1e9]");
  return static_cast<std::int64_t>(tokens);
}

expected<std::vector<std::int64_t>> parse_context_list(std::string_view text) {
  std::vector<std::int64_t> out;
  for (const auto& item : split_list(text)) {
    auto c = parse_context(item);
    if (!c) return std::move(c).err();
    out.push_back(*c);
  }
  if (out.empty()) return fail(errc::invalid_argument, "no context length given");
  return out;
}

expected<double> parse_duration(std::string_view text) {
  double v = 0;
  std::string unit;
  if (!split_number(text, v, unit)) return fail(errc::invalid_argument, "duration '", text, "' is not a number");
  double scale = 1e-3;
  if (unit == "s") scale = 1;
  else if (unit == "ms" || unit.empty()) scale = 1e-3;
  else if (unit == "us") scale = 1e-6;
  else return fail(errc::invalid_argument, "duration '", text, "': unknown unit '", unit, "' (use s, ms or us)");
  if (!(v > 0)) return fail(errc::invalid_argument, "duration '", text, "' must be positive");
  return v * scale;
}

}  // namespace afd::plan
