// A 2A2F cluster split across two namespace nodes (attention workers on node a, FFN workers on
// node b; UCX forced to tcp on eth0 between them): started over ssh and over Slurm, its tokens equal
// the reference engine's (`afd generate --model DIR --json`), each worker runs in its node's network
// namespace, the control plane refuses peers without the cluster's credentials (status, stop,
// submit, register), `afd stop` leaves nothing behind, and a node that cannot be reached fails the
// launch within a bound with ssh's message, leaving nothing running. Skips where namespaces cannot
// be made (not root, packages missing).
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "deploy/launch/child_process.hpp"
#include "tests/multinode/namespace_nodes.hpp"

namespace afd::test_support {
namespace {

using namespace std::chrono_literals;
using launch::child_process;

constexpr auto command_deadline = 60s;
/// ssh to an address with no node gives up after ~3 s here (ARP); ConnectTimeout bounds it at 10 s.
constexpr auto unreachable_budget = 25s;
/// After `afd stop` the agents and workers of every node exit within a few seconds.
constexpr auto gone_within = 20s;
const std::string prompt = "1,2,3,4,5,6,7";

class multinode_cluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    namespace_nodes::options o;
    o.nodes = 2;
    o.ssh = true;
    o.slurm = true;
    nodes_ = namespace_nodes::up(o, skip_, error_).release();
    if (!nodes_) return;
    dir_ = nodes_->run_dir() + "/afd";
    std::filesystem::create_directories(dir_);
    model_ = dir_ + "/tiny";
    auto r = run_command({AFD_EXECUTABLE, "make-model", "--preset", "tiny", "--out", model_}, command_deadline);
    if (!r.ok()) error_ = "make-model: " + r.output;
    r = run_command({AFD_EXECUTABLE, "generate", "--model", model_, "--prompt-ids", prompt, "--max-new-tokens", "12",
                     "--json"},
                    command_deadline);
    if (!r.ok()) error_ = "reference generate: " + r.output;
    reference_ = r.output.substr(r.output.find('{'));
  }
  static void TearDownTestSuite() {
    if (!nodes_) return;
    EXPECT_EQ(nodes_->down(), "");
    delete nodes_;
    nodes_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(nodes_, nullptr) << error_;
    ASSERT_EQ(error_, "");
  }

