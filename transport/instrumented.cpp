#include "transport/instrumented.hpp"

#include <algorithm>
#include <cstring>

#include "transport/wire.hpp"

namespace afd::transport {

namespace {

using faults::fault_kind;

/// Handles of operations the decorator answers itself carry this bit in their slot.
constexpr std::uint32_t own_bit = 0x80000000u;

class instrumented final : public transport {
 public:
  instrumented(std::unique_ptr<transport> inner, std::shared_ptr<faults::fault_site> site,
               std::function<std::string(rank_t)> peer_name, std::shared_ptr<transport_counters> counters)
      : inner_(std::move(inner)), site_(std::move(site)), peer_name_(std::move(peer_name)),
        counters_(std::move(counters)) {}

  ~instrumented() override { (void)shutdown(after(std::chrono::seconds(1))); }

  capabilities caps() const noexcept override { return inner_->caps(); }
  rank_t rank() const noexcept override { return inner_->rank(); }
  std::vector<std::byte> address() const override { return inner_->address(); }
  expected<peer_id> connect(std::span<const std::byte> address) override {
    auto p = inner_->connect(address);
    // A peer connected again (a new member after a recovery) is alive until a rule says otherwise.
    if (p && *p < dead_until_.size()) dead_until_[*p] = {};
    return p;
  }
  rank_t peer_rank(peer_id peer) const noexcept override { return inner_->peer_rank(peer); }

  expected<region> register_memory(void* base, std::size_t bytes, memory_kind kind) override {
    auto r = inner_->register_memory(base, bytes, kind);
    if (r) {
      if (bases_.size() <= r->id) bases_.resize(r->id + 1, nullptr);
      bases_[r->id] = static_cast<std::byte*>(base);
    }
    return r;
  }
  void deregister(region r) noexcept override {
    if (r.id < bases_.size()) bases_[r.id] = nullptr;
    inner_->deregister(r);
  }

  op_status post_send(peer_id peer, std::uint64_t tag, region r, std::size_t offset, std::size_t bytes,
                      op_handle& op, completion_fn on_done, void* user) noexcept override {
    if (is_dead(peer)) return fail_now(op);
    counters_->bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
    counters_->messages_sent.fetch_add(1, std::memory_order_relaxed);
    if (site_ && site_->armed()) [[unlikely]]
      return send_with_faults(peer, tag, r, offset, bytes, op, on_done, user);
    return inner_->post_send(peer, tag, r, offset, bytes, op, on_done, user);
  }

  op_status post_recv(peer_id peer, std::uint64_t tag, region r, std::size_t offset, std::size_t capacity,
                      op_handle& op, completion_fn on_done, void* user) noexcept override {
    if (is_dead(peer)) return fail_now(op);
    op_status s = inner_->post_recv(peer, tag, r, offset, capacity, op, on_done, user);
    if (op.valid()) {
      if (recv_peer_.size() <= op.slot) recv_peer_.resize(op.slot + 1, no_peer);
      recv_peer_[op.slot] = peer;
    }
    return s;
  }

  op_result result(op_handle op) const noexcept override {
    if (op.slot & own_bit) {
      const own_op* o = find(op);
      if (o == nullptr) return {op_status::error, 0, errc::invalid_argument};
      if (o->posted) return inner_->result(o->real);
      return {o->status, o->status == op_status::done ? o->bytes : 0, o->code};
    }
    op_result r = inner_->result(op);
    if (r.status == op_status::pending && op.slot < recv_peer_.size() && recv_peer_[op.slot] != no_peer &&
        is_dead(recv_peer_[op.slot]))
      return {op_status::error, 0, errc::peer_failed};
    return r;
  }

  void release(op_handle op) noexcept override {
    if (op.slot & own_bit) {
      own_op* o = find(op);
      if (o == nullptr) return;
      if (o->posted) inner_->release(o->real);
      o->in_use = false;
      ++o->generation;
      return;
    }
    if (op.slot < recv_peer_.size() && recv_peer_[op.slot] != no_peer) {
      const op_result r = inner_->result(op);
      if (r.status == op_status::done) {
        counters_->bytes_received.fetch_add(r.bytes, std::memory_order_relaxed);
        counters_->messages_received.fetch_add(1, std::memory_order_relaxed);
      }
      recv_peer_[op.slot] = no_peer;
    }
    inner_->release(op);
  }

  std::size_t progress() noexcept override {
    std::size_t n = inner_->progress();
    if (!delayed_.empty()) n += post_due();
    reap_copies();
    return n;
  }

  bool wait_for_activity(deadline until) noexcept override {
    if (!delayed_.empty()) {
      const deadline due = next_due();
      post_due();
      if (due < until) {
        inner_->wait_for_activity(due);
        return true;
      }
    }
    return inner_->wait_for_activity(until);
  }

