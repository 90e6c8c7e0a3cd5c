// Parsing and validation: every error names file, line and column and says what is expected.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>

#include "tests/topology/test_support.hpp"

namespace afd::topology {
namespace {

using testing::base_file;
using testing::expect_error;
using testing::parse;
using testing::yaml_lines;

TEST(topology_parse, base_file_parses_with_documented_defaults) {
  auto r = parse(base_file());
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  const topology& t = *r.value;
  EXPECT_EQ(t.cluster_name, "afd");
  EXPECT_EQ(t.model.path, "/models/tiny");
  EXPECT_EQ(t.model.kv_dtype, dtype::bf16);
  EXPECT_EQ(t.model.dispatch_dtype, dtype::f8_e4m3);
  EXPECT_EQ(t.model.combine_dtype, dtype::bf16);
  EXPECT_EQ(t.model.combine, combine_mode::deterministic);
  ASSERT_EQ(t.nodes.size(), 1u);
  EXPECT_EQ(t.nodes[0].host, "127.0.0.1");
  EXPECT_EQ(t.coordinator.node, "local");
  EXPECT_EQ(t.coordinator.port, 7600);
  EXPECT_EQ(t.transport.kind, transport_kind::ucx);
  EXPECT_EQ(t.transport.base_port, 0);
  EXPECT_EQ(t.pipeline.micro_batches, 3);
  EXPECT_EQ(t.pipeline.prefill_chunk, 256);
  EXPECT_EQ(t.pipeline.step_deadline_ms, 5000);
  EXPECT_EQ(t.limits.queue, 256);
  EXPECT_EQ(t.limits.max_new_tokens, 4096);
  ASSERT_EQ(t.attention_workers.size(), 1u);
  EXPECT_EQ(t.attention_workers[0].kv_blocks, 4096);
  EXPECT_EQ(t.attention_workers[0].block_size, 16);
  EXPECT_EQ(t.attention_workers[0].max_batch, 64);
  ASSERT_EQ(t.ffn_workers.size(), 2u);
  EXPECT_EQ(t.ffn_workers[1].dev, (device{device::kind::cuda, 1}));
  EXPECT_EQ(t.placement.experts.how, expert_rule::policy::contiguous);
  EXPECT_EQ(t.placement.shared.how, unit_rule::policy::round_robin);
  EXPECT_EQ(t.placement.dense.how, unit_rule::policy::round_robin);
  EXPECT_EQ(t.location_of("coordinator.port").line, 5);
  EXPECT_EQ(t.location_of("ffn_workers[1].device").line, 10);
}

TEST(topology_parse, every_key_is_read) {
  auto y = base_file();
  y.set(1, "model: {path: m, kv_dtype: fp8, dispatch_dtype: bf16, combine_dtype: f32, combine_mode: throughput}")
      .set(2, "cluster: {name: demo}")
      .set(7, "  - {name: a0, node: local, device: \"cuda:3\", kv_blocks: 100, block_size: 32, max_batch: 5}")
      .set(9, "  - {name: f0, node: local, device: cpu, max_tokens: 77}")
      .add("transport: {kind: loopback, tls: \"tcp,sm,self\", net_devices: lo, error_mode: peer, base_port: 9000}")
      .add("pipeline: {micro_batches: 2, prefill_chunk: 64, step_deadline_ms: 10}")
      .add("limits: {queue: 9, max_new_tokens: 100, max_context: 200}")
      .add("processes:")
      .add("  - {name: p0, workers: [coordinator, a0, f0, f1]}");
  auto r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  const topology& t = *r.value;
  EXPECT_EQ(t.cluster_name, "demo");
  EXPECT_EQ(t.model.path, "/cluster/m");  // relative to the file's directory
  EXPECT_EQ(t.model.path_as_written, "m");
  EXPECT_EQ(t.model.kv_dtype, dtype::f8_e4m3);
  EXPECT_EQ(t.model.dispatch_dtype, dtype::bf16);
  EXPECT_EQ(t.model.combine_dtype, dtype::f32);
  EXPECT_EQ(t.model.combine, combine_mode::throughput);
  EXPECT_EQ(t.attention_workers[0].dev, (device{device::kind::cuda, 3}));
  EXPECT_EQ(t.attention_workers[0].kv_blocks, 100);
  EXPECT_EQ(t.attention_workers[0].block_size, 32);
  EXPECT_EQ(t.attention_workers[0].max_batch, 5);
  EXPECT_EQ(t.ffn_workers[0].max_tokens, 77);
  EXPECT_EQ(t.transport.kind, transport_kind::loopback);
  EXPECT_EQ(t.transport.tls, "tcp,sm,self");
  EXPECT_EQ(t.transport.net_devices, "lo");
  EXPECT_EQ(t.transport.error_mode, "peer");
  EXPECT_EQ(t.transport.base_port, 9000);
  EXPECT_EQ(t.data_port('a', 0), 9000);
  EXPECT_EQ(t.data_port('f', 1), 9002);
  EXPECT_EQ(t.pipeline.micro_batches, 2);
  EXPECT_EQ(t.pipeline.prefill_chunk, 64);
  EXPECT_EQ(t.pipeline.step_deadline_ms, 10);
  EXPECT_EQ(t.limits.queue, 9);
  EXPECT_EQ(t.limits.max_new_tokens, 100);
  EXPECT_EQ(t.limits.max_context, 200);
  ASSERT_EQ(t.processes.size(), 1u);
  EXPECT_EQ(t.processes[0].members, (std::vector<std::string>{"coordinator", "a0", "f0", "f1"}));
}

TEST(topology_parse, unknown_key_suggests_the_closest) {
  auto y = base_file();
  y.set(7, "  - {name: a0, node: local, kv_block: 10}");
  auto r = parse(y);
  ASSERT_FALSE(r.ok());
  expect_error(r.errors, "unknown key 'kv_block' in an attention worker (did you mean 'kv_blocks'?)", 7,
               y.column(7, "kv_block"));
  y = base_file();
  y.add("pipline: {micro_batches: 2}");
  r = parse(y);
  expect_error(r.errors, "unknown key 'pipline' in the top level (did you mean 'pipeline'?)", 11, 1);
  // Far from everything: no suggestion, but the list of what is expected.
  y = base_file();
  y.add("zzzzzzzz: 1");
  r = parse(y);
  auto found = testing::with(r.errors, "unknown key 'zzzzzzzz'");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].message.find("did you mean"), std::string::npos);
  EXPECT_NE(found[0].message.find("expected one of: cluster, model, nodes"), std::string::npos);
}

