// `afd serve` over HTTP as curl and raw sockets see it: the bytes of a stream (SSE events, chunked
// framing, [DONE]), tokens equal to the reference engine's, every error status, metrics that agree
// with the usage the server reported, a client that leaves cancels its request, and SIGTERM drains.

#include <cstdio>
#include <set>

#include "tests/serve/serve_harness.hpp"

namespace {

using namespace afd::serve::testing;

/// One server for the tests of this file (started by the first that needs it).
served& server() {
  static served s(write_topology("http", {}), {"--served-model-name", "tiny-ds", "--max-body-bytes", "65536"});
  return s;
}

const std::vector<std::int32_t> prompt_ids = {0, 19923, 14, 1614, 3331, 16};

TEST(serve_http, a_streamed_completion_is_sse_events_then_done) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const json body{{"model", "tiny-ds"}, {"prompt", prompt_ids}, {"max_tokens", 12}, {"ignore_eos", true},
                  {"stream", true}, {"stream_options", {{"include_usage", true}}}};
  // --raw: the body as it crossed the wire, chunked framing included.
  const auto raw = curl("POST", s.url() + "/v1/completions", body.dump(), "-N --raw");
  ASSERT_EQ(raw.status, 200) << raw.body;
  EXPECT_EQ(header_value(raw.headers, "content-type"), "text/event-stream");
  EXPECT_EQ(header_value(raw.headers, "transfer-encoding"), "chunked");
  EXPECT_EQ(header_value(raw.headers, "x-request-id").empty(), false);
  // Chunked framing: HEX\r\nDATA\r\n ... 0\r\n\r\n, and the data of the chunks is the SSE text.
  std::string sse;
  std::size_t at = 0;
  bool last_chunk = false;
  while (at < raw.body.size()) {
    const auto eol = raw.body.find("\r\n", at);
    ASSERT_NE(eol, std::string::npos) << raw.body.substr(at);
    const auto size = std::stoul(raw.body.substr(at, eol - at), nullptr, 16);
    if (size == 0) {
      EXPECT_EQ(raw.body.substr(eol), "\r\n\r\n");
      last_chunk = true;
      break;
    }
    sse += raw.body.substr(eol + 2, size);
    EXPECT_EQ(raw.body.substr(eol + 2 + size, 2), "\r\n");
    at = eol + 2 + size + 2;
  }
  EXPECT_TRUE(last_chunk);
  EXPECT_EQ(sse.find("event:"), std::string::npos);
  std::string problem;
  const auto events = sse_events(sse, problem);
  EXPECT_TRUE(problem.empty()) << problem;
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<std::int32_t> tokens;
  std::string text, finish;
  for (std::size_t i = 0; i + 2 < events.size(); ++i) {
    const json c = json::parse(events[i]);
    EXPECT_EQ(c["object"], "text_completion");
    EXPECT_EQ(c["model"], "tiny-ds");
    EXPECT_TRUE(c["usage"].is_null());
    ASSERT_EQ(c["choices"].size(), 1u);
    for (auto id : c["choices"][0]["token_ids"]) tokens.push_back(id.get<std::int32_t>());
    text += c["choices"][0]["text"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) finish = c["choices"][0]["finish_reason"];
  }
  const json usage_chunk = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["prompt_tokens"], prompt_ids.size());
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 12);
  EXPECT_EQ(usage_chunk["usage"]["total_tokens"], prompt_ids.size() + 12);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(tokens, reference_tokens(prompt_ids, 12));
  EXPECT_EQ(text, decoded(tokens));

  // An HTTP/1.0 client has no chunked encoding: the same events, and the stream ends with the connection.
  const std::string small = json{{"prompt", prompt_ids}, {"max_tokens", 2}, {"stream", true}}.dump();
  const auto old = raw_exchange(s.port(), "POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                                          "Content-Length: " + std::to_string(small.size()) + "\r\n\r\n" + small);
  EXPECT_EQ(old.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << old;
  const auto body_at = old.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos);
  const auto old_events = sse_events(old.substr(body_at + 4), problem);
  EXPECT_TRUE(problem.empty()) << problem;
  ASSERT_EQ(old_events.size(), 3u) << old;
  EXPECT_EQ(old_events.back(), "[DONE]");
}

