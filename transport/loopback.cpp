#include "transport/loopback.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include <unistd.h>

namespace afd::transport {

namespace {

enum class op_kind : std::uint8_t { send, recv };

struct lb_op {
  bool in_use = false;
  std::uint32_t generation = 0;
  op_kind kind = op_kind::send;
  op_status status = op_status::pending;
  errc code = errc::none;
  rank_t peer_rank = 0;
  std::uint64_t tag = 0;
  std::byte* ptr = nullptr;
  std::size_t len = 0;
  std::size_t bytes = 0;
  completion_fn on_done = nullptr;
  void* user = nullptr;
};

struct lb_region {
  std::byte* base = nullptr;
  std::size_t size = 0;
  bool live = false;
};

struct lb_peer {
  rank_t rank = 0;
};

/// 64-bit id of a fabric, written into addresses so that an address from another fabric (or
/// another process) is refused instead of silently matching a rank here.
std::uint64_t next_fabric_id() {
  static std::atomic<std::uint64_t> counter{1};
  return (static_cast<std::uint64_t>(::getpid()) << 32) | counter.fetch_add(1);
}

constexpr std::uint32_t address_magic = 0x4146444cu;  // "AFDL"

}  // namespace

class loopback_impl;

struct loopback_fabric::state {
  std::mutex mutex;
  std::condition_variable changed;
  std::uint64_t id = next_fabric_id();
  std::vector<loopback_impl*> by_rank = std::vector<loopback_impl*>(65536, nullptr);
  std::vector<bool> dead = std::vector<bool>(65536, false);
};

/// A send waiting in its destination's incoming queue for a matching receive.
struct incoming_send {
  loopback_impl* sender;
  std::uint32_t slot;
};

class loopback_impl final : public transport {
 public:
  loopback_impl(std::shared_ptr<loopback_fabric> fabric, rank_t rank, std::uint32_t max_ops)
      : fabric_(std::move(fabric)), st_(fabric_->internal()), rank_(rank), ops_(max_ops) {
    free_.reserve(max_ops);
    for (std::uint32_t i = max_ops; i > 0; --i) free_.push_back(i - 1);
    posted_recvs_.reserve(max_ops);
    incoming_.reserve(std::size_t{4} * max_ops);
    completed_.reserve(max_ops);
    callbacks_.reserve(max_ops);
  }

  ~loopback_impl() override { (void)shutdown(clock::now()); }

  capabilities caps() const noexcept override {
    return {"loopback", false, false, false};
  }
  rank_t rank() const noexcept override { return rank_; }

  std::vector<std::byte> address() const override {
    std::vector<std::byte> a(4 + 8 + 2);
    std::memcpy(a.data(), &address_magic, 4);
    std::memcpy(a.data() + 4, &st_.id, 8);
    std::memcpy(a.data() + 12, &rank_, 2);
    return a;
  }

  expected<peer_id> connect(std::span<const std::byte> address) override {
    std::uint32_t magic = 0;
    std::uint64_t id = 0;
    rank_t r = 0;
    if (address.size() != 14) {
      return fail(errc::invalid_argument, "transport: loopback address has ", address.size(),
                  " bytes, expected 14 (is it a UCX address?)");
    }
    std::memcpy(&magic, address.data(), 4);
    std::memcpy(&id, address.data() + 4, 8);
    std::memcpy(&r, address.data() + 12, 2);
    if (magic != address_magic) return fail(errc::invalid_argument, "transport: not a loopback address");
    if (id != st_.id) {
      return fail(errc::invalid_argument, "transport: loopback address of rank ", r,
                  " belongs to another fabric");
    }
    std::lock_guard lock(st_.mutex);
    if (st_.by_rank[r] == nullptr) {
      return fail(errc::unavailable, "transport: loopback rank ", r, " is not on the fabric");
    }
    peers_.push_back({r});
    return static_cast<peer_id>(peers_.size() - 1);
  }

