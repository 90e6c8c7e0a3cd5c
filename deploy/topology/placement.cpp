// Resolution of the placement rules against a model: which FFN worker computes which routed expert
// and which columns of each shared expert / dense MLP. Each rule maps the same way in every layer
// it covers (round_robin units aside), so each rule is evaluated once and its errors name the
// layers it covers.
#include <algorithm>
#include <map>

#include "deploy/topology/topology.hpp"

namespace afd::topology {

std::string ranges_text(const std::vector<std::int64_t>& sorted, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += separator;
    out += std::to_string(sorted[i]);
    if (j > i) out += "-" + std::to_string(sorted[j]);
    i = j + 1;
  }
  return out;
}

namespace {

std::string layers_text(const std::vector<std::int64_t>& layers, std::string_view kind) {
  return std::string(kind) + (layers.size() == 1 ? " layer " : " layers ") + ranges_text(layers);
}

// Splits [0, n) into `parts` near-equal contiguous ranges, the first n mod parts one longer;
// returns the start of each part and n at the end.
std::vector<std::int64_t> split_points(std::int64_t n, std::int64_t parts) {
  std::vector<std::int64_t> starts(static_cast<std::size_t>(parts) + 1);
  const std::int64_t base = n / parts;
  const std::int64_t extra = n % parts;
  for (std::int64_t i = 0; i < parts; ++i)
    starts[static_cast<std::size_t>(i) + 1] = starts[static_cast<std::size_t>(i)] + base + (i < extra ? 1 : 0);
  return starts;
}

struct resolver {
  const topology& t;
  const model_config& c;
  diagnostics errors;
  int workers = 0;

  void error(const source_location& where, std::string message) {
    errors.push_back(diagnostic{where, std::move(message)});
  }

  // Owner of each of the `experts` experts under `rule`, or nullopt (errors reported).
  std::optional<std::vector<int>> experts(const expert_rule& rule, std::int64_t count,
                                          const std::vector<std::int64_t>& layers) {
    std::vector<int> owner(static_cast<std::size_t>(count), -1);
    switch (rule.how) {
      case expert_rule::policy::contiguous: {
        const auto starts = split_points(count, workers);
        for (int w = 0; w < workers; ++w)
          for (std::int64_t e = starts[static_cast<std::size_t>(w)]; e < starts[static_cast<std::size_t>(w) + 1]; ++e)
            owner[static_cast<std::size_t>(e)] = w;
        return owner;
      }
      case expert_rule::policy::round_robin:
        for (std::int64_t e = 0; e < count; ++e) owner[static_cast<std::size_t>(e)] = static_cast<int>(e % workers);
        return owner;
      case expert_rule::policy::explicit_owners: break;
    }
    bool ok = true;
    const std::string scope = layers_text(layers, "MoE");
    for (const auto& o : rule.owners) {
      const int w = t.ffn_worker_index(o.worker);
      for (const auto& r : o.experts) {
        if (r.last >= count) {
          const std::int64_t first = std::max(r.first, count);
          error(r.where, std::string(first == r.last ? "expert " : "experts ") +
                             (first == r.last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(r.last)) +
                             " of " + o.worker + (first == r.last ? " is" : " are") +
                             " out of range: the model has " + std::to_string(count) +
                             " experts per MoE layer (0-" + std::to_string(count - 1) + ")");
          ok = false;
        }
        for (std::int64_t e = r.first; e <= std::min(r.last, count - 1); ++e) owner[static_cast<std::size_t>(e)] = w;
      }
    }
    std::vector<std::int64_t> nobody;
    for (std::int64_t e = 0; e < count; ++e)
      if (owner[static_cast<std::size_t>(e)] < 0) nobody.push_back(e);
    if (!nobody.empty()) {
      error(rule.where, std::string(nobody.size() == 1 ? "expert " : "experts ") + ranges_text(nobody) + " of " +
                            scope + (nobody.size() == 1 ? " is" : " are") +
                            " owned by nobody: expected each of the " + std::to_string(count) + " experts (0-" +
                            std::to_string(count - 1) + ") listed under exactly one FFN worker");
      ok = false;
    }
    if (!ok) return std::nullopt;
    return owner;
  }

