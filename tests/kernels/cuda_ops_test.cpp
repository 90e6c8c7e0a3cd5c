// Every CUDA op against the CPU backend (the oracle) on random inputs, in the style of ggml's
// test-backend-ops: a table of cases per op, a tolerance per dtype, and each failing case printing
// its parameters. Skipped, with the reason, where no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"

namespace cu = afd::kernels::cuda;
namespace cpu = afd::kernels::cpu;
using afd::dtype;

namespace {

class cuda_ops : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto census = cu::cuda_device_count();
    if (census.count == 0) GTEST_SKIP() << "no CUDA device: " << census.reason;
    auto s = cu::device_stream::create(0);
    ASSERT_TRUE(s.has_value()) << s.err().to_string();
    stream_ = std::move(*s);
  }

  template <class T>
  cu::device_buffer upload(const std::vector<T>& host) {
    auto b = cu::device_buffer::allocate(std::max<std::size_t>(host.size() * sizeof(T), 16));
    EXPECT_TRUE(b.has_value());
    if (!host.empty()) {
      EXPECT_TRUE(cu::copy_to_device(b->data(), host.data(), host.size() * sizeof(T), s()).has_value());
    }
    return std::move(*b);
  }
  cu::device_buffer alloc(std::size_t bytes) {
    auto b = cu::device_buffer::allocate(std::max<std::size_t>(bytes, 16));
    EXPECT_TRUE(b.has_value());
    return std::move(*b);
  }
  template <class T>
  std::vector<T> download(const cu::device_buffer& b, std::size_t count) {
    std::vector<T> out(count);
    EXPECT_TRUE(cu::copy_to_host(out.data(), b.data(), count * sizeof(T), s()).has_value());
    auto ok = stream_.synchronize();
    EXPECT_TRUE(ok.has_value()) << ok.err().to_string();
    return out;
  }
  void launched(cu::launch_status st, const char* op) {
    ASSERT_EQ(st, cu::launch_status::ok) << op << ": " << cu::to_string(st) << " " << cu::last_launch_error();
  }
  cu::stream_handle s() const { return stream_.handle(); }

  cu::device_stream stream_;
};

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<std::uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<std::uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = afd::f32_to_bf16(v[i]);
  return out;
}

std::vector<float> bf16_rounded(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = afd::round_to_bf16(v[i]);
  return out;
}

/// Compares element-wise with |got - want| <= atol + rtol * |want|; reports the worst element.
::testing::AssertionResult close(const std::vector<float>& got, const std::vector<float>& want, double atol,
                                 double rtol, const std::string& params) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << params << ": size mismatch";
  std::size_t bad = 0, worst = 0;
  double worst_excess = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double allowed = atol + rtol * std::fabs(static_cast<double>(want[i]));
    if (!(diff <= allowed)) {
      ++bad;
      if (!(diff - allowed <= worst_excess)) worst_excess = diff - allowed, worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << params << ": " << bad << " of " << got.size() << " elements off; worst at "
                                       << worst << ": got " << got[worst] << ", want " << want[worst]
                                       << " (atol " << atol << ", rtol " << rtol << ")";
}

// ---------------------------------------------------------------------------------------------

TEST_F(cuda_ops, rmsnorm) {
  struct test_case { std::int64_t m, n; };
  for (const auto c : {test_case{1, 7}, test_case{3, 256}, test_case{5, 7168}, test_case{2, 2048}}) {
    std::ostringstream params;
    params << "rmsnorm m=" << c.m << " n=" << c.n;
    const auto x = random_floats(static_cast<std::size_t>(c.m * c.n), 1, -3, 3);
    const auto w = random_floats(static_cast<std::size_t>(c.n), 2, 0.5f, 1.5f);
    std::vector<float> want(x.size());
    cpu::rmsnorm(x.data(), c.m, c.n, w.data(), 1e-5f, want.data());
    auto dx = upload(x), dw = upload(w);
    auto dy = alloc(x.size() * 4);
    launched(cu::rmsnorm(dx.as<float>(), c.m, c.n, dw.as<float>(), 1e-5f, dy.as<float>(), s()), "rmsnorm");
    // Different summation orders of the sum of squares: relative ~sqrt(n) * 2^-24.
    EXPECT_TRUE(close(download<float>(dy, x.size()), want, 1e-6, 1e-5, params.str()));
  }
}

