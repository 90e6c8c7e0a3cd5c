#pragma once
/// Chat templates: the subset of Jinja that Hugging Face chat templates (DeepSeek-V3, Step-3 and
/// the like) use, rendered as transformers' `apply_chat_template` renders them (trim_blocks and
/// lstrip_blocks on, a single trailing newline of the source dropped, loop controls enabled).
///
/// Statements: `set` (names, `ns.attr`, tuples, `{% set x %}...{% endset %}`), `if`/`elif`/`else`,
/// `for` (tuple targets, `if` filter, `else`, `loop.*`, `break`/`continue`), `macro` with positional,
/// keyword and default arguments, `generation` (no-op), comments and `{%-`/`-%}` whitespace control.
/// Expressions: literals (strings, numbers, lists, dicts, tuples), `a if c else b`, and/or/not,
/// comparisons, `in`/`not in`, `+ - * / // % ~`, subscripts and slices, attributes, calls, filters
/// (length count trim string lower upper title capitalize first last join default list reverse
/// replace int float abs items dictsort tojson safe unique sort map select reject selectattr
/// rejectattr), tests (defined undefined none string number integer float boolean mapping iterable
/// sequence true false equalto eq ne odd even divisibleby in lower upper), string methods
/// (startswith endswith strip lstrip rstrip split upper lower replace find title capitalize count
/// join), dict methods (items keys values get) and the globals range, namespace, raise_exception,
/// strftime_now.
/// Numbers print as Python prints them (1.0, True, None). Errors, at parse and at render, name the
/// line and column in the template.

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/core/error.hpp"

namespace afd::text {

namespace detail {
struct template_program;
}

/// A parsed template; immutable, so rendering it concurrently is safe.
class chat_template {
 public:
  /// Parses `source`; errc::parse_error "line L, column C: ..." when it is not a valid template.
  static expected<chat_template> parse(std::string source);

  /// Renders with `context` as the global variables (messages, add_generation_prompt, bos_token,
  /// eos_token, tools, ...). Object keys keep the order they have in `context` (tojson prints them
  /// in that order). errc::invalid_argument "line L, column C: ..." for a failure while rendering,
  /// including the template's own raise_exception().
  expected<std::string> render(const nlohmann::ordered_json& context) const;
  /// The same with a nlohmann::json context (its object keys are sorted).
  expected<std::string> render(const nlohmann::json& context) const;

 private:
  std::shared_ptr<const detail::template_program> program_;
};

}  // namespace afd::text
