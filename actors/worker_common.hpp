#pragma once
// Internal to afd::cluster: the worker actor's context, the control-plane fault points of its
// sends, and transport connection helpers.

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/messages.hpp"
#include "runtime/dataplane/cluster_spec.hpp"
#include "runtime/faults/faults.hpp"
#include "transport/instrumented.hpp"
#include "transport/transport.hpp"

namespace afd::actors::detail {

/// Everything a worker actor starts from.
struct worker_context {
  dataplane::cluster_spec spec;
  std::string name;
  dataplane::worker_role role = dataplane::worker_role::attention;
  int index = 0;
  caf::actor coordinator;
  /// Shared only to pass through CAF's spawn arguments; the actor's state is the one owner.
  std::shared_ptr<transport::transport> transport;
  /// The worker's fault site (also handed to the transport decorator and the engines).
  std::shared_ptr<faults::fault_site> site;
  /// What the transport moved (the decorator counts it).
  std::shared_ptr<transport::transport_counters> counters;
  /// This life of the worker (registration tells a restarted or rejoining worker from the old one).
  std::uint64_t incarnation = 0;
  /// Called (on the actor's thread) when the actor ends; local_cluster's supervisor uses it.
  std::function<void(const caf::error&)> on_exit;
  /// Finds the coordinator again after it was lost (a replaced coordinator process); blocking,
  /// bounded. Empty: a worker whose coordinator is gone ends.
  std::function<expected<caf::actor>()> reconnect;
  /// How long a worker without its coordinator keeps trying before it ends.
  std::chrono::milliseconds reconnect_grace{0};
};

/// Spawns the actor of a worker of either role (detached: its own thread).
caf::actor spawn_worker_actor(caf::actor_system& sys, worker_context ctx);

/// Peers a worker has connected to, by address: a new epoch reuses the connections of the last.
using peer_table = std::map<std::vector<std::uint8_t>, transport::peer_id>;

/// Connects `t` to every address in `addresses` in order (reusing those in `known`); the peers in
/// that order.
expected<std::vector<transport::peer_id>> connect_all(transport::transport& t,
                                                      const std::vector<std::vector<std::uint8_t>>& addresses,
                                                      const char* what, peer_table& known);

/// The transport address as the bytes that travel in register_worker_msg.
std::vector<std::uint8_t> address_bytes(const transport::transport& t);

/// The control messages from a worker to the coordinator, through the control plane's fault
/// points: drop, delay, duplicate, reorder (held back until the next message overtakes it) and
/// blackhole (every message lost for a duration; with `both`, the coordinator's to this worker
/// too, see blocked_incoming). Inert when no rule is armed: one relaxed atomic load. Thread-safe:
/// the actor and its engine thread both send.
class control_link {
 public:
  control_link(caf::actor dest, std::shared_ptr<faults::fault_site> site)
      : dest_(std::move(dest)), site_(std::move(site)) {}

  template <class T>
  void send(T msg) {
    if (!site_ || !site_->armed()) [[likely]] {
      caf::anon_send(dest_, std::move(msg));
      release_held();
      return;
    }
    using faults::fault_kind;
    if (blackholed()) return;
    std::shared_ptr<faults::fault_plan> plan;
    faults::data_context ctx;
    ctx.peer = "coordinator";
    const faults::decision d =
        site_->decide({fault_kind::blackhole, fault_kind::control_drop, fault_kind::control_delay,
                       fault_kind::control_duplicate, fault_kind::control_reorder},
                      ctx, plan);
    if (!d) {
      caf::anon_send(dest_, std::move(msg));
      release_held();
      return;
    }
    switch (d.rule->kind) {
      case fault_kind::blackhole: {
        std::lock_guard<std::mutex> lock(mutex_);
        blackhole_until_ = std::chrono::steady_clock::now() + d.rule->duration;
        both_ways_ = d.rule->both_ways;
        return;
      }
      case fault_kind::control_drop:
        return;
      case fault_kind::control_delay:
        caf::delayed_anon_send(dest_, d.rule->delay, std::move(msg));
        return;
      case fault_kind::control_duplicate:
        caf::anon_send(dest_, msg);
        caf::anon_send(dest_, std::move(msg));
        return;
      case fault_kind::control_reorder: {
        std::lock_guard<std::mutex> lock(mutex_);
        held_.push_back([dest = dest_, m = std::move(msg)]() mutable { caf::anon_send(dest, std::move(m)); });
        return;
      }
      default:
        caf::anon_send(dest_, std::move(msg));
        return;
    }
  }

  /// True while a two-way blackhole holds: the worker's handlers drop what the coordinator sends.
  bool blocked_incoming() {
    if (!site_ || !site_->armed()) [[likely]]
      return false;
    std::lock_guard<std::mutex> lock(mutex_);
    return both_ways_ && std::chrono::steady_clock::now() < blackhole_until_;
  }

 private:
  bool blackholed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::chrono::steady_clock::now() < blackhole_until_;
  }
  /// A held (reordered) message goes right after the one that overtook it.
  void release_held() {
    if (!site_ || !site_->armed()) [[likely]]
      return;
    std::vector<std::function<void()>> out;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      out.swap(held_);
    }
    for (auto& f : out) f();
  }

  caf::actor dest_;
  std::shared_ptr<faults::fault_site> site_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point blackhole_until_{};
  bool both_ways_ = false;
  std::vector<std::function<void()>> held_;
};

}  // namespace afd::actors::detail
