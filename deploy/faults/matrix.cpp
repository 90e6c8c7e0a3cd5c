#include "deploy/faults/matrix.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <afd/client.hpp>

#include "deploy/launch/child_process.hpp"
#include "deploy/launch/launch_plan.hpp"
#include "deploy/launch/process_faults.hpp"
#include "deploy/topology/topology.hpp"
#include "runtime/core/stats.hpp"
#include "runtime/faults/faults.hpp"

namespace afd::fault_matrix {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

/// One request of a row and what its client saw.
struct tracked {
  client::request req;
  client::request_id id = 0;
  clock_type::time_point submitted;
  std::vector<client::token> seen;
  std::vector<clock_type::time_point> seen_at;
};

/// The requests every row submits: the same for every row (the baseline's tokens are the oracle),
/// half greedy, half seeded sampling, prompts of different lengths (several prefill chunks).
std::vector<client::request> make_requests(const options& o, std::int64_t vocab) {
  std::vector<client::request> out;
  std::uint64_t s = o.seed * 0x9E3779B97F4A7C15ull + 1;
  for (int i = 0; i < o.requests; ++i) {
    client::request r;
    const int len = 12 + 11 * i;
    for (int t = 0; t < len; ++t) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      r.prompt.push_back(static_cast<std::int32_t>((s >> 33) % static_cast<std::uint64_t>(std::max<std::int64_t>(vocab, 1))));
    }
    r.max_new_tokens = o.max_new_tokens;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_k = 40;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = o.seed * 1000 + static_cast<std::uint64_t>(i);
    }
    out.push_back(std::move(r));
  }
  return out;
}

/// The cluster under test, launched with `afd launch FILE` and stopped with `afd stop FILE`.
class launched_cluster {
 public:
  explicit launched_cluster(const options& o) : o_(o) {}
  ~launched_cluster() { stop(); }

  expected<void> start() {
    // Every row may kill a worker process: the restart budget must not run out over a campaign.
    std::vector<std::string> argv{o_.afd_executable, "launch", o_.file, "--max-restarts", "1000"};
    if (!o_.model.empty()) argv.insert(argv.end(), {"--model", o_.model});
    const std::string log = o_.log_dir + "/launch.log";
    auto child = launch::child_process::spawn(argv, log);
    if (!child) return child.err();
    auto status = child->wait_for(180000);
    if (!status || !launch::exited_cleanly(*status))
      return error{errc::unavailable, "`" + launch::shell_join(argv) + "` failed (" +
                                          (status ? launch::describe_wait_status(*status) : "no answer in 180 s") +
                                          "):\n" + launch::tail_lines(log, 20)};
    launched_ = true;
    auto address = launch::resolve_cluster_address(o_.file, "");
    if (!address) return address.err();
    run_dir_ = address->run_directory;
    auto c = client::cluster::connect(o_.file, 10s);
    if (!c) return c.err();
    client_ = std::move(*c);
    return {};
  }

  void stop() {
    if (client_) client_->shutdown();
    client_.reset();
    if (!launched_) return;
    launched_ = false;
    std::vector<std::string> argv{o_.afd_executable, "stop", o_.file};
    if (auto child = launch::child_process::spawn(argv, o_.log_dir + "/stop.log")) (void)child->wait_for(60000);
  }

  client::cluster& c() { return *client_; }
  const std::string& run_dir() const { return run_dir_; }

 private:
  const options& o_;
  bool launched_ = false;
  std::string run_dir_;
  std::unique_ptr<client::cluster> client_;
};

bool full_capacity(const client::cluster_status& s, std::size_t workers) {
  return s.ready && s.workers.size() == workers &&
         std::all_of(s.workers.begin(), s.workers.end(),
                     [](const client::worker_status& w) { return w.state == worker_state::ready; });
}

/// Waits until every worker is ready again; the status then, or the last one seen.
std::pair<bool, client::cluster_status> wait_capacity(client::cluster& c, std::size_t workers,
                                                       std::chrono::milliseconds limit) {
  const auto give_up = clock_type::now() + limit;
  client::cluster_status last;
  for (;;) {
    if (auto s = c.status(2s)) {
      last = std::move(*s);
      if (full_capacity(last, workers)) return {true, last};
    }
    if (clock_type::now() > give_up) return {false, last};
    std::this_thread::sleep_for(50ms);
  }
}

