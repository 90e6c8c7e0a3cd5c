#include "transport/net_devices.hpp"

#include <algorithm>
#include <array>
#include <filesystem>

#include <ifaddrs.h>

namespace afd::transport {

namespace {

std::vector<std::string> list_dir(const char* path) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "(none)" : s;
}

// The transport and alias names UCX 1.x accepts in UCX_TLS.
constexpr std::array known_tls = {
    "all",   "self",     "sm",       "shm",      "posix",  "sysv",     "cma",       "knem",
    "xpmem", "mm",       "tcp",      "sockcm",   "rdmacm", "ib",       "rc",        "rc_v",
    "rc_x",  "rc_mlx5",  "rc_verbs", "ud",       "ud_v",   "ud_x",     "ud_mlx5",   "ud_verbs",
    "dc",    "dc_x",     "dc_mlx5",  "cuda",     "cuda_copy", "cuda_ipc", "gdr_copy", "rocm",
    "rocm_copy", "rocm_ipc", "rocm_gdr", "ugni", "ugni_rdma", "ugni_udt", "ugni_smsg", "cuda_x"};

}  // namespace

std::vector<std::string> split_list(std::string_view list) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find(',', start);
    if (end == std::string_view::npos) end = list.size();
    std::string_view item = list.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) items.emplace_back(item);
    start = end + 1;
  }
  return items;
}

std::vector<std::string> network_interfaces() {
  std::vector<std::string> names;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
      if (a->ifa_name != nullptr) names.emplace_back(a->ifa_name);
    }
    ::freeifaddrs(list);
  }
  for (auto& n : list_dir("/sys/class/net")) names.push_back(n);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::vector<std::string> rdma_devices() { return list_dir("/sys/class/infiniband"); }

expected<void> validate_net_devices(std::string_view devices, std::string_view source) {
  std::vector<std::string> items = split_list(devices);
  if (items.empty()) {
    return fail(errc::invalid_config, "transport: ", source, " is empty; name a device or 'all'");
  }
  std::vector<std::string> nets = network_interfaces();
  std::vector<std::string> rdma = rdma_devices();
  for (const std::string& item : items) {
    if (item == "all") continue;
    std::string base = item.substr(0, item.find(':'));  // "mlx5_0:1" names port 1 of mlx5_0
    bool found = std::find(nets.begin(), nets.end(), base) != nets.end() ||
                 std::find(rdma.begin(), rdma.end(), base) != rdma.end();
    if (!found) {
      std::vector<std::string> all = nets;
      all.insert(all.end(), rdma.begin(), rdma.end());
      return fail(errc::invalid_config, "transport: network device \"", item,
                  "\" does not exist (", source, "); available: ", join(all));
    }
  }
  return {};
}

expected<void> validate_tls(std::string_view tls, std::string_view source) {
  std::vector<std::string> items = split_list(tls);
  if (items.empty()) {
    return fail(errc::invalid_config, "transport: ", source, " is empty; name a transport or 'all'");
  }
  for (std::string item : items) {
    if (!item.empty() && item.front() == '^') item.erase(0, 1);   // "^tcp": all but tcp
    if (!item.empty() && item.back() == '\\') item.pop_back();    // "tcp\": auxiliary use only
    if (std::find(known_tls.begin(), known_tls.end(), item) == known_tls.end()) {
      std::vector<std::string> names(known_tls.begin(), known_tls.end());
      return fail(errc::invalid_config, "transport: unknown UCX transport \"", item, "\" (",
                  source, "); known: ", join(names));
    }
  }
  return {};
}

}  // namespace afd::transport
