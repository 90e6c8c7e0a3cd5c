#pragma once
/// M:N dispatch and combine between A attention workers and F FFN workers over any transport.
///
/// Buffers are allocated and registered once, one per (micro-batch slot, peer) for receives and
/// one per slot (dispatch) or per (slot, attention worker) (combine) for sends; callers write
/// payloads straight into them (zero copy) and the same dispatch buffer goes to every FFN worker.
/// Receives are pre-posted. Every received header is validated; a message of an older epoch is
/// dropped and its receive re-posted; anything else unexpected is an error, never a guess.

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "transport/transport.hpp"
#include "transport/wire.hpp"

namespace afd::transport {

/// Shapes fixed for a run.
struct exchange_shape {
  std::uint32_t hidden = 0;          ///< H
  std::uint32_t top_k = 0;           ///< routed experts per token (0: dense layers only)
  std::uint32_t max_tokens = 0;      ///< tokens per attention worker per micro-batch
  std::uint32_t micro_batches = 1;   ///< slots: one set of buffers per micro-batch
  afd::dtype dispatch_dtype = afd::dtype::f8_e4m3;  ///< f8_e4m3, bf16 or f32
  std::uint32_t scale_block = 128;   ///< FP8: one f32 scale per token per block of hidden
  combine_mode mode = combine_mode::deterministic;
  afd::dtype combine_dtype = afd::dtype::bf16;  ///< bf16 or f32 (results F -> A)
};

/// Unit id of the shared expert (MoE layer) or the dense MLP (dense layer): sorts after every
/// routed expert, which is the canonical order.
inline constexpr std::uint32_t shared_unit = 0xFFFFFFFFu;

/// Payload offsets of a dispatch message carrying `tokens` tokens (relative to the payload,
/// which starts after the header); sections are 64-byte aligned.
struct dispatch_layout {
  std::size_t tokens_offset = 0, scales_offset = 0, ids_offset = 0, weights_offset = 0;
  std::size_t bytes = 0;  ///< payload bytes
  static dispatch_layout of(const exchange_shape& s, std::uint32_t tokens, bool routed) noexcept;
};

/// Payload offsets of a combine message carrying `vectors` vectors of combine_dtype.
struct combine_layout {
  std::size_t vectors_offset = 0, entries_offset = 0;
  std::size_t bytes = 0;
  static combine_layout of(const exchange_shape& s, std::uint32_t vectors) noexcept;
};

/// A (token, unit) entry naming one vector of a deterministic combine message.
struct combine_entry {
  std::uint32_t token;
  std::uint32_t unit;  ///< routed expert index, or shared_unit
};

/// Writable (sender) or readable (receiver) view of a dispatch payload.
struct dispatch_view {
  std::uint32_t token_count = 0;
  std::byte* tokens = nullptr;        ///< [T, H] in dispatch_dtype
  float* scales = nullptr;            ///< [T, ceil(H/scale_block)] (FP8 only, else null)
  std::int32_t* topk_ids = nullptr;   ///< [T, top_k]
  float* topk_weights = nullptr;      ///< [T, top_k]
};

/// Writable or readable view of a combine payload.
struct combine_view {
  std::uint32_t token_count = 0;      ///< tokens of the attention worker's micro-batch
  std::uint32_t vector_count = 0;     ///< deterministic: vectors; throughput: = token_count
  std::uint32_t cluster_tokens = 0;   ///< received: tokens of every attention worker in this exchange
  std::uint16_t* vectors = nullptr;   ///< [V, H] BF16 bits (combine_dtype bf16, else null)
  float* vectors_f32 = nullptr;       ///< [V, H] (combine_dtype f32, else null)
  combine_entry* entries = nullptr;   ///< [V] (deterministic only, else null)
};

/// Owns the aligned, registered buffers of one side; shared machinery of both sides.
class exchange_base {
 public:
  /// Arenas left allocated because UCX still held a send from them when their exchange ended
  /// (freeing them would let UCX read freed memory); counted for diagnostics.
  static std::atomic<std::uint64_t> retired_arenas;
  exchange_base(const exchange_base&) = delete;
  exchange_base& operator=(const exchange_base&) = delete;
  exchange_base(exchange_base&&) = delete;
  virtual ~exchange_base();

  const exchange_shape& shape() const noexcept { return shape_; }
  /// A description of the last failure of a slot (peer, header check, errc); allocates.
  error last_error(std::uint32_t slot) const;
  /// The rank of the peer the last failure of a slot concerns (the one waited on, or the sender of
  /// a rejected message); -1 when none.
  int last_peer_rank(std::uint32_t slot) const noexcept;

 protected:
  struct failure {
    errc code = errc::none;
    std::uint32_t peer_index = 0;
    header_check check = header_check::ok;
    bool receiving = false;
  };
  struct buffer {
    std::byte* data = nullptr;
    std::size_t offset = 0;  // in the registered arena
    std::size_t capacity = 0;
  };
  struct peer_slot {
    buffer recv;
    op_handle recv_op;
    bool recv_posted = false;
    bool recv_ok = false;
    std::uint32_t recv_tokens = 0;  // token count of the validated message
    bool recv_routed = false;
    buffer send;       // combine sends (FFN side): one per (slot, attention worker)
    op_handle send_op;
    bool send_posted = false;
  };

