// `afd render slurm|k8s` as a user runs it: the whole stdout against golden files (reviewed by
// hand; AFD_UPDATE_GOLDEN=1 rewrites them), and every refusal with its exit code and message.
// The k8s output is also checked against Kubernetes' schemas by tests/launch/npm (label npm).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "deploy/launch/render.hpp"
#include "deploy/topology/topology.hpp"

namespace afd::launch {
namespace {

const std::string source_dir = AFD_SOURCE_DIR;
const std::string data_dir = source_dir + "/tests/launch/data/";

struct run_result {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs afd with `args` (shell words, already quoted where needed).
run_result run_afd(const std::string& args) {
  const std::string err_file = ::testing::TempDir() + "render_test_stderr";
  const std::string command = std::string(AFD_EXECUTABLE) + " " + args + " 2>" + err_file;
  run_result r;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  std::array<char, 4096> chunk{};
  std::size_t n = 0;
  while (pipe && (n = std::fread(chunk.data(), 1, chunk.size(), pipe.get())) > 0) r.out.append(chunk.data(), n);
  const int status = ::pclose(pipe.release());
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  std::stringstream text;
  text << in.rdbuf();
  r.err = text.str();
  std::remove(err_file.c_str());
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Compares `actual` with the golden file; with AFD_UPDATE_GOLDEN=1 writes it instead.
void expect_golden(const std::string& actual, const std::string& golden) {
  const std::string path = data_dir + golden;
  if (const char* update = std::getenv("AFD_UPDATE_GOLDEN"); update && std::string(update) == "1") {
    std::ofstream(path, std::ios::binary) << actual;
    GTEST_SKIP() << "rewrote " << path;
  }
  const std::string expected = read_file(path);
  ASSERT_FALSE(expected.empty()) << path << " is missing (AFD_UPDATE_GOLDEN=1 writes it)";
  EXPECT_EQ(actual, expected) << "differs from " << path;
}

TEST(render_golden, slurm_script) {
  auto r = run_afd("render slurm " + data_dir + "two_nodes.yaml --afd /opt/afd/bin/afd --topology-path "
                   "/shared/afd/two_nodes.yaml --partition gpu --time 1-00:00:00 --account ml --nodelist");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  expect_golden(r.out, "render_slurm.golden");
}

TEST(render_golden, k8s_leader_worker_set) {
  auto r = run_afd("render k8s " + data_dir + "two_nodes.yaml --image registry.example/afd:0.1.0 --model-claim step3-weights");
  ASSERT_EQ(r.status, 0) << r.err;
  expect_golden(r.out, "render_k8s_lws.golden");
}

TEST(render_golden, k8s_stateful_set) {
  auto r = run_afd("render k8s " + data_dir + "two_nodes.yaml --plain --image registry.example/afd:0.1.0 "
                   "--afd /usr/local/bin/afd");
  ASSERT_EQ(r.status, 0) << r.err;
  expect_golden(r.out, "render_k8s_plain.golden");
}

TEST(render_golden, k8s_cpu_nodes_keep_the_file_exactly) {
  auto r = run_afd("render k8s " + data_dir + "cpu_three_nodes.yaml --name cpu-trio --model-path /models/tiny");
  ASSERT_EQ(r.status, 0) << r.err;
  expect_golden(r.out, "render_k8s_cpu.golden");
  EXPECT_EQ(r.out.find("nvidia.com/gpu"), std::string::npos) << "no GPU is asked for CPU workers";
}

TEST(render_cli, slurm_defaults_are_this_afd_and_the_absolute_file) {
  auto r = run_afd("render slurm " + data_dir + "two_nodes.yaml");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("exec " + std::string(AFD_EXECUTABLE) + " launch " + data_dir +
                       "two_nodes.yaml --via slurm --foreground\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("#SBATCH --job-name=step3-demo\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("#SBATCH --gpus-per-node=4\n"), std::string::npos) << r.out;  // cuda:3 on gpu-b
  EXPECT_EQ(r.out.find("--partition"), std::string::npos) << r.out;
}

TEST(render_cli, refusals_say_what_is_wrong) {
  auto r = run_afd("render k8s " + data_dir + "cpu_three_nodes.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err,
            "afd render k8s: 'cpu_Trio' cannot name Kubernetes objects: expected 1 to 52 lowercase letters, digits "
            "or '-', starting with a letter; give --name cpu-trio\n");

  r = run_afd("render k8s " + data_dir + "cpu_three_nodes.yaml --name cpu-trio");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err,
            "afd render k8s: model.path '../models/tiny' is relative to the topology file, which is "
            "/etc/afd/topology.yaml in the pods; give --model-path (the checkpoint directory inside the container)\n");

  r = run_afd("render k8s " + data_dir + "two_nodes.yaml --name Bad_Name");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("'Bad_Name' cannot name Kubernetes objects"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("give --name bad-name"), std::string::npos) << r.err;

  r = run_afd("render k8s " + data_dir + "two_nodes.yaml --gpu-resource gpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--gpu-resource must be an extended resource name like nvidia.com/gpu, got 'gpu'"),
            std::string::npos)
      << r.err;

  r = run_afd("render slurm " + data_dir + "two_nodes.yaml --partition 'a b'");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err, "afd render slurm: --partition 'a b': expected a value without spaces\n");

