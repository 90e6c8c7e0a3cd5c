#pragma once
/// The UCX (ucp) implementation of afd::transport. This header does not include UCX: callers
/// (actors, tests, the benchmark) see only the interface.
///
/// - Tag-matched messages; the sender's rank sits above the caller's 48-bit tag.
/// - Peer error handling (UCP_ERR_HANDLING_MODE_PEER): a failed peer fails every pending
///   operation to or from it with errc::peer_failed; waits take deadlines.
/// - Progress: busy-progress for transport_config::spin_us, then sleep on the worker's event fd.
/// - Device memory: passed straight to UCX when this UCX supports CUDA memory (asked at run
///   time), otherwise staged through pinned host buffers by device_memory_ops.

#include <memory>
#include <string>

#include "transport/transport.hpp"

namespace afd::transport {

/// Copies between device and pinned host memory for staging. Returns false on failure.
struct device_memory_ops {
  void* (*alloc_pinned)(std::size_t bytes) = nullptr;
  void (*free_pinned)(void* p) = nullptr;
  bool (*to_host)(void* host, const void* device, std::size_t bytes) = nullptr;
  bool (*to_device)(void* device, const void* host, std::size_t bytes) = nullptr;
};

/// The CUDA staging operations when this build has CUDA (AFD_ENABLE_CUDA), else null.
const device_memory_ops* cuda_staging_ops() noexcept;

/// Options beyond the shared transport_config.
struct ucx_options {
  /// Staging for device memory; null: cuda_staging_ops(). Tests pass host fakes.
  const device_memory_ops* staging = nullptr;
  /// Stage device memory even when UCX could take device pointers (for tests).
  bool force_staging = false;
};

/// Starts a UCX context and worker. Fails with invalid_config naming the setting when a network
/// device or transport name is wrong (ours, or UCX_NET_DEVICES / UCX_TLS from the environment).
expected<std::unique_ptr<transport>> make_ucx_transport(const transport_config& config,
                                                        const ucx_options& options = {});

/// The UCX library version, e.g. "1.13.1".
std::string ucx_version();

}  // namespace afd::transport