  bool peer_alive(peer_id peer) const noexcept override { return !is_dead(peer) && inner_->peer_alive(peer); }
  std::string peer_failure(peer_id peer) const override {
    if (is_dead(peer)) return "peer rank " + std::to_string(inner_->peer_rank(peer)) + " declared dead by fault injection";
    return inner_->peer_failure(peer);
  }
  std::string peer_setup(peer_id peer) const override { return inner_->peer_setup(peer); }

  expected<void> shutdown(deadline until) override {
    delayed_.clear();
    for (auto& c : copies_) inner_->release(c.op);
    copies_.clear();
    for (auto& c : copy_regions_) inner_->deregister(c.region_id);
    copy_regions_.clear();
    return inner_->shutdown(until);
  }

 private:
  static constexpr peer_id no_peer = UINT32_MAX;

  /// An operation answered by the decorator: a dropped send (done), a failed one, or a delayed
  /// one (pending until posted, then the real operation's).
  struct own_op {
    bool in_use = false;
    std::uint32_t generation = 0;
    op_status status = op_status::pending;
    errc code = errc::none;
    std::size_t bytes = 0;
    bool posted = false;
    op_handle real;
  };
  struct delayed_send {
    std::uint32_t own = 0;  ///< index into own_
    deadline due;
    peer_id peer = 0;
    std::uint64_t tag = 0;
    region r;
    std::size_t offset = 0, bytes = 0;
  };
  /// A registered buffer holding a corrupted copy, and the send that uses it.
  struct copy_buffer {
    std::vector<std::byte> data;
    region region_id;
    bool busy = false;
  };
  struct copy_send {
    op_handle op;
    std::size_t buffer = 0;
  };

  bool is_dead(peer_id peer) const noexcept {
    return peer < dead_until_.size() && dead_until_[peer] != dead_clock::time_point{} &&
           dead_clock::now() < dead_until_[peer];
  }

  op_status fail_now(op_handle& op, errc code = errc::peer_failed) noexcept {
    own_op& o = new_own(op);
    o.status = op_status::error;
    o.code = code;
    return op_status::error;
  }

  own_op& new_own(op_handle& op) {
    std::size_t i = 0;
    while (i < own_.size() && own_[i].in_use) ++i;
    if (i == own_.size()) own_.emplace_back();
    own_op& o = own_[i];
    const std::uint32_t generation = o.generation;
    o = own_op{};
    o.in_use = true;
    o.generation = generation;
    op = {static_cast<std::uint32_t>(i) | own_bit, generation};
    return o;
  }

  own_op* find(op_handle op) noexcept {
    const std::uint32_t i = op.slot & ~own_bit;
    if (i >= own_.size() || !own_[i].in_use || own_[i].generation != op.generation) return nullptr;
    return &own_[i];
  }
  const own_op* find(op_handle op) const noexcept { return const_cast<instrumented*>(this)->find(op); }

  op_status send_with_faults(peer_id peer, std::uint64_t tag, region r, std::size_t offset, std::size_t bytes,
                             op_handle& op, completion_fn on_done, void* user) noexcept {
    const std::byte* msg = r.id < bases_.size() && bases_[r.id] ? bases_[r.id] + offset : nullptr;
    faults::data_context ctx;
    std::string peer_name = peer_name_ ? peer_name_(inner_->peer_rank(peer)) : std::string();
    ctx.peer = peer_name;
    if (msg != nullptr && bytes >= header_bytes) {
      wire_header h;
      std::memcpy(&h, msg, sizeof h);
      if (h.magic == wire_magic) {
        ctx.step = h.step;
        ctx.layer = h.layer;
        ctx.micro_batch = h.micro_batch;
      }
    }
    std::shared_ptr<faults::fault_plan> plan;
    const faults::decision d =
        site_->decide({fault_kind::data_fail, fault_kind::data_drop, fault_kind::data_delay, fault_kind::data_duplicate,
                       fault_kind::data_corrupt, fault_kind::peer_dead},
                      ctx, plan);
    if (!d) return inner_->post_send(peer, tag, r, offset, bytes, op, on_done, user);
    switch (d.rule->kind) {
      case fault_kind::data_fail: return fail_now(op, errc::transport_error);
      case fault_kind::peer_dead: {
        // Dead for the rule's duration; without one, until the peer is connected again.
        if (dead_until_.size() <= peer) dead_until_.resize(peer + 1);
        dead_until_[peer] = d.rule->duration.count() > 0 ? dead_clock::now() + d.rule->duration
                                                         : dead_clock::time_point::max();
        return fail_now(op);
      }
      case fault_kind::data_drop: {
        own_op& o = new_own(op);
        o.status = op_status::done;
        o.bytes = bytes;
        return op_status::done;
      }
      case fault_kind::data_delay: {
        own_op& o = new_own(op);
        delayed_.push_back({op.slot & ~own_bit, clock::now() + d.rule->delay, peer, tag, r, offset, bytes});
        (void)o;
        return op_status::pending;
      }
      case fault_kind::data_duplicate: {
        op_handle first;
        op_status s = inner_->post_send(peer, tag, r, offset, bytes, first, nullptr, nullptr);
        if (s == op_status::error) {
          op = first;
          return s;
        }
        copies_.push_back({first, SIZE_MAX});  // released once done; the caller waits on the second
        return inner_->post_send(peer, tag, r, offset, bytes, op, on_done, user);
      }
      case fault_kind::data_corrupt: {
        if (msg == nullptr || bytes < header_bytes) return inner_->post_send(peer, tag, r, offset, bytes, op, on_done, user);
        const std::size_t buffer = copy_of(msg, bytes);
        if (buffer == SIZE_MAX) return inner_->post_send(peer, tag, r, offset, bytes, op, on_done, user);
        // One header byte, chosen by the seed; the receiver's checksum (or magic) check catches it.
        const std::size_t at = faults::mix(plan->seed() ^ ctx.step ^ (static_cast<std::uint64_t>(ctx.layer) << 20)) %
                               (header_bytes - 4);
        copy_regions_[buffer].data[at] ^= std::byte{0x5a};
        op_handle copy_op;
        op_status s = inner_->post_send(peer, tag, copy_regions_[buffer].region_id, 0, bytes, copy_op, nullptr, nullptr);
        if (s == op_status::error) {
          copy_regions_[buffer].busy = false;
          op = copy_op;
          return s;
        }
        copies_.push_back({copy_op, buffer});
        // The caller's op completes at once: its buffer was copied and may be reused.
        own_op& o = new_own(op);
        o.status = op_status::done;
        o.bytes = bytes;
        return op_status::done;
      }
      default: return inner_->post_send(peer, tag, r, offset, bytes, op, on_done, user);
    }
  }

