// The backend contract (after ggml's test-backend-ops): a table of cases, every op at several
// shapes and dtypes, run on every backend this process can make (make_backend over
// available_devices()), each compared with an oracle:
//   - the checked CPU backend against direct kernels::cpu calls: bitwise (the interface adds
//     nothing to the CPU path);
//   - any other backend (CUDA) against the checked CPU backend: bitwise where the op is exact,
//     within the case's tolerance otherwise.
// And the checking layer: each bad shape is refused with invalid_argument and a message naming the
// op and the tensor; devices that cannot be used are refused with the device and the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

namespace kernels = afd::kernels;
namespace cpu = afd::kernels::cpu;
using afd::dtype;
using kernels::op_status;

namespace {

// ------------------------------------------------------------------------------------------------
// Cases

/// Named outputs of one run (integers stored as exact floats).
struct named_output {
  std::string name;
  std::vector<float> values;
};
using outputs = std::vector<named_output>;

/// One row of the table: an op at one shape, its inputs fixed by the case, run through a backend
/// or directly through kernels::cpu.
struct op_case {
  std::string label;
  /// Largest |backend - cpu| / max(max |cpu|, 1e-6) allowed for a non-CPU backend; 0: bitwise.
  double tolerance = 0;
  std::function<outputs(kernels::backend&)> through_backend;
  std::function<outputs()> direct;
};

std::vector<float> random_floats(std::uint32_t seed, std::size_t n, float scale, dtype representable = dtype::f32) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = afd::round_to(representable, d(rng));
  return v;
}

/// Weights stored as `t`. The values are representable in bf16 and f16 alike (f16 of a bf16 value
/// keeps its 8 significant bits), so a backend that converts weights to bf16 reads the same numbers.
struct stored_weight {
  std::vector<std::uint8_t> bytes;
  kernels::weight_view view;
  stored_weight(std::uint32_t seed, dtype t, std::int64_t rows, std::int64_t cols, float scale) {
    std::vector<float> v = random_floats(seed, static_cast<std::size_t>(rows * cols), scale, dtype::bf16);
    for (float& x : v) x = afd::round_to(dtype::f16, x);
    bytes.resize(v.size() * afd::size_of(t));
    for (std::size_t i = 0; i < v.size(); ++i) afd::store_from_f32(t, bytes.data(), i, v[i]);
    view = {t, bytes.data(), rows, cols};
  }
};

std::vector<float> as_floats(const std::vector<std::int32_t>& v) { return {v.begin(), v.end()}; }
std::vector<float> as_floats(const std::vector<std::uint8_t>& v) { return {v.begin(), v.end()}; }

void ok(op_status s, const kernels::backend& b) {
  ASSERT_EQ(s, op_status::ok) << b.name() << " on " << b.device() << ": " << b.last_error();
}

void add_gather_rows(std::vector<op_case>& cases) {
  for (dtype t : {dtype::f32, dtype::bf16, dtype::f16}) {
    auto table = std::make_shared<stored_weight>(11, t, 40, 64, 1.0f);
    auto ids = std::make_shared<std::vector<std::int32_t>>(std::vector<std::int32_t>{3, 0, 39, 3, 17});
    const auto n = static_cast<std::size_t>(ids->size() * 64);
    cases.push_back({"gather_rows " + std::string(afd::to_string(t)), 0,
                     [=](kernels::backend& b) {
                       std::vector<float> out(n);
                       ok(b.gather_rows({table->view, *ids, out.data()}), b);
                       return outputs{{"out", out}};
                     },
                     [=] {
                       std::vector<float> out(n);
                       cpu::gather_rows(table->view, *ids, out.data());
                       return outputs{{"out", out}};
                     }});
  }
}

