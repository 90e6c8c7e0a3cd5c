// Port checks on this machine: a coordinator that cannot listen fails late and obscurely, so
// `afd check` and the launcher try the ports first.
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "deploy/topology/topology.hpp"
#include "transport/net_devices.hpp"

namespace afd::topology {

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
  return !host.empty() && short_name(host) == short_name(self) &&
         (host.find('.') == std::string_view::npos || self.find('.') == std::string_view::npos);
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
  bool worker_here = false;
  auto here = [&](const std::string& node_name) {
    const node_spec* node = t.find_node(node_name);
    return node && is_local_host(node->host);
  };
  for (const auto& w : t.attention_workers) worker_here = worker_here || here(w.node);
  for (const auto& w : t.ffn_workers) worker_here = worker_here || here(w.node);
  if (worker_here && t.transport.kind == transport_kind::ucx && !t.transport.net_devices.empty()) {
    if (auto ok = transport::validate_net_devices(t.transport.net_devices, "net_devices"); !ok)
      out.push_back(diagnostic{t.location_of("transport.net_devices"), ok.err().message()});
  }
  return out;
}

}  // namespace afd::topology