  exchange_base(transport& t, exchange_shape shape, std::vector<peer_id> peers);
  expected<void> allocate(std::size_t recv_capacity, std::size_t per_peer_send_capacity,
                          std::size_t shared_send_capacity);
  peer_slot& at(std::uint32_t slot, std::uint32_t peer) noexcept {
    return slots_[std::size_t{slot} * peers_.size() + peer];
  }
  op_status post_recv(std::uint32_t slot, std::uint32_t peer, std::uint64_t tag) noexcept;
  /// Waits for every posted receive of the slot, validating headers; re-posts stale ones.
  op_status wait_recvs(std::uint32_t slot, message_kind kind, const step_id& id,
                       std::uint64_t tag, deadline until) noexcept;
  /// Waits for the slot's posted sends (per-peer and shared).
  op_status wait_sends(std::uint32_t slot, deadline until) noexcept;
  op_status record(std::uint32_t slot, errc code, std::uint32_t peer, header_check check,
                   bool receiving) noexcept;
  static std::uint64_t tag_of(message_kind kind, std::uint32_t slot) noexcept {
    return (std::uint64_t{static_cast<std::uint8_t>(kind)} << 32) | slot;
  }
  /// Checks payload fields of a header that validated (shapes, counts); the slot's receive
  /// buffer of that peer holds the message.
  virtual header_check check_payload(std::uint32_t slot, const wire_header& h) const noexcept = 0;

  transport& t_;
  exchange_shape shape_;
  std::vector<peer_id> peers_;
  std::vector<peer_slot> slots_;
  std::vector<buffer> shared_send_;       // dispatch sends: one buffer per slot
  std::vector<std::vector<op_handle>> shared_send_ops_;
  std::vector<failure> failures_;
  std::vector<op_handle> scratch_ops_;
  std::byte* arena_ = nullptr;
  region arena_region_;
};

/// The attention worker's side: dispatch to every FFN worker, receive their results. Summing them
/// is the caller's (the data plane sums units with engine::combine_units, as the reference engine
/// does): the exchange moves and validates bytes, it does not know which units a layer has.
class attention_exchange final : public exchange_base {
 public:
  /// `ffn_peers[f]` is the connected peer of FFN worker f (its rank is in the transport).
  static expected<std::unique_ptr<attention_exchange>> create(transport& t, exchange_shape shape,
                                                              std::vector<peer_id> ffn_peers);
  /// Where to write a slot's dispatch of `tokens` tokens; `routed` (an MoE layer) includes
  /// top-k ids and weights, a dense layer sends tokens (and scales) only. Waits (up to `until`)
  /// for the slot's previous dispatch sends; on failure the view's tokens is null.
  dispatch_view begin_dispatch(std::uint32_t slot, std::uint32_t tokens, bool routed,
                               deadline until) noexcept;
  /// Pre-posts the slot's combine receives, then sends the dispatch written since begin_dispatch
  /// to every FFN worker (one buffer, F sends).
  op_status post_dispatch(std::uint32_t slot, const step_id& id) noexcept;
  /// Waits for every FFN worker's combine message of the posted id (validated; older epochs are
  /// dropped) and for the dispatch sends.
  op_status wait_combine(std::uint32_t slot, deadline until) noexcept;
  /// The validated combine message of FFN worker f (after wait_combine returned done).
  combine_view received(std::uint32_t slot, std::uint32_t f) const noexcept;

 private:
  using exchange_base::exchange_base;
  header_check check_payload(std::uint32_t slot, const wire_header& h) const noexcept override;
  struct pending_dispatch {
    step_id id;
    std::uint32_t tokens = 0;
    bool routed = false;
    bool begun = false;
  };
  std::vector<pending_dispatch> dispatch_;
};

/// The FFN worker's side: receive every attention worker's dispatch, return results to each.
class ffn_exchange final : public exchange_base {
 public:
  /// `attention_peers[a]` is the connected peer of attention worker a.
  static expected<std::unique_ptr<ffn_exchange>> create(transport& t, exchange_shape shape,
                                                        std::vector<peer_id> attention_peers);
  /// Pre-posts the slot's dispatch receives (once at start, then after the slot's dispatches
  /// were consumed).
  op_status post_dispatch_receives(std::uint32_t slot) noexcept;
  /// Waits for every attention worker's dispatch of `id` (validated; older epochs dropped).
  op_status wait_dispatch(std::uint32_t slot, const step_id& id, deadline until) noexcept;
  /// The validated dispatch of attention worker a (after wait_dispatch returned done).
  dispatch_view received(std::uint32_t slot, std::uint32_t a) const noexcept;
  /// Whether attention worker a's dispatch carried top-k ids (an MoE layer).
  bool routed(std::uint32_t slot, std::uint32_t a) const noexcept;
  /// Where to write results for attention worker a: `vectors` BF16 vectors (throughput mode:
  /// must equal the worker's token count). Waits for the previous send to a from this slot.
  combine_view begin_combine(std::uint32_t slot, std::uint32_t a, std::uint32_t vectors,
                             deadline until) noexcept;
  /// Sends what was written since begin_combine to attention worker a; the header carries the
  /// token count of every attention worker's dispatch of the slot (cluster_tokens).
  op_status post_combine(std::uint32_t slot, std::uint32_t a) noexcept;
  /// Waits for the slot's combine sends.
  op_status wait_combine_sent(std::uint32_t slot, deadline until) noexcept;

 private:
  using exchange_base::exchange_base;
  header_check check_payload(std::uint32_t slot, const wire_header& h) const noexcept override;
  struct pending_combine {
    std::uint32_t vectors = 0;
    bool begun = false;
  };
  std::vector<step_id> received_id_;
  std::vector<pending_combine> combine_;
};

}  // namespace afd::transport
