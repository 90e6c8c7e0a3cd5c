#pragma once
/// Which coordinator serves a cluster with standbys (`coordinator: {standby: [...]}`), and how
/// workers, launchers and clients find it. Each coordinator process runs a succession: every
/// timeouts::succession_interval it asks the other coordinators their role (active or standby)
/// and term, and
/// - a standby becomes active (term: one above every term it has seen) when no coordinator it
///   reaches is active and every coordinator before it in the list has been unreachable for
///   timeouts::succession_takeover (the primary, first in the list, needs only the first);
/// - an active coordinator that reaches another active one with a higher term (or the same term
///   and an earlier place in the list) is deposed: its process exits (code 3), which breaks every
///   link to it, and its supervisor starts it again as a standby. So a paused or cut-off
///   coordinator that comes back cannot split the cluster.
/// Workers and clients hold the whole list and register with (or submit to) the active one.
/// This header compiles without CAF.

#include <chrono>
#include <memory>
#include <string>

#include "deploy/launch/launch_plan.hpp"
#include "runtime/core/error.hpp"

namespace caf {
class actor;
class actor_system;
}  // namespace caf

namespace afd::launch {

/// True when a TCP connection to host:port is accepted within `timeout` (closed at once): cheap
/// for plain and TLS endpoints alike, and bounded where CAF's own connect is not.
bool tcp_reachable(const std::string& host, int port, std::chrono::milliseconds timeout);

/// The active coordinator among `addresses`, tried in order: each reachable one is connected
/// (through TLS when `secure`, each step bounded by `timeout`) and asked its role. `index` (when
/// not null) receives its place in the list. errc::unavailable saying what each address answered.
expected<caf::actor> connect_active(caf::actor_system& sys, const address_list& addresses, bool secure,
                                    std::chrono::milliseconds timeout, int* index = nullptr);

/// The succession of one coordinator process: its coordinator actor, its place in the list.
class succession {
 public:
  /// `self_index`: this coordinator's place in `addresses` (0: the primary).
  succession(caf::actor_system& sys, caf::actor coordinator, address_list addresses, int self_index, bool secure,
             std::string who);
  ~succession();
  succession(const succession&) = delete;
  succession& operator=(const succession&) = delete;

  /// One look at the others (blocking, bounded by a probe per coordinator); promotes this
  /// coordinator or reports that it is deposed. Call every timeouts::succession_interval.
  enum class verdict : std::uint8_t { standby, active, deposed };
  verdict step();
  /// After an orderly stop of the active coordinator (`afd stop`): stops every standby it reaches.
  void stop_others();

 private:
  std::unique_ptr<struct succession_state> s_;
};

}  // namespace afd::launch
