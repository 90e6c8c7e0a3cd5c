#pragma once
/// What `afd render` prints: an sbatch script that runs a topology in one Slurm allocation, and
/// Kubernetes manifests that run it as one gang of pods (deploy/launch/README.md, "Render").
/// Pure functions of a topology: no file, process or network access, no CAF.

#include <string>
#include <string_view>

#include "deploy/topology/topology.hpp"
#include "runtime/core/error.hpp"

namespace afd::launch {

/// GPUs a node must be given: its highest CUDA ordinal among the workers the topology places
/// there, plus one (Slurm and Kubernetes number the GPUs they give a job from 0); 0 when every
/// worker there is on the CPU.
int gpus_needed(const topology::topology& t, std::string_view node);

/// Options of `afd render slurm`.
struct slurm_render_options {
  std::string topology_path;  ///< the topology file as the nodes see it (absolute)
  std::string afd_path;       ///< the afd executable as the nodes see it (absolute)
  std::string partition;      ///< #SBATCH --partition; empty: the site's default
  std::string time_limit;     ///< #SBATCH --time; empty: the partition's default
  std::string account;        ///< #SBATCH --account; empty: the user's default
  bool pin_node_names = false;  ///< #SBATCH --nodelist with the topology's node names
};

/// A complete sbatch script: one allocation with one task per topology node (--nodes = node
/// count, --ntasks-per-node=1, the cluster's name as job name, GPUs per node when any worker
/// uses CUDA) running `afd launch FILE --via slurm --foreground` on its first node.
/// errc::invalid_argument when a path is not absolute or an option has characters sbatch
/// cannot take.
expected<std::string> render_slurm(const topology::topology& t, const slurm_render_options& o);

/// How the gang of pods is made.
enum class k8s_flavor {
  leader_worker_set,  ///< a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1): rank = LWS_WORKER_INDEX
  stateful_set,       ///< a StatefulSet and its headless Service: rank = the pod's ordinal
};

/// Options of `afd render k8s`.
struct k8s_render_options {
  k8s_flavor flavor = k8s_flavor::leader_worker_set;
  std::string topology_text;     ///< the topology file's content, put in the ConfigMap as it is
  std::string name;              ///< object names; empty: the cluster's name
  std::string image = "afd:latest";  ///< container image with afd installed
  std::string afd_path = "afd";  ///< the afd executable inside the image
  std::string model_path;        ///< checkpoint directory in the container; empty: model.path, which must then be absolute
  std::string model_claim;       ///< a PersistentVolumeClaim mounted read-only at the model path; empty: none
  std::string gpu_resource = "nvidia.com/gpu";  ///< extended resource that counts GPUs
};

/// Manifests (YAML, documents separated by ---) for one AFD instance as one gang: the topology
/// in a ConfigMap, then a LeaderWorkerSet of node-count pods, or a headless Service and a
/// StatefulSet. Each pod runs `afd node /etc/afd/topology.yaml --node-index RANK --coordinator
/// LEADER:PORT`, RANK its pod index (topology::nodes_by_rank), LEADER the address of pod 0 (with
/// standby coordinators, StatefulSet only: every coordinator's pod name, the primary first).
/// errc::invalid_argument for a name Kubernetes would refuse or a relative model path without
/// model_path.
expected<std::string> render_k8s(const topology::topology& t, const k8s_render_options& o);

}  // namespace afd::launch