TEST(serve_http, a_completion_has_the_reference_engines_tokens) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const auto r = curl("POST", s.url() + "/v1/completions",
                      json{{"prompt", prompt_ids}, {"max_tokens", 9}, {"ignore_eos", true}}.dump(),
                      "-H 'x-request-id: my-request-7' -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header_value(r.headers, "x-request-id"), "my-request-7");
  EXPECT_EQ(header_value(r.headers, "traceparent").substr(0, 36), "00-0af7651916cd43dd8448eb211c80319c-");
  const json doc = r.doc();
  EXPECT_EQ(doc["id"], "cmpl-my-request-7");
  EXPECT_EQ(doc["object"], "text_completion");
  const auto tokens = doc["choices"][0]["token_ids"].get<std::vector<std::int32_t>>();
  EXPECT_EQ(tokens, reference_tokens(prompt_ids, 9));
  EXPECT_EQ(doc["choices"][0]["text"], decoded(tokens));
  EXPECT_EQ(doc["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(doc["usage"]["completion_tokens"], 9);

  // Text in: the prompt is encoded with BOS as `afd tokenize --model` does.
  const auto ids = run_afd("tokenize --model " + quoted(model_dir().string()) + " --text " + quoted("Hello, 世界"));
  const auto want_prompt = json::parse(ids.out)["ids"].get<std::vector<std::int32_t>>();
  const auto t = curl("POST", s.url() + "/v1/completions",
                      json{{"prompt", "Hello, 世界"}, {"max_tokens", 5}, {"ignore_eos", true}}.dump());
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.doc()["choices"][0]["prompt_token_ids"].get<std::vector<std::int32_t>>(), want_prompt);
  EXPECT_EQ(t.doc()["choices"][0]["token_ids"].get<std::vector<std::int32_t>>(), reference_tokens(want_prompt, 5));

  // A stop string ends the text before it; the tokens up to the one that completed it are kept.
  const std::string full = doc["choices"][0]["text"];
  if (full.size() >= 4) {
    // One whole character from the middle of the text.
    std::size_t from = full.size() / 2, to = from + 1;
    while (from > 0 && (static_cast<unsigned char>(full[from]) & 0xC0) == 0x80) --from;
    to = from + 1;
    while (to < full.size() && (static_cast<unsigned char>(full[to]) & 0xC0) == 0x80) ++to;
    const std::string stop = full.substr(from, to - from);
    const auto st = curl("POST", s.url() + "/v1/completions",
                         json{{"prompt", prompt_ids}, {"max_tokens", 9}, {"ignore_eos", true}, {"stop", stop}}.dump());
    ASSERT_EQ(st.status, 200) << st.body;
    EXPECT_EQ(st.doc()["choices"][0]["text"], full.substr(0, full.find(stop)));
    EXPECT_EQ(st.doc()["choices"][0]["finish_reason"], "stop");
  }
}

TEST(serve_http, models_health_and_metrics) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const auto models = curl("GET", s.url() + "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.doc()["data"][0]["id"], "tiny-ds");
  EXPECT_EQ(curl("GET", s.url() + "/health").status, 200);
  const auto m = scrape(s.url());
  EXPECT_EQ(m.at("afd:cluster_ready"), 1);
  EXPECT_EQ(m.at("afd:cluster_epoch") >= 1, true);
  EXPECT_TRUE(m.count("afd:kv_cache_usage_perc{model_name=\"tiny-ds\",worker=\"a0\"}"));
  EXPECT_TRUE(m.count("afd:transport_bytes_total{worker=\"f0\",role=\"ffn\",direction=\"received\"}"));
  EXPECT_TRUE(m.count("afd:layer_compute_seconds_total{worker=\"a0\",role=\"attention\",layer=\"0\"}"));
}

TEST(serve_http, metrics_agree_with_the_usage_reported) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const auto before = scrape(s.url());
  std::int64_t prompt = 0, completion = 0;
  for (int i = 0; i < 4; ++i) {
    auto ids = prompt_ids;
    ids.push_back(100 + i);
    const bool stream = i % 2 == 1;
    json body{{"prompt", ids}, {"max_tokens", 3 + i}, {"ignore_eos", true}, {"stream", stream}};
    if (stream) body["stream_options"] = {{"include_usage", true}};
    const auto r = curl("POST", s.url() + "/v1/completions", body.dump(), "-N");
    ASSERT_EQ(r.status, 200) << r.body;
    json usage;
    if (stream) {
      std::string problem;
      const auto events = sse_events(r.body, problem);
      usage = json::parse(events[events.size() - 2])["usage"];
    } else {
      usage = r.doc()["usage"];
    }
    prompt += usage["prompt_tokens"].get<std::int64_t>();
    completion += usage["completion_tokens"].get<std::int64_t>();
  }
  const auto after = scrape(s.url());
  const std::string m = "{model_name=\"tiny-ds\"}";
  EXPECT_EQ(after.at("afd:prompt_tokens_total" + m) - before.at("afd:prompt_tokens_total" + m), prompt);
  EXPECT_EQ(after.at("afd:generation_tokens_total" + m) - before.at("afd:generation_tokens_total" + m), completion);
  const std::string length = "{model_name=\"tiny-ds\",finished_reason=\"length\"}";
  EXPECT_EQ(after.at("afd:request_success_total" + length) - before.at("afd:request_success_total" + length), 4);
  EXPECT_EQ(after.at("afd:e2e_request_latency_seconds_count" + m) - before.at("afd:e2e_request_latency_seconds_count" + m), 4);
  EXPECT_EQ(after.at("afd:time_to_first_token_seconds_count" + m) -
                before.at("afd:time_to_first_token_seconds_count" + m),
            4);
  // One inter-token gap per token after the first.
  EXPECT_EQ(after.at("afd:inter_token_latency_seconds_count" + m) -
                before.at("afd:inter_token_latency_seconds_count" + m),
            completion - 4);
  EXPECT_EQ(after.at("afd:request_queue_time_seconds_count" + m) - before.at("afd:request_queue_time_seconds_count" + m), 4);
  EXPECT_EQ(after.at("afd:num_requests_running" + m), 0);
}

