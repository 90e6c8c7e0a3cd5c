#pragma once
/// Turns a validated topology (deploy/topology) and the model's config into the plain
/// dataplane::cluster_spec the actors run: worker limits, the resolved FFN placement as per-worker
/// units, numerics, pipeline, transport and admission limits. No CAF here.

#include <string>

#include "runtime/dataplane/cluster_spec.hpp"
#include "deploy/topology/topology.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/model_config.hpp"

namespace afd::client {

/// The cluster spec of topology `t` for the model `config` (placement resolved here).
/// errc::invalid_config listing the placement's problems; errc::unsupported for column-sliced
/// shared/dense units (throughput combine mode), which the engines do not run yet.
expected<dataplane::cluster_spec> to_cluster_spec(const topology::topology& t, const model_config& config);

/// Reads the topology file and its model's config.json (`model_path` replaces the file's model path
/// when not empty) and converts them.
expected<dataplane::cluster_spec> load_cluster_spec(const std::string& topology_file, const std::string& model_path = {});

}  // namespace afd::client
