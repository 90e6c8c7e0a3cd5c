// A node's `ssh`, `net_devices` and `afd`: both forms of `ssh`, the defaults a launcher gets, and
// every bad value reported at its line and column; the checks made on the launcher's machine
// (identity files of remote nodes, executables and devices of local ones).
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "tests/topology/test_support.hpp"

namespace afd::topology {
namespace {

using testing::base_file;
using testing::expect_error;
using testing::parse;
using testing::yaml_lines;

// The base file with a second node, `far`, on line 5 (the coordinator moves to line 6).
yaml_lines with_far_node(const std::string& far_line) {
  auto y = base_file();
  y.insert(5, far_line);
  return y;
}

// Output of a shell command (an oracle independent of the code under test).
std::string shell(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  std::string out;
  char chunk[256];
  while (pipe && std::fgets(chunk, sizeof chunk, pipe.get())) out += chunk;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

const node_spec& far_node(const checked<topology>& r) {
  const node_spec* n = r.value->find_node("far");
  EXPECT_NE(n, nullptr);
  return *n;
}

TEST(topology_nodes, ssh_as_a_string) {
  struct example {
    std::string written;
    std::string user, host;
    int port;
  };
  for (const example& e : std::vector<example>{
           {"root@10.0.0.2", "root", "10.0.0.2", 0},
           {"deploy@gpu1.example.org:2222", "deploy", "gpu1.example.org", 2222},
           {"10.0.0.2:2200", "", "10.0.0.2", 2200},
           {"gpu1", "", "gpu1", 0},
           {"admin@[fe80::1%eth0]:22", "admin", "fe80::1%eth0", 22},
           {"[::1]", "", "::1", 0},
           {"fd00::2", "", "fd00::2", 0},  // several ':' and no brackets: an IPv6 address, no port
       }) {
    auto r = parse(with_far_node("  - {name: far, host: 10.0.0.2, ssh: \"" + e.written + "\"}"));
    ASSERT_TRUE(r.ok()) << e.written << "\n" << testing::dump(r.errors);
    const node_spec& n = far_node(r);
    ASSERT_TRUE(n.ssh.has_value()) << e.written;
    EXPECT_EQ(n.ssh->user, e.user) << e.written;
    EXPECT_EQ(n.ssh->host, e.host) << e.written;
    EXPECT_EQ(n.ssh->port, e.port) << e.written;
    EXPECT_EQ(n.ssh->identity, "") << e.written;
  }
}

TEST(topology_nodes, ssh_as_a_mapping_with_an_identity_relative_to_the_file) {
  auto r = parse(with_far_node(
      "  - {name: far, host: 10.0.0.2, ssh: {user: ubuntu, host: gpu2, port: 2022, identity: keys/id_ed25519}}"));
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  const node_spec& n = far_node(r);
  ASSERT_TRUE(n.ssh.has_value());
  EXPECT_EQ(n.ssh->user, "ubuntu");
  EXPECT_EQ(n.ssh->host, "gpu2");
  EXPECT_EQ(n.ssh->port, 2022);
  EXPECT_EQ(n.ssh->identity, "/cluster/keys/id_ed25519");  // parse() reads the file as /cluster/t.yaml
  EXPECT_EQ(n.ssh->identity_as_written, "keys/id_ed25519");
  EXPECT_EQ(r.value->location_of("nodes[1].ssh.identity").line, 5);

  const ssh_target target = ssh_target_of(n);
  EXPECT_EQ(target.destination(), "ubuntu@gpu2");
  EXPECT_EQ(target.port, 2022);
  EXPECT_EQ(target.identity, "/cluster/keys/id_ed25519");

  // "~/" is the launcher's home.
  const char* old_home = std::getenv("HOME");
  const std::string saved = old_home ? old_home : "";
  ::setenv("HOME", "/home/tester", 1);
  r = parse(with_far_node("  - {name: far, host: 10.0.0.2, ssh: {identity: ~/.ssh/afd_key}}"));
  if (old_home) ::setenv("HOME", saved.c_str(), 1); else ::unsetenv("HOME");
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  EXPECT_EQ(far_node(r).ssh->identity, "/home/tester/.ssh/afd_key");
}

TEST(topology_nodes, ssh_defaults_are_the_launchers_user_at_the_nodes_host_port_22) {
  const std::string me = shell("id -un");
  ASSERT_FALSE(me.empty());
  auto r = parse(with_far_node("  - {name: far, host: 10.0.0.2}"));
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  EXPECT_FALSE(far_node(r).ssh.has_value());
  ssh_target target = ssh_target_of(far_node(r));
  EXPECT_EQ(target.user, me);
  EXPECT_EQ(target.host, "10.0.0.2");
  EXPECT_EQ(target.port, 22);
  EXPECT_EQ(target.identity, "");
  EXPECT_EQ(target.destination(), me + "@10.0.0.2");

  // Only the port given: the rest still defaults.
  r = parse(with_far_node("  - {name: far, host: 10.0.0.2, ssh: {port: 2200}}"));
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  target = ssh_target_of(far_node(r));
  EXPECT_EQ(target.destination(), me + "@10.0.0.2");
  EXPECT_EQ(target.port, 2200);
}

TEST(topology_nodes, bad_ssh_strings_name_the_column_of_the_bad_part) {
  struct example {
    std::string written;   // inside double quotes
    std::string message;
    std::string at;        // the part of the line the error points at
  };
  for (const example& e : std::vector<example>{
           {"@10.0.0.2", "empty user before '@' in 'ssh'", "@10.0.0.2"},
           {"root@", "empty host in 'ssh'", "\"root@\"}"},
           {"root@10.0.0.2:99999", "port out of range: the ssh port must be in 1..65535, got 99999", "99999"},
           {"root@10.0.0.2:0", "port out of range: the ssh port must be in 1..65535, got 0", "0\"}"},
           {"root@10.0.0.2:ssh", "expected a port number after ':' in 'ssh', got 'ssh'", "ssh\"}"},
           {"root@10.0.0.2:", "expected a port number after ':' in 'ssh', got ''", ":\"}"},
           {"bad user@10.0.0.2", "expected a user name (letters, digits, '.', '_', '-'; not starting with '-') "
                                 "before '@' in 'ssh', got 'bad user'", "bad user"},
           {"root@-oProxyCommand=x", "in 'ssh', got '-oProxyCommand=x'", "-oProxy"},
           {"root@[::1", "missing ']' after the IPv6 address in 'ssh'", "[::1"},
           {"root@[::1]22", "expected ':port' after ']' in 'ssh', got '22'", "22\"}"},
       }) {
    auto y = with_far_node("  - {name: far, host: 10.0.0.2, ssh: \"" + e.written + "\"}");
    auto r = parse(y);
    int column = y.column(5, e.at);
    if (e.at == ":\"}") column += 1;  // the empty port is after the ':'
    if (e.at == "\"root@\"}") column += 6;  // the empty host is after "root@"
    expect_error(r.errors, e.message, 5, column);
  }
}

TEST(topology_nodes, bad_ssh_mappings_and_node_fields) {
  auto y = base_file();
  y.insert(5, "  - {name: b1, host: 10.0.0.2, ssh: {user: \"\", port: 0, identity: \"\"}}");   // 5
  y.insert(6, "  - {name: b2, host: 10.0.0.3, ssh: {usr: x, host: \"-oProxy\"}}");           // 6
  y.insert(7, "  - {name: b3, host: 10.0.0.4, ssh: [root, 22]}");                           // 7
  y.insert(8, "  - {name: b4, host: \"-bad\", net_devices: \"eth 0\", afd: bin/afd}");        // 8
  y.insert(9, "  - {name: b5, host: 10.0.0.5, ssh: {port: 65536}, net_devices: \"\"}");       // 9
  auto r = parse(y);
  expect_error(r.errors, "expected a user name for 'user' of 'ssh', got an empty string", 5, y.column(5, "\"\""));
  expect_error(r.errors, "port out of range: 'port' must be in 1..65535, got 0", 5, y.column(5, "0,"));
  expect_error(r.errors, "expected the path of a private key file for 'identity', got an empty string", 5,
               y.column(5, "\"\"}"));
  expect_error(r.errors, "unknown key 'usr' in 'ssh' (did you mean 'user'?)", 6, y.column(6, "usr"));
  expect_error(r.errors, "for 'host' of 'ssh', got the string \"-oProxy\"", 6, y.column(6, "\"-oProxy\""));
  expect_error(r.errors,
               "expected 'user@host[:port]' or a mapping {user, host, port, identity} for 'ssh', got a sequence", 7,
               y.column(7, "[root"));
  expect_error(r.errors, "for 'host', got the string \"-bad\"", 8, y.column(8, "\"-bad\""));
  expect_error(r.errors, "expected a comma-separated list of network devices (e.g. \"eth0\" or \"mlx5_0:1,eth1\") "
                         "for 'net_devices', got the string \"eth 0\"", 8, y.column(8, "\"eth 0\""));
  expect_error(r.errors, "expected the absolute path of the afd executable on node 'b4' for 'afd' "
                         "(e.g. /opt/afd/bin/afd), got 'bin/afd'", 8, y.column(8, "bin/afd"));
  expect_error(r.errors, "port out of range: 'port' must be in 1..65535, got 65536", 9, y.column(9, "65536"));
  expect_error(r.errors, "for 'net_devices', got the string \"\"", 9, y.column(9, "\"\"}"));
  EXPECT_EQ(r.errors.size(), 11u) << testing::dump(r.errors);
}

TEST(topology_nodes, net_devices_and_afd_of_a_node_override_the_cluster_wide_ones) {
  auto y = with_far_node("  - {name: far, host: 10.0.0.2, net_devices: \"mlx5_0:1,eth1\", afd: /opt/afd/../afd/bin/afd}");
  y.add("transport: {net_devices: eth0}");
  auto r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  EXPECT_EQ(net_devices_of(*r.value, "far"), "mlx5_0:1,eth1");
  EXPECT_EQ(net_devices_of(*r.value, "local"), "eth0");
  EXPECT_EQ(afd_path_of(far_node(r), "/usr/bin/afd"), "/opt/afd/bin/afd");
  EXPECT_EQ(afd_path_of(*r.value->find_node("local"), "/usr/bin/afd"), "/usr/bin/afd");
}

TEST(topology_nodes, rank_zero_is_the_coordinators_node_then_file_order) {
  auto y = base_file();
  y.set(4, "  - {name: n0, host: 10.0.0.1}");
  y.insert(5, "  - {name: n1, host: 10.0.0.2}");
  y.insert(6, "  - {name: n2, host: 10.0.0.3}");
  y.set(7, "coordinator: {node: n1, port: 7600}");
  for (int line : {9, 11, 12}) y.set(line, std::string(y.lines[static_cast<std::size_t>(line - 1)]).replace(
                                                y.lines[static_cast<std::size_t>(line - 1)].find("local"), 5, "n2"));
  auto r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  std::vector<std::string> names;
  for (const node_spec* n : nodes_by_rank(*r.value)) names.push_back(n->name);
  EXPECT_EQ(names, (std::vector<std::string>{"n1", "n0", "n2"}));
}

// Standby coordinators: a node name or {node, port}, in order of succession after the primary.
TEST(topology_nodes, standby_coordinators_in_order_of_succession) {
  auto y = with_far_node("  - {name: far, host: 10.0.0.2}");
  y.set(6, "coordinator: {node: local, port: 7600, standby: [far, {node: local, port: 7601}]}");
  auto r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  const auto list = coordinator_endpoints(*r.value);
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].index, 0);
  EXPECT_EQ(list[0].node, "local");
  EXPECT_EQ(list[0].port, 7600);
  EXPECT_EQ(list[1].node, "far");
  EXPECT_EQ(list[1].host, "10.0.0.2");
  EXPECT_EQ(list[1].port, 7600);  // the primary's port when not given
  EXPECT_EQ(list[2].node, "local");
  EXPECT_EQ(list[2].port, 7601);
  EXPECT_EQ(list[2].index, 2);
  // Without standbys: the primary alone.
  auto plain = parse(base_file());
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(coordinator_endpoints(*plain.value).size(), 1u);
}

TEST(topology_nodes, bad_standby_coordinators_are_named_at_their_line) {
  {
    auto y = with_far_node("  - {name: far, host: 10.0.0.2}");
    y.set(6, "coordinator: {node: local, port: 7600, standby: [farr]}");
    auto r = parse(y);
    ASSERT_FALSE(r.ok());
    testing::expect_error(r.errors, "standby coordinator 1 is on node 'farr', which is not declared", 6,
                          y.column(6, "farr"));
  }
  {
    auto y = with_far_node("  - {name: far, host: 10.0.0.2}");
    y.set(6, "coordinator: {node: local, port: 7600, standby: [{node: far}, local]}");
    auto r = parse(y);
    ASSERT_FALSE(r.ok());
    testing::expect_error(r.errors, "standby coordinator 2 listens on node 'local', port 7600, as the primary", 6,
                          y.column(6, "local]"));
  }
  {
    auto y = with_far_node("  - {name: far, host: 10.0.0.2}");
    y.set(6, "coordinator: {node: local, port: 7600, standby: [{node: far, prot: 1}]}");
    auto r = parse(y);
    ASSERT_FALSE(r.ok());
    testing::expect_error(r.errors, "unknown key 'prot' in a standby coordinator", 6, y.column(6, "prot"));
  }
  {
    auto y = with_far_node("  - {name: far, host: 10.0.0.2}");
    y.set(6, "coordinator: {node: local, port: 7600, standby: far}");
    auto r = parse(y);
    ASSERT_FALSE(r.ok());
    testing::expect_error(r.errors, "expected a sequence of standby coordinators", 6, y.column(6, "far}"));
  }
}

// A scratch directory for files the environment checks look at; removed at the end.
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    std::string t = (std::filesystem::temp_directory_path() / "afd-nodes-test-XXXXXX").string();
    path = ::mkdtemp(t.data());
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, ::mode_t mode) const {
    const auto file = path / name;
    std::ofstream(file) << "not really a key\n";
    ::chmod(file.c_str(), mode);
    return file.string();
  }
};