TEST_F(cuda_ops, rope_neox) {
  struct test_case { std::int64_t m, heads, d; };
  for (const auto c : {test_case{3, 4, 64}, test_case{2, 64, 256}, test_case{5, 1, 128}}) {
    std::ostringstream params;
    params << "rope m=" << c.m << " heads=" << c.heads << " head_dim=" << c.d;
    auto x = random_floats(static_cast<std::size_t>(c.m * c.heads * c.d), 3);
    std::vector<std::int32_t> pos(static_cast<std::size_t>(c.m));
    std::mt19937 rng(4);
    for (auto& p : pos) p = static_cast<std::int32_t>(rng() % 65536);
    pos[0] = 0;
    auto dx = upload(x), dp = upload(pos);
    cpu::rope_neox(x.data(), c.m, c.heads, c.d, pos.data(), 500000.0);
    launched(cu::rope_neox(dx.as<float>(), c.m, c.heads, c.d, dp.as<std::int32_t>(), 500000.0, s()), "rope");
    // cos/sin of angles up to 65535 rad: both libraries are within 2 ulp of the exact value.
    EXPECT_TRUE(close(download<float>(dx, x.size()), x, 2e-6, 2e-6, params.str()));
  }
}

TEST_F(cuda_ops, conversions_are_bitwise) {
  auto x = random_floats(1000, 5, -1e4f, 1e4f);
  x[0] = 0.0f, x[1] = -0.0f, x[2] = 1e-40f, x[3] = 3.3895314e38f;
  auto dx = upload(x);
  auto dy = alloc(x.size() * 2);
  launched(cu::convert_f32_to_bf16(dx.as<float>(), static_cast<std::int64_t>(x.size()), dy.data(), s()), "to_bf16");
  EXPECT_EQ(download<std::uint16_t>(dy, x.size()), to_bf16(x));
  auto dz = alloc(x.size() * 4);
  launched(cu::convert_bf16_to_f32(dy.data(), static_cast<std::int64_t>(x.size()), dz.as<float>(), s()), "to_f32");
  EXPECT_EQ(download<float>(dz, x.size()), bf16_rounded(x));
}

TEST_F(cuda_ops, quantize_fp8_is_bitwise) {
  struct test_case { std::int64_t m, n; };
  for (const auto c : {test_case{3, 128}, test_case{2, 300}, test_case{4, 7168}, test_case{1, 5}}) {
    std::ostringstream params;
    params << "quantize_fp8 m=" << c.m << " n=" << c.n;
    SCOPED_TRACE(params.str());
    auto x = random_floats(static_cast<std::size_t>(c.m * c.n), 6, -20, 20);
    if (c.n >= 256) std::fill(x.begin() + 128, x.begin() + 256, 0.0f);  // an all-zero block: scale 1
    const std::int64_t blocks = (c.n + 127) / 128;
    std::vector<std::uint8_t> q(x.size());
    std::vector<float> sc(static_cast<std::size_t>(c.m * blocks));
    cpu::quantize_fp8(x.data(), c.m, c.n, q.data(), sc.data());
    auto dx = upload(x);
    auto dq = alloc(q.size()), ds = alloc(sc.size() * 4);
    launched(cu::quantize_fp8(dx.as<float>(), c.m, c.n, dq.as<std::uint8_t>(), ds.as<float>(), s()), "quantize");
    EXPECT_EQ(download<float>(ds, sc.size()), sc);
    EXPECT_EQ(download<std::uint8_t>(dq, q.size()), q);
    std::vector<float> deq(x.size());
    cpu::dequantize_fp8(q.data(), sc.data(), c.m, c.n, deq.data());
    auto dd = alloc(x.size() * 4);
    launched(cu::dequantize_fp8(dq.as<std::uint8_t>(), ds.as<float>(), c.m, c.n, dtype::f32, dd.data(), s()),
             "dequantize");
    EXPECT_EQ(download<float>(dd, x.size()), deq);
  }
}

