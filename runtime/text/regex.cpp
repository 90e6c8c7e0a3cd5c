#include "runtime/text/regex.hpp"

#include <mutex>

#include <oniguruma.h>

namespace afd::text::detail {

struct regex::handle {
  OnigRegex compiled = nullptr;
  ~handle() {
    if (compiled) onig_free(compiled);
  }
};

namespace {

void initialize_oniguruma_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

// One region per search loop; freed with the loop.
struct region_guard {
  OnigRegion* region = onig_region_new();
  ~region_guard() { onig_region_free(region, 1); }
};

std::size_t next_char_length(std::string_view text, std::size_t at) {
  const auto b = static_cast<unsigned char>(text[at]);
  if (b < 0x80) return 1;
  if (b >= 0xF0) return 4;
  if (b >= 0xE0) return 3;
  if (b >= 0xC0) return 2;
  return 1;
}

}  // namespace

expected<regex> regex::compile(std::string_view pattern) {
  initialize_oniguruma_once();
  auto h = std::make_shared<handle>();
  OnigErrorInfo info{};
  const auto* begin = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int rc = onig_new(&h->compiled, begin, begin + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                          ONIG_SYNTAX_ONIGURUMA, &info);
  if (rc != ONIG_NORMAL) {
    OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN] = {};
    onig_error_code_to_str(message, rc, &info);
    h->compiled = nullptr;
    return fail(errc::invalid_argument, "regex does not compile (", reinterpret_cast<const char*>(message), ")");
  }
  regex r;
  r.handle_ = std::move(h);
  return r;
}

void regex::find_all(std::string_view text, std::vector<match_span>& out) const {
  region_guard guard;
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = str + text.size();
  std::size_t from = 0;
  bool have_last_end = false;
  std::size_t last_match_end = 0;
  while (from <= text.size()) {
    const int at = onig_search(handle_->compiled, str, end, str + from, end, guard.region, ONIG_OPTION_NONE);
    if (at < 0) break;  // ONIG_MISMATCH (or an engine error, which the patterns used never raise)
    const auto s = static_cast<std::size_t>(guard.region->beg[0]);
    const auto e = static_cast<std::size_t>(guard.region->end[0]);
    if (s == e && have_last_end && last_match_end == e) {
      // An empty match glued to the previous match: step one character and search again.
      if (from >= text.size()) break;
      from += next_char_length(text, from);
      continue;
    }
    out.emplace_back(s, e);
    from = e;
    have_last_end = true;
    last_match_end = e;
    if (s == e) {
      // An empty match not glued to a previous one: the next search starts at the same place and
      // is skipped by the rule above, as in the onig crate.
    }
  }
}

bool regex::matches_at(std::string_view text, std::size_t at) const {
  region_guard guard;
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const int n = onig_match(handle_->compiled, str, str + text.size(), str + at, guard.region, ONIG_OPTION_NONE);
  return n >= 0;
}

}  // namespace afd::text::detail
