// The CPU backend behind the kernel interface: each op is the kernels::cpu function of the same
// name with the same arguments, so results through the interface are those of the direct calls
// (bitwise). Its memory is host memory.
#include <cstdlib>
#include <cstring>

#include "kernels/backend.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

namespace afd::kernels {

namespace {

class cpu_backend final : public backend {
 public:
  std::string name() const override { return "cpu"; }
  const std::string& device() const noexcept override { return device_; }
  bool host_memory() const noexcept override { return true; }

  expected<void*> allocate(std::size_t bytes) override {
    if (bytes == 0) return static_cast<void*>(nullptr);
    // 64-byte alignment, as device allocations give at least 256: SIMD loads never straddle lines.
    void* memory = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (memory == nullptr) return fail(errc::unavailable, "cpu: cannot allocate ", bytes, " bytes");
    return memory;
  }
  void release(void* memory) noexcept override { std::free(memory); }
  expected<void> copy_to_backend(void* dst, const void* host_src, std::size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, host_src, bytes);
    return {};
  }
  expected<void> copy_to_host(void* host_dst, const void* src, std::size_t bytes) override {
    if (bytes > 0) std::memcpy(host_dst, src, bytes);
    return {};
  }

  op_status gather_rows(const gather_rows_params& p) override {
    cpu::gather_rows(p.table, p.ids, p.out);
    return op_status::ok;
  }
  op_status rmsnorm(const rmsnorm_params& p) override {
    cpu::rmsnorm(p.x, p.m, p.n, p.weight.data(), p.eps, p.y);
    return op_status::ok;
  }
  op_status gemm(const gemm_params& p) override {
    cpu::gemm(p.x, p.m, p.w, p.y);
    return op_status::ok;
  }
  op_status rope(const rope_params& p) override {
    cpu::rope_neox(p.x, p.m, p.heads, p.head_dim, p.positions.data(), p.theta);
    return op_status::ok;
  }
  op_status kv_append(const kv_append_params& p) override {
    cpu::kv_append(p.cache, p.slots, p.k, p.v);
    return op_status::ok;
  }
  op_status attention(const attention_params& p) override {
    cpu::attention(p.cache, p.slots, p.q, p.heads, p.scale, p.out);
    return op_status::ok;
  }
  op_status router_topk(const router_topk_params& p) override {
    cpu::router_topk(p.logits, p.m, p.n_experts, p.k, p.renormalise, p.ids, p.weights);
    return op_status::ok;
  }
  op_status swiglu(const swiglu_params& p) override {
    cpu::swiglu(p.x, p.m, p.gate, p.up, p.down, p.y, p.scratch.data());
    return op_status::ok;
  }
  op_status quantize_fp8(const quantize_fp8_params& p) override {
    cpu::quantize_fp8(p.x, p.m, p.n, p.q, p.scales);
    return op_status::ok;
  }
  op_status dequantize_fp8(const dequantize_fp8_params& p) override {
    cpu::dequantize_fp8(p.q, p.scales, p.m, p.n, p.x);
    return op_status::ok;
  }
  op_status round_activations(const round_activations_params& p) override {
    cpu::round_activations(p.wire, p.x, p.m, p.n);
    return op_status::ok;
  }
  op_status sample(const sample_params& p) override {
    *p.token = cpu::sample(p.logits, p.vocab, p.sampling, p.token_index);
    return op_status::ok;
  }

  std::string last_error() const override { return {}; }

 private:
  std::string device_ = "cpu";
};

}  // namespace

std::unique_ptr<backend> make_cpu_backend() { return std::make_unique<cpu_backend>(); }

}  // namespace afd::kernels