  /// The split topology: attention on a, FFN on b (or on `ffn_host`), UCX over tcp on eth0.
  static std::string topology(const std::string& name, int port, const std::string& ffn_host = "",
                              const std::string& coordinator_extra = "") {
    const std::string file = dir_ + "/" + name + ".yaml";
    std::ofstream(file) << "cluster: {name: " << name << "}\n"
                        << "model: {path: " << model_ << "}\n"
                        << "nodes:\n"
                        << "  - {name: a, host: " << nodes_->address("a") << ", net_devices: eth0}\n"
                        << "  - {name: b, host: " << (ffn_host.empty() ? nodes_->address("b") : ffn_host)
                        << ", net_devices: eth0}\n"
                        << "coordinator: {node: a, port: " << port << coordinator_extra << "}\n"
                        << "transport: {kind: ucx, tls: tcp}\n"
                        << "pipeline: {micro_batches: 2}\n"
                        << "attention_workers:\n"
                        << "  - {name: a0, node: a, device: cpu, kv_blocks: 256, max_batch: 8}\n"
                        << "  - {name: a1, node: a, device: cpu, kv_blocks: 256, max_batch: 8}\n"
                        << "ffn_workers:\n"
                        << "  - {name: f0, node: b, device: cpu}\n"
                        << "  - {name: f1, node: b, device: cpu}\n"
                        << "placement: {experts: contiguous}\n";
    return file;
  }
  /// `afd ARGS` inside `node`, run directories under the test's directory.
  static command_result afd(const std::string& node, const std::string& args) {
    return nodes_->exec(node, "XDG_RUNTIME_DIR=" + dir_ + " exec " + std::string(AFD_EXECUTABLE) + " " + args,
                        command_deadline);
  }
  static std::string netns_of_node(const std::string& node) {
    auto r = nodes_->exec(node, "readlink /proc/self/ns/net", command_deadline);
    std::string s = r.output;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  /// Every worker's pid in a processes file: name -> pid.
  static std::map<std::string, std::string> pids_in(const std::string& processes_file) {
    std::map<std::string, std::string> out;
    std::ifstream in(processes_file);
    std::string name, pid, rest;
    while (in >> name >> pid) {
      std::getline(in, rest);
      if (name != "launcher" && name != "agent" && name.rfind("node-", 0) != 0 && name != "srun" &&
          name != "coordinator" && name.rfind("standby-", 0) != 0)
        out[name] = pid;
    }
    return out;
  }

  /// What every started cluster must show: the reference tokens through a client on the other
  /// node, each worker in its node's namespace, and refusals without credentials.
  void check_running_cluster(const std::string& file, int port, const std::string& a_processes,
                             const std::string& b_processes) {
    const std::string a_dir = a_processes.substr(0, a_processes.rfind('/'));
    const std::string b_dir = b_processes.substr(0, b_processes.rfind('/'));
    auto logs = [&] {
      std::string out;
      for (const auto& d : {a_dir, b_dir})
        for (const auto& e : std::filesystem::directory_iterator(d))
          if (e.path().extension() == ".log") out += "--- " + e.path().string() + "\n" + slurp(e.path().string());
      return out;
    };
    auto got = afd("b", "generate --connect " + file + " --prompt-ids " + prompt + " --max-new-tokens 12 --json");
    ASSERT_TRUE(got.ok()) << got.output << logs();
    EXPECT_NE(got.output.find(reference_), std::string::npos) << "cluster: " << got.output << "reference: " << reference_;

    const std::string ns_a = netns_of_node("a"), ns_b = netns_of_node("b");
    ASSERT_NE(ns_a, ns_b);
    auto on_a = pids_in(a_processes), on_b = pids_in(b_processes);
    ASSERT_EQ(on_a.size(), 2u) << slurp(a_processes);
    ASSERT_EQ(on_b.size(), 2u) << slurp(b_processes);
    for (const auto& [name, pid] : on_a) EXPECT_EQ(netns_of(pid), ns_a) << name;
    // The coordinator's own process runs on its node (a), started by that node's launcher or agent.
    {
      std::ifstream in(a_processes);
      std::string name, pid, rest;
      bool found = false;
      while (in >> name >> pid) {
        std::getline(in, rest);
        if (name == "coordinator") {
          found = true;
          EXPECT_EQ(netns_of(pid), ns_a) << "the coordinator's process";
        }
      }
      EXPECT_TRUE(found) << slurp(a_processes);
    }
    for (const auto& [name, pid] : on_b) EXPECT_EQ(netns_of(pid), ns_b) << name;

    // Without the cluster's credentials: status, stop, submit and registering as a worker are refused.
    const std::string at = nodes_->address("a") + ":" + std::to_string(port);
    for (const std::string& cmd : {"status --connect " + at, "stop --connect " + at,
                                   "generate --connect " + at + " --prompt-ids 1,2 --json",
                                   "worker --topology " + file + " --name f1 --coordinator " + at}) {
      auto r = nodes_->exec("b", "env -u AFD_CREDENTIALS " + std::string(AFD_EXECUTABLE) + " " + cmd, command_deadline);
      EXPECT_EQ(r.status, 1) << cmd << ": " << r.output;
      EXPECT_NE(r.output.find("the peer closed the connection during the handshake"), std::string::npos)
          << cmd << ": " << r.output;
      EXPECT_NE(r.output.find("has no cluster credentials"), std::string::npos) << cmd << ": " << r.output;
    }
    auto status = afd("a", "status " + file);
    EXPECT_TRUE(status.ok()) << status.output << logs();
    EXPECT_NE(status.output.find("ready, epoch 1"), std::string::npos) << status.output;  // nobody got in
  }

  /// `salloc -N2 afd launch FILE --via slurm --foreground` from node a: the cluster serves (what
  /// check_running_cluster checks; with `coordinator_extra` naming a standby on b, node b's agent
  /// runs it), and `afd stop` ends the launcher cleanly and leaves nothing.
  void run_over_slurm(const std::string& name, int port, const std::string& coordinator_extra) {
    const std::string file = topology(name, port, "", coordinator_extra);
    const std::string log = dir_ + "/salloc-" + name + ".log";
    auto c = child_process::spawn({AFD_NODES_SH, "exec", nodes_->run_dir(), "a", "--", "sh", "-c",
                                   "XDG_RUNTIME_DIR=" + dir_ + " exec salloc -N2 " + AFD_EXECUTABLE + " launch " + file +
                                       " --via slurm --foreground"},
                                  log);
    ASSERT_TRUE(c) << c.err().message();
    const auto until = std::chrono::steady_clock::now() + 90s;
    while (slurp(log).find("serving at") == std::string::npos && !c->poll() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(100ms);
    ASSERT_NE(slurp(log).find("serving at"), std::string::npos) << slurp(log);
    EXPECT_NE(slurp(log).find("--slurm-map a=a,b=b"), std::string::npos) << slurp(log);
    const std::string b_processes = dir_ + "/afd-" + name + "-node-b-" + std::to_string(port) + "/processes";
    check_running_cluster(file, port, dir_ + "/afd-" + name + "-node-a-" + std::to_string(port) + "/processes",
                          b_processes);
    if (!coordinator_extra.empty()) {
      EXPECT_NE(slurp(b_processes).find("standby-1 "), std::string::npos) << slurp(b_processes);
    }
    auto stop = afd("a", "stop " + file);
    EXPECT_TRUE(stop.ok()) << stop.output;
    auto status = c->wait_for(30000);
    ASSERT_TRUE(status) << slurp(log);
    EXPECT_TRUE(launch::exited_cleanly(*status)) << slurp(log);
    std::string left;
    EXPECT_TRUE(nothing_left(file, gone_within, left)) << left;
  }

  static namespace_nodes* nodes_;
  static std::string skip_, error_, dir_, model_, reference_;
};
namespace_nodes* multinode_cluster::nodes_ = nullptr;
std::string multinode_cluster::skip_, multinode_cluster::error_, multinode_cluster::dir_, multinode_cluster::model_,
    multinode_cluster::reference_;

TEST_F(multinode_cluster, over_ssh_gives_the_reference_tokens_and_stop_leaves_nothing) {
  const int port = 17810;
  const std::string file = topology("viassh", port);
  auto launched = afd("a", "launch " + file);  // background: returns once every worker is ready
  ASSERT_TRUE(launched.ok()) << launched.output;
  std::cout << "[ launch  ] " << launched.output.substr(0, launched.output.find('\n')) << "\n";
  EXPECT_NE(launched.output.find("agent        node b"), std::string::npos) << launched.output;
  check_running_cluster(file, port, dir_ + "/afd-viassh-" + std::to_string(port) + "/processes",
                        "/tmp/afd-viassh-node-b-" + std::to_string(port) + "/processes");
  auto stop = afd("a", "stop " + file);
  EXPECT_TRUE(stop.ok()) << stop.output;
  std::string left;
  EXPECT_TRUE(nothing_left(file, gone_within, left)) << left;
}

// No process outlives its cluster: SIGKILL of the launcher (no orderly stop) takes its local
// workers down (PR_SET_PDEATHSIG), its ssh client ends, and node b's agent, reading the end of its
// stdin, stops node b's workers.
TEST_F(multinode_cluster, a_killed_launcher_leaves_nothing_on_either_node) {
  const int port = 17813;
  const std::string file = topology("killed", port);
  auto launched = afd("a", "launch " + file);
  ASSERT_TRUE(launched.ok()) << launched.output;
  long launcher = 0;
  std::ifstream(dir_ + "/afd-killed-" + std::to_string(port) + "/launcher.pid") >> launcher;
  ASSERT_GT(launcher, 0);
  ASSERT_EQ(::kill(static_cast<pid_t>(launcher), SIGKILL), 0);
  std::string left;
  EXPECT_TRUE(nothing_left(file, gone_within, left)) << left;
}

TEST_F(multinode_cluster, over_slurm_gives_the_reference_tokens_and_stop_leaves_nothing) {
  run_over_slurm("viaslurm", 17811, "");
}

// Over Slurm with a standby coordinator on node b: node b's agent (an srun task) starts it beside
// its workers, the cluster serves, and `afd stop` ends the standby too.
TEST_F(multinode_cluster, over_slurm_with_a_standby_coordinator_serves_and_stop_leaves_nothing) {
  run_over_slurm("sbslurm", 17814, ", standby: [b]");
}

TEST_F(multinode_cluster, an_unreachable_node_fails_the_launch_with_ssh_s_message_and_leaves_nothing) {
  const int port = 17812;
  // .99 of the nodes' subnet: no node answers there.
  std::string addr = nodes_->address("b");
  addr = addr.substr(0, addr.rfind('.')) + ".99";
  const std::string file = topology("unreachable", port, addr);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = afd("a", "launch " + file + " --foreground");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ unreach ] failed after " << seconds << " s\n";
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_LT(seconds, std::chrono::duration<double>(unreachable_budget).count()) << r.output;
  EXPECT_NE(r.output.find("the agent of node 'b' (ssh root@" + addr), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ssh: connect to host " + addr + " port 22"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cluster not started"), std::string::npos) << r.output;
  std::string left;
  EXPECT_TRUE(nothing_left(file, 5s, left)) << left;
}

}  // namespace
}  // namespace afd::test_support