  /// A registered copy of `bytes` of `msg`; SIZE_MAX when memory cannot be registered.
  std::size_t copy_of(const std::byte* msg, std::size_t bytes) {
    std::size_t i = 0;
    while (i < copy_regions_.size() && (copy_regions_[i].busy || copy_regions_[i].data.size() < bytes)) ++i;
    if (i == copy_regions_.size()) {
      copy_buffer c;
      c.data.resize(bytes);
      auto reg = inner_->register_memory(c.data.data(), c.data.size(), memory_kind::host);
      if (!reg) return SIZE_MAX;
      c.region_id = *reg;
      copy_regions_.push_back(std::move(c));
    }
    std::memcpy(copy_regions_[i].data.data(), msg, bytes);
    copy_regions_[i].busy = true;
    return i;
  }

  void reap_copies() noexcept {
    for (auto it = copies_.begin(); it != copies_.end();) {
      if (inner_->result(it->op).status == op_status::pending) {
        ++it;
        continue;
      }
      inner_->release(it->op);
      if (it->buffer != SIZE_MAX) copy_regions_[it->buffer].busy = false;
      it = copies_.erase(it);
    }
  }

  deadline next_due() const noexcept {
    deadline due = deadline::max();
    for (const auto& d : delayed_) due = std::min(due, d.due);
    return due;
  }

  std::size_t post_due() noexcept {
    std::size_t n = 0;
    const auto now = clock::now();
    for (auto it = delayed_.begin(); it != delayed_.end();) {
      own_op& o = own_[it->own];
      if (!o.in_use) {  // released (cancelled) before it was due
        it = delayed_.erase(it);
        continue;
      }
      if (it->due > now) {
        ++it;
        continue;
      }
      op_status s = inner_->post_send(it->peer, it->tag, it->r, it->offset, it->bytes, o.real, nullptr, nullptr);
      if (s == op_status::error && !o.real.valid()) {
        o.status = op_status::error;
        o.code = errc::transport_error;
      } else {
        o.posted = true;
      }
      it = delayed_.erase(it);
      ++n;
    }
    return n;
  }

  std::unique_ptr<transport> inner_;
  std::shared_ptr<faults::fault_site> site_;
  std::function<std::string(rank_t)> peer_name_;
  std::shared_ptr<transport_counters> counters_;
  std::vector<std::byte*> bases_;        ///< registered base address by region id
  std::vector<peer_id> recv_peer_;       ///< the peer of each pending receive, by op slot
  using dead_clock = std::chrono::steady_clock;
  std::vector<dead_clock::time_point> dead_until_;  ///< peers declared dead by peer_dead, until then
  std::vector<own_op> own_;
  std::deque<delayed_send> delayed_;
  std::vector<copy_buffer> copy_regions_;
  std::vector<copy_send> copies_;
};

}  // namespace

std::unique_ptr<transport> make_instrumented_transport(std::unique_ptr<transport> inner,
                                                       std::shared_ptr<faults::fault_site> site,
                                                       std::function<std::string(rank_t)> peer_name,
                                                       std::shared_ptr<transport_counters> counters) {
  if (!counters) counters = std::make_shared<transport_counters>();
  return std::make_unique<instrumented>(std::move(inner), std::move(site), std::move(peer_name),
                                        std::move(counters));
}

}  // namespace afd::transport
