// afd-bench-cuda: the CUDA kernels at Step-3 dims, each beside a ceiling measured in the same run.
//   1. device-to-device copy bandwidth (cudaMemcpy, counted as bytes read + bytes written);
//   2. MFA decode attention, 64 heads x head_dim 256, 64/128 sequences, contexts 4K/8K/32K, bf16 and
//      fp8 KV, several kv_chunk values: achieved KV bytes/s over the copy bandwidth (goal >= 0.85);
//   3. MoE experts, hidden 7168, expert width 5120, 48 experts, top-3 + the shared expert, 1K-8K
//      tokens: TFLOP/s over cuBLAS's on GEMMs of the same FLOPs (goal >= 0.7);
//   4. one whole attention layer (projections included), 8K context, 64 sequences, fp8 KV, beside
//      the 281 us the Step-3 report measured on an H800.
// Usage: afd-bench-cuda [--quick]   (--quick: fewer shapes and repetitions)
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_kernels.hpp"

namespace cu = afd::kernels::cuda;
using afd::dtype;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "afd-bench-cuda: %s\n", what.c_str());
  std::exit(1);
}

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) die(std::string(what) + ": " + cudaGetErrorString(e));
}
void ok(cu::launch_status s, const char* what) {
  if (s != cu::launch_status::ok) die(std::string(what) + ": " + cu::to_string(s) + " " + cu::last_launch_error());
}
void ok(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) die(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}

cu::device_buffer alloc(std::size_t bytes) {
  auto b = cu::device_buffer::allocate(std::max<std::size_t>(bytes, 256));
  if (!b) die(b.err().to_string());
  return std::move(*b);
}

template <class T>
cu::device_buffer upload(const std::vector<T>& v, cudaStream_t s) {
  auto b = alloc(v.size() * sizeof(T));
  ok(cudaMemcpyAsync(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, s), "upload");
  ok(cudaStreamSynchronize(s), "upload sync");
  return b;
}

/// Fills device memory with small random bf16 values (or fp8 codes) so that no NaN appears.
void fill_random(cu::device_buffer& b, dtype t, cudaStream_t s, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-0.5f, 0.5f);
  // A 1 MiB random pattern repeated: enough to be realistic data, cheap to generate.
  const std::size_t pattern_bytes = std::min<std::size_t>(b.size(), 1u << 20);
  std::vector<std::uint8_t> pattern(pattern_bytes);
  if (t == dtype::f8_e4m3) {
    for (auto& x : pattern) x = afd::f32_to_fp8_e4m3(d(rng));
  } else {
    for (std::size_t i = 0; i + 1 < pattern_bytes; i += 2) {
      const std::uint16_t h = afd::f32_to_bf16(d(rng));
      std::memcpy(&pattern[i], &h, 2);
    }
  }
  for (std::size_t off = 0; off < b.size(); off += pattern_bytes)
    ok(cudaMemcpyAsync(static_cast<std::uint8_t*>(b.data()) + off, pattern.data(),
                       std::min(pattern_bytes, b.size() - off), cudaMemcpyHostToDevice, s),
       "fill");
  ok(cudaStreamSynchronize(s), "fill sync");
}

/// Median time in microseconds of `reps` runs of f (after one warm-up), timed with events.
double time_us(cudaStream_t s, int reps, const std::function<void()>& f) {
  cudaEvent_t a, b;
  ok(cudaEventCreate(&a), "event");
  ok(cudaEventCreate(&b), "event");
  f();
  ok(cudaStreamSynchronize(s), "warm-up");
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    ok(cudaEventRecord(a, s), "record");
    f();
    ok(cudaEventRecord(b, s), "record");
    ok(cudaEventSynchronize(b), "sync");
    float ms = 0;
    ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
    times.push_back(ms * 1000.0);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// Row-major y[m, n] = x[m, k] * w[n, k]^T with cuBLAS, bf16 in, f32 accumulate, bf16 out.
void cublas_gemm(cublasHandle_t h, const void* x, const void* w, void* y, int m, int n, int k) {
  const float alpha = 1.0f, beta = 0.0f;
  ok(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k, &beta, y,
                  CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
     "cublasGemmEx");
}

// ---------------------------------------------------------------------------------------------

double copy_bandwidth(cudaStream_t s, int reps) {
  const std::size_t bytes = std::size_t{1} << 30;
  auto a = alloc(bytes), b = alloc(bytes);
  ok(cudaMemsetAsync(a.data(), 1, bytes, s), "memset");
  const double us = time_us(s, reps, [&] { ok(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s), "copy"); });
  const double bw = 2.0 * static_cast<double>(bytes) / (us * 1e-6);
  std::printf("device-to-device copy: %.1f GB/s (read + write of 1 GiB, %.0f us)\n", bw / 1e9, us);
  return bw;
}