TEST(topology_parse, wrong_types_name_what_is_expected) {
  auto y = base_file();
  y.set(7, "  - {name: a0, node: local, kv_blocks: many, max_batch: \"5\"}");
  y.set(5, "coordinator: [local, 7600]");
  auto r = parse(y);
  expect_error(r.errors, "expected an integer for 'kv_blocks', got 'many'", 7, y.column(7, "many"));
  expect_error(r.errors, "expected an integer for 'max_batch', got the string \"5\"", 7, y.column(7, "\"5\""));
  expect_error(r.errors, "expected a mapping for 'coordinator' (keys node, port, credentials, standby), got a sequence", 5,
               y.column(5, "["));
  y = base_file();
  y.set(3, "nodes: local");
  y.lines.erase(y.lines.begin() + 3);
  r = parse(y);
  expect_error(r.errors, "expected a sequence of nodes ({name, host}) for 'nodes', got 'local'", 3, 8);
}

TEST(topology_parse, missing_required_keys) {
  auto y = base_file();
  y.lines.resize(7);  // no ffn_workers
  y.set(2, "  kv_dtype: bf16");
  auto r = parse(y);
  expect_error(r.errors, "missing required key 'ffn_workers' in the top level", 1, 1);
  expect_error(r.errors, "missing required key 'path' in 'model'", 2, 3);
  y = base_file();
  y.set(7, "  - {node: local}");
  r = parse(y);
  expect_error(r.errors, "missing required key 'name' in an attention worker", 7, 5);
}

TEST(topology_parse, names_are_unique_and_nodes_declared) {
  auto y = base_file();
  y.set(10, "  - {name: a0, node: locl}");
  y.add("  - {name: f0, node: local}");
  auto r = parse(y);
  expect_error(r.errors, "duplicate worker name 'a0' (first declared at line 7)", 10, y.column(10, "a0"));
  expect_error(r.errors, "duplicate worker name 'f0' (first declared at line 9)", 11, y.column(11, "f0"));
  expect_error(r.errors,
               "FFN worker 'a0' is on node 'locl', which is not declared under 'nodes' (did you mean 'local'?); "
               "declared nodes: local",
               10, y.column(10, "locl"));
  y = base_file();
  y.set(5, "coordinator: {node: head, port: 7600}");
  y.insert(5, "  - {name: local, host: 10.0.0.2}");
  r = parse(y);
  expect_error(r.errors, "duplicate node name 'local' (first declared at line 4)", 5, y.column(5, "local"));
  expect_error(r.errors, "the coordinator is on node 'head', which is not declared", 6, y.column(6, "head"));
}

