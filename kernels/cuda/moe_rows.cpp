// Host-side planning of an FFN worker's routed rows (no device code).
#include <map>
#include <vector>

#include "kernels/cuda/cuda_kernels.hpp"

namespace afd::kernels::cuda {

moe_rows plan_moe_rows(std::span<const std::int32_t> ids, std::span<const float> weights, std::int64_t m,
                       std::int64_t k, std::span<const std::int32_t> owned) {
  moe_rows plan;
  plan.group_offsets.assign(owned.size() + 1, 0);
  std::map<std::int32_t, std::size_t> group_of;
  for (std::size_t g = 0; g < owned.size(); ++g) group_of.emplace(owned[g], g);
  // Counting sort, stable in (token, slot): rows of an expert appear in token order.
  std::vector<std::int32_t> count(owned.size(), 0);
  for (std::int64_t i = 0; i < m * k; ++i)
    if (auto it = group_of.find(ids[static_cast<std::size_t>(i)]); it != group_of.end()) ++count[it->second];
  for (std::size_t g = 0; g < owned.size(); ++g) plan.group_offsets[g + 1] = plan.group_offsets[g] + count[g];
  const auto rows = static_cast<std::size_t>(plan.group_offsets.back());
  plan.row_token.resize(rows);
  plan.row_slot.resize(rows);
  plan.row_weight.resize(rows);
  std::vector<std::int32_t> next(plan.group_offsets.begin(), plan.group_offsets.end() - 1);
  for (std::int64_t t = 0; t < m; ++t)
    for (std::int64_t j = 0; j < k; ++j) {
      const auto i = static_cast<std::size_t>(t * k + j);
      auto it = group_of.find(ids[i]);
      if (it == group_of.end()) continue;
      const auto r = static_cast<std::size_t>(next[it->second]++);
      plan.row_token[r] = static_cast<std::int32_t>(t);
      plan.row_slot[r] = static_cast<std::int32_t>(j);
      plan.row_weight[r] = weights[i];
    }
  return plan;
}

}  // namespace afd::kernels::cuda