void add_rmsnorm(std::vector<op_case>& cases) {
  for (auto [m, n] : {std::pair<std::int64_t, std::int64_t>{1, 64}, {5, 48}, {3, 1024}}) {
    auto x = std::make_shared<std::vector<float>>(random_floats(21, static_cast<std::size_t>(m * n), 3.0f));
    auto w = std::make_shared<std::vector<float>>(random_floats(22, static_cast<std::size_t>(n), 1.0f));
    cases.push_back({"rmsnorm m=" + std::to_string(m) + " n=" + std::to_string(n), 1e-5,
                     [=](kernels::backend& b) {
                       std::vector<float> y(x->size());
                       ok(b.rmsnorm({x->data(), m, n, *w, 1e-5f, y.data()}), b);
                       return outputs{{"y", y}};
                     },
                     [=] {
                       std::vector<float> y(x->size());
                       cpu::rmsnorm(x->data(), m, n, w->data(), 1e-5f, y.data());
                       return outputs{{"y", y}};
                     }});
  }
}

void add_gemm(std::vector<op_case>& cases) {
  for (dtype t : {dtype::f32, dtype::bf16, dtype::f16})
    for (auto [m, k, n] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 64, 32}, {3, 48, 96},
                           {17, 128, 64}}) {
      auto w = std::make_shared<stored_weight>(31, t, n, k, 0.5f);
      // x rounded to bf16: a backend computing in bf16 sees the same inputs.
      auto x = std::make_shared<std::vector<float>>(random_floats(32, static_cast<std::size_t>(m * k), 1.0f, dtype::bf16));
      cases.push_back({"gemm " + std::string(afd::to_string(t)) + " m=" + std::to_string(m) + " k=" + std::to_string(k) +
                           " n=" + std::to_string(n),
                       1e-3,
                       [=](kernels::backend& b) {
                         std::vector<float> y(static_cast<std::size_t>(m * n));
                         ok(b.gemm({x->data(), m, k, w->view, y.data()}), b);
                         return outputs{{"y", y}};
                       },
                       [=] {
                         std::vector<float> y(static_cast<std::size_t>(m * n));
                         cpu::gemm(x->data(), m, w->view, y.data());
                         return outputs{{"y", y}};
                       }});
    }
}

void add_rope(std::vector<op_case>& cases) {
  for (auto [m, heads, hd] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 1, 64}, {4, 4, 32}, {3, 8, 128}}) {
    auto x = std::make_shared<std::vector<float>>(random_floats(41, static_cast<std::size_t>(m * heads * hd), 1.0f));
    auto positions = std::make_shared<std::vector<std::int32_t>>();
    for (std::int64_t i = 0; i < m; ++i) positions->push_back(static_cast<std::int32_t>(i * 37 + 5));
    cases.push_back({"rope m=" + std::to_string(m) + " heads=" + std::to_string(heads) + " head_dim=" + std::to_string(hd),
                     1e-4,
                     [=](kernels::backend& b) {
                       std::vector<float> y = *x;
                       ok(b.rope({y.data(), m, heads, hd, *positions, 500000.0}), b);
                       return outputs{{"x", y}};
                     },
                     [=] {
                       std::vector<float> y = *x;
                       cpu::rope_neox(y.data(), m, heads, hd, positions->data(), 500000.0);
                       return outputs{{"x", y}};
                     }});
  }
}

/// A paged cache with two sequences whose blocks interleave, and the slots of a prefill chunk of
/// the first (positions 0..len-1) and a decode token of the second.
struct paged_setup {
  dtype type;
  std::int64_t head_dim, block_size = 16, num_blocks = 16;
  std::vector<std::int32_t> table_a{7, 2, 9, 4}, table_b{1, 12, 5};
  std::vector<kernels::kv_slot> slots;
  std::vector<float> k, v, q;
  std::int64_t heads;
  paged_setup(dtype t, std::int64_t hd, std::int64_t h, std::int64_t prefill, std::int32_t decode_position)
      : type(t), head_dim(hd), heads(h) {
    for (std::int64_t p = 0; p < prefill; ++p) slots.push_back({table_a.data(), static_cast<std::int32_t>(p)});
    slots.push_back({table_b.data(), decode_position});
    const auto tokens = static_cast<std::size_t>(slots.size());
    k = random_floats(51, tokens * static_cast<std::size_t>(hd), 1.0f, dtype::bf16);
    v = random_floats(52, tokens * static_cast<std::size_t>(hd), 1.0f, dtype::bf16);
    q = random_floats(53, tokens * static_cast<std::size_t>(h * hd), 1.0f, dtype::bf16);
  }
  std::size_t cache_bytes() const { return static_cast<std::size_t>(num_blocks * block_size * head_dim) * afd::size_of(type); }
  kernels::kv_layer_view view(std::vector<std::uint8_t>& kb, std::vector<std::uint8_t>& vb) const {
    return {type, kb.data(), vb.data(), num_blocks, block_size, head_dim};
  }
};

