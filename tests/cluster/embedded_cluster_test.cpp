// Embedded clusters of the example shapes through the client API: tokens bitwise the reference
// engine's, streaming, cancel, admission limits, invalid input, shutdown, a worker's death.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>

#include "deploy/client/embedded.hpp"
#include "kernels/backend.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "tests/cluster/test_cluster.hpp"

namespace afd::cluster_testing {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

struct shape {
  const char* topology;
  int micro_batches;
};

std::string shape_name(const ::testing::TestParamInfo<shape>& p) {
  return std::string(p.param.topology) + "_k" + std::to_string(p.param.micro_batches);
}

std::unique_ptr<client::cluster> start(const dataplane::cluster_spec& spec) {
  auto c = client::embed_spec(spec);
  EXPECT_TRUE(c.has_value()) << (c ? "" : c.err().to_string());
  return c ? std::move(*c) : nullptr;
}

class cluster_shapes : public ::testing::TestWithParam<shape> {};

// Many concurrent requests of different lengths, greedy and seeded sampling; half streamed by
// callback, half by next_token: every token bitwise the reference engine's, in order.
TEST_P(cluster_shapes, tokens_equal_the_reference_engine) {
  const auto spec = example_spec(GetParam().topology, GetParam().micro_batches);
  auto c = start(spec);
  ASSERT_TRUE(c);
  const std::int64_t lengths[] = {1, 23, 7, 40, 3, 17, 64, 9, 31, 5};
  const std::int64_t news[] = {6, 3, 10, 1, 8, 5, 4, 12, 2, 7};
  const int n = 10;
  std::vector<client::request> reqs;
  for (int i = 0; i < n; ++i) reqs.push_back(make_request(i, lengths[i], news[i], i % 2 == 1));
  reqs[4].stop_ids = {reference_result(spec, reqs[4]).tokens[2]};  // ends early with "stop"

  std::mutex m;
  std::map<client::request_id, std::vector<client::token>> streamed;
  std::vector<client::request_id> ids;
  for (int i = 0; i < n; ++i) {
    client::token_callback cb;
    if (i % 2 == 0)
      cb = [&](const client::token& t) {
        std::lock_guard lock(m);
        streamed[t.id].push_back(t);
      };
    auto id = c->submit(reqs[static_cast<std::size_t>(i)], cb);
    ASSERT_TRUE(id.has_value()) << id.err().to_string();
    ids.push_back(*id);
  }
  for (int i = 0; i < n; ++i) {
    const auto expected = reference_result(spec, reqs[static_cast<std::size_t>(i)]);
    std::vector<client::token> iterated;
    if (i % 2 == 1) {
      for (;;) {
        auto t = c->next_token(ids[static_cast<std::size_t>(i)], 30s);
        if (!t) {
          EXPECT_EQ(t.err().code(), errc::out_of_range) << t.err().to_string();
          break;
        }
        iterated.push_back(*t);
      }
    }
    auto r = c->wait(ids[static_cast<std::size_t>(i)], 30s);
    ASSERT_TRUE(r.has_value()) << "request " << i << ": " << r.err().to_string();
    EXPECT_EQ(r->tokens, expected.tokens) << "request " << i;
    EXPECT_EQ(r->finish_reason, engine::to_string(expected.reason)) << "request " << i;
    std::vector<client::token> seen;
    if (i % 2 == 1) {
      seen = iterated;
    } else {
      std::lock_guard lock(m);
      seen = streamed[ids[static_cast<std::size_t>(i)]];
    }
    ASSERT_EQ(seen.size(), r->tokens.size()) << "request " << i;
    for (std::size_t k = 0; k < seen.size(); ++k) {
      EXPECT_EQ(seen[k].value, r->tokens[k]);
      EXPECT_EQ(seen[k].index, static_cast<std::int64_t>(k));
      EXPECT_EQ(seen[k].last, k + 1 == seen.size());
    }
  }
  EXPECT_EQ(reference_result(spec, reqs[4]).reason, engine::finish_reason::stop);
  auto st = c->status();
  ASSERT_TRUE(st.has_value()) << st.err().to_string();
  EXPECT_TRUE(st->ready);
  EXPECT_EQ(st->finished, n);
  EXPECT_EQ(st->workers.size(), spec.attention_workers.size() + spec.ffn_workers.size());
}

INSTANTIATE_TEST_SUITE_P(example_topologies, cluster_shapes,
                         ::testing::Values(shape{"1a1f", 1}, shape{"1a1f", 3}, shape{"2a2f", 3}, shape{"2a2f", 2},
                                           shape{"3a2f", 2}, shape{"2a3f", 3}, shape{"2a3f", 1}),
                         shape_name);

// 2a3f.yaml as written: throughput combine with the shared expert sliced across the three FFN
// workers (tensor parallel, as the system report does) and the dense MLPs whole on f2; embedded
// over loopback on the tiny model.
dataplane::cluster_spec sliced_2a3f_spec() {
  auto t = topology::load_file(std::string(AFD_SOURCE_DIR) + "/deploy/examples/2a3f.yaml");
  EXPECT_TRUE(t.has_value()) << (t ? "" : t.err().to_string());
  EXPECT_EQ(t->model.combine, topology::combine_mode::throughput);
  EXPECT_EQ(t->placement.shared.how, topology::unit_rule::policy::sliced);
  t->model.path = tiny_model();
  t->transport.kind = topology::transport_kind::loopback;
  auto config = topology::read_model_config(*t);
  EXPECT_TRUE(config.has_value()) << (config ? "" : config.err().to_string());
  auto spec = client::to_cluster_spec(*t, *config);
  EXPECT_TRUE(spec.has_value()) << (spec ? "" : spec.err().to_string());
  spec->start_timeout = std::chrono::seconds(60);
  return *spec;
}

/// Relative L2 distance of `got` from `want` (float64).
double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double diff = 0, norm = 0;
  for (std::size_t j = 0; j < want.size() && j < got.size(); ++j) {
    const double d = static_cast<double>(got[j]) - want[j];
    diff += d * d;
    norm += static_cast<double>(want[j]) * want[j];
  }
  return std::sqrt(diff / norm);
}

