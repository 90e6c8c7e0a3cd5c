// The checking dispatch layer (as FlashMLA's api/*.h and flashinfer's utils.cuh check before they
// launch): every op's shapes, pointers and dtypes are validated here, once for every backend, so
// the backends trust their arguments. A violation is invalid_argument with a message naming the op
// and the tensor; success costs a few comparisons and never allocates.
#include <cstdarg>
#include <cstdio>

#include "kernels/backend.hpp"

namespace afd::kernels {

namespace {

bool weight_type_ok(dtype t) { return t == dtype::f32 || t == dtype::bf16 || t == dtype::f16; }
bool kv_type_ok(dtype t) { return t == dtype::f32 || t == dtype::bf16 || t == dtype::f8_e4m3; }

class checked_backend final : public backend {
 public:
  explicit checked_backend(std::unique_ptr<backend> inner) : inner_(std::move(inner)) {}

  std::string name() const override { return "checked(" + inner_->name() + ")"; }
  const std::string& device() const noexcept override { return inner_->device(); }
  bool host_memory() const noexcept override { return inner_->host_memory(); }
  expected<void*> allocate(std::size_t bytes) override { return inner_->allocate(bytes); }
  void release(void* memory) noexcept override { inner_->release(memory); }
  expected<void> copy_to_backend(void* dst, const void* host_src, std::size_t bytes) override {
    if (bytes > 0 && (dst == nullptr || host_src == nullptr))
      return fail(errc::invalid_argument, "copy_to_backend: null pointer for ", bytes, " bytes");
    return inner_->copy_to_backend(dst, host_src, bytes);
  }
  expected<void> copy_to_host(void* host_dst, const void* src, std::size_t bytes) override {
    if (bytes > 0 && (host_dst == nullptr || src == nullptr))
      return fail(errc::invalid_argument, "copy_to_host: null pointer for ", bytes, " bytes");
    return inner_->copy_to_host(host_dst, src, bytes);
  }

  op_status gather_rows(const gather_rows_params& p) override {
    if (p.ids.empty()) return ok();
    if (!weight(p.table, "gather_rows", "table") || !present(p.out, "gather_rows", "out")) return bad();
    for (std::size_t i = 0; i < p.ids.size(); ++i)
      if (p.ids[i] < 0 || p.ids[i] >= p.table.rows)
        return reject("gather_rows: ids[%zu] = %d is outside the table's rows [0, %lld)", i, p.ids[i],
                      ll(p.table.rows));
    return run(inner_->gather_rows(p), "gather_rows");
  }

  op_status rmsnorm(const rmsnorm_params& p) override {
    if (p.m == 0) return ok();
    if (!rows(p.m, p.n, "rmsnorm", "x") || !present(p.x, "rmsnorm", "x") || !present(p.y, "rmsnorm", "y"))
      return bad();
    if (static_cast<std::int64_t>(p.weight.size()) != p.n)
      return reject("rmsnorm: weight has %zu values; x is [%lld, %lld], so it needs %lld", p.weight.size(), ll(p.m),
                    ll(p.n), ll(p.n));
    if (!(p.eps >= 0.0f)) return reject("rmsnorm: eps must be >= 0, got %g", static_cast<double>(p.eps));
    return run(inner_->rmsnorm(p), "rmsnorm");
  }

  op_status gemm(const gemm_params& p) override {
    if (p.m == 0) return ok();
    if (!rows(p.m, p.k, "gemm", "x") || !present(p.x, "gemm", "x") || !present(p.y, "gemm", "y") ||
        !weight(p.w, "gemm", "w"))
      return bad();
    if (p.w.cols != p.k)
      return reject("gemm: x is [%lld, %lld] but weight w is [%lld out, %lld in]: x's width must equal w's in-features",
                    ll(p.m), ll(p.k), ll(p.w.rows), ll(p.w.cols));
    return run(inner_->gemm(p), "gemm");
  }

  op_status rope(const rope_params& p) override {
    if (p.m == 0) return ok();
    if (!present(p.x, "rope", "x") || !rows(p.m, p.heads, "rope", "x (heads)")) return bad();
    if (p.head_dim <= 0 || p.head_dim % 2 != 0)
      return reject("rope: x's head_dim must be positive and even (rotate-half pairs), got %lld", ll(p.head_dim));
    if (static_cast<std::int64_t>(p.positions.size()) != p.m)
      return reject("rope: positions has %zu entries for %lld tokens of x", p.positions.size(), ll(p.m));
    for (std::size_t i = 0; i < p.positions.size(); ++i)
      if (p.positions[i] < 0) return reject("rope: positions[%zu] = %d is negative", i, p.positions[i]);
    if (!(p.theta > 0.0)) return reject("rope: theta must be positive, got %g", p.theta);
    return run(inner_->rope(p), "rope");
  }