void add_attention(std::vector<op_case>& cases) {
  for (dtype t : {dtype::f32, dtype::bf16, dtype::f8_e4m3})
    for (auto [hd, heads, prefill] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{64, 4, 5}, {128, 8, 40}}) {
      auto s = std::make_shared<paged_setup>(t, hd, heads, prefill, 0);
      const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
      const auto out_size = s->q.size();
      cases.push_back(
          {"kv_append+attention " + std::string(afd::to_string(t)) + " head_dim=" + std::to_string(hd) +
               " heads=" + std::to_string(heads) + " prefill=" + std::to_string(prefill),
           2e-2,
           [=](kernels::backend& b) {
             std::vector<std::uint8_t> kb(s->cache_bytes()), vb(s->cache_bytes());
             const auto cache = s->view(kb, vb);
             std::vector<float> out(out_size);
             ok(b.kv_append({cache, s->slots, s->k.data(), s->v.data(), hd}), b);
             ok(b.attention({cache, s->slots, s->q.data(), heads, hd, scale, out.data()}), b);
             outputs o{{"out", out}};
             // Only a backend computing in host memory writes the host cache.
             if (b.host_memory()) {
               o.push_back({"k cache", as_floats(kb)});
               o.push_back({"v cache", as_floats(vb)});
             }
             return o;
           },
           [=] {
             std::vector<std::uint8_t> kb(s->cache_bytes()), vb(s->cache_bytes());
             const auto cache = s->view(kb, vb);
             std::vector<float> out(out_size);
             cpu::kv_append(cache, s->slots, s->k.data(), s->v.data());
             cpu::attention(cache, s->slots, s->q.data(), heads, scale, out.data());
             return outputs{{"out", out}, {"k cache", as_floats(kb)}, {"v cache", as_floats(vb)}};
           }});
    }
}

void add_router(std::vector<op_case>& cases) {
  for (auto [m, e, k, renorm] : {std::tuple<std::int64_t, std::int64_t, std::int64_t, bool>{1, 8, 2, false},
                                 {7, 48, 3, false}, {5, 16, 4, true}}) {
    auto logits = std::make_shared<std::vector<float>>(random_floats(61, static_cast<std::size_t>(m * e), 4.0f));
    cases.push_back({"router_topk m=" + std::to_string(m) + " experts=" + std::to_string(e) + " k=" + std::to_string(k) +
                         (renorm ? " renormalised" : ""),
                     1e-5,
                     [=](kernels::backend& b) {
                       std::vector<std::int32_t> ids(static_cast<std::size_t>(m * k));
                       std::vector<float> w(ids.size());
                       ok(b.router_topk({logits->data(), m, e, k, renorm, ids.data(), w.data()}), b);
                       return outputs{{"ids", as_floats(ids)}, {"weights", w}};
                     },
                     [=] {
                       std::vector<std::int32_t> ids(static_cast<std::size_t>(m * k));
                       std::vector<float> w(ids.size());
                       cpu::router_topk(logits->data(), m, e, k, renorm, ids.data(), w.data());
                       return outputs{{"ids", as_floats(ids)}, {"weights", w}};
                     }});
  }
}

void add_swiglu(std::vector<op_case>& cases) {
  for (dtype t : {dtype::bf16, dtype::f32})
    for (auto [m, h, inner] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 64, 32}, {9, 128, 96}}) {
      auto gate = std::make_shared<stored_weight>(71, t, inner, h, 0.3f);
      auto up = std::make_shared<stored_weight>(72, t, inner, h, 0.3f);
      auto down = std::make_shared<stored_weight>(73, t, h, inner, 0.3f);
      auto x = std::make_shared<std::vector<float>>(random_floats(74, static_cast<std::size_t>(m * h), 1.0f, dtype::bf16));
      cases.push_back({"swiglu " + std::string(afd::to_string(t)) + " m=" + std::to_string(m) + " hidden=" +
                           std::to_string(h) + " inner=" + std::to_string(inner),
                       3e-2,
                       [=](kernels::backend& b) {
                         std::vector<float> y(x->size()), scratch(static_cast<std::size_t>(2 * m * inner));
                         ok(b.swiglu({x->data(), m, h, gate->view, up->view, down->view, y.data(), scratch}), b);
                         return outputs{{"y", y}};
                       },
                       [=] {
                         std::vector<float> y(x->size()), scratch(static_cast<std::size_t>(2 * m * inner));
                         cpu::swiglu(x->data(), m, gate->view, up->view, down->view, y.data(), scratch.data());
                         return outputs{{"y", y}};
                       }});
    }
}

