#pragma once
/// Internal: turns a CUDA runtime error code into a launch_status, remembering its message.
/// Takes an int so that it is callable from .cu and .cpp files alike.

#include "kernels/cuda/cuda_kernels.hpp"

namespace afd::kernels::cuda::detail {

/// launch_status::ok for cudaSuccess (0); otherwise launch_failed, and last_launch_error() names it.
launch_status launch_result(int cuda_error) noexcept;

}  // namespace afd::kernels::cuda::detail
