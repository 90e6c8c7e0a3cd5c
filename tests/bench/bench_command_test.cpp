// `afd bench --quick` as a user runs it: the JSON report's keys, figures that are positive and
// agree with each other (tokens/s = tokens / seconds, the counts the load implies, compute + wait
// within a worker's step time, the straggler is the slowest worker), deterministic mode bitwise
// equal to the reference engine, throughput mode within its stated tolerance; the text report;
// a topology file; bad arguments.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

/// A model cache shared by the tests of this process, removed at exit.
const fs::path& cache_dir() {
  static const fs::path dir = [] {
    auto d = fs::temp_directory_path() / ("afd-bench-test-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  static const struct cleanup {
    ~cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } remover;
  (void)remover;
  return dir;
}

struct outcome {
  int code = -1;
  std::string out;
};

/// Runs `afd bench ARGS` with the model cache in cache_dir(); stdout captured, stderr to a file.
outcome bench(const std::string& args) {
  const std::string cmd = "AFD_BENCH_DIR='" + cache_dir().string() + "' '" AFD_BINARY "' bench " + args + " 2>'" +
                          (cache_dir() / "stderr.txt").string() + "'";
  outcome o;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return o;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) o.out.append(buf, n);
  const int status = ::pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

std::string stderr_text() {
  FILE* f = std::fopen((cache_dir() / "stderr.txt").c_str(), "r");
  if (f == nullptr) return {};
  std::string s;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

void expect_consistent_figures(const json& f, std::int64_t generated, std::int64_t prompt) {
  ASSERT_TRUE(f.is_object());
  EXPECT_EQ(f.at("generated_tokens").get<std::int64_t>(), generated);
  EXPECT_EQ(f.at("prompt_tokens").get<std::int64_t>(), prompt);
  const double s = f.at("seconds").get<double>();
  ASSERT_GT(s, 0.0);
  EXPECT_NEAR(f.at("tokens_per_s").get<double>(), static_cast<double>(generated) / s, 1e-6 * generated / s);
  EXPECT_NEAR(f.at("total_tokens_per_s").get<double>(), static_cast<double>(generated + prompt) / s,
              1e-6 * (generated + prompt) / s);
  const double p50 = f.at("tpot_p50_ms").get<double>(), p99 = f.at("tpot_p99_ms").get<double>();
  EXPECT_GT(p50, 0.0);
  EXPECT_GE(p99, p50);
  EXPECT_GT(f.at("itl_p50_ms").get<double>(), 0.0);
  EXPECT_GE(f.at("itl_p99_ms").get<double>(), f.at("itl_p50_ms").get<double>());
  const double ttft = f.at("ttft_p50_ms").get<double>();
  EXPECT_GT(ttft, 0.0);
  EXPECT_GE(f.at("ttft_p99_ms").get<double>(), ttft);
  // Every token comes after the first one and within the run.
  EXPECT_LE(ttft, s * 1e3 + 1e-6);
  EXPECT_LE(p99, s * 1e3 + 1e-6);
  EXPECT_GT(f.at("cpu_cores_used").get<double>(), 0.0);
}

/// Checks one cluster run of a report with A attention and F FFN workers.
void expect_consistent_run(const json& run, const json& report, std::uint32_t A, std::uint32_t F) {
  const auto& load = report.at("load");
  const std::int64_t requests = load.at("requests"), prompt = load.at("prompt_len"), max_new = load.at("max_new_tokens");
  SCOPED_TRACE(run.dump().substr(0, 200));
  expect_consistent_figures(run.at("figures"), requests * max_new, requests * prompt);

  // The ratio is the cluster's tokens/s over the reference engine's in the same mode.
  const json* ref = nullptr;
  for (const auto& r : report.at("reference"))
    if (r.at("combine_mode") == run.at("combine_mode")) ref = &r;
  ASSERT_NE(ref, nullptr);
  expect_consistent_figures(ref->at("figures"), requests * max_new, requests * prompt);
  const double ratio = run.at("ratio").at("tokens_per_s").get<double>();
  EXPECT_NEAR(ratio,
              run.at("figures").at("tokens_per_s").get<double>() / ref->at("figures").at("tokens_per_s").get<double>(),
              1e-9 * ratio + 1e-12);
  EXPECT_GT(run.at("ratio").at("tpot_p50").get<double>(), 0.0);

  // Workers: A attention and F FFN, every one busy, compute + wait within its step time.
  const auto& workers = run.at("workers");
  ASSERT_EQ(workers.size(), A + F);
  const std::int64_t layers = report.at("model").at("layers");
  std::map<std::string, std::pair<std::string, double>> slowest;  // role -> (name, compute)
  std::set<std::string> names;
  std::uint32_t attention = 0, ffn = 0;
  for (const auto& w : workers) {
    const std::string role = w.at("role"), name = w.at("name");
    names.insert(name);
    attention += role == "attention";
    ffn += role == "ffn";
    const std::int64_t steps = w.at("steps");
    EXPECT_GT(steps, 0) << name;
    const double compute = w.at("compute_seconds"), wait = w.at("wait_seconds"), total = w.at("total_seconds");
    EXPECT_GT(compute, 0.0) << name;
    EXPECT_GE(wait, 0.0) << name;
    EXPECT_LE(compute + wait, total * (1 + 1e-9) + 1e-9) << name;
    const double per = 1e3 / (static_cast<double>(steps) * static_cast<double>(layers));
    EXPECT_NEAR(w.at("compute_ms_per_layer").get<double>(), compute * per, 1e-9 + 1e-9 * compute * per) << name;
    EXPECT_NEAR(w.at("wait_ms_per_layer").get<double>(), wait * per, 1e-9 + 1e-9 * wait * per) << name;
    // Per layer: every network wait belongs to a layer; so does all FFN compute, while the
    // attention side also computes outside layers (embedding, LM head, sampling).
    const auto& lc = w.at("layer_compute_ms");
    const auto& lw = w.at("layer_wait_ms");
    ASSERT_EQ(lc.size(), static_cast<std::size_t>(layers)) << name;
    ASSERT_EQ(lw.size(), static_cast<std::size_t>(layers)) << name;
    double sum_c = 0, sum_w = 0;
    for (std::size_t l = 0; l < lc.size(); ++l) {
      EXPECT_GE(lc[l].get<double>(), 0.0) << name << " layer " << l;
      EXPECT_GE(lw[l].get<double>(), 0.0) << name << " layer " << l;
      sum_c += lc[l].get<double>();
      sum_w += lw[l].get<double>();
    }
    const double step_ms = 1e3 / static_cast<double>(steps);
    EXPECT_NEAR(sum_w, wait * step_ms, 1e-6 * (1 + wait * step_ms)) << name;
    if (role == "ffn")
      EXPECT_NEAR(sum_c, compute * step_ms, 1e-6 * (1 + compute * step_ms)) << name;
    else
      EXPECT_LE(sum_c, compute * step_ms * (1 + 1e-9) + 1e-9) << name;
    auto& s = slowest[role];
    if (s.first.empty() || compute * per > s.second) s = {name, compute * per};
  }
  EXPECT_EQ(attention, A);
  EXPECT_EQ(ffn, F);
  EXPECT_EQ(names.size(), A + F);
  EXPECT_EQ(run.at("stragglers").at("attention").at("name"), slowest["attention"].first);
  EXPECT_EQ(run.at("stragglers").at("ffn").at("name"), slowest["ffn"].first);
  EXPECT_GE(run.at("stragglers").at("ffn").at("above_mean").get<double>(), 0.0);

  // Numerics.
  const auto& a = run.at("accuracy");
  EXPECT_GT(a.at("logits_rows_compared").get<std::int64_t>(), 0);
  if (run.at("combine_mode") == "deterministic") {
    EXPECT_TRUE(a.at("bitwise_equal").get<bool>());
    EXPECT_EQ(a.at("requests_bitwise").get<std::int64_t>(), requests);
    EXPECT_EQ(a.at("max_rel_l2").get<double>(), 0.0);
    EXPECT_EQ(a.at("tolerance").get<double>(), 0.0);
    // Bitwise equal tokens: every kept logits row is compared.
    EXPECT_EQ(a.at("logits_rows_compared").get<std::int64_t>(), requests * max_new);
  } else {
    EXPECT_EQ(run.at("combine_mode"), "throughput");
    EXPECT_GT(a.at("tolerance").get<double>(), 0.0);
    EXPECT_LE(a.at("max_rel_l2").get<double>(), a.at("tolerance").get<double>());
  }
  EXPECT_TRUE(a.at("within_tolerance").get<bool>());
}

TEST(bench_command, quick_json_report_is_complete_and_consistent) {
  const outcome o = bench("--quick --json --micro-batches 1,3");
  ASSERT_EQ(o.code, 0) << o.out << stderr_text();
  const json r = json::parse(o.out, nullptr, false);
  ASSERT_FALSE(r.is_discarded()) << o.out;
  for (const char* key : {"cluster_kind", "shape", "attention_workers", "ffn_workers", "placement", "machine", "model",
                          "load", "numerics", "threads", "reference", "runs", "quick", "repeats"})
    EXPECT_TRUE(r.contains(key)) << key;
  EXPECT_EQ(r.at("shape"), "2A2F");
  EXPECT_TRUE(r.at("quick").get<bool>());
  EXPECT_EQ(r.at("repeats"), 1);
  EXPECT_NE(r.at("cluster_kind").get<std::string>().find("loopback"), std::string::npos);
  EXPECT_GE(r.at("machine").at("usable_cores").get<int>(), 1);
  EXPECT_EQ(r.at("machine").at("load_start").size(), 3u);
  EXPECT_EQ(r.at("model").at("layers"), 4);  // the tiny preset
  EXPECT_EQ(r.at("threads").at("cluster_engine_threads"), 4);
  EXPECT_GE(r.at("threads").at("reference_kernel_threads").get<int>(), 1);
  ASSERT_EQ(r.at("reference").size(), 2u);
  ASSERT_EQ(r.at("runs").size(), 4u);  // K = 1, 3 in each mode
  std::set<std::pair<std::string, int>> seen;
  for (const auto& run : r.at("runs")) {
    seen.insert({run.at("combine_mode").get<std::string>(), run.at("micro_batches").get<int>()});
    expect_consistent_run(run, r, 2, 2);
  }
  EXPECT_EQ(seen, (std::set<std::pair<std::string, int>>{
                      {"deterministic", 1}, {"deterministic", 3}, {"throughput", 1}, {"throughput", 3}}));
}

TEST(bench_command, text_report_names_the_checks_and_the_stragglers) {
  const outcome o = bench("--quick --shape 1A2F --micro-batches 2 --repeat 3");
  ASSERT_EQ(o.code, 0) << o.out << stderr_text();
  for (const char* text : {"1A2F", "machine:", "load average", "threads:", "reference engine (deterministic)",
                           "reference engine (throughput)", "tok/s", "TPOT p50", "TTFT p50", "bitwise equal: yes",
                           "max relative L2 error of logits", "tolerance", "stragglers", "network wait",
                           "per layer, ms per step (compute/wait)", "L0 dense", "repeats: 3 runs",
                           "tok/s of each repeat:"})
    EXPECT_NE(o.out.find(text), std::string::npos) << text << "\n" << o.out;
}

TEST(bench_command, runs_a_topology_file_with_sliced_shared_units) {
  // The tiny model the quick runs generated, with 2a3f.yaml's throughput mode and sliced shared units.
  ASSERT_EQ(bench("--quick --json --combine-mode deterministic --micro-batches 1").code, 0) << stderr_text();
  const outcome o = bench("--quick --json --topology '" AFD_SOURCE_DIR "/deploy/examples/2a3f.yaml' --model '" +
                          (cache_dir() / "tiny").string() + "'");
  ASSERT_EQ(o.code, 0) << o.out << stderr_text();
  const json r = json::parse(o.out, nullptr, false);
  ASSERT_FALSE(r.is_discarded()) << o.out;
  EXPECT_EQ(r.at("shape"), "2A3F");
  ASSERT_EQ(r.at("runs").size(), 1u);
  EXPECT_EQ(r.at("runs")[0].at("combine_mode"), "throughput");
  EXPECT_EQ(r.at("runs")[0].at("micro_batches"), 2);
  expect_consistent_run(r.at("runs")[0], r, 2, 3);
}

TEST(bench_command, bad_arguments_are_usage_errors) {
  EXPECT_EQ(bench("--quick --shape 2X2F").code, 2);
  EXPECT_EQ(bench("--quick --combine-mode fast").code, 2);
  EXPECT_EQ(bench("--quick --micro-batches 1,x").code, 2);
  EXPECT_EQ(bench("--quick --preset huge").code, 2);
  EXPECT_EQ(bench("--quick --repeat 0").code, 2);
  const outcome o = bench("--quick --requests 0");
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(stderr_text().find("--requests"), std::string::npos) << stderr_text();
}

}  // namespace
