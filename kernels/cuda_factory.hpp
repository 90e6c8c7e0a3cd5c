#pragma once
/// Internal: how make_backend reaches the CUDA backend. Defined by kernels/cuda/cuda_backend.cpp in
/// builds with CUDA and by kernels/no_cuda.cpp otherwise (CMake compiles one of the two).

#include <memory>
#include <string>

#include "kernels/backend.hpp"

namespace afd::kernels::detail {

/// The (unchecked) CUDA backend on device `ordinal`, or why not (no CUDA in the build, no driver,
/// no such device, compute capability below 8.0). `device` is the name to put in messages.
expected<std::unique_ptr<backend>> make_cuda_backend(int ordinal, const std::string& device);

/// The same checks without creating anything.
expected<void> probe_cuda(int ordinal, const std::string& device);

/// How many CUDA devices this process can use (0 without CUDA in the build).
int cuda_devices() noexcept;

}  // namespace afd::kernels::detail