  op_status kv_append(const kv_append_params& p) override {
    if (p.slots.empty()) return ok();
    if (!cache(p.cache, p.slots, "kv_append") || !present(p.k, "kv_append", "k") || !present(p.v, "kv_append", "v"))
      return bad();
    if (p.width != p.cache.head_dim)
      return reject("kv_append: k and v rows have width %lld; the cache's head_dim is %lld", ll(p.width),
                    ll(p.cache.head_dim));
    return run(inner_->kv_append(p), "kv_append");
  }

  op_status attention(const attention_params& p) override {
    if (p.slots.empty()) return ok();
    if (!cache(p.cache, p.slots, "attention") || !present(p.q, "attention", "q") ||
        !present(p.out, "attention", "out") || !rows(static_cast<std::int64_t>(p.slots.size()), p.heads, "attention", "q (heads)"))
      return bad();
    if (p.head_dim != p.cache.head_dim)
      return reject("attention: q's head_dim is %lld; the cache's is %lld (MFA shares one K/V head of the same width)",
                    ll(p.head_dim), ll(p.cache.head_dim));
    if (!(p.scale > 0.0f)) return reject("attention: scale must be positive, got %g", static_cast<double>(p.scale));
    return run(inner_->attention(p), "attention");
  }

  op_status router_topk(const router_topk_params& p) override {
    if (p.m == 0) return ok();
    if (!rows(p.m, p.n_experts, "router_topk", "logits") || !present(p.logits, "router_topk", "logits") ||
        !present(p.ids, "router_topk", "ids") || !present(p.weights, "router_topk", "weights"))
      return bad();
    if (p.k <= 0 || p.k > p.n_experts)
      return reject("router_topk: k = %lld must be in [1, %lld] (the experts of logits [%lld, %lld])", ll(p.k),
                    ll(p.n_experts), ll(p.m), ll(p.n_experts));
    return run(inner_->router_topk(p), "router_topk");
  }

  op_status swiglu(const swiglu_params& p) override {
    if (p.m == 0) return ok();
    if (!rows(p.m, p.hidden, "swiglu", "x") || !present(p.x, "swiglu", "x") || !present(p.y, "swiglu", "y") ||
        !weight(p.gate, "swiglu", "gate") || !weight(p.up, "swiglu", "up") || !weight(p.down, "swiglu", "down"))
      return bad();
    if (p.gate.cols != p.hidden)
      return reject("swiglu: gate is [%lld, %lld] but x is [%lld, %lld]: gate's in-features must equal x's width",
                    ll(p.gate.rows), ll(p.gate.cols), ll(p.m), ll(p.hidden));
    if (p.up.rows != p.gate.rows || p.up.cols != p.gate.cols)
      return reject("swiglu: up is [%lld, %lld], gate is [%lld, %lld]: they must match", ll(p.up.rows),
                    ll(p.up.cols), ll(p.gate.rows), ll(p.gate.cols));
    if (p.down.rows != p.hidden || p.down.cols != p.gate.rows)
      return reject("swiglu: down is [%lld, %lld]; it must be [%lld, %lld] (hidden x gate's rows)", ll(p.down.rows),
                    ll(p.down.cols), ll(p.hidden), ll(p.gate.rows));
    if (static_cast<std::int64_t>(p.scratch.size()) < 2 * p.m * p.gate.rows)
      return reject("swiglu: scratch holds %zu floats; %lld tokens x width %lld need %lld", p.scratch.size(), ll(p.m),
                    ll(p.gate.rows), ll(2 * p.m * p.gate.rows));
    return run(inner_->swiglu(p), "swiglu");
  }

  op_status quantize_fp8(const quantize_fp8_params& p) override {
    if (p.m == 0) return ok();
    if (!rows(p.m, p.n, "quantize_fp8", "x") || !present(p.x, "quantize_fp8", "x") ||
        !present(p.q, "quantize_fp8", "q") || !present(p.scales, "quantize_fp8", "scales"))
      return bad();
    return run(inner_->quantize_fp8(p), "quantize_fp8");
  }

  op_status dequantize_fp8(const dequantize_fp8_params& p) override {
    if (p.m == 0) return ok();
    if (!rows(p.m, p.n, "dequantize_fp8", "q") || !present(p.q, "dequantize_fp8", "q") ||
        !present(p.scales, "dequantize_fp8", "scales") || !present(p.x, "dequantize_fp8", "x"))
      return bad();
    return run(inner_->dequantize_fp8(p), "dequantize_fp8");
  }

  op_status round_activations(const round_activations_params& p) override {
    if (p.m == 0) return ok();
    if (!rows(p.m, p.n, "round_activations", "x") || !present(p.x, "round_activations", "x")) return bad();
    if (p.wire != dtype::f32 && p.wire != dtype::bf16 && p.wire != dtype::f16 && p.wire != dtype::f8_e4m3)
      return reject("round_activations: wire dtype %s is not f32, bf16, f16 or f8_e4m3", std::string(afd::to_string(p.wire)).c_str());
    return run(inner_->round_activations(p), "round_activations");
  }

