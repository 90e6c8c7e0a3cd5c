#pragma once
/// Internal to afd (the CLI and the tests): an embedded cluster built from a cluster spec rather
/// than a topology file, and a hook that simulates a worker crash. No CAF here.

#include <memory>
#include <string>

#include "runtime/dataplane/cluster_spec.hpp"
#include <afd/client.hpp>

namespace afd::client {

/// Starts every worker of `spec` inside this process and waits until all are ready.
expected<std::unique_ptr<cluster>> embed_spec(dataplane::cluster_spec spec);

/// Kills the actor of worker `name` of an embedded cluster as a crash would.
/// errc::unsupported for a connected (remote) cluster.
expected<void> kill_worker(cluster& c, const std::string& name);

}  // namespace afd::client
