// The launch plan: processes per worker or per group, command lines, and the checks that stop a
// launch before anything starts (remote hosts, a remote coordinator, loopback across processes).
#include <gtest/gtest.h>

#include "deploy/launch/child_process.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/supervision.hpp"

#include <chrono>

namespace afd::launch {
namespace {

const char* kBase = R"(cluster: {name: t}
model: {path: /nonexistent/model}
nodes:
  - {name: here, host: 127.0.0.1}
  - {name: far, host: 10.255.0.7}
coordinator: {node: here, port: 7650}
transport: {kind: ucx}
attention_workers:
  - {name: a0, node: here, device: cpu}
  - {name: a1, node: NODE_A1, device: cpu}
ffn_workers:
  - {name: f0, node: here, device: cpu}
)";

topology::topology parse(std::string yaml, const std::string& a1_node = "here", const std::string& extra = "") {
  yaml.replace(yaml.find("NODE_A1"), 7, a1_node);
  auto t = topology::parse_text(yaml + extra, "t.yaml", "/");
  EXPECT_TRUE(t.ok()) << t.to_error().message();
  return std::move(*t.value);
}

worker_command_options opts() {
  worker_command_options o;
  o.afd_executable = "/opt/afd/bin/afd";
  o.topology_file = "/etc/afd/t.yaml";
  o.coordinator = "127.0.0.1:7650";
  return o;
}

TEST(launch_plan, one_process_per_worker_by_default) {
  const auto t = parse(kBase);
  const auto plan = plan_launch(t);
  ASSERT_EQ(plan.processes.size(), 3u);
  EXPECT_EQ(plan.processes[0].workers, std::vector<std::string>{"a0"});
  EXPECT_EQ(plan.processes[1].workers, std::vector<std::string>{"a1"});
  EXPECT_EQ(plan.processes[2].workers, std::vector<std::string>{"f0"});
  for (const auto& p : plan.processes) {
    EXPECT_TRUE(p.local);
    EXPECT_FALSE(p.in_launcher);
  }
  EXPECT_EQ(plan.coordinator_port, 7650);
  EXPECT_TRUE(plan.coordinator_local);
  EXPECT_TRUE(check_launchable(t, plan, opts()).empty());
}

TEST(launch_plan, groups_and_the_coordinators_group_runs_in_the_launcher) {
  const auto t = parse(kBase, "here",
                       "processes:\n  - {name: main, workers: [coordinator, f0]}\n  - {name: attn, workers: [a0, a1]}\n");
  const auto plan = plan_launch(t);
  ASSERT_EQ(plan.processes.size(), 2u);
  EXPECT_TRUE(plan.processes[0].in_launcher);
  EXPECT_EQ(plan.processes[0].name, "main");
  EXPECT_EQ(plan.processes[0].workers, std::vector<std::string>{"f0"});
  EXPECT_FALSE(plan.processes[1].in_launcher);
  EXPECT_EQ(plan.processes[1].workers, (std::vector<std::string>{"a0", "a1"}));
  EXPECT_EQ(shell_join(worker_command(plan.processes[1], opts())),
            "/opt/afd/bin/afd worker --topology /etc/afd/t.yaml --name a0 --name a1 --coordinator 127.0.0.1:7650");
}

TEST(launch_plan, remote_node_gets_an_agent_over_ssh_and_needs_a_reachable_coordinator) {
  const auto t = parse(kBase, "far");
  const auto plan = plan_launch(t);
  ASSERT_EQ(plan.processes.size(), 3u);
  EXPECT_FALSE(plan.processes[1].local);
  EXPECT_EQ(plan.processes[1].host, "10.255.0.7");
  const auto remote = remote_nodes(t, plan);
  ASSERT_EQ(remote.size(), 1u);
  EXPECT_EQ(remote[0]->name, "far");
  // The coordinator's node is 127.0.0.1, which node 'far' cannot reach: refused at the node's line.
  auto o = opts();
  o.model_override = "/data/my model";
  const auto errors = check_launchable(t, plan, o);
  ASSERT_EQ(errors.size(), 1u);
  const std::string m = errors[0].to_string();
  EXPECT_NE(m.find("t.yaml:4:"), std::string::npos) << m;
  EXPECT_NE(m.find("node 'far' cannot reach"), std::string::npos) << m;
  // The agent's command line, and ssh around it: no prompt, a bounded connect, quoted once.
  o.credentials = "/run/afd/tls";
  const auto agent = agent_command("far", o, true);
  EXPECT_EQ(shell_join(agent), "/opt/afd/bin/afd node /etc/afd/t.yaml --node far --coordinator 127.0.0.1:7650 "
                               "--model '/data/my model' --credentials /run/afd/tls --exit-with-stdin");
  topology::ssh_target target{"afd", "10.255.0.7", 2222, "/home/afd/.ssh/id_ed25519"};
  const auto ssh = ssh_command(target, agent);
  EXPECT_EQ(shell_join(ssh), "ssh -o BatchMode=yes -o ConnectTimeout=10 -p 2222 -i /home/afd/.ssh/id_ed25519 "
                             "afd@10.255.0.7 -- '/opt/afd/bin/afd node /etc/afd/t.yaml --node far --coordinator "
                             "127.0.0.1:7650 --model '\\''/data/my model'\\'' --credentials /run/afd/tls "
                             "--exit-with-stdin'");
  EXPECT_EQ(shell_join(ssh_command({"root", "b", 22, ""}, {"afd", "status"})),
            "ssh -o BatchMode=yes -o ConnectTimeout=10 root@b -- 'afd status'");
}

TEST(launch_plan, loopback_only_clusters_may_stay_plain) {
  EXPECT_FALSE(loopback_only(parse(kBase)));
  std::string yaml = kBase;
  const std::string far = "  - {name: far, host: 10.255.0.7}\n";
  yaml.replace(yaml.find(far), far.size(), "  - {name: far, host: 127.0.0.2}\n");
  EXPECT_TRUE(loopback_only(parse(yaml)));
}

TEST(launch_plan, remote_coordinator_is_refused) {
  std::string yaml = kBase;
  const std::string here = "{node: here, port";
  yaml.replace(yaml.find(here), here.size(), "{node: far, port");
  const auto t = parse(yaml);
  const auto plan = plan_launch(t);
  EXPECT_FALSE(plan.coordinator_local);
  const auto errors = check_launchable(t, plan, opts());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].to_string().find("t.yaml:6:"), std::string::npos) << errors[0].to_string();
  EXPECT_NE(errors[0].message.find("run it on 10.255.0.7"), std::string::npos) << errors[0].message;
}