void bench_decode(cudaStream_t s, double copy_bw, bool quick) {
  const std::int64_t heads = 64, d = 256, block = 64;
  std::printf("\nMFA decode attention, %lld heads x head_dim %lld, block %lld (goal: bytes/s over copy bandwidth >= 0.85)\n",
              static_cast<long long>(heads), static_cast<long long>(d), static_cast<long long>(block));
  std::printf("%-5s %5s %6s %6s %10s %10s %8s\n", "kv", "seqs", "ctx", "chunk", "time_us", "GB/s", "ratio");
  const std::vector<std::int64_t> seqs_list = quick ? std::vector<std::int64_t>{64} : std::vector<std::int64_t>{64, 128};
  const std::vector<std::int64_t> ctx_list = quick ? std::vector<std::int64_t>{8192} : std::vector<std::int64_t>{4096, 8192, 32768};
  for (const dtype kv : {dtype::f8_e4m3, dtype::bf16})
    for (const auto seqs : seqs_list)
      for (const auto ctx : ctx_list) {
        const std::int64_t blocks_per_seq = ctx / block, num_blocks = seqs * blocks_per_seq;
        const std::size_t cache_bytes = static_cast<std::size_t>(num_blocks * block * d) * afd::size_of(kv);
        auto k = alloc(cache_bytes), v = alloc(cache_bytes);
        fill_random(k, kv, s, 1);
        fill_random(v, kv, s, 2);
        // Block tables: a random permutation of the blocks, as a long-running cache looks.
        std::vector<std::int32_t> table(static_cast<std::size_t>(num_blocks));
        for (std::size_t i = 0; i < table.size(); ++i) table[i] = static_cast<std::int32_t>(i);
        std::shuffle(table.begin(), table.end(), std::mt19937(3));
        std::vector<std::int32_t> seq(static_cast<std::size_t>(seqs)), pos(static_cast<std::size_t>(seqs),
                                                                              static_cast<std::int32_t>(ctx - 1));
        for (std::size_t i = 0; i < seq.size(); ++i) seq[i] = static_cast<std::int32_t>(i);
        auto dt = upload(table, s), ds = upload(seq, s), dp = upload(pos, s);
        std::vector<float> qh(static_cast<std::size_t>(seqs * heads * d), 0.01f);
        auto dq = upload(qh, s);
        auto dout = alloc(qh.size() * 4);
        cu::kv_cache_view view{kv, k.data(), v.data(), num_blocks, block, d};
        cu::kv_token_slots slots{dt.as<std::int32_t>(), blocks_per_seq, ds.as<std::int32_t>(), dp.as<std::int32_t>(), seqs};
        const double kv_bytes = 2.0 * static_cast<double>(seqs * ctx * d) * static_cast<double>(afd::size_of(kv));
        for (const std::int64_t chunk : {512, 1024, 2048}) {
          const std::size_t ws_bytes = cu::attention_workspace_bytes(seqs, heads, d, ctx, chunk);
          auto ws = alloc(ws_bytes);
          const double us = time_us(s, quick ? 5 : 20, [&] {
            ok(cu::attention(view, slots, dq.as<float>(), heads, 0.0625f, ctx, dout.as<float>(), ws.data(), ws_bytes, s,
                             chunk),
               "attention");
          });
          const double bw = kv_bytes / (us * 1e-6);
          std::printf("%-5s %5lld %6lld %6lld %10.1f %10.1f %8.3f\n", std::string(afd::to_string(kv)).c_str(),
                      static_cast<long long>(seqs), static_cast<long long>(ctx), static_cast<long long>(chunk), us,
                      bw / 1e9, bw / copy_bw);
        }
      }
}

