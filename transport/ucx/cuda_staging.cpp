// Staging of device memory through pinned host buffers, for a UCX without CUDA support.
// Compiled with the CUDA runtime only when afd is built with CUDA (AFD_TRANSPORT_CUDA).
#include "transport/ucx/ucx_transport.hpp"

#if AFD_TRANSPORT_CUDA
#include <cuda_runtime.h>
#endif

namespace afd::transport {

#if AFD_TRANSPORT_CUDA
namespace {

void* cuda_alloc_pinned(std::size_t bytes) {
  void* p = nullptr;
  return cudaHostAlloc(&p, bytes, cudaHostAllocDefault) == cudaSuccess ? p : nullptr;
}
void cuda_free_pinned(void* p) { cudaFreeHost(p); }
bool cuda_to_host(void* host, const void* device, std::size_t bytes) {
  return cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost) == cudaSuccess;
}
bool cuda_to_device(void* device, const void* host, std::size_t bytes) {
  return cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess;
}

constexpr device_memory_ops cuda_ops{cuda_alloc_pinned, cuda_free_pinned, cuda_to_host, cuda_to_device};

}  // namespace

const device_memory_ops* cuda_staging_ops() noexcept { return &cuda_ops; }
#else
const device_memory_ops* cuda_staging_ops() noexcept { return nullptr; }
#endif

}  // namespace afd::transport