  // Checks an explicit unit rule against the unit's width once; true when it tiles [0, width).
  bool check_unit(const unit_rule& rule, std::int64_t width, std::string_view unit_name,
                  const std::vector<std::int64_t>& layers, std::string_view kind) {
    if (rule.how != unit_rule::policy::explicit_owners) return true;
    std::vector<const unit_rule::share*> slices;
    for (const auto& s : rule.shares)
      if (!s.whole) slices.push_back(&s);
    if (slices.empty()) return true;  // one `whole` owner (the parser checked there is one)
    std::sort(slices.begin(), slices.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
    bool ok = true;
    const std::string scope = layers_text(layers, kind);
    for (const auto* s : slices) {
      if (s->end > width) {
        error(s->where, "column slice [" + std::to_string(s->begin) + ", " + std::to_string(s->end) + ") of " +
                            s->worker + " goes beyond the " + std::string(unit_name) + "'s width " +
                            std::to_string(width) + " (" + scope + "); expected end <= " + std::to_string(width));
        ok = false;
      }
    }
    std::int64_t covered = 0;
    for (const auto* s : slices) {
      if (s->begin > covered)
        error(rule.where, "columns [" + std::to_string(covered) + ", " + std::to_string(s->begin) + ") of the " +
                              std::string(unit_name) + " of " + scope +
                              " are owned by nobody: expected slices covering [0, " + std::to_string(width) + ")");
      if (s->begin > covered) ok = false;
      covered = std::max(covered, s->end);
    }
    if (covered < width) {
      error(rule.where, "columns [" + std::to_string(covered) + ", " + std::to_string(width) + ") of the " +
                            std::string(unit_name) + " of " + scope +
                            " are owned by nobody: expected slices covering [0, " + std::to_string(width) + ")");
      ok = false;
    }
    return ok;
  }

  // The slices of a unit of `width` columns in `layer` (the rule was checked).
  std::vector<unit_slice> unit(const unit_rule& rule, std::int64_t width, std::int64_t layer) const {
    std::vector<unit_slice> out;
    if (width <= 0) return out;
    switch (rule.how) {
      case unit_rule::policy::round_robin:
        out.push_back(unit_slice{static_cast<int>(layer % workers), 0, width});
        break;
      case unit_rule::policy::sliced: {
        const auto starts = split_points(width, workers);
        for (int w = 0; w < workers; ++w) {
          const auto b = starts[static_cast<std::size_t>(w)], e = starts[static_cast<std::size_t>(w) + 1];
          if (e > b) out.push_back(unit_slice{w, b, e});
        }
        break;
      }
      case unit_rule::policy::explicit_owners:
        for (const auto& s : rule.shares) {
          const int w = t.ffn_worker_index(s.worker);
          out.push_back(s.whole ? unit_slice{w, 0, width} : unit_slice{w, s.begin, std::min(s.end, width)});
        }
        std::sort(out.begin(), out.end(), [](const unit_slice& a, const unit_slice& b) { return a.begin < b.begin; });
        break;
    }
    return out;
  }
};

}  // namespace

checked<placement> resolve_placement(const topology& t, const model_config& c) {
  checked<placement> result;
  resolver r{t, c, {}, static_cast<int>(t.ffn_workers.size())};
  const source_location file_at{t.file, 0, 0};
  if (std::string problem = validate(c); !problem.empty()) {
    r.error(file_at, "the model config is invalid: " + problem);
  }
  if (r.workers == 0) r.error(t.location_of("ffn_workers"), "no FFN worker to place the model's FFN layers on");
  if (!r.errors.empty()) {
    result.errors = std::move(r.errors);
    return result;
  }
  const std::int64_t layers = c.num_hidden_layers;
  const auto& spec = t.placement;

  // Which rule governs each layer, and the layers each rule governs.
  std::vector<const layer_rule*> override_of(static_cast<std::size_t>(layers), nullptr);
  for (const auto& rule : spec.layers) {
    if (rule.last_layer >= layers) {
      r.error(rule.where, "layer " + std::string(rule.first_layer == rule.last_layer ? "" : "range ") +
                              std::to_string(rule.first_layer) +
                              (rule.first_layer == rule.last_layer ? "" : "-" + std::to_string(rule.last_layer)) +
                              " is out of range: the model has " + std::to_string(layers) + " layers (0-" +
                              std::to_string(layers - 1) + ")");
    }
    bool any_moe = false, any_dense = false;
    for (std::int64_t l = rule.first_layer; l <= std::min(rule.last_layer, layers - 1); ++l) {
      override_of[static_cast<std::size_t>(l)] = &rule;
      (c.is_moe_layer(l) ? any_moe : any_dense) = true;
    }
    if (rule.first_layer < layers) {
      const bool one = rule.first_layer == rule.last_layer;
      auto none_of = [&](std::string_view kind) {
        return one ? "layer " + std::to_string(rule.first_layer) + " is not " + std::string(kind) + " layer"
                   : "layers " + std::to_string(rule.first_layer) + "-" + std::to_string(rule.last_layer) +
                         " contain no " + std::string(kind.substr(kind.find(' ') + 1)) + " layer";
      };
      if (rule.experts && !any_moe)
        r.error(rule.experts->where, none_of("an MoE") + ": 'experts' applies only to MoE layers");
      if (rule.shared && !any_moe)
        r.error(rule.shared->where, none_of("an MoE") + ": 'shared' applies only to MoE layers");
      if (rule.dense && !any_dense)
        r.error(rule.dense->where, none_of("a dense") + ": 'dense' applies only to dense layers");
    }
  }
  auto experts_rule = [&](std::int64_t l) -> const expert_rule& {
    const layer_rule* o = override_of[static_cast<std::size_t>(l)];
    return o && o->experts ? *o->experts : spec.experts;
  };
  auto unit_rule_of = [&](std::int64_t l, bool moe) -> const unit_rule& {
    const layer_rule* o = override_of[static_cast<std::size_t>(l)];
    if (moe) return o && o->shared ? *o->shared : spec.shared;
    return o && o->dense ? *o->dense : spec.dense;
  };
  std::map<const void*, std::vector<std::int64_t>> layers_of_rule;
  for (std::int64_t l = 0; l < layers; ++l) {
    const bool moe = c.is_moe_layer(l);
    if (moe) layers_of_rule[&experts_rule(l)].push_back(l);
    layers_of_rule[&unit_rule_of(l, moe)].push_back(l);
  }

  // Evaluate each rule once.
  std::map<const expert_rule*, std::optional<std::vector<int>>> owners;
  std::map<const unit_rule*, bool> unit_ok;
  for (std::int64_t l = 0; l < layers; ++l) {
    const bool moe = c.is_moe_layer(l);
    if (moe) {
      const expert_rule* er = &experts_rule(l);
      if (!owners.count(er)) owners[er] = r.experts(*er, c.moe_num_experts, layers_of_rule[er]);
    }
    const unit_rule* ur = &unit_rule_of(l, moe);
    const std::int64_t width = moe ? c.share_expert_dim : c.intermediate_size;
    if (!unit_ok.count(ur))
      unit_ok[ur] = width <= 0 || r.check_unit(*ur, width, moe ? "shared expert" : "dense MLP",
                                               layers_of_rule[ur], moe ? "MoE" : "dense");
  }
  if (!r.errors.empty()) {
    result.errors = std::move(r.errors);
    return result;
  }

  placement p;
  for (const auto& w : t.ffn_workers) p.ffn_workers.push_back(w.name);
  for (std::int64_t l = 0; l < layers; ++l) {
    layer_placement lp;
    lp.layer = l;
    lp.moe = c.is_moe_layer(l);
    if (lp.moe) lp.expert_owner = *owners[&experts_rule(l)];
    lp.unit_width = lp.moe ? c.share_expert_dim : c.intermediate_size;
    lp.unit = r.unit(unit_rule_of(l, lp.moe), lp.unit_width, l);
    p.layers.push_back(std::move(lp));
  }
  // The parser rejects slicing in deterministic mode; this keeps the invariant whatever the rule.
  if (t.model.combine == combine_mode::deterministic && !p.units_whole()) {
    r.error(t.location_of("placement"),
            "a unit is sliced across FFN workers, which needs model.combine_mode: throughput");
    result.errors = std::move(r.errors);
    return result;
  }
  result.value = std::move(p);
  return result;
}

}  // namespace afd::topology
