#include <gtest/gtest.h>

#include "transport/net_devices.hpp"

namespace {

using namespace afd::transport;

TEST(net_devices, loopback_interface_exists_and_is_accepted) {
  auto names = network_interfaces();
  ASSERT_FALSE(names.empty());
  EXPECT_NE(std::find(names.begin(), names.end(), "lo"), names.end());
  EXPECT_TRUE(validate_net_devices("lo", "net_devices"));
  EXPECT_TRUE(validate_net_devices("all", "net_devices"));
}

TEST(net_devices, missing_interface_is_named_with_the_alternatives) {
  auto r = validate_net_devices("lo, eth9", "net_devices");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code(), afd::errc::invalid_config);
  const std::string& m = r.err().message();
  EXPECT_NE(m.find("network device \"eth9\" does not exist"), std::string::npos) << m;
  EXPECT_NE(m.find("available: "), std::string::npos) << m;
  EXPECT_NE(m.find("lo"), std::string::npos) << m;
  EXPECT_FALSE(validate_net_devices("mlx5_9:1", "UCX_NET_DEVICES"));
  EXPECT_FALSE(validate_net_devices("", "net_devices"));
}

TEST(net_devices, transports_are_checked_by_name) {
  EXPECT_TRUE(validate_tls("tcp,sm,self", "tls"));
  EXPECT_TRUE(validate_tls("^ud,rc", "tls"));
  auto r = validate_tls("tcp,tpc", "UCX_TLS");
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message().find("unknown UCX transport \"tpc\" (UCX_TLS)"), std::string::npos)
      << r.err().message();
  EXPECT_EQ(split_list(" a, b,,c "), (std::vector<std::string>{"a", "b", "c"}));
}

}  // namespace