TEST(topology_nodes, identity_of_a_remote_node_must_be_a_file_ssh_accepts) {
  scratch_dir dir;
  dir.write("good_key", 0600);
  const std::string open_key = dir.write("open_key", 0644);
  auto y = base_file();
  y.insert(5, "  - {name: r1, host: 10.255.255.1, ssh: {identity: good_key}}");    // 5
  y.insert(6, "  - {name: r2, host: 10.255.255.2, ssh: {identity: missing_key}}"); // 6
  y.insert(7, "  - {name: r3, host: 10.255.255.3, ssh: {identity: open_key}}");    // 7
  y.insert(8, "  - {name: r4, host: 10.255.255.4, ssh: {identity: .}}");           // 8
  // The same missing file on a node of this machine: not started over ssh, so not checked.
  y.set(4, "  - {name: local, host: 127.0.0.1, ssh: {identity: missing_key}}");
  y.set(9, "coordinator: {node: r1, port: 7600}");  // on a remote node: no port is probed here
  auto r = parse_text(y.text(), "t.yaml", dir.path.string());
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  const diagnostics errors = check_environment(*r.value);
  const std::string missing = (dir.path / "missing_key").string();
  expect_error(errors, "ssh identity file '" + missing + "' of node 'r2' does not exist", 6,
               y.column(6, "missing_key"));
  expect_error(errors,
               "ssh refuses identity file '" + open_key + "' of node 'r3': permissions 0644 let others read it; "
               "expected 0600 (chmod 600 " + open_key + ")",
               7, y.column(7, "open_key"));
  expect_error(errors, "of node 'r4' is not a regular file", 8, y.column(8, ".}"));
  EXPECT_EQ(errors.size(), 3u) << testing::dump(errors);
}

