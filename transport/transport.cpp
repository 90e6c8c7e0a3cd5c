#include "transport/transport.hpp"

namespace afd::transport {

const char* to_string(op_status s) noexcept {
  switch (s) {
    case op_status::pending: return "pending";
    case op_status::done: return "done";
    case op_status::error: return "error";
    case op_status::timeout: return "timeout";
  }
  return "unknown";
}

const char* to_string(error_mode m) noexcept {
  switch (m) {
    case error_mode::automatic: return "auto";
    case error_mode::peer: return "peer";
    case error_mode::minimal: return "minimal";
  }
  return "unknown";
}

expected<error_mode> parse_error_mode(std::string_view text, std::string_view source) {
  for (error_mode m : {error_mode::automatic, error_mode::peer, error_mode::minimal}) {
    if (text == to_string(m)) return m;
  }
  return fail(errc::invalid_config, "transport: ", source, " \"", text,
              "\" is not an error mode; use auto, peer or minimal");
}

op_status transport::wait(op_handle op, deadline until) noexcept {
  for (;;) {
    progress();
    op_status s = result(op).status;
    if (s != op_status::pending) return s;
    if (!wait_for_activity(until)) {
      s = result(op).status;
      return s == op_status::pending ? op_status::timeout : s;
    }
  }
}

op_status transport::wait_all(std::span<const op_handle> ops, deadline until) noexcept {
  for (;;) {
    progress();
    bool pending = false;
    for (const op_handle& op : ops) {
      op_status s = result(op).status;
      if (s == op_status::error) return s;
      if (s == op_status::pending) pending = true;
    }
    if (!pending) return op_status::done;
    if (!wait_for_activity(until)) {
      for (const op_handle& op : ops) {
        op_status s = result(op).status;
        if (s == op_status::error) return s;
        if (s == op_status::pending) return op_status::timeout;
      }
      return op_status::done;
    }
  }
}

error transport::describe(op_handle op, std::string_view what) const {
  op_result r = result(op);
  if (r.status == op_status::done) return {};
  if (r.status == op_status::pending)
    return fail(errc::timeout, "transport: ", what, " still pending at its deadline");
  return fail(r.code == errc::none ? errc::transport_error : r.code, "transport: ", what,
              " failed: ", afd::to_string(r.code));
}

}  // namespace afd::transport
