// Port checks on this machine: a coordinator that cannot listen fails late and obscurely, so
// `afd check` and the launcher try the ports first.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "deploy/topology/topology.hpp"
#include "transport/net_devices.hpp"

namespace afd::topology {

namespace {

// True when `host` is an IPv4 or IPv6 address literal held by an interface of this machine (of
// this network namespace: a node made of namespaces sees only its own addresses).
bool is_interface_address(std::string_view host) {
  const std::string text(host);
  in_addr v4{};
  in6_addr v6{};
  const bool is_v4 = ::inet_pton(AF_INET, text.c_str(), &v4) == 1;
  const bool is_v6 = !is_v4 && ::inet_pton(AF_INET6, text.c_str(), &v6) == 1;
  if (!is_v4 && !is_v6) return false;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return false;
  bool found = false;
  for (const ifaddrs* a = list; a && !found; a = a->ifa_next) {
    if (!a->ifa_addr) continue;
    if (is_v4 && a->ifa_addr->sa_family == AF_INET)
      found = reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr == v4.s_addr;
    else if (is_v6 && a->ifa_addr->sa_family == AF_INET6)
      found = std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a->ifa_addr)->sin6_addr, &v6, sizeof v6) == 0;
  }
  ::freeifaddrs(list);
  return found;
}

}  // namespace

bool is_local_host(std::string_view host) {
  if (host == "localhost" || host == "::1" || host == "0.0.0.0" || host == "::" ||
      host.substr(0, 4) == "127.")
    return true;
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return false;
  const std::string_view self(name);
  if (host == self) return true;
  // "gpu1" matches "gpu1.example.org" and the other way round.
  const auto short_name = [](std::string_view s) { return s.substr(0, s.find('.')); };
  if (!host.empty() && short_name(host) == short_name(self) &&
      (host.find('.') == std::string_view::npos || self.find('.') == std::string_view::npos))
    return true;
  return is_interface_address(host);
}

namespace {

// 0 when `port` can be bound on all IPv4 addresses, else errno.
int try_bind(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return errno;
  // The servers set SO_REUSEADDR too: a port held only by TIME_WAIT connections counts as free.
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  int result = 0;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) result = errno;
  ::close(fd);
  return result;
}

}  // namespace

diagnostics check_ports(const topology& t) {
  diagnostics out;
  auto check = [&](int port, const std::string& node_name, const std::string& who, const std::string& path) {
    if (port <= 0) return;
    const node_spec* node = t.find_node(node_name);
    if (!node || !is_local_host(node->host)) return;
    const int err = try_bind(port);
    if (err == 0) return;
    std::string why = err == EADDRINUSE ? "is in use on this machine"
                      : err == EACCES ? "needs privileges to bind on this machine"
                                      : std::string("cannot be bound on this machine (") + std::strerror(err) + ")";
    out.push_back(diagnostic{t.location_of(path), "port " + std::to_string(port) + " " + why + " (node '" +
                                                      node->name + "', host " + node->host + "): " + who +
                                                      " cannot listen on it; expected a free port"});
  };
  check(t.coordinator.port, t.coordinator.node, "the coordinator", "coordinator.port");
  for (std::size_t i = 0; i < t.coordinator.standby.size(); ++i) {
    const auto& sb = t.coordinator.standby[i];
    check(sb.port ? sb.port : t.coordinator.port, sb.node, "standby coordinator " + std::to_string(i + 1),
          "coordinator.standby[" + std::to_string(i) + "]");
  }
  for (std::size_t i = 0; i < t.attention_workers.size(); ++i)
    check(t.data_port('a', static_cast<int>(i)), t.attention_workers[i].node,
          "attention worker '" + t.attention_workers[i].name + "'", "transport.base_port");
  for (std::size_t i = 0; i < t.ffn_workers.size(); ++i)
    check(t.data_port('f', static_cast<int>(i)), t.ffn_workers[i].node,
          "FFN worker '" + t.ffn_workers[i].name + "'", "transport.base_port");
  return out;
}

diagnostics check_environment(const topology& t) {
  diagnostics out = check_ports(t);
  std::set<std::string> nodes_with_workers;
  for (const auto& w : t.attention_workers) nodes_with_workers.insert(w.node);
  for (const auto& w : t.ffn_workers) nodes_with_workers.insert(w.node);
  for (std::size_t i = 0; i < t.nodes.size(); ++i) {
    const node_spec& node = t.nodes[i];
    const std::string path = "nodes[" + std::to_string(i) + "]";
    if (is_local_host(node.host)) {
      // Interface names differ between machines: only a node on this machine can be checked here.
      const std::string devices = net_devices_of(t, node.name);
      if (nodes_with_workers.count(node.name) && t.transport.kind == transport_kind::ucx && !devices.empty()) {
        const bool own = !node.net_devices.empty();
        if (auto ok = transport::validate_net_devices(devices, own ? "net_devices of node '" + node.name + "'"
                                                                       : std::string("net_devices"));
            !ok)
          out.push_back(diagnostic{t.location_of(own ? path + ".net_devices" : "transport.net_devices"),
                                   ok.err().message()});
      }
      if (!node.afd.empty() && ::access(node.afd.c_str(), X_OK) != 0)
        out.push_back(diagnostic{t.location_of(path + ".afd"),
                                 "afd executable '" + node.afd + "' of node '" + node.name + "' " +
                                     (::access(node.afd.c_str(), F_OK) != 0 ? "does not exist" : "is not executable") +
                                     " on this machine"});
      continue;
    }
    // A remote node is reached over ssh with BatchMode: a key ssh would refuse fails there, late.
    if (!node.ssh || node.ssh->identity.empty()) continue;
    const std::string& identity = node.ssh->identity;
    const source_location at = t.location_of(path + ".ssh.identity");
    struct stat st{};
    if (::stat(identity.c_str(), &st) != 0) {
      const int err = errno;
      out.push_back(diagnostic{at, "ssh identity file '" + identity + "' of node '" + node.name + "' " +
                                       (err == ENOENT ? "does not exist" : std::string(std::strerror(err))) +
                                       "; expected a private key readable by the launcher"});
    } else if (!S_ISREG(st.st_mode)) {
      out.push_back(diagnostic{at, "ssh identity '" + identity + "' of node '" + node.name +
                                       "' is not a regular file; expected a private key"});
    } else if (::access(identity.c_str(), R_OK) != 0) {
      out.push_back(diagnostic{at, "ssh identity file '" + identity + "' of node '" + node.name +
                                       "' is not readable by this user"});
    } else if (st.st_uid == ::geteuid() && (st.st_mode & 077) != 0) {  // ssh's own rule
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      out.push_back(diagnostic{at, "ssh refuses identity file '" + identity + "' of node '" + node.name +
                                       "': permissions " + mode + " let others read it; expected 0600 (chmod 600 " +
                                       identity + ")"});
    }
  }
  return out;
}

}  // namespace afd::topology
