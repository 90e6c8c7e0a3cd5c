#include "deploy/serve/trace.hpp"

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

namespace afd::serve {

namespace {

std::string random_hex(std::size_t digits) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string s;
  while (s.size() < digits) {
    std::uint64_t v = rng();
    for (int i = 0; i < 16 && s.size() < digits; ++i, v >>= 4) s += hex[v & 15];
  }
  return s;
}

bool is_hex(const std::string& s, std::size_t digits) {
  if (s.size() != digits) return false;
  for (char c : s)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f'))) return false;
  return s.find_first_not_of('0') != std::string::npos;  // all zeros is invalid
}

}  // namespace

std::string trace_context::header() const { return "00-" + trace_id + "-" + span_id + "-" + flags; }

trace_context make_trace_context(const std::string& h) {
  trace_context t;
  t.span_id = random_hex(16);
  // version "00": 2-32-16-2 hex digits separated by dashes (W3C Trace Context, level 1).
  if (h.size() == 55 && h.compare(0, 3, "00-") == 0 && h[35] == '-' && h[52] == '-') {
    const std::string trace_id = h.substr(3, 32), parent = h.substr(36, 16), flags = h.substr(53, 2);
    if (is_hex(trace_id, 32) && is_hex(parent, 16) && flags.size() == 2 && std::isxdigit(static_cast<unsigned char>(flags[0])) &&
        std::isxdigit(static_cast<unsigned char>(flags[1]))) {
      t.trace_id = trace_id;
      t.parent_id = parent;
      t.flags = flags;
      return t;
    }
  }
  t.trace_id = random_hex(32);
  return t;
}

trace_log::trace_log() : origin_(clock_type::now()) {}

void trace_log::add(request_trace t) {
  std::lock_guard lock(mutex_);
  traces_.push_back(std::move(t));
}

std::size_t trace_log::size() const {
  std::lock_guard lock(mutex_);
  return traces_.size();
}

std::string trace_log::chrome_json() const {
  using json = nlohmann::json;
  std::lock_guard lock(mutex_);
  auto us = [&](clock_type::time_point t) {
    return std::chrono::duration<double, std::micro>(t - origin_).count();
  };
  json events = json::array();
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 1}, {"args", {{"name", "afd serve"}}}});
  std::int64_t lane = 0;
  for (const auto& t : traces_) {
    ++lane;  // one track per request: its spans nest, other requests' overlap freely
    const auto end = t.finished.value_or(t.received);
    json args{{"request_id", t.request_id},      {"endpoint", t.endpoint},
              {"trace_id", t.trace.trace_id},    {"span_id", t.trace.span_id},
              {"parent_span_id", t.trace.parent_id}, {"recoveries", t.recoveries},
              {"prompt_tokens", t.prompt_tokens}, {"completion_tokens", t.completion_tokens},
              {"outcome", t.outcome}};
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", lane},
                      {"args", {{"name", "request " + t.request_id}}}});
    events.push_back({{"name", "request"}, {"cat", "request"}, {"ph", "X"}, {"pid", 1}, {"tid", lane},
                      {"ts", us(t.received)}, {"dur", us(end) - us(t.received)}, {"args", args}});
    auto span = [&](const char* name, std::optional<clock_type::time_point> from,
                    std::optional<clock_type::time_point> to) {
      if (!from || !to || *to < *from) return;
      events.push_back({{"name", name}, {"cat", "request"}, {"ph", "X"}, {"pid", 1}, {"tid", lane},
                        {"ts", us(*from)}, {"dur", us(*to) - us(*from)}});
    };
    auto instant = [&](const char* name, std::optional<clock_type::time_point> at) {
      if (!at) return;
      events.push_back({{"name", name}, {"cat", "request"}, {"ph", "i"}, {"s", "t"}, {"pid", 1}, {"tid", lane},
                        {"ts", us(*at)}});
    };
    span("submit", t.received, t.queued);
    span("queued", t.queued, t.admitted);
    span("prefill", t.admitted ? t.admitted : t.queued, t.first_token);
    span("decode", t.first_token, t.finished);
    instant("received", t.received);
    instant("queued", t.queued);
    instant("admitted", t.admitted);
    instant("first_token", t.first_token);
    instant("finished", t.finished);
    for (const auto& [at, what] : t.cluster_events)
      events.push_back({{"name", "cluster: " + what}, {"cat", "recovery"}, {"ph", "i"}, {"s", "t"}, {"pid", 1},
                        {"tid", lane}, {"ts", us(at)}});
  }
  return json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool trace_log::write(const std::string& path) const {
  const std::string text = chrome_json();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    out << text;
    if (!out) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

}  // namespace afd::serve
