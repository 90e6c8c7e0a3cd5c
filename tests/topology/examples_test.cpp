// The shipped examples parse, name only this machine, and resolve against both model shapes.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/topology/test_support.hpp"

namespace afd::topology {
namespace {

struct example {
  const char* file;
  std::size_t attention;
  std::size_t ffn;
};

class topology_examples : public ::testing::TestWithParam<example> {};

TEST_P(topology_examples, parse_and_resolve) {
  const example ex = GetParam();
  const std::string path = std::string(AFD_SOURCE_DIR) + "/deploy/examples/" + ex.file;
  auto t = parse_file(path);
  ASSERT_TRUE(t.ok()) << testing::dump(t.errors);
  EXPECT_EQ(t.value->attention_workers.size(), ex.attention);
  EXPECT_EQ(t.value->ffn_workers.size(), ex.ffn);
  ASSERT_EQ(t.value->nodes.size(), 1u);
  EXPECT_EQ(t.value->nodes[0].name, "local");
  EXPECT_EQ(t.value->nodes[0].host, "127.0.0.1");
  for (const auto& w : t.value->attention_workers) EXPECT_EQ(w.dev, device{});
  for (const auto& w : t.value->ffn_workers) EXPECT_EQ(w.dev, device{});
  EXPECT_TRUE(std::filesystem::path(t.value->model.path).is_absolute());
  for (const auto& c : {testing::tiny_config(), testing::step3_config()}) {
    auto p = resolve_placement(*t.value, c);
    ASSERT_TRUE(p.ok()) << ex.file << "\n" << testing::dump(p.errors);
    for (const auto& l : p.value->layers) {
      if (l.moe) {
        std::size_t owned = 0;
        for (int w = 0; w < static_cast<int>(ex.ffn); ++w) owned += p.value->experts_of(w, l.layer).size();
        EXPECT_EQ(owned, static_cast<std::size_t>(c.moe_num_experts));
      }
      ASSERT_FALSE(l.unit.empty());
    }
    if (t.value->model.combine == combine_mode::deterministic) {
      EXPECT_TRUE(p.value->units_whole());
    }
  }
  EXPECT_TRUE(load_file(path).has_value());
}

INSTANTIATE_TEST_SUITE_P(all, topology_examples,
                         ::testing::Values(example{"1a1f.yaml", 1, 1}, example{"2a2f.yaml", 2, 2},
                                           example{"3a2f.yaml", 3, 2}, example{"2a3f.yaml", 2, 3}),
                         [](const auto& info) { return std::string(info.param.file).substr(0, 4); });

TEST(topology_examples_files, missing_file_is_an_error_naming_it) {
  auto t = parse_file("/nonexistent/topology.yaml");
  ASSERT_EQ(t.errors.size(), 1u);
  EXPECT_EQ(t.errors[0].to_string(), "/nonexistent/topology.yaml: cannot open the topology file");
  auto e = load_file("/nonexistent/topology.yaml");
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.err().code(), errc::invalid_config);
}

// The complete example in the schema reference stays valid.
TEST(topology_examples_files, readme_example_parses_and_resolves) {
  std::ifstream in(std::string(AFD_SOURCE_DIR) + "/docs/topology.md");
  ASSERT_TRUE(in);
  std::stringstream text;
  text << in.rdbuf();
  const std::string readme = text.str();
  const auto begin = readme.find("```yaml\n");
  ASSERT_NE(begin, std::string::npos);
  const auto end = readme.find("```", begin + 8);
  ASSERT_NE(end, std::string::npos);
  auto t = parse_text(readme.substr(begin + 8, end - begin - 8), "README.md", "/x/deploy/topology");
  ASSERT_TRUE(t.ok()) << testing::dump(t.errors);
  EXPECT_EQ(t.value->model.path, "/x/build/models/tiny");
  auto p = resolve_placement(*t.value, testing::tiny_config());
  ASSERT_TRUE(p.ok()) << testing::dump(p.errors);
  EXPECT_EQ(p.value->experts_of(0, 1), (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(p.value->experts_of(1, 2), (std::vector<std::int64_t>{1, 3, 5, 7}));  // layers 2-3: round robin
  EXPECT_EQ(p.value->layers[1].unit.size(), 2u);                                   // sliced shared expert
  EXPECT_EQ(p.value->layers[2].unit, (std::vector<unit_slice>{{0, 0, 32}}));       // override: whole on f0
  EXPECT_EQ(p.value->layers[0].unit, (std::vector<unit_slice>{{1, 0, 96}}));       // dense whole on f1
}

}  // namespace
}  // namespace afd::topology