TEST(topology_parse, device_syntax) {
  for (std::string bad : {"gpu0", "cuda:", "cuda:-1", "cuda:x", "cuda0", "CPU", "cuda:1a"}) {
    auto y = base_file();
    y.set(9, "  - {name: f0, node: local, device: \"" + bad + "\"}");
    auto r = parse(y);
    expect_error(r.errors, "expected a device 'cpu' or 'cuda:N' (N a GPU index) for 'device', got the string \"" + bad,
                 9, y.column(9, "\"" + bad));
  }
  EXPECT_EQ(parse_device("cuda:12"), (device{device::kind::cuda, 12}));
  EXPECT_EQ(parse_device("cpu"), device{});
  EXPECT_EQ((device{device::kind::cuda, 2}).to_string(), "cuda:2");
}

TEST(topology_parse, numeric_limits) {
  auto y = base_file();
  y.add("pipeline: {micro_batches: 0, prefill_chunk: -3}");
  y.set(5, "coordinator: {node: local, port: 70000}");
  auto r = parse(y);
  expect_error(r.errors, "'micro_batches' must be in 1..64, got 0", 11, y.column(11, "0"));
  expect_error(r.errors, "'prefill_chunk' must be in 1..1048576, got -3", 11, y.column(11, "-3"));
  expect_error(r.errors, "port out of range: 'port' must be in 1..65535, got 70000", 5, y.column(5, "70000"));
  y = base_file();
  y.set(5, "coordinator: {node: local, port: 0}");
  r = parse(y);
  expect_error(r.errors, "port out of range: 'port' must be in 1..65535, got 0", 5, y.column(5, "0}"));
  y = base_file();
  y.add("limits: {max_new_tokens: 500, max_context: 100}");
  r = parse(y);
  expect_error(r.errors, "'max_new_tokens' (500) must not exceed 'max_context' (100)", 11, y.column(11, "500"));
  // max_new_tokens left at its default: the error points at what the file wrote.
  y = base_file();
  y.add("limits: {max_context: 2048}");
  r = parse(y);
  expect_error(r.errors, "'max_context' (2048) is below the default 'max_new_tokens' (4096); set limits.max_new_tokens "
               "to at most 2048", 11, y.column(11, "2048"));
}

TEST(topology_parse, dtype_and_mode_names) {
  auto y = base_file();
  y.set(2, "  path: m");
  y.lines.insert(y.lines.begin() + 2, {"  kv_dtype: fp16", "  combine_dtype: fp8", "  combine_mode: determinstic"});
  auto r = parse(y);
  expect_error(r.errors, "expected one of f32 | bf16 | fp8 for 'kv_dtype', got 'fp16'", 3, 13);
  expect_error(r.errors, "expected one of f32 | bf16 for 'combine_dtype', got 'fp8'", 4, 18);
  expect_error(r.errors,
               "expected one of deterministic | throughput for 'combine_mode', got 'determinstic' (did you mean "
               "'deterministic'?)",
               5, 17);
}

TEST(topology_parse, error_mode_names) {
  auto y = base_file();
  EXPECT_EQ(parse(y).value->transport.error_mode, "auto");
  y.add("transport: {kind: ucx, error_mode: none}");
  auto r = parse(y);
  expect_error(r.errors, "expected one of auto | peer | minimal for 'error_mode', got 'none'", 11,
               y.column(11, "none"));
}

TEST(topology_parse, zero_workers_of_a_role) {
  auto y = base_file();
  y.lines.resize(8);
  y.set(8, "ffn_workers: []");
  y.set(6, "attention_workers: []");
  y.lines.erase(y.lines.begin() + 6);
  auto r = parse(y);
  expect_error(r.errors, "'attention_workers' is empty: a cluster needs at least one attention worker", 6, 20);
  expect_error(r.errors, "'ffn_workers' is empty: a cluster needs at least one FFN worker", 7, 14);
}