void add_fp8(std::vector<op_case>& cases) {
  for (auto [m, n] : {std::pair<std::int64_t, std::int64_t>{1, 64}, {4, 300}, {3, 1024}}) {
    auto x = std::make_shared<std::vector<float>>(random_floats(81, static_cast<std::size_t>(m * n), 20.0f));
    const auto blocks = static_cast<std::size_t>(m * ((n + 127) / 128));
    const auto count = static_cast<std::size_t>(m * n);
    const std::string shape = " m=" + std::to_string(m) + " n=" + std::to_string(n);
    cases.push_back({"quantize_fp8" + shape, 0,
                     [=](kernels::backend& b) {
                       std::vector<std::uint8_t> q(count);
                       std::vector<float> scales(blocks);
                       ok(b.quantize_fp8({x->data(), m, n, q.data(), scales.data()}), b);
                       return outputs{{"q", as_floats(q)}, {"scales", scales}};
                     },
                     [=] {
                       std::vector<std::uint8_t> q(count);
                       std::vector<float> scales(blocks);
                       cpu::quantize_fp8(x->data(), m, n, q.data(), scales.data());
                       return outputs{{"q", as_floats(q)}, {"scales", scales}};
                     }});
    auto q = std::make_shared<std::vector<std::uint8_t>>(count);
    auto scales = std::make_shared<std::vector<float>>(blocks);
    cpu::quantize_fp8(x->data(), m, n, q->data(), scales->data());
    cases.push_back({"dequantize_fp8" + shape, 0,
                     [=](kernels::backend& b) {
                       std::vector<float> y(count);
                       ok(b.dequantize_fp8({q->data(), scales->data(), m, n, y.data()}), b);
                       return outputs{{"x", y}};
                     },
                     [=] {
                       std::vector<float> y(count);
                       cpu::dequantize_fp8(q->data(), scales->data(), m, n, y.data());
                       return outputs{{"x", y}};
                     }});
    for (dtype wire : {dtype::f32, dtype::bf16, dtype::f16, dtype::f8_e4m3})
      cases.push_back({"round_activations " + std::string(afd::to_string(wire)) + shape, 0,
                       [=](kernels::backend& b) {
                         std::vector<float> y = *x;
                         ok(b.round_activations({wire, y.data(), m, n}), b);
                         return outputs{{"x", y}};
                       },
                       [=] {
                         std::vector<float> y = *x;
                         cpu::round_activations(wire, y.data(), m, n);
                         return outputs{{"x", y}};
                       }});
  }
}

void add_sample(std::vector<op_case>& cases) {
  auto logits = std::make_shared<std::vector<float>>(random_floats(91, 512, 5.0f));
  for (const kernels::sampling_params sp : {kernels::sampling_params{0.0f, 0, 1.0f, 0},
                                             kernels::sampling_params{0.8f, 40, 0.9f, 1234},
                                             kernels::sampling_params{1.0f, 0, 1.0f, 99}})
    cases.push_back({"sample temperature=" + std::to_string(sp.temperature) + " top_k=" + std::to_string(sp.top_k), 0,
                     [=](kernels::backend& b) {
                       std::vector<std::int32_t> tokens(8);
                       for (std::uint64_t i = 0; i < tokens.size(); ++i)
                         ok(b.sample({logits->data(), 512, sp, i, &tokens[i]}), b);
                       return outputs{{"tokens", as_floats(tokens)}};
                     },
                     [=] {
                       std::vector<std::int32_t> tokens(8);
                       for (std::uint64_t i = 0; i < tokens.size(); ++i)
                         tokens[i] = cpu::sample(logits->data(), 512, sp, i);
                       return outputs{{"tokens", as_floats(tokens)}};
                     }});
}