TEST(topology_nodes, afd_of_a_local_node_must_be_executable_here) {
  scratch_dir dir;
  const std::string not_executable = dir.write("afd-plain", 0644);
  const std::string executable = dir.write("afd-ok", 0755);
  auto y = base_file();
  y.set(4, "  - {name: local, host: 127.0.0.1, afd: " + not_executable + "}");
  y.insert(5, "  - {name: l2, host: localhost, afd: " + dir.path.string() + "/nope}");
  y.insert(6, "  - {name: l3, host: 127.0.0.2, afd: " + executable + "}");
  y.insert(7, "  - {name: far, host: 10.255.255.1, afd: /nowhere/afd}");  // remote: its own file system
  y.set(8, "coordinator: {node: far, port: 7600}");  // on a remote node: no port is probed here
  auto r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  const diagnostics errors = check_environment(*r.value);
  expect_error(errors, "afd executable '" + not_executable + "' of node 'local' is not executable on this machine", 4,
               y.column(4, not_executable));
  expect_error(errors, "afd executable '" + dir.path.string() + "/nope' of node 'l2' does not exist on this machine",
               5, y.column(5, dir.path.string() + "/nope"));
  EXPECT_EQ(errors.size(), 2u) << testing::dump(errors);
}

TEST(topology_nodes, net_devices_of_a_local_node_are_checked_here_and_win_over_the_cluster_wide_ones) {
  auto y = base_file();
  y.set(4, "  - {name: local, host: 127.0.0.1, net_devices: nosuchdev0}");
  y.add("transport: {net_devices: lo}");
  auto r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  diagnostics errors = check_environment(*r.value);
  ASSERT_EQ(errors.size(), 1u) << testing::dump(errors);
  EXPECT_EQ(errors[0].where.line, 4);
  EXPECT_EQ(errors[0].where.column, y.column(4, "nosuchdev0"));
  EXPECT_NE(errors[0].message.find("nosuchdev0"), std::string::npos) << errors[0].message;
  EXPECT_NE(errors[0].message.find("net_devices of node 'local'"), std::string::npos) << errors[0].message;

  // The node's own list is valid: a bad cluster-wide one no longer applies to it.
  y.set(4, "  - {name: local, host: 127.0.0.1, net_devices: lo}");
  y.set(11, "transport: {net_devices: nosuchdev0}");
  r = parse(y);
  ASSERT_TRUE(r.ok()) << testing::dump(r.errors);
  errors = check_environment(*r.value);
  EXPECT_TRUE(errors.empty()) << testing::dump(errors);
}

TEST(topology_nodes, an_address_of_this_machines_interfaces_is_local) {
  // `hostname -I` lists the addresses of every interface but loopback.
  std::stringstream addresses(shell("hostname -I 2>/dev/null"));
  std::string address;
  int seen = 0;
  while (addresses >> address) {
    if (address.find(':') != std::string::npos) continue;  // IPv6 link-local needs a zone
    EXPECT_TRUE(is_local_host(address)) << address;
    ++seen;
  }
  if (seen == 0) GTEST_SKIP() << "this machine has no address but loopback";
  EXPECT_FALSE(is_local_host("198.51.100.254"));  // TEST-NET-2: documentation only
}

}  // namespace
}  // namespace afd::topology
