// `afd render slurm|k8s`: text out of a topology. YAML is written by hand, every string that
// comes from the user double-quoted with JSON escapes (valid YAML), so that no value can change
// the structure around it.
#include "deploy/launch/render.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <vector>

namespace afd::launch {

namespace {

using topology::node_spec;

// Mount point of the topology ConfigMap in every pod, and the file name in it.
constexpr const char* topology_mount = "/etc/afd";
constexpr const char* topology_key = "topology.yaml";

// A YAML (and JSON) double-quoted string.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char escape[8];
          std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += escape;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// A word for a POSIX shell, single-quoted unless it needs no quotes.
std::string shell_word(std::string_view s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '.' ||
           c == '_' || c == '-' || c == '+' || c == ':' || c == ',' || c == '=' || c == '@';
  });
  if (plain) return std::string(s);
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// An #SBATCH value: sbatch reads the line up to its end and splits at whitespace.
expected<void> check_sbatch_value(std::string_view value, std::string_view option) {
  if (value.empty()) return {};
  if (has_control(value) || value.find(' ') != std::string_view::npos)
    return fail(errc::invalid_argument, "--", option, " '", value, "': expected a value without spaces");
  return {};
}

// DNS-1035 label, 52 characters at most: StatefulSet and LeaderWorkerSet pods are named
// NAME-N(-M) and carry NAME plus a hash in a 63-character label.
constexpr std::size_t max_k8s_name = 52;
bool valid_k8s_name(std::string_view s) {
  if (s.empty() || s.size() > max_k8s_name || !(s.front() >= 'a' && s.front() <= 'z') || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

// The name with '_' and '.' as '-', lowercased: a suggestion when the cluster's name is refused.
std::string k8s_name_like(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '_' || c == '.') c = '-';
    out += c;
  }
  while (!out.empty() && !(out.front() >= 'a' && out.front() <= 'z')) out.erase(out.begin());
  if (out.size() > max_k8s_name) out.resize(max_k8s_name);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

// The file's text as a YAML block scalar under a key indented by `indent` spaces; a quoted
// string where a block scalar cannot hold it exactly (control characters, trailing blanks).
std::string block_scalar(std::string_view text, int indent) {
  const std::string pad(static_cast<std::size_t>(indent) + 2, ' ');
  bool representable = !text.empty();
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line = text.substr(start, end - start);
    if (!line.empty() && (line.back() == ' ' || line.back() == '\t')) representable = false;
    for (const char c : line)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) representable = false;
    lines.push_back(line);
    start = end + 1;
  }
  if (!representable) return quoted(text) + "\n";
  // Chomping keeps the file's end exactly: one newline (clip), none (strip), several (keep).
  std::size_t trailing = 0;
  while (trailing < text.size() && text[text.size() - 1 - trailing] == '\n') ++trailing;
  const char* chomp = trailing == 0 ? "-" : trailing == 1 ? "" : "+";
  // An explicit indentation when the first line starts with a space (else YAML would take its
  // spaces as the indentation).
  const bool lead = !lines.empty() && !lines.front().empty() && lines.front().front() == ' ';
  std::string out = "|" + std::string(lead ? "2" : "") + chomp + "\n";
  for (const auto& line : lines) out += (line.empty() ? std::string() : pad + std::string(line)) + "\n";
  return out;
}

std::string node_names_by_rank(const topology::topology& t) {
  std::string out;
  for (const node_spec* n : topology::nodes_by_rank(t)) out += (out.empty() ? "" : ",") + n->name;
  return out;
}

int max_gpus(const topology::topology& t, std::size_t first_rank) {
  int most = 0;
  const auto ranked = topology::nodes_by_rank(t);
  for (std::size_t i = first_rank; i < ranked.size(); ++i) most = std::max(most, gpus_needed(t, ranked[i]->name));
  return most;
}

}  // namespace

