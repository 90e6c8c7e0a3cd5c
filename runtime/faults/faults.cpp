#include "runtime/faults/faults.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace afd::faults {

namespace {

constexpr std::array<std::string_view, fault_kind_count> kind_names = {
    "kill_process",  "crash_actor",   "pause_process",     "hang_engine",     "slow_worker",
    "control_drop",  "control_delay", "control_duplicate", "control_reorder", "blackhole",
    "data_fail",     "data_drop",     "data_delay",        "data_duplicate",  "data_corrupt",
    "peer_dead",
};

bool is_pair_kind(fault_kind k) {
  return k == fault_kind::blackhole || layer_of(k) == fault_layer::data || layer_of(k) == fault_layer::control;
}

std::uint64_t hash_text(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then mixed
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return mix(h);
}

expected<milliseconds> parse_duration(std::string_view key, std::string_view v) {
  double scale = 1.0;
  std::string_view number = v;
  if (v.ends_with("ms")) {
    number = v.substr(0, v.size() - 2);
  } else if (v.ends_with("s")) {
    number = v.substr(0, v.size() - 1);
    scale = 1000.0;
  }
  double x = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), x);
  if (ec != std::errc{} || end != number.data() + number.size() || !(x >= 0) || !std::isfinite(x))
    return fail(errc::invalid_argument, key, "=", v, " is not a duration (e.g. 300ms, 2s)");
  return milliseconds(static_cast<std::int64_t>(std::llround(x * scale)));
}

template <class T>
expected<T> parse_number(std::string_view key, std::string_view v) {
  T x{};
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc{} || end != v.data() + v.size())
    return fail(errc::invalid_argument, key, "=", v, " is not a number");
  return x;
}

std::string duration_text(milliseconds d) {
  if (d.count() % 1000 == 0 && d.count() != 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

}  // namespace

std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string_view to_string(fault_kind k) noexcept {
  const auto i = static_cast<std::size_t>(k);
  return i < kind_names.size() ? kind_names[i] : "unknown";
}

std::optional<fault_kind> parse_fault_kind(std::string_view text) noexcept {
  for (std::size_t i = 0; i < kind_names.size(); ++i)
    if (kind_names[i] == text) return static_cast<fault_kind>(i);
  return std::nullopt;
}

fault_layer layer_of(fault_kind k) noexcept {
  switch (k) {
    case fault_kind::kill_process:
    case fault_kind::pause_process: return fault_layer::process;
    case fault_kind::crash_actor: return fault_layer::actor;
    case fault_kind::hang_engine:
    case fault_kind::slow_worker: return fault_layer::engine;
    case fault_kind::control_drop:
    case fault_kind::control_delay:
    case fault_kind::control_duplicate:
    case fault_kind::control_reorder:
    case fault_kind::blackhole: return fault_layer::control;
    default: return fault_layer::data;
  }
}

expected<fault_rule> parse_rule(std::string_view text) {
  fault_rule r;
  r.text = std::string(text);
  std::vector<std::string_view> words;
  for (std::size_t i = 0; i < text.size();) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == ',')) ++i;
    std::size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\t' && text[j] != ',') ++j;
    if (j > i) words.push_back(text.substr(i, j - i));
    i = j;
  }
  if (words.empty()) return fail(errc::invalid_argument, "fault rule is empty");
  auto kind = parse_fault_kind(words[0]);
  if (!kind) {
    std::string known;
    for (auto n : kind_names) known += (known.empty() ? "" : ", ") + std::string(n);
    return fail(errc::invalid_argument, "fault rule '", text, "': unknown kind '", words[0], "' (one of ", known, ")");
  }
  r.kind = *kind;
  for (std::size_t w = 1; w < words.size(); ++w) {
    const std::string_view word = words[w];
    const auto eq = word.find('=');
    const std::string_view key = word.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view{} : word.substr(eq + 1);
    auto need_value = [&]() -> expected<void> {
      if (eq == std::string_view::npos || value.empty())
        return fail(errc::invalid_argument, "fault rule '", text, "': '", key, "' needs a value (", key, "=...)");
      return {};
    };
    if (key == "both" || key == "per_layer") {
      if (eq != std::string_view::npos && value != "true" && value != "false")
        return fail(errc::invalid_argument, "fault rule '", text, "': ", key, " takes true or false");
      (key == "both" ? r.both_ways : r.per_layer) = eq == std::string_view::npos || value == "true";
      continue;
    }
    if (auto ok = need_value(); !ok) return ok.err();
    auto wrap = [&](const error& e) { return fail(e.code(), "fault rule '", text, "': ", e.message()); };
    if (key == "worker") {
      r.worker = std::string(value);
    } else if (key == "role") {
      if (value != "attention" && value != "ffn" && value != "coordinator")
        return fail(errc::invalid_argument, "fault rule '", text, "': role must be attention, ffn or coordinator");
      r.role = std::string(value);
    } else if (key == "peer") {
      r.peer = std::string(value);
    } else if (key == "step") {
      const auto dash = value.find('-');
      auto a = parse_number<std::uint64_t>(key, value.substr(0, dash));
      if (!a) return wrap(a.err());
      r.step_from = *a;
      r.step_to = *a;
      if (dash != std::string_view::npos) {
        auto b = parse_number<std::uint64_t>(key, value.substr(dash + 1));
        if (!b) return wrap(b.err());
        r.step_to = *b;
      }
    } else if (key == "layer") {
      auto v = parse_number<std::int64_t>(key, value);
      if (!v) return wrap(v.err());
      r.layer = *v;
    } else if (key == "mb") {
      auto v = parse_number<std::uint32_t>(key, value);
      if (!v) return wrap(v.err());
      r.micro_batch = *v;
    } else if (key == "nth") {
      auto v = parse_number<std::uint64_t>(key, value);
      if (!v) return wrap(v.err());
      r.nth = *v;
    } else if (key == "max") {
      auto v = parse_number<std::uint64_t>(key, value);
      if (!v) return wrap(v.err());
      r.max_fires = *v;
    } else if (key == "probability" || key == "p") {
      auto v = parse_number<double>(key, value);
      if (!v) return wrap(v.err());
      r.probability = *v;
    } else if (key == "after" || key == "until" || key == "duration" || key == "delay") {
      auto d = parse_duration(key, value);
      if (!d) return wrap(d.err());
      if (key == "after") r.after = *d;
      else if (key == "until") r.until = *d;
      else if (key == "duration") r.duration = *d;
      else r.delay = *d;
    } else {
      return fail(errc::invalid_argument, "fault rule '", text, "': unknown key '", key,
                  "' (worker, role, peer, both, step, layer, mb, after, until, nth, probability, max, duration, "
                  "delay, per_layer)");
    }
  }
  if (auto ok = check_rule(r); !ok) return fail(ok.err().code(), "fault rule '", text, "': ", ok.err().message());
  return r;
}

