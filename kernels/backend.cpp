// make_backend: parses the device name, builds the backend and wraps it in the checking layer.
#include "kernels/backend.hpp"

#include <charconv>

#include "kernels/cuda_factory.hpp"

namespace afd::kernels {

namespace {

/// "cuda:N" -> N; -1 for anything else ("cuda", "cuda:", "cuda:x", "cuda:-1").
int cuda_ordinal(std::string_view device) {
  constexpr std::string_view prefix = "cuda:";
  if (device.substr(0, prefix.size()) != prefix || device.size() == prefix.size()) return -1;
  int ordinal = -1;
  const char* first = device.data() + prefix.size();
  const char* last = device.data() + device.size();
  auto [end, ec] = std::from_chars(first, last, ordinal);
  if (ec != std::errc() || end != last || ordinal < 0) return -1;
  return ordinal;
}

error unknown_device(std::string_view device) {
  return fail(errc::invalid_argument, "device '", device, "' is not 'cpu' or 'cuda:N' (N a GPU index)");
}

}  // namespace

const char* to_string(op_status s) noexcept {
  switch (s) {
    case op_status::ok: return "ok";
    case op_status::invalid_argument: return "invalid_argument";
    case op_status::unsupported: return "unsupported";
    case op_status::failed: return "failed";
  }
  return "unknown";
}

void require(op_status s, const backend& b) {
  if (s == op_status::ok) [[likely]]
    return;
  throw op_failure("kernel backend " + b.name() + " on " + b.device() + ": " + to_string(s) + ": " + b.last_error());
}

expected<std::unique_ptr<backend>> make_backend(std::string_view device) {
  if (device == "cpu") return make_checked_backend(make_cpu_backend());
  const int ordinal = cuda_ordinal(device);
  if (ordinal < 0) return unknown_device(device);
  auto cuda = detail::make_cuda_backend(ordinal, std::string(device));
  if (!cuda) return std::move(cuda).err();
  return make_checked_backend(std::move(*cuda));
}

expected<void> probe_device(std::string_view device) {
  if (device == "cpu") return {};
  const int ordinal = cuda_ordinal(device);
  if (ordinal < 0) return unknown_device(device);
  return detail::probe_cuda(ordinal, std::string(device));
}

std::vector<std::string> available_devices() {
  std::vector<std::string> out{"cpu"};
  const int n = detail::cuda_devices();
  for (int i = 0; i < n; ++i)
    if (probe_device("cuda:" + std::to_string(i))) out.push_back("cuda:" + std::to_string(i));
  return out;
}

}  // namespace afd::kernels
