#pragma once
// RAII owners of UCX handles (internal to transport/ucx). Each releases its handle exactly once,
// in the order the owning class declares them (context outlives worker outlives endpoints).

#include <ucp/api/ucp.h>

#include <utility>

namespace afd::transport::ucx {

template <class Handle, void (*Release)(Handle)>
class unique_handle {
 public:
  unique_handle() = default;
  explicit unique_handle(Handle h) noexcept : h_(h) {}
  unique_handle(unique_handle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  unique_handle& operator=(unique_handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  unique_handle(const unique_handle&) = delete;
  unique_handle& operator=(const unique_handle&) = delete;
  ~unique_handle() { reset(); }

  Handle get() const noexcept { return h_; }
  explicit operator bool() const noexcept { return h_ != nullptr; }
  void reset() noexcept {
    if (h_ != nullptr) Release(std::exchange(h_, nullptr));
  }

 private:
  Handle h_ = nullptr;
};

using config_handle = unique_handle<ucp_config_t*, ucp_config_release>;
using context_handle = unique_handle<ucp_context_h, ucp_cleanup>;
using worker_handle = unique_handle<ucp_worker_h, ucp_worker_destroy>;

/// The worker's address, released through its worker.
class worker_address {
 public:
  worker_address() = default;
  worker_address(ucp_worker_h w, ucp_address_t* a, std::size_t n) noexcept : w_(w), a_(a), n_(n) {}
  worker_address(worker_address&& o) noexcept
      : w_(o.w_), a_(std::exchange(o.a_, nullptr)), n_(o.n_) {}
  worker_address& operator=(worker_address&& o) noexcept {
    if (this != &o) {
      reset();
      w_ = o.w_;
      a_ = std::exchange(o.a_, nullptr);
      n_ = o.n_;
    }
    return *this;
  }
  ~worker_address() { reset(); }
  const ucp_address_t* data() const noexcept { return a_; }
  std::size_t size() const noexcept { return n_; }
  void reset() noexcept {
    if (a_ != nullptr) ucp_worker_release_address(w_, std::exchange(a_, nullptr));
  }

 private:
  ucp_worker_h w_ = nullptr;
  ucp_address_t* a_ = nullptr;
  std::size_t n_ = 0;
};

/// A memory registration, unmapped through its context.
class mem_handle {
 public:
  mem_handle() = default;
  mem_handle(ucp_context_h c, ucp_mem_h m) noexcept : c_(c), m_(m) {}
  mem_handle(mem_handle&& o) noexcept : c_(o.c_), m_(std::exchange(o.m_, nullptr)) {}
  mem_handle& operator=(mem_handle&& o) noexcept {
    if (this != &o) {
      reset();
      c_ = o.c_;
      m_ = std::exchange(o.m_, nullptr);
    }
    return *this;
  }
  ~mem_handle() { reset(); }
  ucp_mem_h get() const noexcept { return m_; }
  void reset() noexcept {
    if (m_ != nullptr) ucp_mem_unmap(c_, std::exchange(m_, nullptr));
  }

 private:
  ucp_context_h c_ = nullptr;
  ucp_mem_h m_ = nullptr;
};

}  // namespace afd::transport::ucx
