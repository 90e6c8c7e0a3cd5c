#pragma once
/// The launcher's and the node agent's own timeouts and budgets (control-plane timeouts shared
/// with the actors are in actors/timeouts.hpp), each with the reason for its size. CAF-free.

#include <chrono>

namespace afd::launch::timeouts {

using std::chrono::milliseconds;
using std::chrono::seconds;

/// Restart budget of a supervised worker process (OTP's intensity and period): at most
/// `max_restarts` restarts within `restart_window`; one more unexpected exit inside the window and
/// the supervisor gives up on that process. Three in a minute lets a worker survive a stray kill or
/// an out-of-memory kill now and then, while a process that fails every time it starts (bad
/// weights, a device it cannot open) is given up within seconds instead of looping forever.
inline constexpr int max_restarts = 3;
inline constexpr seconds restart_window{60};

/// How long a node agent (and the workers it supervises) keep running while no coordinator of
/// their cluster answers on its port. Agents started over ssh outlive a killed ssh client, so this
/// bound is what guarantees that no process outlives its cluster. 15 s covers a coordinator that
/// is being restarted by its own supervisor (process start and publish take about a second here)
/// several times over on a loaded 2-core machine, and a network hiccup of a few seconds.
inline constexpr seconds coordinator_grace{15};
/// How often an agent checks that the coordinator's port accepts a TCP connection, and how long
/// one check may take: a connection on a healthy network is made in well under a millisecond.
inline constexpr milliseconds coordinator_probe_interval{1000};
inline constexpr milliseconds coordinator_probe_timeout{1000};

/// ssh's ConnectTimeout for starting a remote agent: a reachable sshd answers in milliseconds; an
/// address that does not answer fails in about 3 s on a LAN (ARP gives up, "No route to host"),
/// a dropped SYN only after this bound.
inline constexpr seconds ssh_connect_timeout{10};

/// The agent of a node that does not host the coordinator has started when its worker processes
/// run; `afd launch` waits for the coordinator's readiness (start_timeout) for the whole cluster.
/// How often `afd launch --via slurm` asks the coordinator whether every worker is ready.
inline constexpr milliseconds readiness_poll{500};

}  // namespace afd::launch::timeouts
