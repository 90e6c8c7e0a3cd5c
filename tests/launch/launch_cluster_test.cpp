// Real multi-process clusters on loopback: `afd launch` of the example topologies (a tiny
// generated model, a free port chosen here), requests through afd::client::cluster::connect,
// tokens compared bitwise with the single-process reference engine; `afd status`, `afd stop`,
// SIGKILL of the launcher, a killed worker, topology errors, client errors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <algorithm>
#include <vector>

#include <afd/client.hpp>
#include "deploy/launch/child_process.hpp"
#include "tests/common/cli_runner.hpp"
#include "runtime/engine/model_weights.hpp"
#include "runtime/engine/reference_engine.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using afd::launch::child_process;

using afd::test_support::free_port;
using afd::test_support::read_file;

/// True while `pid` runs (a zombie, exited but not yet reaped by its parent, has ended).
bool alive(long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return false;
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] != 'Z';
}

/// Runs `afd ARGS...` to completion; exit code and combined output.
struct run_result {
  int code = -1;
  std::string output;
};

/// The test's scratch directory and the tiny model every cluster runs.
class launch_env {
 public:
  static launch_env& get() {
    static launch_env env;
    return env;
  }
  std::string dir;
  std::string model;
  int counter = 0;

  ~launch_env() {
    // Kept for inspection when a test failed.
    if (::testing::UnitTest::GetInstance()->Passed()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }

  run_result afd(const std::vector<std::string>& args, int timeout_ms = 60000) {
    std::vector<std::string> argv{AFD_EXECUTABLE};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log = dir + "/cmd" + std::to_string(++counter) + ".log";
    auto c = child_process::spawn(argv, log);
    if (!c) return {-1, c.err().message()};
    auto status = c->wait_for(timeout_ms);
    if (!status) {
      c->signal(SIGKILL);
      c->wait_for(5000);
      return {-2, "timed out: " + read_file(log)};
    }
    return {WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status), read_file(log)};
  }

  /// Runs `afd ARGS...` with stdout alone captured (stderr to a file of its own): what a user's
  /// `afd ... --json | jq` reads. `output` is stdout; `code` as afd().
  run_result afd_stdout(const std::vector<std::string>& args, int timeout_ms = 60000) {
    const std::string err = dir + "/stderr" + std::to_string(++counter) + ".log";
    std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$@\" 2>'" + err + "'", "sh", AFD_EXECUTABLE};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log = dir + "/stdout" + std::to_string(counter) + ".log";
    auto c = child_process::spawn(argv, log);
    if (!c) return {-1, c.err().message()};
    auto status = c->wait_for(timeout_ms);
    if (!status) {
      c->signal(SIGKILL);
      c->wait_for(5000);
      return {-2, "timed out: " + read_file(log) + read_file(err)};
    }
    return {WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status), read_file(log)};
  }

  /// A copy of deploy/examples/SHAPE.yaml with this test's port, model and micro-batches.
  std::string topology(const std::string& shape, int port, int micro_batches, const std::string& model_path = "") {
    std::string yaml = read_file(std::string(AFD_SOURCE_DIR) + "/deploy/examples/" + shape + ".yaml");
    yaml = std::regex_replace(yaml, std::regex(R"(\bport: \d+)"), "port: " + std::to_string(port));
    // Deterministic combine everywhere (2a3f.yaml shows throughput mode with sliced shared
    // experts): the cluster's tokens must then equal the reference engine's bitwise.
    yaml = std::regex_replace(yaml, std::regex(R"(\n  combine_mode: throughput)"), "");
    yaml = std::regex_replace(yaml, std::regex(R"(shared: sliced)"), "shared: round_robin");
    yaml = std::regex_replace(yaml, std::regex(R"(path: \S+)"), "path: " + (model_path.empty() ? model : model_path));
    yaml = std::regex_replace(yaml, std::regex(R"(micro_batches: \d+)"),
                              "micro_batches: " + std::to_string(micro_batches));
    const std::string file = dir + "/" + shape + "-" + std::to_string(port) + ".yaml";
    std::ofstream(file) << yaml;
    return file;
  }

 private:
  launch_env() {
    dir = (fs::temp_directory_path() / ("afd-launch-test-" + std::to_string(::getpid()))).string();
    fs::create_directories(dir);
    // Run directories (logs of every launched process) inside the scratch directory.
    ::setenv("XDG_RUNTIME_DIR", dir.c_str(), 1);
    model = dir + "/tiny";
    auto r = afd({"make-model", "--preset", "tiny", "--out", model});
    if (r.code != 0) ADD_FAILURE() << "make-model failed: " << r.output;
  }
};

