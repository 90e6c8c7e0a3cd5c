// `afd faults matrix FILE`: launches the cluster a topology file describes and runs a campaign of
// single faults against it (deploy/faults/matrix.hpp), one row per fault kind x role x phase, then
// prints the table (or one JSON document with --json), a summary line and the command that reruns it.
// Progress goes to stderr. Exit codes: 0 every row passed, 1 a row failed, 2 bad usage or topology,
// 3 the cluster could not be launched.
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "deploy/cli/command_registry.hpp"
#include "deploy/faults/matrix.hpp"
#include "deploy/launch/child_process.hpp"

namespace afd::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string opt_ms(const std::optional<double>& v) {
  if (!v) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.0f", *v);
  return b;
}

nlohmann::json opt_json(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }

nlohmann::json to_json(const fault_matrix::result& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& x : r.rows)
    rows.push_back({{"kind", x.kind},
                    {"role", x.role},
                    {"phase", x.phase},
                    {"target", x.target},
                    {"rule", x.rule},
                    {"fired", x.fired},
                    {"requests", x.requests},
                    {"lost", x.lost},
                    {"mismatches", x.mismatches},
                    {"duplicated", x.duplicated},
                    {"skipped", x.skipped},
                    {"detection_ms", opt_json(x.detection_ms)},
                    {"recovery_ms", opt_json(x.recovery_ms)},
                    {"capacity_ms", opt_json(x.capacity_ms)},
                    {"stall_ms", {{"p50", x.stall_p50_ms}, {"p99", x.stall_p99_ms}, {"max", x.stall_max_ms}}},
                    {"tokens_per_s", x.tokens_per_s},
                    {"after_tokens_per_s", x.after_tokens_per_s},
                    {"throughput_ratio", x.throughput_ratio},
                    {"failed", x.failed},
                    {"events", x.events},
                    {"errors", x.errors},
                    {"verdict", x.pass ? "pass" : "fail"},
                    {"reason", x.reason},
                    {"seconds", x.seconds}});
  return {{"file", r.file},
          {"seed", r.seed},
          {"rows", rows},
          {"summary", {{"rows", r.rows.size()}, {"passed", r.passed}, {"failed", r.failed}}},
          {"rerun", r.rerun}};
}

void print_table(const fault_matrix::result& r) {
  std::printf("%-18s %-11s %-8s %5s %4s %4s %4s %4s %4s %7s %7s %7s %17s %6s  %s\n", "kind", "role", "phase", "fired",
              "reqs", "lost", "mism", "dup", "skip", "det_ms", "rec_ms", "cap_ms", "stall p50/p99/max", "thr", "verdict");
  for (const auto& x : r.rows) {
    char stall[48];
    std::snprintf(stall, sizeof stall, "%.0f/%.0f/%.0f", x.stall_p50_ms, x.stall_p99_ms, x.stall_max_ms);
    std::printf("%-18s %-11s %-8s %5llu %4d %4d %4d %4d %4d %7s %7s %7s %17s %6.2f  %s\n",
                x.kind == "none" ? "baseline" : x.kind.c_str(), x.role.empty() ? "-" : x.role.c_str(),
                x.phase.empty() ? "-" : x.phase.c_str(), static_cast<unsigned long long>(x.fired), x.requests, x.lost,
                x.mismatches, x.duplicated, x.skipped, opt_ms(x.detection_ms).c_str(), opt_ms(x.recovery_ms).c_str(),
                opt_ms(x.capacity_ms).c_str(), stall, x.throughput_ratio,
                x.pass ? "pass" : ("FAIL: " + x.reason).c_str());
  }
  int lost = 0, mism = 0, dup = 0, skip = 0, unfired = 0;
  for (const auto& x : r.rows) {
    lost += x.lost;
    mism += x.mismatches;
    dup += x.duplicated;
    skip += x.skipped;
    unfired += x.kind != "none" && x.fired == 0;
  }
  std::printf("summary: %zu rows, %d passed, %d failed; %d rule(s) never fired; %d lost, %d mismatched, %d duplicated, "
              "%d skipped (seed %llu)\n",
              r.rows.size(), r.passed, r.failed, unfired, lost, mism, dup, skip,
              static_cast<unsigned long long>(r.seed));
  std::printf("rerun: %s\n", r.rerun.c_str());
}

int run_faults(int argc, char** argv) {
  CLI::App app{"Fault injection campaigns against a cluster.\n"
               "  afd faults matrix FILE   launch the cluster FILE describes and run one single fault per row\n"
               "                           (kind x role x phase), measuring what clients see; rules: docs/faults.md",
               "afd faults"};
  app.require_subcommand(1);
  auto* matrix = app.add_subcommand("matrix", "run the fault matrix against the cluster a topology file describes");
  fault_matrix::options o;
  std::string kinds, roles, phases;
  bool json = false;
  matrix->add_option("FILE", o.file, "topology file (YAML); the cluster is launched from it and stopped at the end")
      ->required();
  matrix->add_option("--seed", o.seed, "seed of fault decisions and sampled requests (default 1)");
  matrix->add_option("--model", o.model, "checkpoint directory instead of the file's model.path");
  matrix->add_option("--kinds", kinds, "only these fault kinds, comma-separated (default: all)");
  matrix->add_option("--roles", roles, "only these roles: attention,ffn (default: both)");
  matrix->add_option("--phases", phases, "only these phases: prefill,decode,recovery (default: all)");
  matrix->add_option("--requests", o.requests, "concurrent requests per row (default 6)");
  matrix->add_option("--max-new-tokens", o.max_new_tokens, "tokens per request (default 32)");
  matrix->add_option("--random", o.random_rows,
                     "a soak: this many rows drawn with the seed from the selected kinds, roles and phases");
  matrix->add_option("--log-dir", o.log_dir, "where the launcher's output goes (default: a new temporary directory)");
  matrix->add_flag("--json", json, "print one JSON document instead of the table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.kinds = split_list(kinds);
  o.roles = split_list(roles);
  o.phases = split_list(phases);
  o.afd_executable = launch::self_executable();
  std::error_code ec;
  if (o.log_dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path(ec) / "afd-faults-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::fprintf(stderr, "afd faults matrix: cannot create a log directory under %s\n", tmpl.c_str());
      return 1;
    }
    o.log_dir = tmpl;
  } else {
    std::filesystem::create_directories(o.log_dir, ec);
  }
  std::fprintf(stderr, "afd faults matrix: logs in %s\n", o.log_dir.c_str());
  const auto started = std::chrono::steady_clock::now();
  auto r = fault_matrix::run(o, [&](const std::string& line) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::fprintf(stderr, "[%6.1fs] %s\n", s, line.c_str());
  });
  if (!r) {
    std::fprintf(stderr, "afd faults matrix: %s\n", r.err().message().c_str());
    const auto code = r.err().code();
    return code == errc::invalid_argument || code == errc::invalid_config ? 2 : 3;
  }
  if (json)
    std::printf("%s\n", to_json(*r).dump(2).c_str());
  else
    print_table(*r);
  return r->failed == 0 ? 0 : 1;
}

const bool registered = register_command(
    {"faults", "fault injection: `afd faults matrix FILE` runs every single fault against a launched cluster",
     run_faults});

}  // namespace
}  // namespace afd::cli