expected<void> check_rule(const fault_rule& r) {
  if (!(r.probability > 0.0 && r.probability <= 1.0))
    return fail(errc::invalid_argument, "probability must be in (0, 1], got ", r.probability);
  if (r.step_from && r.step_to && *r.step_to < *r.step_from)
    return fail(errc::invalid_argument, "step range ", *r.step_from, "-", *r.step_to, " is empty");
  if (r.until && *r.until < r.after) return fail(errc::invalid_argument, "until is before after");
  if (r.nth && *r.nth == 0) return fail(errc::invalid_argument, "nth counts from 1");
  const fault_layer layer = layer_of(r.kind);
  const bool engine_or_data = layer == fault_layer::data || layer == fault_layer::engine;
  if (!engine_or_data && (r.step_from || r.layer || r.micro_batch))
    return fail(errc::invalid_argument, to_string(r.kind), " takes no step, layer or mb (it is not applied per step)");
  if (layer != fault_layer::data && r.micro_batch)
    return fail(errc::invalid_argument, "mb applies to data-plane kinds only");
  switch (r.kind) {
    case fault_kind::pause_process:
    case fault_kind::hang_engine:
    case fault_kind::blackhole:
      if (r.duration.count() <= 0) return fail(errc::invalid_argument, to_string(r.kind), " needs duration=...");
      break;
    case fault_kind::slow_worker:
    case fault_kind::control_delay:
    case fault_kind::data_delay:
      if (r.delay.count() <= 0) return fail(errc::invalid_argument, to_string(r.kind), " needs delay=...");
      break;
    default: break;
  }
  if (r.kind == fault_kind::blackhole && r.peer.empty())
    return fail(errc::invalid_argument, "blackhole needs peer=... (the other end: a worker or coordinator)");
  if (!is_pair_kind(r.kind) && (!r.peer.empty() || r.both_ways))
    return fail(errc::invalid_argument, to_string(r.kind), " takes no peer");
  if (r.per_layer && r.kind != fault_kind::slow_worker)
    return fail(errc::invalid_argument, "per_layer applies to slow_worker only");
  if (layer == fault_layer::process && r.worker.empty() && r.role.empty())
    return fail(errc::invalid_argument, to_string(r.kind), " needs worker=... or role=...");
  return {};
}