TEST_F(cuda_ops, router_topk) {
  struct test_case { std::int64_t m, e, k; bool renorm; };
  for (const auto c : {test_case{16, 48, 3, false}, test_case{9, 48, 3, true}, test_case{4, 1000, 8, false},
                       test_case{3, 5, 5, true}}) {
    std::ostringstream params;
    params << "router m=" << c.m << " experts=" << c.e << " k=" << c.k << " renormalise=" << c.renorm;
    SCOPED_TRACE(params.str());
    const auto logits = random_floats(static_cast<std::size_t>(c.m * c.e), 7, -4, 4);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(c.m * c.k));
    std::vector<float> w(ids.size());
    cpu::router_topk(logits.data(), c.m, c.e, c.k, c.renorm, ids.data(), w.data());
    auto dl = upload(logits);
    auto di = alloc(ids.size() * 4), dw = alloc(w.size() * 4);
    launched(cu::router_topk(dl.as<float>(), c.m, c.e, c.k, c.renorm, di.as<std::int32_t>(), dw.as<float>(), s()),
             "router");
    EXPECT_EQ(download<std::int32_t>(di, ids.size()), ids);
    EXPECT_TRUE(close(download<float>(dw, w.size()), w, 1e-7, 1e-5, params.str()));
  }
}

TEST_F(cuda_ops, combine_sum_in_canonical_order) {
  for (const dtype t : {dtype::f32, dtype::bf16}) {
    for (const bool residual : {false, true}) {
      const std::int64_t m = 7, u = 4, n = 300;
      std::ostringstream params;
      params << "combine units=" << afd::to_string(t) << " residual=" << residual;
      SCOPED_TRACE(params.str());
      auto units = random_floats(static_cast<std::size_t>(m * u * n), 8, -10, 10);
      if (t == dtype::bf16) units = bf16_rounded(units);
      const auto res = random_floats(static_cast<std::size_t>(m * n), 9, -10, 10);
      std::vector<float> want(res.size());
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t c = 0; c < n; ++c) {
          float acc = 0.0f;
          for (std::int64_t j = 0; j < u; ++j) acc += units[static_cast<std::size_t>((i * u + j) * n + c)];
          want[static_cast<std::size_t>(i * n + c)] = residual ? res[static_cast<std::size_t>(i * n + c)] + acc : acc;
        }
      cu::device_buffer du = t == dtype::bf16 ? upload(to_bf16(units)) : upload(units);
      auto dr = upload(res);
      auto dout = alloc(res.size() * 4);
      launched(cu::combine_sum(du.data(), t, m, u, n, residual ? dr.as<float>() : nullptr, dout.as<float>(), s()),
               "combine");
      EXPECT_EQ(download<float>(dout, res.size()), want);
    }
  }
}

TEST_F(cuda_ops, gather_rows_bf16) {
  const std::int64_t m = 6, n = 256, rows = 9;
  const auto x = random_floats(static_cast<std::size_t>(m * n), 10, -5, 5);
  const std::vector<std::int32_t> src = {5, 0, 0, 3, 2, 5, 1, 4, 3};
  std::vector<std::uint8_t> q(x.size());
  std::vector<float> sc(static_cast<std::size_t>(m * 2));
  cpu::quantize_fp8(x.data(), m, n, q.data(), sc.data());
  std::vector<float> deq(x.size());
  cpu::dequantize_fp8(q.data(), sc.data(), m, n, deq.data());
  auto dsrc = upload(src), dq = upload(q), dsc = upload(sc), dx = upload(x);
  auto dout = alloc(static_cast<std::size_t>(rows * n * 2));
  for (const dtype t : {dtype::f32, dtype::f8_e4m3}) {
    SCOPED_TRACE(std::string("gather from ") + std::string(afd::to_string(t)));
    const auto& source = t == dtype::f32 ? x : deq;
    std::vector<std::uint16_t> want;
    for (const auto r : src)
      for (std::int64_t c = 0; c < n; ++c) want.push_back(afd::f32_to_bf16(source[static_cast<std::size_t>(r * n + c)]));
    launched(cu::gather_rows_bf16(t == dtype::f32 ? dx.data() : dq.data(), t, t == dtype::f32 ? nullptr : dsc.as<float>(),
                                  n, dsrc.as<std::int32_t>(), rows, dout.data(), s()),
             "gather");
    EXPECT_EQ(download<std::uint16_t>(dout, want.size()), want);
  }
}

