#pragma once
/// The UCX (ucp) implementation of afd::transport. This header does not include UCX: callers
/// (actors, tests, the benchmark) see only the interface.
///
/// - Tag-matched messages; the sender's rank sits above the caller's 48-bit tag.
/// - Failure handling: a failed peer fails every pending operation to or from it with
///   errc::peer_failed; waits take deadlines. UCX's error mode per connection follows
///   transport_config::errors (see settle_error_mode): both ends advertise what they accept in
///   their address and reach the same answer, as UCX requires.
/// - Progress: busy-progress for transport_config::spin_us, then sleep on the worker's event fd.
/// - Device memory: passed straight to UCX when this UCX supports CUDA memory (asked at run
///   time), otherwise staged through pinned host buffers by device_memory_ops.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

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

/// What one end of a UCX connection accepts for failure handling; carried in its address.
struct error_mode_offer {
  bool minimal_ok = false;              ///< this end may run UCX's minimal error mode
  std::array<std::uint8_t, 16> host{};  ///< which host (its boot id)
};

/// This end's offer. `tls` is the effective transport list (ours or UCX_TLS; "" for UCX's
/// default); the minimal mode is accepted only when no RDMA or CUDA transport can be used:
/// an explicit list of socket / shared-memory transports, or no RDMA device and no CUDA
/// memory support at all.
error_mode_offer make_error_mode_offer(error_mode configured, std::string_view tls,
                                       bool rdma_devices_present, bool cuda_memory,
                                       const std::array<std::uint8_t, 16>& host);

/// The mode for a connection between two offers: the same answer from either end. Minimal when
/// both accept it.
error_mode settle_error_mode(const error_mode_offer& a, const error_mode_offer& b) noexcept;

/// This host's identity for error_mode_offer::host (the kernel's boot id; the host name's hash
/// where that is missing).
std::array<std::uint8_t, 16> host_identity();

}  // namespace afd::transport
