#pragma once
/// How the commands that talk to a launched cluster (`afd status`, `afd stop`) name it: the
/// topology file it was launched from, or --connect HOST:PORT.

#include <cstdio>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "deploy/launch/launch_plan.hpp"

namespace afd::cli {

struct cluster_target {
  std::string file;
  std::string connect;

  /// Adds FILE and --connect to `app`.
  void add_to(CLI::App& app) {
    app.add_option("FILE", file, "topology file the cluster was launched from");
    app.add_option("--connect", connect, "HOST:PORT of the coordinator, instead of FILE");
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

}  // namespace afd::cli
