#include "transport/exchange.hpp"

#include <cstdlib>
#include <cstring>
#include <utility>

namespace afd::transport {

namespace {

constexpr std::size_t align_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }
constexpr std::size_t section_align = 64;

std::size_t scales_per_token(const exchange_shape& s) noexcept {
  if (s.dispatch_dtype != afd::dtype::f8_e4m3) return 0;
  return (s.hidden + s.scale_block - 1) / s.scale_block;
}

std::uint32_t max_combine_vectors(const exchange_shape& s) noexcept {
  return s.mode == combine_mode::throughput ? s.max_tokens : s.max_tokens * (s.top_k + 1);
}

}  // namespace

dispatch_layout dispatch_layout::of(const exchange_shape& s, std::uint32_t tokens,
                                    bool routed) noexcept {
  dispatch_layout l;
  std::size_t t = tokens;
  std::size_t k = routed ? s.top_k : 0;
  l.tokens_offset = 0;
  l.scales_offset = align_up(t * s.hidden * afd::size_of(s.dispatch_dtype), section_align);
  l.ids_offset = align_up(l.scales_offset + t * scales_per_token(s) * sizeof(float), section_align);
  l.weights_offset = align_up(l.ids_offset + t * k * sizeof(std::int32_t), section_align);
  l.bytes = l.weights_offset + t * k * sizeof(float);
  if (tokens == 0) l = {};
  return l;
}

combine_layout combine_layout::of(const exchange_shape& s, std::uint32_t vectors) noexcept {
  combine_layout l;
  l.vectors_offset = 0;
  const std::size_t vector_bytes = std::size_t{vectors} * s.hidden * afd::size_of(s.combine_dtype);
  l.entries_offset = align_up(vector_bytes, section_align);
  l.bytes = s.mode == combine_mode::deterministic
                ? l.entries_offset + std::size_t{vectors} * sizeof(combine_entry)
                : vector_bytes;
  if (vectors == 0) l = {};
  return l;
}

// ---------------------------------------------------------------------------------------------

std::atomic<std::uint64_t> exchange_base::retired_arenas{0};

exchange_base::exchange_base(transport& t, exchange_shape shape, std::vector<peer_id> peers)
    : t_(t), shape_(shape), peers_(std::move(peers)) {}

