#pragma once
/// Parsing of the quantities users type on the `afd plan` command line.

#include <cstdint>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::plan {

/// A context length: "8192", "8k" or "8K" (k = 1024), "1m" (1024 x 1024).
expected<std::int64_t> parse_context(std::string_view text);
/// A comma-separated list of context lengths.
expected<std::vector<std::int64_t>> parse_context_list(std::string_view text);
/// A duration in seconds: "50ms", "0.05s", "50000us"; a bare number is milliseconds.
expected<double> parse_duration(std::string_view text);

}  // namespace afd::plan