std::string to_text(const fault_rule& r) {
  std::string out(to_string(r.kind));
  auto add = [&](const std::string& s) { out += " " + s; };
  if (!r.worker.empty()) add("worker=" + r.worker);
  if (!r.role.empty()) add("role=" + r.role);
  if (!r.peer.empty()) add("peer=" + r.peer);
  if (r.both_ways) add("both");
  if (r.step_from)
    add("step=" + std::to_string(*r.step_from) +
        (r.step_to && *r.step_to != *r.step_from ? "-" + std::to_string(*r.step_to) : std::string()));
  if (r.layer) add("layer=" + std::to_string(*r.layer));
  if (r.micro_batch) add("mb=" + std::to_string(*r.micro_batch));
  if (r.after.count() > 0) add("after=" + duration_text(r.after));
  if (r.until) add("until=" + duration_text(*r.until));
  if (r.nth) add("nth=" + std::to_string(*r.nth));
  if (r.probability < 1.0) {
    char p[32];
    std::snprintf(p, sizeof p, "%g", r.probability);
    add(std::string("probability=") + p);
  }
  if (r.max_fires) add("max=" + std::to_string(r.max_fires));
  if (r.duration.count() > 0) add("duration=" + duration_text(r.duration));
  if (r.delay.count() > 0) add("delay=" + duration_text(r.delay));
  if (r.per_layer) add("per_layer");
  return out;
}

fault_plan::fault_plan(std::vector<fault_rule> rules, std::uint64_t seed)
    : rules_(std::move(rules)), seed_(seed), armed_(std::chrono::steady_clock::now()),
      fired_(new std::atomic<std::uint64_t>[std::max<std::size_t>(rules_.size(), 1)]),
      sequence_(rules_.size()) {
  for (std::size_t i = 0; i < std::max<std::size_t>(rules_.size(), 1); ++i) fired_[i].store(0);
}

milliseconds fault_plan::since_armed() const {
  return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - armed_);
}

bool fault_plan::targets(const fault_rule& r, const site_identity& self, std::string_view peer) {
  const bool forward = (r.worker.empty() || r.worker == self.name) && (r.role.empty() || r.role == self.role) &&
                       (r.peer.empty() || r.peer == peer);
  if (forward) return true;
  // Both ways: the site is the rule's peer, talking to the rule's worker.
  return r.both_ways && !r.peer.empty() && r.peer == self.name && (r.worker.empty() || r.worker == peer);
}

decision fault_plan::decide(std::initializer_list<fault_kind> kinds, const site_identity& self,
                            const data_context& ctx, bool (*accept)(const fault_rule&)) {
  const auto now = since_armed();
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    const fault_rule& r = rules_[i];
    if (std::find(kinds.begin(), kinds.end(), r.kind) == kinds.end()) continue;
    if (accept && !accept(r)) continue;
    if (!targets(r, self, ctx.peer)) continue;
    if (now < r.after || (r.until && now > *r.until)) continue;
    if (r.step_from && (ctx.step < *r.step_from || ctx.step > *r.step_to)) continue;
    if (r.layer && ctx.layer != *r.layer) continue;
    if (r.micro_batch && ctx.micro_batch != *r.micro_batch) continue;
    if (r.max_fires && fired(i) >= r.max_fires) continue;
    // The link: who talks to whom (a blackhole both ways is one link per direction).
    const std::uint64_t link = hash_text(self.name) ^ (hash_text(ctx.peer) * 31);
    std::uint64_t seq = 0;
    {
      std::lock_guard lock(mutex_);
      auto& links = sequence_[i];
      auto it = std::find_if(links.begin(), links.end(), [&](const auto& p) { return p.first == link; });
      if (it == links.end()) {
        links.emplace_back(link, 0);
        it = std::prev(links.end());
      }
      seq = ++it->second;
    }
    if (r.nth && seq != *r.nth) continue;
    if (r.probability < 1.0) {
      const std::uint64_t h = mix(mix(mix(seed_ ^ mix(i)) ^ link) ^ seq);
      const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
      if (u >= r.probability) continue;
    }
    fired_[i].fetch_add(1, std::memory_order_relaxed);
    return decision{&r};
  }
  return {};
}

void fault_site::arm(std::shared_ptr<fault_plan> plan) {
  const bool any = plan && !plan->rules().empty();
  plan_.store(std::move(plan));
  armed_.store(any, std::memory_order_relaxed);
}

}  // namespace afd::faults
