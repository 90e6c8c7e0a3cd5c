// `afd serve --connect` in front of a cluster that `afd launch` started: the same tokens as the
// reference engine, and when the cluster goes away, 503 for new requests and /health, an error
// event for the stream in flight, and the server still answers.

#include "tests/serve/serve_harness.hpp"

namespace {

using namespace afd::serve::testing;

TEST(serve_connect, a_launched_cluster_and_its_loss) {
  AFD_REQUIRE_SERVE_MODEL();
  // Run directories (the launcher's logs) in the scratch folder.
  ::setenv("XDG_RUNTIME_DIR", scratch().c_str(), 1);
  const fs::path topology = write_topology("launched", {.coordinator_port = free_port()});
  background cluster({AFD_EXECUTABLE, "launch", topology.string(), "--foreground"}, scratch() / "launch.log");
  bool ready = false;
  for (int i = 0; i < 1200 && !ready; ++i) {
    ready = read_text(scratch() / "launch.log").find("serving at") != std::string::npos;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(ready) << read_text(scratch() / "launch.log");

  served s({"--connect", topology.string()});  // the model directory from the file
  ASSERT_GT(s.port(), 0);
  EXPECT_EQ(curl("GET", s.url() + "/health").status, 200);
  const std::vector<std::int32_t> prompt = {0, 300, 301, 302};
  const auto r = curl("POST", s.url() + "/v1/completions",
                      json{{"prompt", prompt}, {"max_tokens", 7}, {"ignore_eos", true}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.doc()["choices"][0]["token_ids"].get<std::vector<std::int32_t>>(), reference_tokens(prompt, 7));

  // A long stream, then the cluster stops under it.
  std::string body;
  std::thread reader([&] {
    body = run_command("curl -sSN -H 'Content-Type: application/json' -d " +
                       quoted(json{{"prompt", prompt}, {"max_tokens", 1000}, {"ignore_eos", true}, {"stream", true}}.dump()) +
                       " " + s.url() + "/v1/completions 2>/dev/null")
               .second;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto stopped = run_afd("stop " + quoted(topology.string()));
  EXPECT_EQ(stopped.code, 0) << stopped.err;
  reader.join();
  std::string problem;
  const auto events = sse_events(body, problem);
  EXPECT_TRUE(problem.empty()) << problem;
  ASSERT_GE(events.size(), 2u) << body;
  EXPECT_EQ(events.back(), "[DONE]");
  const json last = json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["error"]["code"], "cluster_unavailable") << body;

  const auto after = curl("POST", s.url() + "/v1/completions", json{{"prompt", prompt}, {"max_tokens", 3}}.dump());
  EXPECT_EQ(after.status, 503) << after.body;
  EXPECT_EQ(after.doc()["error"]["type"], "service_unavailable") << after.body;
  const auto health = curl("GET", s.url() + "/health");
  EXPECT_EQ(health.status, 503) << health.body;
  const auto metrics = curl("GET", s.url() + "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("afd:cluster_up 0"), std::string::npos) << metrics.body;
  EXPECT_EQ(s.stop(SIGINT, std::chrono::seconds(20)), 0) << s.log();
}

}  // namespace
