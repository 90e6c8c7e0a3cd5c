#pragma once
/// An Oniguruma regular expression (internal to afd::text): the engine and syntax Hugging Face
/// tokenizers use (Oniguruma syntax, UTF-8), compiled once and searched from any thread.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::text::detail {

/// Byte offsets [first, second) of one match.
using match_span = std::pair<std::size_t, std::size_t>;

/// A compiled pattern; immutable after compile, so searching it concurrently is safe.
class regex {
 public:
  /// Compiles `pattern`; errc::invalid_argument with Oniguruma's message when it does not compile.
  static expected<regex> compile(std::string_view pattern);

  /// Every match in `text`, left to right, as the onig crate's find_iter yields them: the search
  /// resumes at the end of the previous match, and an empty match right after a match is skipped.
  void find_all(std::string_view text, std::vector<match_span>& out) const;

  /// True when the pattern matches at exactly position `at` of `text` (anchored there).
  bool matches_at(std::string_view text, std::size_t at) const;

 private:
  struct handle;
  std::shared_ptr<handle> handle_;
};

}  // namespace afd::text::detail
