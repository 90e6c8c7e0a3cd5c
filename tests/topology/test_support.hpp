#pragma once
// Shared by the topology tests: a valid base file edited line by line, and model configs written
// out by hand from MODEL.md (not taken from the code under test).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "deploy/topology/topology.hpp"

namespace afd::topology::testing {

/// A file as lines, numbered from 1 like an editor.
struct yaml_lines {
  std::vector<std::string> lines;
  std::string text() const {
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
  yaml_lines& set(int line, std::string text) {
    lines.at(static_cast<std::size_t>(line - 1)) = std::move(text);
    return *this;
  }
  /// Inserts `text` as line `line`, shifting the following lines down.
  yaml_lines& insert(int line, std::string text) {
    lines.insert(lines.begin() + (line - 1), std::move(text));
    return *this;
  }
  yaml_lines& add(std::string text) {
    lines.push_back(std::move(text));
    return *this;
  }
  /// 1-based number of the first line containing `needle`.
  int line_of(std::string_view needle) const {
    for (std::size_t i = 0; i < lines.size(); ++i)
      if (lines[i].find(needle) != std::string::npos) return static_cast<int>(i) + 1;
    ADD_FAILURE() << needle << " is on no line";
    return 0;
  }
  /// 1-based column of `needle` on `line` (the first occurrence).
  int column(int line, std::string_view needle) const {
    const auto pos = lines.at(static_cast<std::size_t>(line - 1)).find(needle);
    EXPECT_NE(pos, std::string::npos) << needle << " not on line " << line;
    return static_cast<int>(pos) + 1;
  }
};

/// A valid topology: 1 attention worker, 2 FFN workers, one node.
inline yaml_lines base_file() {
  return yaml_lines{{
      "model:",                                         // 1
      "  path: /models/tiny",                           // 2
      "nodes:",                                         // 3
      "  - {name: local, host: 127.0.0.1}",             // 4
      "coordinator: {node: local, port: 7600}",         // 5
      "attention_workers:",                             // 6
      "  - {name: a0, node: local, device: cpu}",       // 7
      "ffn_workers:",                                   // 8
      "  - {name: f0, node: local, device: cpu}",       // 9
      "  - {name: f1, node: local, device: \"cuda:1\"}",  // 10
  }};
}

inline checked<topology> parse(const yaml_lines& y) { return parse_text(y.text(), "t.yaml", "/cluster"); }
inline checked<topology> parse(const std::string& text) { return parse_text(text, "t.yaml", "/cluster"); }

/// All diagnostics, one per line, for failure messages.
inline std::string dump(const diagnostics& ds) {
  std::string s;
  for (const auto& d : ds) s += d.to_string() + "\n";
  return s;
}

/// The diagnostics whose message contains `needle`.
inline std::vector<diagnostic> with(const diagnostics& ds, std::string_view needle) {
  std::vector<diagnostic> out;
  for (const auto& d : ds)
    if (d.message.find(needle) != std::string::npos) out.push_back(d);
  return out;
}

/// Expects exactly one diagnostic containing `needle`, at line:column.
inline void expect_error(const diagnostics& ds, std::string_view needle, int line, int column) {
  auto found = with(ds, needle);
  ASSERT_EQ(found.size(), 1u) << "looking for: " << needle << "\ngot:\n" << dump(ds);
  EXPECT_EQ(found[0].where.file, "t.yaml");
  EXPECT_EQ(found[0].where.line, line) << found[0].to_string();
  EXPECT_EQ(found[0].where.column, column) << found[0].to_string();
  const std::string expected_prefix = "t.yaml:" + std::to_string(line) + ":" + std::to_string(column) + ": ";
  EXPECT_EQ(found[0].to_string().substr(0, expected_prefix.size()), expected_prefix);
}

/// The tiny model: hidden 64, 4 layers with layer 0 dense, 8 experts top-3.
inline model_config tiny_config() {
  model_config c;
  c.hidden_size = 64;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_attention_groups = 1;
  c.head_dim = 32;
  c.share_q_dim = 48;
  c.intermediate_size = 96;
  c.moe_num_experts = 8;
  c.moe_top_k = 3;
  c.moe_intermediate_size = 32;
  c.share_expert_dim = 32;
  c.vocab_size = 512;
  c.max_position_embedding = 2048;
  c.moe_layers = {false, true, true, true};
  return c;
}

/// Step-3 (MODEL.md): 61 layers, 0-3 and 60 dense, 48 experts top-3.
inline model_config step3_config() {
  model_config c;
  c.hidden_size = 7168;
  c.num_hidden_layers = 61;
  c.num_attention_heads = 64;
  c.num_attention_groups = 1;
  c.head_dim = 256;
  c.share_q_dim = 2048;
  c.intermediate_size = 18432;
  c.moe_num_experts = 48;
  c.moe_top_k = 3;
  c.moe_intermediate_size = 5120;
  c.share_expert_dim = 5120;
  c.vocab_size = 128815;
  c.max_position_embedding = 65536;
  c.moe_layers.assign(61, true);
  for (int i : {0, 1, 2, 3, 60}) c.moe_layers[static_cast<std::size_t>(i)] = false;
  return c;
}

}  // namespace afd::topology::testing