void bench_moe(cudaStream_t s, cublasHandle_t blas, bool quick) {
  const std::int64_t H = 7168, I = 5120, E = 48, topk = 3;
  std::printf("\nMoE experts: hidden %lld, width %lld, %lld experts, top-%lld + shared expert (goal: ratio >= 0.7)\n",
              static_cast<long long>(H), static_cast<long long>(I), static_cast<long long>(E), static_cast<long long>(topk));
  std::printf("%-5s %6s %10s %10s %12s %12s %8s\n", "w", "tokens", "ours_us", "TFLOP/s", "cublas_us", "cuBLAS TF/s",
              "ratio");
  // Weights of all experts plus the shared expert as group E.
  const std::size_t per = static_cast<std::size_t>(I * H);
  auto gate = alloc((E + 1) * per * 2), up = alloc((E + 1) * per * 2), down = alloc((E + 1) * per * 2);
  fill_random(gate, dtype::bf16, s, 4);
  fill_random(up, dtype::bf16, s, 5);
  fill_random(down, dtype::bf16, s, 6);
  auto gate8 = alloc((E + 1) * per), up8 = alloc((E + 1) * per), down8 = alloc((E + 1) * per);
  fill_random(gate8, dtype::f8_e4m3, s, 7);
  fill_random(up8, dtype::f8_e4m3, s, 8);
  fill_random(down8, dtype::f8_e4m3, s, 9);
  const std::size_t scales = static_cast<std::size_t>((E + 1) * (I / 128) * (H / 128));
  auto sc = upload(std::vector<float>(scales, 1.0f / 64), s);
  const std::vector<std::int64_t> token_list = quick ? std::vector<std::int64_t>{2048}
                                                     : std::vector<std::int64_t>{1024, 2048, 4096, 8192};
  for (const auto T : token_list) {
    // Routing: each token picks 3 distinct random experts (balanced on average), then the shared
    // expert as one more group of all T tokens.
    std::mt19937 rng(static_cast<std::uint32_t>(T));
    std::vector<std::int32_t> ids(static_cast<std::size_t>(T * topk));
    std::vector<float> w(ids.size(), 1.0f / 3);
    for (std::int64_t t = 0; t < T; ++t) {
      std::vector<std::int32_t> all(static_cast<std::size_t>(E));
      for (std::int32_t e = 0; e < E; ++e) all[static_cast<std::size_t>(e)] = e;
      std::shuffle(all.begin(), all.end(), rng);
      std::sort(all.begin(), all.begin() + topk);
      for (std::int64_t j = 0; j < topk; ++j) ids[static_cast<std::size_t>(t * topk + j)] = all[static_cast<std::size_t>(j)];
    }
    std::vector<std::int32_t> owned(static_cast<std::size_t>(E));
    for (std::int32_t e = 0; e < E; ++e) owned[static_cast<std::size_t>(e)] = e;
    auto plan = cu::plan_moe_rows(ids, w, T, topk, owned);
    const std::int64_t routed_rows = plan.group_offsets.back();
    std::vector<std::int32_t> offsets = plan.group_offsets;
    offsets.push_back(static_cast<std::int32_t>(routed_rows + T));  // the shared expert's group
    std::vector<std::int32_t> row_token = plan.row_token;
    std::vector<float> row_weight = plan.row_weight;
    for (std::int64_t t = 0; t < T; ++t) row_token.push_back(static_cast<std::int32_t>(t)), row_weight.push_back(1.0f);
    const std::int64_t rows = routed_rows + T;
    auto doff = upload(offsets, s), dtok = upload(row_token, s), dw = upload(row_weight, s);
    std::vector<float> xh(static_cast<std::size_t>(T * H), 0.1f);
    auto x = upload(xh, s);
    auto xg = alloc(static_cast<std::size_t>(rows * H * 2)), h = alloc(static_cast<std::size_t>(rows * I * 2)),
         y = alloc(static_cast<std::size_t>(rows * H * 2));
    const double flops = 2.0 * static_cast<double>(rows) * 3.0 * static_cast<double>(H * I);
    cu::row_groups groups{doff.as<std::int32_t>(), E + 1, rows};
    for (const dtype wt : {dtype::bf16, dtype::f8_e4m3}) {
      const bool f8 = wt == dtype::f8_e4m3;
      cu::device_weights wg{wt, f8 ? gate8.data() : gate.data(), f8 ? sc.as<float>() : nullptr, E + 1, I, H, 0};
      cu::device_weights wu{wt, f8 ? up8.data() : up.data(), f8 ? sc.as<float>() : nullptr, E + 1, I, H, 0};
      cu::device_weights wd{wt, f8 ? down8.data() : down.data(), f8 ? sc.as<float>() : nullptr, E + 1, H, I, 0};
      const double ours = time_us(s, quick ? 3 : 10, [&] {
        ok(cu::gather_rows_bf16(x.data(), dtype::f32, nullptr, H, dtok.as<std::int32_t>(), rows, xg.data(), s), "gather");
        ok(cu::grouped_swiglu(xg.data(), groups, wg, wu, h.data(), s), "swiglu");
        ok(cu::grouped_gemm(h.data(), groups, wd, dw.as<float>(), dtype::bf16, y.data(), s), "down");
      });
      // cuBLAS: the same FLOPs as two dense GEMMs over all rows (gate|up fused as N = 2I, then down).
      auto gu = alloc(static_cast<std::size_t>(rows * 2 * I * 2));
      const double blas_us = time_us(s, quick ? 3 : 10, [&] {
        cublas_gemm(blas, xg.data(), gate.data(), gu.data(), static_cast<int>(rows), static_cast<int>(2 * I),
                    static_cast<int>(H));
        cublas_gemm(blas, h.data(), down.data(), y.data(), static_cast<int>(rows), static_cast<int>(H),
                    static_cast<int>(I));
      });
      const double ours_tf = flops / (ours * 1e-6) / 1e12, blas_tf = flops / (blas_us * 1e-6) / 1e12;
      std::printf("%-5s %6lld %10.1f %10.1f %12.1f %12.1f %8.3f\n", std::string(afd::to_string(wt)).c_str(),
                  static_cast<long long>(T), ours, ours_tf, blas_us, blas_tf, ours_tf / blas_tf);
    }
  }
}