/// `afd launch FILE --foreground` in the background of the test, until stopped.
class launched {
 public:
  launched(const std::string& file, int port, std::vector<std::string> extra = {}) : file_(file), port_(port) {
    auto& env = launch_env::get();
    log_ = env.dir + "/launch-" + std::to_string(port) + ".log";
    std::vector<std::string> argv{AFD_EXECUTABLE, "launch", file, "--foreground"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto c = child_process::spawn(argv, log_);
    if (!c) {
      ADD_FAILURE() << c.err().message();
      return;
    }
    child_.emplace(std::move(*c));
  }
  ~launched() {
    if (child_ && child_->running()) {
      child_->signal(SIGTERM);
      if (!child_->wait_for(30000)) child_->signal(SIGKILL);
      child_->wait_for(5000);
    }
  }

  /// Waits for the summary's "serving at" line; false (with the log) when the launcher ended.
  bool wait_ready(std::chrono::seconds timeout = 90s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (read_file(log_).find("serving at") != std::string::npos) {
        read_pids();
        return true;
      }
      if (!child_ || child_->poll()) return false;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  std::string log() const { return read_file(log_); }
  child_process& process() { return *child_; }
  /// Worker process pids by process name, from the run directory.
  std::map<std::string, long> workers;
  long launcher_pid = 0;
  long coordinator_pid = 0;  ///< the coordinator's own process
  std::string run_dir;

 private:
  void read_pids() {
    std::smatch m;
    const std::string text = log();
    if (std::regex_search(text, m, std::regex(R"(run dir\s+(\S+))"))) run_dir = m[1];
    std::ifstream in(run_dir + "/processes");
    std::string name, rest;
    long pid = 0;
    while (in >> name >> pid) {
      std::getline(in, rest);
      if (name == "launcher") {
        launcher_pid = pid;
      } else if (name == "coordinator") {
        coordinator_pid = pid;
      } else {
        workers[name] = pid;
      }
    }
  }

  std::string file_;
  int port_;
  std::string log_;
  std::optional<child_process> child_;
};

/// Requests of different lengths, greedy and seeded sampling.
std::vector<afd::client::request> mixed_requests(int n) {
  std::vector<afd::client::request> out;
  for (int i = 0; i < n; ++i) {
    afd::client::request r;
    const int len = 1 + (i * 7) % 23;
    for (int k = 0; k < len; ++k) r.prompt.push_back((i * 131 + k * 17 + 3) % 500);
    r.max_new_tokens = 4 + (i * 5) % 13;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_k = i % 4 == 1 ? 20 : 0;
      r.sampling.top_p = i % 4 == 3 ? 0.9f : 1.0f;
      r.sampling.seed = 1000 + static_cast<std::uint64_t>(i);
    }
    out.push_back(r);
  }
  return out;
}

/// Each request run alone through the reference engine (default cluster numerics).
std::vector<std::vector<std::int32_t>> reference_tokens(const std::vector<afd::client::request>& requests) {
  auto weights = afd::engine::model_weights::load(launch_env::get().model);
  EXPECT_TRUE(weights) << weights.err().message();
  std::vector<std::vector<std::int32_t>> out;
  if (!weights) return out;
  auto eng = afd::engine::reference_engine::create(*weights);
  EXPECT_TRUE(eng);
  for (const auto& r : requests) {
    afd::engine::request e;
    e.prompt = r.prompt;
    e.max_new_tokens = r.max_new_tokens;
    e.sampling.temperature = r.sampling.temperature;
    e.sampling.top_k = r.sampling.top_k;
    e.sampling.top_p = r.sampling.top_p;
    e.sampling.seed = r.sampling.seed;
    auto res = eng->generate({e});
    EXPECT_TRUE(res);
    out.push_back(res ? (*res)[0].tokens : std::vector<std::int32_t>{});
  }
  return out;
}

void expect_all_gone(const launched& l, std::chrono::seconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  auto all = l.workers;
  all["coordinator"] = l.coordinator_pid;
  for (const auto& [name, pid] : all) {
    while (alive(pid) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(alive(pid)) << "process " << name << " (pid " << pid << ") still runs";
  }
}

struct shape_case {
  std::string shape;
  int micro_batches;
};

class launch_shapes : public ::testing::TestWithParam<shape_case> {};

TEST_P(launch_shapes, concurrent_requests_equal_the_reference_engine_and_stop_cleans_up) {
  auto& env = launch_env::get();
  const auto [shape, k] = GetParam();
  const int port = free_port();
  const std::string file = env.topology(shape, port, k);
  launched l(file, port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  // Worker processes the launcher forks (2a3f.yaml runs a0 and a1 inside the launcher).
  const std::size_t expected_processes = shape == "1a1f" ? 2 : shape == "2a2f" ? 4 : shape == "3a2f" ? 5 : 3;
  EXPECT_EQ(l.workers.size(), expected_processes) << l.log();
  EXPECT_NE(l.log().find("transport    ucx"), std::string::npos) << l.log();

  auto c = afd::client::cluster::connect("127.0.0.1", static_cast<std::uint16_t>(port));
  ASSERT_TRUE(c) << c.err().message();
  const auto requests = mixed_requests(12);
  std::vector<afd::client::request_id> ids;
  for (const auto& r : requests) {
    auto id = (*c)->submit(r);
    ASSERT_TRUE(id) << id.err().message();
    ids.push_back(*id);
  }
  const auto expected = reference_tokens(requests);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto res = (*c)->wait(ids[i], 120s);
    ASSERT_TRUE(res) << "request " << i << ": " << res.err().message();
    EXPECT_EQ(res->tokens, expected[i]) << "request " << i << " (" << shape << ", K=" << k << ")";
  }

  auto status = env.afd({"status", file});
  EXPECT_EQ(status.code, 0) << status.output;
  EXPECT_NE(status.output.find("ready"), std::string::npos) << status.output;
  for (const auto& [name, pid] : l.workers) EXPECT_NE(status.output.find(name), std::string::npos) << status.output;
  (*c)->shutdown();

  auto stop = env.afd({"stop", file});
  EXPECT_EQ(stop.code, 0) << stop.output;
  auto st = l.process().wait_for(30000);
  ASSERT_TRUE(st) << "launcher still running after afd stop\n" << l.log();
  EXPECT_TRUE(afd::launch::exited_cleanly(*st)) << afd::launch::describe_wait_status(*st) << "\n" << l.log();
  expect_all_gone(l, 5s);
}

INSTANTIATE_TEST_SUITE_P(shapes, launch_shapes,
                         ::testing::Values(shape_case{"1a1f", 1}, shape_case{"2a2f", 2}, shape_case{"3a2f", 3},
                                           shape_case{"2a3f", 3}),
                         [](const auto& info) { return info.param.shape + "_k" + std::to_string(info.param.micro_batches); });

// Every other (shape, K) pair (about 0.5 s each on the tiny model).
INSTANTIATE_TEST_SUITE_P(more_shapes, launch_shapes,
                         ::testing::Values(shape_case{"1a1f", 2}, shape_case{"1a1f", 3}, shape_case{"2a2f", 1},
                                           shape_case{"2a2f", 3}, shape_case{"3a2f", 1}, shape_case{"3a2f", 2},
                                           shape_case{"2a3f", 1}, shape_case{"2a3f", 2}),
                         [](const auto& info) { return info.param.shape + "_k" + std::to_string(info.param.micro_batches); });

TEST(launch, background_launch_status_json_and_stop) {
  auto& env = launch_env::get();
  const int port = free_port();
  const std::string file = env.topology("2a2f", port, 3);
  auto r = env.afd({"launch", file}, 120000);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("in the background"), std::string::npos) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex(R"(run dir\s+(\S+))"))) << r.output;
  const std::string run_dir = m[1];
  std::vector<long> pids;
  {
    std::ifstream in(run_dir + "/processes");
    std::string name, rest;
    long pid = 0;
    while (in >> name >> pid) {
      std::getline(in, rest);
      pids.push_back(pid);
    }
  }
  ASSERT_EQ(pids.size(), 6u);  // the launcher, the coordinator and four workers
  for (long pid : pids) EXPECT_TRUE(alive(pid)) << pid;

  auto s = env.afd({"status", "--connect", "127.0.0.1:" + std::to_string(port), "--json"});
  EXPECT_EQ(s.code, 0) << s.output;
  for (const char* key : {"\"ready\": true", "\"kv_blocks_total\": 1024", "\"name\": \"f1\"", "\"state\": \"ready\""})
    EXPECT_NE(s.output.find(key), std::string::npos) << key << "\n" << s.output;

  // The README's path: the example client against the launched cluster; 40 requests make prompt
  // ids past the tiny model's 512-token vocabulary unless the example keeps them inside it.
  {
    const std::string log = env.dir + "/example.log";
    auto ex = child_process::spawn(
        {AFD_CLIENT_EXAMPLE, "--connect", "127.0.0.1:" + std::to_string(port), "--requests", "40", "--max-new-tokens",
         "3"},
        log);
    ASSERT_TRUE(ex) << ex.err().message();
    auto done = ex->wait_for(60000);
    ASSERT_TRUE(done) << read_file(log);
    EXPECT_TRUE(afd::launch::exited_cleanly(*done)) << read_file(log);
    for (const char* line : {"request 1 (length):", "request 40 (length):", "cluster: ready"})
      EXPECT_NE(read_file(log).find(line), std::string::npos) << line << "\n" << read_file(log);
  }

  auto stop = env.afd({"stop", file});
  EXPECT_EQ(stop.code, 0) << stop.output;
  EXPECT_NE(stop.output.find("stopped cluster '2a2f'"), std::string::npos) << stop.output;
  for (long pid : pids) {
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (alive(pid) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(alive(pid)) << "pid " << pid << " survived afd stop";
  }
  auto again = env.afd({"status", file});
  EXPECT_EQ(again.code, 1) << again.output;
  EXPECT_NE(again.output.find("cannot connect"), std::string::npos) << again.output;
}

