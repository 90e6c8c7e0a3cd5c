#pragma once
// Internal device helpers shared by the .cu files: tensor-core MMA, conversions, reductions.
// Fragment layouts are those of PTX mma.m16n8k16 (row.col), with g = lane / 4, t = lane % 4:
//   A (16x16, 4 regs of 2 bf16): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8, 2 regs):            b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C (16x8, 4 f32):             c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// The lower 16 bits of a register hold the element with the smaller k (or column) index.

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace afd::kernels::cuda::detail {

/// c += a * b on tensor cores, bf16 inputs, f32 accumulation (sm_80 and newer).
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const std::uint32_t (&a)[4],
                                               const std::uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  // Older architectures have no bf16 mma; the host side refuses to launch there.
  (void)c; (void)a; (void)b;
  __trap();
#endif
}

/// Two f32 as one register of two bf16 (round to nearest even); `lo` in the low half.
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

/// One bf16 (as raw bits) from an f32, round to nearest even (bitwise as afd::f32_to_bf16,
/// including NaN -> quiet NaN).
__device__ __forceinline__ std::uint16_t f32_to_bf16_bits(float f) {
  const __nv_bfloat16 v = __float2bfloat16_rn(f);
  return *reinterpret_cast<const std::uint16_t*>(&v);
}

__device__ __forceinline__ float bf16_bits_to_f32(std::uint16_t h) {
  return __uint_as_float(static_cast<std::uint32_t>(h) << 16);
}

/// E4M3 byte -> f32 (exact).
__device__ __forceinline__ float fp8_to_f32(std::uint8_t v) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3);
  return __half2float(__half(h));
}

/// f32 -> E4M3 byte, round to nearest even, saturating to +-448 (NaN -> 0x7f).
__device__ __forceinline__ std::uint8_t f32_to_fp8(float f) {
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// cp.async of 16 bytes global -> shared; bytes beyond src_bytes (0 or 16) are zero-filled.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const auto s = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
#else
  (void)smem; (void)gmem; (void)src_bytes;
  __trap();
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/// Number of blocks of `threads` covering `n` items.
inline unsigned blocks_for(long long n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace afd::kernels::cuda::detail