TEST(topology_parse, all_errors_are_collected_in_file_order) {
  auto y = base_file();
  y.insert(3, "  kv_dtype: f64");
  y.set(8, "  - {name: a0, node: nowhere, device: tpu}");
  y.set(11, "  - {name: f1, node: local, colour: red}");
  y.add("pipeline: {micro_batches: 0}");  // line 12
  auto r = parse(y);
  ASSERT_GE(r.errors.size(), 5u) << testing::dump(r.errors);
  EXPECT_FALSE(r.value.has_value());
  for (std::size_t i = 1; i < r.errors.size(); ++i)
    EXPECT_LE(r.errors[i - 1].where.line, r.errors[i].where.line) << testing::dump(r.errors);
  EXPECT_EQ(testing::with(r.errors, "kv_dtype").size(), 1u);
  EXPECT_EQ(testing::with(r.errors, "nowhere").size(), 1u);
  EXPECT_EQ(testing::with(r.errors, "'tpu'").size(), 1u);
  EXPECT_EQ(testing::with(r.errors, "colour").size(), 1u);
  EXPECT_EQ(testing::with(r.errors, "micro_batches").size(), 1u);
  // The expected<> form carries them all.
  auto e = r.to_error();
  EXPECT_EQ(e.code(), errc::invalid_config);
  EXPECT_NE(e.message().find("t.yaml:3:"), std::string::npos);
  EXPECT_NE(e.message().find("t.yaml:12:"), std::string::npos);
}

TEST(topology_parse, yaml_structure_problems) {
  auto r = parse(std::string("model: {path: m\nnodes: []\n"));
  ASSERT_EQ(r.errors.size(), 1u) << testing::dump(r.errors);
  EXPECT_NE(r.errors[0].message.find("YAML syntax error"), std::string::npos);
  EXPECT_GT(r.errors[0].where.line, 0);
  r = parse(std::string(""));
  expect_error(r.errors, "the file is empty", 1, 1);
  r = parse(std::string("- a\n- b\n"));
  expect_error(r.errors, "expected a mapping at the top level", 1, 1);
  auto y = base_file();
  y.add("nodes: []");
  r = parse(y);
  expect_error(r.errors, "key 'nodes' repeated in the top level (first at line 3)", 11, 1);
  y = base_file();
  y.add("---").add("model: {path: x}");
  r = parse(y);
  expect_error(r.errors, "expected one YAML document, found 2", 12, 1);
}

TEST(topology_parse, processes_are_checked) {
  auto y = base_file();
  y.insert(5, "  - {name: other, host: 10.1.1.1}");
  y.set(11, "  - {name: f1, node: other}");
  y.add("processes:");                                                              // line 12
  y.add("  - {name: p0, workers: [a0, f0, f1, f9]}");                              // line 13
  y.add("  - {name: p1, workers: [f0]}");                                           // line 14
  auto r = parse(y);
  expect_error(r.errors, "'f1' is on node 'other' but process 'p0' runs on node 'local'", 13,
               y.column(13, "f1"));
  expect_error(r.errors, "unknown worker 'f9' in process 'p0' (did you mean 'f0'?)", 13, y.column(13, "f9"));
  expect_error(r.errors, "'f0' is in two processes: 'p0' and 'p1'", 14, y.column(14, "f0"));
}

TEST(topology_parse, fault_rules_are_checked_where_written) {
  auto y = base_file();
  y.add("faults:");                                              // line 11
  y.add("  seed: 42");                                           // line 12
  y.add("  rules:");                                             // line 13
  y.add("    - pause_process worker=f1 after=2s duration=3s");   // line 14
  y.add("    - data_drop worker=a0 peer=f1 nth=30");             // line 15
  auto ok = parse(y);
  ASSERT_TRUE(ok.ok()) << testing::dump(ok.errors);
  EXPECT_EQ(ok.value->faults.seed, 42u);
  EXPECT_EQ(ok.value->faults.rules,
            (std::vector<std::string>{"pause_process worker=f1 after=2s duration=3s", "data_drop worker=a0 peer=f1 nth=30"}));

  auto bad = base_file();
  bad.add("faults:");                                            // line 11
  bad.add("  rules:");                                           // line 12
  bad.add("    - pause_proces worker=f1 duration=3s");           // line 13
  bad.add("    - pause_process worker=f1");                      // line 14
  bad.add("    - data_drop worker=a0 peer=f7 nth=30");           // line 15
  bad.add("    - hang_engine worker=f1 duration=soon");          // line 16
  bad.add("  sead: 3");                                          // line 17
  auto r = parse(bad);
  expect_error(r.errors, "fault rule 'pause_proces worker=f1 duration=3s': unknown kind 'pause_proces'", 13, 7);
  expect_error(r.errors, "fault rule 'pause_process worker=f1': pause_process needs duration=", 14, 7);
  expect_error(r.errors, "fault rule 'data_drop worker=a0 peer=f7 nth=30': worker 'f7' is not in the topology (a0, f0, f1)",
               15, 7);
  expect_error(r.errors, "fault rule 'hang_engine worker=f1 duration=soon': duration=soon is not a duration", 16, 7);
  expect_error(r.errors, "unknown key 'sead' in 'faults'", 17, 3);
}

