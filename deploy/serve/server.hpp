#pragma once
/// `afd serve`'s HTTP server: the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models),
/// /health and /metrics in front of an AFD cluster, on Boost.Beast (asynchronous: a few threads
/// serve many streams). Boost stays in server.cpp.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <afd/client.hpp>
#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer.hpp"

namespace afd::serve {

struct server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;           ///< 0: any free port (port() says which)
  std::string served_model_name = "afd";
  std::size_t max_body_bytes = 4u << 20;  ///< larger request bodies get 413
  int io_threads = 2;                  ///< threads running the HTTP sessions
  std::int64_t default_chat_max_tokens = 256;  ///< max_tokens of a chat request that gives none
  std::string trace_file;              ///< Chrome trace-event JSON of every request; empty: none
};

class server {
 public:
  /// Binds and starts serving. The cluster and tokenizer must outlive the server.
  static expected<std::unique_ptr<server>> start(client::cluster& cluster, const text::tokenizer& tokenizer,
                                                 server_options options);
  ~server();

  /// Whether `host`:`port` can be listened on now (binds and lets go): a command checks it before
  /// it spends time starting a cluster. errc::invalid_argument for a bad address, unavailable else.
  static expected<void> check_listen(const std::string& host, std::uint16_t port);

  /// The port it listens on.
  std::uint16_t port() const;
  /// Stops accepting connections; requests in flight go on for up to `grace`, then every one left
  /// ends with an error (an error event in a stream, 503 otherwise) and its cluster request is
  /// cancelled; then the server stops and writes the trace file. Idempotent.
  void drain(std::chrono::milliseconds grace);
  /// Requests in flight.
  int in_flight() const;

  struct impl;

 private:
  explicit server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace afd::serve