/// The rule a row arms (or applies, for process kinds) against `target`, whose data peer is `peer`.
std::string rule_for(const std::string& kind, const std::string& target, const std::string& peer,
                     std::chrono::milliseconds step_deadline) {
  const std::string w = " worker=" + target;
  // The coordinator is seen gone when its links time out (CAF's connection timeout, 3 s): a pause
  // past that deposes it.
  if (target == "coordinator" && kind == "pause_process") return kind + w + " duration=5000ms";
  const auto straggle = std::to_string(step_deadline.count() * 13 / 10) + "ms";
  if (kind == "kill_process") return kind + w;
  // Past every deadline: the step deadline, and the hang limit (two step deadlines).
  if (kind == "pause_process") return kind + w + " duration=" + std::to_string(step_deadline.count() * 2 + 1000) + "ms";
  if (kind == "crash_actor") return kind + w + " max=1";
  if (kind == "hang_engine") return kind + w + " duration=" + std::to_string(step_deadline.count() * 2 + 1000) + "ms max=1";
  if (kind == "slow_worker") return kind + w + " delay=" + straggle + " max=2";
  if (kind == "control_drop") return kind + w + " probability=0.2";
  if (kind == "control_delay") return kind + w + " delay=200ms probability=0.1";
  if (kind == "control_duplicate") return kind + w + " probability=0.3";
  if (kind == "control_reorder") return kind + w + " nth=20";
  if (kind == "blackhole") return kind + w + " peer=coordinator both duration=2s max=1";
  if (kind == "data_delay") return kind + w + " delay=300ms nth=30";
  if (kind == "peer_dead") return kind + w + " peer=" + peer + " duration=1s max=1";
  if (kind == "data_drop" || kind == "data_corrupt") return kind + w + " peer=" + peer + " nth=30";
  return kind + w + " nth=30";  // data_fail, data_duplicate
}

/// How long a rule's effect lasts after it fires (capacity is judged after it).
std::chrono::milliseconds lasts(const faults::fault_rule& r) {
  return r.duration;
}

struct coordinator_clock {
  // coordinator ms = local steady ms + offset
  double offset_ms = 0;
  double to_coordinator(clock_type::time_point t) const {
    return std::chrono::duration<double, std::milli>(t.time_since_epoch()).count() + offset_ms;
  }
};

coordinator_clock sync_clock(client::cluster& c) {
  const auto before = clock_type::now();
  auto s = c.status(2s);
  const auto after = clock_type::now();
  coordinator_clock k;
  if (s) {
    const double local = std::chrono::duration<double, std::milli>((before + (after - before) / 2).time_since_epoch()).count();
    k.offset_ms = static_cast<double>(s->now_ms) - local;
  }
  return k;
}

class runner {
 public:
  runner(const options& o, std::function<void(const std::string&)> progress)
      : o_(o), say_(std::move(progress)), cluster_(o) {}