// ---------------------------------------------------------------------------------------------
// Paged KV cache and attention

struct paged_cache {
  std::int64_t num_blocks, block_size, head_dim;
  dtype type;
  std::vector<std::uint8_t> k, v;
  std::vector<std::vector<std::int32_t>> tables;  // per sequence, shuffled block ids
};

paged_cache make_cache(dtype type, std::int64_t block_size, std::int64_t head_dim, const std::vector<std::int64_t>& lens,
                       std::uint32_t seed) {
  paged_cache c{0, block_size, head_dim, type, {}, {}, {}};
  for (const auto len : lens) c.num_blocks += (len + block_size - 1) / block_size;
  c.num_blocks += 3;  // unused blocks
  const std::size_t bytes = static_cast<std::size_t>(c.num_blocks * block_size * head_dim) * afd::size_of(type);
  c.k.assign(bytes, 0);
  c.v.assign(bytes, 0);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(c.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::size_t next = 0;
  for (const auto len : lens) {
    std::vector<std::int32_t> t;
    for (std::int64_t b = 0; b < (len + block_size - 1) / block_size; ++b) t.push_back(ids[next++]);
    c.tables.push_back(t);
  }
  return c;
}

TEST_F(cuda_ops, kv_append_is_bitwise) {
  for (const dtype t : {dtype::bf16, dtype::f8_e4m3, dtype::f32}) {
    SCOPED_TRACE(std::string("kv_append cache=") + std::string(afd::to_string(t)));
    const std::int64_t d = 128, bs = 16;
    auto cache = make_cache(t, bs, d, {40, 17}, 11);
    const std::vector<std::int32_t> seq = {0, 1, 0, 1}, pos = {0, 16, 39, 3};
    const auto k = random_floats(static_cast<std::size_t>(4 * d), 12, -500, 500);
    const auto v = random_floats(static_cast<std::size_t>(4 * d), 13, -2, 2);
    std::vector<cpu::kv_slot> slots;
    for (std::size_t i = 0; i < seq.size(); ++i) slots.push_back({cache.tables[static_cast<std::size_t>(seq[i])].data(), pos[i]});
    auto dk = upload(cache.k), dv = upload(cache.v);
    cpu::kv_layer_view view{t, cache.k.data(), cache.v.data(), cache.num_blocks, bs, d};
    cpu::kv_append(view, slots, k.data(), v.data());
    const std::int64_t max_blocks = 3;
    std::vector<std::int32_t> tables(2 * max_blocks, -1);
    for (std::size_t sq = 0; sq < 2; ++sq)
      std::copy(cache.tables[sq].begin(), cache.tables[sq].end(), tables.begin() + static_cast<std::ptrdiff_t>(sq * max_blocks));
    auto dt = upload(tables), ds = upload(seq), dp = upload(pos), dkin = upload(k), dvin = upload(v);
    cu::kv_cache_view dview{t, dk.data(), dv.data(), cache.num_blocks, bs, d};
    cu::kv_token_slots dslots{dt.as<std::int32_t>(), max_blocks, ds.as<std::int32_t>(), dp.as<std::int32_t>(), 4};
    launched(cu::kv_append(dview, dslots, dkin.as<float>(), dvin.as<float>(), s()), "kv_append");
    EXPECT_EQ(download<std::uint8_t>(dk, cache.k.size()), cache.k);
    EXPECT_EQ(download<std::uint8_t>(dv, cache.v.size()), cache.v);
  }
}

struct attention_case {
  dtype kv;
  std::int64_t heads, head_dim, block_size, kv_chunk;
  std::vector<std::int64_t> seq_lens;  // one sequence each
  bool prefill;                        // all positions of every sequence (causal), else the last one
};

std::string describe(const attention_case& c) {
  std::ostringstream o;
  o << "attention kv=" << afd::to_string(c.kv) << " heads=" << c.heads << " head_dim=" << c.head_dim
    << " block_size=" << c.block_size << " kv_chunk=" << c.kv_chunk << " prefill=" << c.prefill << " lens=";
  for (const auto l : c.seq_lens) o << l << ",";
  return o.str();
}

TEST_F(cuda_ops, attention_matches_cpu) {
  const std::vector<attention_case> cases = {
      {dtype::bf16, 64, 256, 16, 512, {1, 37, 600, 1500}, false},
      {dtype::f8_e4m3, 64, 256, 64, 512, {5, 513, 2100}, false},
      {dtype::bf16, 64, 256, 16, 64, {300, 129}, false},
      {dtype::f32, 8, 64, 16, 64, {33, 200}, false},
      {dtype::bf16, 80, 128, 32, 128, {70, 260}, false},  // two head groups, the second partial
      {dtype::f8_e4m3, 16, 128, 8, 32, {5, 70}, true},
      {dtype::bf16, 64, 256, 16, 64, {150}, true},
  };
  for (const auto& c : cases) {
    const std::string params = describe(c);
    SCOPED_TRACE(params);
    const std::int64_t d = c.head_dim;
    auto cache = make_cache(c.kv, c.block_size, d, c.seq_lens, 21);
    cpu::kv_layer_view view{c.kv, cache.k.data(), cache.v.data(), cache.num_blocks, c.block_size, d};
    // Fill every sequence's K/V through the CPU append (so both backends read the same cache).
    std::int64_t max_ctx = 0, max_blocks = 0;
    for (std::size_t sq = 0; sq < c.seq_lens.size(); ++sq) {
      const std::int64_t len = c.seq_lens[sq];
      max_ctx = std::max(max_ctx, len);
      max_blocks = std::max<std::int64_t>(max_blocks, static_cast<std::int64_t>(cache.tables[sq].size()));
      const auto k = random_floats(static_cast<std::size_t>(len * d), 100 + static_cast<std::uint32_t>(sq), -2, 2);
      const auto v = random_floats(static_cast<std::size_t>(len * d), 200 + static_cast<std::uint32_t>(sq), -1, 1);
      std::vector<cpu::kv_slot> slots;
      for (std::int64_t p = 0; p < len; ++p) slots.push_back({cache.tables[sq].data(), static_cast<std::int32_t>(p)});
      cpu::kv_append(view, slots, k.data(), v.data());
    }
    std::vector<std::int32_t> seq, pos;
    std::vector<cpu::kv_slot> slots;
    for (std::size_t sq = 0; sq < c.seq_lens.size(); ++sq) {
      const std::int64_t len = c.seq_lens[sq];
      for (std::int64_t p = c.prefill ? 0 : len - 1; p < len; ++p) {
        seq.push_back(static_cast<std::int32_t>(sq));
        pos.push_back(static_cast<std::int32_t>(p));
        slots.push_back({cache.tables[sq].data(), static_cast<std::int32_t>(p)});
      }
    }
    const auto tokens = static_cast<std::int64_t>(seq.size());
    const auto q = random_floats(static_cast<std::size_t>(tokens * c.heads * d), 300, -2, 2);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<float> want(q.size());
    cpu::attention(view, slots, q.data(), c.heads, scale, want.data());

    std::vector<std::int32_t> tables(static_cast<std::size_t>(c.seq_lens.size() * max_blocks), 0);
    for (std::size_t sq = 0; sq < c.seq_lens.size(); ++sq)
      std::copy(cache.tables[sq].begin(), cache.tables[sq].end(),
                tables.begin() + static_cast<std::ptrdiff_t>(sq * static_cast<std::size_t>(max_blocks)));
    auto dk = upload(cache.k), dv = upload(cache.v), dt = upload(tables), ds = upload(seq), dp = upload(pos),
         dq = upload(q);
    auto dout = alloc(q.size() * 4);
    const std::size_t ws_bytes = cu::attention_workspace_bytes(tokens, c.heads, d, max_ctx, c.kv_chunk);
    auto ws = alloc(ws_bytes);
    cu::kv_cache_view dview{c.kv, dk.data(), dv.data(), cache.num_blocks, c.block_size, d};
    cu::kv_token_slots dslots{dt.as<std::int32_t>(), max_blocks, ds.as<std::int32_t>(), dp.as<std::int32_t>(), tokens};
    launched(cu::attention(dview, dslots, dq.as<float>(), c.heads, scale, max_ctx, dout.as<float>(), ws.data(),
                           ws_bytes, s(), c.kv_chunk),
             "attention");
    // Q and P go through bf16 on the tensor cores (relative 2^-9 each); outputs are convex
    // combinations of V values in [-1, 1].
    EXPECT_TRUE(close(download<float>(dout, q.size()), want, 1.5e-2, 1e-2, params));
  }
}

// ---------------------------------------------------------------------------------------------
// GEMMs

/// Per-128x128-block fp8 quantization of a [rows, cols] weight: codes, scales, and the dequantized
/// f32 weight the CPU oracle multiplies with.
struct fp8_weight {
  std::vector<std::uint8_t> codes;
  std::vector<float> scales;
  std::vector<float> dequantized;
};

fp8_weight quantize_weight(const std::vector<float>& w, std::int64_t groups, std::int64_t rows, std::int64_t cols) {
  fp8_weight out;
  const std::int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  out.codes.resize(w.size());
  out.dequantized.resize(w.size());
  out.scales.resize(static_cast<std::size_t>(groups * br * bc));
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t i = 0; i < br; ++i)
      for (std::int64_t j = 0; j < bc; ++j) {
        float amax = 0;
        for (std::int64_t r = i * 128; r < std::min(rows, i * 128 + 128); ++r)
          for (std::int64_t c = j * 128; c < std::min(cols, j * 128 + 128); ++c)
            amax = std::max(amax, std::fabs(w[static_cast<std::size_t>((g * rows + r) * cols + c)]));
        const float sc = amax == 0 ? 1.0f : amax / 448.0f;
        out.scales[static_cast<std::size_t>((g * br + i) * bc + j)] = sc;
        for (std::int64_t r = i * 128; r < std::min(rows, i * 128 + 128); ++r)
          for (std::int64_t c = j * 128; c < std::min(cols, j * 128 + 128); ++c) {
            const auto idx = static_cast<std::size_t>((g * rows + r) * cols + c);
            out.codes[idx] = afd::f32_to_fp8_e4m3(w[idx] / sc);
            out.dequantized[idx] = afd::fp8_e4m3_to_f32(out.codes[idx]) * sc;
          }
      }
  return out;
}

