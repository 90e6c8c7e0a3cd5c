#pragma once
/// Every timeout of the HTTP server, with the reason for its size.

#include <chrono>

namespace afd::serve::timeouts {

using namespace std::chrono_literals;

/// A connection that sends no complete request header for this long is closed: idle keep-alive
/// connections (and clients that trickle bytes) must not pile up; clients reconnect at no cost.
inline constexpr auto idle_read = 60s;
/// A client that reads none of its response for this long is gone (a stopped process, a dead
/// network): its request is cancelled so that its KV is freed.
inline constexpr auto write = 60s;
/// After an error response on a connection that will close (413 with the body unread), unread
/// request bytes are discarded for up to this long, so that closing does not reset the connection
/// before the client read the answer.
inline constexpr auto linger = 2s;
/// /health and /metrics ask the coordinator with this deadline: below a Prometheus scrape's
/// default timeout (10 s) and a load balancer's health check (typically 5 s).
inline constexpr auto cluster_status = 2s;
/// How often the server looks for requests that ended without a last token (errors, cancels):
/// the delay before such a request's client hears of it.
inline constexpr auto end_poll = 10ms;
/// The same while a request's last token has arrived and its end record is due (it follows the
/// token within a message or two): the delay before the final chunk of a stream.
inline constexpr auto end_poll_after_last_token = 1ms;

}  // namespace afd::serve::timeouts
