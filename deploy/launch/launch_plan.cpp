// Grouping workers into processes, their command lines, and the checks made before launching.
#include "deploy/launch/launch_plan.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "deploy/launch/child_process.hpp"
#include "deploy/launch/timeouts.hpp"

namespace afd::launch {

namespace {

/// RUN/tls when the launcher made credentials there, else $AFD_CREDENTIALS, else "".
std::string credentials_directory(const std::string& run_directory) {
  if (::access((run_directory + "/tls/client.pem").c_str(), R_OK) == 0) return run_directory + "/tls";
  if (const char* dir = std::getenv("AFD_CREDENTIALS"); dir && *dir) return dir;
  return {};
}

}  // namespace


launch_plan plan_launch(const topology::topology& t) {
  launch_plan plan;
  plan.coordinator_port = t.coordinator.port;
  if (const auto* n = t.find_node(t.coordinator.node)) {
    plan.coordinator_host = n->host;
    plan.coordinator_local = topology::is_local_host(n->host);
  }
  for (const auto& c : topology::coordinator_endpoints(t))
    plan.coordinators.push_back({c.index, c.node, c.host, c.port, topology::is_local_host(c.host)});
  auto node_of = [&](const std::string& worker) -> std::string {
    if (worker == "coordinator") return t.coordinator.node;
    if (int a = t.attention_worker_index(worker); a >= 0) return t.attention_workers[static_cast<std::size_t>(a)].node;
    if (int f = t.ffn_worker_index(worker); f >= 0) return t.ffn_workers[static_cast<std::size_t>(f)].node;
    return {};
  };
  auto place = [&](process_plan& p) {
    if (const auto* n = t.find_node(p.node)) {
      p.host = n->host;
      p.local = topology::is_local_host(n->host);
    }
  };
  std::vector<std::string> grouped;
  for (const auto& spec : t.processes) {
    process_plan p;
    p.name = spec.name;
    p.where = spec.where;
    for (const auto& m : spec.members) {
      grouped.push_back(m);
      if (m == "coordinator") {
        p.in_launcher = true;
      } else {
        p.workers.push_back(m);
      }
      if (p.node.empty()) p.node = node_of(m);
    }
    place(p);
    if (p.in_launcher) {
      plan.processes.insert(plan.processes.begin(), std::move(p));
    } else if (!p.workers.empty()) {
      plan.processes.push_back(std::move(p));
    }
  }
  auto alone = [&](const std::string& name, const std::string& node, const topology::source_location& where) {
    if (std::find(grouped.begin(), grouped.end(), name) != grouped.end()) return;
    process_plan p;
    p.name = name;
    p.workers = {name};
    p.node = node;
    p.where = where;
    place(p);
    plan.processes.push_back(std::move(p));
  };
  for (const auto& a : t.attention_workers) alone(a.name, a.node, a.where);
  for (const auto& f : t.ffn_workers) alone(f.name, f.node, f.where);
  return plan;
}

std::vector<std::string> worker_command(const process_plan& p, const worker_command_options& o) {
  std::vector<std::string> argv{o.afd_executable, "worker", "--topology", o.topology_file};
  for (const auto& w : p.workers) {
    argv.push_back("--name");
    argv.push_back(w);
  }
  argv.push_back("--coordinator");
  argv.push_back(o.coordinator);
  if (!o.model_override.empty()) {
    argv.push_back("--model");
    argv.push_back(o.model_override);
  }
  if (!o.credentials.empty()) {
    argv.push_back("--credentials");
    argv.push_back(o.credentials);
  }
  return argv;
}

std::vector<std::string> agent_command(const std::string& node, const worker_command_options& o,
                                       bool exit_with_stdin) {
  std::vector<std::string> argv{o.afd_executable, "node", o.topology_file, "--node", node, "--coordinator",
                                o.coordinator};
  if (!o.model_override.empty()) {
    argv.push_back("--model");
    argv.push_back(o.model_override);
  }
  if (!o.credentials.empty()) {
    argv.push_back("--credentials");
    argv.push_back(o.credentials);
  }
  if (exit_with_stdin) argv.push_back("--exit-with-stdin");
  return argv;
}

std::vector<std::string> ssh_command(const topology::ssh_target& target, const std::vector<std::string>& remote) {
  std::vector<std::string> argv{"ssh", "-o", "BatchMode=yes", "-o",
                                "ConnectTimeout=" + std::to_string(timeouts::ssh_connect_timeout.count())};
  if (target.port != 22) {
    argv.push_back("-p");
    argv.push_back(std::to_string(target.port));
  }
  if (!target.identity.empty()) {
    argv.push_back("-i");
    argv.push_back(target.identity);
  }
  argv.push_back(target.destination());
  argv.push_back("--");
  argv.push_back(shell_join(remote));  // ssh hands the remote shell one string
  return argv;
}

std::vector<const topology::node_spec*> remote_nodes(const topology::topology& t, const launch_plan& plan) {
  std::vector<const topology::node_spec*> out;
  for (const auto* n : topology::nodes_by_rank(t)) {
    bool has_remote = false;
    for (const auto& p : plan.processes)
      if (p.node == n->name && !p.local && !p.in_launcher) has_remote = true;
    for (const auto& c : plan.coordinators)  // a standby coordinator's node has an agent too
      if (c.index > 0 && c.node == n->name && !c.local) has_remote = true;
    if (has_remote) out.push_back(n);
  }
  return out;
}

std::vector<std::string> remote_worker_command(const process_plan& p, const worker_command_options& o) {
  worker_command_options remote = o;
  remote.afd_executable = "afd";  // found through the remote shell's PATH
  std::vector<std::string> argv{"ssh", "-o", "BatchMode=yes", p.host, "--"};
  for (auto& a : worker_command(p, remote)) argv.push_back(std::move(a));
  return argv;
}

topology::diagnostics check_launchable(const topology::topology& t, const launch_plan& plan,
                                       const worker_command_options& o, launch_via via) {
  (void)o;
  topology::diagnostics out;
  if (via == launch_via::ssh && !plan.coordinator_local)
    out.push_back({t.location_of("coordinator.node"),
                   "the coordinator is on node '" + t.coordinator.node + "' (host " + plan.coordinator_host +
                       "), not this machine: `afd launch` hosts the coordinator itself, so run it on " +
                       plan.coordinator_host + " (or inside a Slurm allocation with --via slurm)"});
  std::vector<std::string> others;
  for (const auto& p : plan.processes)
    if (p.node != t.coordinator.node && (!p.local || via == launch_via::slurm) &&
        std::find(others.begin(), others.end(), p.node) == others.end())
      others.push_back(p.node);
  const std::string& ch = plan.coordinator_host;
  const bool unreachable_address =
      ch == "localhost" || ch == "0.0.0.0" || ch == "::" || ch == "::1" || ch.rfind("127.", 0) == 0;
  if (!others.empty() && unreachable_address) {
    const auto* n = t.find_node(t.coordinator.node);
    out.push_back({n ? n->where : t.location_of("coordinator.node"),
                   "the coordinator's node '" + t.coordinator.node + "' has host " + ch +
                       ", which node '" + others.front() +
                       "' cannot reach; give it an address of that machine the other nodes reach it at"});
  }
  std::size_t worker_processes = 0;
  for (const auto& p : plan.processes)
    if (!p.workers.empty()) ++worker_processes;
  const bool launcher_has_workers = !plan.processes.empty() && plan.processes.front().in_launcher;
  const bool all_in_launcher = worker_processes == 1 && launcher_has_workers;
  if (t.transport.kind == topology::transport_kind::loopback && !all_in_launcher)
    out.push_back({t.location_of("transport.kind"),
                   "transport 'loopback' connects workers inside one process, but this cluster runs in " +
                       std::to_string(worker_processes + (launcher_has_workers ? 0 : 1)) +
                       " processes; expected 'ucx' (or one process with the coordinator and every worker)"});
  return out;
}

expected<cluster_address> resolve_cluster_address(const std::string& topology_file, const std::string& connect) {
  if (topology_file.empty() == connect.empty())
    return fail(errc::invalid_argument, "give either a topology FILE or --connect HOST:PORT");
  cluster_address out;
  if (!connect.empty()) {
    auto list = parse_host_ports(connect);
    if (!list) return list.err();
    out.coordinators = *list;
    out.host = list->front().first;
    out.port = list->front().second;
    if (const char* dir = std::getenv("AFD_CREDENTIALS"); dir && *dir) out.credentials = dir;
    return out;
  }
  auto t = topology::load_file(topology_file);
  if (!t) return t.err();
  const auto* node = t->find_node(t->coordinator.node);
  out.host = connect_host(node ? node->host : "127.0.0.1");
  out.port = t->coordinator.port;
  for (const auto& c : topology::coordinator_endpoints(*t))
    out.coordinators.emplace_back(connect_host(c.host.empty() ? "127.0.0.1" : c.host), c.port);
  out.cluster_name = t->cluster_name;
  out.run_directory = run_directory_path(out.cluster_name, out.port);
  for (const auto& n : t->nodes) out.node_names.push_back(n.name);
  if (!t->coordinator.credentials.empty())
    out.credentials = t->coordinator.credentials;
  else if (!loopback_only(*t))
    out.credentials = credentials_directory(out.run_directory);
  return out;
}

bool loopback_only(const topology::topology& t) {
  for (const auto& n : t.nodes)
    if (!(n.host == "localhost" || n.host == "::1" || n.host.rfind("127.", 0) == 0)) return false;
  return true;
}

std::string connect_host(const std::string& host) {
  if (host == "0.0.0.0") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                         "0123456789_-./:=,@+%[]") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

std::string host_port(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

expected<std::pair<std::string, int>> parse_host_port(const std::string& text) {
  std::string host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return fail(errc::invalid_argument, "'", text, "' is not HOST:PORT (IPv6 as [::1]:7600)");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon)
      return fail(errc::invalid_argument, "'", text, "' is not HOST:PORT (e.g. 127.0.0.1:7600)");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  int value = 0;
  const bool digits = !port.empty() && port.size() <= 5 &&
                      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) value = std::stoi(port);
  if (host.empty() || !digits || value < 1 || value > 65535)
    return fail(errc::invalid_argument, "'", text, "' is not HOST:PORT with a port in 1..65535");
  return std::pair<std::string, int>{host, value};
}

expected<address_list> parse_host_ports(const std::string& text) {
  address_list out;
  std::size_t begin = 0;
  for (;;) {
    const auto comma = text.find(',', begin);
    const std::string one = text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    auto hp = parse_host_port(one);
    if (!hp) return hp.err();
    out.push_back(*hp);
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return out;
}

std::string join_host_ports(const address_list& addresses) {
  std::string out;
  for (const auto& [host, port] : addresses) out += (out.empty() ? "" : ",") + host_port(host, port);
  return out;
}

std::string launch_plan::coordinator_addresses() const {
  address_list list;
  for (const auto& c : coordinators) list.emplace_back(connect_host(c.host), c.port);
  return join_host_ports(list);
}

}  // namespace afd::launch
