#pragma once
// Checkpoints for the engine tests, written with the model module's generator into a per-process
// temporary directory, with optional edits of config.json (e.g. moe_layers_enum as a list).

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/common/process_scratch.hpp"
#include "runtime/model/make_model.hpp"

namespace afd::engine::testing {

/// A directory removed at process exit.
inline const std::filesystem::path& scratch_root() {
  static const test_support::process_scratch root{"afd-engine-test"};
  return root.path;
}

/// The preset's config; fails the test on error.
inline model_config preset(const char* name) {
  auto c = model::preset_config(name);
  EXPECT_TRUE(c.has_value()) << name;
  return c ? *c : model_config{};
}

/// Writes a synthetic checkpoint into scratch_root()/name (once per process) and returns its path.
/// `edit` may rewrite the parsed config.json; it receives the object holding the text fields
/// (top level, or text_config of a VL config).
inline std::string write_model(const std::string& name, const model::synthetic_options& o,
                               const std::function<void(nlohmann::json&)>& edit = {}) {
  const auto dir = scratch_root() / name;
  if (std::filesystem::exists(dir / "config.json")) return dir.string();
  auto written = model::write_synthetic_checkpoint(o, dir.string(), true);
  EXPECT_TRUE(written.has_value()) << (written ? "" : written.err().to_string());
  if (edit) {
    const auto path = dir / "config.json";
    std::ifstream in(path);
    nlohmann::json j = nlohmann::json::parse(in);
    in.close();
    edit(j.contains("text_config") ? j["text_config"] : j);
    std::ofstream(path) << j.dump(2);
  }
  return dir.string();
}

/// The tiny preset, bf16, one file.
inline std::string tiny_model() {
  model::synthetic_options o;
  o.config = preset("tiny");
  o.seed = 7;
  return write_model("tiny", o);
}

}  // namespace afd::engine::testing