/// The reference engine's logits for position `k` of `r` given the tokens `got` the cluster
/// produced before it (teacher forcing: a throughput-mode run may pick other tokens than the
/// reference near a tie, and every later row then depends on the cluster's own tokens).
std::vector<float> reference_logits_at(const dataplane::cluster_spec& spec, const client::request& r,
                                       const std::vector<std::int32_t>& got, std::size_t k) {
  client::request q = r;
  q.prompt.insert(q.prompt.end(), got.begin(), got.begin() + static_cast<std::ptrdiff_t>(k));
  q.max_new_tokens = 1;
  q.logits_rows = 1;
  q.stop_ids.clear();
  auto want = reference_result(spec, q);
  EXPECT_EQ(want.logits.size(), 1u);
  return want.logits.empty() ? std::vector<float>{} : want.logits[0];
}

// Not bitwise (partials are summed per worker), so every request must finish and its first logits
// row must stay within the data plane's stated tolerance of the reference engine's (relative L2
// < 0.1 for sliced bf16 partials).
TEST(cluster, sliced_shared_expert_in_throughput_mode_stays_within_tolerance) {
  const auto spec = sliced_2a3f_spec();
  int sliced_layers = 0;
  for (std::size_t f = 0; f < spec.ffn_workers.size(); ++f)
    for (const auto& sl : spec.placement.assignment_of(static_cast<int>(f)).shared_slices)
      sliced_layers += sl.count > 0 ? 1 : 0;
  EXPECT_GT(sliced_layers, 0) << "the example's sliced shared expert did not reach the FFN workers";
  auto c = start(spec);
  ASSERT_TRUE(c);
  std::vector<client::request> reqs;
  std::vector<client::request_id> ids;
  for (int i = 0; i < 6; ++i) {
    reqs.push_back(make_request(200 + i, 3 + 9 * i, 4, false));
    reqs.back().logits_rows = 1;
    auto id = c->submit(reqs.back());
    ASSERT_TRUE(id.has_value()) << id.err().to_string();
    ids.push_back(*id);
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r = c->wait(ids[i], 60s);
    ASSERT_TRUE(r.has_value()) << "request " << i << ": " << r.err().to_string();
    EXPECT_EQ(r->tokens.size(), 4u) << "request " << i;
    auto want = reference_result(spec, reqs[i]);
    ASSERT_EQ(r->logits.size(), 1u);
    ASSERT_EQ(want.logits.size(), 1u);
    ASSERT_EQ(r->logits[0].size(), want.logits[0].size());
    EXPECT_LT(relative_l2(r->logits[0], want.logits[0]), 0.1) << "request " << i;
  }
}