int gpus_needed(const topology::topology& t, std::string_view node) {
  int highest = -1;
  for (const auto& w : t.attention_workers)
    if (w.node == node && w.dev.type == topology::device::kind::cuda) highest = std::max(highest, w.dev.index);
  for (const auto& w : t.ffn_workers)
    if (w.node == node && w.dev.type == topology::device::kind::cuda) highest = std::max(highest, w.dev.index);
  return highest + 1;
}

expected<std::string> render_slurm(const topology::topology& t, const slurm_render_options& o) {
  if (o.topology_path.empty() || o.topology_path.front() != '/' || has_control(o.topology_path))
    return fail(errc::invalid_argument, "the topology path in the script must be absolute (as the nodes see it), got '",
                o.topology_path, "'");
  if (o.afd_path.empty() || o.afd_path.front() != '/' || has_control(o.afd_path))
    return fail(errc::invalid_argument, "the afd path in the script must be absolute (as the nodes see it), got '",
                o.afd_path, "'");
  if (auto ok = check_sbatch_value(o.partition, "partition"); !ok) return ok.err();
  if (auto ok = check_sbatch_value(o.time_limit, "time"); !ok) return ok.err();
  if (auto ok = check_sbatch_value(o.account, "account"); !ok) return ok.err();

  const std::size_t nodes = t.nodes.size();
  const int gpus = max_gpus(t, 0);
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# afd cluster '" << t.cluster_name << "' in one Slurm allocation: " << nodes << " node(s), one afd node agent "
    << "each.\n"
    << "# Written by `afd render slurm`; submit with `sbatch THIS_FILE`. The topology file, the model and\n"
    << "# afd must be at the same paths on every node (a shared file system).\n"
    << "#SBATCH --job-name=" << t.cluster_name << "\n"
    << "#SBATCH --nodes=" << nodes << "\n"
    << "#SBATCH --ntasks-per-node=1\n"
    // Workers size their thread pools to the machine; sharing a node with other jobs skews steps.
    << "#SBATCH --exclusive\n";
  if (gpus > 0) s << "#SBATCH --gpus-per-node=" << gpus << "\n";
  if (o.pin_node_names) s << "#SBATCH --nodelist=" << node_names_by_rank(t) << "\n";
  if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
  if (!o.time_limit.empty()) s << "#SBATCH --time=" << o.time_limit << "\n";
  if (!o.account.empty()) s << "#SBATCH --account=" << o.account << "\n";
  s << "#SBATCH --output=" << t.cluster_name << "-%j.out\n"
    << "set -euo pipefail\n"
    << "# The allocation's nodes take the topology's nodes by name where the names match, else in\n"
    << "# Slurm's node order (SLURM_NODEID, which follows the sorted node names, not --nodelist)\n"
    << "# against the rank order " << node_names_by_rank(t) << ". --foreground keeps the job, and so\n"
    << "# the allocation, alive while the cluster serves; scancel stops every node.\n"
    << "exec " << shell_word(o.afd_path) << " launch " << shell_word(o.topology_path) << " --via slurm --foreground\n";
  return s.str();
}