  expected<result> run() {
    auto parsed = topology::parse_file(o_.file);
    if (!parsed.ok()) {
      std::string all;
      for (const auto& d : parsed.errors) all += d.to_string() + "\n";
      return error{errc::invalid_config, all};
    }
    topo_ = std::move(*parsed.value);
    for (const auto& a : topo_.attention_workers) attention_.push_back(a.name);
    for (const auto& f : topo_.ffn_workers) ffn_.push_back(f.name);
    step_deadline_ = std::chrono::milliseconds(topo_.pipeline.step_deadline_ms);
    result out;
    out.seed = o_.seed;
    out.file = o_.file;
    out.rerun = rerun_command();

    say("launching " + o_.file);
    if (auto s = cluster_.start(); !s) return s.err();
    auto st = cluster_.c().status(5s);
    if (!st) return st.err();
    workers_ = st->workers.size();
    requests_ = make_requests(o_, st->vocab_size);

    // The baseline: no fault. Its tokens are every other row's oracle.
    row base = run_row("none", "", "", "");
    baseline_tokens_per_s_ = base.tokens_per_s;
    base.after_tokens_per_s = base.tokens_per_s;
    base.throughput_ratio = 1.0;
    base.pass = base.lost == 0 && base.duplicated == 0 && base.skipped == 0 && base.failed.empty();
    if (!base.pass && base.reason.empty()) base.reason = "the fault-free run lost requests or blamed a worker";
    report(base);
    out.rows.push_back(base);
    if (!base.pass) {
      out.failed = 1;
      return out;
    }

    struct cell {
      std::string kind, role, phase;
    };
    std::vector<cell> cells;
    for (const auto& kind : filtered(o_.kinds, all_kinds()))
      for (const auto& role : filtered(o_.roles, all_roles()))
        for (const auto& phase : filtered(o_.phases, all_phases()))
          if (!attention_.empty() && !ffn_.empty() &&
              (role != "coordinator" || kind == "kill_process" || kind == "pause_process"))
            cells.push_back({kind, role, phase});
    if (o_.random_rows > 0 && !cells.empty()) {
      // A soak: rows drawn from the selection by the seed (the same seed, the same rows).
      std::vector<cell> drawn;
      std::uint64_t x = o_.seed ^ 0xD1B54A32D192ED03ull;
      for (int i = 0; i < o_.random_rows; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        drawn.push_back(cells[x % cells.size()]);
      }
      cells = std::move(drawn);
    }
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const auto& members = cells[i].role == "attention" ? attention_ : ffn_;
      say("row " + std::to_string(i + 1) + " of " + std::to_string(cells.size()));
      row r = run_row(cells[i].kind, cells[i].role, cells[i].phase,
                      cells[i].role == "coordinator" ? std::string("coordinator") : members.back());
      report(r);
      out.rows.push_back(std::move(r));
    }
    for (const auto& r : out.rows) (r.pass ? out.passed : out.failed)++;
    cluster_.stop();
    return out;
  }

 private:
  static std::vector<std::string> filtered(const std::vector<std::string>& chosen, const std::vector<std::string>& all) {
    if (chosen.empty()) return all;
    std::vector<std::string> out;
    for (const auto& a : all)
      if (std::find(chosen.begin(), chosen.end(), a) != chosen.end()) out.push_back(a);
    return out;
  }

  std::string rerun_command() const {
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
      return s;
    };
    std::string cmd = "afd faults matrix " + o_.file + " --seed " + std::to_string(o_.seed);
    if (!o_.model.empty()) cmd += " --model " + o_.model;
    if (!o_.kinds.empty()) cmd += " --kinds " + join(o_.kinds);
    if (!o_.roles.empty()) cmd += " --roles " + join(o_.roles);
    if (!o_.phases.empty()) cmd += " --phases " + join(o_.phases);
    if (o_.requests != 6) cmd += " --requests " + std::to_string(o_.requests);
    if (o_.max_new_tokens != 32) cmd += " --max-new-tokens " + std::to_string(o_.max_new_tokens);
    if (o_.random_rows > 0) cmd += " --random " + std::to_string(o_.random_rows);
    return cmd;
  }

  void say(const std::string& line) {
    if (say_) say_(line);
  }

  void report(const row& r) {
    std::string line = (r.kind == "none" ? std::string("baseline") : r.kind + " " + r.role + " " + r.phase) + ": " +
                       (r.pass ? "pass" : "FAIL (" + r.reason + ")") + ", " + fmt("%.1f s", r.seconds);
    say(line);
  }

  std::string role_of(const std::string& worker) const {
    if (std::find(attention_.begin(), attention_.end(), worker) != attention_.end()) return "attention";
    if (std::find(ffn_.begin(), ffn_.end(), worker) != ffn_.end()) return "ffn";
    return "";
  }

  /// Applies a process fault to the process hosting `worker` (from a thread: a pause blocks).
  /// The coordinator's target is the active one (with standbys, any of the launcher's coordinator
  /// processes): the process whose pid the coordinator's status names.
  expected<std::thread> apply_process(const faults::fault_rule& rule, const std::string& worker) {
    auto procs = launch::read_processes(cluster_.run_dir());
    if (!procs) return procs.err();
    std::int64_t active_pid = 0;
    if (worker == "coordinator")
      if (auto s = cluster_.c().status(2s)) active_pid = s->coordinator_pid;
    auto hosts = [&](const launch::process_entry& p) {
      if (std::find(p.workers.begin(), p.workers.end(), worker) != p.workers.end()) return true;
      if (!p.workers.empty()) return false;
      if (worker == "coordinator" && active_pid) return p.pid == active_pid;
      return p.name == worker;
    };
    for (const auto& p : *procs)
      if (hosts(p)) {
        if (rule.kind == faults::fault_kind::kill_process) {
          if (auto k = launch::apply_process_fault(rule, p.pid); !k) return k.err();
          return std::thread{};
        }
        if (::kill(p.pid, SIGSTOP) != 0) return error{errc::unavailable, "cannot pause process " + std::to_string(p.pid)};
        const ::pid_t pid = p.pid;
        const auto d = rule.duration;
        return std::thread([pid, d] {
          std::this_thread::sleep_for(d);
          ::kill(pid, SIGCONT);
        });
      }
    return error{errc::invalid_argument, "no worker process hosts '" + worker + "' (in-process workers cannot be killed alone)"};
  }

  /// Submits the row's requests with streaming; returns their trackers.
  std::vector<std::unique_ptr<tracked>> submit_all(std::mutex& m, std::vector<std::string>& submit_errors) {
    std::vector<std::unique_ptr<tracked>> out;
    for (const auto& req : requests_) {
      auto t = std::make_unique<tracked>();
      t->req = req;
      t->submitted = clock_type::now();
      tracked* raw = t.get();
      auto id = cluster_.c().submit(req, [&m, raw](const client::token& tok) {
        std::lock_guard lock(m);
        raw->seen.push_back(tok);
        raw->seen_at.push_back(clock_type::now());
      });
      if (!id) {
        submit_errors.push_back(id.err().to_string());
        t->id = -1;
      } else {
        t->id = *id;
      }
      out.push_back(std::move(t));
    }
    return out;
  }

  row run_row(const std::string& kind, const std::string& role, const std::string& phase, const std::string& target) {
    row r;
    r.kind = kind;
    r.role = role;
    r.phase = phase;
    r.target = target;
    r.requests = static_cast<int>(requests_.size());
    const auto row_start = clock_type::now();
    const bool baseline = kind == "none";
    auto& c = cluster_.c();

    // Start from full capacity, with nothing armed.
    auto [full, before] = wait_capacity(c, workers_, o_.capacity_timeout);
    if (!full) {
      if (auto s = relaunch(); !s) {
        r.reason = "the cluster is not at full capacity before the row and cannot be relaunched: " + s.err().message();
        return r;
      }
    }
    (void)c.arm_faults({}, o_.seed);

    const std::string peer = role == "attention" ? (ffn_.empty() ? "" : ffn_.front())
                                                 : (attention_.empty() ? "" : attention_.front());
    // The coordinator's recovery row kills an FFN worker first.
    const std::string victim_worker = role == "coordinator" ? (ffn_.empty() ? "" : ffn_.front()) : peer;
    std::optional<faults::fault_rule> rule;
    if (!baseline) {
      r.rule = rule_for(kind, target, peer, step_deadline_);
      auto parsed = faults::parse_rule(r.rule);
      if (!parsed) {
        r.reason = parsed.err().message();
        return r;
      }
      rule = *parsed;
    }
    // In the recovery phase another worker (of the other role) is killed first; the row's fault
    // is applied as soon as the coordinator has declared it failed, while the cluster recovers.
    const std::string victim = phase == "recovery" ? victim_worker : "";
    const std::int64_t since_ms = before.now_ms;
    say(baseline ? "baseline: " + std::to_string(r.requests) + " requests, no fault"
                 : kind + " " + role + " " + phase + ": " + r.rule + (victim.empty() ? "" : " (after killing " + victim + ")"));

    std::mutex m;
    std::vector<std::string> submit_errors;
    auto reqs = submit_all(m, submit_errors);
    auto clk = sync_clock(c);

    std::thread pause_thread;
    clock_type::time_point applied = clock_type::now();
    std::string apply_error;
    if (!baseline) {
      if (phase == "decode") {
        // Once every request streams.
        const auto limit = clock_type::now() + 30s;
        for (;;) {
          bool all = true;
          {
            std::lock_guard lock(m);
            for (const auto& t : reqs) all = all && (t->id < 0 || t->seen.size() >= 2 || (!t->seen.empty() && t->seen.back().last));
          }
          if (all || clock_type::now() > limit) break;
          std::this_thread::sleep_for(2ms);
        }
      } else if (phase == "recovery") {
        faults::fault_rule kill;
        kill.kind = faults::fault_kind::kill_process;
        kill.worker = victim;
        kill.text = "kill_process worker=" + victim;
        if (auto t = apply_process(kill, victim); !t) apply_error = t.err().message();
        const auto limit = clock_type::now() + 10s;
        bool seen_failed = false;
        while (!seen_failed && clock_type::now() < limit && apply_error.empty()) {
          if (auto s = c.status(2s))
            for (const auto& e : s->events)
              if (e.at_ms >= since_ms && e.kind == "failed" && e.worker == victim) seen_failed = true;
          if (!seen_failed) std::this_thread::sleep_for(5ms);
        }
      }
      applied = clock_type::now();
      if (apply_error.empty()) {
        if (faults::layer_of(rule->kind) == faults::fault_layer::process) {
          auto t = apply_process(*rule, target);
          if (!t) {
            apply_error = t.err().message();
          } else {
            pause_thread = std::move(*t);
            r.fired = 1;
          }
        } else if (auto a = c.arm_faults({r.rule}, o_.seed); !a) {
          apply_error = a.err().message();
        }
      }
    }

    // Every request to its end: lost, mismatched (against the baseline), duplicated, skipped.
    std::set<std::string> errors(submit_errors.begin(), submit_errors.end());
    r.lost = static_cast<int>(submit_errors.size());
    std::uint64_t produced = 0;
    const auto deadline = clock_type::now() + o_.row_timeout;
    std::vector<std::vector<std::int32_t>> tokens(reqs.size());
    auto collect = [&](std::vector<std::unique_ptr<tracked>>& batch) {
      for (std::size_t i = 0; i < batch.size(); ++i) {
        auto& t = *batch[i];
        if (t.id < 0) continue;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
        auto res = c.wait(t.id, std::max(left, 1ms));
        if (!res) {
          ++r.lost;
          errors.insert(res.err().to_string());
          if (res.err().code() == errc::timeout) (void)c.cancel(t.id);
          continue;
        }
        if (baseline) tokens[i] = res->tokens;
        produced += res->tokens.size();
        if (!baseline && i < baseline_tokens_.size() && res->tokens != baseline_tokens_[i]) ++r.mismatches;
        std::lock_guard lock(m);
        // Streamed once each, in order: index k holds token k of the result.
        std::int64_t expect = 0;
        for (const auto& tok : t.seen) {
          if (tok.index < expect) {
            ++r.duplicated;
          } else {
            r.skipped += static_cast<int>(tok.index - expect);
            expect = tok.index + 1;
            if (tok.index < static_cast<std::int64_t>(res->tokens.size()) && tok.value != res->tokens[tok.index])
              ++r.mismatches;
          }
        }
        if (expect < static_cast<std::int64_t>(res->tokens.size()))
          r.skipped += static_cast<int>(res->tokens.size() - expect);
      }
    };
    collect(reqs);
    // A rule armed in the workers fires on their traffic: while it has not fired, the same
    // requests run again (each checked like the first), for up to 15 s after the rule was applied
    // (an FFN worker's 20th control message is its 20th heartbeat: 2 s, more on a loaded
    // machine). Firings reach the coordinator with the workers' heartbeats.
    std::vector<std::vector<std::unique_ptr<tracked>>> rounds;
    if (rule && faults::layer_of(rule->kind) != faults::fault_layer::process && apply_error.empty()) {
      const auto rounds_until = std::min(deadline, applied + 15s);
      while (clock_type::now() < rounds_until) {
        std::this_thread::sleep_for(300ms);
        if (fired_now(c, r.rule) > 0) break;
        std::vector<std::string> more_errors;
        rounds.push_back(submit_all(m, more_errors));
        r.requests += static_cast<int>(rounds.back().size());
        r.lost += static_cast<int>(more_errors.size());
        errors.insert(more_errors.begin(), more_errors.end());
        collect(rounds.back());
      }
    }
    const auto finished = clock_type::now();
    r.tokens_per_s = produced / std::max(1e-9, std::chrono::duration<double>(finished - row_start).count());
    r.errors.assign(errors.begin(), errors.end());
    if (baseline) baseline_tokens_ = tokens;

    // Client-visible stall: each request's longest gap between consecutive tokens (from submit).
    {
      std::lock_guard lock(m);
      std::vector<double> stalls;
      auto add = [&](const std::vector<std::unique_ptr<tracked>>& batch) {
        for (const auto& t : batch) {
          double worst = 0;
          auto prev = t->submitted;
          for (const auto& at : t->seen_at) {
            worst = std::max(worst, ms_between(prev, at));
            prev = at;
          }
          stalls.push_back(worst);
        }
      };
      add(reqs);
      for (const auto& b : rounds) add(b);
      if (!stalls.empty()) {
        r.stall_p50_ms = percentile(stalls, 0.50);
        r.stall_p99_ms = percentile(stalls, 0.99);
        r.stall_max_ms = *std::max_element(stalls.begin(), stalls.end());
      }
    }

    if (pause_thread.joinable()) pause_thread.join();
    if (rule) std::this_thread::sleep_until(applied + lasts(*rule));

    // Back to full capacity; then the row's figures from the coordinator's events.
    auto [back, after] = wait_capacity(c, workers_, o_.capacity_timeout);
    if (back) r.capacity_ms = ms_between(applied, clock_type::now());
    // Firings travel with heartbeats: those of a worker that just came back arrive with its next.
    std::this_thread::sleep_for(300ms);
    if (auto later = c.status(2s)) after = std::move(*later);
    if (rule && faults::layer_of(rule->kind) != faults::fault_layer::process)
      for (const auto& f : after.faults)
        if (f.rule == r.rule) r.fired = f.fired;
    (void)c.arm_faults({}, o_.seed);
    const double applied_ms = clk.to_coordinator(applied);
    std::optional<double> detected_at;
    for (const auto& e : after.events) {
      if (e.at_ms < since_ms) continue;
      r.events.push_back(e.kind + (e.worker.empty() ? "" : " " + e.worker) + (e.detail.empty() ? "" : ": " + e.detail));
      if (e.kind == "failed" && std::find(r.failed.begin(), r.failed.end(), e.worker) == r.failed.end())
        r.failed.push_back(e.worker);
      if (baseline || e.at_ms + 1 < applied_ms) continue;
      if (e.worker == victim && !victim.empty()) continue;
      if (!detected_at && (e.kind == "failed" || e.kind == "retry" || e.kind == "slow")) {
        detected_at = static_cast<double>(e.at_ms);
        r.detection_ms = std::max(0.0, static_cast<double>(e.at_ms) - applied_ms);
      } else if (detected_at && !r.recovery_ms && e.kind == "epoch_ready") {
        r.recovery_ms = static_cast<double>(e.at_ms) - *detected_at;
      }
    }

    // Throughput once capacity returned: the same requests, no fault.
    if (!baseline && back) {
      const auto t0 = clock_type::now();
      std::uint64_t n = 0;
      std::vector<client::request_id> ids;
      for (const auto& q : requests_)
        if (auto id = c.submit(q)) ids.push_back(*id);
      for (std::size_t i = 0; i < ids.size(); ++i)
        if (auto res = c.wait(ids[i], o_.row_timeout)) {
          n += res->tokens.size();
          if (i < baseline_tokens_.size() && res->tokens != baseline_tokens_[i]) ++r.mismatches;
        } else {
          ++r.lost;
          errors.insert("after recovery: " + res.err().to_string());
        }
      r.after_tokens_per_s = n / std::max(1e-9, std::chrono::duration<double>(clock_type::now() - t0).count());
      r.throughput_ratio = baseline_tokens_per_s_ > 0 ? r.after_tokens_per_s / baseline_tokens_per_s_ : 0;
      r.errors.assign(errors.begin(), errors.end());
    }

    // The verdict.
    std::vector<std::string> why;
    if (!apply_error.empty()) why.push_back("the fault could not be applied: " + apply_error);
    if (!baseline && r.fired == 0) why.push_back("the rule never fired");
    if (r.lost) why.push_back(std::to_string(r.lost) + " request(s) lost");
    if (r.mismatches) why.push_back(std::to_string(r.mismatches) + " token mismatch(es)");
    if (r.duplicated) why.push_back(std::to_string(r.duplicated) + " duplicated token(s)");
    if (r.skipped) why.push_back(std::to_string(r.skipped) + " skipped token(s)");
    if (!back) why.push_back("not back to full capacity within " + std::to_string(o_.capacity_timeout.count()) + " s");
    // Who may be declared failed: the target; in the recovery phase, the killed worker; for a data
    // fault, also the peers the target exchanges data with (a send that fails or a message that
    // never arrives cannot tell the sender's side from the receiver's).
    const auto& data_peers = role == "attention" ? ffn_ : attention_;
    const bool data_kind = kind.rfind("data_", 0) == 0 || kind == "peer_dead";
    for (const auto& w : r.failed) {
      const bool allowed = w == target || w == victim ||
                           (data_kind && std::find(data_peers.begin(), data_peers.end(), w) != data_peers.end());
      if (!allowed) why.push_back("'" + w + "' was declared failed (not the fault's target)");
      if (kind == "slow_worker" && w == target) why.push_back("a straggler was failed over");
    }
    r.pass = why.empty();
    for (const auto& w : why) r.reason += (r.reason.empty() ? "" : "; ") + w;
    r.seconds = std::chrono::duration<double>(clock_type::now() - row_start).count();
    if (!back) (void)relaunch();
    return r;
  }

  static std::uint64_t fired_now(client::cluster& c, const std::string& rule) {
    std::uint64_t n = 0;
    if (auto s = c.status(2s))
      for (const auto& f : s->faults)
        if (f.rule == rule) n += f.fired;
    return n;
  }

  expected<void> relaunch() {
    say("relaunching the cluster");
    cluster_.stop();
    if (auto s = cluster_.start(); !s) return s;
    auto [full, st] = wait_capacity(cluster_.c(), workers_, o_.capacity_timeout);
    if (!full) return error{errc::unavailable, "the relaunched cluster is not at full capacity"};
    return {};
  }

  const options& o_;
  std::function<void(const std::string&)> say_;
  launched_cluster cluster_;
  topology::topology topo_;
  std::vector<std::string> attention_, ffn_;
  std::chrono::milliseconds step_deadline_{5000};
  std::size_t workers_ = 0;
  std::vector<client::request> requests_;
  std::vector<std::vector<std::int32_t>> baseline_tokens_;
  double baseline_tokens_per_s_ = 0;
};

}  // namespace

