// The CUDA entry points of a build without CUDA (nvcc was not found, or AFD_ENABLE_CUDA=OFF):
// every request for a CUDA device is refused with the reason, never run on the CPU instead.
#include "kernels/cuda_factory.hpp"

namespace afd::kernels::detail {

namespace {

error no_cuda(const std::string& device) {
  return error(errc::unsupported, "device " + device +
                                      ": this build of afd has no CUDA support (built without CUDA: nvcc was not "
                                      "found or AFD_ENABLE_CUDA was OFF at configure time)");
}

}  // namespace

expected<std::unique_ptr<backend>> make_cuda_backend(int, const std::string& device) { return no_cuda(device); }

expected<void> probe_cuda(int, const std::string& device) { return no_cuda(device); }

int cuda_devices() noexcept { return 0; }

}  // namespace afd::kernels::detail