  rank_t peer_rank(peer_id peer) const noexcept override {
    return peer < peers_.size() ? peers_[peer].rank : rank_t{0};
  }

  expected<region> register_memory(void* base, std::size_t bytes, memory_kind kind) override {
    if (kind != memory_kind::host) {
      return fail(errc::unsupported,
                  "transport: the loopback transport registers host memory only");
    }
    if (base == nullptr && bytes != 0) return fail(errc::invalid_argument, "transport: null region");
    regions_.push_back({static_cast<std::byte*>(base), bytes, true});
    return region{static_cast<std::uint32_t>(regions_.size() - 1)};
  }

  void deregister(region r) noexcept override {
    if (r.id < regions_.size()) regions_[r.id].live = false;
  }

  op_status post_send(peer_id peer, std::uint64_t tag, region r, std::size_t offset,
                      std::size_t bytes, op_handle& op, completion_fn on_done,
                      void* user) noexcept override {
    return post(op_kind::send, peer, tag, r, offset, bytes, op, on_done, user);
  }

  op_status post_recv(peer_id peer, std::uint64_t tag, region r, std::size_t offset,
                      std::size_t capacity, op_handle& op, completion_fn on_done,
                      void* user) noexcept override {
    return post(op_kind::recv, peer, tag, r, offset, capacity, op, on_done, user);
  }

  op_result result(op_handle op) const noexcept override {
    std::lock_guard lock(st_.mutex);
    const lb_op* o = find(op);
    if (o == nullptr) return {op_status::error, 0, errc::invalid_argument};
    return {o->status, o->bytes, o->code};
  }

  void release(op_handle op) noexcept override {
    std::lock_guard lock(st_.mutex);
    lb_op* o = find(op);
    if (o == nullptr) return;
    if (o->status == op_status::pending) unlink(op.slot);
    o->in_use = false;
    o->on_done = nullptr;
    ++o->generation;
    free_.push_back(op.slot);
  }

  std::size_t progress() noexcept override {
    {
      std::lock_guard lock(st_.mutex);
      observed_ = activity_;
      callbacks_.swap(completed_);
    }
    std::size_t n = callbacks_.size();
    for (const auto& c : callbacks_) c.fn(c.user, c.op, c.status);
    callbacks_.clear();
    return n;
  }

  bool wait_for_activity(deadline until) noexcept override {
    std::unique_lock lock(st_.mutex);
    return st_.changed.wait_until(lock, until, [&] { return activity_ != observed_; });
  }

  bool peer_alive(peer_id peer) const noexcept override {
    if (peer >= peers_.size()) return false;
    std::lock_guard lock(st_.mutex);
    return !st_.dead[peers_[peer].rank] && st_.by_rank[peers_[peer].rank] != nullptr;
  }

  std::string peer_failure(peer_id peer) const override {
    if (peer_alive(peer)) return {};
    return "loopback rank " + std::to_string(peer_rank(peer)) + " is gone";
  }

  expected<void> shutdown(deadline) override {
    std::lock_guard lock(st_.mutex);
    if (!registered_) return {};
    fail_rank_locked(rank_);
    st_.by_rank[rank_] = nullptr;
    registered_ = false;
    return {};
  }

  /// Called once, after construction, under no lock.
  expected<void> join() {
    std::lock_guard lock(st_.mutex);
    if (st_.by_rank[rank_] != nullptr) {
      return fail(errc::invalid_argument, "transport: loopback rank ", rank_, " is already taken");
    }
    st_.by_rank[rank_] = this;
    st_.dead[rank_] = false;
    registered_ = true;
    return {};
  }

  /// Fails every pending operation that involves `dead` on every transport of the fabric; the
  /// fabric's mutex is held.
  void fail_rank_locked(rank_t dead) {
    st_.dead[dead] = true;
    for (loopback_impl* t : st_.by_rank) {
      if (t == nullptr) continue;
      t->fail_peer_locked(dead);
    }
    st_.changed.notify_all();
  }