  op_status sample(const sample_params& p) override {
    if (!present(p.logits, "sample", "logits") || !present(p.token, "sample", "token")) return bad();
    if (p.vocab <= 0) return reject("sample: logits has %lld entries; it needs at least one", ll(p.vocab));
    if (!(p.sampling.temperature >= 0.0f) || !(p.sampling.top_p > 0.0f && p.sampling.top_p <= 1.0f) ||
        p.sampling.top_k < 0)
      return reject("sample: sampling settings out of range (temperature %g, top_k %d, top_p %g)",
                    static_cast<double>(p.sampling.temperature), p.sampling.top_k,
                    static_cast<double>(p.sampling.top_p));
    return run(inner_->sample(p), "sample");
  }

  std::string last_error() const override { return error_; }

 private:
  static long long ll(std::int64_t v) { return static_cast<long long>(v); }

  op_status ok() {
    error_.clear();
    return op_status::ok;
  }
  op_status bad() const { return op_status::invalid_argument; }

  __attribute__((format(printf, 2, 3))) op_status reject(const char* format, ...) {
    char text[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(text, sizeof text, format, args);
    va_end(args);
    error_ = text;
    return op_status::invalid_argument;
  }

  op_status run(op_status s, const char* op) {
    if (s == op_status::ok) return ok();
    error_ = std::string(op) + " on " + inner_->device() + ": " + to_string(s);
    if (std::string inner = inner_->last_error(); !inner.empty()) error_ += ": " + inner;
    return s;
  }

  bool present(const void* p, const char* op, const char* tensor) {
    if (p != nullptr) return true;
    reject("%s: %s is a null pointer", op, tensor);
    return false;
  }
  bool rows(std::int64_t m, std::int64_t n, const char* op, const char* tensor) {
    if (m > 0 && n > 0) return true;
    reject("%s: %s has shape [%lld, %lld]; both must be positive", op, tensor, ll(m), ll(n));
    return false;
  }
  bool weight(const weight_view& w, const char* op, const char* tensor) {
    if (w.data == nullptr) {
      reject("%s: weight %s has no data", op, tensor);
      return false;
    }
    if (w.rows <= 0 || w.cols <= 0) {
      reject("%s: weight %s has shape [%lld, %lld]; both must be positive", op, tensor, ll(w.rows), ll(w.cols));
      return false;
    }
    if (!weight_type_ok(w.type)) {
      reject("%s: weight %s is %s; f32, bf16 or f16 expected", op, tensor, std::string(afd::to_string(w.type)).c_str());
      return false;
    }
    return true;
  }
  /// The cache view and every slot: a block table, a position inside the cache, the block holding
  /// the position in [0, num_blocks).
  bool cache(const kv_layer_view& c, std::span<const kv_slot> slots, const char* op) {
    if (c.k == nullptr || c.v == nullptr) {
      reject("%s: cache has no %s storage", op, c.k == nullptr ? "K" : "V");
      return false;
    }
    if (c.num_blocks <= 0 || c.block_size <= 0 || c.head_dim <= 0) {
      reject("%s: cache has %lld blocks of %lld tokens x head_dim %lld; all must be positive", op, ll(c.num_blocks),
             ll(c.block_size), ll(c.head_dim));
      return false;
    }
    if (!kv_type_ok(c.type)) {
      reject("%s: cache dtype %s is not f32, bf16 or f8_e4m3", op, std::string(afd::to_string(c.type)).c_str());
      return false;
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      const kv_slot& s = slots[i];
      if (s.block_table == nullptr) {
        reject("%s: slots[%zu] has no block table", op, i);
        return false;
      }
      if (s.position < 0) {
        reject("%s: slots[%zu] has position %d", op, i, s.position);
        return false;
      }
      // Every block up to the token's own holds positions it reads (attention) or writes.
      for (std::int64_t b = 0; b <= s.position / c.block_size; ++b) {
        const std::int32_t block = s.block_table[b];
        if (block < 0 || block >= c.num_blocks) {
          reject("%s: slots[%zu] (position %d): block_table[%lld] = %d is outside the cache's blocks [0, %lld)", op, i,
                 s.position, ll(b), block, ll(c.num_blocks));
          return false;
        }
      }
    }
    return true;
  }

  std::unique_ptr<backend> inner_;
  std::string error_;
};

}  // namespace

std::unique_ptr<backend> make_checked_backend(std::unique_ptr<backend> inner) {
  return std::make_unique<checked_backend>(std::move(inner));
}

}  // namespace afd::kernels
