// A cluster whose coordinator is published through CAF's middleman, reached by a client in
// another actor system through client::cluster::connect: every control message crosses a real
// TCP connection and CAF's serialization (the path `afd launch` processes use).

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/coordinator.hpp"
#include "actors/messages.hpp"
#include "actors/worker.hpp"
#include "tests/cluster/test_cluster.hpp"

namespace afd::cluster_testing {
namespace {

using namespace std::chrono_literals;

TEST(remote_cluster, a_connected_client_gets_the_reference_tokens) {
  const auto spec = example_spec("2a2f", 3);
  caf::actor_system_config cfg;
  actors::register_message_types(cfg);
  actors::configure_scheduler(cfg, 2);
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto coordinator = actors::start_coordinator(sys, spec, 0, "127.0.0.1");
  ASSERT_TRUE(coordinator.has_value()) << coordinator.err().to_string();
  ASSERT_GT(coordinator->port, 0);
  // Workers reach the coordinator by address too, as separate processes would.
  actors::worker_environment env{transport::loopback_fabric::create()};
  std::vector<caf::actor> workers;
  for (const auto& name : {"a0", "a1", "f0", "f1"}) {
    auto w = actors::start_worker(sys, spec, name, "127.0.0.1", coordinator->port, env);
    ASSERT_TRUE(w.has_value()) << w.err().to_string();
    workers.push_back(*w);
  }
  auto c = client::cluster::connect("127.0.0.1", coordinator->port, 5s);
  ASSERT_TRUE(c.has_value()) << c.err().to_string();
  // Ready once every worker has registered and loaded.
  bool ready = false;
  for (int i = 0; i < 600 && !ready; ++i) {
    auto st = (*c)->status();
    ASSERT_TRUE(st.has_value()) << st.err().to_string();
    ready = st->ready;
    if (!ready) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(ready);
  std::vector<client::request> reqs;
  std::vector<client::request_id> ids;
  for (int i = 0; i < 4; ++i) {
    reqs.push_back(make_request(i, 5 + 7 * i, 6, i % 2 == 1));
    reqs.back().logits_rows = i == 0 ? 2 : 0;
    auto id = (*c)->submit(reqs.back());
    ASSERT_TRUE(id.has_value()) << id.err().to_string();
    ids.push_back(*id);
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r = (*c)->wait(ids[i], 30s);
    ASSERT_TRUE(r.has_value()) << r.err().to_string();
    EXPECT_EQ(r->tokens, reference_result(spec, reqs[i]).tokens) << "request " << i;
    if (i == 0) {
      ASSERT_EQ(r->logits.size(), 2u);
      EXPECT_EQ(r->logits[0].size(), 512u);
    }
  }
  // Errors cross the process boundary as values with their code and message.
  client::request empty;
  auto e = (*c)->submit(empty);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.err().code(), errc::invalid_argument);
  EXPECT_NE(e.err().message().find("empty"), std::string::npos) << e.err().message();
  // stop_cluster stops the coordinator, which stops the workers.
  ASSERT_TRUE((*c)->stop_cluster().has_value());
  caf::scoped_actor self{sys};
  for (auto& w : workers) self->monitor(w);
  std::size_t downs = 0;
  self->receive_for(downs, workers.size())([](caf::down_msg&) {});
  EXPECT_EQ(downs, workers.size());
  c->reset();
}

TEST(remote_cluster, a_worker_not_in_the_topology_is_refused) {
  const auto spec = example_spec("1a1f", 1);
  caf::actor_system_config cfg;
  actors::register_message_types(cfg);
  actors::configure_scheduler(cfg, 2);
  caf::actor_system sys{cfg};
  auto coordinator = actors::spawn_coordinator(sys, spec);
  auto w = actors::spawn_worker(sys, spec, "zz", coordinator, {transport::loopback_fabric::create()});
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.err().code(), errc::invalid_argument);
  // A second worker under a registered name is refused by the coordinator and ends.
  actors::worker_environment env{transport::loopback_fabric::create()};
  auto first = actors::spawn_worker(sys, spec, "a0", coordinator, env);
  ASSERT_TRUE(first.has_value());
  caf::scoped_actor self{sys};
  actors::register_worker_msg dup;
  dup.role = 0;
  dup.name = "a0";
  std::this_thread::sleep_for(100ms);  // let the first one register
  afd::error refused;
  self->request(coordinator, 2s, dup).receive([](std::uint32_t) {}, [&](caf::error& err) {
    refused = actors::from_caf_error(err);
  });
  EXPECT_EQ(refused.code(), errc::invalid_argument);
  EXPECT_NE(refused.message().find("already registered"), std::string::npos) << refused.message();
  self->send_exit(coordinator, caf::exit_reason::user_shutdown);
  self->send_exit(*first, caf::exit_reason::user_shutdown);
}

}  // namespace
}  // namespace afd::cluster_testing
