// The Prometheus text and the Chrome trace, parsed back.
#include "deploy/serve/metrics.hpp"
#include "deploy/serve/trace.hpp"

#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

using namespace afd::serve;

std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

TEST(metrics, counters_and_histograms_in_the_text_format) {
  metrics m("tiny");
  m.request_accepted(5);
  m.tokens_generated(3);
  m.time_to_first_token(0.003);
  m.time_to_first_token(0.5);
  m.request_succeeded("length", 0.4, 0.0);
  m.request_failed("abort");
  const auto text = m.render(std::nullopt);
  EXPECT_NE(text.find("# TYPE afd:time_to_first_token_seconds histogram\n"), std::string::npos);
  const auto s = samples(text);
  EXPECT_EQ(s.at("afd:prompt_tokens_total{model_name=\"tiny\"}"), 5);
  EXPECT_EQ(s.at("afd:generation_tokens_total{model_name=\"tiny\"}"), 3);
  EXPECT_EQ(s.at("afd:request_success_total{model_name=\"tiny\",finished_reason=\"length\"}"), 1);
  EXPECT_EQ(s.at("afd:request_success_total{model_name=\"tiny\",finished_reason=\"stop\"}"), 0);
  EXPECT_EQ(s.at("afd:request_failure_total{model_name=\"tiny\",reason=\"abort\"}"), 1);
  // Cumulative buckets: 0.003 is in le=0.005 and above; 0.5 from le=0.5 (bounds are inclusive).
  EXPECT_EQ(s.at("afd:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.001\"}"), 0);
  EXPECT_EQ(s.at("afd:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.005\"}"), 1);
  EXPECT_EQ(s.at("afd:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.5\"}"), 2);
  EXPECT_EQ(s.at("afd:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"+Inf\"}"), 2);
  EXPECT_EQ(s.at("afd:time_to_first_token_seconds_count{model_name=\"tiny\"}"), 2);
  EXPECT_NEAR(s.at("afd:time_to_first_token_seconds_sum{model_name=\"tiny\"}"), 0.503, 1e-12);
  EXPECT_EQ(s.at("afd:cluster_up"), 0);
}

TEST(metrics, the_clusters_figures) {
  metrics m("tiny");
  afd::client::cluster_status st;
  st.ready = true;
  st.epoch = 3;
  st.running = 2;
  st.queued = 1;
  st.recoveries = 1;
  afd::client::worker_status a;
  a.name = "a0";
  a.role = "attention";
  a.state = afd::worker_state::ready;
  a.kv_blocks_used = 25;
  a.kv_blocks_total = 100;
  a.layer_compute_seconds = {0.5, 0.25};
  a.layer_wait_seconds = {0.1, 0.2};
  a.bytes_sent = 1000;
  a.steps = 10;
  a.messages_received = 7;
  st.workers.push_back(a);
  st.faults.push_back({"engine.step delay 5ms p=0.1", 4});
  const auto s = samples(m.render(st));
  EXPECT_EQ(s.at("afd:cluster_up"), 1);
  EXPECT_EQ(s.at("afd:cluster_epoch"), 3);
  EXPECT_EQ(s.at("afd:num_requests_running{model_name=\"tiny\"}"), 2);
  EXPECT_EQ(s.at("afd:num_requests_waiting{model_name=\"tiny\"}"), 1);
  EXPECT_EQ(s.at("afd:kv_cache_usage_perc{model_name=\"tiny\",worker=\"a0\"}"), 0.25);
  EXPECT_EQ(s.at("afd:layer_compute_seconds_total{worker=\"a0\",role=\"attention\",layer=\"1\"}"), 0.25);
  EXPECT_EQ(s.at("afd:layer_network_wait_seconds_total{worker=\"a0\",role=\"attention\",layer=\"0\"}"), 0.1);
  EXPECT_EQ(s.at("afd:transport_bytes_total{worker=\"a0\",role=\"attention\",direction=\"sent\"}"), 1000);
  EXPECT_DOUBLE_EQ(s.at("afd:layer_compute_seconds_per_step{worker=\"a0\",role=\"attention\",layer=\"0\"}"), 0.05);
  EXPECT_DOUBLE_EQ(s.at("afd:layer_network_wait_seconds_per_step{worker=\"a0\",role=\"attention\",layer=\"1\"}"), 0.02);
  EXPECT_EQ(s.at("afd:transport_messages_total{worker=\"a0\",role=\"attention\",direction=\"received\"}"), 7);
  EXPECT_EQ(s.at("afd:cluster_recoveries_total"), 1);
  EXPECT_EQ(s.at("afd:fault_firings_total{rule=\"engine.step delay 5ms p=0.1\"}"), 4);
}

TEST(trace, traceparent_is_kept_or_made) {
  const auto t = make_trace_context("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  EXPECT_EQ(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
  EXPECT_EQ(t.parent_id, "b7ad6b7169203331");
  EXPECT_EQ(t.span_id.size(), 16u);
  EXPECT_EQ(t.header(), "00-0af7651916cd43dd8448eb211c80319c-" + t.span_id + "-01");
  for (const char* bad : {"", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                          "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"}) {
    const auto n = make_trace_context(bad);
    EXPECT_EQ(n.trace_id.size(), 32u) << bad;
    EXPECT_TRUE(n.parent_id.empty()) << bad;
  }
}

TEST(trace, chrome_trace_events) {
  trace_log log;
  request_trace r;
  r.request_id = "r1";
  r.trace = make_trace_context("");
  r.received = clock_type::now();
  r.queued = r.received + std::chrono::milliseconds(1);
  r.admitted = r.received + std::chrono::milliseconds(2);
  r.first_token = r.received + std::chrono::milliseconds(5);
  r.finished = r.received + std::chrono::milliseconds(9);
  r.recoveries = 1;
  r.outcome = "length";
  log.add(r);
  const auto doc = nlohmann::json::parse(log.chrome_json());
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& e : doc["traceEvents"])
    if (e["ph"] == "X") by_name[e["name"]] = e;
  ASSERT_TRUE(by_name.count("request") && by_name.count("queued") && by_name.count("prefill") && by_name.count("decode"));
  EXPECT_NEAR(by_name["request"]["dur"].get<double>(), 9000, 1);
  EXPECT_NEAR(by_name["decode"]["dur"].get<double>(), 4000, 1);
  EXPECT_EQ(by_name["request"]["args"]["recoveries"], 1);
  EXPECT_EQ(by_name["request"]["args"]["request_id"], "r1");
}

}  // namespace
