// The embedded cluster over UCX instead of the loopback fabric (tcp/sm on this host): the same
// tokens as the reference engine.

#include <gtest/gtest.h>

#include "deploy/client/embedded.hpp"
#include "tests/cluster/test_cluster.hpp"

namespace afd::cluster_testing {
namespace {

using namespace std::chrono_literals;

TEST(ucx_cluster, tokens_equal_the_reference_engine) {
  auto spec = example_spec("2a2f", 3, [](dataplane::cluster_spec& s) {
    s.transport.type = dataplane::transport_settings::kind::ucx;
    s.transport.tls = "tcp,sm,self";
    s.transport.net_devices = "lo";
  });
  auto c = client::embed_spec(spec);
  ASSERT_TRUE(c.has_value()) << c.err().to_string();
  std::vector<client::request> reqs;
  std::vector<client::request_id> ids;
  for (int i = 0; i < 6; ++i) {
    reqs.push_back(make_request(i, 3 + 11 * i, 4 + i, i % 2 == 0));
    auto id = (*c)->submit(reqs.back());
    ASSERT_TRUE(id.has_value()) << id.err().to_string();
    ids.push_back(*id);
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r = (*c)->wait(ids[i], 60s);
    ASSERT_TRUE(r.has_value()) << r.err().to_string();
    EXPECT_EQ(r->tokens, reference_result(spec, reqs[i]).tokens) << "request " << i;
  }
}

}  // namespace
}  // namespace afd::cluster_testing