/// Every logits row `r` kept is within tolerance of the reference's row for the same preceding
/// tokens; returns the number of rows compared. A re-admitted request keeps the rows from where it
/// resumed (index tokens - rows on), none when it had ended before the failure but its end record
/// was lost with the epoch (the coordinator ends it from the tokens it kept).
std::size_t expect_rows_within_tolerance(const dataplane::cluster_spec& spec, const client::request& req,
                                         const client::response& r, const std::string& what) {
  EXPECT_LE(r.logits.size(), r.tokens.size()) << what;
  if (r.logits.size() > r.tokens.size()) return 0;
  const std::size_t first = r.tokens.size() - r.logits.size();
  for (std::size_t j = 0; j < r.logits.size(); ++j) {
    const auto want = reference_logits_at(spec, req, r.tokens, first + j);
    EXPECT_LT(relative_l2(r.logits[j], want), 0.1) << what << ", position " << first + j;
  }
  return r.logits.size();
}

// An FFN worker of the sliced throughput topology dies mid-run: its slice of every layer's shared
// expert merges into an adjacent survivor's (and its whole units, f2's dense MLPs, move whole), a
// new epoch starts, and every request finishes with every logits row computed after the recovery
// within tolerance of the reference engine's.
void expect_sliced_recovery_within_tolerance(const char* victim) {
  auto spec = sliced_2a3f_spec();
  spec.restart_workers = false;  // the placement without the victim is what is checked here
  auto c = start(spec);
  ASSERT_TRUE(c);
  constexpr std::int64_t new_tokens = 12;
  std::mutex m;
  std::map<client::request_id, std::size_t> streamed;
  std::vector<client::request> reqs;
  std::vector<client::request_id> ids;
  for (int i = 0; i < 6; ++i) {
    reqs.push_back(make_request(300 + i, 8 + 5 * i, new_tokens, i % 2 == 0));
    reqs.back().logits_rows = new_tokens;
    auto id = c->submit(reqs.back(), [&](const client::token& t) {
      std::lock_guard lock(m);
      ++streamed[t.id];
    });
    ASSERT_TRUE(id.has_value()) << id.err().to_string();
    ids.push_back(*id);
  }
  for (int spins = 0; spins < 3000; ++spins) {
    {
      std::lock_guard lock(m);
      if (streamed[ids[0]] >= 3) break;
    }
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(client::kill_worker(*c, victim).has_value());
  std::size_t rows = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r = c->wait(ids[i], 60s);
    ASSERT_TRUE(r.has_value()) << "request " << i << ": " << r.err().to_string();
    EXPECT_EQ(r->tokens.size(), static_cast<std::size_t>(new_tokens)) << "request " << i;
    rows += expect_rows_within_tolerance(spec, reqs[i], *r, "request " + std::to_string(i));
  }
  EXPECT_GT(rows, 0u);
  auto st = c->status();
  ASSERT_TRUE(st.has_value()) << st.err().to_string();
  EXPECT_TRUE(st->ready);
  EXPECT_GE(st->epoch, 2u);  // a witness's transport error may retry an epoch before the loss is known
  for (const auto& w : st->workers)
    EXPECT_EQ(w.state, w.name == victim ? worker_state::failed : worker_state::ready) << w.name;
  // A request admitted after the recovery runs wholly under the new placement: all its rows.
  auto later = make_request(399, 21, new_tokens, false);
  later.logits_rows = new_tokens;
  auto id = c->submit(later);
  ASSERT_TRUE(id.has_value()) << id.err().to_string();
  auto r = c->wait(*id, 60s);
  ASSERT_TRUE(r.has_value()) << r.err().to_string();
  ASSERT_EQ(r->logits.size(), static_cast<std::size_t>(new_tokens));
  expect_rows_within_tolerance(spec, later, *r, "request after recovery");
}