struct gemm_case {
  dtype wtype;
  std::vector<std::int32_t> group_rows;  // one entry: dense
  std::int64_t n, k;
  bool row_scale;
  dtype ytype;
};

std::string describe(const gemm_case& c) {
  std::ostringstream o;
  o << "gemm w=" << afd::to_string(c.wtype) << " n=" << c.n << " k=" << c.k << " row_scale=" << c.row_scale
    << " y=" << afd::to_string(c.ytype) << " group_rows=";
  for (const auto r : c.group_rows) o << r << ",";
  return o.str();
}

TEST_F(cuda_ops, grouped_gemm_matches_cpu) {
  const std::vector<gemm_case> cases = {
      {dtype::bf16, {1}, 64, 64, false, dtype::f32},
      {dtype::bf16, {37}, 100, 72, false, dtype::f32},
      {dtype::bf16, {130}, 256, 512, false, dtype::bf16},
      {dtype::bf16, {5, 0, 70, 64}, 96, 136, true, dtype::f32},
      {dtype::f8_e4m3, {3, 65}, 200, 384, true, dtype::f32},
      {dtype::f8_e4m3, {129}, 128, 272, false, dtype::f32},  // a partial k tile and 128-block
  };
  for (const auto& c : cases) {
    const std::string params = describe(c);
    SCOPED_TRACE(params);
    const auto groups = static_cast<std::int64_t>(c.group_rows.size());
    std::vector<std::int32_t> offsets = {0};
    for (const auto r : c.group_rows) offsets.push_back(offsets.back() + r);
    const std::int64_t total = offsets.back();
    const auto x = bf16_rounded(random_floats(static_cast<std::size_t>(total * c.k), 30, -1, 1));
    auto w = random_floats(static_cast<std::size_t>(groups * c.n * c.k), 31, -0.5f, 0.5f);
    const auto rs = random_floats(static_cast<std::size_t>(total), 32, 0.1f, 1.0f);
    fp8_weight q8;
    std::vector<std::uint16_t> wb;
    if (c.wtype == dtype::f8_e4m3) {
      q8 = quantize_weight(w, groups, c.n, c.k);
    } else {
      wb = to_bf16(w);
      w = bf16_rounded(w);
    }
    const std::vector<float>& wref = c.wtype == dtype::f8_e4m3 ? q8.dequantized : w;
    std::vector<float> want(static_cast<std::size_t>(total * c.n));
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t rows = c.group_rows[static_cast<std::size_t>(g)];
      if (rows == 0) continue;
      cpu::weight_view wv{dtype::f32, wref.data() + g * c.n * c.k, c.n, c.k};
      cpu::gemm(x.data() + offsets[static_cast<std::size_t>(g)] * c.k, rows, wv,
                want.data() + offsets[static_cast<std::size_t>(g)] * c.n);
    }
    // Bound of the accumulated magnitude, for the tolerance: sum_k |x| |w| <= k * 0.5 (fp8: all weights).
    if (c.row_scale)
      for (std::int64_t r = 0; r < total; ++r)
        for (std::int64_t j = 0; j < c.n; ++j) want[static_cast<std::size_t>(r * c.n + j)] *= rs[static_cast<std::size_t>(r)];
    auto dx = upload(to_bf16(x)), doff = upload(offsets), drs = upload(rs);
    cu::device_buffer dw = c.wtype == dtype::f8_e4m3 ? upload(q8.codes) : upload(wb);
    cu::device_buffer dsc = upload(q8.scales);
    auto dy = alloc(static_cast<std::size_t>(total * c.n * 4));
    cu::device_weights dwv{c.wtype, dw.data(), c.wtype == dtype::f8_e4m3 ? dsc.as<float>() : nullptr, groups, c.n, c.k, 0};
    cu::row_groups rg{groups == 1 ? nullptr : doff.as<std::int32_t>(), groups, total};
    launched(cu::grouped_gemm(dx.data(), rg, dwv, c.row_scale ? drs.as<float>() : nullptr, c.ytype, dy.data(), s()),
             "grouped_gemm");
    std::vector<float> got;
    if (c.ytype == dtype::bf16) {
      for (const auto h : download<std::uint16_t>(dy, want.size())) got.push_back(afd::bf16_to_f32(h));
    } else {
      got = download<float>(dy, want.size());
    }
    const double scale_bound = 0.5 * static_cast<double>(c.k);
    // f32 accumulation order only (bf16), plus the bf16 rounding of fp8 * scale, plus bf16 output.
    double atol = 1e-5 * scale_bound;
    if (c.wtype == dtype::f8_e4m3) atol = 4e-3 * scale_bound / std::sqrt(static_cast<double>(c.k)) + 1e-4 * scale_bound;
    const double rtol = c.ytype == dtype::bf16 ? 8e-3 : 1e-5;
    EXPECT_TRUE(close(got, want, atol, rtol, params));
  }
}

