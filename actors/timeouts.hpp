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

/// How often every worker tells the coordinator it is alive and how far its engine got. 100 ms
/// costs one small message per worker per tick and lets detection stay well under a second.
inline constexpr milliseconds heartbeat_interval{100};
/// A worker none of whose heartbeats arrived for this long is declared failed (paused, hung
/// process, partitioned). 8 intervals: a loaded 2-core machine delays a tick by a few hundred ms at
/// worst (measured: a build plus two clusters), so a healthy worker never comes near it, and a
/// paused one is detected in under a second.
inline constexpr milliseconds heartbeat_timeout{800};
/// How often the coordinator looks at heartbeats, suspects and stalled epochs.
inline constexpr milliseconds liveness_check{100};
/// CAF's own link liveness (middleman heartbeats and connection timeout, off by default): a
/// connection silent for this long is closed, so monitors fire for a partitioned or frozen peer
/// process even when no afd heartbeat would. Several times heartbeat_timeout: afd's heartbeats
/// decide first, the middleman only cleans up.
inline constexpr milliseconds middleman_heartbeat{250};
inline constexpr milliseconds middleman_connection_timeout{3000};
/// A witness's report about a suspect is confirmed with the suspect's heartbeat; an engine busy
/// computing without progress for this many step deadlines is hung (a straggler slower than that
/// per step cannot be told from a hang until it finishes).
inline constexpr int hang_step_deadlines = 2;
/// A worker that stops its engine: how often its actor looks whether the engine thread left.
inline constexpr milliseconds stop_poll{10};
/// A step report that heartbeats say was sent but that has not arrived after this long was lost
/// (a delayed one arrives well within it): the epoch is retried.
inline constexpr milliseconds report_missing{500};
/// A request admitted to an attention worker that no report acknowledged within this long is
/// sent again (the worker drops a repeat): a lost admission message never strands a request.
inline constexpr milliseconds admit_ack{1000};
/// Epochs retried with the same members (a lost data message, an engine that stopped on a bad
/// message) within retry_window before the suspect is failed and fenced instead.
inline constexpr int retry_limit = 3;
inline constexpr milliseconds retry_window{10000};
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
/// A worker or client that lost its coordinator tries to reach the next one this often (the
/// replaced process listens again within a second or two), each try bounded by coordinator_probe.
inline constexpr milliseconds coordinator_retry{200};
inline constexpr milliseconds coordinator_probe{1000};
/// A TLS handshake with a live coordinator and its answer to a role query (which coordinator is
/// active): milliseconds on an idle machine, but over a second was seen with three clusters and a
/// test suite on 2 cores. A TCP connect (kernel work, unaffected by load) stays bounded by
/// coordinator_probe, so a host that is gone is still noticed within a second.
inline constexpr milliseconds coordinator_handshake{3000};
/// A coordinator process of a cluster with standbys asks the other coordinators their role this
/// often (deploy/launch/succession.hpp); a standby takes over once every coordinator before it
/// in the list does not answer and has not answered for succession_takeover. One second is
/// several coordinator_retry rounds of workers and clients (so a promotion is found at once) and
/// above a loaded machine's hiccup, yet keeps a lost coordinator's replacement under 2 s; a role
/// query to a frozen process only fails after coordinator_handshake (3 s), which then bounds it.
inline constexpr milliseconds succession_interval{250};
inline constexpr milliseconds succession_takeover{1000};
/// While a cluster starts (no coordinator seen active yet), a standby does not take over for this
/// long: the primary publishes within a second or two on a loaded machine, and a standby that won
/// the start would only be deposed again.
inline constexpr milliseconds succession_startup{10000};
/// How long a worker or a client keeps looking for a lost coordinator before it gives up (a
/// worker then exits: no orphan processes when no coordinator returns).
inline constexpr milliseconds coordinator_failover_grace{30000};
/// A client waits this long for a coordinator it found again to be ready (every worker registered
/// again), then looks again: a restarted coordinator is ready within a second or two.
inline constexpr milliseconds coordinator_ready{10000};
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
/// In-process restarts of a crashed worker actor (local_cluster), as an OTP supervisor's budget:
/// at most restart_budget restarts within restart_window, then the supervisor gives up.
inline constexpr int restart_budget = 3;
inline constexpr milliseconds restart_window{60000};
/// After a failed start, the time a crashed worker process gets to be reaped, so that its exit
/// status (not "did not register") is what the launcher reports.
inline constexpr milliseconds reap_crashed{300};
/// How often the launcher and `afd worker` look at their children, signals and watchers: a loop
/// that blocks in between, short enough that a Ctrl-C feels immediate.
inline constexpr milliseconds supervision_tick{100};

}  // namespace afd::actors::timeouts
