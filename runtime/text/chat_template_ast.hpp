#pragma once
/// The parsed form of a chat template and the values it computes with (internal to afd::text).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace afd::text::detail {

struct value;
struct object;
struct callable;

/// Python-like values: undefined, None, bool, int, float, str, list, dict (insertion-ordered), and
/// callables (macros, methods, globals). Lists, dicts and namespaces are shared by reference.
struct value {
  struct undefined_t {
    bool operator==(const undefined_t&) const = default;
  };
  struct none_t {
    bool operator==(const none_t&) const = default;
  };
  using array = std::vector<value>;
  std::variant<undefined_t, none_t, bool, std::int64_t, double, std::string, std::shared_ptr<array>,
               std::shared_ptr<object>, std::shared_ptr<callable>>
      v;

  bool is_undefined() const { return v.index() == 0; }
  bool is_none() const { return v.index() == 1; }
  bool is_bool() const { return v.index() == 2; }
  bool is_int() const { return v.index() == 3; }
  bool is_float() const { return v.index() == 4; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return v.index() == 5; }
  bool is_array() const { return v.index() == 6; }
  bool is_object() const { return v.index() == 7; }
  bool is_callable() const { return v.index() == 8; }
  const std::string& str() const { return std::get<5>(v); }
  array& arr() const { return *std::get<6>(v); }
  object& obj() const { return *std::get<7>(v); }
  const callable& fn() const { return *std::get<8>(v); }

  static value none() { return value{none_t{}}; }
  static value make_array(array items = {}) { return value{std::make_shared<array>(std::move(items))}; }
};

/// A dict or a namespace(): keys in insertion order.
struct object {
  std::vector<std::pair<std::string, value>> items;
  bool is_namespace = false;
  const value* find(const std::string& key) const {
    for (const auto& [k, v] : items)
      if (k == key) return &v;
    return nullptr;
  }
  void set(const std::string& key, value v) {
    for (auto& [k, old] : items)
      if (k == key) {
        old = std::move(v);
        return;
      }
    items.emplace_back(key, std::move(v));
  }
};

/// Arguments of a call: positional, then keyword.
struct call_args {
  std::vector<value> positional;
  std::vector<std::pair<std::string, value>> keyword;
  const value* kw(const std::string& name) const {
    for (const auto& [k, v] : keyword)
      if (k == name) return &v;
    return nullptr;
  }
};

/// Something callable from a template; `fn` throws template_failure on misuse.
struct callable {
  std::string name;
  std::function<value(const call_args&)> fn;
};

/// A failure while rendering, with the place in the template (thrown and caught inside render).
struct template_failure {
  int line = 0;
  int column = 0;
  std::string message;
};

struct expression;
using expression_ptr = std::unique_ptr<expression>;

/// An expression node.
struct expression {
  enum class kind : std::uint8_t {
    literal, name, list, tuple, dict, attribute, subscript, slice, call, filter, test,
    negate, logical_not, logical_and, logical_or, binary, compare, conditional
  } type = kind::literal;
  int line = 0, column = 0;
  value literal;
  std::string name;                                             ///< name, attribute, filter/test/op name
  std::vector<expression_ptr> items;                            ///< list/tuple items, call/filter/test arguments
  std::vector<std::pair<std::string, expression_ptr>> keyword;  ///< keyword arguments
  std::vector<std::pair<expression_ptr, expression_ptr>> pairs; ///< dict entries
  expression_ptr a, b, c;                                       ///< operands (slice: start, stop, step)
  bool negated = false;                                         ///< `is not`, `not in`
};

struct statement;
using body = std::vector<statement>;

/// A statement node (text and `{{ }}` output included).
struct statement {
  enum class kind : std::uint8_t { text, output, if_chain, for_loop, set, set_block, macro, break_loop, continue_loop }
      type = kind::text;
  int line = 0, column = 0;
  std::string text;                                          ///< text; macro name
  expression_ptr expr;                                       ///< output; for iterable; set value
  std::vector<std::pair<expression_ptr, body>> branches;     ///< if/elif conditions and bodies
  body else_body;                                            ///< if else; for else
  body inner;                                                ///< for/set_block/macro body
  std::vector<std::string> targets;                          ///< for/set targets ("ns.attr" for an attribute)
  expression_ptr filter;                                     ///< for ... if filter
  std::vector<std::pair<std::string, expression_ptr>> params;///< macro parameters with defaults
};

/// A parsed template.
struct template_program {
  body root;
};

}  // namespace afd::text::detail