std::vector<op_case> all_cases() {
  std::vector<op_case> cases;
  add_gather_rows(cases);
  add_rmsnorm(cases);
  add_gemm(cases);
  add_rope(cases);
  add_attention(cases);
  add_router(cases);
  add_swiglu(cases);
  add_fp8(cases);
  add_sample(cases);
  return cases;
}

/// Compares `got` with `want` output by output: bitwise when tolerance is 0.
void compare(const std::string& what, const outputs& got, const outputs& want, double tolerance) {
  for (const named_output& g : got) {
    auto w = std::find_if(want.begin(), want.end(), [&](const named_output& o) { return o.name == g.name; });
    ASSERT_NE(w, want.end()) << what << ": unexpected output " << g.name;
    ASSERT_EQ(g.values.size(), w->values.size()) << what << ": " << g.name;
    if (tolerance == 0) {
      for (std::size_t i = 0; i < g.values.size(); ++i)
        ASSERT_EQ(std::memcmp(&g.values[i], &w->values[i], sizeof(float)), 0)
            << what << ": " << g.name << "[" << i << "] = " << g.values[i] << ", oracle " << w->values[i];
      continue;
    }
    double scale = 1e-6, worst = 0;
    std::size_t at = 0;
    for (float v : w->values) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    for (std::size_t i = 0; i < g.values.size(); ++i) {
      const double e = std::fabs(static_cast<double>(g.values[i]) - w->values[i]);
      if (!(e <= worst)) worst = e, at = i;  // NaN counts as worst
    }
    EXPECT_LE(worst / scale, tolerance) << what << ": " << g.name << "[" << at << "] = " << g.values[at] << ", oracle "
                                        << w->values[at] << " (max |oracle| " << scale << ")";
  }
}

// ------------------------------------------------------------------------------------------------
// The contract

TEST(backend_ops, every_op_of_every_backend_matches_the_cpu_oracle) {
  const std::vector<op_case> cases = all_cases();
  const std::vector<std::string> devices = kernels::available_devices();
  ASSERT_FALSE(devices.empty());
  ASSERT_EQ(devices.front(), "cpu");
  auto reference = kernels::make_backend("cpu");
  ASSERT_TRUE(reference.has_value()) << reference.err().to_string();
  for (const std::string& device : devices) {
    auto b = kernels::make_backend(device);
    ASSERT_TRUE(b.has_value()) << b.err().to_string();
    for (const op_case& c : cases) {
      SCOPED_TRACE(device + ": " + c.label);
      const outputs got = c.through_backend(**b);
      if (device == "cpu")
        compare(device + " " + c.label + " vs kernels::cpu", got, c.direct(), 0);
      else
        compare(device + " " + c.label + " vs the cpu backend", got, c.through_backend(**reference), c.tolerance);
    }
  }
  if (devices.size() == 1) std::printf("only the CPU backend is available here: CUDA cases ran on no device\n");
}

TEST(backend_ops, every_op_is_in_the_table) {
  // A new op in backend.hpp needs a row here; this list is the interface's, in its order.
  const std::vector<std::string> ops{"gather_rows", "rmsnorm", "gemm", "rope", "kv_append", "attention", "router_topk",
                                     "swiglu", "quantize_fp8", "dequantize_fp8", "round_activations", "sample"};
  const std::vector<op_case> cases = all_cases();
  for (const std::string& op : ops)
    EXPECT_TRUE(std::any_of(cases.begin(), cases.end(),
                            [&](const op_case& c) { return c.label.find(op) != std::string::npos; }))
        << op << " has no case";
}

