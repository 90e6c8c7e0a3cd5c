// Token sampling. Definition (deterministic on every platform with IEEE doubles and a correctly
// behaving exp):
//   temperature <= 0: argmax of the logits, ties to the lower id.
//   otherwise, in double: z_i = logit_i / temperature, e_i = exp(z_i - max z); tokens ordered by
//   (e desc, id asc); keep the first top_k of them (top_k > 0); then keep the shortest prefix
//   whose mass sum(e) >= top_p * (mass kept so far), at least one token (top_p < 1); draw
//   u = (splitmix64(seed ^ splitmix64(token_index)) >> 11) * 2^-53 in [0, 1) and pick the first
//   token of the prefix whose cumulative mass exceeds u * (prefix mass), summed in that order.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"

namespace afd::kernels::cpu {
namespace {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::int32_t sample(const float* logits, std::int64_t vocab, const sampling_params& params,
                    std::uint64_t token_index) {
  if (vocab <= 0) return 0;
  if (!(params.temperature > 0.0f)) {
    std::int64_t best = 0;
    for (std::int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<std::int32_t>(best);
  }
  const double temp = params.temperature;
  double zmax = -INFINITY;
  for (std::int64_t i = 0; i < vocab; ++i) zmax = std::max(zmax, static_cast<double>(logits[i]) / temp);
  std::vector<double> e(static_cast<std::size_t>(vocab));
  for (std::int64_t i = 0; i < vocab; ++i) e[i] = std::exp(static_cast<double>(logits[i]) / temp - zmax);
  std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto before = [&](std::int32_t a, std::int32_t b) { return e[a] > e[b] || (e[a] == e[b] && a < b); };
  std::size_t keep = order.size();
  if (params.top_k > 0 && static_cast<std::size_t>(params.top_k) < keep) {
    keep = static_cast<std::size_t>(params.top_k);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(), before);
  } else {
    std::sort(order.begin(), order.end(), before);
  }
  if (params.top_p < 1.0f) {
    double mass = 0.0;
    for (std::size_t i = 0; i < keep; ++i) mass += e[order[i]];
    const double target = static_cast<double>(params.top_p) * mass;
    double cum = 0.0;
    std::size_t n = 0;
    while (n < keep) {
      cum += e[order[n++]];
      if (cum >= target) break;
    }
    keep = std::max<std::size_t>(1, n);
  }
  double mass = 0.0;
  for (std::size_t i = 0; i < keep; ++i) mass += e[order[i]];
  const double u = static_cast<double>(splitmix64(params.seed ^ splitmix64(token_index)) >> 11) * 0x1.0p-53;
  const double target = u * mass;
  double cum = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    cum += e[order[i]];
    if (target < cum) return order[i];
  }
  return order[keep - 1];
}

}  // namespace afd::kernels::cpu
