// A cluster across processes: the coordinator and the attention workers here, each FFN worker in
// a process of its own (UCX data plane, CAF middleman control plane). Killing one FFN process
// is detected through the monitor (remote link lost); the cluster recovers on the survivor and
// every request still ends with the reference engine's tokens.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/coordinator.hpp"
#include "actors/messages.hpp"
#include "actors/worker.hpp"
#include "tests/cluster/test_cluster.hpp"

namespace afd::cluster_testing {
namespace {

using namespace std::chrono_literals;

/// A child process killed and reaped with its owner.
class child {
 public:
  explicit child(std::vector<std::string> argv) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~child() { kill(); }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

TEST(multiproc_cluster, a_killed_ffn_process_is_recovered_from_with_the_reference_tokens) {
  const std::string topology = std::string(AFD_SOURCE_DIR) + "/deploy/examples/2a2f.yaml";
  auto spec = client::load_cluster_spec(topology, tiny_model());
  ASSERT_TRUE(spec.has_value()) << spec.err().to_string();
  caf::actor_system_config cfg;
  actors::register_message_types(cfg);
  actors::configure_scheduler(cfg, 2);
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto coordinator = actors::start_coordinator(sys, *spec, 0, "127.0.0.1");
  ASSERT_TRUE(coordinator.has_value()) << coordinator.err().to_string();
  const std::string port = std::to_string(coordinator->port);
  std::vector<caf::actor> local;
  for (const auto* name : {"a0", "a1"}) {
    auto w = actors::spawn_worker(sys, *spec, name, coordinator->handle);
    ASSERT_TRUE(w.has_value()) << w.err().to_string();
    local.push_back(*w);
  }
  child f0({AFD_WORKER_PROCESS, topology, tiny_model(), port, "f0"});
  child f1({AFD_WORKER_PROCESS, topology, tiny_model(), port, "f1"});
  auto c = client::cluster::connect("127.0.0.1", coordinator->port, 5s);
  ASSERT_TRUE(c.has_value()) << c.err().to_string();
  bool ready = false;
  for (int i = 0; i < 1500 && !ready; ++i) {
    auto st = (*c)->status();
    ASSERT_TRUE(st.has_value()) << st.err().to_string();
    ready = st->ready;
    if (!ready) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(ready);
  std::vector<client::request> reqs;
  std::vector<client::request_id> ids;
  for (int i = 0; i < 4; ++i) {
    reqs.push_back(make_request(i, 6 + 9 * i, 30, i % 2 == 1));
    auto id = (*c)->submit(reqs.back());
    ASSERT_TRUE(id.has_value()) << id.err().to_string();
    ids.push_back(*id);
  }
  for (int k = 0; k < 3; ++k) ASSERT_TRUE((*c)->next_token(ids[0], 30s).has_value());
  f1.kill();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r = (*c)->wait(ids[i], 60s);
    ASSERT_TRUE(r.has_value()) << "request " << i << ": " << r.err().to_string();
    EXPECT_EQ(r->tokens, reference_result(*spec, reqs[i]).tokens) << "request " << i;
  }
  auto st = (*c)->status();
  ASSERT_TRUE(st.has_value());
  EXPECT_GE(st->epoch, 2u);  // a witness's transport error may retry an epoch before the loss is known
  ASSERT_TRUE((*c)->stop_cluster().has_value());
  (*c).reset();
}

}  // namespace
}  // namespace afd::cluster_testing