TEST(backend_ops, backend_memory_round_trips) {
  for (const std::string& device : kernels::available_devices()) {
    auto b = kernels::make_backend(device);
    ASSERT_TRUE(b.has_value()) << b.err().to_string();
    const std::vector<float> in = random_floats(5, 1000, 1.0f);
    auto memory = (*b)->allocate(in.size() * sizeof(float));
    ASSERT_TRUE(memory.has_value()) << memory.err().to_string();
    ASSERT_TRUE((*b)->copy_to_backend(*memory, in.data(), in.size() * sizeof(float)).has_value());
    std::vector<float> out(in.size());
    ASSERT_TRUE((*b)->copy_to_host(out.data(), *memory, out.size() * sizeof(float)).has_value());
    (*b)->release(*memory);
    EXPECT_EQ(in, out) << device;
    EXPECT_EQ((*b)->host_memory(), device == "cpu");
  }
}

// ------------------------------------------------------------------------------------------------
// The checking layer

struct bad_call {
  std::string label;
  std::function<op_status(kernels::backend&)> call;
  std::vector<std::string> message_names;  ///< every one must appear in last_error()
};

TEST(backend_ops, the_checking_layer_refuses_bad_shapes_naming_op_and_tensor) {
  stored_weight w(1, dtype::bf16, 32, 64, 1.0f);
  stored_weight small(2, dtype::bf16, 16, 32, 1.0f);
  stored_weight small_down(4, dtype::bf16, 32, 16, 1.0f);
  stored_weight fp8(3, dtype::f8_e4m3, 32, 64, 1.0f);
  std::vector<float> x(64 * 8, 0.5f), y(64 * 8), norm(64, 1.0f), scratch(8);
  std::vector<std::int32_t> ids{0, 40}, positions{0, 1, 2}, table{0, 99};
  std::vector<std::uint8_t> kb(4 * 16 * 64 * 2), vb(kb.size());
  const kernels::kv_layer_view cache{dtype::bf16, kb.data(), vb.data(), 4, 16, 64};
  std::vector<kernels::kv_slot> in_range{{table.data(), 3}}, out_of_range{{table.data(), 20}};
  std::vector<float> q(4 * 64);
  std::int32_t token = 0;

  const std::vector<bad_call> calls{
      {"gemm width", [&](kernels::backend& b) { return b.gemm({x.data(), 2, 48, w.view, y.data()}); }, {"gemm", "x", "w"}},
      {"gemm null y", [&](kernels::backend& b) { return b.gemm({x.data(), 2, 64, w.view, nullptr}); }, {"gemm", "y"}},
      {"gemm dtype", [&](kernels::backend& b) { return b.gemm({x.data(), 2, 64, fp8.view, y.data()}); }, {"gemm", "w", "fp8"}},
      {"rmsnorm weight", [&](kernels::backend& b) { return b.rmsnorm({x.data(), 2, 32, norm, 1e-5f, y.data()}); },
       {"rmsnorm", "weight"}},
      {"rope odd head_dim",
       [&](kernels::backend& b) { return b.rope({x.data(), 3, 1, 33, positions, 10000.0}); }, {"rope", "head_dim"}},
      {"rope positions", [&](kernels::backend& b) { return b.rope({x.data(), 2, 1, 32, positions, 10000.0}); },
       {"rope", "positions"}},
      {"gather_rows id", [&](kernels::backend& b) { return b.gather_rows({w.view, ids, y.data()}); },
       {"gather_rows", "ids[1]"}},
      {"kv_append width",
       [&](kernels::backend& b) { return b.kv_append({cache, in_range, x.data(), x.data(), 32}); }, {"kv_append", "k"}},
      {"kv_append block table",
       [&](kernels::backend& b) { return b.kv_append({cache, out_of_range, x.data(), x.data(), 64}); },
       {"kv_append", "block_table[1]", "99"}},
      {"attention head_dim",
       [&](kernels::backend& b) { return b.attention({cache, in_range, q.data(), 4, 32, 0.1f, y.data()}); },
       {"attention", "q", "head_dim"}},
      {"router k", [&](kernels::backend& b) { return b.router_topk({x.data(), 2, 8, 9, false, ids.data(), y.data()}); },
       {"router_topk", "k", "logits"}},
      {"swiglu down",
       [&](kernels::backend& b) { return b.swiglu({x.data(), 2, 64, w.view, w.view, w.view, y.data(), scratch}); },
       {"swiglu", "down"}},
      {"swiglu scratch",
       [&](kernels::backend& b) { return b.swiglu({x.data(), 2, 32, small.view, small.view, small_down.view, y.data(), scratch}); },
       {"swiglu", "scratch"}},
      {"quantize null scales",
       [&](kernels::backend& b) { return b.quantize_fp8({x.data(), 2, 64, kb.data(), nullptr}); },
       {"quantize_fp8", "scales"}},
      {"round dtype",
       [&](kernels::backend& b) { return b.round_activations({static_cast<dtype>(9), x.data(), 2, 64}); },
       {"round_activations", "wire"}},
      {"sample vocab", [&](kernels::backend& b) { return b.sample({x.data(), 0, {}, 0, &token}); }, {"sample", "logits"}},
  };
  for (const std::string& device : kernels::available_devices()) {
    auto b = kernels::make_backend(device);
    ASSERT_TRUE(b.has_value()) << b.err().to_string();
    for (const bad_call& c : calls) {
      EXPECT_EQ(c.call(**b), op_status::invalid_argument) << device << ": " << c.label;
      const std::string message = (*b)->last_error();
      for (const std::string& name : c.message_names)
        EXPECT_NE(message.find(name), std::string::npos)
            << device << ": " << c.label << ": '" << name << "' not in: " << message;
    }
    // A good call after a bad one succeeds and clears the message.
    EXPECT_EQ((*b)->gemm({x.data(), 2, 64, w.view, y.data()}), op_status::ok);
    EXPECT_EQ((*b)->last_error(), "");
    // require() turns a refusal into op_failure carrying the message.
    try {
      kernels::require((*b)->gemm({x.data(), 2, 48, w.view, y.data()}), **b);
      ADD_FAILURE() << "require did not throw";
    } catch (const kernels::op_failure& e) {
      EXPECT_NE(std::string(e.what()).find("gemm"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(device), std::string::npos) << e.what();
    }
  }
}

TEST(backend_ops, empty_calls_are_no_ops) {
  auto b = kernels::make_backend("cpu");
  ASSERT_TRUE(b.has_value());
  stored_weight w(1, dtype::bf16, 32, 64, 1.0f);
  EXPECT_EQ((*b)->gemm({nullptr, 0, 64, w.view, nullptr}), op_status::ok);
  EXPECT_EQ((*b)->attention({}), op_status::ok);
  EXPECT_EQ((*b)->gather_rows({w.view, {}, nullptr}), op_status::ok);
}

// ------------------------------------------------------------------------------------------------
// Devices

TEST(backend_ops, devices_that_cannot_be_used_are_refused_with_the_reason) {
  auto cpu_backend = kernels::make_backend("cpu");
  ASSERT_TRUE(cpu_backend.has_value());
  EXPECT_EQ((*cpu_backend)->device(), "cpu");
  EXPECT_EQ((*cpu_backend)->name(), "checked(cpu)");

  for (const char* bad : {"gpu:0", "cuda", "cuda:", "cuda:x", "cuda:-1", "CPU"}) {
    auto b = kernels::make_backend(bad);
    ASSERT_FALSE(b.has_value()) << bad;
    EXPECT_EQ(b.err().code(), afd::errc::invalid_argument) << bad;
    EXPECT_NE(b.err().message().find(std::string("'") + bad + "'"), std::string::npos) << b.err().message();
  }

  const std::vector<std::string> devices = kernels::available_devices();
  // A device index past the last usable one: refused everywhere, naming it.
  const std::string missing = "cuda:" + std::to_string(devices.size() + 6);
  for (const std::string& device : {std::string("cuda:0"), missing}) {
    if (std::find(devices.begin(), devices.end(), device) != devices.end()) continue;  // usable here
    auto b = kernels::make_backend(device);
    ASSERT_FALSE(b.has_value()) << device;
    const std::string& message = b.err().message();
    EXPECT_NE(message.find("device " + device), std::string::npos) << message;
    // The reason: no CUDA in the build, no driver/GPU, or too few GPUs.
    EXPECT_TRUE(message.find("CUDA") != std::string::npos || message.find("cuda") != std::string::npos) << message;
    auto probed = kernels::probe_device(device);
    ASSERT_FALSE(probed.has_value());
    EXPECT_EQ(probed.err().message(), message);
  }
}

}  // namespace
