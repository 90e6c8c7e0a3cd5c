#include "runtime/core/error.hpp"

namespace afd {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::none: return "none";
    case errc::invalid_argument: return "invalid_argument";
    case errc::invalid_config: return "invalid_config";
    case errc::parse_error: return "parse_error";
    case errc::io_error: return "io_error";
    case errc::missing_tensor: return "missing_tensor";
    case errc::unexpected_tensor: return "unexpected_tensor";
    case errc::shape_mismatch: return "shape_mismatch";
    case errc::dtype_mismatch: return "dtype_mismatch";
    case errc::out_of_range: return "out_of_range";
    case errc::unsupported: return "unsupported";
    case errc::timeout: return "timeout";
    case errc::peer_failed: return "peer_failed";
    case errc::transport_error: return "transport_error";
    case errc::bad_message: return "bad_message";
    case errc::stale_epoch: return "stale_epoch";
    case errc::rejected: return "rejected";
    case errc::cancelled: return "cancelled";
    case errc::unavailable: return "unavailable";
    case errc::internal: return "internal";
  }
  return "unknown";
}

std::string error::to_string() const {
  std::string out = afd::to_string(code_);
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

}  // namespace afd