TEST(cluster, a_lost_ffn_worker_holding_a_middle_slice_is_recovered_within_tolerance) {
  expect_sliced_recovery_within_tolerance("f1");
}

TEST(cluster, a_lost_ffn_worker_holding_an_end_slice_and_whole_units_is_recovered_within_tolerance) {
  expect_sliced_recovery_within_tolerance("f2");
}

// More requests than the workers' batches hold: the coordinator's queue feeds them in as others
// finish (continuous batching), and each still gets the reference engine's tokens.
TEST(cluster, a_queue_longer_than_the_batches_drains_with_the_reference_tokens) {
  const auto spec = example_spec("2a2f", 3, [](dataplane::cluster_spec& s) {
    for (auto& a : s.attention_workers) a.max_batch = 3;
  });
  auto c = start(spec);
  ASSERT_TRUE(c);
  std::vector<client::request> reqs;
  std::vector<client::request_id> ids;
  for (int i = 0; i < 30; ++i) {
    reqs.push_back(make_request(100 + i, 1 + (i * 7) % 45, 1 + (i * 5) % 11, i % 3 == 0));
    auto id = c->submit(reqs.back());
    ASSERT_TRUE(id.has_value()) << id.err().to_string();
    ids.push_back(*id);
  }
  auto st = c->status();
  ASSERT_TRUE(st.has_value());
  EXPECT_GT(st->queued + st->finished, 0);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r = c->wait(ids[i], 60s);
    ASSERT_TRUE(r.has_value()) << "request " << i << ": " << r.err().to_string();
    EXPECT_EQ(r->tokens, reference_result(spec, reqs[i]).tokens) << "request " << i;
  }
}

TEST(cluster, cancel_ends_the_request_and_frees_its_kv) {
  auto c = start(example_spec("1a1f", 3));
  ASSERT_TRUE(c);
  auto id = c->submit(make_request(1, 40, 1000, false));
  ASSERT_TRUE(id.has_value()) << id.err().to_string();
  auto first = c->next_token(*id, 30s);
  ASSERT_TRUE(first.has_value()) << first.err().to_string();
  auto before = c->status();
  ASSERT_TRUE(before.has_value());
  EXPECT_GT(before->workers[0].kv_blocks_used, 0);
  ASSERT_TRUE(c->cancel(*id).has_value());
  auto r = c->wait(*id, 5s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.err().code(), errc::cancelled) << r.err().to_string();
  // Tokens already streamed stay readable; then the iterator ends with the cancellation.
  for (;;) {
    auto t = c->next_token(*id, 5s);
    if (!t) {
      EXPECT_EQ(t.err().code(), errc::cancelled);
      break;
    }
  }
  // KV is freed at the next step boundary: status shows it.
  const auto until = clock_type::now() + 5s;
  std::int64_t used = -1;
  while (clock_type::now() < until) {
    auto st = c->status();
    ASSERT_TRUE(st.has_value());
    used = st->workers[0].kv_blocks_used;
    if (used == 0) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(used, 0);
  EXPECT_EQ(c->cancel(*id).err().code(), errc::invalid_argument);
}

TEST(cluster, a_finished_request_is_forgotten_on_demand) {
  auto c = start(example_spec("1a1f", 3));
  ASSERT_TRUE(c);
  auto running = c->submit(make_request(1, 10, 1000, false));
  ASSERT_TRUE(running.has_value()) << running.err().to_string();
  EXPECT_EQ(c->forget(*running).err().code(), errc::invalid_argument);  // still running: kept
  ASSERT_TRUE(c->cancel(*running).has_value());
  ASSERT_TRUE(c->forget(*running).has_value());
  EXPECT_EQ(c->wait(*running, 1s).err().code(), errc::invalid_argument);  // unknown now
  EXPECT_EQ(c->forget(*running).err().code(), errc::invalid_argument);

  auto done = c->submit(make_request(2, 8, 4, false));
  ASSERT_TRUE(done.has_value());
  auto r = c->wait(*done, 30s);
  ASSERT_TRUE(r.has_value()) << r.err().to_string();
  EXPECT_EQ(r->tokens.size(), 4u);
  ASSERT_TRUE(c->forget(*done).has_value());
  EXPECT_EQ(c->next_token(*done, 1s).err().code(), errc::invalid_argument);
  // The client goes on serving new requests.
  auto next = c->submit(make_request(3, 8, 4, false));
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(c->wait(*next, 30s).has_value());
}

TEST(cluster, a_full_queue_rejects_with_a_clear_error) {
  auto c = start(example_spec("1a1f", 3, [](dataplane::cluster_spec& s) {
    s.attention_workers[0].max_batch = 1;
    s.limits.queue = 1;
  }));
  ASSERT_TRUE(c);
  auto running = c->submit(make_request(1, 8, 1000, false));
  auto queued = c->submit(make_request(2, 8, 1000, false));
  ASSERT_TRUE(running.has_value());
  ASSERT_TRUE(queued.has_value());
  auto rejected = c->submit(make_request(3, 8, 4, false));
  ASSERT_FALSE(rejected.has_value());
  EXPECT_EQ(rejected.err().code(), errc::rejected);
  EXPECT_NE(rejected.err().message().find("queue"), std::string::npos) << rejected.err().message();
  auto st = c->status();
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->queued, 1);
  // Cancelling the running request lets the queued one in; it produces tokens.
  ASSERT_TRUE(c->cancel(*running).has_value());
  auto t = c->next_token(*queued, 30s);
  EXPECT_TRUE(t.has_value()) << t.err().to_string();
  ASSERT_TRUE(c->cancel(*queued).has_value());
}