void bench_attention_layer(cudaStream_t s, bool quick) {
  const std::int64_t H = 7168, Q = 2048, heads = 64, d = 256, seqs = 64, ctx = 8192, block = 64;
  std::printf("\nOne attention layer (projections included), %lld sequences, context %lld, fp8 KV\n",
              static_cast<long long>(seqs), static_cast<long long>(ctx));
  // Weights (bf16): q_proj|k_proj|v_proj fused [Q + 2d, H], wq [heads*d, Q], o_proj [H, heads*d].
  auto wqkv = alloc(static_cast<std::size_t>((Q + 2 * d) * H * 2)), wq = alloc(static_cast<std::size_t>(heads * d * Q * 2)),
       wo = alloc(static_cast<std::size_t>(H * heads * d * 2));
  fill_random(wqkv, dtype::bf16, s, 10);
  fill_random(wq, dtype::bf16, s, 11);
  fill_random(wo, dtype::bf16, s, 12);
  auto norm_w = upload(std::vector<float>(static_cast<std::size_t>(H), 1.0f), s);
  auto inter_w = upload(std::vector<float>(static_cast<std::size_t>(Q), 1.0f), s);
  const std::int64_t blocks_per_seq = ctx / block, num_blocks = seqs * blocks_per_seq;
  auto kc = alloc(static_cast<std::size_t>(num_blocks * block * d)), vc = alloc(static_cast<std::size_t>(num_blocks * block * d));
  fill_random(kc, dtype::f8_e4m3, s, 13);
  fill_random(vc, dtype::f8_e4m3, s, 14);
  std::vector<std::int32_t> table(static_cast<std::size_t>(num_blocks)), seq(static_cast<std::size_t>(seqs)),
      pos(static_cast<std::size_t>(seqs), static_cast<std::int32_t>(ctx - 1));
  for (std::size_t i = 0; i < table.size(); ++i) table[i] = static_cast<std::int32_t>(i);
  for (std::size_t i = 0; i < seq.size(); ++i) seq[i] = static_cast<std::int32_t>(i);
  auto dt = upload(table, s), ds = upload(seq, s), dp = upload(pos, s);
  auto x = upload(std::vector<float>(static_cast<std::size_t>(seqs * H), 0.1f), s);
  auto xn = alloc(static_cast<std::size_t>(seqs * H * 4)), xb = alloc(static_cast<std::size_t>(seqs * H * 2));
  auto qkv = alloc(static_cast<std::size_t>(seqs * (Q + 2 * d) * 4));
  auto qlr = alloc(static_cast<std::size_t>(seqs * Q * 4)), qlrb = alloc(static_cast<std::size_t>(seqs * Q * 2));
  auto q = alloc(static_cast<std::size_t>(seqs * heads * d * 4)), k = alloc(static_cast<std::size_t>(seqs * d * 4)),
       v = alloc(static_cast<std::size_t>(seqs * d * 4));
  auto att = alloc(static_cast<std::size_t>(seqs * heads * d * 4)), attb = alloc(static_cast<std::size_t>(seqs * heads * d * 2));
  auto o = alloc(static_cast<std::size_t>(seqs * H * 4)), out = alloc(static_cast<std::size_t>(seqs * H * 4));
  const std::int64_t chunk = 1024;
  const std::size_t ws_bytes = cu::attention_workspace_bytes(seqs, heads, d, ctx, chunk);
  auto ws = alloc(ws_bytes);
  cu::kv_cache_view view{dtype::f8_e4m3, kc.data(), vc.data(), num_blocks, block, d};
  cu::kv_token_slots slots{dt.as<std::int32_t>(), blocks_per_seq, ds.as<std::int32_t>(), dp.as<std::int32_t>(), seqs};
  cu::row_groups dense{nullptr, 1, seqs};
  const double us = time_us(s, quick ? 5 : 20, [&] {
    ok(cu::rmsnorm(x.as<float>(), seqs, H, norm_w.as<float>(), 1e-5f, xn.as<float>(), s), "input norm");
    ok(cu::convert_f32_to_bf16(xn.as<float>(), seqs * H, xb.data(), s), "to bf16");
    ok(cu::grouped_gemm(xb.data(), dense, {dtype::bf16, wqkv.data(), nullptr, 1, Q + 2 * d, H, 0}, nullptr, dtype::f32,
                        qkv.data(), s),
       "qkv proj");
    // The fused projection's columns: q_lr [0, Q), k [Q, Q + d), v [Q + d, Q + 2d). The copies stand
    // for strided views the kernels do not take yet (small: 64 x 2560 floats).
    ok(cudaMemcpy2DAsync(qlr.data(), Q * 4, qkv.data(), (Q + 2 * d) * 4, Q * 4, seqs, cudaMemcpyDeviceToDevice, s), "split q");
    ok(cudaMemcpy2DAsync(k.data(), d * 4, qkv.as<float>() + Q, (Q + 2 * d) * 4, d * 4, seqs, cudaMemcpyDeviceToDevice, s), "split k");
    ok(cudaMemcpy2DAsync(v.data(), d * 4, qkv.as<float>() + Q + d, (Q + 2 * d) * 4, d * 4, seqs, cudaMemcpyDeviceToDevice, s),
       "split v");
    ok(cu::rmsnorm(qlr.as<float>(), seqs, Q, inter_w.as<float>(), 1e-5f, qlr.as<float>(), s), "inter norm");
    ok(cu::convert_f32_to_bf16(qlr.as<float>(), seqs * Q, qlrb.data(), s), "to bf16");
    ok(cu::grouped_gemm(qlrb.data(), dense, {dtype::bf16, wq.data(), nullptr, 1, heads * d, Q, 0}, nullptr, dtype::f32,
                        q.data(), s),
       "wq");
    ok(cu::rope_neox(q.as<float>(), seqs, heads, d, dp.as<std::int32_t>(), 500000.0, s), "rope q");
    ok(cu::rope_neox(k.as<float>(), seqs, 1, d, dp.as<std::int32_t>(), 500000.0, s), "rope k");
    ok(cu::kv_append(view, slots, k.as<float>(), v.as<float>(), s), "kv append");
    ok(cu::attention(view, slots, q.as<float>(), heads, 0.0625f, ctx, att.as<float>(), ws.data(), ws_bytes, s, chunk),
       "attention");
    ok(cu::convert_f32_to_bf16(att.as<float>(), seqs * heads * d, attb.data(), s), "to bf16");
    ok(cu::grouped_gemm(attb.data(), dense, {dtype::bf16, wo.data(), nullptr, 1, H, heads * d, 0}, nullptr, dtype::f32,
                        o.data(), s),
       "o proj");
    ok(cu::combine_sum(o.data(), dtype::f32, seqs, 1, H, x.as<float>(), out.as<float>(), s), "residual");
  });
  std::printf("attention layer: %.1f us (Step-3 report, H800: 281 us)\n", us);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const auto census = cu::cuda_device_count();
  if (census.count == 0) {
    std::fprintf(stderr, "afd-bench-cuda: no CUDA device: %s\n", census.reason.c_str());
    return 2;
  }
  auto props = cu::query_device(0);
  if (!props) die(props.err().to_string());
  std::printf("device 0: %s, sm_%d%d, %d SMs, %.1f GiB\n", props->name.c_str(), props->major, props->minor,
              props->sm_count, static_cast<double>(props->global_memory) / (1u << 30));
  auto stream = cu::device_stream::create(0);
  if (!stream) die(stream.err().to_string());
  const auto s = static_cast<cudaStream_t>(stream->handle());
  cublasHandle_t blas;
  ok(cublasCreate(&blas), "cublasCreate");
  ok(cublasSetStream(blas, s), "cublasSetStream");
  const double bw = copy_bandwidth(s, quick ? 3 : 10);
  bench_decode(s, bw, quick);
  bench_moe(s, blas, quick);
  bench_attention_layer(s, quick);
  cublasDestroy(blas);
  return 0;
}
