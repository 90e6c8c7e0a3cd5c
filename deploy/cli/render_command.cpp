// `afd render slurm FILE` / `afd render k8s FILE`: prints what runs a topology elsewhere, an sbatch
// script or Kubernetes manifests (deploy/launch/render.hpp). Nothing is submitted or applied.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>

#include "deploy/cli/command_registry.hpp"
#include "deploy/launch/render.hpp"
#include "deploy/topology/topology.hpp"

namespace {

std::string self_path() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

// The topology, or every diagnostic on stderr and nullopt.
std::optional<afd::topology::topology> load(const std::string& file) {
  auto parsed = afd::topology::parse_file(file);
  if (parsed.ok()) return std::move(*parsed.value);
  for (const auto& d : parsed.errors) std::fprintf(stderr, "%s\n", d.to_string().c_str());
  std::fprintf(stderr, "%s: %zu error(s)\n", file.c_str(), parsed.errors.size());
  return std::nullopt;
}

int print(const afd::expected<std::string>& text, const char* what) {
  if (!text) {
    std::fprintf(stderr, "afd render %s: %s\n", what, text.err().message().c_str());
    return 2;
  }
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}

int run_render(int argc, char** argv) {
  CLI::App app{"Prints what runs a topology on other machines; submits and applies nothing.\n"
               "  afd render slurm FILE   an sbatch script: one allocation, one afd node agent per node\n"
               "  afd render k8s FILE     manifests: the topology in a ConfigMap, one pod per node\n"
               "Exit codes: 0 printed, 1 invalid topology, 2 bad usage."};
  app.require_subcommand(1);

  std::string file;
  afd::launch::slurm_render_options slurm;
  auto* slurm_cmd = app.add_subcommand("slurm", "an sbatch script that runs `afd launch FILE --via slurm`");
  slurm_cmd->add_option("FILE", file, "topology file (YAML)")->required();
  slurm_cmd->add_option("--partition", slurm.partition, "#SBATCH --partition");
  slurm_cmd->add_option("--time", slurm.time_limit, "#SBATCH --time (e.g. 1-00:00:00)");
  slurm_cmd->add_option("--account", slurm.account, "#SBATCH --account");
  slurm_cmd->add_flag("--nodelist", slurm.pin_node_names, "#SBATCH --nodelist with the topology's node names");
  slurm_cmd->add_option("--afd", slurm.afd_path, "afd executable on the nodes (default: this one)");
  slurm_cmd->add_option("--topology-path", slurm.topology_path,
                        "the topology file as the nodes see it (default: FILE made absolute)");

  afd::launch::k8s_render_options k8s;
  bool plain = false;
  auto* k8s_cmd = app.add_subcommand("k8s", "Kubernetes manifests for one AFD instance as one gang of pods");
  k8s_cmd->add_option("FILE", file, "topology file (YAML)")->required();
  k8s_cmd->add_flag("--plain", plain, "a StatefulSet and a headless Service instead of a LeaderWorkerSet");
  k8s_cmd->add_option("--name", k8s.name, "name of the objects (default: the cluster's name)");
  k8s_cmd->add_option("--image", k8s.image, "container image with afd installed")->capture_default_str();
  k8s_cmd->add_option("--afd", k8s.afd_path, "afd executable inside the image")->capture_default_str();
  k8s_cmd->add_option("--model-path", k8s.model_path,
                      "checkpoint directory inside the container (default: model.path, if absolute)");
  k8s_cmd->add_option("--model-claim", k8s.model_claim, "PersistentVolumeClaim to mount read-only at the model path");
  k8s_cmd->add_option("--gpu-resource", k8s.gpu_resource, "resource that counts GPUs")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto t = load(file);
  if (!t) return 1;
  if (slurm_cmd->parsed()) {
    if (slurm.afd_path.empty()) slurm.afd_path = self_path();
    if (slurm.topology_path.empty()) {
      std::error_code ec;
      slurm.topology_path = std::filesystem::absolute(file, ec).lexically_normal().string();
    }
    return print(afd::launch::render_slurm(*t, slurm), "slurm");
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  k8s.topology_text = text.str();
  k8s.flavor = plain ? afd::launch::k8s_flavor::stateful_set : afd::launch::k8s_flavor::leader_worker_set;
  return print(afd::launch::render_k8s(*t, k8s), "k8s");
}

const bool registered = afd::cli::register_command(
    {"render", "print an sbatch script or Kubernetes manifests for a topology", &run_render});

}  // namespace
