// The text `afd check` prints: what runs where, and who computes which part of every layer.
#include <cstdio>
#include <map>
#include <sstream>

#include "deploy/topology/topology.hpp"

namespace afd::topology {

namespace {

std::string count_text(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.2f K", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

std::string expert_rule_text(const expert_rule& r) {
  switch (r.how) {
    case expert_rule::policy::contiguous: return "contiguous";
    case expert_rule::policy::round_robin: return "round_robin";
    case expert_rule::policy::explicit_owners: break;
  }
  std::string out;
  for (const auto& o : r.owners) {
    std::vector<std::string> parts;
    for (const auto& x : o.experts)
      parts.push_back(x.first == x.last ? std::to_string(x.first)
                                        : std::to_string(x.first) + "-" + std::to_string(x.last));
    std::string list;
    for (const auto& p : parts) list += (list.empty() ? "" : ",") + p;
    out += (out.empty() ? "" : " | ") + o.worker + ": " + (list.empty() ? "none" : list);
  }
  return out;
}

std::string unit_rule_text(const unit_rule& r) {
  switch (r.how) {
    case unit_rule::policy::round_robin: return "round_robin (whole)";
    case unit_rule::policy::sliced: return "sliced";
    case unit_rule::policy::explicit_owners: break;
  }
  std::string out;
  for (const auto& s : r.shares)
    out += (out.empty() ? "" : " | ") + s.worker + ": " +
           (s.whole ? std::string("whole")
                    : "[" + std::to_string(s.begin) + ", " + std::to_string(s.end) + ")");
  return out;
}

std::string slices_text(const layer_placement& l, const std::vector<std::string>& names) {
  if (l.unit.size() == 1) return "whole on " + names[static_cast<std::size_t>(l.unit[0].worker)];
  std::string out;
  for (const auto& s : l.unit)
    out += (out.empty() ? "" : " | ") + names[static_cast<std::size_t>(s.worker)] + " [" +
           std::to_string(s.begin) + ", " + std::to_string(s.end) + ")";
  return out;
}

}  // namespace

std::string summarize(const topology& t, const placement* p, const model_config* c) {
  std::ostringstream o;
  o << "cluster '" << t.cluster_name << "': " << t.attention_workers.size() << " attention worker(s), "
    << t.ffn_workers.size() << " FFN worker(s), " << t.nodes.size() << " node(s)\n";
  o << "model: " << t.model.path << "\n  kv " << to_string(t.model.kv_dtype) << ", dispatch "
    << to_string(t.model.dispatch_dtype) << ", combine " << to_string(t.model.combine_dtype) << ", "
    << to_string(t.model.combine) << " combine\n";
  if (c)
    o << "  " << c->num_hidden_layers << " layers (" << c->num_moe_layers() << " MoE), hidden "
      << c->hidden_size << ", " << c->moe_num_experts << " experts top-" << c->moe_top_k
      << ", expert width " << c->moe_intermediate_size << ", shared width " << c->share_expert_dim
      << ", dense width " << c->intermediate_size << "\n";
  o << "nodes:\n";
  for (const auto& n : t.nodes) {
    o << "  " << n.name << "  " << n.host;
    if (n.ssh) {
      const ssh_target ssh = ssh_target_of(n);
      o << "  ssh " << ssh.destination() << ":" << ssh.port;
      if (!ssh.identity.empty()) o << " (identity " << ssh.identity << ")";
    }
    if (!n.net_devices.empty()) o << "  net devices " << n.net_devices;
    if (!n.afd.empty()) o << "  afd " << n.afd;
    o << "\n";
  }
  o << "coordinator: node " << t.coordinator.node << ", port " << t.coordinator.port;
  for (const auto& c : coordinator_endpoints(t))
    if (c.index > 0) o << (c.index == 1 ? "; standby " : ", ") << c.node << ":" << c.port;
  o << "\n";
  o << "transport: " << to_string(t.transport.kind);
  if (t.transport.kind == transport_kind::ucx) {
    o << ", tls " << (t.transport.tls.empty() ? "(UCX default)" : t.transport.tls) << ", net devices "
      << (t.transport.net_devices.empty() ? "(UCX default)" : t.transport.net_devices)
      << ", error mode " << t.transport.error_mode;
  }
  if (t.transport.base_port > 0)
    o << ", data ports " << t.transport.base_port << "-"
      << t.transport.base_port + static_cast<int>(t.attention_workers.size() + t.ffn_workers.size()) - 1 << "\n";
  else
    o << ", data ports ephemeral\n";
  o << "pipeline: " << t.pipeline.micro_batches << " micro-batch(es), prefill chunk " << t.pipeline.prefill_chunk
    << ", step deadline " << t.pipeline.step_deadline_ms << " ms\n";
  o << "limits: queue " << t.limits.queue << ", max_new_tokens " << t.limits.max_new_tokens << ", max_context "
    << (t.limits.max_context > 0 ? std::to_string(t.limits.max_context) : std::string("(model's)")) << "\n";
  o << "attention workers:\n";
  int total_batch = 0;
  for (const auto& w : t.attention_workers) {
    o << "  " << w.name << "  node " << w.node << "  " << w.dev.to_string() << "  kv " << w.kv_blocks
      << " blocks x " << w.block_size << " tokens  max_batch " << w.max_batch << "\n";
    total_batch += w.max_batch;
  }
  o << "FFN workers:\n";
  for (const auto& w : t.ffn_workers)
    o << "  " << w.name << "  node " << w.node << "  " << w.dev.to_string() << "  max_tokens "
      << (w.max_tokens > 0 ? std::to_string(w.max_tokens) : std::to_string(total_batch) + " (derived)") << "\n";
  if (t.processes.empty()) {
    o << "processes: one per worker, one for the coordinator\n";
  } else {
    o << "processes:\n";
    for (const auto& pr : t.processes) {
      o << "  " << pr.name << ":";
      for (const auto& m : pr.members) o << " " << m;
      o << "\n";
    }
  }

  if (!p || !c) {
    o << "placement (rules as written; not resolved without the model config):\n";
    o << "  experts: " << expert_rule_text(t.placement.experts) << "\n";
    o << "  shared: " << unit_rule_text(t.placement.shared) << "\n";
    o << "  dense: " << unit_rule_text(t.placement.dense) << "\n";
    for (const auto& l : t.placement.layers) {
      o << "  layers " << l.first_layer << "-" << l.last_layer << ":";
      if (l.experts) o << " experts " << expert_rule_text(*l.experts) << ";";
      if (l.shared) o << " shared " << unit_rule_text(*l.shared) << ";";
      if (l.dense) o << " dense " << unit_rule_text(*l.dense) << ";";
      o << "\n";
    }
    return o.str();
  }

  // Experts: consecutive MoE layers with the same owners share a line.
  o << "placement of routed experts (per MoE layer):\n";
  std::vector<std::pair<std::vector<std::int64_t>, std::string>> groups;
  for (const auto& l : p->layers) {
    if (!l.moe) continue;
    std::string text;
    for (std::size_t w = 0; w < p->ffn_workers.size(); ++w) {
      auto mine = p->experts_of(static_cast<int>(w), l.layer);
      text += (text.empty() ? "" : " | ") + p->ffn_workers[w] + ": " + (mine.empty() ? "none" : ranges_text(mine, ","));
    }
    if (!groups.empty() && groups.back().second == text && groups.back().first.back() + 1 == l.layer)
      groups.back().first.push_back(l.layer);
    else
      groups.push_back({{l.layer}, text});
  }
  if (groups.empty()) o << "  (the model has no MoE layer)\n";
  for (const auto& [layers, text] : groups)
    o << (layers.size() == 1 ? "  layer " : "  layers ") << ranges_text(layers, ",") << ": " << text << "\n";

  // Units: every layer with the same description shares a line.
  o << "placement of shared experts and dense MLPs:\n";
  std::map<std::string, std::vector<std::int64_t>> units;
  std::vector<std::string> order;
  for (const auto& l : p->layers) {
    if (l.unit.empty()) continue;
    const std::string key = std::string(l.moe ? "shared expert" : "dense MLP") + " " + slices_text(l, p->ffn_workers);
    if (!units.count(key)) order.push_back(key);
    units[key].push_back(l.layer);
  }
  for (const auto& key : order)
    o << (units[key].size() == 1 ? "  layer " : "  layers ") << ranges_text(units[key], ",") << ": " << key << "\n";

  // Per worker: what it loads.
  const model_size size = compute_model_size(*c);
  o << "per FFN worker (weights it loads):\n";
  for (std::size_t w = 0; w < p->ffn_workers.size(); ++w) {
    std::int64_t experts = 0, shared_cols = 0, dense_cols = 0, units_whole = 0, units_sliced = 0;
    for (const auto& l : p->layers) {
      experts += static_cast<std::int64_t>(p->experts_of(static_cast<int>(w), l.layer).size());
      if (auto s = p->unit_slice_of(static_cast<int>(w), l.layer)) {
        (l.moe ? shared_cols : dense_cols) += s->end - s->begin;
        (l.unit.size() == 1 ? units_whole : units_sliced) += 1;
      }
    }
    const double params = static_cast<double>(experts) * static_cast<double>(size.expert_params) +
                          3.0 * static_cast<double>(c->hidden_size) * static_cast<double>(shared_cols + dense_cols);
    o << "  " << p->ffn_workers[w] << ": " << experts << " routed experts, " << units_whole << " whole and "
      << units_sliced << " sliced shared/dense units, " << count_text(params) << " parameters"
      << (experts == 0 && units_whole + units_sliced == 0 ? "  (owns nothing)" : "") << "\n";
  }
  return o.str();
}

}  // namespace afd::topology
