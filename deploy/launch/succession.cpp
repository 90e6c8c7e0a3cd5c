// The succession of coordinators (succession.hpp) and the search for the active one.
#include "deploy/launch/succession.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <optional>
#include <tuple>
#include <vector>

#include "actors/messages.hpp"
#include "actors/timeouts.hpp"
#include "deploy/launch/tls.hpp"

namespace afd::launch {

using clock = std::chrono::steady_clock;

bool tcp_reachable(const std::string& host, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found) return false;
  bool ok = false;
  for (addrinfo* a = found; a && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
        int err = 0;
        socklen_t len = sizeof(err);
        ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
      }
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

namespace {

/// What a coordinator answered to role_atom.
struct role_answer {
  bool active = false;
  std::uint64_t term = 0;
};

expected<role_answer> ask_role(caf::actor_system& sys, const caf::actor& who, std::chrono::milliseconds timeout) {
  expected<role_answer> out = fail(errc::unavailable, "no answer");
  caf::scoped_actor self{sys};
  self->request(who, caf::timespan{timeout}, actors::role_atom::value)
      .receive([&](bool active, std::uint64_t term) { out = role_answer{active, term}; },
               [&](caf::error& e) { out = fail(errc::unavailable, "no answer to its role: ", sys.render(e)); });
  return out;
}

}  // namespace

expected<caf::actor> connect_active(caf::actor_system& sys, const address_list& addresses, bool secure,
                                    std::chrono::milliseconds timeout, int* index) {
  std::string why;
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    const auto& [host, port] = addresses[i];
    const std::string where = host_port(host, port);
    auto note = [&](const std::string& what) { why += (why.empty() ? "" : "; ") + where + ": " + what; };
    if (addresses.size() > 1 && !tcp_reachable(host, port, std::min(timeout, actors::timeouts::coordinator_probe))) {
      note("unreachable");
      continue;
    }
    auto c = tls::connect(sys, host, static_cast<std::uint16_t>(port), secure, timeout);
    if (!c) {
      note(c.err().message());
      continue;
    }
    auto role = ask_role(sys, *c, timeout);
    if (!role) {
      note(role.err().message());
      continue;
    }
    if (!role->active) {
      note("a standby");
      continue;
    }
    if (index) *index = static_cast<int>(i);
    return *c;
  }
  return fail(errc::unavailable, "no active coordinator: ", why);
}

struct succession_state {
  struct peer {
    int index = 0;
    std::string host;
    int port = 0;
    caf::actor handle;
    bool reachable = false;
    clock::time_point last_seen;  ///< its last answer (the process's start before any)
    role_answer role;
  };
  caf::actor_system* sys = nullptr;
  caf::actor coordinator;
  std::vector<peer> peers;
  int self_index = 0;
  bool secure = false;
  std::string who;
  std::uint64_t max_term = 0;
  bool active = false;
  std::uint64_t term = 0;
  clock::time_point born = clock::now();
  bool seen_active = false;  ///< some coordinator answered "active" since this process started

  /// A TCP connect first on every round (a host that is gone fails it within coordinator_probe,
  /// where a role query would wait for its whole deadline), then the role query.
  void probe(peer& p) {
    // A standby waits for a loaded peer's answer (a false takeover costs a deposition); an active
    // coordinator looks again sooner (a frozen one that thawed finds its successor faster).
    const auto timeout = active ? actors::timeouts::coordinator_probe : actors::timeouts::coordinator_handshake;
    const bool up = tcp_reachable(p.host, p.port, actors::timeouts::coordinator_probe);
    if (!up) p.handle = nullptr;
    if (up && !p.handle) {
      auto c = tls::connect(*sys, p.host, static_cast<std::uint16_t>(p.port), secure, timeout);
      if (c) p.handle = *c;
    }
    std::optional<role_answer> answer;
    if (p.handle) {
      if (auto r = ask_role(*sys, p.handle, timeout))
        answer = *r;
      else
        p.handle = nullptr;  // connect again next time (a restarted process is a new node)
    }
    if (answer) {
      p.reachable = true;
      p.last_seen = clock::now();
      p.role = *answer;
      if (answer->active) seen_active = true;
      if (answer->term > max_term) max_term = answer->term;
    } else {
      p.reachable = false;
      p.role = {};
    }
  }
};

succession::succession(caf::actor_system& sys, caf::actor coordinator, address_list addresses, int self_index,
                       bool secure, std::string who)
    : s_(std::make_unique<succession_state>()) {
  s_->sys = &sys;
  s_->coordinator = std::move(coordinator);
  s_->self_index = self_index;
  s_->secure = secure;
  s_->who = std::move(who);
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    if (static_cast<int>(i) == self_index) continue;
    succession_state::peer p;
    p.index = static_cast<int>(i);
    p.host = addresses[i].first;
    p.port = addresses[i].second;
    p.last_seen = s_->born;
    s_->peers.push_back(std::move(p));
  }
}

succession::~succession() = default;

succession::verdict succession::step() {
  auto& s = *s_;
  for (auto& p : s.peers) s.probe(p);
  if (!s.active) caf::anon_send(s.coordinator, actors::role_atom::value, s.max_term);  // answered to others
  const auto now = clock::now();
  if (!s.active) {
    // A coordinator before this one is gone when it does not answer now and has not answered for
    // succession_takeover. While the cluster starts (no coordinator seen active yet), a standby
    // waits succession_startup: the primary may be slow to publish on a loaded machine.
    bool any_active = false, before_gone = true;
    for (const auto& p : s.peers) {
      if (p.reachable && p.role.active) any_active = true;
      if (p.index < s.self_index && (p.reachable || now - p.last_seen < actors::timeouts::succession_takeover))
        before_gone = false;
    }
    if (s.self_index > 0 && !s.seen_active && now - s.born < actors::timeouts::succession_startup) before_gone = false;
    if (any_active || !before_gone) return verdict::standby;
    s.term = s.max_term + 1;
    s.active = true;
    caf::anon_send(s.coordinator, actors::promote_atom::value, s.term);
    std::string gone;
    for (const auto& p : s.peers)
      if (p.index < s.self_index) gone += (gone.empty() ? "" : ", ") + host_port(p.host, p.port);
    std::fprintf(stderr, "%s: active with term %llu%s\n", s.who.c_str(), static_cast<unsigned long long>(s.term),
                 gone.empty() ? "" : (" (no answer from " + gone + ")").c_str());
    return verdict::active;
  }
  for (const auto& p : s.peers)
    if (p.reachable && p.role.active &&
        (p.role.term > s.term || (p.role.term == s.term && p.index < s.self_index))) {
      std::fprintf(stderr, "%s: deposed: the coordinator at %s is active with term %llu (this one: term %llu)\n",
                   s.who.c_str(), host_port(p.host, p.port).c_str(), static_cast<unsigned long long>(p.role.term),
                   static_cast<unsigned long long>(s.term));
      return verdict::deposed;
    }
  return verdict::active;
}

void succession::stop_others() {
  auto& s = *s_;
  for (auto& p : s.peers) {
    if (!p.handle && tcp_reachable(p.host, p.port, actors::timeouts::coordinator_probe))
      if (auto c = tls::connect(*s.sys, p.host, static_cast<std::uint16_t>(p.port), s.secure,
                                actors::timeouts::coordinator_handshake))
        p.handle = *c;
    if (p.handle) caf::anon_send(p.handle, actors::shutdown_atom::value);
  }
}

}  // namespace afd::launch