exchange_base::~exchange_base() {
  // A send UCX has queued (shared memory's pending queue) still reads the arena, and cancelling
  // does not take it back: give the sends a moment to finish before the arena is freed. Short:
  // this runs on the worker's actor thread, whose heartbeats must not stop (timeouts.hpp).
  const auto until = after(std::chrono::milliseconds(100));
  bool still_sending = false;
  for (peer_slot& ps : slots_)
    if (ps.send_posted) still_sending = t_.wait(ps.send_op, until) == op_status::timeout || still_sending;
  for (auto& ops : shared_send_ops_)
    for (op_handle op : ops) still_sending = t_.wait(op, until) == op_status::timeout || still_sending;
  for (peer_slot& ps : slots_) {
    if (ps.recv_posted) t_.release(ps.recv_op);
    if (ps.send_posted) t_.release(ps.send_op);
  }
  for (auto& ops : shared_send_ops_) {
    for (op_handle op : ops) t_.release(op);
  }
  if (still_sending) {
    // UCX may still read it: the arena is left allocated and registered rather than freed under
    // a send (a bounded leak, only after a fault stopped an engine mid-send).
    retired_arenas.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (arena_region_.valid()) t_.deregister(arena_region_);
  std::free(arena_);
}

expected<void> exchange_base::allocate(std::size_t recv_capacity,
                                       std::size_t per_peer_send_capacity,
                                       std::size_t shared_send_capacity) {
  const std::size_t slots = shape_.micro_batches;
  const std::size_t n = peers_.size();
  recv_capacity = align_up(recv_capacity, 4096);
  per_peer_send_capacity = align_up(per_peer_send_capacity, 4096);
  shared_send_capacity = align_up(shared_send_capacity, 4096);
  std::size_t total = slots * (n * (recv_capacity + per_peer_send_capacity) + shared_send_capacity);
  arena_ = static_cast<std::byte*>(std::aligned_alloc(4096, total));
  if (arena_ == nullptr) {
    return fail(errc::io_error, "transport: cannot allocate ", total, " bytes of exchange buffers");
  }
  std::memset(arena_, 0, total);  // touch every page now, not on the hot path
  auto reg = t_.register_memory(arena_, total, memory_kind::host);
  if (!reg) return std::move(reg).err();
  arena_region_ = *reg;
  std::size_t offset = 0;
  auto take = [&](std::size_t bytes) {
    buffer b{arena_ + offset, offset, bytes};
    offset += bytes;
    return b;
  };
  slots_.resize(slots * n);
  shared_send_.resize(slots);
  shared_send_ops_.resize(slots);
  failures_.resize(slots);
  for (std::size_t s = 0; s < slots; ++s) {
    for (std::size_t p = 0; p < n; ++p) {
      peer_slot& ps = slots_[s * n + p];
      ps.recv = take(recv_capacity);
      if (per_peer_send_capacity != 0) ps.send = take(per_peer_send_capacity);
    }
    if (shared_send_capacity != 0) shared_send_[s] = take(shared_send_capacity);
    shared_send_ops_[s].reserve(n);
  }
  scratch_ops_.reserve(n * 2);
  return {};
}

op_status exchange_base::record(std::uint32_t slot, errc code, std::uint32_t peer,
                                header_check check, bool receiving) noexcept {
  failures_[slot] = {code, peer, check, receiving};
  return code == errc::timeout ? op_status::timeout : op_status::error;
}

int exchange_base::last_peer_rank(std::uint32_t slot) const noexcept {
  if (slot >= failures_.size() || failures_[slot].code == errc::none) return -1;
  const failure& f = failures_[slot];
  return f.peer_index < peers_.size() ? static_cast<int>(t_.peer_rank(peers_[f.peer_index])) : -1;
}

error exchange_base::last_error(std::uint32_t slot) const {
  if (slot >= failures_.size() || failures_[slot].code == errc::none) return {};
  const failure& f = failures_[slot];
  std::string msg = "transport: micro-batch slot " + std::to_string(slot) + ", " +
                    (f.receiving ? "receiving from" : "sending to") + " peer " +
                    std::to_string(f.peer_index);
  if (f.peer_index < peers_.size()) {
    msg += " (rank " + std::to_string(t_.peer_rank(peers_[f.peer_index])) + ")";
    std::string why = t_.peer_failure(peers_[f.peer_index]);
    if (!why.empty()) msg += ": " + why;
  }
  if (f.check != header_check::ok) msg += std::string(": header rejected: ") + to_string(f.check);
  if (f.code == errc::timeout) msg += ": deadline passed";
  return error{f.code, msg};
}

op_status exchange_base::post_recv(std::uint32_t slot, std::uint32_t peer,
                                   std::uint64_t tag) noexcept {
  peer_slot& ps = at(slot, peer);
  if (ps.recv_posted) return op_status::pending;
  ps.recv_ok = false;
  op_status s = t_.post_recv(peers_[peer], tag, arena_region_, ps.recv.offset, ps.recv.capacity,
                             ps.recv_op);
  if (s == op_status::error) {
    errc code = t_.result(ps.recv_op).code;
    t_.release(ps.recv_op);
    return record(slot, code == errc::none ? errc::transport_error : code, peer,
                  header_check::ok, true);
  }
  ps.recv_posted = true;
  return op_status::pending;
}

op_status exchange_base::wait_recvs(std::uint32_t slot, message_kind kind, const step_id& id,
                                    std::uint64_t tag, deadline until) noexcept {
  const std::uint32_t n = static_cast<std::uint32_t>(peers_.size());
  for (;;) {
    t_.progress();
    bool all = true;
    for (std::uint32_t p = 0; p < n; ++p) {
      peer_slot& ps = at(slot, p);
      if (ps.recv_ok) continue;
      if (!ps.recv_posted) {
        // The caller never posted this receive: waiting would hang, so say so.
        return record(slot, errc::internal, p, header_check::ok, true);
      }
      op_result r = t_.result(ps.recv_op);
      if (r.status == op_status::pending) {
        all = false;
        continue;
      }
      t_.release(ps.recv_op);
      ps.recv_posted = false;
      if (r.status == op_status::error) {
        return record(slot, r.code == errc::none ? errc::transport_error : r.code, p,
                      header_check::ok, true);
      }
      std::span<const std::byte> msg(ps.recv.data, r.bytes);
      header_expectation expect{kind, id, t_.peer_rank(peers_[p])};
      header_check c = check_header(msg, expect);
      if (c == header_check::ok) c = check_payload(slot, header_of(ps.recv.data));
      if (c == header_check::stale_epoch || c == header_check::duplicate) {
        // A leftover of an aborted epoch, or a copy of a message already taken: drop it and
        // listen again.
        if (post_recv(slot, p, tag) != op_status::pending) return op_status::error;
        all = false;
        continue;
      }
      if (c != header_check::ok) return record(slot, to_errc(c), p, c, true);
      ps.recv_ok = true;
      ps.recv_tokens = header_of(ps.recv.data).token_count;
      ps.recv_routed = header_of(ps.recv.data).top_k != 0;
    }
    if (all) return op_status::done;
    if (!t_.wait_for_activity(until)) {
      t_.progress();
      for (std::uint32_t p = 0; p < n; ++p) {
        peer_slot& ps = at(slot, p);
        if (!ps.recv_ok && ps.recv_posted && t_.result(ps.recv_op).status == op_status::pending) {
          return record(slot, errc::timeout, p, header_check::ok, true);
        }
      }
    }
  }
}

op_status exchange_base::wait_sends(std::uint32_t slot, deadline until) noexcept {
  scratch_ops_.clear();
  for (op_handle op : shared_send_ops_[slot]) scratch_ops_.push_back(op);
  for (std::uint32_t p = 0; p < peers_.size(); ++p) {
    if (at(slot, p).send_posted) scratch_ops_.push_back(at(slot, p).send_op);
  }
  if (scratch_ops_.empty()) return op_status::done;
  op_status s = t_.wait_all(scratch_ops_, until);
  if (s == op_status::done) {
    for (op_handle op : shared_send_ops_[slot]) t_.release(op);
    shared_send_ops_[slot].clear();
    for (std::uint32_t p = 0; p < peers_.size(); ++p) {
      peer_slot& ps = at(slot, p);
      if (ps.send_posted) t_.release(ps.send_op);
      ps.send_posted = false;
    }
    return s;
  }
  // Name the peer whose send is at fault; the failed ops stay owned until the next wait.
  auto peer_of = [&](op_handle op) -> std::uint32_t {
    for (std::uint32_t p = 0; p < peers_.size(); ++p) {
      const peer_slot& ps = at(slot, p);
      if (ps.send_posted && ps.send_op.slot == op.slot) return p;
    }
    for (std::uint32_t i = 0; i < shared_send_ops_[slot].size(); ++i) {
      if (shared_send_ops_[slot][i].slot == op.slot) return i;
    }
    return 0;
  };
  for (op_handle op : scratch_ops_) {
    op_result r = t_.result(op);
    if (r.status == op_status::error) {
      return record(slot, r.code == errc::none ? errc::transport_error : r.code, peer_of(op),
                    header_check::ok, false);
    }
  }
  for (op_handle op : scratch_ops_) {
    if (t_.result(op).status == op_status::pending) {
      return record(slot, errc::timeout, peer_of(op), header_check::ok, false);
    }
  }
  return record(slot, errc::internal, 0, header_check::ok, false);
}

// ---------------------------------------------------------------------------------------------

namespace {

expected<void> check_shape(const exchange_shape& s, std::size_t peers) {
  if (s.hidden == 0 || s.max_tokens == 0 || s.micro_batches == 0 || s.scale_block == 0) {
    return fail(errc::invalid_argument,
                "transport: exchange shape needs hidden, max_tokens, micro_batches and "
                "scale_block > 0");
  }
  if (s.dispatch_dtype != afd::dtype::f8_e4m3 && s.dispatch_dtype != afd::dtype::bf16 &&
      s.dispatch_dtype != afd::dtype::f32) {
    return fail(errc::dtype_mismatch, "transport: dispatch dtype must be f8_e4m3, bf16 or f32, not ",
                afd::to_string(s.dispatch_dtype));
  }
  if (s.combine_dtype != afd::dtype::bf16 && s.combine_dtype != afd::dtype::f32) {
    return fail(errc::dtype_mismatch, "transport: combine dtype must be bf16 or f32, not ",
                afd::to_string(s.combine_dtype));
  }
  if (s.micro_batches > 0xFFFF) return fail(errc::invalid_argument, "transport: too many micro-batches");
  if (peers == 0) return fail(errc::invalid_argument, "transport: an exchange needs at least one peer");
  return {};
}

}  // namespace

expected<std::unique_ptr<attention_exchange>> attention_exchange::create(
    transport& t, exchange_shape shape, std::vector<peer_id> ffn_peers) {
  if (auto ok = check_shape(shape, ffn_peers.size()); !ok) return std::move(ok).err();
  std::unique_ptr<attention_exchange> x(new attention_exchange(t, shape, std::move(ffn_peers)));
  std::size_t recv = header_bytes + combine_layout::of(shape, max_combine_vectors(shape)).bytes;
  std::size_t send = header_bytes + dispatch_layout::of(shape, shape.max_tokens, true).bytes;
  if (auto ok = x->allocate(recv, 0, send); !ok) return std::move(ok).err();
  x->dispatch_.resize(shape.micro_batches);
  return x;
}

dispatch_view attention_exchange::begin_dispatch(std::uint32_t slot, std::uint32_t tokens,
                                                 bool routed, deadline until) noexcept {
  if (slot >= shape_.micro_batches || tokens > shape_.max_tokens || (routed && shape_.top_k == 0)) {
    if (slot < shape_.micro_batches) record(slot, errc::invalid_argument, 0, header_check::ok, false);
    return {};
  }
  if (wait_sends(slot, until) != op_status::done) return {};
  dispatch_layout l = dispatch_layout::of(shape_, tokens, routed);
  std::byte* payload = shared_send_[slot].data + header_bytes;
  dispatch_[slot].tokens = tokens;
  dispatch_[slot].routed = routed;
  dispatch_[slot].begun = true;
  dispatch_view v;
  v.token_count = tokens;
  v.tokens = payload + l.tokens_offset;
  v.scales = scales_per_token(shape_) != 0 ? reinterpret_cast<float*>(payload + l.scales_offset) : nullptr;
  v.topk_ids = routed ? reinterpret_cast<std::int32_t*>(payload + l.ids_offset) : nullptr;
  v.topk_weights = routed ? reinterpret_cast<float*>(payload + l.weights_offset) : nullptr;
  return v;
}

op_status attention_exchange::post_dispatch(std::uint32_t slot, const step_id& id) noexcept {
  if (slot >= shape_.micro_batches) return op_status::error;
  pending_dispatch& d = dispatch_[slot];
  if (!d.begun) return record(slot, errc::internal, 0, header_check::ok, false);
  d.begun = false;
  d.id = id;
  failures_[slot] = {};
  const auto n = static_cast<std::uint32_t>(peers_.size());
  for (std::uint32_t f = 0; f < n; ++f) {
    if (post_recv(slot, f, tag_of(message_kind::combine, slot)) == op_status::error) {
      return op_status::error;
    }
  }
  dispatch_layout l = dispatch_layout::of(shape_, d.tokens, d.routed);
  header_fields h;
  h.kind = message_kind::dispatch;
  h.payload_dtype = shape_.dispatch_dtype;
  h.mode = shape_.mode;
  h.id = id;
  h.source = t_.rank();
  h.top_k = static_cast<std::uint16_t>(d.routed ? shape_.top_k : 0);
  h.hidden = shape_.hidden;
  h.token_count = d.tokens;
  h.vector_count = d.tokens;
  h.byte_count = l.bytes;
  write_header(shared_send_[slot].data, h);
  for (std::uint32_t f = 0; f < n; ++f) {
    op_handle op;
    op_status s = t_.post_send(peers_[f], tag_of(message_kind::dispatch, slot), arena_region_,
                               shared_send_[slot].offset, header_bytes + l.bytes, op);
    if (op.valid()) shared_send_ops_[slot].push_back(op);
    if (s == op_status::error) {
      errc code = op.valid() ? t_.result(op).code : errc::transport_error;
      return record(slot, code == errc::none ? errc::transport_error : code, f, header_check::ok,
                    false);
    }
  }
  return op_status::pending;
}

header_check attention_exchange::check_payload(std::uint32_t slot,
                                               const wire_header& h) const noexcept {
  const pending_dispatch& d = dispatch_[slot];
  if (h.hidden != shape_.hidden || h.mode != static_cast<std::uint8_t>(shape_.mode)) {
    return header_check::bad_length;
  }
  if (h.dtype != static_cast<std::uint8_t>(shape_.combine_dtype)) return header_check::bad_dtype;
  if (h.token_count != d.tokens) return header_check::bad_length;
  std::uint32_t max_vectors = shape_.mode == combine_mode::throughput
                                  ? d.tokens
                                  : d.tokens * ((d.routed ? shape_.top_k : 0) + 1);
  if (shape_.mode == combine_mode::throughput && h.vector_count != d.tokens) {
    return header_check::bad_length;
  }
  if (h.vector_count > max_vectors) return header_check::bad_length;
  if (h.byte_count != combine_layout::of(shape_, h.vector_count).bytes) return header_check::bad_length;
  return header_check::ok;
}

op_status attention_exchange::wait_combine(std::uint32_t slot, deadline until) noexcept {
  if (slot >= shape_.micro_batches) return op_status::error;
  op_status s = wait_recvs(slot, message_kind::combine, dispatch_[slot].id,
                           tag_of(message_kind::combine, slot), until);
  if (s != op_status::done) return s;
  return wait_sends(slot, until);
}

combine_view attention_exchange::received(std::uint32_t slot, std::uint32_t f) const noexcept {
  if (slot >= shape_.micro_batches || f >= peers_.size()) return {};
  const peer_slot& ps = slots_[std::size_t{slot} * peers_.size() + f];
  if (!ps.recv_ok) return {};
  const wire_header& h = header_of(ps.recv.data);
  combine_layout l = combine_layout::of(shape_, h.vector_count);
  std::byte* payload = ps.recv.data + header_bytes;
  combine_view v;
  v.token_count = h.token_count;
  v.vector_count = h.vector_count;
  v.cluster_tokens = h.cluster_tokens;
  if (shape_.combine_dtype == afd::dtype::f32) {
    v.vectors_f32 = reinterpret_cast<float*>(payload + l.vectors_offset);
  } else {
    v.vectors = reinterpret_cast<std::uint16_t*>(payload + l.vectors_offset);
  }
  v.entries = shape_.mode == combine_mode::deterministic
                  ? reinterpret_cast<combine_entry*>(payload + l.entries_offset)
                  : nullptr;
  return v;
}

// ---------------------------------------------------------------------------------------------

expected<std::unique_ptr<ffn_exchange>> ffn_exchange::create(transport& t, exchange_shape shape,
                                                             std::vector<peer_id> attention_peers) {
  if (auto ok = check_shape(shape, attention_peers.size()); !ok) return std::move(ok).err();
  std::unique_ptr<ffn_exchange> x(new ffn_exchange(t, shape, std::move(attention_peers)));
  std::size_t recv = header_bytes + dispatch_layout::of(shape, shape.max_tokens, true).bytes;
  std::size_t send = header_bytes + combine_layout::of(shape, max_combine_vectors(shape)).bytes;
  if (auto ok = x->allocate(recv, send, 0); !ok) return std::move(ok).err();
  x->received_id_.resize(shape.micro_batches);
  x->combine_.resize(std::size_t{shape.micro_batches} * x->peers_.size());
  return x;
}

op_status ffn_exchange::post_dispatch_receives(std::uint32_t slot) noexcept {
  if (slot >= shape_.micro_batches) return op_status::error;
  failures_[slot] = {};
  for (std::uint32_t a = 0; a < peers_.size(); ++a) {
    at(slot, a).recv_ok = false;
    if (post_recv(slot, a, tag_of(message_kind::dispatch, slot)) == op_status::error) {
      return op_status::error;
    }
  }
  return op_status::pending;
}

op_status ffn_exchange::wait_dispatch(std::uint32_t slot, const step_id& id,
                                      deadline until) noexcept {
  if (slot >= shape_.micro_batches) return op_status::error;
  received_id_[slot] = id;
  return wait_recvs(slot, message_kind::dispatch, id, tag_of(message_kind::dispatch, slot), until);
}

header_check ffn_exchange::check_payload(std::uint32_t, const wire_header& h) const noexcept {
  if (h.hidden != shape_.hidden || h.mode != static_cast<std::uint8_t>(shape_.mode)) {
    return header_check::bad_length;
  }
  if (h.dtype != static_cast<std::uint8_t>(shape_.dispatch_dtype)) return header_check::bad_dtype;
  if (h.top_k != 0 && h.top_k != shape_.top_k) return header_check::bad_length;
  if (h.token_count > shape_.max_tokens || h.vector_count != h.token_count) {
    return header_check::bad_length;
  }
  if (h.byte_count != dispatch_layout::of(shape_, h.token_count, h.top_k != 0).bytes) {
    return header_check::bad_length;
  }
  return header_check::ok;
}

dispatch_view ffn_exchange::received(std::uint32_t slot, std::uint32_t a) const noexcept {
  if (slot >= shape_.micro_batches || a >= peers_.size()) return {};
  const peer_slot& ps = slots_[std::size_t{slot} * peers_.size() + a];
  if (!ps.recv_ok) return {};
  dispatch_layout l = dispatch_layout::of(shape_, ps.recv_tokens, ps.recv_routed);
  std::byte* payload = ps.recv.data + header_bytes;
  dispatch_view v;
  v.token_count = ps.recv_tokens;
  v.tokens = payload + l.tokens_offset;
  v.scales = scales_per_token(shape_) != 0 ? reinterpret_cast<float*>(payload + l.scales_offset) : nullptr;
  v.topk_ids = ps.recv_routed ? reinterpret_cast<std::int32_t*>(payload + l.ids_offset) : nullptr;
  v.topk_weights = ps.recv_routed ? reinterpret_cast<float*>(payload + l.weights_offset) : nullptr;
  return v;
}

bool ffn_exchange::routed(std::uint32_t slot, std::uint32_t a) const noexcept {
  if (slot >= shape_.micro_batches || a >= peers_.size()) return false;
  return slots_[std::size_t{slot} * peers_.size() + a].recv_routed;
}

combine_view ffn_exchange::begin_combine(std::uint32_t slot, std::uint32_t a,
                                         std::uint32_t vectors, deadline until) noexcept {
  if (slot >= shape_.micro_batches || a >= peers_.size()) return {};
  peer_slot& ps = at(slot, a);
  std::uint32_t tokens = ps.recv_tokens;
  std::uint32_t max_vectors = shape_.mode == combine_mode::throughput
                                  ? tokens
                                  : tokens * ((ps.recv_routed ? shape_.top_k : 0) + 1);
  if ((shape_.mode == combine_mode::throughput && vectors != tokens) || vectors > max_vectors) {
    record(slot, errc::invalid_argument, a, header_check::ok, false);
    return {};
  }
  if (ps.send_posted) {
    op_status s = t_.wait(ps.send_op, until);
    if (s != op_status::done) {
      errc code = s == op_status::timeout ? errc::timeout : t_.result(ps.send_op).code;
      record(slot, code == errc::none ? errc::transport_error : code, a, header_check::ok, false);
      return {};
    }
    t_.release(ps.send_op);
    ps.send_posted = false;
  }
  combine_layout l = combine_layout::of(shape_, vectors);
  std::byte* payload = ps.send.data + header_bytes;
  combine_[std::size_t{slot} * peers_.size() + a] = {vectors, true};
  combine_view v;
  v.token_count = tokens;
  v.vector_count = vectors;
  if (shape_.combine_dtype == afd::dtype::f32) {
    v.vectors_f32 = reinterpret_cast<float*>(payload + l.vectors_offset);
  } else {
    v.vectors = reinterpret_cast<std::uint16_t*>(payload + l.vectors_offset);
  }
  v.entries = shape_.mode == combine_mode::deterministic
                  ? reinterpret_cast<combine_entry*>(payload + l.entries_offset)
                  : nullptr;
  return v;
}

op_status ffn_exchange::post_combine(std::uint32_t slot, std::uint32_t a) noexcept {
  if (slot >= shape_.micro_batches || a >= peers_.size()) return op_status::error;
  pending_combine& c = combine_[std::size_t{slot} * peers_.size() + a];
  if (!c.begun) return record(slot, errc::internal, a, header_check::ok, false);
  c.begun = false;
  peer_slot& ps = at(slot, a);
  combine_layout l = combine_layout::of(shape_, c.vectors);
  header_fields h;
  h.kind = message_kind::combine;
  h.payload_dtype = shape_.combine_dtype;
  h.mode = shape_.mode;
  h.id = received_id_[slot];
  h.source = t_.rank();
  h.top_k = static_cast<std::uint16_t>(shape_.top_k);
  h.hidden = shape_.hidden;
  h.token_count = ps.recv_tokens;
  h.vector_count = c.vectors;
  h.byte_count = l.bytes;
  for (std::uint32_t p = 0; p < peers_.size(); ++p) h.cluster_tokens += at(slot, p).recv_tokens;
  write_header(ps.send.data, h);
  op_status s = t_.post_send(peers_[a], tag_of(message_kind::combine, slot), arena_region_,
                             ps.send.offset, header_bytes + l.bytes, ps.send_op);
  if (ps.send_op.valid()) ps.send_posted = true;
  if (s == op_status::error) {
    errc code = ps.send_op.valid() ? t_.result(ps.send_op).code : errc::transport_error;
    return record(slot, code == errc::none ? errc::transport_error : code, a, header_check::ok,
                  false);
  }
  return s;
}

op_status ffn_exchange::wait_combine_sent(std::uint32_t slot, deadline until) noexcept {
  if (slot >= shape_.micro_batches) return op_status::error;
  return wait_sends(slot, until);
}

}  // namespace afd::transport
