// Hardware presets and files: values as given, errors naming file, line and field.
#include "deploy/plan/hardware.hpp"

#include <gtest/gtest.h>

namespace afd::plan {
namespace {

TEST(hardware, presets_are_the_reports_table) {
  auto h800 = hardware_preset("h800");
  ASSERT_TRUE(h800.has_value());
  EXPECT_DOUBLE_EQ(h800->price_per_hour, 2.0);
  EXPECT_DOUBLE_EQ(h800->peak_flops(), 1.98e15);
  EXPECT_DOUBLE_EQ(h800->network_per_server_bytes, 400e9);  // 8 x 400 Gb/s
  auto a800 = hardware_preset("a800");
  ASSERT_TRUE(a800.has_value());
  EXPECT_FALSE(a800->has_fp8());
  EXPECT_DOUBLE_EQ(a800->peak_flops(), 3.12e14);
  EXPECT_DOUBLE_EQ(a800->network_per_server_bytes, 200e9);
  for (const auto& n : hardware_preset_names()) EXPECT_TRUE(hardware_preset(n)->validate().has_value()) << n;
}

TEST(hardware, file_adds_and_replaces) {
  hardware_catalog c;
  auto ok = c.load_text(R"(
- name: mycard
  price_per_hour: 1.5
  bf16_flops: 5e14
  fp8_flops: 1e15
  memory_bw: 2e12
  memory_gb: 48
  network_per_server_gbps: 1600
  gpus_per_server: 4
- name: h800
  price_per_hour: 3.0
  bf16_flops: 9.89e14
  memory_bw: 3.35e12
  network_per_server_bytes: 1e11
)", "hw.yaml");
  ASSERT_TRUE(ok.has_value()) << ok.err().message();
  auto m = c.find("mycard");
  ASSERT_TRUE(m.has_value());
  EXPECT_DOUBLE_EQ(m->network_per_server_bytes, 200e9);
  EXPECT_DOUBLE_EQ(m->network_per_gpu_bytes(), 50e9);
  EXPECT_DOUBLE_EQ(m->memory_bytes, 48e9);
  auto h = c.find("h800");
  ASSERT_TRUE(h.has_value());
  EXPECT_DOUBLE_EQ(h->price_per_hour, 3.0);
  EXPECT_FALSE(h->has_fp8());
  auto list = c.find_list("mycard, h20");
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].name, "h20");
}

void expect_error(const std::string& yaml, const std::string& where, const std::string& what) {
  hardware_catalog c;
  auto r = c.load_text(yaml, "hw.yaml");
  ASSERT_FALSE(r.has_value()) << yaml;
  EXPECT_NE(r.err().message().find(where), std::string::npos) << r.err().message();
  EXPECT_NE(r.err().message().find(what), std::string::npos) << r.err().message();
}

TEST(hardware, bad_files_name_file_line_and_field) {
  expect_error("- name: x\n  price_per_hour: cheap\n  bf16_flops: 1e14\n  memory_bw: 1e12\n  network_per_server_gbps: 100\n",
               "hw.yaml:2:", "'price_per_hour'");
  expect_error("- name: x\n  price_per_hour: 1\n  memory_bw: 1e12\n  network_per_server_gbps: 100\n", "hw.yaml:1:",
               "missing field 'bf16_flops'");
  expect_error("- name: x\n  price_per_hour: 1\n  bf16_flops: 1e14\n  memory_bw: 1e12\n", "hw.yaml:1:",
               "network_per_server_gbps");
  expect_error("- name: x\n  price_per_hour: 1\n  bf16_flops: 1e14\n  memory_bw: 1e12\n  network_per_server_gbps: 100\n"
               "  colour: red\n",
               "hw.yaml:6:", "unknown field 'colour'");
  expect_error("- name: x\n  price_per_hour: -1\n  bf16_flops: 1e14\n  memory_bw: 1e12\n  network_per_server_gbps: 100\n",
               "hw.yaml:1:", "price_per_hour");
  expect_error("- [unclosed\n", "hw.yaml:", "");
  expect_error("name: x\n", "hw.yaml", "list");
}

TEST(hardware, unknown_names_and_missing_files) {
  hardware_catalog c;
  auto h = c.find("tpu9");
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.err().message().find("unknown hardware 'tpu9'"), std::string::npos);
  EXPECT_NE(h.err().message().find("h800"), std::string::npos);
  auto f = c.load_file("/nonexistent/hw.yaml");
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.err().message().find("/nonexistent/hw.yaml"), std::string::npos);
}

}  // namespace
}  // namespace afd::plan
