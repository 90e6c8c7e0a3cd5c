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

namespace {

using namespace afd::serve::testing;

// A 2A2F cluster over UCX, one process per worker; an FFN worker is killed while a stream runs:
// the stream goes on to the reference engine's tokens (its units move to the other FFN worker and
// back when the launcher's restart rejoins), and the request's trace shows the recovery.
TEST(serve_connect, a_stream_lives_through_a_killed_worker) {
  AFD_REQUIRE_SERVE_MODEL();
  ::setenv("XDG_RUNTIME_DIR", scratch().c_str(), 1);
  std::string yaml = read_text(fs::path(AFD_SOURCE_DIR) / "deploy/examples/2a2f.yaml");
  yaml = std::regex_replace(yaml, std::regex(R"(\bport: \d+)"), "port: " + std::to_string(free_port()));
  yaml = std::regex_replace(yaml, std::regex(R"(path: \S+)"), "path: " + model_dir().string());
  const fs::path topology = scratch() / "2a2f.yaml";
  std::ofstream(topology) << yaml;
  const fs::path log = scratch() / "launch-2a2f.log";
  background cluster({AFD_EXECUTABLE, "launch", topology.string(), "--foreground"}, log);
  bool ready = false;
  for (int i = 0; i < 1800 && !ready; ++i) {
    ready = read_text(log).find("serving at") != std::string::npos;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(ready) << read_text(log);
  std::smatch m;
  const std::string launch_log = read_text(log);
  ASSERT_TRUE(std::regex_search(launch_log, m, std::regex(R"(run dir\s+(\S+))"))) << launch_log;
  long f1 = 0;
  {
    std::ifstream in(m[1].str() + "/processes");
    std::string name, rest;
    long pid = 0;
    while (in >> name >> pid) {
      std::getline(in, rest);
      if (name == "f1") f1 = pid;
    }
  }
  ASSERT_GT(f1, 0);

  const fs::path trace = scratch() / "recovery-trace.json";
  served s({"--connect", topology.string(), "--trace", trace.string()});
  ASSERT_GT(s.port(), 0);
  const std::vector<std::int32_t> prompt = {0, 400, 401, 402};
  const int n = 120;
  std::string body;
  std::thread reader([&] {
    body = run_command("curl -sSN -H 'Content-Type: application/json' -H 'x-request-id: survivor' -d " +
                       quoted(json{{"prompt", prompt}, {"max_tokens", n}, {"ignore_eos", true}, {"stream", true}}.dump()) +
                       " " + s.url() + "/v1/completions 2>/dev/null")
               .second;
  });
  // Kill f1 once the stream has produced tokens.
  for (int i = 0; i < 1200; ++i) {
    if (scrape(s.url()).at("afd:generation_tokens_total{model_name=\"deepseek-tiny\"}") >= 5) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(::kill(static_cast<pid_t>(f1), SIGKILL), 0);
  reader.join();
  std::string problem;
  const auto events = sse_events(body, problem);
  EXPECT_TRUE(problem.empty()) << problem;
  ASSERT_GE(events.size(), 2u) << body;
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<std::int32_t> tokens;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i]);
    ASSERT_FALSE(c.contains("error")) << events[i];
    for (const auto& id : c["choices"][0]["token_ids"]) tokens.push_back(id.get<std::int32_t>());
  }
  EXPECT_EQ(tokens, reference_tokens(prompt, n));
  EXPECT_GE(scrape(s.url()).at("afd:cluster_recoveries_total"), 1);

  EXPECT_EQ(s.stop(SIGTERM, std::chrono::seconds(20)), 0) << s.log();
  const json t = json::parse(read_text(trace), nullptr, false);
  ASSERT_TRUE(t.contains("traceEvents")) << read_text(trace);
  bool found = false, failure_event = false;
  for (const auto& e : t["traceEvents"]) {
    if (e["name"] == "request" && e["args"]["request_id"] == "survivor") {
      found = true;
      EXPECT_GE(e["args"]["recoveries"].get<int>(), 1) << e.dump();
    }
    if (e.value("cat", "") == "recovery" && e["name"].get<std::string>().find("failed f1") != std::string::npos)
      failure_event = true;
  }
  EXPECT_TRUE(found) << t.dump();
  EXPECT_TRUE(failure_event) << t.dump();
}

}  // namespace
