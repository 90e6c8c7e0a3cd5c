// afd-bench-kernels: throughput of the CPU kernels at Step-3 sizes, next to the machine's memory
// read bandwidth measured in the same run. Weights and KV caches are rotated over several copies
// larger than the last-level cache, so decode figures are DRAM figures.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include "kernels/cpu/cpu_kernels.hpp"

namespace cpu = afd::kernels::cpu;
using clock_type = std::chrono::steady_clock;

namespace {

// CPU seconds used by this process so far (all threads).
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Multi-threaded sum over a large buffer (one slice per thread), best of several passes.
double measure_read_bandwidth(std::size_t bytes, int passes, int threads) {
  const std::size_t words = bytes / 8;
  std::vector<std::uint64_t> buf(words);
  for (std::size_t i = 0; i < words; ++i) buf[i] = i * 0x9e3779b97f4a7c15ull;
  double best = 0.0;
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(threads));
  for (int pass = 0; pass < passes; ++pass) {
    const auto t0 = clock_type::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const std::size_t b = words * static_cast<std::size_t>(t) / static_cast<std::size_t>(threads);
        const std::size_t e = words * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(threads);
        std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        std::size_t i = b;
        for (; i + 4 <= e; i += 4) {
          a0 += buf[i];
          a1 += buf[i + 1];
          a2 += buf[i + 2];
          a3 += buf[i + 3];
        }
        for (; i < e; ++i) a0 += buf[i];
        sums[static_cast<std::size_t>(t)] = a0 + a1 + a2 + a3;
      });
    }
    for (auto& t : ts) t.join();
    best = std::max(best, static_cast<double>(bytes) / seconds_since(t0) / 1e9);
  }
  std::uint64_t check = 0;
  for (auto s : sums) check += s;
  if (check == 42) std::printf(" ");  // keeps the sums alive
  return best;
}

// Runs fn(i) for i = 0, 1, ... until min_seconds have passed (after one warm-up call); returns
// seconds per call.
double timed_wall = 0.0, timed_cpu = 0.0;  // over all timed calls, for the cpu share

template <class F>
double time_calls(F&& fn, double min_seconds) {
  fn(0);
  int calls = 0;
  const double cpu0 = cpu_seconds();
  const auto t0 = clock_type::now();
  double elapsed = 0.0;
  do {
    fn(++calls);
    elapsed = seconds_since(t0);
  } while (elapsed < min_seconds);
  timed_wall += elapsed;
  timed_cpu += cpu_seconds() - cpu0;
  return elapsed / calls;
}

std::vector<std::uint16_t> random_bf16(std::size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = afd::f32_to_bf16(d(rng));
  return v;
}