 private:
  friend class loopback_fabric;

  struct due_callback {
    completion_fn fn;
    void* user;
    op_handle op;
    op_status status;
  };

  lb_op* find(op_handle op) noexcept {
    if (op.slot >= ops_.size()) return nullptr;
    lb_op& o = ops_[op.slot];
    return (o.in_use && o.generation == op.generation) ? &o : nullptr;
  }
  const lb_op* find(op_handle op) const noexcept {
    return const_cast<loopback_impl*>(this)->find(op);
  }

  void complete_locked(std::uint32_t slot, op_status s, errc code, std::size_t bytes) noexcept {
    lb_op& o = ops_[slot];
    o.status = s;
    o.code = code;
    o.bytes = bytes;
    ++activity_;
    if (o.on_done != nullptr && completed_.size() < completed_.capacity()) {
      completed_.push_back({o.on_done, o.user, op_handle{slot, o.generation}, s});
    }
  }

  /// Removes a pending op from whichever queue holds it.
  void unlink(std::uint32_t slot) noexcept {
    lb_op& o = ops_[slot];
    if (o.kind == op_kind::recv) {
      std::erase(posted_recvs_, slot);
    } else if (loopback_impl* dest = st_.by_rank[o.peer_rank]) {
      std::erase_if(dest->incoming_,
                    [&](const incoming_send& s) { return s.sender == this && s.slot == slot; });
    }
  }

  void fail_peer_locked(rank_t dead) noexcept {
    if (dead == rank_) {
      for (std::uint32_t slot : posted_recvs_) complete_locked(slot, op_status::error, errc::peer_failed, 0);
      posted_recvs_.clear();
      for (const incoming_send& s : incoming_) {
        s.sender->complete_locked(s.slot, op_status::error, errc::peer_failed, 0);
      }
      incoming_.clear();
      for (std::uint32_t i = 0; i < ops_.size(); ++i) {
        lb_op& o = ops_[i];
        if (o.in_use && o.status == op_status::pending && o.kind == op_kind::send) {
          unlink(i);
          complete_locked(i, op_status::error, errc::peer_failed, 0);
        }
      }
      return;
    }
    std::erase_if(posted_recvs_, [&](std::uint32_t slot) {
      if (ops_[slot].peer_rank != dead) return false;
      complete_locked(slot, op_status::error, errc::peer_failed, 0);
      return true;
    });
    std::erase_if(incoming_, [&](const incoming_send& s) {
      if (s.sender->rank_ != dead) return false;
      s.sender->complete_locked(s.slot, op_status::error, errc::peer_failed, 0);
      return true;
    });
  }

  /// Copies a matched send into a receive and completes both.
  static void deliver(loopback_impl* sender, std::uint32_t send_slot, loopback_impl* receiver,
                      std::uint32_t recv_slot) noexcept {
    lb_op& s = sender->ops_[send_slot];
    lb_op& r = receiver->ops_[recv_slot];
    if (s.len > r.len) {
      // As UCX: the receive reports truncation; the send itself went out.
      receiver->complete_locked(recv_slot, op_status::error, errc::bad_message, s.len);
      sender->complete_locked(send_slot, op_status::done, errc::none, s.len);
      return;
    }
    if (s.len != 0) std::memcpy(r.ptr, s.ptr, s.len);
    receiver->complete_locked(recv_slot, op_status::done, errc::none, s.len);
    sender->complete_locked(send_slot, op_status::done, errc::none, s.len);
  }

