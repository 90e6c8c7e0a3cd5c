#pragma once
/// The options of `afd generate`, reusable by every command that runs a generation request
/// (the cluster commands add their own options next to these).

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/core/numerics.hpp"
#include "runtime/engine/reference_engine.hpp"

namespace afd::cli {

/// The raw options as given on the command line.
struct generate_args {
  std::string model_dir;
  std::string prompt_ids;  ///< "5,17,300"
  std::int64_t max_new_tokens = 16;
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::int32_t top_k = 0;
  std::uint64_t seed = 0;
  std::string stop_ids;  ///< "2,7"; empty: none
  std::string kv_dtype, dispatch_dtype, combine_dtype, combine_mode;  ///< empty: default
  bool json = false;
  std::int64_t logits = 0;
};

/// A checked generation: the request and the numerics to run it with.
struct generate_plan {
  engine::request request;
  numerics num;
};

/// Adds the generation options to `app`, writing into `args`.
void add_generate_options(CLI::App& app, generate_args& args);

/// Parses a comma-separated list of token ids ("5,17,300"); `what` names it in errors.
expected<std::vector<std::int32_t>> parse_token_list(const std::string& text, const std::string& what);

/// Checks the options and resolves the numerics: kv bf16, dispatch fp8, combine bf16 and the
/// deterministic combine by default; but `--kv-dtype f32` alone makes dispatch and combine f32
/// too, so that it reproduces the float64 definition. Errors are errc::invalid_argument.
expected<generate_plan> resolve_generate_args(const generate_args& args);

/// Prints a result as `afd generate` does: one JSON object {"tokens": [...], "finish_reason": ...,
/// "logits": [[...], ...]} (logits only when kept; floats as %.9g) or the tokens as text.
void print_generation(std::FILE* out, const engine::result& r, bool json);

}  // namespace afd::cli
