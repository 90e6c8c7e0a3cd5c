// The namespace-node harness itself: two nodes with sshd and a Slurm cluster over them. What the
// ssh and Slurm launch paths will rely on is checked here from the outside, with the real tools:
// each node has its own address and host name, ssh from one node runs a command in the other
// with no prompt, srun places one task in each node, and `down` leaves nothing behind.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/multinode/namespace_nodes.hpp"

namespace afd::test_support {
namespace {

using namespace std::chrono_literals;

// Commands inside the nodes answer in well under a second; these bound a loaded machine.
constexpr auto command_deadline = 30s;
// ssh gives up on an unreachable address after ConnectTimeout (5 s in the run's ssh config);
// ARP fails first on a bridge (about 3 s). Twice that is a hang.
constexpr auto unreachable_budget = 12s;
// sbatch --wait polls the controller every 2 s: one poll plus a short job.
constexpr auto batch_deadline = 60s;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// The lines that start with `prefix`, without it.
std::vector<std::string> tagged(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& l : lines_of(text))
    if (l.rfind(prefix, 0) == 0) out.push_back(l.substr(prefix.size()));
  std::sort(out.begin(), out.end());
  return out;
}

// True while `pid` runs (a zombie has finished).
bool running(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// A task reports: node id, Slurm node name, host name, address of eth0. Kept in a file so that
// no shell on the way expands it early.
constexpr const char* report_task_script =
    "#!/bin/sh\n"
    "echo TASK $SLURM_NODEID $SLURMD_NODENAME $(hostname) $(ip -4 -o addr show dev eth0 | awk '{print $4}')\n";

class multinode_smoke : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    namespace_nodes::options o;
    o.nodes = 2;
    o.ssh = true;
    o.slurm = true;
    nodes_ = namespace_nodes::up(o, skip_, error_).release();
    if (!nodes_) return;
    std::cout << "[ harness ] nodes.sh up (2 nodes, sshd, munge, slurmctld, 2 slurmd): " << nodes_->up_seconds()
              << " s\n";
    report_task_ = nodes_->run_dir() + "/report-task.sh";
    std::ofstream(report_task_) << report_task_script;
  }
  static void TearDownTestSuite() {
    if (!nodes_) return;
    const std::string failure = nodes_->down();
    std::cout << "[ harness ] nodes.sh down: " << nodes_->down_seconds() << " s\n";
    EXPECT_EQ(failure, "");
    delete nodes_;
    nodes_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(nodes_, nullptr) << error_;
  }
  static std::string a() { return nodes_->address("a"); }
  static std::string b() { return nodes_->address("b"); }

  static namespace_nodes* nodes_;
  static std::string skip_;
  static std::string error_;
  static std::string report_task_;  // sh this: one TASK line
};
namespace_nodes* multinode_smoke::nodes_ = nullptr;
std::string multinode_smoke::report_task_;
std::string multinode_smoke::skip_;
std::string multinode_smoke::error_;