expected<std::string> render_k8s(const topology::topology& t, const k8s_render_options& o) {
  const std::string name = o.name.empty() ? t.cluster_name : o.name;
  if (!valid_k8s_name(name)) {
    const std::string like = k8s_name_like(name);
    return fail(errc::invalid_argument, "'", name,
                "' cannot name Kubernetes objects: expected 1 to 52 lowercase letters, digits or '-', starting with a "
                "letter",
                (like.empty() || !valid_k8s_name(like) ? std::string() : "; give --name " + like));
  }
  std::string model_path = o.model_path;
  if (model_path.empty()) {
    if (t.model.path_as_written.empty() || t.model.path_as_written.front() != '/')
      return fail(errc::invalid_argument, "model.path '", t.model.path_as_written,
                  "' is relative to the topology file, which is ", topology_mount, "/", topology_key,
                  " in the pods; give --model-path (the checkpoint directory inside the container)");
  } else if (model_path.front() != '/' || has_control(model_path)) {
    return fail(errc::invalid_argument, "--model-path must be an absolute path inside the container, got '",
                model_path, "'");
  }
  if (!o.model_claim.empty() && model_path.empty()) model_path = t.model.path_as_written;
  if (o.image.empty() || has_control(o.image)) return fail(errc::invalid_argument, "--image must name a container image");
  if (o.afd_path.empty() || has_control(o.afd_path)) return fail(errc::invalid_argument, "--afd must name the afd executable");
  const bool resource_chars = std::all_of(o.gpu_resource.begin(), o.gpu_resource.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || c == '/';
  });
  if (o.gpu_resource.empty() || o.gpu_resource.find('/') == std::string::npos || !resource_chars)
    return fail(errc::invalid_argument, "--gpu-resource must be an extended resource name like nvidia.com/gpu, got '",
                o.gpu_resource, "'");

  const bool lws = o.flavor == k8s_flavor::leader_worker_set;
  if (lws && !t.coordinator.standby.empty())
    return fail(errc::unsupported, "standby coordinators (coordinator.standby) need the StatefulSet form (--plain), "
                "whose pods have stable names the other pods reach them at");
  const std::size_t nodes = t.nodes.size();
  const int port = t.coordinator.port;
  auto labels = [&](int indent) {
    const std::string pad(static_cast<std::size_t>(indent), ' ');
    return pad + "app.kubernetes.io/name: afd\n" + pad + "app.kubernetes.io/instance: " + quoted(name) + "\n";
  };

  // One pod template: the agent of node RANK, `gpus` GPUs. `indent` is the template's own level.
  auto pod_template = [&](int indent, const std::string& rank, const std::string& coordinator, int gpus,
                          const std::vector<std::pair<std::string, std::string>>& env_fields) {
    const std::string p(static_cast<std::size_t>(indent), ' ');
    std::ostringstream s;
    s << p << "metadata:\n" << p << "  labels:\n" << labels(indent + 4) << p << "spec:\n" << p << "  containers:\n"
      << p << "    - name: afd\n"
      << p << "      image: " << quoted(o.image) << "\n"
      << p << "      command: [" << quoted(o.afd_path) << "]\n"
      << p << "      args:\n"
      << p << "        - node\n"
      << p << "        - " << quoted(std::string(topology_mount) + "/" + topology_key) << "\n"
      << p << "        - --node-index\n"
      << p << "        - " << quoted(rank) << "\n"
      << p << "        - --coordinator\n"
      << p << "        - " << quoted(coordinator) << "\n";
    if (!o.model_path.empty()) s << p << "        - --model\n" << p << "        - " << quoted(model_path) << "\n";
    if (!env_fields.empty()) {
      s << p << "      env:\n";
      for (const auto& [var, field] : env_fields)
        s << p << "        - name: " << var << "\n"
          << p << "          valueFrom:\n"
          << p << "            fieldRef:\n"
          << p << "              fieldPath: " << quoted(field) << "\n";
    }
    s << p << "      ports:\n"
      << p << "        - name: afd-control\n"
      << p << "          containerPort: " << port << "\n";
    if (gpus > 0)
      s << p << "      resources:\n" << p << "        limits:\n" << p << "          " << o.gpu_resource << ": " << gpus << "\n";
    s << p << "      volumeMounts:\n"
      << p << "        - name: topology\n"
      << p << "          mountPath: " << topology_mount << "\n"
      << p << "          readOnly: true\n";
    if (!o.model_claim.empty())
      s << p << "        - name: model\n"
        << p << "          mountPath: " << quoted(model_path) << "\n"
        << p << "          readOnly: true\n";
    s << p << "  volumes:\n"
      << p << "    - name: topology\n"
      << p << "      configMap:\n"
      << p << "        name: " << quoted(name + "-topology") << "\n";
    if (!o.model_claim.empty())
      s << p << "    - name: model\n"
        << p << "      persistentVolumeClaim:\n"
        << p << "        claimName: " << quoted(o.model_claim) << "\n"
        << p << "        readOnly: true\n";
    return s.str();
  };

  std::ostringstream s;
  s << "# afd cluster '" << t.cluster_name << "' on Kubernetes: " << nodes << " pod(s), one afd node agent each, as one "
    << (lws ? "LeaderWorkerSet group" : "StatefulSet") << ".\n"
    << "# Written by `afd render k8s" << (lws ? "" : " --plain") << "`. Pod i runs the topology's node of rank i ("
    << node_names_by_rank(t) << "); pod 0 hosts the coordinator.\n";
  if (lws) s << "# Needs the LeaderWorkerSet controller (leaderworkerset.x-k8s.io/v1) in the cluster.\n";
  else s << "# Needs Kubernetes 1.28 or later (the apps.kubernetes.io/pod-index label).\n";
  s << "apiVersion: v1\n"
    << "kind: ConfigMap\n"
    << "metadata:\n"
    << "  name: " << quoted(name + "-topology") << "\n"
    << "  labels:\n" << labels(4)
    << "data:\n"
    << "  " << topology_key << ": " << block_scalar(o.topology_text, 2);
  if (lws) {
    const std::string coordinator = "$(LWS_LEADER_ADDRESS):" + std::to_string(port);
    s << "---\n"
      << "apiVersion: leaderworkerset.x-k8s.io/v1\n"
      << "kind: LeaderWorkerSet\n"
      << "metadata:\n"
      << "  name: " << quoted(name) << "\n"
      << "  labels:\n" << labels(4)
      << "spec:\n"
      << "  replicas: 1\n"
      << "  startupPolicy: LeaderCreated\n"
      << "  leaderWorkerTemplate:\n"
      << "    size: " << nodes << "\n"
      // A restarted pod rejoins the running cluster at a new epoch (DESIGN.md, Failures): the others
      // stay up instead of the whole group being recreated.
      << "    restartPolicy: None\n"
      << "    leaderTemplate:\n"
      << pod_template(6, "$(LWS_WORKER_INDEX)", coordinator, gpus_needed(t, t.coordinator.node), {})
      << "    workerTemplate:\n"
      << pod_template(6, "$(LWS_WORKER_INDEX)", coordinator, max_gpus(t, 1), {});
  } else {
    // Every coordinator at the stable name of the pod of its node's rank (the primary: pod 0).
    std::string coordinator;
    const auto ranked = topology::nodes_by_rank(t);
    for (const auto& c : topology::coordinator_endpoints(t))
      for (std::size_t r = 0; r < ranked.size(); ++r)
        if (ranked[r]->name == c.node)
          coordinator += (coordinator.empty() ? "" : ",") + name + "-" + std::to_string(r) + "." + name +
                         ".$(POD_NAMESPACE).svc:" + std::to_string(c.port);
    s << "---\n"
      << "apiVersion: v1\n"
      << "kind: Service\n"
      << "metadata:\n"
      << "  name: " << quoted(name) << "\n"
      << "  labels:\n" << labels(4)
      << "spec:\n"
      << "  clusterIP: None\n"
      // Pods find each other while they start, before any of them is ready.
      << "  publishNotReadyAddresses: true\n"
      << "  selector:\n" << labels(4)
      << "  ports:\n"
      << "    - name: afd-control\n"
      << "      port: " << port << "\n"
      << "---\n"
      << "apiVersion: apps/v1\n"
      << "kind: StatefulSet\n"
      << "metadata:\n"
      << "  name: " << quoted(name) << "\n"
      << "  labels:\n" << labels(4)
      << "spec:\n"
      << "  serviceName: " << quoted(name) << "\n"
      << "  replicas: " << nodes << "\n"
      // All pods at once: the agents wait for the coordinator themselves.
      << "  podManagementPolicy: Parallel\n"
      << "  selector:\n"
      << "    matchLabels:\n" << labels(6)
      << "  template:\n"
      << pod_template(4, "$(AFD_NODE_INDEX)", coordinator, max_gpus(t, 0),
                      {{"AFD_NODE_INDEX", "metadata.labels['apps.kubernetes.io/pod-index']"},
                       {"POD_NAMESPACE", "metadata.namespace"}});
  }
  return s.str();
}

}  // namespace afd::launch