TEST_F(cuda_ops, grouped_swiglu_then_down_matches_cpu_swiglu) {
  struct test_case { dtype wtype; std::vector<std::int32_t> group_rows; std::int64_t hidden, inter; };
  const std::vector<test_case> cases = {
      {dtype::bf16, {3}, 64, 96},
      {dtype::bf16, {40, 0, 7}, 256, 320},
      {dtype::f8_e4m3, {17, 66}, 256, 384},
  };
  for (const auto& c : cases) {
    std::ostringstream o;
    o << "swiglu w=" << afd::to_string(c.wtype) << " hidden=" << c.hidden << " inter=" << c.inter << " group_rows=";
    for (const auto r : c.group_rows) o << r << ",";
    const std::string params = o.str();
    SCOPED_TRACE(params);
    const auto groups = static_cast<std::int64_t>(c.group_rows.size());
    std::vector<std::int32_t> offsets = {0};
    for (const auto r : c.group_rows) offsets.push_back(offsets.back() + r);
    const std::int64_t total = offsets.back(), H = c.hidden, I = c.inter;
    const auto x = bf16_rounded(random_floats(static_cast<std::size_t>(total * H), 40, -1, 1));
    const float ws = 1.0f / std::sqrt(static_cast<float>(H));
    auto gate = random_floats(static_cast<std::size_t>(groups * I * H), 41, -2 * ws, 2 * ws);
    auto up = random_floats(static_cast<std::size_t>(groups * I * H), 42, -2 * ws, 2 * ws);
    auto down = random_floats(static_cast<std::size_t>(groups * H * I), 43, -ws, ws);
    std::vector<float> rg, ru, rd;
    std::vector<std::uint8_t> cg, cup, cd;
    std::vector<float> sg, su, sd;
    std::vector<std::uint16_t> bg, bu, bd;
    if (c.wtype == dtype::f8_e4m3) {
      auto qg = quantize_weight(gate, groups, I, H), qu = quantize_weight(up, groups, I, H),
           qd = quantize_weight(down, groups, H, I);
      rg = qg.dequantized, ru = qu.dequantized, rd = qd.dequantized;
      cg = qg.codes, cup = qu.codes, cd = qd.codes, sg = qg.scales, su = qu.scales, sd = qd.scales;
    } else {
      rg = bf16_rounded(gate), ru = bf16_rounded(up), rd = bf16_rounded(down);
      bg = to_bf16(gate), bu = to_bf16(up), bd = to_bf16(down);
    }
    std::vector<float> want(static_cast<std::size_t>(total * H)), scratch(static_cast<std::size_t>(2 * total * I) + 16);
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t rows = c.group_rows[static_cast<std::size_t>(g)];
      if (rows == 0) continue;
      cpu::weight_view wg{dtype::f32, rg.data() + g * I * H, I, H}, wu{dtype::f32, ru.data() + g * I * H, I, H},
          wd{dtype::f32, rd.data() + g * H * I, H, I};
      cpu::swiglu(x.data() + offsets[static_cast<std::size_t>(g)] * H, rows, wg, wu, wd,
                  want.data() + offsets[static_cast<std::size_t>(g)] * H, scratch.data());
    }
    const bool f8 = c.wtype == dtype::f8_e4m3;
    auto dx = upload(to_bf16(x)), doff = upload(offsets);
    cu::device_buffer dg = f8 ? upload(cg) : upload(bg), du = f8 ? upload(cup) : upload(bu),
                      dd = f8 ? upload(cd) : upload(bd);
    auto dsg = upload(sg), dsu = upload(su), dsd = upload(sd);
    auto dh = alloc(static_cast<std::size_t>(total * I * 2)), dy = alloc(static_cast<std::size_t>(total * H * 4));
    const dtype wt = c.wtype;
    cu::device_weights wgate{wt, dg.data(), f8 ? dsg.as<float>() : nullptr, groups, I, H, 0};
    cu::device_weights wup{wt, du.data(), f8 ? dsu.as<float>() : nullptr, groups, I, H, 0};
    cu::device_weights wdown{wt, dd.data(), f8 ? dsd.as<float>() : nullptr, groups, H, I, 0};
    cu::row_groups rgp{groups == 1 ? nullptr : doff.as<std::int32_t>(), groups, total};
    launched(cu::grouped_swiglu(dx.data(), rgp, wgate, wup, dh.data(), s()), "grouped_swiglu");
    launched(cu::grouped_gemm(dh.data(), rgp, wdown, nullptr, dtype::f32, dy.data(), s()), "grouped_gemm(down)");
    // h is rounded to bf16 on the GPU (f32 on the CPU): relative 2^-9 per element of the down input.
    EXPECT_TRUE(close(download<float>(dy, want.size()), want, f8 ? 2e-2 : 1e-2, 2e-2, params));
  }
}

}  // namespace