TEST(launch_plan, loopback_needs_a_single_process) {
  std::string yaml = kBase;
  yaml.replace(yaml.find("{kind: ucx}"), 11, "{kind: loopback}");
  const std::string far = "  - {name: far, host: 10.255.0.7}\n";
  yaml.replace(yaml.find(far), far.size(), "");
  auto t = parse(yaml);
  auto errors = check_launchable(t, plan_launch(t), opts());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].to_string().find("t.yaml:6:"), std::string::npos) << errors[0].to_string();
  EXPECT_NE(errors[0].message.find("4 processes"), std::string::npos) << errors[0].message;
  t = parse(yaml, "here", "processes:\n  - {name: all, workers: [coordinator, a0, a1, f0]}\n");
  EXPECT_TRUE(check_launchable(t, plan_launch(t), opts()).empty());
}

TEST(launch_plan, host_port) {
  EXPECT_EQ(host_port("::1", 7600), "[::1]:7600");
  EXPECT_EQ(host_port("gpu1", 80), "gpu1:80");
  auto a = parse_host_port("[::1]:7600");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->first, "::1");
  EXPECT_EQ(a->second, 7600);
  a = parse_host_port("127.0.0.1:1");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->second, 1);
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", ":7600", "h:0", "h:65536", "h:7x", "::1:7600", "[::1]7600"}) {
    auto r = parse_host_port(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_NE(r.err().message().find(bad), std::string::npos);
    }
  }
  EXPECT_EQ(shell_join({"a b", "it's", "x"}), "'a b' 'it'\\''s' x");
}

TEST(launch_plan, host_port_lists) {
  auto l = parse_host_ports("10.0.0.1:7600,[::1]:7601,gpu2:80");
  ASSERT_TRUE(l);
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ((*l)[1].first, "::1");
  EXPECT_EQ((*l)[2].second, 80);
  EXPECT_EQ(join_host_ports(*l), "10.0.0.1:7600,[::1]:7601,gpu2:80");
  for (const char* bad : {"", "10.0.0.1:7600,", ",10.0.0.1:7600", "10.0.0.1:7600,h"}) EXPECT_FALSE(parse_host_ports(bad)) << bad;
}

