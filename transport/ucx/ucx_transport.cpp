#include "transport/ucx/ucx_transport.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>

#include "transport/net_devices.hpp"
#include "transport/ucx/ucx_handles.hpp"

#include <ucs/debug/log_def.h>

namespace afd::transport {

namespace {

using namespace afd::transport::ucx;

constexpr std::uint32_t address_magic = 0x55444641u;  // "AFDU"
constexpr std::uint16_t address_version = 2;
// magic (4), version (2), rank (2), UCX address length (4), offer flags (4), host id (16),
// process id (4), pid namespace (8), reserved (4)
constexpr std::size_t address_prefix = 48;
constexpr std::uint32_t offer_minimal_ok = 1u << 0;

enum class op_kind : std::uint8_t { send, recv };

class ucx_impl;

struct ucx_peer {
  ucx_impl* owner = nullptr;
  peer_id id = 0;
  rank_t rank = 0;
  ucp_ep_h ep = nullptr;
  bool failed = false;
  bool sent = false;  // a send was posted: there may be something to flush
  error_mode mode = error_mode::peer;  // UCX's error mode on this endpoint
  int pidfd = -1;  // the peer's process, when it runs on this host in our pid namespace
  bool exited = false;  // failed because its process exited (seen through pidfd)
  ucs_status_t why = UCS_OK;
};

/// The pid namespace this process lives in (the inode of /proc/self/ns/pid; 0 if unknown).
std::uint64_t pid_namespace() {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

/// A file descriptor that becomes readable when process `pid` exits; -1 where the kernel has
/// no pidfd_open (before Linux 5.3) or the process is gone already.
int open_pidfd(std::int32_t pid) {
#ifdef SYS_pidfd_open
  long fd = ::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0);
  return fd < 0 ? -1 : static_cast<int>(fd);
#else
  (void)pid;
  return -1;
#endif
}

struct ucx_region {
  void* base = nullptr;      // what the caller registered (host or device)
  std::size_t size = 0;
  memory_kind kind = memory_kind::host;
  std::byte* staging = nullptr;  // pinned host copy of a staged device region
  mem_handle memh;
  ucs_memory_type_t mem_type = UCS_MEMORY_TYPE_HOST;
  bool live = false;
};

struct ucx_op {
  ucx_impl* owner = nullptr;
  bool in_use = false;
  bool orphan = false;  // released while UCX still owned the request
  std::uint32_t generation = 0;
  op_kind kind = op_kind::send;
  op_status status = op_status::pending;
  errc code = errc::none;
  peer_id peer = 0;
  std::size_t len = 0;
  std::size_t bytes = 0;
  void* request = nullptr;
  completion_fn on_done = nullptr;
  void* user = nullptr;
  // Staged receive: where the bytes go once they landed in pinned memory.
  void* device_dst = nullptr;
  const std::byte* staged_src = nullptr;
};

errc errc_of(ucs_status_t s, bool peer_failed) noexcept {
  switch (s) {
    case UCS_OK: return errc::none;
    case UCS_ERR_MESSAGE_TRUNCATED: return errc::bad_message;
    case UCS_ERR_CANCELED: return peer_failed ? errc::peer_failed : errc::cancelled;
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
      return errc::peer_failed;
    default: return peer_failed ? errc::peer_failed : errc::transport_error;
  }
}

/// Whether a UCX_TLS value may select posix/sysv shared memory.
bool uses_shared_memory(const std::string& tls) {
  if (tls.empty() || tls.front() == '^') return true;
  for (const std::string& t : split_list(tls)) {
    if (t == "all" || t == "sm" || t == "shm" || t == "mm" || t == "posix" || t == "sysv") return true;
  }
  return false;
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

/// UCX prints its warnings to stdout by default, which would corrupt the output of a program
/// whose stdout is data (`afd generate --json`). Every UCX log line goes to stderr instead, once
/// per process, whatever UCX_LOG_FILE says.
ucs_log_func_rc_t log_to_stderr(const char* file, unsigned line, const char* /*function*/, ucs_log_level_t level,
                                const ucs_log_component_config_t* /*comp*/, const char* format, va_list ap) {
  const char* base = std::strrchr(file, '/');
  char text[1024];
  std::vsnprintf(text, sizeof text, format, ap);
  std::fprintf(stderr, "UCX %s %s:%u %s\n", ucs_log_level_names[level], base ? base + 1 : file, line, text);
  return UCS_LOG_FUNC_RC_STOP;
}

void route_ucx_log_to_stderr() {
  static std::once_flag once;
  std::call_once(once, [] { ucs_log_push_handler(log_to_stderr); });
}

class ucx_impl final : public transport {
 public:
  ucx_impl(const transport_config& cfg, const ucx_options& opt) : cfg_(cfg), opt_(opt) {}
  ~ucx_impl() override {
    (void)shutdown(after(std::chrono::seconds(2)));
    for (ucx_peer& p : peers_) close_pidfd(p);
  }

  expected<void> start() {
    route_ucx_log_to_stderr();
    // Validate the selection first: a wrong device must be an error naming it, not a hang.
    std::string tls = cfg_.tls, tls_source = "tls";
    if (tls.empty()) {
      tls = env_or_empty("UCX_TLS");
      tls_source = "UCX_TLS";
    }
    std::string devices = cfg_.net_devices, dev_source = "net_devices";
    if (devices.empty()) {
      devices = env_or_empty("UCX_NET_DEVICES");
      dev_source = "UCX_NET_DEVICES";
    }
    if (!tls.empty()) {
      if (auto ok = validate_tls(tls, tls_source); !ok) return ok;
    }
    if (!devices.empty()) {
      if (auto ok = validate_net_devices(devices, dev_source); !ok) return ok;
    }
    tls_ = tls;
    selection_ = "TLS=" + (tls.empty() ? std::string("(UCX default)") : tls) +
                 " NET_DEVICES=" + (devices.empty() ? std::string("(all)") : devices);

    // Shared-memory transports take part in peer failure handling only when asked to; without
    // it UCX refuses them for endpoints that must report a dead peer. UCX 1.13 reads these
    // transport-level settings from the environment only (ucp_config_modify cannot reach them),
    // so set them there unless the user did.
    if (uses_shared_memory(tls)) {
      ::setenv("UCX_POSIX_ERROR_HANDLING", "y", 0);
      ::setenv("UCX_SYSV_ERROR_HANDLING", "y", 0);
    }
    ucp_config_t* raw_config = nullptr;
    if (ucs_status_t s = ucp_config_read(nullptr, nullptr, &raw_config); s != UCS_OK) {
      return fail(errc::transport_error, "transport: ucp_config_read: ", ucs_status_string(s));
    }
    config_handle config(raw_config);
    auto modify = [&](const char* name, const std::string& value) -> expected<void> {
      if (ucs_status_t s = ucp_config_modify(config.get(), name, value.c_str()); s != UCS_OK) {
        return fail(errc::invalid_config, "transport: UCX rejected ", name, "=", value, ": ",
                    ucs_status_string(s));
      }
      return {};
    };
    if (!cfg_.tls.empty()) {
      if (auto ok = modify("TLS", cfg_.tls); !ok) return ok;
    }
    if (!cfg_.net_devices.empty()) {
      if (auto ok = modify("NET_DEVICES", cfg_.net_devices); !ok) return ok;
    }
    if (cfg_.keepalive.count() > 0 && env_or_empty("UCX_KEEPALIVE_INTERVAL").empty()) {
      (void)modify("KEEPALIVE_INTERVAL", std::to_string(cfg_.keepalive.count()) + "ms");
    }

    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                        UCP_PARAM_FIELD_NAME;
    params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
    params.mt_workers_shared = 0;
    params.name = "afd";
    ucp_context_h raw_context = nullptr;
    if (ucs_status_t s = ucp_init(&params, config.get(), &raw_context); s != UCS_OK) {
      return fail(errc::invalid_config, "transport: UCX found no usable transport with ",
                  selection_, ": ", ucs_status_string(s),
                  "; network interfaces here: ", join(network_interfaces()),
                  " (ucx_info -d lists UCX's devices)");
    }
    context_ = context_handle(raw_context);

    ucp_context_attr_t attr{};
    attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
    if (ucp_context_query(context_.get(), &attr) == UCS_OK) {
      cuda_direct_ = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
    }
    staging_ = opt_.staging != nullptr ? opt_.staging : cuda_staging_ops();
    offer_ = make_error_mode_offer(cfg_.errors, tls_, !rdma_devices().empty(), cuda_direct_,
                                   host_identity());

    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    ucp_worker_h raw_worker = nullptr;
    if (ucs_status_t s = ucp_worker_create(context_.get(), &wp, &raw_worker); s != UCS_OK) {
      return fail(errc::transport_error, "transport: ucp_worker_create with ", selection_, ": ",
                  ucs_status_string(s));
    }
    worker_ = worker_handle(raw_worker);
    if (ucs_status_t s = ucp_worker_get_efd(worker_.get(), &efd_); s != UCS_OK) {
      return fail(errc::transport_error, "transport: ucp_worker_get_efd: ", ucs_status_string(s));
    }
    rebuild_poll_set();
    ucp_address_t* addr = nullptr;
    std::size_t addr_len = 0;
    if (ucs_status_t s = ucp_worker_get_address(worker_.get(), &addr, &addr_len); s != UCS_OK) {
      return fail(errc::transport_error, "transport: ucp_worker_get_address: ", ucs_status_string(s));
    }
    address_ = worker_address(worker_.get(), addr, addr_len);

    ops_.resize(cfg_.max_ops);
    free_.reserve(cfg_.max_ops);
    for (std::uint32_t i = cfg_.max_ops; i > 0; --i) free_.push_back(i - 1);
    for (ucx_op& o : ops_) o.owner = this;
    running_ = true;
    return {};
  }

  capabilities caps() const noexcept override {
    return {"ucx", true, cuda_direct_ && !opt_.force_staging,
            staging_ != nullptr && (!cuda_direct_ || opt_.force_staging)};
  }
  rank_t rank() const noexcept override { return cfg_.rank; }

  std::vector<std::byte> address() const override {
    std::vector<std::byte> a(address_prefix + address_.size());
    auto len = static_cast<std::uint32_t>(address_.size());
    std::uint32_t flags = offer_.minimal_ok ? offer_minimal_ok : 0u;
    std::memcpy(a.data(), &address_magic, 4);
    std::memcpy(a.data() + 4, &address_version, 2);
    std::memcpy(a.data() + 6, &cfg_.rank, 2);
    std::memcpy(a.data() + 8, &len, 4);
    std::memcpy(a.data() + 12, &flags, 4);
    std::memcpy(a.data() + 16, offer_.host.data(), offer_.host.size());
    const auto pid = static_cast<std::int32_t>(::getpid());
    const std::uint64_t ns = pid_namespace();
    std::memcpy(a.data() + 32, &pid, 4);
    std::memcpy(a.data() + 36, &ns, 8);
    std::memcpy(a.data() + address_prefix, address_.data(), address_.size());
    return a;
  }

  expected<peer_id> connect(std::span<const std::byte> blob) override {
    std::uint32_t magic = 0, len = 0, flags = 0;
    std::uint16_t version = 0;
    rank_t r = 0;
    if (blob.size() < address_prefix) {
      return fail(errc::invalid_argument, "transport: UCX address of ", blob.size(), " bytes is too short");
    }
    std::memcpy(&magic, blob.data(), 4);
    std::memcpy(&version, blob.data() + 4, 2);
    std::memcpy(&r, blob.data() + 6, 2);
    std::memcpy(&len, blob.data() + 8, 4);
    std::memcpy(&flags, blob.data() + 12, 4);
    error_mode_offer remote;
    remote.minimal_ok = (flags & offer_minimal_ok) != 0;
    std::memcpy(remote.host.data(), blob.data() + 16, remote.host.size());
    std::int32_t remote_pid = 0;
    std::uint64_t remote_ns = 0;
    std::memcpy(&remote_pid, blob.data() + 32, 4);
    std::memcpy(&remote_ns, blob.data() + 36, 8);
    if (magic != address_magic) return fail(errc::invalid_argument, "transport: not a UCX worker address");
    if (version != address_version) {
      return fail(errc::invalid_argument, "transport: UCX address version ", version, ", expected ",
                  address_version);
    }
    if (len != blob.size() - address_prefix) {
      return fail(errc::invalid_argument, "transport: UCX address of rank ", r, " is truncated");
    }
    if (!running_) return fail(errc::unavailable, "transport: connect after shutdown");
    auto& p = peers_.emplace_back();
    p.owner = this;
    p.id = static_cast<peer_id>(peers_.size() - 1);
    p.rank = r;
    p.mode = settle_error_mode(offer_, remote);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(blob.data() + address_prefix);
    // The callback is installed in both modes: UCX 1.13 calls it for a dropped connection in
    // the minimal mode too (tests/transport/multiproc_test.cpp checks that it still does).
    ep.err_mode = p.mode == error_mode::minimal ? UCP_ERR_HANDLING_MODE_NONE
                                                : UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &ucx_impl::on_peer_error;
    ep.err_handler.arg = &p;
    if (ucs_status_t s = ucp_ep_create(worker_.get(), &ep, &p.ep); s != UCS_OK) {
      p.failed = true;
      p.why = s;
      p.ep = nullptr;
      return fail(errc::unavailable, "transport: cannot reach rank ", r, " with ", selection_, ": ",
                  ucs_status_string(s));
    }
    // A peer process on this host is watched directly: UCX 1.13 notices nothing when a peer
    // on shared memory dies, and its exit makes the pidfd readable at once.
    if (remote.host == offer_.host && remote_ns != 0 && remote_ns == pid_namespace() &&
        remote_pid > 0 && remote_pid != static_cast<std::int32_t>(::getpid())) {
      p.pidfd = open_pidfd(remote_pid);
    }
    rebuild_poll_set();
    return p.id;
  }

  rank_t peer_rank(peer_id peer) const noexcept override {
    return peer < peers_.size() ? peers_[peer].rank : rank_t{0};
  }

  expected<region> register_memory(void* base, std::size_t bytes, memory_kind kind) override {
    if (!running_) return fail(errc::unavailable, "transport: register_memory after shutdown");
    if (base == nullptr || bytes == 0) {
      return fail(errc::invalid_argument, "transport: cannot register an empty region");
    }
    ucx_region& r = regions_.emplace_back();
    r.base = base;
    r.size = bytes;
    r.kind = kind;
    void* map_at = base;
    if (kind == memory_kind::device) {
      if (cuda_direct_ && !opt_.force_staging) {
        r.mem_type = UCS_MEMORY_TYPE_CUDA;
      } else if (staging_ != nullptr) {
        r.staging = static_cast<std::byte*>(staging_->alloc_pinned(bytes));
        if (r.staging == nullptr) {
          regions_.pop_back();
          return fail(errc::io_error, "transport: cannot allocate ", bytes,
                      " bytes of pinned staging memory");
        }
        map_at = r.staging;
      } else {
        regions_.pop_back();
        return fail(errc::unsupported,
                    "transport: device memory needs a UCX built with CUDA (this one, ", ucx_version(),
                    ", has none) or afd built with CUDA for staging through pinned host memory");
      }
    }
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                    UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    mp.address = map_at;
    mp.length = bytes;
    mp.memory_type = r.mem_type;
    ucp_mem_h memh = nullptr;
    if (ucs_status_t s = ucp_mem_map(context_.get(), &mp, &memh); s != UCS_OK) {
      if (r.staging != nullptr) staging_->free_pinned(r.staging);
      regions_.pop_back();
      return fail(errc::transport_error, "transport: ucp_mem_map of ", bytes, " bytes: ",
                  ucs_status_string(s));
    }
    r.memh = mem_handle(context_.get(), memh);
    r.live = true;
    return region{static_cast<std::uint32_t>(regions_.size() - 1)};
  }

  void deregister(region reg) noexcept override {
    if (reg.id >= regions_.size() || !regions_[reg.id].live) return;
    ucx_region& r = regions_[reg.id];
    r.memh.reset();
    if (r.staging != nullptr) staging_->free_pinned(r.staging);
    r.staging = nullptr;
    r.live = false;
  }

  op_status post_send(peer_id peer, std::uint64_t tag, region reg, std::size_t offset,
                      std::size_t bytes, op_handle& op, completion_fn on_done,
                      void* user) noexcept override {
    ucx_op* o = begin(op_kind::send, peer, op, on_done, user);
    if (o == nullptr) return op_status::error;
    ucx_region* r = check_range(reg, offset, bytes);
    if (r == nullptr) return reject(o, errc::out_of_range);
    if (peers_[peer].failed || peers_[peer].ep == nullptr) return reject(o, errc::peer_failed);
    void* src = static_cast<std::byte*>(r->base) + offset;
    if (r->staging != nullptr) {
      if (!staging_->to_host(r->staging + offset, src, bytes)) return reject(o, errc::transport_error);
      src = r->staging + offset;
    }
    o->len = bytes;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                     UCP_OP_ATTR_FIELD_MEMH | UCP_OP_ATTR_FIELD_MEMORY_TYPE;
    p.cb.send = &ucx_impl::on_send;
    p.user_data = o;
    p.memh = r->memh.get();
    p.memory_type = r->staging != nullptr ? UCS_MEMORY_TYPE_HOST : r->mem_type;
    std::uint64_t full = (std::uint64_t{cfg_.rank} << user_tag_bits) | (tag & user_tag_mask);
    peers_[peer].sent = true;
    ucs_status_ptr_t req = ucp_tag_send_nbx(peers_[peer].ep, src, bytes, full, &p);
    return started(o, req, bytes);
  }

  op_status post_recv(peer_id peer, std::uint64_t tag, region reg, std::size_t offset,
                      std::size_t capacity, op_handle& op, completion_fn on_done,
                      void* user) noexcept override {
    ucx_op* o = begin(op_kind::recv, peer, op, on_done, user);
    if (o == nullptr) return op_status::error;
    ucx_region* r = check_range(reg, offset, capacity);
    if (r == nullptr) return reject(o, errc::out_of_range);
    if (peers_[peer].failed) return reject(o, errc::peer_failed);
    void* dst = static_cast<std::byte*>(r->base) + offset;
    if (r->staging != nullptr) {
      o->device_dst = dst;
      o->staged_src = r->staging + offset;
      dst = r->staging + offset;
    }
    o->len = capacity;
    ucp_tag_recv_info_t info{};
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                     UCP_OP_ATTR_FIELD_MEMH | UCP_OP_ATTR_FIELD_MEMORY_TYPE |
                     UCP_OP_ATTR_FIELD_RECV_INFO | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    p.cb.recv = &ucx_impl::on_recv;
    p.user_data = o;
    p.memh = r->memh.get();
    p.memory_type = r->staging != nullptr ? UCS_MEMORY_TYPE_HOST : r->mem_type;
    // Completion always through the callback: UCX 1.13 can complete at once without filling
    // recv_info, and the received length is what header validation rests on.
    p.recv_info.tag_info = &info;
    std::uint64_t full = (std::uint64_t{peers_[peer].rank} << user_tag_bits) | (tag & user_tag_mask);
    ucs_status_ptr_t req = ucp_tag_recv_nbx(worker_.get(), dst, capacity, full, ~std::uint64_t{0}, &p);
    return started(o, req, info.length);
  }

  op_result result(op_handle op) const noexcept override {
    const ucx_op* o = find(op);
    if (o == nullptr) return {op_status::error, 0, errc::invalid_argument};
    return {o->status, o->bytes, o->code};
  }

  void release(op_handle op) noexcept override {
    ucx_op* o = find(op);
    if (o == nullptr) return;
    o->on_done = nullptr;
    if (o->request != nullptr) {
      // UCX still owns the request (pending, or failed by us while UCX holds it): cancel, and
      // free the slot from the completion callback.
      o->orphan = true;
      ucp_request_cancel(worker_.get(), o->request);
      return;
    }
    recycle(o);
  }

  std::size_t progress() noexcept override {
    if (!worker_) return 0;
    return ucp_worker_progress(worker_.get());
  }

  bool wait_for_activity(deadline until) noexcept override {
    if (!worker_) return clock::now() < until;
    const auto spin_end = clock::now() + std::chrono::microseconds(cfg_.spin_us);
    auto next_exit_check = clock::now() + std::chrono::milliseconds(10);
    for (;;) {
      if (ucp_worker_progress(worker_.get()) != 0) return true;
      auto now = clock::now();
      if (now >= until) return false;
      if (now >= spin_end) break;
      if (now >= next_exit_check && poll_set_.size() > 1) {
        // A long spin still notices a watched peer process that exited.
        next_exit_check = now + std::chrono::milliseconds(10);
        timespec zero{0, 0};
        if (::ppoll(poll_set_.data() + 1, poll_set_.size() - 1, &zero, nullptr) > 0) {
          poll_set_[0].revents = 0;
          reap_exited_peers();
          return true;
        }
      }
    }
    ucs_status_t s = ucp_worker_arm(worker_.get());
    if (s == UCS_ERR_BUSY) return true;  // events arrived meanwhile: progress again
    auto remaining = until - clock::now();
    if (remaining <= clock::duration::zero()) return false;
    // Wake at least every 100 ms so UCX's timers (keepalive) run while we sleep. A send that
    // UCX holds back (shared-memory FIFO full, rendezvous fragments queued) gets no wake-up:
    // ucp_worker_arm arms receive events only, and the peer draining its FIFO signals nobody.
    // So while a send is pending, nap briefly and progress again instead of sleeping 100 ms.
    auto cap = sends_pending() ? std::chrono::microseconds(100) : std::chrono::microseconds(100000);
    auto nap = std::min<clock::duration>(remaining, cap);
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(nap).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    int n = ::ppoll(poll_set_.data(), poll_set_.size(), &ts, nullptr);
    if (n > 0 && poll_set_.size() > 1) reap_exited_peers();
    return n > 0 || clock::now() < until;
  }

  /// The event fd, then the pidfd of every watched peer process.
  void rebuild_poll_set() {
    poll_set_.clear();
    poll_set_.push_back(pollfd{efd_, POLLIN, 0});
    for (const ucx_peer& p : peers_) {
      if (p.pidfd >= 0) poll_set_.push_back(pollfd{p.pidfd, POLLIN, 0});
    }
  }

  /// A watched peer process exited: fail the peer as UCX would, then close the endpoint at once
  /// so that UCX completes the sends it still holds for it (cancelled: peer_failed).
  void reap_exited_peers() noexcept {
    bool changed = false;
    for (std::size_t i = 1; i < poll_set_.size(); ++i) {
      if ((poll_set_[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      for (ucx_peer& p : peers_) {
        if (p.pidfd != poll_set_[i].fd) continue;
        close_pidfd(p);
        changed = true;
        if (p.failed) continue;
        p.exited = true;
        fail_peer(p, UCS_ERR_CONNECTION_RESET);
        close_endpoint(p);
        // In UCX's minimal mode the close does not complete a rendezvous send still waiting for
        // the dead receiver (UCX tracks no requests per endpoint there, and cannot cancel sends).
        // Fail it here; its slot stays UCX's until a callback that may never come (release()
        // leaves it alone): a few slots per dead peer.
        for (ucx_op& o : ops_) {
          if (o.in_use && o.peer == p.id && o.status == op_status::pending) {
            o.status = op_status::error;
            o.code = errc::peer_failed;
          }
        }
      }
    }
    if (changed) {
      try {
        rebuild_poll_set();
      } catch (...) {
        // Out of memory on a failure path: keep the event fd alone.
        poll_set_.resize(1);
      }
    }
  }

  /// Closes a peer's endpoint at once (no goodbye to the peer); UCX completes what it still
  /// holds for it as cancelled. A close that does not finish within a second is left to UCX.
  void close_endpoint(ucx_peer& p) noexcept {
    if (p.ep == nullptr) return;
    ucp_request_param_t cp{};
    cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(p.ep, &cp);
    p.ep = nullptr;
    if (UCS_PTR_IS_PTR(req)) {
      const auto give_up = after(std::chrono::seconds(1));
      while (ucp_request_check_status(req) == UCS_INPROGRESS && clock::now() < give_up) progress();
      ucp_request_free(req);
    }
  }

  static void close_pidfd(ucx_peer& p) noexcept {
    if (p.pidfd >= 0) ::close(p.pidfd);
    p.pidfd = -1;
  }

  /// Whether a send is still owned by UCX (it may be waiting for room, with no event to come).
  bool sends_pending() const noexcept {
    for (const ucx_op& o : ops_) {
      if (o.in_use && o.kind == op_kind::send && o.status == op_status::pending) return true;
    }
    return false;
  }

  std::string peer_setup(peer_id peer) const override {
    if (peer >= peers_.size()) return {};
    return std::string("UCX error mode ") + to_string(peers_[peer].mode);
  }

  bool peer_alive(peer_id peer) const noexcept override {
    return peer < peers_.size() && !peers_[peer].failed;
  }

  std::string peer_failure(peer_id peer) const override {
    if (peer >= peers_.size() || !peers_[peer].failed) return {};
    const ucx_peer& p = peers_[peer];
    if (p.exited) {
      return "peer rank " + std::to_string(p.rank) + " failed: its process exited";
    }
    return "peer rank " + std::to_string(p.rank) + " failed: " + ucs_status_string(p.why);
  }

  expected<void> shutdown(deadline until) override {
    if (!running_) return {};
    running_ = false;
    // Cancel receives still waiting, then let their callbacks run.
    for (ucx_op& o : ops_) {
      if (o.in_use && o.status == op_status::pending && o.request != nullptr && o.kind == op_kind::recv) {
        ucp_request_cancel(worker_.get(), o.request);
      }
    }
    progress();
    // Flush what we sent (so that a clean shutdown loses nothing), then close at once: a
    // graceful close would wait for peers that may be shutting down themselves.
    bool clean = true;
    std::vector<void*> flushing;
    for (ucx_peer& p : peers_) {
      // An endpoint that never sent has nothing to flush, and flushing it could wait for a
      // wire-up that needs the peer's attention.
      if (p.ep == nullptr || p.failed || !p.sent) continue;
      ucp_request_param_t fp{};
      ucs_status_ptr_t req = ucp_ep_flush_nbx(p.ep, &fp);
      if (UCS_PTR_IS_PTR(req)) flushing.push_back(req);
    }
    while (!flushing.empty()) {
      progress();
      std::erase_if(flushing, [](void* req) {
        if (ucp_request_check_status(req) == UCS_INPROGRESS) return false;
        ucp_request_free(req);
        return true;
      });
      if (flushing.empty()) break;
      if (clock::now() >= until) {
        for (void* req : flushing) ucp_request_free(req);  // released; UCX finishes them
        flushing.clear();
        clean = false;
        break;
      }
      wait_for_activity(std::min(until, after(std::chrono::milliseconds(10))));
    }
    // Messages that arrived and will never be received (a peer's last dispatches of an epoch
    // that ended here first) are taken off the worker before it is destroyed: discarded on
    // purpose rather than reported by UCX as unmatched.
    drain_unexpected(until);
    for (ucx_peer& p : peers_) close_endpoint(p);
    progress();  // completions of operations that the closes cancelled
    drain_unexpected(std::min(until, after(std::chrono::milliseconds(50))));
    for (ucx_op& o : ops_) {
      if (!o.in_use) continue;
      if (o.status == op_status::pending) {
        o.status = op_status::error;
        o.code = errc::cancelled;
      }
      o.request = nullptr;  // the worker goes away: nothing of UCX's is left to wait for
      if (o.orphan) recycle(&o);
    }
    for (std::uint32_t i = 0; i < regions_.size(); ++i) deregister(region{i});
    address_.reset();
    worker_.reset();
    context_.reset();
    if (!clean) {
      return fail(errc::timeout, "transport: shutdown deadline passed before every connection "
                                 "was flushed; closed anyway");
    }
    return {};
  }

 private:
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  }

  /// Receives and discards every message waiting unmatched on the worker, until none is left or
  /// `until` passes (a rendezvous whose sender is gone is cancelled).
  void drain_unexpected(deadline until) {
    std::vector<std::byte> sink;
    for (;;) {
      ucp_tag_recv_info_t info{};
      ucp_tag_message_h msg = ucp_tag_probe_nb(worker_.get(), 0, 0, 1, &info);
      if (msg == nullptr) return;
      sink.resize(std::max<std::size_t>(sink.size(), std::max<std::size_t>(info.length, 1)));
      ucp_request_param_t rp{};
      ucs_status_ptr_t req = ucp_tag_msg_recv_nbx(worker_.get(), sink.data(), info.length, msg, &rp);
      if (!UCS_PTR_IS_PTR(req)) continue;  // completed at once (or failed): nothing to wait for
      while (ucp_request_check_status(req) == UCS_INPROGRESS) {
        progress();
        if (clock::now() >= until) {
          ucp_request_cancel(worker_.get(), req);
          progress();
          break;
        }
      }
      ucp_request_free(req);
      if (clock::now() >= until) return;
    }
  }

  ucx_op* find(op_handle op) noexcept {
    if (op.slot >= ops_.size()) return nullptr;
    ucx_op& o = ops_[op.slot];
    return (o.in_use && !o.orphan && o.generation == op.generation) ? &o : nullptr;
  }
  const ucx_op* find(op_handle op) const noexcept { return const_cast<ucx_impl*>(this)->find(op); }

  ucx_op* begin(op_kind kind, peer_id peer, op_handle& op, completion_fn on_done, void* user) noexcept {
    op = {};
    if (free_.empty() || !running_) return nullptr;
    std::uint32_t slot = free_.back();
    free_.pop_back();
    ucx_op& o = ops_[slot];
    o.in_use = true;
    o.orphan = false;
    o.kind = kind;
    o.status = op_status::pending;
    o.code = errc::none;
    o.peer = peer;
    o.len = o.bytes = 0;
    o.request = nullptr;
    o.on_done = on_done;
    o.user = user;
    o.device_dst = nullptr;
    o.staged_src = nullptr;
    op = {slot, o.generation};
    if (peer >= peers_.size()) {
      reject(&o, errc::invalid_argument);
      return nullptr;
    }
    return &o;
  }

  ucx_region* check_range(region reg, std::size_t offset, std::size_t bytes) noexcept {
    if (reg.id >= regions_.size()) return nullptr;
    ucx_region& r = regions_[reg.id];
    if (!r.live || offset > r.size || bytes > r.size - offset) return nullptr;
    return &r;
  }

  static op_status reject(ucx_op* o, errc code) noexcept {
    o->status = op_status::error;
    o->code = code;
    return op_status::error;
  }

  op_status started(ucx_op* o, ucs_status_ptr_t req, std::size_t immediate_bytes) noexcept {
    if (req == nullptr) {
      finish(o, UCS_OK, immediate_bytes, false);
      return o->status;
    }
    if (UCS_PTR_IS_ERR(req)) {
      return reject(o, errc_of(UCS_PTR_STATUS(req), peers_[o->peer].failed));
    }
    // With UCP_OP_ATTR_FLAG_NO_IMM_CMPL, UCX runs the callback inside the call when the message
    // was already there (the request is freed by then), and still returns the request.
    if (o->status != op_status::pending) return o->status;
    o->request = req;
    return op_status::pending;
  }

  void recycle(ucx_op* o) noexcept {
    o->in_use = false;
    o->orphan = false;
    o->request = nullptr;
    ++o->generation;
    free_.push_back(static_cast<std::uint32_t>(o - ops_.data()));
  }

  /// Records a completion; `from_callback` says UCX called us (then the callback may run).
  void finish(ucx_op* o, ucs_status_t s, std::size_t bytes, bool from_callback) noexcept {
    o->request = nullptr;
    if (o->orphan) {
      recycle(o);
      return;
    }
    bool peer_failed = o->peer < peers_.size() && peers_[o->peer].failed;
    if (s == UCS_OK) {
      o->bytes = bytes;
      o->status = op_status::done;
      if (o->kind == op_kind::recv && o->device_dst != nullptr && bytes != 0 &&
          !staging_->to_device(o->device_dst, o->staged_src, bytes)) {
        o->status = op_status::error;
        o->code = errc::transport_error;
      }
    } else {
      o->bytes = s == UCS_ERR_MESSAGE_TRUNCATED ? bytes : 0;
      o->status = op_status::error;
      o->code = errc_of(s, peer_failed);
    }
    if (from_callback && o->on_done != nullptr) {
      o->on_done(o->user, op_handle{static_cast<std::uint32_t>(o - ops_.data()), o->generation},
                 o->status);
    }
  }

  static void on_send(void* request, ucs_status_t status, void* user_data) {
    auto* o = static_cast<ucx_op*>(user_data);
    o->owner->finish(o, status, o->len, true);
    ucp_request_free(request);
  }

  static void on_recv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                      void* user_data) {
    auto* o = static_cast<ucx_op*>(user_data);
    o->owner->finish(o, status, info != nullptr ? info->length : 0, true);
    ucp_request_free(request);
  }

  static void on_peer_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* p = static_cast<ucx_peer*>(arg);
    p->owner->fail_peer(*p, status);
  }

  /// A peer failed: every pending receive from it is cancelled now (UCX fails its sends itself)
  /// so that nobody waits for a message that will never come.
  void fail_peer(ucx_peer& p, ucs_status_t status) noexcept {
    if (p.failed) return;
    p.failed = true;
    p.why = status;
    for (ucx_op& o : ops_) {
      if (o.in_use && o.status == op_status::pending && o.peer == p.id && o.request != nullptr &&
          o.kind == op_kind::recv) {
        ucp_request_cancel(worker_.get(), o.request);
      }
    }
  }

  transport_config cfg_;
  ucx_options opt_;
  std::string selection_;
  std::string tls_;  // the effective UCX_TLS ("" for UCX's default)
  error_mode_offer offer_;
  const device_memory_ops* staging_ = nullptr;
  bool cuda_direct_ = false;
  bool running_ = false;
  int efd_ = -1;
  std::vector<pollfd> poll_set_;  // rebuilt at connect and when a watched peer exits
  // Declaration order is destruction order in reverse: context last.
  context_handle context_;
  worker_handle worker_;
  worker_address address_;
  std::deque<ucx_peer> peers_;      // stable addresses: UCX holds pointers to them
  std::deque<ucx_region> regions_;
  std::vector<ucx_op> ops_;
  std::vector<std::uint32_t> free_;
};

}  // namespace

error_mode_offer make_error_mode_offer(error_mode configured, std::string_view tls,
                                       bool rdma_devices_present, bool cuda_memory,
                                       const std::array<std::uint8_t, 16>& host) {
  error_mode_offer o;
  o.host = host;
  if (configured == error_mode::peer) return o;
  if (configured == error_mode::minimal) {
    o.minimal_ok = true;
    return o;
  }
  // Transports whose endpoints are sockets or shared memory: a dead peer leaves nothing that
  // could still write into our memory once UCX has reported it, so UCX's peer-mode integrity
  // rules buy nothing there.
  static constexpr std::string_view plain[] = {"tcp", "self", "sm", "shm", "mm", "posix",
                                               "sysv", "cma", "knem", "xpmem"};
  std::vector<std::string> items = split_list(tls);
  bool open = items.empty() || tls.front() == '^' ||
              std::find(items.begin(), items.end(), "all") != items.end();
  if (open) {
    o.minimal_ok = !rdma_devices_present && !cuda_memory;
  } else {
    o.minimal_ok = std::all_of(items.begin(), items.end(), [](const std::string& t) {
      return std::find(std::begin(plain), std::end(plain), t) != std::end(plain);
    });
  }
  return o;
}

error_mode settle_error_mode(const error_mode_offer& a, const error_mode_offer& b) noexcept {
  return a.minimal_ok && b.minimal_ok ? error_mode::minimal : error_mode::peer;
}

std::array<std::uint8_t, 16> host_identity() {
  std::array<std::uint8_t, 16> id{};
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string text;
  std::getline(in, text);
  std::size_t n = 0;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int high = -1;
  for (char c : text) {
    int v = hex(c);
    if (v < 0) continue;
    if (high < 0) {
      high = v;
    } else if (n < id.size()) {
      id[n++] = static_cast<std::uint8_t>(high * 16 + v);
      high = -1;
    }
  }
  if (n == id.size()) return id;
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  std::size_t h = std::hash<std::string>{}(name);
  id = {};
  std::memcpy(id.data(), &h, std::min(sizeof h, id.size()));
  return id;
}

std::string ucx_version() {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

expected<std::unique_ptr<transport>> make_ucx_transport(const transport_config& config,
                                                        const ucx_options& options) {
  if (config.max_ops == 0) return fail(errc::invalid_argument, "transport: max_ops must be positive");
  auto t = std::make_unique<ucx_impl>(config, options);
  if (auto ok = t->start(); !ok) return std::move(ok).err();
  return std::unique_ptr<transport>(std::move(t));
}

}  // namespace afd::transport
