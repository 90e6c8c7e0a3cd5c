#pragma once
/// Errors as values: one enum for every module, a message for the user, and expected<T>.
/// Kept free of CAF so that every public header compiles without it; the actors register
/// `errc` with CAF so that errors cross processes.

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace afd {

/// Every failure afd reports, across modules.
enum class errc : std::uint8_t {
  none = 0,
  invalid_argument,   ///< a caller passed a value outside the documented domain
  invalid_config,     ///< a config.json or topology field is missing, mistyped or inconsistent
  parse_error,        ///< a file is not well-formed (JSON, YAML, safetensors header)
  io_error,           ///< open/read/write/mmap failed
  missing_tensor,     ///< a tensor the model needs is absent from the checkpoint
  unexpected_tensor,  ///< the checkpoint holds a tensor the model does not know
  shape_mismatch,     ///< a tensor's shape differs from the one the config implies
  dtype_mismatch,     ///< a tensor's dtype is unsupported or not the one required
  out_of_range,       ///< an offset, index or size beyond its bound
  unsupported,        ///< valid input that this build cannot handle
  timeout,            ///< a deadline passed
  peer_failed,        ///< a remote worker or connection went away
  transport_error,    ///< the data plane failed for a reason other than a peer failure
  bad_message,        ///< a data-plane header failed validation
  stale_epoch,        ///< a message from an older cluster epoch
  rejected,           ///< admission refused (queue full, too long for the context)
  cancelled,          ///< the request was cancelled
  unavailable,        ///< the cluster or a worker is not reachable
  internal,           ///< a broken invariant inside afd
};

/// Stable lowercase name of an error code, e.g. "missing_tensor".
const char* to_string(errc code) noexcept;

/// An error code with a human-readable message naming what is wrong (file, tensor, field).
class error {
 public:
  error() = default;
  error(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  /// The error code; errc::none means "no error".
  errc code() const noexcept { return code_; }
  /// The message for the user.
  const std::string& message() const noexcept { return message_; }
  /// "code: message".
  std::string to_string() const;
  explicit operator bool() const noexcept { return code_ != errc::none; }

 private:
  errc code_ = errc::none;
  std::string message_;
};

/// Pieces of an error message: strings and numbers.
inline std::string to_message_part(const std::string& s) { return s; }
inline std::string to_message_part(std::string_view s) { return std::string(s); }
inline std::string to_message_part(const char* s) { return s; }
inline std::string to_message_part(char c) { return std::string(1, c); }
template <class Number>
  requires std::is_arithmetic_v<Number>
std::string to_message_part(Number n) {
  return std::to_string(n);
}

/// Builds an error; reads as `return fail(errc::io_error, "cannot open ", path);`.
template <class... Parts>
error fail(errc code, const Parts&... parts) {
  std::string message;
  (message.append(to_message_part(parts)), ...);
  return error{code, std::move(message)};
}

/// A value or an error (std::expected arrives with C++23).
template <class T>
class [[nodiscard]] expected {
 public:
  expected(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  expected(error err) : state_(std::in_place_index<1>, std::move(err)) {}

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const error& err() const& { return std::get<1>(state_); }
  error&& err() && { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, error> state_;
};

/// Success or an error, for operations without a value.
template <>
class [[nodiscard]] expected<void> {
 public:
  expected() = default;
  expected(error err) : err_(std::move(err)) {}
  bool has_value() const noexcept { return !err_; }
  explicit operator bool() const noexcept { return has_value(); }
  const error& err() const& { return err_; }
  error&& err() && { return std::move(err_); }

 private:
  error err_;
};

}  // namespace afd