std::vector<float> random_f32(std::size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double bandwidth = 0.0;
std::string only;  // --only KERNEL: run the cases of one kernel

bool wanted(const char* kernel) { return only.empty() || only == kernel; }

void report(const char* kernel, const std::string& shape, double sec, double bytes, double flops) {
  const double gbs = bytes / sec / 1e9;
  std::printf("%-10s %-44s %10.1f %9.2f %9.2f %7.3f\n", kernel, shape.c_str(), sec * 1e6, gbs, flops / sec / 1e9,
              gbs / bandwidth);
}

constexpr std::size_t rotate_bytes = 192ull << 20;  // > any last-level cache we run on

void bench_gemm(std::int64_t n, std::int64_t k, const std::vector<std::int64_t>& ms, double min_s, std::mt19937& rng) {
  const std::size_t wbytes = static_cast<std::size_t>(n * k * 2);
  const std::size_t copies = std::max<std::size_t>(1, (rotate_bytes + wbytes - 1) / wbytes);
  std::vector<std::vector<std::uint16_t>> w;
  w.push_back(random_bf16(static_cast<std::size_t>(n * k), rng, 0.05f));
  for (std::size_t c = 1; c < copies; ++c) w.push_back(w[0]);
  const std::int64_t mmax = *std::max_element(ms.begin(), ms.end());
  const auto x = random_f32(static_cast<std::size_t>(mmax * k), rng, 1.0f);
  std::vector<float> y(static_cast<std::size_t>(mmax * n));
  for (const std::int64_t m : ms) {
    const double sec = time_calls(
        [&](int i) {
          const cpu::weight_view wv{afd::dtype::bf16, w[static_cast<std::size_t>(i) % copies].data(), n, k};
          cpu::gemm(x.data(), m, wv, y.data());
        },
        min_s);
    const double bytes = static_cast<double>(wbytes) + 4.0 * static_cast<double>(m * (k + n));
    report("gemm", "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) + " bf16", sec,
           bytes, 2.0 * static_cast<double>(m * n * k));
  }
}

void bench_attention(afd::dtype kv, std::int64_t context, std::int64_t m, double min_s, std::mt19937& rng) {
  constexpr std::int64_t heads = 64, d = 256, block = 64;
  const std::int64_t blocks_per_seq = (context + block - 1) / block;
  const std::size_t seq_bytes = static_cast<std::size_t>(blocks_per_seq * block * d * 2) * afd::size_of(kv);
  const std::int64_t seqs = std::max<std::int64_t>(m, static_cast<std::int64_t>((rotate_bytes + seq_bytes - 1) / seq_bytes));
  const std::int64_t num_blocks = seqs * blocks_per_seq;
  const std::size_t elems = static_cast<std::size_t>(num_blocks * block * d);
  std::vector<std::uint8_t> kbuf(elems * afd::size_of(kv)), vbuf(kbuf.size());
  // One sequence of random values, replicated (the copies exist to defeat the caches).
  const std::size_t seq_elems = seq_bytes / 2 / afd::size_of(kv);
  for (std::size_t i = 0; i < seq_elems; ++i) {
    afd::store_from_f32(kv, kbuf.data(), i, std::ldexp(static_cast<float>(static_cast<int>(rng() % 64) - 32), -4));
    afd::store_from_f32(kv, vbuf.data(), i, std::ldexp(static_cast<float>(static_cast<int>(rng() % 64) - 32), -4));
  }
  for (std::size_t off = seq_elems; off < elems; off += seq_elems) {
    const std::size_t n = std::min(seq_elems, elems - off) * afd::size_of(kv);
    std::memcpy(kbuf.data() + off * afd::size_of(kv), kbuf.data(), n);
    std::memcpy(vbuf.data() + off * afd::size_of(kv), vbuf.data(), n);
  }
  const cpu::kv_layer_view cache{kv, kbuf.data(), vbuf.data(), num_blocks, block, d};
  std::vector<std::int32_t> tables(static_cast<std::size_t>(num_blocks));
  for (std::int64_t b = 0; b < num_blocks; ++b) tables[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(b);
  const auto q = random_f32(static_cast<std::size_t>(m * heads * d), rng, 1.0f);
  std::vector<float> out(q.size());
  std::vector<cpu::kv_slot> slots(static_cast<std::size_t>(m));
  const double sec = time_calls(
      [&](int i) {
        for (std::int64_t t = 0; t < m; ++t) {
          const std::int64_t s = (static_cast<std::int64_t>(i) * m + t) % seqs;
          slots[static_cast<std::size_t>(t)] = {tables.data() + s * blocks_per_seq, static_cast<std::int32_t>(context - 1)};
        }
        cpu::attention(cache, slots, q.data(), heads, 1.0f / 16.0f, out.data());
      },
      min_s);
  const double bytes = static_cast<double>(m * context * 2 * d) * static_cast<double>(afd::size_of(kv));
  const double flops = 4.0 * static_cast<double>(m * context * heads * d);
  report("attention", "decode m=" + std::to_string(m) + " ctx=" + std::to_string(context) + " 64x256 kv=" +
                          std::string(afd::to_string(kv)),
         sec, bytes, flops);
}

void bench_swiglu(std::int64_t hidden, std::int64_t inter, const std::vector<std::int64_t>& ms, double min_s,
                  std::mt19937& rng) {
  const std::size_t per = static_cast<std::size_t>(hidden * inter);
  const std::size_t ebytes = 3 * per * 2;
  const std::size_t copies = std::max<std::size_t>(1, (rotate_bytes + ebytes - 1) / ebytes);
  std::vector<std::vector<std::uint16_t>> g, u, dn;
  g.push_back(random_bf16(per, rng, 0.05f));
  u.push_back(random_bf16(per, rng, 0.05f));
  dn.push_back(random_bf16(per, rng, 0.05f));
  for (std::size_t c = 1; c < copies; ++c) {
    g.push_back(g[0]);
    u.push_back(u[0]);
    dn.push_back(dn[0]);
  }
  const std::int64_t mmax = *std::max_element(ms.begin(), ms.end());
  const auto x = random_f32(static_cast<std::size_t>(mmax * hidden), rng, 1.0f);
  std::vector<float> y(x.size()), scratch(static_cast<std::size_t>(2 * mmax * inter));
  for (const std::int64_t m : ms) {
    const double sec = time_calls(
        [&](int i) {
          const std::size_t c = static_cast<std::size_t>(i) % copies;
          cpu::swiglu(x.data(), m, {afd::dtype::bf16, g[c].data(), inter, hidden},
                      {afd::dtype::bf16, u[c].data(), inter, hidden}, {afd::dtype::bf16, dn[c].data(), hidden, inter},
                      y.data(), scratch.data());
        },
        min_s);
    report("swiglu", "expert m=" + std::to_string(m) + " H=" + std::to_string(hidden) + " I=" + std::to_string(inter) +
                         " bf16",
           sec, static_cast<double>(ebytes), 6.0 * static_cast<double>(m * hidden * inter));
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      only = argv[++i];
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else {
      std::printf("usage: afd-bench-kernels [--quick] [--threads N] [--only gemm|attention|swiglu]\n");
      return std::strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  cpu::set_num_threads(threads);
  const double min_s = quick ? 0.1 : 0.5;
  std::printf("afd-bench-kernels: %d thread(s)%s\n", cpu::num_threads(), quick ? ", quick" : "");
  bandwidth = measure_read_bandwidth(quick ? (256ull << 20) : (1ull << 30), quick ? 3 : 5, threads);
  std::printf("memory read bandwidth (%s, %d threads, best pass): %.2f GB/s\n\n", quick ? "256 MiB" : "1 GiB",
              threads, bandwidth);
  std::printf("%-10s %-44s %10s %9s %9s %7s\n", "kernel", "case", "us/call", "GB/s", "GFLOP/s", "bw-ratio");
  std::mt19937 rng(1234);
  const std::vector<std::int64_t> decode_ms = quick ? std::vector<std::int64_t>{1, 16} : std::vector<std::int64_t>{1, 2, 4, 8, 16};
  if (wanted("gemm")) {
    bench_gemm(4096, 4096, decode_ms, min_s, rng);
    bench_gemm(7168, 2048, decode_ms, min_s, rng);
    bench_gemm(4096, 4096, {128}, min_s, rng);
  }
  if (wanted("attention")) {
    bench_attention(afd::dtype::bf16, 4096, 1, min_s, rng);
    bench_attention(afd::dtype::f8_e4m3, 4096, 1, min_s, rng);
    if (!quick) {
      bench_attention(afd::dtype::bf16, 4096, 4, min_s, rng);
      bench_attention(afd::dtype::f8_e4m3, 4096, 4, min_s, rng);
    }
  }
  if (wanted("swiglu"))
    bench_swiglu(7168, 5120, quick ? std::vector<std::int64_t>{1} : std::vector<std::int64_t>{1, 8}, min_s, rng);
  std::printf("\nbytes: weights (+ activations) for gemm/swiglu, KV bytes read for attention; bw-ratio = GB/s over\n"
              "the measured read bandwidth. Attention does 4*64*256 FLOP per KV position (64 FLOP/byte at bf16,\n"
              "128 at fp8), so on a CPU it is bound by arithmetic, not by memory.\n");
  // Other processes competing for the cores make every figure above a lower bound: say so.
  const double share = timed_cpu / (timed_wall * threads);
  std::printf("cpu share: the timed calls used %.0f%% of %d core(s)%s\n", 100.0 * share, threads,
              share < 0.8 ? " (the machine was busy: figures are lower bounds)" : "");
  return 0;
}
