#pragma once
/// Summary statistics shared by every command that prints latency figures (afd demo, afd bench),
/// so that the same samples give the same p50 / p99 everywhere.

#include <algorithm>
#include <cmath>
#include <vector>

namespace afd {

/// Nearest-rank percentile: the smallest sample with at least p of the samples at or below it
/// (p in [0, 1]; p = 0 gives the minimum, p = 1 the maximum); 0 for no samples.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(p * static_cast<double>(v.size()));
  const auto i = static_cast<std::size_t>(std::clamp(rank, 1.0, static_cast<double>(v.size()))) - 1;
  return v[i];
}

}  // namespace afd