TEST(launch, killed_launcher_takes_its_workers_down) {
  auto& env = launch_env::get();
  const int port = free_port();
  launched l(env.topology("2a2f", port, 2), port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  ASSERT_EQ(l.workers.size(), 4u);
  l.process().signal(SIGKILL);
  l.process().wait_for(5000);
  expect_all_gone(l, 8s);  // PR_SET_PDEATHSIG: SIGTERM to every worker (3 s grace, then exit)
}

TEST(launch, a_killed_worker_process_is_restarted_rejoins_and_no_request_is_lost) {
  auto& env = launch_env::get();
  const int port = free_port();
  const std::string file = env.topology("2a2f", port, 2);
  launched l(file, port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  auto c = afd::client::cluster::connect("127.0.0.1", static_cast<std::uint16_t>(port));
  ASSERT_TRUE(c) << c.err().message();
  std::vector<afd::client::request> requests;
  std::vector<afd::client::request_id> ids;
  for (int i = 0; i < 6; ++i) {
    afd::client::request r;
    r.prompt = {1, 2, 3, static_cast<std::int32_t>(i)};
    r.max_new_tokens = 300;  // long enough to be running when f1 dies
    auto id = (*c)->submit(r);
    ASSERT_TRUE(id) << id.err().message();
    requests.push_back(r);
    ids.push_back(*id);
  }
  auto first = (*c)->next_token(ids[0], 60s);
  ASSERT_TRUE(first) << first.err().message();
  ASSERT_EQ(::kill(static_cast<pid_t>(l.workers.at("f1")), SIGKILL), 0);
  // Every request ends with the reference tokens (f1's units move to f0, then back when the
  // launcher's restart of f1 rejoins), and the cluster returns to every worker ready.
  const auto expected = reference_tokens(requests);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto res = (*c)->wait(ids[i], 60s);
    ASSERT_TRUE(res) << "request " << i << ": " << res.err().message();
    EXPECT_EQ(res->tokens, expected[i]) << "request " << i;
  }
  bool all_ready = false;
  for (int tries = 0; tries < 300 && !all_ready; ++tries) {
    auto st = (*c)->status();
    all_ready = st && st->ready && st->epoch >= 3 &&
                std::all_of(st->workers.begin(), st->workers.end(), [](const afd::client::worker_status& w) {
                  return w.state == afd::worker_state::ready;
                });
    if (!all_ready) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(all_ready) << env.afd({"status", file}).output;
  (*c)->shutdown();
  auto stop = env.afd({"stop", file});
  EXPECT_EQ(stop.code, 0) << stop.output;
  auto st = l.process().wait_for(30000);
  ASSERT_TRUE(st) << l.log();
  EXPECT_NE(l.log().find("worker process 'f1'"), std::string::npos) << l.log();
  expect_all_gone(l, 5s);
}

// `afd launch --fault`: a worker process paused past the heartbeat timeout and the step deadline
// (5 s here), then resumed, while requests stream: every request keeps the reference tokens, each
// streamed once in order; the paused worker was failed, fenced and rejoined; the cluster is fully
// ready again; `afd status --json` shows the rule fired once and the recovery.
TEST(launch, a_worker_paused_past_every_deadline_by_a_fault_rule_loses_no_request) {
  auto& env = launch_env::get();
  const int port = free_port();
  const std::string file = env.topology("2a2f", port, 2);
  launched l(file, port, {"--fault", "pause_process worker=f1 after=1500ms duration=6s", "--fault-seed", "3"});
  ASSERT_TRUE(l.wait_ready()) << l.log();
  auto c = afd::client::cluster::connect("127.0.0.1", static_cast<std::uint16_t>(port));
  ASSERT_TRUE(c) << c.err().message();
  std::mutex m;
  std::map<afd::client::request_id, std::vector<afd::client::token>> streamed;
  std::map<afd::client::request_id, std::vector<std::chrono::steady_clock::time_point>> arrived;
  std::vector<afd::client::request> requests;
  std::vector<afd::client::request_id> ids;
  for (int i = 0; i < 6; ++i) {
    afd::client::request r;
    r.prompt = {7, 1, 4, static_cast<std::int32_t>(3 * i)};
    r.max_new_tokens = 1000;  // still streaming when the pause begins and ends
    auto id = (*c)->submit(r, [&](const afd::client::token& t) {
      std::lock_guard lock(m);
      streamed[t.id].push_back(t);
      arrived[t.id].push_back(std::chrono::steady_clock::now());
    });
    ASSERT_TRUE(id) << id.err().message();
    requests.push_back(r);
    ids.push_back(*id);
  }
  const auto expected = reference_tokens(requests);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto res = (*c)->wait(ids[i], 120s);
    ASSERT_TRUE(res) << "request " << i << ": " << res.err().message();
    EXPECT_EQ(res->tokens, expected[i]) << "request " << i;
    std::lock_guard lock(m);
    const auto& seen = streamed[ids[i]];
    ASSERT_EQ(seen.size(), res->tokens.size()) << "request " << i;
    for (std::size_t k = 0; k < seen.size(); ++k) EXPECT_EQ(seen[k].index, static_cast<std::int64_t>(k));
  }
  {
    // The requests were streaming across the pause: their tokens stalled for a while.
    std::lock_guard lock(m);
    double longest_gap_ms = 0;
    for (const auto& [id, times] : arrived)
      for (std::size_t k = 1; k < times.size(); ++k)
        longest_gap_ms = std::max(longest_gap_ms, std::chrono::duration<double, std::milli>(times[k] - times[k - 1]).count());
    EXPECT_GT(longest_gap_ms, 500.0) << "the requests did not stream across the pause";
  }
  bool all_ready = false;
  for (int tries = 0; tries < 600 && !all_ready; ++tries) {
    auto st = (*c)->status();
    all_ready = st && st->ready &&
                std::all_of(st->workers.begin(), st->workers.end(), [](const afd::client::worker_status& w) {
                  return w.state == afd::worker_state::ready;
                });
    if (!all_ready) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(all_ready) << env.afd({"status", file}).output;
  (*c)->shutdown();
  auto status = env.afd_stdout({"status", file, "--json"});
  ASSERT_EQ(status.code, 0) << status.output;
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(status.output)) << status.output;
  ASSERT_EQ(j["faults"].size(), 1u) << j.dump(2);
  EXPECT_EQ(j["faults"][0]["rule"], "pause_process worker=f1 after=1500ms duration=6s");
  EXPECT_EQ(j["faults"][0]["fired"], 1);
  EXPECT_GE(j["recoveries"].get<int>(), 1);
  bool f1_failed = false, someone_else_failed = false;
  for (const auto& e : j["events"]) {
    if (e["kind"] != "failed") continue;
    (e["worker"] == "f1" ? f1_failed : someone_else_failed) = true;
  }
  EXPECT_TRUE(f1_failed) << j["events"].dump(2);
  EXPECT_FALSE(someone_else_failed) << j["events"].dump(2);
  for (const auto& w : j["workers"]) {
    if (w["name"] == "f1") {
      EXPECT_GE(w["rejoins"].get<int>(), 1);
    }
  }
  auto stop = env.afd({"stop", file});
  EXPECT_EQ(stop.code, 0) << stop.output;
  ASSERT_TRUE(l.process().wait_for(30000)) << l.log();
  EXPECT_NE(l.log().find("fault 'pause_process worker=f1 after=1500ms duration=6s' applied"), std::string::npos)
      << l.log();
  expect_all_gone(l, 5s);
}

// A bad --fault rule is refused before anything starts, naming the rule and what is wrong.
TEST(launch, a_bad_fault_rule_is_refused_before_anything_starts) {
  auto& env = launch_env::get();
  const int port = free_port();
  const std::string file = env.topology("2a2f", port, 2);
  auto r = env.afd({"launch", file, "--fault", "pause_process worker=f9 duration=2s"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("fault rule 'pause_process worker=f9 duration=2s': worker 'f9' is not in the topology"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("nothing started"), std::string::npos) << r.output;
}

long current_pid(const std::string& run_dir, const std::string& name);

// The coordinator is a supervised process of its own: SIGKILL of it while requests stream (six
// `afd generate --connect FILE` processes and two streaming client API requests) loses no request.
// The launcher restarts it, the workers (keeping their weights) and the clients find it again, the
// clients resume their requests with the tokens they have, and every request ends with the
// reference engine's tokens, each streamed once, in order; the cluster is fully ready again within
// 60 s, at a higher epoch.
TEST(launch, a_killed_coordinator_is_replaced_and_no_request_is_lost) {
  auto& env = launch_env::get();
  const int port = free_port();
  const std::string file = env.topology("2a2f", port, 2);
  launched l(file, port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  auto c = afd::client::cluster::connect(file);
  ASSERT_TRUE(c) << c.err().message();
  auto before = (*c)->status();
  ASSERT_TRUE(before) << before.err().message();

  // Six `afd generate` processes, each one long request.
  std::vector<afd::client::request> requests;
  std::vector<child_process> generators;
  std::vector<std::string> outputs;
  for (int i = 0; i < 6; ++i) {
    afd::client::request r;
    r.prompt = {5, 17, 300 + i, 9};
    r.max_new_tokens = 900;
    requests.push_back(r);
    outputs.push_back(env.dir + "/generate-" + std::to_string(port) + "-" + std::to_string(i) + ".out");
    std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$@\" 2>'" + outputs.back() + ".err'", "sh", AFD_EXECUTABLE,
                                  "generate", "--connect", file, "--prompt-ids", "5,17," + std::to_string(300 + i) + ",9",
                                  "--max-new-tokens", "900", "--json"};
    auto g = child_process::spawn(argv, outputs.back());
    ASSERT_TRUE(g) << g.err().message();
    generators.push_back(std::move(*g));
  }
  // Two streaming requests through the client API (greedy and seeded sampling).
  std::mutex m;
  std::map<afd::client::request_id, std::vector<afd::client::token>> streamed;
  std::vector<afd::client::request> api_requests(2);
  std::vector<afd::client::request_id> ids;
  for (int i = 0; i < 2; ++i) {
    api_requests[i].prompt = {11, 3, 8, static_cast<std::int32_t>(40 + i)};
    api_requests[i].max_new_tokens = 900;
    if (i == 1) {
      api_requests[i].sampling.temperature = 0.8f;
      api_requests[i].sampling.top_k = 20;
      api_requests[i].sampling.seed = 77;
    }
    auto id = (*c)->submit(api_requests[i], [&](const afd::client::token& t) {
      std::lock_guard lock(m);
      streamed[t.id].push_back(t);
    });
    ASSERT_TRUE(id) << id.err().message();
    ids.push_back(*id);
  }
  ASSERT_TRUE((*c)->next_token(ids[0], 60s)) << l.log();
  std::this_thread::sleep_for(300ms);  // the generators' requests are under way too
  const long coordinator_pid = current_pid(l.run_dir, "coordinator");
  ASSERT_GT(coordinator_pid, 0) << read_file(l.run_dir + "/processes");
  ASSERT_EQ(::kill(static_cast<pid_t>(coordinator_pid), SIGKILL), 0);
  std::size_t streamed_at_kill = 0;
  {
    std::lock_guard lock(m);
    streamed_at_kill = streamed[ids[0]].size();
  }
  EXPECT_LT(streamed_at_kill, 900u) << "the request had ended before the coordinator was killed";

  const auto expected = reference_tokens(requests);
  for (std::size_t i = 0; i < generators.size(); ++i) {
    auto st = generators[i].wait_for(180000);
    ASSERT_TRUE(st) << "afd generate " << i << " did not end";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << read_file(outputs[i] + ".err");
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(read_file(outputs[i]))) << read_file(outputs[i]);
    EXPECT_EQ(j["tokens"].get<std::vector<std::int32_t>>(), expected[i]) << "afd generate " << i;
  }
  const auto api_expected = reference_tokens(api_requests);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto res = (*c)->wait(ids[i], 120s);
    ASSERT_TRUE(res) << "request " << i << ": " << res.err().message();
    EXPECT_EQ(res->tokens, api_expected[i]) << "request " << i;
    std::lock_guard lock(m);
    const auto& seen = streamed[ids[i]];
    ASSERT_EQ(seen.size(), api_expected[i].size()) << "request " << i;
    for (std::size_t k = 0; k < seen.size(); ++k) {
      EXPECT_EQ(seen[k].index, static_cast<std::int64_t>(k)) << "request " << i;
      EXPECT_EQ(seen[k].value, api_expected[i][k]) << "request " << i;
    }
  }
  bool all_ready = false;
  std::uint32_t epoch = 0;
  for (int tries = 0; tries < 600 && !all_ready; ++tries) {
    auto st = (*c)->status();
    all_ready = st && st->ready &&
                std::all_of(st->workers.begin(), st->workers.end(), [](const afd::client::worker_status& w) {
                  return w.state == afd::worker_state::ready;
                });
    if (st) epoch = st->epoch;
    if (!all_ready) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(all_ready) << env.afd({"status", file}).output;
  EXPECT_GT(epoch, before->epoch);  // the epochs went on above the lost coordinator's
  EXPECT_NE(current_pid(l.run_dir, "coordinator"), coordinator_pid);
  (*c)->shutdown();
  auto stop = env.afd({"stop", file});
  EXPECT_EQ(stop.code, 0) << stop.output;
  ASSERT_TRUE(l.process().wait_for(30000)) << l.log();
  EXPECT_NE(l.log().find("restarted the coordinator's process"), std::string::npos) << l.log();
  expect_all_gone(l, 5s);
}

/// The pid of process `name` in the launcher's RUN/processes now (restarts change it).
long current_pid(const std::string& run_dir, const std::string& name) {
  std::ifstream in(run_dir + "/processes");
  std::string n, rest;
  long pid = 0;
  while (in >> n >> pid) {
    std::getline(in, rest);
    if (n == name) return pid;
  }
  return 0;
}

// A standby coordinator on this machine: the primary's process freezes together with its launcher
// (as on a machine that hangs); the standby takes over and every request goes on there. When the
// primary comes back it meets the active standby's higher term and is deposed (its process exits
// with code 3 and its launcher starts it again as a standby): one active coordinator, no request
// lost, each streamed token once and in order.
TEST(launch, a_standby_takes_over_from_a_frozen_primary_which_is_then_deposed) {
  auto& env = launch_env::get();
  const int port = free_port();
  int standby_port = free_port();
  while (standby_port == port) standby_port = free_port();
  const std::string file = env.topology("2a2f", port, 2);
  {
    std::string yaml = read_file(file);
    const std::string primary = "coordinator: {node: local, port: " + std::to_string(port) + "}";
    ASSERT_NE(yaml.find(primary), std::string::npos) << yaml;
    yaml.replace(yaml.find(primary), primary.size(),
                 "coordinator: {node: local, port: " + std::to_string(port) + ", standby: [{node: local, port: " +
                     std::to_string(standby_port) + "}]}");
    std::ofstream(file) << yaml;
  }
  launched l(file, port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  auto c = afd::client::cluster::connect(file);
  ASSERT_TRUE(c) << c.err().message();
  auto before = (*c)->status();
  ASSERT_TRUE(before) << before.err().message();
  EXPECT_EQ(before->term, 1u);

  std::vector<afd::client::request> requests(3);
  std::mutex m;
  std::map<afd::client::request_id, std::vector<afd::client::token>> streamed;
  std::vector<afd::client::request_id> ids;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    requests[i].prompt = {9, 2, 71, static_cast<std::int32_t>(5 * i)};
    requests[i].max_new_tokens = 700;
    auto id = (*c)->submit(requests[i], [&](const afd::client::token& t) {
      std::lock_guard lock(m);
      streamed[t.id].push_back(t);
    });
    ASSERT_TRUE(id) << id.err().message();
    ids.push_back(*id);
  }
  ASSERT_TRUE((*c)->next_token(ids[0], 60s)) << l.log();
  const long primary = current_pid(l.run_dir, "coordinator");
  const long launcher = static_cast<long>(l.process().pid());
  ASSERT_GT(primary, 0) << read_file(l.run_dir + "/processes");
  ASSERT_EQ(::kill(static_cast<pid_t>(launcher), SIGSTOP), 0);
  ASSERT_EQ(::kill(static_cast<pid_t>(primary), SIGSTOP), 0);
  std::this_thread::sleep_for(7s);  // past CAF's connection timeout (3 s) and the standby's takeover
  // The coordinator comes back first: its own succession finds it deposed (its launcher would
  // otherwise kill a coordinator that runs but does not answer).
  ::kill(static_cast<pid_t>(primary), SIGCONT);
  std::this_thread::sleep_for(5s);
  ::kill(static_cast<pid_t>(launcher), SIGCONT);

  const auto expected = reference_tokens(requests);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto res = (*c)->wait(ids[i], 120s);
    ASSERT_TRUE(res) << "request " << i << ": " << res.err().message() << "\n" << l.log();
    EXPECT_EQ(res->tokens, expected[i]) << "request " << i;
    std::lock_guard lock(m);
    const auto& seen = streamed[ids[i]];
    ASSERT_EQ(seen.size(), expected[i].size()) << "request " << i;
    for (std::size_t k = 0; k < seen.size(); ++k) EXPECT_EQ(seen[k].index, static_cast<std::int64_t>(k));
  }
  auto after = (*c)->status();
  ASSERT_TRUE(after) << after.err().message();
  EXPECT_EQ(after->term, 2u);
  EXPECT_GT(after->epoch, before->epoch);
  EXPECT_NE(after->coordinator_pid, primary);
  const std::string primary_log = read_file(l.run_dir + "/coordinator.log");
  EXPECT_NE(primary_log.find("deposed: the coordinator at 127.0.0.1:" + std::to_string(standby_port) +
                             " is active with term 2"),
            std::string::npos)
      << primary_log;
  // Its launcher started it again; it is a standby now, and says so.
  auto on_primary = env.afd({"generate", "--connect", "127.0.0.1:" + std::to_string(port), "--prompt-ids", "1,2",
                             "--max-new-tokens", "2"});
  EXPECT_NE(on_primary.code, 0) << on_primary.output;
  EXPECT_NE(on_primary.output.find("is a standby"), std::string::npos) << on_primary.output;
  (*c)->shutdown();
  auto stop = env.afd({"stop", file});
  EXPECT_EQ(stop.code, 0) << stop.output;
  ASSERT_TRUE(l.process().wait_for(30000)) << l.log();
  expect_all_gone(l, 5s);
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

// Supervision: a worker process that dies is restarted (it registers again under its name), at
// most 3 times within 60 s; the 4th death in the window ends with the give-up message, `afd
// status` shows it, and nothing restarts it afterwards. Whether the coordinator takes the restarted
// worker back into the running cluster is the coordinator's business, not checked here.
TEST(launch, a_worker_killed_four_times_quickly_is_given_up) {
  auto& env = launch_env::get();
  const int port = free_port();
  const std::string file = env.topology("2a2f", port, 2);
  launched l(file, port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  const std::string give_up = "giving up on worker process 'f1'";
  long last = 0;
  int kills = 0;
  const auto until = std::chrono::steady_clock::now() + 40s;
  while (l.log().find(give_up) == std::string::npos && std::chrono::steady_clock::now() < until) {
    const long pid = current_pid(l.run_dir, "f1");
    if (pid > 0 && pid != last && alive(pid) && kills < 4) {
      ASSERT_EQ(::kill(static_cast<pid_t>(pid), SIGKILL), 0);
      last = pid;
      ++kills;
    }
    std::this_thread::sleep_for(50ms);
  }
  const std::string log = l.log();
  ASSERT_NE(log.find(give_up), std::string::npos) << log;
  EXPECT_NE(log.find("was killed by signal 9"), std::string::npos) << log;
  for (int i = 1; i <= 3; ++i)
    EXPECT_NE(log.find("restart " + std::to_string(i) + " of 3 restarts in 60 s"), std::string::npos) << log;
  EXPECT_NE(log.find("exited 4 times within 60 s, over its restart budget of 3 restarts in 60 s"), std::string::npos)
      << log;
  // Nothing restarts it after giving up; the other workers were never touched.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(count(l.log(), "restarted worker process 'f1'"), 3u) << l.log();
  EXPECT_EQ(count(l.log(), "restarted worker process"), 3u) << l.log();
  EXPECT_FALSE(alive(current_pid(l.run_dir, "f1")));
  auto status = env.afd({"status", file});
  EXPECT_EQ(status.code, 0) << status.output;
  EXPECT_NE(status.output.find("process 'f1' (this machine): given up after 3 restart(s)"), std::string::npos)
      << status.output;
  auto stop = env.afd({"stop", file});
  EXPECT_EQ(stop.code, 0) << stop.output;
  ASSERT_TRUE(l.process().wait_for(30000)) << l.log();
  for (const auto& name : {"a0", "a1", "f0", "f1"}) EXPECT_FALSE(alive(current_pid(l.run_dir, name))) << name;
}

TEST(launch, topology_errors_exit_2_with_file_line_column) {
  auto& env = launch_env::get();
  const int port = free_port();
  std::string yaml = read_file(env.topology("2a2f", port, 3));
  // An unknown key in the pipeline (line 9 of the example) and a bad device for f1 (line 16).
  const std::string file = env.dir + "/bad.yaml";
  std::string bad = std::regex_replace(yaml, std::regex("pipeline: \\{micro_batches: 3\\}"),
                                       "pipeline: {micro_batches: 3, colour: blue}");
  bad = std::regex_replace(bad, std::regex("\\{name: f1, node: local, device: cpu\\}"),
                           "{name: f1, node: local, device: tpu:0}");
  std::ofstream(file) << bad;
  auto r = env.afd({"launch", file, "--foreground"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find(file + ":9:"), std::string::npos) << r.output;   // pipeline line
  EXPECT_NE(r.output.find("colour"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(file + ":16:"), std::string::npos) << r.output;  // f1 line
  EXPECT_NE(r.output.find("tpu:0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("nothing started"), std::string::npos) << r.output;

  // A worker on another host: refused before anything starts, naming the node and the ssh command.
  std::string remote = std::regex_replace(yaml, std::regex("nodes:\n"), "nodes:\n  - {name: far, host: 10.255.0.9}\n");
  remote = std::regex_replace(remote, std::regex("\\{name: a1, node: local"), "{name: a1, node: far");
  std::ofstream(file) << remote;
  r = env.afd({"launch", file, "--foreground"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("node 'far' cannot reach"), std::string::npos) << r.output;  // coordinator on 127.0.0.1
  EXPECT_NE(r.output.find("nothing started"), std::string::npos) << r.output;

  // The coordinator's port already taken.
  const int busy = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ASSERT_EQ(::bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ::listen(busy, 1);
  r = env.afd({"launch", env.topology("2a2f", port, 3), "--foreground"});
  ::close(busy);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("port " + std::to_string(port) + " is in use"), std::string::npos) << r.output;

  // Usage errors of the other commands.
  EXPECT_EQ(env.afd({"stop"}).code, 2);
  EXPECT_EQ(env.afd({"status", file, "--connect", "127.0.0.1:1"}).code, 2);
  r = env.afd({"status", "--connect", "127.0.0.1"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("HOST:PORT"), std::string::npos) << r.output;
}

TEST(launch, worker_that_fails_to_start_is_reported_with_its_log) {
  auto& env = launch_env::get();
  // config.json alone: the launcher's checks pass, the workers cannot load any weights.
  const std::string broken = env.dir + "/no-weights";
  fs::create_directories(broken);
  fs::copy_file(env.model + "/config.json", broken + "/config.json", fs::copy_options::overwrite_existing);
  const int port = free_port();
  const std::string file = env.topology("1a1f", port, 1, broken);
  auto r = env.afd({"launch", file, "--foreground", "--start-timeout", "60"}, 90000);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(r.output.find("failed to start") != std::string::npos ||
              r.output.find("while the cluster was starting") != std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("cluster not started; logs in"), std::string::npos) << r.output;
}

/// The whole stdout of `afd generate --json` as one JSON document, as `| jq` reads it; a null
/// document (and a test failure) when it is not exactly one.
nlohmann::json whole_json(const run_result& r) {
  try {
    return nlohmann::json::parse(r.output);
  } catch (const nlohmann::json::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON document (" << e.what() << "):\n" << r.output;
    return nullptr;
  }
}

TEST(launch, generate_on_a_cluster_prints_what_the_reference_engine_prints) {
  auto& env = launch_env::get();
  const int port = free_port();
  const std::string file = env.topology("2a2f", port, 3);
  launched l(file, port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  for (std::vector<std::string> request :
       {std::vector<std::string>{"--prompt-ids", "5,17,300", "--max-new-tokens", "9", "--logits", "2"},
        std::vector<std::string>{"--prompt-ids", "7,1,2,3,4,5,6,8", "--max-new-tokens", "12", "--temperature", "0.9",
                                 "--top-k", "30", "--seed", "77"}}) {
    request.push_back("--json");
    std::vector<std::string> reference{"generate", "--model", env.model};
    reference.insert(reference.end(), request.begin(), request.end());
    std::vector<std::string> connected{"generate", "--connect", "127.0.0.1:" + std::to_string(port)};
    connected.insert(connected.end(), request.begin(), request.end());
    // --topology runs its own cluster inside the generate process, from another file.
    std::vector<std::string> embedded{"generate", "--topology", env.topology("3a2f", free_port(), 2), "--model",
                                      env.model};
    embedded.insert(embedded.end(), request.begin(), request.end());
    const auto want = env.afd_stdout(reference);
    ASSERT_EQ(want.code, 0) << want.output;
    const nlohmann::json reference_json = whole_json(want);
    ASSERT_TRUE(reference_json.contains("tokens")) << want.output;
    // Several runs each: UCX's teardown used to print to stdout now and then.
    for (int run = 0; run < 3; ++run) {
      const auto got = env.afd_stdout(connected);
      EXPECT_EQ(got.code, 0) << got.output;
      EXPECT_EQ(whole_json(got), reference_json);
      const auto here = env.afd_stdout(embedded, 120000);
      EXPECT_EQ(here.code, 0) << here.output;
      EXPECT_EQ(whole_json(here), reference_json);
    }
  }
  auto bad = env.afd({"generate", "--connect", "127.0.0.1:" + std::to_string(port), "--prompt-ids", "1",
                      "--kv-dtype", "f32"});
  EXPECT_EQ(bad.code, 2) << bad.output;
  bad = env.afd({"generate", "--connect", "127.0.0.1:" + std::to_string(port), "--prompt-ids", "1,99999999"});
  EXPECT_EQ(bad.code, 2) << bad.output;
  EXPECT_NE(bad.output.find("outside the vocabulary"), std::string::npos) << bad.output;
  bad = env.afd({"generate", "--prompt-ids", "1"});
  EXPECT_EQ(bad.code, 2) << bad.output;
  EXPECT_EQ(env.afd({"stop", file}).code, 0);
}

TEST(launch, client_errors_are_values) {
  const int port = free_port();
  const auto t0 = std::chrono::steady_clock::now();
  auto c = afd::client::cluster::connect("127.0.0.1", static_cast<std::uint16_t>(port), 2s);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code(), afd::errc::unavailable) << c.err().message();
  EXPECT_NE(c.err().message().find(std::to_string(port)), std::string::npos) << c.err().message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);

  auto& env = launch_env::get();
  const std::string file = env.topology("1a1f", port, 2);
  launched l(file, port);
  ASSERT_TRUE(l.wait_ready()) << l.log();
  c = afd::client::cluster::connect("127.0.0.1", static_cast<std::uint16_t>(port));
  ASSERT_TRUE(c) << c.err().message();
  auto empty = (*c)->submit({.prompt = {}, .max_new_tokens = 4});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.err().code(), afd::errc::invalid_argument) << empty.err().message();
  auto outside = (*c)->submit({.prompt = {1, 1 << 30}, .max_new_tokens = 4});
  ASSERT_FALSE(outside);
  EXPECT_EQ(outside.err().code(), afd::errc::invalid_argument) << outside.err().message();
  auto too_many = (*c)->submit({.prompt = {1}, .max_new_tokens = 1 << 20});
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.err().code(), afd::errc::invalid_argument) << too_many.err().message();
  auto unknown = (*c)->wait(424242, 1s);
  EXPECT_FALSE(unknown);
  // A request that is cancelled ends with errc::cancelled.
  auto id = (*c)->submit({.prompt = {1, 2, 3}, .max_new_tokens = 1000});
  ASSERT_TRUE(id) << id.err().message();
  ASSERT_TRUE((*c)->cancel(*id));
  auto res = (*c)->wait(*id, 30s);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.err().code(), afd::errc::cancelled) << res.err().message();
  // stop_cluster through the client API ends the launcher.
  ASSERT_TRUE((*c)->stop_cluster());
  auto st = l.process().wait_for(30000);
  ASSERT_TRUE(st) << l.log();
  EXPECT_TRUE(afd::launch::exited_cleanly(*st)) << l.log();
  expect_all_gone(l, 5s);
}

}  // namespace