  r = run_afd("render slurm " + data_dir + "two_nodes.yaml --afd bin/afd");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("the afd path in the script must be absolute (as the nodes see it), got 'bin/afd'"),
            std::string::npos)
      << r.err;

  // An invalid topology: every error at its position, nothing on stdout.
  r = run_afd("render slurm " + source_dir + "/tests/topology/data/invalid.yaml");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("invalid.yaml:5:34: port out of range"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("invalid.yaml: 4 error(s)"), std::string::npos) << r.err;

  r = run_afd("render");
  EXPECT_EQ(r.status, 2);
}

// The library directly: GPU counts and the script's quoting of paths with spaces.
TEST(render_library, gpus_per_node_and_shell_quoting) {
  auto parsed = topology::parse_file(data_dir + "two_nodes.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.to_error().message();
  const topology::topology& t = *parsed.value;
  EXPECT_EQ(gpus_needed(t, "gpu-a"), 2);
  EXPECT_EQ(gpus_needed(t, "gpu-b"), 4);  // cuda:0, cuda:1, cuda:3: ordinals up to 3
  EXPECT_EQ(gpus_needed(t, "nowhere"), 0);

  slurm_render_options o;
  o.topology_path = "/shared/my topologies/it's.yaml";
  o.afd_path = "/opt/afd/bin/afd";
  auto script = render_slurm(t, o);
  ASSERT_TRUE(script) << script.err().message();
  EXPECT_NE(script->find("exec /opt/afd/bin/afd launch '/shared/my topologies/it'\\''s.yaml' --via slurm"),
            std::string::npos)
      << *script;
}

// Standby coordinators: each pod of a standby's node is named in --coordinator, in the file's
// order; the LeaderWorkerSet form (no stable names for the other pods) refuses them.
TEST(render_library, k8s_standby_coordinators_are_reached_at_their_pods) {
  std::string text = read_file(data_dir + "two_nodes.yaml");
  const std::string line = "coordinator: {node: gpu-b, port: 7700}";
  ASSERT_NE(text.find(line), std::string::npos);
  text.replace(text.find(line), line.size(), "coordinator: {node: gpu-b, port: 7700, standby: [gpu-a]}");
  auto parsed = topology::parse_text(text, "t.yaml", "/");
  ASSERT_TRUE(parsed.ok()) << parsed.to_error().message();
  k8s_render_options o;
  o.topology_text = text;
  o.flavor = k8s_flavor::stateful_set;
  auto out = render_k8s(*parsed.value, o);
  ASSERT_TRUE(out) << out.err().message();
  // gpu-b hosts the primary: rank 0; gpu-a is rank 1.
  EXPECT_NE(out->find("step3-demo-0.step3-demo.$(POD_NAMESPACE).svc:7700,step3-demo-1.step3-demo.$(POD_NAMESPACE).svc:7700"),
            std::string::npos)
      << *out;
  o.flavor = k8s_flavor::leader_worker_set;
  auto refused = render_k8s(*parsed.value, o);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.err().message().find("standby coordinators (coordinator.standby) need the StatefulSet form"),
            std::string::npos);
}

}  // namespace
}  // namespace afd::launch