TEST(cluster, invalid_requests_are_values) {
  auto c = start(example_spec("1a1f", 3));
  ASSERT_TRUE(c);
  client::request empty;
  EXPECT_EQ(c->submit(empty).err().code(), errc::invalid_argument);
  auto outside = make_request(1, 4, 4, false);
  outside.prompt[2] = 512;  // vocab is 512
  auto e = c->submit(outside);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.err().code(), errc::invalid_argument);
  EXPECT_NE(e.err().message().find("vocabulary"), std::string::npos) << e.err().message();
  auto zero = make_request(1, 4, 0, false);
  EXPECT_EQ(c->submit(zero).err().code(), errc::invalid_argument);
  auto bad_p = make_request(1, 4, 4, true);
  bad_p.sampling.top_p = 0.0f;
  EXPECT_EQ(c->submit(bad_p).err().code(), errc::invalid_argument);
  auto too_long = make_request(1, 2048, 4, false);
  EXPECT_EQ(c->submit(too_long).err().code(), errc::rejected);
  EXPECT_EQ(c->wait(12345, 10ms).err().code(), errc::invalid_argument);
  EXPECT_EQ(c->cancel(12345).err().code(), errc::invalid_argument);
  // The cluster still serves.
  auto ok = c->submit(make_request(1, 4, 2, false));
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(c->wait(*ok, 30s).has_value());
  auto timeout = c->wait(*ok + 1, 1ms);
  EXPECT_EQ(timeout.err().code(), errc::invalid_argument);
}

TEST(cluster, wait_times_out_and_the_request_goes_on) {
  auto c = start(example_spec("1a1f", 3));
  ASSERT_TRUE(c);
  auto id = c->submit(make_request(1, 30, 64, false));
  ASSERT_TRUE(id.has_value());
  auto early = c->wait(*id, 1ms);
  ASSERT_FALSE(early.has_value());
  EXPECT_EQ(early.err().code(), errc::timeout);
  EXPECT_TRUE(c->wait(*id, 60s).has_value());
}

TEST(cluster, connect_to_a_closed_port_is_unavailable_within_the_timeout) {
  // A port that was free a moment ago: bind, read it, close.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  const auto t0 = clock_type::now();
  auto c = client::cluster::connect("127.0.0.1", ntohs(a.sin_port), 2s);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.err().code(), errc::unavailable) << c.err().to_string();
  EXPECT_LT(clock_type::now() - t0, 3s);
}