  op_status post(op_kind kind, peer_id peer, std::uint64_t tag, region r, std::size_t offset,
                 std::size_t len, op_handle& op, completion_fn on_done, void* user) noexcept {
    op = {};
    std::lock_guard lock(st_.mutex);
    if (free_.empty()) return op_status::error;
    std::uint32_t slot = free_.back();
    free_.pop_back();
    lb_op& o = ops_[slot];
    o.in_use = true;
    o.kind = kind;
    o.status = op_status::pending;
    o.code = errc::none;
    o.bytes = 0;
    o.tag = tag & user_tag_mask;
    o.on_done = on_done;
    o.user = user;
    op = {slot, o.generation};
    auto reject = [&](errc code) {
      o.status = op_status::error;
      o.code = code;
      return op_status::error;
    };
    if (peer >= peers_.size()) return reject(errc::invalid_argument);
    if (r.id >= regions_.size() || !regions_[r.id].live || offset > regions_[r.id].size ||
        len > regions_[r.id].size - offset) {
      return reject(errc::out_of_range);
    }
    o.peer_rank = peers_[peer].rank;
    o.ptr = regions_[r.id].base + offset;
    o.len = len;
    loopback_impl* other = st_.by_rank[o.peer_rank];
    if (!registered_ || st_.dead[rank_] || st_.dead[o.peer_rank] || other == nullptr) return reject(errc::peer_failed);

    if (kind == op_kind::send) {
      for (auto it = other->posted_recvs_.begin(); it != other->posted_recvs_.end(); ++it) {
        const lb_op& rv = other->ops_[*it];
        if (rv.peer_rank == rank_ && rv.tag == o.tag) {
          std::uint32_t rslot = *it;
          other->posted_recvs_.erase(it);
          deliver(this, slot, other, rslot);
          st_.changed.notify_all();
          return o.status;
        }
      }
      if (other->incoming_.size() == other->incoming_.capacity()) return reject(errc::transport_error);
      other->incoming_.push_back({this, slot});
      return op_status::pending;
    }
    for (auto it = incoming_.begin(); it != incoming_.end(); ++it) {
      const lb_op& sd = it->sender->ops_[it->slot];
      if (it->sender->rank_ == o.peer_rank && sd.tag == o.tag) {
        incoming_send s = *it;
        incoming_.erase(it);
        deliver(s.sender, s.slot, this, slot);
        st_.changed.notify_all();
        return o.status;
      }
    }
    posted_recvs_.push_back(slot);
    return op_status::pending;
  }

  std::shared_ptr<loopback_fabric> fabric_;
  loopback_fabric::state& st_;
  rank_t rank_;
  bool registered_ = false;
  std::vector<lb_op> ops_;
  std::vector<std::uint32_t> free_;
  std::vector<lb_peer> peers_;
  std::vector<lb_region> regions_;
  std::vector<std::uint32_t> posted_recvs_;
  std::vector<incoming_send> incoming_;
  std::vector<due_callback> completed_;
  std::vector<due_callback> callbacks_;
  std::uint64_t activity_ = 0;
  std::uint64_t observed_ = 0;
};

loopback_fabric::loopback_fabric() : state_(std::make_unique<state>()) {}
loopback_fabric::~loopback_fabric() = default;

std::shared_ptr<loopback_fabric> loopback_fabric::create() {
  return std::shared_ptr<loopback_fabric>(new loopback_fabric());
}

void loopback_fabric::kill(rank_t rank) {
  std::lock_guard lock(state_->mutex);
  state_->dead[rank] = true;
  for (loopback_impl* t : state_->by_rank) {
    if (t != nullptr) t->fail_peer_locked(rank);
  }
  state_->changed.notify_all();
}

expected<std::unique_ptr<transport>> make_loopback_transport(
    std::shared_ptr<loopback_fabric> fabric, rank_t rank, std::uint32_t max_ops) {
  if (!fabric) return fail(errc::invalid_argument, "transport: loopback fabric is null");
  if (max_ops == 0) return fail(errc::invalid_argument, "transport: max_ops must be positive");
  auto t = std::make_unique<loopback_impl>(std::move(fabric), rank, max_ops);
  if (auto joined = t->join(); !joined) return std::move(joined).err();
  return std::unique_ptr<transport>(std::move(t));
}

}  // namespace afd::transport
