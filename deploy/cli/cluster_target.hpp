#pragma once
/// How the commands that talk to a launched cluster (`afd status`, `afd stop`) name it: the
/// topology file it was launched from, or --connect HOST:PORT[,HOST:PORT...] (a primary
/// coordinator and its standbys).

#include <cstdio>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include <afd/client.hpp>
#include "deploy/launch/launch_plan.hpp"

namespace afd::cli {

struct cluster_target {
  std::string file;
  std::string connect;

  /// Adds FILE and --connect to `app`.
  void add_to(CLI::App& app) {
    app.add_option("FILE", file, "topology file the cluster was launched from");
    app.add_option("--connect", connect, "HOST:PORT of the coordinator (or of each coordinator, comma-separated), instead of FILE");
  }

  /// The coordinator's address; nullopt after printing "WHO: why" on stderr (bad usage: exit 2).
  std::optional<launch::cluster_address> resolve(const char* who) const {
    auto address = launch::resolve_cluster_address(file, connect);
    if (!address) {
      std::fprintf(stderr, "%s: %s\n", who, address.err().message().c_str());
      return std::nullopt;
    }
    return *address;
  }
};

/// Connects to the active coordinator of `address` (any of its coordinators).
inline expected<std::unique_ptr<client::cluster>> connect_cluster(const launch::cluster_address& address,
                                                                  std::chrono::milliseconds timeout) {
  std::vector<std::string> list;
  for (const auto& [host, port] : address.coordinators) list.push_back(launch::host_port(host, port));
  return client::cluster::connect_any(list, timeout, address.credentials);
}

}  // namespace afd::cli