TEST(cluster, embed_reports_bad_files_as_values) {
  auto missing = client::cluster::embed("/nonexistent/topology.yaml");
  ASSERT_FALSE(missing.has_value());
  client::embed_options o;
  o.transport = "carrier-pigeon";
  auto bad = client::cluster::embed(std::string(AFD_SOURCE_DIR) + "/deploy/examples/1a1f.yaml", o);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.err().code(), errc::invalid_argument);
}

// A worker on a device this process cannot use is refused at start, naming the worker, the device
// and the reason (no CUDA in the build, no driver, no such GPU): never a silent CPU run.
TEST(cluster, a_worker_on_an_unusable_device_is_refused_at_start) {
  for (const std::string role : {"attention", "ffn"}) {
    const std::string device = "cuda:0";
    if (kernels::probe_device(device)) GTEST_SKIP() << device << " is usable in this process";
    auto spec = example_spec("1a1f", 1, [&](dataplane::cluster_spec& s) {
      if (role == "attention")
        s.attention_workers[0].device = device;
      else
        s.ffn_workers[0].device = device;
    });
    const std::string worker = role == "attention" ? spec.attention_workers[0].name : spec.ffn_workers[0].name;
    const auto t0 = clock_type::now();
    auto c = client::embed_spec(spec);
    ASSERT_FALSE(c.has_value()) << role;
    const std::string& message = c.err().message();
    EXPECT_NE(message.find("worker '" + worker + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("device " + device), std::string::npos) << message;
    EXPECT_NE(message.find(kernels::probe_device(device).err().message()), std::string::npos) << message;
    EXPECT_LT(clock_type::now() - t0, 20s) << "refused at once, not after the start timeout";
  }
}

TEST(cluster, embed_from_a_topology_file) {
  client::embed_options o;
  o.model_path = tiny_model();
  o.transport = "loopback";
  auto c = client::cluster::embed(std::string(AFD_SOURCE_DIR) + "/deploy/examples/2a2f.yaml", o);
  ASSERT_TRUE(c.has_value()) << c.err().to_string();
  auto req = make_request(3, 12, 5, true);
  auto id = (*c)->submit(req);
  ASSERT_TRUE(id.has_value());
  auto r = (*c)->wait(*id, 30s);
  ASSERT_TRUE(r.has_value()) << r.err().to_string();
  EXPECT_EQ(r->tokens, reference_result(example_spec("2a2f", 3), req).tokens);
}

TEST(cluster, shutdown_is_clean_and_prompt) {
  (void)reference_result(example_spec("1a1f", 3), make_request(1, 4, 2, false));  // kernel pool started
  const auto threads_before = thread_count();
  const auto names_before = thread_names();
  SCOPED_TRACE("threads before: " + names_before);
  {
    auto c = start(example_spec("2a2f", 3));
    ASSERT_TRUE(c);
    auto id = c->submit(make_request(1, 20, 1000, false));
    ASSERT_TRUE(id.has_value());
    ASSERT_TRUE(c->next_token(*id, 30s).has_value());
    const auto t0 = clock_type::now();
    c->shutdown();
    EXPECT_LT(clock_type::now() - t0, 5s);
    // A request in flight ends with a value; calls after shutdown fail as values.
    auto r = c->wait(*id, 1s);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.err().code(), errc::unavailable);
    EXPECT_EQ(c->submit(make_request(1, 4, 2, false)).err().code(), errc::unavailable);
    EXPECT_EQ(c->status().err().code(), errc::unavailable);
    c->shutdown();  // idempotent
  }
  EXPECT_EQ(thread_count_settled(threads_before, 1s), threads_before) << thread_names();
  const auto t0 = clock_type::now();
  { auto c = start(example_spec("1a1f", 2)); }  // destructor alone
  EXPECT_LT(clock_type::now() - t0, 30s);
  EXPECT_EQ(thread_count_settled(threads_before, 1s), threads_before) << thread_names();
}