// A standby coordinator on a node without workers still gets that node an agent; every address
// travels to workers and clients, the primary first.
TEST(launch_plan, standby_coordinators_are_planned_on_their_nodes) {
  std::string yaml = kBase;
  yaml.replace(yaml.find("coordinator: {node: here, port: 7650}"), 37,
               "coordinator: {node: here, port: 7650, standby: [far, {node: here, port: 7651}]}");
  auto t = parse(yaml);
  auto plan = plan_launch(t);
  ASSERT_EQ(plan.coordinators.size(), 3u);
  EXPECT_EQ(plan.coordinators[1].node, "far");
  EXPECT_FALSE(plan.coordinators[1].local);
  EXPECT_TRUE(plan.coordinators[2].local);
  EXPECT_EQ(plan.coordinator_addresses(), "127.0.0.1:7650,10.255.0.7:7650,127.0.0.1:7651");
  auto remote = remote_nodes(t, plan);
  ASSERT_EQ(remote.size(), 1u);
  EXPECT_EQ(remote[0]->name, "far");
}

TEST(child_process, exit_status_signal_and_log) {
  const std::string log = ::testing::TempDir() + "/afd_child_test.log";
  std::remove(log.c_str());
  auto c = child_process::spawn({"/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"}, log);
  ASSERT_TRUE(c) << c.err().message();
  auto status = c->wait_for(10000);
  ASSERT_TRUE(status);
  EXPECT_EQ(describe_wait_status(*status), "exited with status 3");
  EXPECT_FALSE(exited_cleanly(*status));
  EXPECT_EQ(tail_lines(log, 1), "oops\n");
  EXPECT_EQ(tail_lines(log, 5), "hello\noops\n");

  auto s = child_process::spawn({"/bin/sleep", "30"}, log);
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->poll());
  s->signal(SIGKILL);
  status = s->wait_for(10000);
  ASSERT_TRUE(status);
  EXPECT_NE(describe_wait_status(*status).find("killed by signal 9"), std::string::npos);

  auto missing = child_process::spawn({"/nonexistent/afd"}, log);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.err().message().find("/nonexistent/afd"), std::string::npos);
}

}  // namespace
}  // namespace afd::launch

namespace afd::launch {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::seconds;

TEST(restart_budget, three_restarts_in_sixty_seconds_then_gives_up) {
  restart_budget b;  // the default policy
  EXPECT_EQ(b.policy().to_string(), "3 restarts in 60 s");
  const auto t0 = clock::time_point{} + seconds(1000);
  EXPECT_TRUE(b.try_restart(t0));
  EXPECT_TRUE(b.try_restart(t0 + seconds(1)));
  EXPECT_TRUE(b.try_restart(t0 + seconds(2)));
  EXPECT_EQ(b.used(t0 + seconds(2)), 3);
  EXPECT_FALSE(b.try_restart(t0 + seconds(3)));  // the 4th exit inside the window: given up
  EXPECT_EQ(b.total(), 3);
}

TEST(restart_budget, the_window_slides) {
  restart_budget b({2, seconds(10)});
  const auto t0 = clock::time_point{} + seconds(1000);
  EXPECT_TRUE(b.try_restart(t0));
  EXPECT_TRUE(b.try_restart(t0 + seconds(5)));
  EXPECT_FALSE(b.try_restart(t0 + seconds(9)));
  // The first restart leaves the window at t0 + 10 s: one more is allowed, then none until t0 + 15 s.
  EXPECT_TRUE(b.try_restart(t0 + seconds(10)));
  EXPECT_FALSE(b.try_restart(t0 + seconds(14)));
  EXPECT_TRUE(b.try_restart(t0 + seconds(15)));
  EXPECT_EQ(b.total(), 4);
  EXPECT_EQ(b.used(t0 + seconds(100)), 0);
}

}  // namespace
}  // namespace afd::launch

namespace afd::launch {
namespace {

TEST(launch_plan, the_files_credentials_are_resolved_against_its_directory) {
  std::string yaml = kBase;
  const std::string port = "port: 7650}";
  yaml.replace(yaml.find(port), port.size(), "port: 7650, credentials: secrets/tls}");
  yaml.replace(yaml.find("NODE_A1"), 7, "here");
  auto t = topology::parse_text(yaml, "t.yaml", "/etc/afd");
  ASSERT_TRUE(t.ok()) << t.to_error().message();
  EXPECT_EQ(t.value->coordinator.credentials, "/etc/afd/secrets/tls");
  yaml.replace(yaml.find("secrets/tls"), 11, "''");
  auto empty = topology::parse_text(yaml, "t.yaml", "/etc/afd");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.to_error().message().find("t.yaml:6:"), std::string::npos) << empty.to_error().message();
}

}  // namespace
}  // namespace afd::launch
