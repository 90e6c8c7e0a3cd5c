// `afd serve`: an OpenAI-compatible HTTP API in front of an AFD cluster, embedded (--topology FILE)
// or launched (--connect HOST:PORT | FILE). Runs until SIGINT/SIGTERM, then drains: requests in
// flight finish (or end with an error after --drain-timeout), then the process exits.
// Exit codes: 0 stopped by a signal, 1 runtime failure (cluster, tokenizer, port), 2 bad usage.

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include <afd/client.hpp>
#include "deploy/cli/cluster_target.hpp"
#include "deploy/cli/command_registry.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/signals.hpp"
#include "deploy/serve/server.hpp"
#include "deploy/topology/topology.hpp"
#include "runtime/text/tokenizer.hpp"

namespace afd::cli {
namespace {

int run_serve(int argc, char** argv) {
  CLI::App app{"Serves an AFD cluster over HTTP with the OpenAI API: POST /v1/completions,\n"
               "POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics (Prometheus).\n"
               "--topology FILE runs the cluster the file describes inside this process; --connect uses a\n"
               "launched one (`afd launch`). Text goes through the model directory's tokenizer.json.\n"
               "Stops on SIGINT/SIGTERM after the requests in flight end.\n"
               "Exit codes: 0 stopped by a signal, 1 runtime failure, 2 bad usage.",
               "afd serve"};
  std::string topology_file, connect, model_dir, host = "127.0.0.1", served_name, trace_file, transport;
  int port = 8000, io_threads = 2;
  double drain_s = 30;
  std::int64_t max_body = 4 << 20, chat_max_tokens = 256;
  auto* topo = app.add_option("--topology", topology_file, "run the cluster this topology file describes, in this process");
  app.add_option("--connect", connect, "serve the launched cluster whose coordinator is at HOST:PORT, or that a topology FILE describes")
      ->excludes(topo);
  app.add_option("--model", model_dir,
                 "model directory with tokenizer.json (and tokenizer_config.json); default: the topology's model "
                 "path (embedded: the model run)");
  app.add_option("--host", host, "address to listen on (default 127.0.0.1)");
  app.add_option("--port", port, "port to listen on (default 8000; 0: any free port)")->check(CLI::Range(0, 65535));
  app.add_option("--served-model-name", served_name, "the model's name in the API (default: the model directory's name)");
  app.add_option("--trace", trace_file, "write every request's trace as Chrome trace-event JSON to FILE at exit");
  app.add_option("--transport", transport, "embedded: loopback or ucx, replacing the file's transport.kind");
  app.add_option("--drain-timeout", drain_s, "seconds requests in flight may take to finish after SIGINT/SIGTERM (default 30)");
  app.add_option("--max-body-bytes", max_body, "larger request bodies get 413 (default 4 MiB)")->check(CLI::Range(1024LL, 1LL << 34));
  app.add_option("--default-chat-max-tokens", chat_max_tokens,
                 "max_tokens of a chat request that gives none (default 256)")->check(CLI::PositiveNumber);
  app.add_option("--io-threads", io_threads, "threads serving HTTP connections (default 2)")->check(CLI::Range(1, 64));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (topology_file.empty() == connect.empty()) {
    std::fprintf(stderr, "afd serve: give --topology FILE (embedded cluster) or --connect HOST:PORT|FILE\n");
    return 2;
  }
  // The model directory of the tokenizer: given, or the topology file's.
  const bool connect_is_file = !connect.empty() && (connect.find(':') == std::string::npos || std::filesystem::exists(connect));
  if (model_dir.empty()) {
    const std::string file = !topology_file.empty() ? topology_file : connect_is_file ? connect : "";
    if (file.empty()) {
      std::fprintf(stderr, "afd serve: --connect HOST:PORT needs --model DIR (the model's tokenizer)\n");
      return 2;
    }
    auto t = topology::load_file(file);
    if (!t) {
      std::fprintf(stderr, "%s\n", t.err().message().c_str());
      return 2;
    }
    model_dir = t->model.path;
  }
  auto tokenizer = text::tokenizer::from_model_dir(model_dir);
  if (!tokenizer) {
    std::fprintf(stderr,
                 "afd serve: the model's tokenizer: %s\n(afd serve needs a Hugging Face tokenizer.json in the model "
                 "directory: `afd make-model --tokenizer FILE` puts one there; --model DIR names another directory)\n",
                 tokenizer.err().message().c_str());
    return 1;
  }
  if (served_name.empty()) {
    served_name = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (served_name.empty()) served_name = std::filesystem::path(model_dir).lexically_normal().parent_path().filename().string();
    if (served_name.empty()) served_name = "afd";
  }

  if (auto can = serve::server::check_listen(host, static_cast<std::uint16_t>(port)); !can) {
    std::fprintf(stderr, "afd serve: %s\n", can.err().message().c_str());
    return can.err().code() == errc::invalid_argument ? 2 : 1;
  }
  // Signals first: a SIGTERM while the cluster starts must not kill the process half-way.
  launch::install_stop_signals();
  std::unique_ptr<client::cluster> cluster;
  if (!topology_file.empty()) {
    client::embed_options options;
    options.model_path = model_dir;
    options.transport = transport;
    auto embedded = client::cluster::embed(topology_file, options);
    if (!embedded) {
      std::fprintf(stderr, "afd serve: cluster of %s: %s\n", topology_file.c_str(), embedded.err().message().c_str());
      return embedded.err().code() == errc::invalid_argument || embedded.err().code() == errc::invalid_config ? 2 : 1;
    }
    cluster = std::move(*embedded);
  } else {
    if (!transport.empty()) {
      std::fprintf(stderr, "afd serve: --transport is for an embedded cluster (--topology)\n");
      return 2;
    }
    auto address = launch::resolve_cluster_address(connect_is_file ? connect : "", connect_is_file ? "" : connect);
    if (!address) {
      std::fprintf(stderr, "afd serve: --connect: %s\n", address.err().message().c_str());
      return 2;
    }
    auto connected = connect_cluster(*address, std::chrono::seconds(10));
    if (!connected) {
      std::fprintf(stderr, "afd serve: %s\n", connected.err().message().c_str());
      return 1;
    }
    cluster = std::move(*connected);
  }
  if (auto s = cluster->status(); s && s->vocab_size > 0 && s->vocab_size < tokenizer->vocab_size())
    std::fprintf(stderr,
                 "afd serve: warning: the tokenizer has %d ids but the model's vocabulary only %lld; prompts with "
                 "larger ids are refused\n",
                 tokenizer->vocab_size(), static_cast<long long>(s->vocab_size));

  serve::server_options options;
  options.host = host;
  options.port = static_cast<std::uint16_t>(port);
  options.served_model_name = served_name;
  options.max_body_bytes = static_cast<std::size_t>(max_body);
  options.io_threads = io_threads;
  options.default_chat_max_tokens = chat_max_tokens;
  options.trace_file = trace_file;
  auto server = serve::server::start(*cluster, *tokenizer, options);
  if (!server) {
    std::fprintf(stderr, "afd serve: %s\n", server.err().message().c_str());
    cluster->shutdown();
    return 1;
  }
  const std::string where = launch::host_port(host, (*server)->port());
  std::fprintf(stderr, "afd serve: listening on http://%s (model '%s', %s)\n", where.c_str(), served_name.c_str(),
               topology_file.empty() ? ("cluster at " + connect).c_str() : ("embedded cluster of " + topology_file).c_str());
  std::fflush(stderr);

  while (launch::stop_signal() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int sig = launch::stop_signal();
  std::fprintf(stderr, "afd serve: %s: draining %d request(s) in flight (up to %.0f s)\n",
               sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal", (*server)->in_flight(), drain_s);
  std::fflush(stderr);
  (*server)->drain(std::chrono::milliseconds(static_cast<std::int64_t>(drain_s * 1000)));
  server->reset();
  cluster->shutdown();  // embedded: stops the workers; connected: disconnects, the cluster goes on
  std::fprintf(stderr, "afd serve: stopped%s\n", trace_file.empty() ? "" : (" (trace in " + trace_file + ")").c_str());
  return 0;
}

const bool registered =
    register_command({"serve", "serve a cluster over HTTP with the OpenAI API, /metrics and /health", run_serve});

}  // namespace
}  // namespace afd::cli