TEST_F(multinode_smoke, each_node_has_its_own_address_and_host_name) {
  ASSERT_EQ(nodes_->node_names(), (std::vector<std::string>{"a", "b"}));
  ASSERT_NE(a(), b());
  for (const auto& [node, mine, other] : {std::tuple{"a", a(), b()}, std::tuple{"b", b(), a()}}) {
    auto r = nodes_->exec(node, "echo HOST $(hostname); ip -4 -o addr show", command_deadline);
    ASSERT_TRUE(r.ok()) << r.output;
    EXPECT_EQ(tagged(r.output, "HOST "), std::vector<std::string>{node}) << r.output;
    EXPECT_NE(r.output.find("inet " + mine + "/24"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find(other), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("inet 127.0.0.1/8"), std::string::npos) << "loopback is up: " << r.output;
  }
}

TEST_F(multinode_smoke, ssh_from_node_a_runs_the_command_in_node_b_without_a_prompt) {
  // Through `ssh` as found on PATH (the run's config: key, known hosts, BatchMode).
  auto r = nodes_->exec("a", "ssh root@" + b() + " 'echo HOST $(hostname); ip -4 -o addr show dev eth0'",
                        command_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(tagged(r.output, "HOST "), std::vector<std::string>{"b"}) << r.output;
  EXPECT_NE(r.output.find("inet " + b() + "/24"), std::string::npos) << r.output;

  // And with every option spelled out on the command line, as a launcher would give them.
  const std::string explicit_ssh = "/usr/bin/ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o "
                                   "UserKnownHostsFile=" + nodes_->env("AFD_MN_SSH_KNOWN_HOSTS") +
                                   " -i " + nodes_->env("AFD_MN_SSH_KEY") + " -p 22 root@" + b();
  r = nodes_->exec("a", explicit_ssh + " 'echo HOST $(hostname)'", command_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(tagged(r.output, "HOST "), std::vector<std::string>{"b"}) << r.output;

  // The host itself reaches the nodes too (a client outside the cluster).
  r = nodes_->host("ssh root@" + a() + " 'echo HOST $(hostname)'", command_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(tagged(r.output, "HOST "), std::vector<std::string>{"a"}) << r.output;
}

TEST_F(multinode_smoke, ssh_refuses_another_key_and_an_unknown_host_key_without_asking) {
  // Another key (and no other): refused, no password prompt (key-only login, BatchMode).
  auto r = nodes_->exec("a",
                        "d=$(mktemp -d) && ssh-keygen -q -t ed25519 -N '' -f $d/k && "
                        "/usr/bin/ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile=" +
                            nodes_->env("AFD_MN_SSH_KNOWN_HOSTS") + " -i $d/k root@" + b() +
                            " true; s=$?; rm -rf $d; exit $s",
                        command_deadline);
  EXPECT_EQ(r.status, 255) << r.output;
  EXPECT_NE(r.output.find("Permission denied (publickey)"), std::string::npos) << r.output;

  // Known hosts that do not list node b: refused, not asked.
  r = nodes_->exec("a",
                   "/usr/bin/ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile=/dev/null -o "
                   "GlobalKnownHostsFile=/dev/null -i " + nodes_->env("AFD_MN_SSH_KEY") + " root@" + b() + " true",
                   command_deadline);
  EXPECT_EQ(r.status, 255) << r.output;
  EXPECT_NE(r.output.find("Host key verification failed"), std::string::npos) << r.output;
}

TEST_F(multinode_smoke, ssh_to_an_unreachable_node_fails_within_its_connect_timeout) {
  const std::string nowhere = a().substr(0, a().rfind('.')) + ".250";  // in the subnet, no node
  const auto started = std::chrono::steady_clock::now();
  auto r = nodes_->exec("a", "ssh root@" + nowhere + " true", command_deadline);
  const auto took = std::chrono::steady_clock::now() - started;
  std::cout << "[ harness ] ssh to an unreachable address failed after "
            << std::chrono::duration<double>(took).count() << " s: " << r.output;
  EXPECT_EQ(r.status, 255) << r.output;
  EXPECT_LT(took, unreachable_budget);
  EXPECT_TRUE(r.output.find("No route to host") != std::string::npos ||
              r.output.find("timed out") != std::string::npos)
      << r.output;
}

TEST_F(multinode_smoke, srun_places_one_task_in_each_node) {
  auto r = nodes_->host("srun -N2 --ntasks-per-node=1 sh " + report_task_, command_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(tagged(r.output, "TASK "),
            (std::vector<std::string>{"0 a a " + a() + "/24", "1 b b " + b() + "/24"}))
      << r.output;
}

TEST_F(multinode_smoke, salloc_gives_an_allocation_in_which_srun_reaches_both_nodes) {
  // As a user on a login node: salloc, then srun inside the allocation (afd launch --via slurm).
  auto r = nodes_->host("salloc -N2 sh -c 'echo ALLOC $SLURM_NNODES $SLURM_JOB_NODELIST; "
                        "srun --ntasks-per-node=1 sh " + report_task_ + "'",
                        command_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(tagged(r.output, "ALLOC "), std::vector<std::string>{"2 a,b"}) << r.output;
  EXPECT_EQ(tagged(r.output, "TASK "),
            (std::vector<std::string>{"0 a a " + a() + "/24", "1 b b " + b() + "/24"}))
      << r.output;
}

TEST_F(multinode_smoke, a_batch_script_runs_in_the_first_node_and_its_srun_in_both) {
  const std::string script = nodes_->run_dir() + "/smoke-job.sh";
  const std::string out = nodes_->run_dir() + "/smoke-job.out";
  {
    std::ofstream s(script);
    s << "#!/bin/sh\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --job-name=smoke\n"
      << "echo BATCH $(hostname) $(ip -4 -o addr show dev eth0 | awk '{print $4}')\n"
      << "srun sh " << report_task_ << "\n";
  }
  auto r = nodes_->host("sbatch --wait -o " + out + " " + script, batch_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(tagged(text.str(), "BATCH "), std::vector<std::string>{"a " + a() + "/24"}) << text.str();
  EXPECT_EQ(tagged(text.str(), "TASK "),
            (std::vector<std::string>{"0 a a " + a() + "/24", "1 b b " + b() + "/24"}))
      << text.str();
}

// A separate run, so that its teardown can be watched: processes left running on purpose in both
// nodes and a client outside them are all gone afterwards, with every namespace, interface,
// mount, registry entry and file of the run.
TEST(multinode_harness, down_leaves_no_process_namespace_interface_or_file) {
  std::string skip, error;
  namespace_nodes::options o;
  o.ssh = true;
  o.slurm = true;
  auto nodes = namespace_nodes::up(o, skip, error);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_NE(nodes, nullptr) << error;
  const std::string run = nodes->run_dir();
  const std::string id = nodes->env("AFD_MN_ID");
  ASSERT_FALSE(id.empty());

  // A job step in both nodes, held by an srun outside them; a process started over ssh in b.
  auto r = nodes->host("setsid srun -N2 sleep 600 >/dev/null 2>&1 & echo PID $!", command_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  std::vector<std::string> pids = tagged(r.output, "PID ");
  r = nodes->exec("a", "ssh root@" + nodes->address("b") + " 'nohup sleep 600 >/dev/null 2>&1 & echo PID $!'",
                  command_deadline);
  ASSERT_TRUE(r.ok()) << r.output;
  for (auto& p : tagged(r.output, "PID ")) pids.push_back(p);
  // The step's sleeps run in the nodes: wait until Slurm has started both (bounded).
  std::vector<std::string> step_pids;
  for (int attempt = 0; attempt < 100 && step_pids.size() < 3; ++attempt) {
    step_pids.clear();
    for (const auto& node : {"a", "b"}) {
      auto p = run_command({"ip", "netns", "pids", nodes->env(std::string("AFD_MN_NETNS_") + node)}, 5s);
      for (const auto& pid : lines_of(p.output)) {
        std::ifstream cmd("/proc/" + pid + "/cmdline");
        std::string c;
        std::getline(cmd, c, '\0');
        if (c.find("sleep") != std::string::npos) step_pids.push_back(pid);
      }
    }
    if (step_pids.size() < 3) std::this_thread::sleep_for(100ms);  // 2 from srun + 1 from ssh
  }
  ASSERT_GE(step_pids.size(), 3u) << "the srun step and the ssh'd sleep should be running";
  for (const auto& p : step_pids)
    if (std::find(pids.begin(), pids.end(), p) == pids.end()) pids.push_back(p);
  for (const auto& p : pids) ASSERT_TRUE(running(p)) << p;

  const std::string failure = nodes->down();
  std::cout << "[ harness ] nodes.sh down with a running job and ssh session: " << nodes->down_seconds() << " s\n";
  EXPECT_EQ(failure, "");
  for (const auto& p : pids) EXPECT_FALSE(running(p)) << "process " << p << " outlived the run";

  auto netns = run_command({"ip", "netns", "list"}, 5s);
  EXPECT_EQ(netns.output.find("afdmn-" + id), std::string::npos) << netns.output;
  auto links = run_command({"ip", "-o", "link", "show"}, 5s);
  EXPECT_EQ(links.output.find("mn" + id), std::string::npos) << links.output;
  std::ifstream mounts("/proc/self/mountinfo");
  std::stringstream mount_text;
  mount_text << mounts.rdbuf();
  EXPECT_EQ(mount_text.str().find(run), std::string::npos) << "a UTS namespace mount is left";
  EXPECT_FALSE(std::filesystem::exists(run));
  for (const auto& proc : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = proc.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos || !running(pid)) continue;
    for (const char* what : {"/cmdline", "/environ"}) {
      std::ifstream in(proc.path().string() + what, std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      EXPECT_EQ(text.str().find(run + "/"), std::string::npos) << "process " << pid << " still names the run";
    }
  }
}

// A test killed outright (a ctest timeout) cannot run its teardown: the next `up` does it.
TEST(multinode_harness, a_run_whose_owner_exited_is_torn_down_by_the_next_up) {
  const pid_t owner = ::fork();
  if (owner == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_GT(owner, 0);
  char dir[] = "/tmp/afdmn.XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  auto r = run_command({AFD_NODES_SH, "up", dir, "--nodes", "1", "--owner", std::to_string(owner)}, 60s);
  if (r.status == 77) {
    ::kill(owner, SIGKILL);
    ::waitpid(owner, nullptr, 0);
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << r.output;
  }
  ASSERT_TRUE(r.ok()) << r.output;
  std::ifstream env(std::string(dir) + "/env");
  std::string line, netns;
  while (std::getline(env, line))
    if (line.rfind("AFD_MN_NETNS_a=", 0) == 0) netns = line.substr(15);
  ASSERT_FALSE(netns.empty());
  EXPECT_TRUE(std::filesystem::exists("/run/netns/" + netns));

  // The owner is alive: reap leaves the run alone.
  r = run_command({AFD_NODES_SH, "reap"}, 60s);
  EXPECT_TRUE(r.ok()) << r.output;
  EXPECT_TRUE(std::filesystem::exists("/run/netns/" + netns));

  ::kill(owner, SIGKILL);
  ::waitpid(owner, nullptr, 0);
  r = run_command({AFD_NODES_SH, "reap"}, 60s);
  EXPECT_TRUE(r.ok()) << r.output;
  EXPECT_NE(r.output.find("has exited"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists("/run/netns/" + netns));
  EXPECT_FALSE(std::filesystem::exists(dir));
  if (std::filesystem::exists(dir)) run_command({AFD_NODES_SH, "down", dir}, 60s);
}

}  // namespace
}  // namespace afd::test_support
