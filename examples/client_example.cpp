// A program that uses afd as a library: it reaches a cluster (one launched with `afd launch`, or
// one embedded in this process), submits several prompts at once, prints each request's tokens as
// they stream in, then the final results and the cluster's status.
//
//   afd launch deploy/examples/2a2f.yaml                 # serves at 127.0.0.1:7601
//   afd-client-example --connect 127.0.0.1:7601
//   afd-client-example --embed deploy/examples/1a1f.yaml  # no launcher: the cluster runs here
//
// Only deploy/client/client.hpp is needed: no CAF, UCX or YAML types, and every failure is an
// afd::expected value.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <afd/client.hpp>

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: afd-client-example (--connect HOST:PORT | --embed TOPOLOGY.yaml [--model DIR])\n"
               "                          [--requests N] [--max-new-tokens N] [--temperature T] [--seed S]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string connect, embed, model;
  int requests = 4;
  std::int64_t max_new_tokens = 12;
  float temperature = 0.0f;
  std::uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return usage();
    const char* value = argv[++i];
    if (arg == "--connect") connect = value;
    else if (arg == "--embed") embed = value;
    else if (arg == "--model") model = value;
    else if (arg == "--requests") requests = std::atoi(value);
    else if (arg == "--max-new-tokens") max_new_tokens = std::atoll(value);
    else if (arg == "--temperature") temperature = std::strtof(value, nullptr);
    else if (arg == "--seed") seed = std::strtoull(value, nullptr, 10);
    else return usage();
  }
  if (connect.empty() == embed.empty() || requests < 1) return usage();

  // 1. Reach the cluster.
  afd::expected<std::unique_ptr<afd::client::cluster>> cluster = afd::error{};
  if (!connect.empty()) {
    const auto colon = connect.rfind(':');
    if (colon == std::string::npos) return usage();
    cluster = afd::client::cluster::connect(connect.substr(0, colon),
                                            static_cast<std::uint16_t>(std::atoi(connect.c_str() + colon + 1)));
  } else {
    afd::client::embed_options options;
    options.model_path = model;
    cluster = afd::client::cluster::embed(embed, options);
  }
  if (!cluster) {
    std::fprintf(stderr, "cannot reach the cluster: %s\n", cluster.err().to_string().c_str());
    return 1;
  }
  afd::client::cluster& c = **cluster;

  // 2. Submit every request at once; tokens stream to the callback on an internal thread. Prompt
  // ids are made up here, so they are kept inside the model's vocabulary.
  auto before = c.status();
  if (!before) {
    std::fprintf(stderr, "status: %s\n", before.err().to_string().c_str());
    return 1;
  }
  const std::int64_t vocab = before->vocab_size;
  std::mutex print_mutex;
  std::vector<afd::client::request_id> ids;
  for (int r = 0; r < requests; ++r) {
    afd::client::request req;
    for (int k = 0; k <= r; ++k)  // prompts of different lengths
      req.prompt.push_back(static_cast<std::int32_t>((5 + 17 * k + r) % vocab));
    req.max_new_tokens = max_new_tokens;
    req.sampling.temperature = temperature;
    req.sampling.seed = seed + static_cast<std::uint64_t>(r);
    auto id = c.submit(req, [&](const afd::client::token& t) {
      std::lock_guard lock(print_mutex);
      std::printf("  request %lld token %lld: %d%s\n", static_cast<long long>(t.id), static_cast<long long>(t.index),
                  t.value, t.last ? " (last)" : "");
    });
    if (!id) {
      std::fprintf(stderr, "submit: %s\n", id.err().to_string().c_str());
      return 1;
    }
    ids.push_back(*id);
  }

  // 3. Wait for each result.
  int failures = 0;
  for (auto id : ids) {
    auto res = c.wait(id, std::chrono::seconds(120));
    std::lock_guard lock(print_mutex);
    if (!res) {
      std::printf("request %lld failed: %s\n", static_cast<long long>(id), res.err().to_string().c_str());
      ++failures;
      continue;
    }
    std::printf("request %lld (%s):", static_cast<long long>(id), res->finish_reason.c_str());
    for (auto t : res->tokens) std::printf(" %d", t);
    std::printf("\n");
  }

  // 4. The cluster as the coordinator sees it.
  if (auto s = c.status()) {
    std::printf("cluster: %s, %lld requests finished\n", s->ready ? "ready" : "not ready",
                static_cast<long long>(s->finished));
    for (const auto& w : s->workers)
      std::printf("  %-6s %-9s %-6s %-7s kv %lld/%lld\n", w.name.c_str(), w.role.c_str(), w.device.c_str(),
                  std::string(afd::to_string(w.state)).c_str(), static_cast<long long>(w.kv_blocks_used), static_cast<long long>(w.kv_blocks_total));
  }
  c.shutdown();  // embedded: stops the cluster; connected: disconnects (the cluster keeps serving)
  return failures == 0 ? 0 : 1;
}