TEST(serve_http, every_error_has_its_status_and_an_openai_error_object) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  auto expect_error = [&](const http_result& r, int status, const std::string& param) {
    EXPECT_EQ(r.status, status) << r.body;
    const json d = r.doc();
    ASSERT_TRUE(d.contains("error")) << r.body;
    EXPECT_TRUE(d["error"]["message"].is_string());
    EXPECT_TRUE(d["error"]["type"].is_string());
    EXPECT_TRUE(d["error"].contains("code"));
    if (param.empty()) EXPECT_TRUE(d["error"]["param"].is_null()) << r.body;
    else EXPECT_EQ(d["error"]["param"], param) << r.body;
  };
  const std::string url = s.url() + "/v1/completions";
  expect_error(curl("POST", url, "{\"prompt\": [1, 2"), 400, "");
  expect_error(curl("POST", url, "[1, 2]"), 400, "");
  expect_error(curl("POST", url, json{{"prompt", {5, 128815}}}.dump()), 400, "prompt");
  expect_error(curl("POST", url, json{{"prompt", {5, -1}}}.dump()), 400, "prompt");
  expect_error(curl("POST", url, json{{"prompt", "hi"}, {"n", 2}}.dump()), 400, "n");
  expect_error(curl("POST", url, json{{"prompt", "hi"}, {"max_tokens", 0}}.dump()), 400, "max_tokens");
  expect_error(curl("POST", url, json{{"prompt", "hi"}, {"temperature", -1}}.dump()), 400, "temperature");
  expect_error(curl("POST", url, json{{"prompt", "hi"}, {"top_p", 0}}.dump()), 400, "top_p");
  expect_error(curl("POST", url, json{{"prompt", "hi"}, {"stop", 5}}.dump()), 400, "stop");
  expect_error(curl("POST", url, json{{"max_tokens", 3}}.dump()), 400, "prompt");
  expect_error(curl("POST", url, "{\"prompt\": " + std::string(30000, '[') + std::string(30000, ']') + "}"), 400, "");
  expect_error(curl("POST", url, json{{"prompt", {{1, {2}}}}}.dump()), 400, "prompt");
  expect_error(curl("POST", url, json{{"prompt", "hi"}, {"model", "gpt-4"}}.dump()), 404, "model");
  // Longer than the context (2048 tokens), and more tokens than the cluster allows.
  expect_error(curl("POST", url, json{{"prompt", std::vector<std::int32_t>(2100, 5)}}.dump()), 400, "prompt");
  expect_error(curl("POST", url, json{{"prompt", "hi"}, {"max_tokens", 5000}}.dump()), 400, "max_tokens");
  expect_error(curl("POST", s.url() + "/v1/chat/completions", json{{"messages", "hi"}}.dump()), 400, "messages");
  expect_error(curl("GET", s.url() + "/v1/nothing"), 404, "");
  expect_error(curl("GET", url), 405, "");
  // A body over --max-body-bytes (64 KiB here): 413, before the body is read.
  expect_error(curl("POST", url, json{{"prompt", std::string(100000, 'a')}}.dump()), 413, "");
  // Malformed HTTP: 400 and the connection closes; the server goes on.
  const auto garbage = raw_exchange(s.port(), "this is not http\r\n\r\n");
  EXPECT_EQ(garbage.rfind("HTTP/1.1 400", 0), 0u) << garbage;
  const auto bad_chunk = raw_exchange(
      s.port(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n");
  EXPECT_EQ(bad_chunk.rfind("HTTP/1.1 400", 0), 0u) << bad_chunk;
  const auto big_header = raw_exchange(s.port(), "GET /health HTTP/1.1\r\nX-Big: " + std::string(70000, 'a') + "\r\n\r\n");
  EXPECT_EQ(big_header.rfind("HTTP/1.1 431", 0), 0u) << big_header.substr(0, 200);
  // A client that sends half a request and leaves is no trouble either.
  EXPECT_EQ(raw_exchange(s.port(), "POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pro",
                         std::chrono::milliseconds(200)),
            "");
  EXPECT_EQ(curl("GET", s.url() + "/health").status, 200);
}

TEST(serve_http, a_client_that_leaves_cancels_its_request) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const std::string m = "{model_name=\"tiny-ds\"}";
  const auto before = scrape(s.url());
  // curl gives up after 1.5 s, long before 1000 tokens.
  const auto r = curl("POST", s.url() + "/v1/completions",
                      json{{"prompt", prompt_ids}, {"max_tokens", 1000}, {"ignore_eos", true}, {"stream", true}}.dump(),
                      "-N --max-time 1.5");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  std::map<std::string, double> after;
  for (int i = 0; i < 300; ++i) {
    after = scrape(s.url());
    if (after.at("afd:num_requests_running" + m) == 0 &&
        after.at("afd:kv_cache_usage_perc{model_name=\"tiny-ds\",worker=\"a0\"}") == 0)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(after.at("afd:num_requests_running" + m), 0);
  EXPECT_EQ(after.at("afd:kv_cache_usage_perc{model_name=\"tiny-ds\",worker=\"a0\"}"), 0);
  const std::string abort = "{model_name=\"tiny-ds\",reason=\"abort\"}";
  EXPECT_EQ(after.at("afd:request_failure_total" + abort) - before.at("afd:request_failure_total" + abort), 1);
  EXPECT_EQ(after.at("afd:request_success_total{model_name=\"tiny-ds\",finished_reason=\"length\"}"),
            before.at("afd:request_success_total{model_name=\"tiny-ds\",finished_reason=\"length\"}"));
  const double generated = after.at("afd:generation_tokens_total" + m) - before.at("afd:generation_tokens_total" + m);
  EXPECT_LT(generated, 1000);
  // No more tokens come: the request is gone from the cluster.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(scrape(s.url()).at("afd:generation_tokens_total" + m), after.at("afd:generation_tokens_total" + m));

  // The same for a client that waits for a whole (unstreamed) answer and gives up.
  const auto gave_up = curl("POST", s.url() + "/v1/completions",
                            json{{"prompt", prompt_ids}, {"max_tokens", 1000}, {"ignore_eos", true}}.dump(),
                            "--max-time 1");
  EXPECT_EQ(gave_up.status, 0);
  for (int i = 0; i < 300; ++i) {
    after = scrape(s.url());
    if (after.at("afd:num_requests_running" + m) == 0 && after.at("afd:request_failure_total" + abort) == before.at("afd:request_failure_total" + abort) + 2)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(after.at("afd:request_failure_total" + abort) - before.at("afd:request_failure_total" + abort), 2);
  EXPECT_EQ(after.at("afd:num_requests_running" + m), 0);
}

TEST(serve_http, loadgen_reports_what_the_server_counted) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const std::string m = "{model_name=\"tiny-ds\"}";
  const auto before = scrape(s.url());
  const auto r = run_afd("loadgen --url " + s.url() + " --concurrency 4 --requests 8 --max-tokens 5 --prompt-ids 0,1,2 --json");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const json report = json::parse(r.out);  // the whole stdout is one document
  EXPECT_EQ(report["successful_requests"], 8);
  EXPECT_EQ(report["failed_requests"], 0);
  EXPECT_EQ(report["total_input_tokens"], 24);
  EXPECT_EQ(report["total_output_tokens"], 40);
  EXPECT_GT(report["ttft_ms"]["median"].get<double>(), 0);
  EXPECT_LE(report["ttft_ms"]["median"].get<double>(), report["e2el_ms"]["median"].get<double>());
  EXPECT_GT(report["tpot_ms"]["p99"].get<double>(), 0);
  const auto after = scrape(s.url());
  EXPECT_EQ(after.at("afd:generation_tokens_total" + m) - before.at("afd:generation_tokens_total" + m), 40);
  EXPECT_EQ(after.at("afd:prompt_tokens_total" + m) - before.at("afd:prompt_tokens_total" + m), 24);
  // The human-readable form, vLLM's layout.
  const auto text = run_afd("loadgen --url " + s.url() + " --requests 2 --max-tokens 3 --prompt-ids 0,1,2");
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("Successful requests:                     2"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("Median TTFT (ms):"), std::string::npos) << text.out;
  // Bad usage.
  EXPECT_EQ(run_afd("loadgen --url ftp://x --requests 1").code, 2);
}

TEST(serve_http, a_full_queue_is_429_and_sigterm_drains) {
  AFD_REQUIRE_SERVE_MODEL();
  // One request runs, one waits; a third is refused.
  const fs::path trace = scratch() / "trace.json";
  served s(write_topology("small", {.queue = 1, .max_batch = 1}),
           {"--drain-timeout", "1", "--trace", trace.string()});
  const std::string long_body =
      json{{"prompt", prompt_ids}, {"max_tokens", 1000}, {"ignore_eos", true}, {"stream", true}}.dump();
  std::ofstream(scratch() / "long.json") << long_body;
  // Read as they come (a pipe holds 64 KiB; a blocked curl would stop reading the stream).
  std::vector<std::string> bodies(2);
  std::vector<std::thread> streams;
  for (int i = 0; i < 2; ++i)
    streams.emplace_back([&, i] {
      bodies[static_cast<std::size_t>(i)] =
          run_command("curl -sSN -H 'Content-Type: application/json' -H 'x-request-id: long-" + std::to_string(i) +
                      "' --data-binary @" + quoted((scratch() / "long.json").string()) + " " + s.url() +
                      "/v1/completions")
              .second;
    });
  const std::string m = "{model_name=\"deepseek-tiny\"}";
  for (int i = 0; i < 1200; ++i) {
    const auto now = scrape(s.url());
    if (now.at("afd:num_requests_running" + m) == 1 && now.at("afd:num_requests_waiting" + m) == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  const auto refused = curl("POST", s.url() + "/v1/completions", json{{"prompt", prompt_ids}, {"max_tokens", 4}}.dump());
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(refused.doc()["error"]["code"], "queue_full") << refused.body;

  // SIGTERM: the two streams end with an error event and [DONE] (they cannot finish in 1 s), the
  // process exits 0, and the trace file holds every request.
  EXPECT_EQ(s.stop(SIGTERM, std::chrono::seconds(20)), 0) << s.log();
  for (auto& t : streams) t.join();
  for (const auto& body : bodies) {
    std::string problem;
    const auto events = sse_events(body, problem);
    EXPECT_TRUE(problem.empty()) << problem;
    ASSERT_GE(events.size(), 2u) << body;
    EXPECT_EQ(events.back(), "[DONE]");
    const json last = json::parse(events[events.size() - 2]);
    EXPECT_EQ(last["error"]["code"], "server_shutting_down") << body;
  }
  const json t = json::parse(read_text(trace), nullptr, false);
  ASSERT_TRUE(t.contains("traceEvents")) << read_text(trace);
  std::set<std::string> ids;
  for (const auto& e : t["traceEvents"])
    if (e["name"] == "request") {
      ids.insert(e["args"]["request_id"].get<std::string>());
      EXPECT_EQ(e["ph"], "X");
      EXPECT_EQ(e["args"]["trace_id"].get<std::string>().size(), 32u);
    }
  EXPECT_TRUE(ids.count("long-0") && ids.count("long-1")) << t.dump();
  EXPECT_EQ(ids.size(), 3u);
}

}  // namespace
