#pragma once
/// Validation of network-device and UCX-transport selections before anything is started, so that
/// a wrong setting is an error naming the culprit and the alternatives, never a hang.

#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::transport {

/// Network interfaces of this host (network namespace), sorted: "lo", "eth0", ...
std::vector<std::string> network_interfaces();
/// RDMA devices of this host ("mlx5_0"), from /sys/class/infiniband; often none.
std::vector<std::string> rdma_devices();

/// Checks a comma-separated device list ("eth0", "mlx5_0:1", "all"); `source` names where the
/// setting came from (for the message), e.g. "net_devices" or "UCX_NET_DEVICES".
expected<void> validate_net_devices(std::string_view devices, std::string_view source);

/// Checks a comma-separated UCX transport list ("tcp,sm", "^ud", "all") against the names UCX
/// knows.
expected<void> validate_tls(std::string_view tls, std::string_view source);

/// Splits "a,b, c" into {"a","b","c"}, dropping empty items.
std::vector<std::string> split_list(std::string_view list);

}  // namespace afd::transport
