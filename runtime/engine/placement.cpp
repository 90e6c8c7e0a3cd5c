#include "runtime/engine/placement.hpp"

#include <algorithm>
#include <sstream>

namespace afd::engine {

std::vector<std::int64_t> placement::experts_of(int worker, std::int64_t layer) const {
  std::vector<std::int64_t> out;
  if (layer < 0 || layer >= static_cast<std::int64_t>(layers.size())) return out;
  const auto& owners = layers[static_cast<std::size_t>(layer)].expert_owner;
  for (std::size_t e = 0; e < owners.size(); ++e)
    if (owners[e] == worker) out.push_back(static_cast<std::int64_t>(e));
  return out;
}

std::optional<unit_slice> placement::unit_slice_of(int worker, std::int64_t layer) const {
  if (layer < 0 || layer >= static_cast<std::int64_t>(layers.size())) return std::nullopt;
  for (const auto& s : layers[static_cast<std::size_t>(layer)].unit)
    if (s.worker == worker) return s;
  return std::nullopt;
}

bool placement::units_whole() const {
  return std::all_of(layers.begin(), layers.end(), [](const layer_placement& l) { return l.unit.size() <= 1; });
}

ffn_assignment placement::assignment_of(int worker) const {
  ffn_assignment a;
  a.units.resize(layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    auto& units = a.units[l];
    for (auto e : experts_of(worker, static_cast<std::int64_t>(l))) units.push_back(static_cast<std::int32_t>(e));
    const auto slice = unit_slice_of(worker, static_cast<std::int64_t>(l));
    if (!slice) continue;
    if (layers[l].unit.size() == 1) {
      units.push_back(shared_unit);  // computed whole
    } else {
      a.shared_slices.resize(layers.size());
      a.shared_slices[l] = {slice->begin, slice->end - slice->begin};
    }
  }
  return a;
}

expected<void> placement::validate() const {
  const int workers = static_cast<int>(ffn_workers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const layer_placement& lp = layers[l];
    for (std::size_t e = 0; e < lp.expert_owner.size(); ++e)
      if (lp.expert_owner[e] < 0 || lp.expert_owner[e] >= workers)
        return fail(errc::invalid_config, "placement: layer ", l, " expert ", e, " has owner ", lp.expert_owner[e],
                    ", not one of the ", workers, " FFN workers");
    std::int64_t next = 0;
    for (const auto& s : lp.unit) {
      if (s.worker < 0 || s.worker >= workers)
        return fail(errc::invalid_config, "placement: layer ", l, " has a unit slice of worker ", s.worker, ", not one of the ",
                    workers, " FFN workers");
      if (s.begin != next || s.end <= s.begin)
        return fail(errc::invalid_config, "placement: layer ", l, " unit slices do not tile [0, ", lp.unit_width,
                    ") (slice [", s.begin, ", ", s.end, ") where column ", next, " was expected)");
      next = s.end;
    }
    if (!lp.unit.empty() && next != lp.unit_width)
      return fail(errc::invalid_config, "placement: layer ", l, " unit slices cover [0, ", next, ") of [0, ",
                  lp.unit_width, ")");
    if (lp.unit.empty() && lp.unit_width > 0)
      return fail(errc::invalid_config, "placement: layer ", l, "'s shared/dense unit (width ", lp.unit_width,
                  ") has no owner");
  }
  return {};
}

weight_selection ffn_weight_selection(const ffn_assignment& assignment) {
  const std::size_t layers = std::max(assignment.units.size(), assignment.shared_slices.size());
  std::vector<std::vector<std::int32_t>> experts(layers);
  std::vector<bool> shared(layers, false);
  for (std::size_t l = 0; l < assignment.units.size(); ++l)
    for (std::int32_t u : assignment.units[l]) {
      if (u == shared_unit)
        shared[l] = true;
      else
        experts[l].push_back(u);
    }
  for (std::size_t l = 0; l < assignment.shared_slices.size(); ++l)
    if (assignment.shared_slices[l].count > 0) shared[l] = true;
  return weight_selection::ffn_side(std::move(experts), std::move(shared));
}

namespace {

/// Joins the lost slices of one sliced unit to live neighbours (see placement_for_live).
/// False when no slice holder is live (the caller then places the unit whole).
bool merge_slices(std::vector<unit_slice>& unit, const std::vector<bool>& live) {
  const auto alive = [&](const unit_slice& s) { return live[static_cast<std::size_t>(s.worker)]; };
  if (std::none_of(unit.begin(), unit.end(), alive)) return false;
  std::vector<unit_slice> out;
  std::size_t i = 0;
  while (i < unit.size()) {
    if (alive(unit[i])) {
      out.push_back(unit[i++]);
      continue;
    }
    std::size_t j = i;  // [i, j): a run of lost slices
    while (j < unit.size() && !alive(unit[j])) ++j;
    const std::int64_t begin = unit[i].begin, end = unit[j - 1].end;
    const bool has_left = !out.empty();
    const bool has_right = j < unit.size();
    const bool to_left =
        has_left && (!has_right || (out.back().end - out.back().begin) <= (unit[j].end - unit[j].begin));
    if (to_left) {
      out.back().end = end;
    } else {
      unit[j].begin = begin;  // the right neighbour (live) takes the run
    }
    i = j;
  }
  unit = std::move(out);
  return true;
}

}  // namespace

expected<placement> placement_for_live(const placement& planned, const std::vector<bool>& live) {
  const int workers = static_cast<int>(planned.ffn_workers.size());
  if (static_cast<int>(live.size()) != workers)
    return fail(errc::invalid_argument, "placement_for_live: ", live.size(), " liveness flags for ", workers,
                " FFN workers");
  std::vector<int> survivors;
  for (int w = 0; w < workers; ++w)
    if (live[static_cast<std::size_t>(w)]) survivors.push_back(w);
  if (survivors.empty()) return fail(errc::unavailable, "no FFN worker is live");
  placement p = planned;
  const auto n = survivors.size();
  for (auto& lp : p.layers) {
    // The lost workers' whole units, in (worker, unit) order: experts ascending, then the
    // shared/dense unit.
    std::size_t next = static_cast<std::size_t>(lp.layer) % n;
    for (int w = 0; w < workers; ++w) {
      if (live[static_cast<std::size_t>(w)]) continue;
      for (auto& owner : lp.expert_owner)
        if (owner == w) owner = survivors[next++ % n];
      if (lp.unit.size() == 1 && lp.unit[0].worker == w) lp.unit[0].worker = survivors[next++ % n];
    }
    if (lp.unit.size() > 1) {
      if (!merge_slices(lp.unit, live)) lp.unit = {{survivors[next++ % n], 0, lp.unit_width}};
      if (lp.unit.size() == 1) lp.unit[0] = {lp.unit[0].worker, 0, lp.unit_width};
    }
  }
  return p;
}

std::string describe_moves(const placement& from, const placement& to, std::size_t limit) {
  std::ostringstream out;
  std::size_t shown = 0, total = 0;
  auto name = [&](int w) {
    return w >= 0 && static_cast<std::size_t>(w) < from.ffn_workers.size() ? from.ffn_workers[static_cast<std::size_t>(w)]
                                                                             : std::to_string(w);
  };
  auto line = [&](const std::string& text) {
    ++total;
    if (shown < limit) {
      out << (shown ? "\n" : "") << text;
      ++shown;
    }
  };
  for (std::size_t l = 0; l < from.layers.size() && l < to.layers.size(); ++l) {
    const auto& a = from.layers[l];
    const auto& b = to.layers[l];
    for (std::size_t e = 0; e < a.expert_owner.size() && e < b.expert_owner.size(); ++e)
      if (a.expert_owner[e] != b.expert_owner[e])
        line("layer " + std::to_string(l) + " expert " + std::to_string(e) + ": " + name(a.expert_owner[e]) + " -> " +
             name(b.expert_owner[e]));
    if (a.unit != b.unit) {
      auto text = [&](const std::vector<unit_slice>& u) {
        std::string s;
        // Appended piece by piece: GCC 12 reports a false -Wrestrict on `"" + std::string&&`.
        for (const auto& x : u) {
          if (!s.empty()) s += ", ";
          s += name(x.worker);
          if (u.size() > 1) {
            s += '[';
            s += std::to_string(x.begin);
            s += ',';
            s += std::to_string(x.end);
            s += ')';
          }
        }
        return s;
      };
      line("layer " + std::to_string(l) + " shared/dense unit: " + text(a.unit) + " -> " + text(b.unit));
    }
  }
  if (total > shown) out << "\n(" << total - shown << " more)";
  return out.str();
}

}  // namespace afd::engine