// Without restarts (a worker that never comes back), the requests wait spec.recovery_wait for a
// worker of the lost role and then end with an error naming the lost worker; nothing hangs.
void expect_worker_loss_fails_requests(const char* topology, const char* victim) {
  auto spec = example_spec(topology, 3);
  spec.restart_workers = false;
  spec.recovery_wait = 1500ms;
  auto c = start(spec);
  ASSERT_TRUE(c);
  std::vector<client::request_id> ids;
  for (int i = 0; i < 6; ++i) {
    auto id = c->submit(make_request(i, 10 + i, 1000, i % 2 == 0));
    ASSERT_TRUE(id.has_value());
    ids.push_back(*id);
  }
  ASSERT_TRUE(c->next_token(ids[0], 30s).has_value());
  ASSERT_TRUE(client::kill_worker(*c, victim).has_value());
  const auto t0 = clock_type::now();
  for (auto id : ids) {
    auto r = c->wait(id, 20s);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.err().code(), errc::unavailable) << r.err().to_string();
    EXPECT_NE(r.err().message().find(victim), std::string::npos) << r.err().message();
  }
  EXPECT_LT(clock_type::now() - t0, 12s);
  auto again = c->submit(make_request(1, 4, 2, false));
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.err().code(), errc::unavailable);
  auto st = c->status();
  ASSERT_TRUE(st.has_value());
  EXPECT_FALSE(st->ready);
  bool marked = false;
  for (const auto& w : st->workers)
    if (w.name == victim) marked = w.state == worker_state::failed;
  EXPECT_TRUE(marked);
  const auto t1 = clock_type::now();
  c.reset();
  EXPECT_LT(clock_type::now() - t1, 15s);
}

TEST(cluster, the_last_ffn_worker_killed_fails_pending_requests_without_hanging) {
  expect_worker_loss_fails_requests("1a1f", "f0");
}

TEST(cluster, the_last_attention_worker_killed_fails_pending_requests_without_hanging) {
  expect_worker_loss_fails_requests("1a1f", "a0");
}

// A worker lost, another of its role survives: a new epoch without it (an FFN worker's units move
// to the survivor), the requests in flight are re-admitted with their tokens so far, and every
// request ends with exactly the reference engine's tokens, streamed once each, in order.
void expect_recovery_keeps_the_reference_tokens(const char* victim) {
  const auto spec = example_spec("2a2f", 3);
  auto c = start(spec);
  ASSERT_TRUE(c);
  streaming_batch batch;
  batch.submit(*c, 6, 10, 5, 24);
  // Kill once the requests are under way.
  batch.wait_streaming(3);
  ASSERT_TRUE(client::kill_worker(*c, victim).has_value());
  batch.expect_reference_tokens(*c, spec, 60s);
  // The crashed worker is restarted, rejoins, and the cluster returns to its full capacity.
  auto full = wait_full_capacity(*c);
  ASSERT_TRUE(full.has_value()) << full.err().to_string();
  const client::cluster_status st = *full;
  EXPECT_TRUE(st.ready);
  EXPECT_GE(st.epoch, 3u);
  for (const auto& w : st.workers) {
    EXPECT_EQ(w.state, worker_state::ready) << w.name;
    if (w.name == victim) {
      EXPECT_EQ(w.rejoins, 1u);
    }
  }
  // The cluster goes on serving.
  auto later = make_request(9, 17, 6, true);
  auto id = c->submit(later);
  ASSERT_TRUE(id.has_value()) << id.err().to_string();
  auto r = c->wait(*id, 30s);
  ASSERT_TRUE(r.has_value()) << r.err().to_string();
  EXPECT_EQ(r->tokens, reference_result(spec, later).tokens);
}

TEST(cluster, a_lost_ffn_worker_is_replaced_and_requests_keep_the_reference_tokens) {
  expect_recovery_keeps_the_reference_tokens("f1");
}

TEST(cluster, a_lost_attention_worker_is_replaced_and_requests_keep_the_reference_tokens) {
  expect_recovery_keeps_the_reference_tokens("a0");
}

}  // namespace
}  // namespace afd::cluster_testing
