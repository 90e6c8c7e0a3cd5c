// Device management over the CUDA runtime API. Plain C++ (no device code), so it compiles fast.
#include <cuda_runtime_api.h>

#include <utility>

#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/launch_status.hpp"

namespace afd::kernels::cuda {

namespace {

error cuda_failure(cudaError_t e, const char* what) {
  return fail(errc::unavailable, what, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

}  // namespace

device_count_result cuda_device_count() noexcept {
  device_count_result result;
  try {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      // Without a driver or a device the runtime reports an error here; the error is sticky for
      // this call only, so clear it to keep later cudaGetLastError() calls meaningful.
      (void)cudaGetLastError();
      result.count = 0;
      result.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
      return result;
    }
    result.count = count;
    if (count == 0) result.reason = "cudaGetDeviceCount: no CUDA device";
  } catch (...) {
    result.count = 0;
    result.reason = "cudaGetDeviceCount: unexpected exception";
  }
  return result;
}

expected<device_properties> query_device(int ordinal) {
  const auto census = cuda_device_count();
  if (ordinal < 0 || ordinal >= census.count)
    return fail(errc::out_of_range, "CUDA device ", ordinal, " does not exist (",
                census.count, " devices", census.reason.empty() ? "" : "; ", census.reason, ")");
  cudaDeviceProp prop{};
  if (const cudaError_t e = cudaGetDeviceProperties(&prop, ordinal); e != cudaSuccess)
    return cuda_failure(e, "cudaGetDeviceProperties");
  device_properties p;
  p.ordinal = ordinal;
  p.name = prop.name;
  p.major = prop.major;
  p.minor = prop.minor;
  p.sm_count = prop.multiProcessorCount;
  p.global_memory = prop.totalGlobalMem;
  p.shared_memory_optin = prop.sharedMemPerBlockOptin;
  return p;
}

expected<void> use_device(int ordinal) {
  if (const cudaError_t e = cudaSetDevice(ordinal); e != cudaSuccess) return cuda_failure(e, "cudaSetDevice");
  return {};
}

expected<device_stream> device_stream::create(int ordinal) {
  if (auto ok = use_device(ordinal); !ok) return std::move(ok).err();
  cudaStream_t s = nullptr;
  if (const cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); e != cudaSuccess)
    return cuda_failure(e, "cudaStreamCreateWithFlags");
  device_stream out;
  out.handle_ = s;
  out.device_ = ordinal;
  return out;
}

device_stream::device_stream(device_stream&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)), device_(std::exchange(other.device_, -1)) {}

device_stream& device_stream::operator=(device_stream&& other) noexcept {
  if (this != &other) {
    if (handle_) cudaStreamDestroy(static_cast<cudaStream_t>(handle_));
    handle_ = std::exchange(other.handle_, nullptr);
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}

device_stream::~device_stream() {
  if (handle_) cudaStreamDestroy(static_cast<cudaStream_t>(handle_));
}

expected<void> device_stream::synchronize() const {
  if (const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)); e != cudaSuccess)
    return cuda_failure(e, "cudaStreamSynchronize");
  return {};
}

expected<device_buffer> device_buffer::allocate(std::size_t bytes) {
  device_buffer out;
  if (bytes == 0) return out;
  void* p = nullptr;
  if (const cudaError_t e = cudaMalloc(&p, bytes); e != cudaSuccess) {
    (void)cudaGetLastError();
    return fail(errc::unavailable, "cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(e));
  }
  out.data_ = p;
  out.size_ = bytes;
  return out;
}

device_buffer::device_buffer(device_buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

device_buffer& device_buffer::operator=(device_buffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

device_buffer::~device_buffer() {
  if (data_) cudaFree(data_);
}

namespace {

expected<void> copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, stream_handle stream,
                    const char* what) {
  if (bytes == 0) return {};
  if (!dst || !src) return fail(errc::invalid_argument, what, ": null pointer");
  if (const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, static_cast<cudaStream_t>(stream));
      e != cudaSuccess)
    return cuda_failure(e, what);
  return {};
}

}  // namespace

expected<void> copy_to_device(void* device_dst, const void* host_src, std::size_t bytes, stream_handle stream) {
  return copy(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream, "copy_to_device");
}

expected<void> copy_to_host(void* host_dst, const void* device_src, std::size_t bytes, stream_handle stream) {
  return copy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream, "copy_to_host");
}

expected<void> copy_on_device(void* dst, const void* src, std::size_t bytes, stream_handle stream) {
  return copy(dst, src, bytes, cudaMemcpyDeviceToDevice, stream, "copy_on_device");
}

expected<void> fill_zero(void* device_dst, std::size_t bytes, stream_handle stream) {
  if (bytes == 0) return {};
  if (const cudaError_t e = cudaMemsetAsync(device_dst, 0, bytes, static_cast<cudaStream_t>(stream));
      e != cudaSuccess)
    return cuda_failure(e, "fill_zero");
  return {};
}

// ---------------------------------------------------------------------------------------------

namespace {
thread_local const char* last_error_text = "";
}  // namespace

namespace detail {
launch_status launch_result(int cuda_error) noexcept {
  if (cuda_error == 0) return launch_status::ok;
  last_error_text = cudaGetErrorString(static_cast<cudaError_t>(cuda_error));
  return launch_status::launch_failed;
}
}  // namespace detail

const char* to_string(launch_status s) noexcept {
  switch (s) {
    case launch_status::ok: return "ok";
    case launch_status::invalid_argument: return "invalid_argument";
    case launch_status::unsupported: return "unsupported";
    case launch_status::launch_failed: return "launch_failed";
  }
  return "unknown";
}

const char* last_launch_error() noexcept { return last_error_text; }

expected<void> check(launch_status s, const char* op) {
  switch (s) {
    case launch_status::ok: return {};
    case launch_status::invalid_argument: return fail(errc::invalid_argument, "CUDA kernel ", op, ": invalid arguments");
    case launch_status::unsupported: return fail(errc::unsupported, "CUDA kernel ", op, ": unsupported shape or dtype");
    case launch_status::launch_failed:
      return fail(errc::internal, "CUDA kernel ", op, ": launch failed: ", last_launch_error());
  }
  return fail(errc::internal, "CUDA kernel ", op, ": unknown status");
}

}  // namespace afd::kernels::cuda
