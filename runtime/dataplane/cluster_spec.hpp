#pragma once
/// What a cluster consists of, as plain data (no CAF, no YAML): workers with their roles and
/// limits, the FFN placement per FFN worker, the run's numerics and pipeline settings, transport
/// settings and admission limits. deploy/ converts a topology file into it; every process of a
/// launched cluster builds the same spec from the same file, so only addresses and the epoch need
/// to travel at start.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/dataplane/data_plane.hpp"
#include "runtime/core/error.hpp"
#include "transport/transport.hpp"

namespace afd::dataplane {

/// A worker's role in the cluster.
enum class worker_role : std::uint8_t { attention = 0, ffn = 1 };

/// "attention" / "ffn".
const char* to_string(worker_role r) noexcept;

/// One attention worker.
struct attention_worker_spec {
  std::string name;
  std::string device = "cpu";    ///< "cpu" or "cuda:N"
  std::int64_t kv_blocks = 1024;
  std::int64_t block_size = 16;
  std::int64_t max_batch = 64;   ///< requests in its batch at once (the coordinator admits up to this)
};

/// One FFN worker; what it owns is in cluster_spec::placement.
struct ffn_worker_spec {
  std::string name;
  std::string device = "cpu";
};

/// Data-plane transport between the workers.
struct transport_settings {
  enum class kind : std::uint8_t { loopback, ucx };
  kind type = kind::loopback;
  std::string tls;          ///< UCX_TLS ("" = UCX's default)
  std::string net_devices;  ///< UCX_NET_DEVICES ("" = all)
  transport::error_mode errors = transport::error_mode::automatic;  ///< how UCX notices a failed peer
};

/// Admission limits of the coordinator.
struct admission_limits {
  std::int64_t queue = 256;             ///< requests waiting for a worker; beyond it: rejected
  std::int64_t max_new_tokens = 4096;   ///< upper bound a request may ask for
  std::int64_t max_context = 0;         ///< prompt + output tokens; filled from the model when 0
};

/// The model facts the coordinator validates requests against (it loads no weights).
struct model_facts {
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embedding = 0;
  std::int64_t num_layers = 0;
};

/// A whole cluster.
struct cluster_spec {
  std::string name = "afd";
  std::string model_path;                  ///< checkpoint directory every worker loads from
  model_facts model;
  data_plane_options plane;                ///< numerics, micro-batches, prefill chunk, deadlines
  std::vector<attention_worker_spec> attention_workers;
  std::vector<ffn_worker_spec> ffn_workers;
  /// Who computes which FFN unit with every FFN worker live (what the topology describes); the
  /// coordinator derives each epoch's placement from it (engine::placement_for_live).
  engine::placement placement;
  transport_settings transport;
  admission_limits limits;
  std::chrono::milliseconds start_timeout{60000};  ///< registration + weight loading + connecting
  /// No worker of a role left: how long accepted requests wait for one to (re)join before they end
  /// with an error naming the cause. Covers a supervised restart several times over.
  std::chrono::milliseconds recovery_wait{30000};
  /// Embedded cluster: a crashed worker actor is started again (actors/timeouts.hpp restart budget).
  bool restart_workers = true;

  /// Index of the attention worker named `name`, or -1.
  int attention_index(const std::string& name) const;
  /// Index of the FFN worker named `name`, or -1.
  int ffn_index(const std::string& name) const;
  /// Data-plane rank of a worker: attention workers first, then FFN workers.
  std::uint16_t rank_of(worker_role role, int index) const;
  /// Checks internal consistency: names unique, at least one worker per role, limits in range, a
  /// placement of every model layer over exactly these FFN workers that covers every unit exactly
  /// once (engine::placement::validate); errc::invalid_config naming the problem.
  expected<void> validate() const;
};

}  // namespace afd::dataplane