TEST(topology_parse, transport_settings) {
  auto y = base_file();
  y.insert(5, "  - {name: other, host: 10.1.1.1}");
  y.set(11, "  - {name: f1, node: other}");
  y.add("transport: {kind: loopback}");
  auto r = parse(y);
  expect_error(r.errors, "transport 'loopback' works inside one process, but workers are on 2 nodes", 12,
               y.column(12, "loopback"));
  y = base_file();
  y.add("transport: {kind: ucx, base_port: 7599}");
  r = parse(y);
  // Data ports 7599..7601 (a0, f0, f1): f0's is the coordinator's 7600 on the same node.
  expect_error(r.errors, "port 7600 is used twice on node 'local': by the coordinator and as the data port of worker 'f0'",
               5, y.column(5, "7600"));
  y = base_file();
  y.add("transport: {base_port: 65534}");
  r = parse(y);
  expect_error(r.errors, "port out of range: data ports base_port..65536", 11, y.column(11, "65534"));
  y = base_file();
  y.add("transport: {tls: \"tcp,smm\"}");
  r = parse(y);
  expect_error(r.errors, "unknown UCX transport \"smm\"", 11, y.column(11, "\"tcp"));
}

// Truncated and mutated files never crash the parser; every failure still names the file.
TEST(topology_parse, garbage_never_crashes) {
  std::string full;
  {
    auto y = base_file();
    y.add("transport: {kind: ucx, tls: \"tcp,sm,self\", base_port: 9000}")
        .add("placement:")
        .add("  experts: {f0: [0-3, 8], f1: [4-7]}")
        .add("  shared: {f0: whole}")
        .add("  layers:")
        .add("    \"1-2\": {experts: round_robin, dense: {f1: {begin: 0, end: 4}}}");
    full = y.text();
  }
  auto check = [](const std::string& text) {
    auto r = parse(text);
    if (!r.ok()) {
      ASSERT_FALSE(r.errors.empty());
      for (const auto& d : r.errors) {
        EXPECT_EQ(d.where.file, "t.yaml");
        EXPECT_FALSE(d.message.empty());
      }
    }
  };
  for (std::size_t n = 0; n <= full.size(); ++n) check(full.substr(0, n));
  std::mt19937 rng(1234);
  const std::string alphabet = "{}[]:,-#&*!|>'\"%@` \n\t0123456789abcxyz?";
  for (int round = 0; round < 1500; ++round) {
    std::string text = full;
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < edits; ++k) {
      const std::size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0: text[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: text.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
        default: text.erase(at, 1 + rng() % 8); break;
      }
      if (text.empty()) text = "x";
    }
    check(text);
  }
  for (int round = 0; round < 200; ++round) {
    std::string text(rng() % 200, '\0');
    for (auto& c : text) c = static_cast<char>(rng() % 256);
    check(text);
  }
  check(std::string(20000, '['));
  check(std::string(20000, '{'));
  std::string nested;
  for (int i = 0; i < 3000; ++i) nested += std::string(static_cast<std::size_t>(i % 50), ' ') + "- \n";
  check(nested);
  check("a: &x [*x]\n");
  check("model: !!binary aGVsbG8=\n");
}

// A port held by a listening socket is reported at the coordinator's `port` line.
TEST(topology_ports, port_in_use_on_this_machine) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  auto y = base_file();
  y.set(5, "coordinator: {node: local, port: " + std::to_string(port) + "}");
  auto r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  auto errors = check_ports(*r.value);
  expect_error(errors, "port " + std::to_string(port) + " is in use on this machine (node 'local', host 127.0.0.1)",
               5, y.column(5, std::to_string(port)));
  ::close(fd);
  EXPECT_TRUE(check_ports(*r.value).empty()) << testing::dump(check_ports(*r.value));

  // A remote node's ports are not probed.
  y.set(4, "  - {name: local, host: 10.255.255.1}");
  r = parse(y);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(check_ports(*r.value).empty());
}

TEST(topology_ports, local_hosts) {
  EXPECT_TRUE(is_local_host("127.0.0.1"));
  EXPECT_TRUE(is_local_host("127.0.1.1"));
  EXPECT_TRUE(is_local_host("localhost"));
  EXPECT_TRUE(is_local_host("::1"));
  char name[256] = {};
  ASSERT_EQ(::gethostname(name, sizeof name - 1), 0);
  EXPECT_TRUE(is_local_host(name));
  EXPECT_FALSE(is_local_host("10.255.255.1"));
  EXPECT_FALSE(is_local_host("some-other-host.invalid"));
}

}  // namespace
}  // namespace afd::topology