const std::vector<std::string>& all_kinds() {
  static const std::vector<std::string> k{
      "kill_process", "pause_process", "crash_actor",    "hang_engine",   "slow_worker",   "control_drop",
      "control_delay", "control_duplicate", "control_reorder", "blackhole", "data_fail", "data_drop",
      "data_delay",   "data_duplicate", "data_corrupt",  "peer_dead"};
  return k;
}
const std::vector<std::string>& all_roles() {
  static const std::vector<std::string> r{"attention", "ffn", "coordinator"};
  return r;
}
const std::vector<std::string>& all_phases() {
  static const std::vector<std::string> p{"prefill", "decode", "recovery"};
  return p;
}

expected<result> run(const options& o, const std::function<void(const std::string&)>& progress) {
  auto check = [](const std::vector<std::string>& chosen, const std::vector<std::string>& all,
                  const char* what) -> expected<void> {
    for (const auto& c : chosen)
      if (std::find(all.begin(), all.end(), c) == all.end()) {
        std::string known;
        for (const auto& a : all) known += (known.empty() ? "" : ", ") + a;
        return error{errc::invalid_argument, std::string("unknown ") + what + " '" + c + "' (known: " + known + ")"};
      }
    return {};
  };
  if (auto c = check(o.kinds, all_kinds(), "fault kind"); !c) return c.err();
  if (auto c = check(o.roles, all_roles(), "role"); !c) return c.err();
  if (auto c = check(o.phases, all_phases(), "phase"); !c) return c.err();
  if (o.requests < 1 || o.max_new_tokens < 1) return error{errc::invalid_argument, "--requests and --max-new-tokens must be >= 1"};
  runner r(o, progress);
  return r.run();
}

}  // namespace afd::fault_matrix
