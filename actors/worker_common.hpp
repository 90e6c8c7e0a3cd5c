#pragma once
// Internal to afd::cluster: what attention_worker.cpp and ffn_worker.cpp share.

#include <caf/all.hpp>

#include <atomic>
#include <map>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dataplane/cluster_spec.hpp"
#include "actors/messages.hpp"
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
};

/// Figures the engine thread updates and the actor reads for status (hence atomics).
struct live_figures {
  std::atomic<std::int64_t> running{0};
  std::atomic<bool> failed{false};
};

/// Spawns the actor of an attention / FFN worker (detached: its own thread).
caf::actor spawn_attention_worker(caf::actor_system& sys, worker_context ctx);
caf::actor spawn_ffn_worker(caf::actor_system& sys, worker_context ctx);

/// Peers a worker has connected to, by address: a new epoch reuses the connections of the last.
using peer_table = std::map<std::vector<std::uint8_t>, transport::peer_id>;

/// Connects `t` to every address in `addresses` in order (reusing those in `known`); the peers in
/// that order.
expected<std::vector<transport::peer_id>> connect_all(transport::transport& t,
                                                      const std::vector<std::vector<std::uint8_t>>& addresses,
                                                      const char* what, peer_table& known);

/// The transport address as the bytes that travel in register_worker_msg.
std::vector<std::uint8_t> address_bytes(const transport::transport& t);

/// The first registration step every worker does when it starts: monitor the coordinator (a lost
/// coordinator ends the worker) and register. A refused registration ends the worker with the error.
template <class Self>
void register_with_coordinator(Self* self, const worker_context& ctx, std::int64_t kv_blocks, std::string device) {
  self->monitor(ctx.coordinator);
  self->set_down_handler([self](caf::down_msg& m) {
    if (m.source == self->state.ctx.coordinator.address()) self->quit(m.reason);
  });
  register_worker_msg m;
  m.role = static_cast<std::uint8_t>(ctx.role);
  m.name = ctx.name;
  m.address = address_bytes(*ctx.transport);
  m.kv_blocks = kv_blocks;
  m.device = std::move(device);
  self->request(ctx.coordinator, ctx.spec.start_timeout, std::move(m))
      .then([](std::uint32_t) {}, [self](caf::error& e) { self->quit(e); });
}

}  // namespace afd::actors::detail
