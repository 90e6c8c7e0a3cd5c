#pragma once
/// Every timeout of the control plane, in one place, each with the reason for its size. CAF-free,
/// so the launcher, the client and the CLI use the same values. Data-plane deadlines (the step
/// deadline) are settings of the run (topology `pipeline.step_deadline_ms`).
///
/// Sizes are for this kind of machine at its worst: 2 cores shared by every worker, the engines
/// and a build, where a scheduler hiccup of a few hundred milliseconds is normal. A timeout that
/// fires on a healthy but loaded cluster is a false failure, so a bound that guards a liveness
/// question is several times the longest stall seen on such a machine.

#include <chrono>

namespace afd::actors::timeouts {

using std::chrono::milliseconds;

/// An engine failure reported by a witness (a step deadline, a transport error) waits this long for
/// a down message about the peer before it is blamed: a crashed peer's socket closes within
/// milliseconds, so a root cause that exists arrives well inside it.
inline constexpr milliseconds failure_grace{300};
/// One worker's answer to a status query. Its handler only reads atomics; 2 s covers a mailbox
/// behind a start_epoch that is loading weights on a loaded machine.
inline constexpr milliseconds worker_status{2000};
/// A worker stopping its engine: the engine notices within one wait slice (10 ms) and the thread
/// joins after the step in flight, whose kernels take up to a few seconds on a large model here.
inline constexpr milliseconds stop_engine{10000};
/// The coordinator ending pending requests and stopping the workers on shutdown (messages only).
inline constexpr milliseconds shutdown{5000};
/// A client's round trips to the coordinator (submit, cancel, stop): the coordinator answers
/// from its own state, so only a dead or partitioned one takes longer; 10 s leaves room for a
/// coordinator busy starting an epoch.
inline constexpr milliseconds client_request{10000};
/// The launcher's wait for the coordinator's status when it reports a failed start.
inline constexpr milliseconds launcher_status{3000};
/// A worker's transport flush when its actor ends: messages in flight drain in microseconds; a
/// dead peer must not hold the exit.
inline constexpr milliseconds transport_shutdown{1000};

/// Worker processes after the coordinator stopped them: an orderly exit (engines stopped, weights
/// unmapped) takes well under a second; then SIGTERM, then SIGKILL.
inline constexpr milliseconds process_exit{10000};
/// After SIGTERM, before SIGKILL.
inline constexpr milliseconds process_term{5000};
/// A process's actors after the cluster or a signal stopped it: past this the process exits
/// anyway, so a worker stuck in a kernel never keeps its GPU.
inline constexpr milliseconds actors_exit_after_signal{3000};
inline constexpr milliseconds actors_exit{15000};
/// After a failed start, the time a crashed worker process gets to be reaped, so that its exit
/// status (not "did not register") is what the launcher reports.
inline constexpr milliseconds reap_crashed{300};
/// How often the launcher and `afd worker` look at their children, signals and watchers: a loop
/// that blocks in between, short enough that a Ctrl-C feels immediate.
inline constexpr milliseconds supervision_tick{100};

}  // namespace afd::actors::timeouts
