// Chat templates, part 2: evaluation with Python/Jinja semantics.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "runtime/text/chat_template_ast.hpp"
#include "runtime/text/utf8.hpp"

namespace afd::text::detail {

namespace {

using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Conversions.

value from_json(const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::null: return value::none();
    case ojson::value_t::boolean: return value{j.get<bool>()};
    case ojson::value_t::number_integer: return value{j.get<std::int64_t>()};
    case ojson::value_t::number_unsigned: return value{static_cast<std::int64_t>(j.get<std::uint64_t>())};
    case ojson::value_t::number_float: return value{j.get<double>()};
    case ojson::value_t::string: return value{j.get<std::string>()};
    case ojson::value_t::array: {
      value::array items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return value::make_array(std::move(items));
    }
    case ojson::value_t::object: {
      auto o = std::make_shared<object>();
      for (auto it = j.begin(); it != j.end(); ++it) o->items.emplace_back(it.key(), from_json(it.value()));
      return value{o};
    }
    default: return value{};
  }
}

// Python's repr of a float: shortest digits that round-trip, ".0" for integral values.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  const auto e = s.find('e');
  if (e != std::string::npos) {
    // Python: 1e+16, 1.5e-07 (at least two exponent digits).
    std::string mantissa = s.substr(0, e), exponent = s.substr(e + 1);
    const char sign = exponent[0] == '-' ? '-' : '+';
    if (exponent[0] == '-' || exponent[0] == '+') exponent.erase(0, 1);
    while (exponent.size() > 2 && exponent[0] == '0') exponent.erase(0, 1);
    if (exponent.size() < 2) exponent.insert(0, "0");
    return mantissa + "e" + sign + exponent;
  }
  if (s.find('.') == std::string::npos && s.find("inf") == std::string::npos) s += ".0";
  return s;
}

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  std::size_t i = 0;
  char buf[16];
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      case '\b': out += "\\b"; ++i; continue;
      case '\f': out += "\\f"; ++i; continue;
      default: break;
    }
    if (c < 0x20) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
      continue;
    }
    if (c < 0x80 || !ensure_ascii) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    const std::size_t n = std::max<std::size_t>(1, valid_sequence_length(s, i));
    char32_t cp = decode_at(s, i, n);
    i += n;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + static_cast<unsigned>(cp >> 10),
                    0xDC00 + static_cast<unsigned>(cp & 0x3FF));
    } else {
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
    }
    out += buf;
  }
  out.push_back('"');
}

struct json_style {
  bool ensure_ascii = false;
  int indent = -1;  ///< -1: none
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};

void to_json_text(std::string& out, const value& v, const json_style& style, int depth) {
  auto newline = [&](int d) {
    out.push_back('\n');
    out.append(static_cast<std::size_t>(style.indent * d), ' ');
  };
  if (v.is_undefined() || v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += std::get<bool>(v.v) ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(std::get<std::int64_t>(v.v));
  } else if (v.is_float()) {
    const double d = std::get<double>(v.v);
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
  } else if (v.is_string()) {
    json_string(out, v.str(), style.ensure_ascii);
  } else if (v.is_array()) {
    if (v.arr().empty()) {
      out += "[]";
      return;
    }
    out.push_back('[');
    bool first = true;
    for (const auto& e : v.arr()) {
      if (!first) out += style.item_separator;
      if (style.indent >= 0) newline(depth + 1);
      to_json_text(out, e, style, depth + 1);
      first = false;
    }
    if (style.indent >= 0) newline(depth);
    out.push_back(']');
  } else if (v.is_object()) {
    auto items = v.obj().items;
    if (items.empty()) {
      out += "{}";
      return;
    }
    if (style.sort_keys)
      std::stable_sort(items.begin(), items.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    out.push_back('{');
    bool first = true;
    for (const auto& [k, e] : items) {
      if (!first) out += style.item_separator;
      if (style.indent >= 0) newline(depth + 1);
      json_string(out, k, style.ensure_ascii);
      out += style.key_separator;
      to_json_text(out, e, style, depth + 1);
      first = false;
    }
    if (style.indent >= 0) newline(depth);
    out.push_back('}');
  } else {
    out += "null";
  }
}

std::string repr(const value& v);

// Python's str().
std::string to_str(const value& v) {
  if (v.is_undefined()) return "";
  if (v.is_none()) return "None";
  if (v.is_bool()) return std::get<bool>(v.v) ? "True" : "False";
  if (v.is_int()) return std::to_string(std::get<std::int64_t>(v.v));
  if (v.is_float()) return float_repr(std::get<double>(v.v));
  if (v.is_string()) return v.str();
  if (v.is_callable()) return "<function " + v.fn().name + ">";
  return repr(v);
}

std::string repr(const value& v) {
  if (v.is_string()) {
    const std::string& s = v.str();
    const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, quote);
    for (const char c : s) {
      if (c == '\\') out += "\\\\";
      else if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c == '\t') out += "\\t";
      else if (c == quote) out += std::string("\\") + quote;
      else out.push_back(c);
    }
    out.push_back(quote);
    return out;
  }
  if (v.is_array()) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.arr().size(); ++i) out += (i ? ", " : "") + repr(v.arr()[i]);
    return out + "]";
  }
  if (v.is_object()) {
    if (v.obj().is_namespace) return "<Namespace>";
    std::string out = "{";
    bool first = true;
    for (const auto& [k, e] : v.obj().items) {
      out += (first ? "" : ", ") + repr(value{k}) + ": " + repr(e);
      first = false;
    }
    return out + "}";
  }
  return to_str(v);
}

bool truthy(const value& v) {
  switch (v.v.index()) {
    case 0: case 1: return false;
    case 2: return std::get<bool>(v.v);
    case 3: return std::get<std::int64_t>(v.v) != 0;
    case 4: return std::get<double>(v.v) != 0.0;
    case 5: return !v.str().empty();
    case 6: return !v.arr().empty();
    case 7: return !v.obj().items.empty() || v.obj().is_namespace;
    default: return true;
  }
}

double as_double(const value& v) {
  if (v.is_int()) return static_cast<double>(std::get<std::int64_t>(v.v));
  if (v.is_float()) return std::get<double>(v.v);
  return std::get<bool>(v.v) ? 1.0 : 0.0;
}

bool numeric(const value& v) { return v.is_number() || v.is_bool(); }

bool equal(const value& a, const value& b) {
  if (numeric(a) && numeric(b)) return as_double(a) == as_double(b);
  if (a.v.index() != b.v.index()) return false;
  if (a.is_undefined() || a.is_none()) return true;
  if (a.is_string()) return a.str() == b.str();
  if (a.is_array()) {
    if (a.arr().size() != b.arr().size()) return false;
    for (std::size_t i = 0; i < a.arr().size(); ++i)
      if (!equal(a.arr()[i], b.arr()[i])) return false;
    return true;
  }
  if (a.is_object()) {
    if (a.obj().items.size() != b.obj().items.size()) return false;
    for (const auto& [k, e] : a.obj().items) {
      const value* other = b.obj().find(k);
      if (!other || !equal(e, *other)) return false;
    }
    return true;
  }
  return std::get<8>(a.v) == std::get<8>(b.v);
}

std::string type_name(const value& v) {
  static const char* names[] = {"undefined", "NoneType", "bool", "int", "float", "str", "list", "dict", "function"};
  return names[v.v.index()];
}

// ---------------------------------------------------------------------------------------------
// String helpers (whitespace as Python's str.strip/split see it).

bool is_py_space(char32_t cp) { return is_unicode_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F); }

std::string strip_chars(const std::string& s, const value* chars, bool left, bool right) {
  auto strip_this = [&](std::size_t at, std::size_t n) {
    if (chars && chars->is_string()) return chars->str().find(s.substr(at, n)) != std::string::npos;
    return is_py_space(decode_at(s, at, n));
  };
  std::size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end) {
      const std::size_t n = std::max<std::size_t>(1, valid_sequence_length(s, begin));
      if (!strip_this(begin, n)) break;
      begin += n;
    }
  }
  if (right) {
    while (end > begin) {
      std::size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      if (!strip_this(start, end - start)) break;
      end = start;
    }
  }
  return s.substr(begin, end - begin);
}

value split_string(const std::string& s, const value* separator, std::int64_t max_split) {
  value::array parts;
  if (separator && separator->is_string()) {
    const std::string& sep = separator->str();
    if (sep.empty()) throw template_failure{0, 0, "split(): empty separator"};
    std::size_t at = 0;
    while (max_split < 0 || static_cast<std::int64_t>(parts.size()) < max_split) {
      const std::size_t found = s.find(sep, at);
      if (found == std::string::npos) break;
      parts.push_back(value{s.substr(at, found - at)});
      at = found + sep.size();
    }
    parts.push_back(value{s.substr(at)});
  } else {
    // Runs of whitespace separate; leading and trailing whitespace is ignored.
    std::size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && is_py_space(decode_at(s, i, std::max<std::size_t>(1, valid_sequence_length(s, i)))))
        i += std::max<std::size_t>(1, valid_sequence_length(s, i));
      if (i >= s.size()) break;
      if (max_split >= 0 && static_cast<std::int64_t>(parts.size()) >= max_split) {
        parts.push_back(value{strip_chars(s.substr(i), nullptr, false, true)});
        break;
      }
      std::size_t j = i;
      while (j < s.size() && !is_py_space(decode_at(s, j, std::max<std::size_t>(1, valid_sequence_length(s, j)))))
        j += std::max<std::size_t>(1, valid_sequence_length(s, j));
      parts.push_back(value{s.substr(i, j - i)});
      i = j;
    }
  }
  return value::make_array(std::move(parts));
}

std::string replace_all(std::string s, const std::string& from, const std::string& to, std::int64_t count) {
  if (from.empty()) return s;
  std::size_t at = 0;
  std::int64_t done = 0;
  while ((count < 0 || done < count) && (at = s.find(from, at)) != std::string::npos) {
    s.replace(at, from.size(), to);
    at += to.size();
    ++done;
  }
  return s;
}

std::string ascii_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}
std::string title(const std::string& s) {
  std::string out = s;
  bool start = true;
  for (auto& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
      start = false;
    } else {
      start = u < 0x80;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The interpreter.

struct loop_control {
  enum class kind : std::uint8_t { none, break_loop, continue_loop } type = kind::none;
};

class interpreter {
 public:
  explicit interpreter(const ojson& context) {
    scopes_.emplace_back();
    install_globals();
    if (context.is_object())
      for (auto it = context.begin(); it != context.end(); ++it) scopes_.front()[it.key()] = from_json(it.value());
  }

  std::string run(const body& root) {
    std::string out;
    loop_control control;
    exec(root, out, control);
    return out;
  }

 private:
  using scope = std::unordered_map<std::string, value>;

  [[noreturn]] static void fail(const expression& e, std::string message) {
    throw template_failure{e.line, e.column, std::move(message)};
  }
  [[noreturn]] static void fail(const statement& s, std::string message) {
    throw template_failure{s.line, s.column, std::move(message)};
  }

  value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return value{};
  }

  static value make_function(std::string name, std::function<value(const call_args&)> fn) {
    return value{std::make_shared<callable>(callable{std::move(name), std::move(fn)})};
  }

  void install_globals() {
    scope& g = scopes_.front();
    g["raise_exception"] = make_function("raise_exception", [](const call_args& args) -> value {
      throw template_failure{0, 0, "raise_exception: " + (args.positional.empty() ? std::string() : to_str(args.positional[0]))};
    });
    g["namespace"] = make_function("namespace", [](const call_args& args) {
      auto o = std::make_shared<object>();
      o->is_namespace = true;
      for (const auto& p : args.positional)
        if (p.is_object())
          for (const auto& [k, v] : p.obj().items) o->set(k, v);
      for (const auto& [k, v] : args.keyword) o->set(k, v);
      return value{o};
    });
    g["range"] = make_function("range", [](const call_args& args) {
      std::int64_t start = 0, stop = 0, step = 1;
      auto get = [&](std::size_t i) {
        if (!args.positional[i].is_int()) throw template_failure{0, 0, "range() takes integers"};
        return std::get<std::int64_t>(args.positional[i].v);
      };
      if (args.positional.size() == 1) {
        stop = get(0);
      } else if (args.positional.size() >= 2) {
        start = get(0);
        stop = get(1);
        if (args.positional.size() >= 3) step = get(2);
      } else {
        throw template_failure{0, 0, "range() needs 1 to 3 arguments"};
      }
      if (step == 0) throw template_failure{0, 0, "range() step must not be zero"};
      value::array items;
      for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) items.push_back(value{i});
      return value::make_array(std::move(items));
    });
    g["strftime_now"] = make_function("strftime_now", [](const call_args& args) {
      if (args.positional.empty() || !args.positional[0].is_string())
        throw template_failure{0, 0, "strftime_now() takes a format string"};
      const std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buf[256];
      const std::size_t n = std::strftime(buf, sizeof buf, args.positional[0].str().c_str(), &local);
      return value{std::string(buf, n)};
    });
  }

  // --- statements ------------------------------------------------------------------------------

  void exec(const body& statements, std::string& out, loop_control& control) {
    for (const auto& s : statements) {
      exec_one(s, out, control);
      if (control.type != loop_control::kind::none) return;
    }
  }

  void assign(const statement& s, const std::string& target, value v) {
    const auto dot = target.find('.');
    if (dot == std::string::npos) {
      scopes_.back()[target] = std::move(v);
      return;
    }
    const value holder = lookup(target.substr(0, dot));
    if (!holder.is_object() || !holder.obj().is_namespace)
      fail(s, "cannot assign attribute '" + target.substr(dot + 1) + "' of '" + target.substr(0, dot) + "' (not a namespace)");
    holder.obj().set(target.substr(dot + 1), std::move(v));
  }

  void exec_one(const statement& s, std::string& out, loop_control& control) {
    switch (s.type) {
      case statement::kind::text:
        out += s.text;
        return;
      case statement::kind::output:
        out += to_str(eval(*s.expr));
        return;
      case statement::kind::if_chain:
        for (const auto& [condition, branch] : s.branches) {
          if (truthy(eval(*condition))) {
            exec(branch, out, control);
            return;
          }
        }
        exec(s.else_body, out, control);
        return;
      case statement::kind::for_loop:
        exec_for(s, out, control);
        return;
      case statement::kind::set: {
        value v = eval(*s.expr);
        if (s.targets.size() == 1) {
          assign(s, s.targets[0], std::move(v));
          return;
        }
        const value::array items = sequence_of(v, s.expr->line, s.expr->column);
        if (items.size() != s.targets.size())
          fail(s, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(s.targets.size()));
        for (std::size_t i = 0; i < items.size(); ++i) assign(s, s.targets[i], items[i]);
        return;
      }
      case statement::kind::set_block: {
        std::string captured;
        loop_control inner;
        exec(s.inner, captured, inner);
        assign(s, s.targets[0], value{std::move(captured)});
        return;
      }
      case statement::kind::macro:
        define_macro(s);
        return;
      case statement::kind::break_loop:
        if (loop_depth_ == 0) fail(s, "break outside a loop");
        control.type = loop_control::kind::break_loop;
        return;
      case statement::kind::continue_loop:
        if (loop_depth_ == 0) fail(s, "continue outside a loop");
        control.type = loop_control::kind::continue_loop;
        return;
    }
  }

  value::array sequence_of(const value& v, int line, int column) const {
    if (v.is_array()) return v.arr();
    if (v.is_object()) {
      value::array keys;
      for (const auto& [k, e] : v.obj().items) keys.push_back(value{k});
      return keys;
    }
    if (v.is_string()) {
      value::array chars;
      const std::string& s = v.str();
      for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = std::max<std::size_t>(1, valid_sequence_length(s, i));
        chars.push_back(value{s.substr(i, n)});
        i += n;
      }
      return chars;
    }
    if (v.is_undefined()) return {};
    throw template_failure{line, column, "'" + type_name(v) + "' object is not iterable"};
  }

  void exec_for(const statement& s, std::string& out, loop_control& outer_control) {
    (void)outer_control;
    const value::array all = sequence_of(eval(*s.expr), s.expr->line, s.expr->column);
    // The `if` filter of a for loop is applied before loop.* is computed.
    value::array items;
    for (const auto& item : all) {
      if (!s.filter) {
        items.push_back(item);
        continue;
      }
      scopes_.emplace_back();
      bind_targets(s, item);
      const bool keep = truthy(eval(*s.filter));
      scopes_.pop_back();
      if (keep) items.push_back(item);
    }
    if (items.empty()) {
      loop_control control;
      exec(s.else_body, out, control);
      return;
    }
    ++loop_depth_;
    const auto n = static_cast<std::int64_t>(items.size());
    for (std::int64_t i = 0; i < n; ++i) {
      scopes_.emplace_back();
      bind_targets(s, items[static_cast<std::size_t>(i)]);
      auto loop = std::make_shared<object>();
      loop->set("index", value{i + 1});
      loop->set("index0", value{i});
      loop->set("revindex", value{n - i});
      loop->set("revindex0", value{n - i - 1});
      loop->set("first", value{i == 0});
      loop->set("last", value{i == n - 1});
      loop->set("length", value{n});
      loop->set("previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)] : value{});
      loop->set("nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)] : value{});
      scopes_.back()["loop"] = value{loop};
      loop_control control;
      exec(s.inner, out, control);
      scopes_.pop_back();
      if (control.type == loop_control::kind::break_loop) break;
    }
    --loop_depth_;
  }

  void bind_targets(const statement& s, const value& item) {
    if (s.targets.size() == 1) {
      scopes_.back()[s.targets[0]] = item;
      return;
    }
    const value::array parts = sequence_of(item, s.line, s.column);
    if (parts.size() != s.targets.size())
      fail(s, "cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(s.targets.size()));
    for (std::size_t i = 0; i < parts.size(); ++i) scopes_.back()[s.targets[i]] = parts[i];
  }

  void define_macro(const statement& s) {
    const statement* definition = &s;
    scopes_.back()[s.text] = make_function(s.text, [this, definition](const call_args& args) {
      scopes_.emplace_back();
      const auto& params = definition->params;
      if (args.positional.size() > params.size())
        throw template_failure{definition->line, definition->column,
                               "macro '" + definition->text + "' takes " + std::to_string(params.size()) + " arguments"};
      for (std::size_t i = 0; i < params.size(); ++i) {
        const std::string& name = params[i].first;
        if (i < args.positional.size()) {
          scopes_.back()[name] = args.positional[i];
        } else if (const value* kw = args.kw(name)) {
          scopes_.back()[name] = *kw;
        } else if (params[i].second) {
          scopes_.back()[name] = eval(*params[i].second);
        } else {
          scopes_.back()[name] = value{};
        }
      }
      std::string out;
      loop_control control;
      const int saved_depth = loop_depth_;
      loop_depth_ = 0;
      exec(definition->inner, out, control);
      loop_depth_ = saved_depth;
      scopes_.pop_back();
      return value{std::move(out)};
    });
  }

  // --- expressions -----------------------------------------------------------------------------

  call_args eval_args(const expression& e) {
    call_args args;
    for (const auto& item : e.items) args.positional.push_back(eval(*item));
    for (const auto& [k, item] : e.keyword) args.keyword.emplace_back(k, eval(*item));
    return args;
  }

  value call(const expression& at, const value& fn, const call_args& args) {
    if (!fn.is_callable()) fail(at, "'" + type_name(fn) + "' object is not callable");
    try {
      return fn.fn().fn(args);
    } catch (template_failure& f) {
      if (f.line == 0) {
        f.line = at.line;
        f.column = at.column;
      }
      throw;
    }
  }

  static std::int64_t to_index(const expression& at, const value& v, std::int64_t size) {
    if (!v.is_int() && !v.is_bool()) fail(at, "indices must be integers, not " + type_name(v));
    std::int64_t i = v.is_int() ? std::get<std::int64_t>(v.v) : (std::get<bool>(v.v) ? 1 : 0);
    if (i < 0) i += size;
    return i;
  }

  value attribute(const expression& at, const value& target, const std::string& name) {
    if (target.is_object()) {
      if (const value* found = target.obj().find(name)) return *found;
      if (!target.obj().is_namespace) {
        if (auto method = dict_method(target, name); !method.is_undefined()) return method;
      }
      return value{};
    }
    if (target.is_string()) return string_method(at, target, name);
    if (target.is_array()) return value{};
    if (target.is_undefined()) fail(at, "'" + describe(*at.a) + "' is undefined (reading ." + name + ")");
    return value{};
  }

  static std::string describe(const expression& e) {
    if (e.type == expression::kind::name) return e.name;
    if (e.type == expression::kind::attribute) return describe(*e.a) + "." + e.name;
    if (e.type == expression::kind::subscript) return describe(*e.a) + "[...]";
    return "value";
  }

  value subscript(const expression& at, const value& target, const value& key) {
    if (target.is_array()) {
      const auto size = static_cast<std::int64_t>(target.arr().size());
      const std::int64_t i = to_index(at, key, size);
      if (i < 0 || i >= size) return value{};
      return target.arr()[static_cast<std::size_t>(i)];
    }
    if (target.is_object()) {
      if (!key.is_string()) return value{};
      if (const value* found = target.obj().find(key.str())) return *found;
      return value{};
    }
    if (target.is_string()) {
      const value::array chars = sequence_of(target, at.line, at.column);
      const auto size = static_cast<std::int64_t>(chars.size());
      const std::int64_t i = to_index(at, key, size);
      if (i < 0 || i >= size) return value{};
      return chars[static_cast<std::size_t>(i)];
    }
    if (target.is_undefined()) fail(at, "'" + describe(*at.a) + "' is undefined (subscripted)");
    fail(at, "'" + type_name(target) + "' object is not subscriptable");
  }

  value slice(const expression& at, const value& target) {
    const bool is_text = target.is_string();
    const value::array items = sequence_of(target, at.line, at.column);
    const auto size = static_cast<std::int64_t>(items.size());
    auto part = [&](std::size_t k) -> std::optional<std::int64_t> {
      if (!at.items[k]) return std::nullopt;
      const value v = eval(*at.items[k]);
      if (v.is_none()) return std::nullopt;
      if (!v.is_int()) fail(at, "slice indices must be integers");
      return std::get<std::int64_t>(v.v);
    };
    const std::int64_t step = part(2).value_or(1);
    if (step == 0) fail(at, "slice step cannot be zero");
    auto clamp = [&](std::optional<std::int64_t> i, std::int64_t fallback) {
      if (!i) return fallback;
      std::int64_t x = *i < 0 ? *i + size : *i;
      if (step > 0) return std::clamp<std::int64_t>(x, 0, size);
      return std::clamp<std::int64_t>(x, -1, size - 1);
    };
    const std::int64_t start = clamp(part(0), step > 0 ? 0 : size - 1);
    const std::int64_t stop = clamp(part(1), step > 0 ? size : -1);
    value::array out;
    for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(items[static_cast<std::size_t>(i)]);
    if (is_text) {
      std::string s;
      for (const auto& c : out) s += c.str();
      return value{std::move(s)};
    }
    return value::make_array(std::move(out));
  }

  value dict_method(const value& target, const std::string& name) {
    const auto o = std::get<std::shared_ptr<object>>(target.v);
    if (name == "items")
      return make_function("items", [o](const call_args&) {
        value::array pairs;
        for (const auto& [k, v] : o->items) pairs.push_back(value::make_array({value{k}, v}));
        return value::make_array(std::move(pairs));
      });
    if (name == "keys")
      return make_function("keys", [o](const call_args&) {
        value::array keys;
        for (const auto& [k, v] : o->items) keys.push_back(value{k});
        return value::make_array(std::move(keys));
      });
    if (name == "values")
      return make_function("values", [o](const call_args&) {
        value::array values;
        for (const auto& [k, v] : o->items) values.push_back(v);
        return value::make_array(std::move(values));
      });
    if (name == "get")
      return make_function("get", [o](const call_args& args) {
        if (args.positional.empty() || !args.positional[0].is_string()) return args.positional.size() > 1 ? args.positional[1] : value::none();
        if (const value* found = o->find(args.positional[0].str())) return *found;
        return args.positional.size() > 1 ? args.positional[1] : value::none();
      });
    return value{};
  }

  value string_method(const expression& at, const value& target, const std::string& name) {
    const std::string s = target.str();
    auto arg_string = [](const call_args& args, std::size_t i, const char* method) -> const std::string& {
      if (args.positional.size() <= i || !args.positional[i].is_string())
        throw template_failure{0, 0, std::string(method) + "() takes a string argument"};
      return args.positional[i].str();
    };
    if (name == "startswith" || name == "endswith") {
      const bool starts = name == "startswith";
      return make_function(name, [s, starts, arg_string](const call_args& args) {
        auto test = [&](const std::string& p) {
          return starts ? s.compare(0, p.size(), p) == 0 && s.size() >= p.size()
                        : s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
        };
        if (!args.positional.empty() && args.positional[0].is_array()) {
          for (const auto& p : args.positional[0].arr())
            if (p.is_string() && test(p.str())) return value{true};
          return value{false};
        }
        return value{test(arg_string(args, 0, starts ? "startswith" : "endswith"))};
      });
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool left = name != "rstrip", right = name != "lstrip";
      return make_function(name, [s, left, right](const call_args& args) {
        const value* chars = args.positional.empty() || args.positional[0].is_none() ? nullptr : &args.positional[0];
        return value{strip_chars(s, chars, left, right)};
      });
    }
    if (name == "split")
      return make_function(name, [s](const call_args& args) {
        const value* sep = !args.positional.empty() ? &args.positional[0] : args.kw("sep");
        if (sep && sep->is_none()) sep = nullptr;
        std::int64_t max_split = -1;
        if (args.positional.size() > 1 && args.positional[1].is_int()) max_split = std::get<std::int64_t>(args.positional[1].v);
        if (const value* m = args.kw("maxsplit"); m && m->is_int()) max_split = std::get<std::int64_t>(m->v);
        return split_string(s, sep, max_split);
      });
    if (name == "upper") return make_function(name, [s](const call_args&) { return value{ascii_upper(s)}; });
    if (name == "lower") return make_function(name, [s](const call_args&) { return value{ascii_lower(s)}; });
    if (name == "title") return make_function(name, [s](const call_args&) { return value{title(s)}; });
    if (name == "capitalize") return make_function(name, [s](const call_args&) { return value{capitalize(s)}; });
    if (name == "replace")
      return make_function(name, [s, arg_string](const call_args& args) {
        std::int64_t count = -1;
        if (args.positional.size() > 2 && args.positional[2].is_int()) count = std::get<std::int64_t>(args.positional[2].v);
        return value{replace_all(s, arg_string(args, 0, "replace"), arg_string(args, 1, "replace"), count)};
      });
    if (name == "find")
      return make_function(name, [s, arg_string](const call_args& args) {
        const auto at = s.find(arg_string(args, 0, "find"));
        if (at == std::string::npos) return value{std::int64_t{-1}};
        // Python counts characters, not bytes.
        std::int64_t chars = 0;
        for (std::size_t i = 0; i < at; ++i) chars += (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
        return value{chars};
      });
    if (name == "count")
      return make_function(name, [s, arg_string](const call_args& args) {
        const std::string& sub = arg_string(args, 0, "count");
        std::int64_t n = 0;
        if (sub.empty()) return value{std::int64_t{0}};
        for (std::size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
        return value{n};
      });
    if (name == "join")
      return make_function(name, [s](const call_args& args) {
        if (args.positional.empty() || !args.positional[0].is_array()) throw template_failure{0, 0, "join() takes a list"};
        std::string out;
        bool first = true;
        for (const auto& item : args.positional[0].arr()) {
          if (!first) out += s;
          out += to_str(item);
          first = false;
        }
        return value{std::move(out)};
      });
    (void)at;
    return value{};
  }

  value binary(const expression& e, const value& a, const value& b) {
    const std::string& op = e.name;
    if (op == "~") return value{to_str(a) + to_str(b)};
    if (op == "+") {
      if (a.is_string() && b.is_string()) return value{a.str() + b.str()};
      if (a.is_array() && b.is_array()) {
        value::array joined = a.arr();
        joined.insert(joined.end(), b.arr().begin(), b.arr().end());
        return value::make_array(std::move(joined));
      }
    }
    if (op == "*" && a.is_string() && b.is_int()) {
      std::string out;
      for (std::int64_t i = 0; i < std::get<std::int64_t>(b.v); ++i) out += a.str();
      return value{std::move(out)};
    }
    if (!numeric(a) || !numeric(b)) {
      if (a.is_undefined() || b.is_undefined())
        fail(e, "'" + describe(a.is_undefined() ? *e.a : *e.b) + "' is undefined");
      fail(e, "unsupported operand types for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
    }
    const bool ints = !a.is_float() && !b.is_float();
    const double x = as_double(a), y = as_double(b);
    if (op == "/") {
      if (y == 0) fail(e, "division by zero");
      return value{x / y};
    }
    if (ints) {
      const std::int64_t i = a.is_int() ? std::get<std::int64_t>(a.v) : (std::get<bool>(a.v) ? 1 : 0);
      const std::int64_t j = b.is_int() ? std::get<std::int64_t>(b.v) : (std::get<bool>(b.v) ? 1 : 0);
      if (op == "+") return value{i + j};
      if (op == "-") return value{i - j};
      if (op == "*") return value{i * j};
      if (op == "//" || op == "%") {
        if (j == 0) fail(e, "division by zero");
        std::int64_t q = i / j, r = i % j;
        if (r != 0 && ((r < 0) != (j < 0))) {
          --q;
          r += j;
        }
        return value{op == "//" ? q : r};
      }
      if (op == "**") {
        if (j < 0) return value{std::pow(x, y)};
        std::int64_t p = 1;
        for (std::int64_t k = 0; k < j; ++k) p *= i;
        return value{p};
      }
    }
    if (op == "+") return value{x + y};
    if (op == "-") return value{x - y};
    if (op == "*") return value{x * y};
    if (op == "//") {
      if (y == 0) fail(e, "division by zero");
      return value{std::floor(x / y)};
    }
    if (op == "%") {
      if (y == 0) fail(e, "division by zero");
      return value{x - y * std::floor(x / y)};
    }
    if (op == "**") return value{std::pow(x, y)};
    fail(e, "unknown operator " + op);
  }

  bool less(const expression& e, const value& a, const value& b) {
    if (numeric(a) && numeric(b)) return as_double(a) < as_double(b);
    if (a.is_string() && b.is_string()) return a.str() < b.str();
    fail(e, "'<' not supported between '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  bool contains(const expression& e, const value& container, const value& item) {
    if (container.is_string()) {
      if (!item.is_string()) fail(e, "'in <string>' requires a string on the left");
      return container.str().find(item.str()) != std::string::npos;
    }
    if (container.is_array()) {
      for (const auto& x : container.arr())
        if (equal(x, item)) return true;
      return false;
    }
    if (container.is_object()) return item.is_string() && container.obj().find(item.str()) != nullptr;
    if (container.is_undefined()) return false;
    fail(e, "argument of type '" + type_name(container) + "' is not iterable");
  }

  value eval(const expression& e) {
    switch (e.type) {
      case expression::kind::literal:
        return e.literal;
      case expression::kind::name:
        return lookup(e.name);
      case expression::kind::list:
      case expression::kind::tuple: {
        value::array items;
        for (const auto& item : e.items) items.push_back(eval(*item));
        return value::make_array(std::move(items));
      }
      case expression::kind::dict: {
        auto o = std::make_shared<object>();
        for (const auto& [k, v] : e.pairs) {
          const value key = eval(*k);
          o->set(to_str(key), eval(*v));
        }
        return value{o};
      }
      case expression::kind::attribute:
        return attribute(e, eval(*e.a), e.name);
      case expression::kind::subscript: {
        const value target = eval(*e.a);
        const value key = eval(*e.b);
        // Jinja's getitem falls back to attributes: `"abc".strip` and `d["items"]` both work.
        if (target.is_string() && key.is_string()) return string_method(e, target, key.str());
        return subscript(e, target, key);
      }
      case expression::kind::slice:
        return slice(e, eval(*e.a));
      case expression::kind::call: {
        const value fn = eval(*e.a);
        return call(e, fn, eval_args(e));
      }
      case expression::kind::filter:
        return apply_filter(e);
      case expression::kind::test: {
        const bool result = apply_test(e);
        return value{e.negated ? !result : result};
      }
      case expression::kind::negate: {
        const value v = eval(*e.a);
        if (v.is_int()) return value{-std::get<std::int64_t>(v.v)};
        if (v.is_float()) return value{-std::get<double>(v.v)};
        fail(e, "bad operand type for unary -: '" + type_name(v) + "'");
      }
      case expression::kind::logical_not:
        return value{!truthy(eval(*e.a))};
      case expression::kind::logical_and: {
        value a = eval(*e.a);
        return truthy(a) ? eval(*e.b) : a;
      }
      case expression::kind::logical_or: {
        value a = eval(*e.a);
        return truthy(a) ? a : eval(*e.b);
      }
      case expression::kind::binary:
        return binary(e, eval(*e.a), eval(*e.b));
      case expression::kind::compare: {
        const value a = eval(*e.a);
        const value b = eval(*e.b);
        const std::string& op = e.name;
        bool r = false;
        if (op == "==") r = equal(a, b);
        else if (op == "!=") r = !equal(a, b);
        else if (op == "<") r = less(e, a, b);
        else if (op == ">") r = less(e, b, a);
        else if (op == "<=") r = !less(e, b, a);
        else if (op == ">=") r = !less(e, a, b);
        else if (op == "in") r = contains(e, b, a) != e.negated;
        return value{r};
      }
      case expression::kind::conditional:
        if (truthy(eval(*e.b))) return eval(*e.a);
        return e.c ? eval(*e.c) : value{};
    }
    fail(e, "unknown expression");
  }

  bool apply_test(const expression& e) {
    const value v = eval(*e.a);
    const call_args args = eval_args(e);
    const std::string& t = e.name;
    auto arg = [&](std::size_t i) -> const value& {
      if (args.positional.size() <= i) fail(e, "test '" + t + "' needs an argument");
      return args.positional[i];
    };
    if (t == "defined") return !v.is_undefined();
    if (t == "undefined") return v.is_undefined();
    if (t == "none") return v.is_none();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number();
    if (t == "integer") return v.is_int();
    if (t == "float") return v.is_float();
    if (t == "boolean") return v.is_bool();
    if (t == "mapping") return v.is_object();
    if (t == "iterable") return v.is_array() || v.is_object() || v.is_string();
    if (t == "sequence") return v.is_array() || v.is_object() || v.is_string();
    if (t == "callable") return v.is_callable();
    if (t == "true") return v.is_bool() && std::get<bool>(v.v);
    if (t == "false") return v.is_bool() && !std::get<bool>(v.v);
    if (t == "equalto" || t == "eq" || t == "sameas") return equal(v, arg(0));
    if (t == "ne") return !equal(v, arg(0));
    if (t == "odd" || t == "even") {
      if (!v.is_int()) fail(e, "test '" + t + "' needs an integer");
      const bool odd = std::get<std::int64_t>(v.v) % 2 != 0;
      return t == "odd" ? odd : !odd;
    }
    if (t == "divisibleby") {
      const value& d = arg(0);
      if (!v.is_int() || !d.is_int() || std::get<std::int64_t>(d.v) == 0) fail(e, "divisibleby needs non-zero integers");
      return std::get<std::int64_t>(v.v) % std::get<std::int64_t>(d.v) == 0;
    }
    if (t == "in") return contains(e, arg(0), v);
    if (t == "lower") return v.is_string() && ascii_lower(v.str()) == v.str();
    if (t == "upper") return v.is_string() && ascii_upper(v.str()) == v.str();
    fail(e, "unknown test '" + t + "'");
  }

  value apply_filter(const expression& e) {
    const value v = eval(*e.a);
    const call_args args = eval_args(e);
    const std::string& f = e.name;
    auto need_string = [&]() -> const std::string& {
      if (!v.is_string()) fail(e, "filter '" + f + "' needs a string, got " + type_name(v));
      return v.str();
    };
    if (f == "safe") return v;
    if (f == "length" || f == "count") {
      if (v.is_string()) {
        std::int64_t n = 0;
        for (const char c : v.str()) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        return value{n};
      }
      if (v.is_array()) return value{static_cast<std::int64_t>(v.arr().size())};
      if (v.is_object()) return value{static_cast<std::int64_t>(v.obj().items.size())};
      if (v.is_undefined()) return value{std::int64_t{0}};
      fail(e, "object of type '" + type_name(v) + "' has no len()");
    }
    if (f == "string") return value{to_str(v)};
    if (f == "trim") {
      const value* chars = args.positional.empty() ? nullptr : &args.positional[0];
      return value{strip_chars(to_str(v), chars, true, true)};
    }
    if (f == "lower") return value{ascii_lower(to_str(v))};
    if (f == "upper") return value{ascii_upper(to_str(v))};
    if (f == "title") return value{title(to_str(v))};
    if (f == "capitalize") return value{capitalize(to_str(v))};
    if (f == "replace") {
      if (args.positional.size() < 2 || !args.positional[0].is_string() || !args.positional[1].is_string())
        fail(e, "replace needs two strings");
      std::int64_t count = -1;
      if (args.positional.size() > 2 && args.positional[2].is_int()) count = std::get<std::int64_t>(args.positional[2].v);
      return value{replace_all(need_string(), args.positional[0].str(), args.positional[1].str(), count)};
    }
    if (f == "default" || f == "d") {
      const bool boolean = (args.positional.size() > 1 && truthy(args.positional[1])) ||
                           (args.kw("boolean") && truthy(*args.kw("boolean")));
      const value fallback = args.positional.empty() ? value{std::string()} : args.positional[0];
      if (v.is_undefined() || (boolean && !truthy(v))) return fallback;
      return v;
    }
    if (f == "tojson") {
      json_style style;
      if (const value* ea = args.kw("ensure_ascii")) style.ensure_ascii = truthy(*ea);
      const value* indent = args.kw("indent");
      if (!indent && !args.positional.empty()) indent = &args.positional[0];
      if (indent && indent->is_int()) {
        style.indent = static_cast<int>(std::get<std::int64_t>(indent->v));
        style.item_separator = ",";
      }
      if (const value* seps = args.kw("separators"); seps && seps->is_array() && seps->arr().size() == 2) {
        style.item_separator = to_str(seps->arr()[0]);
        style.key_separator = to_str(seps->arr()[1]);
      }
      if (const value* sk = args.kw("sort_keys")) style.sort_keys = truthy(*sk);
      std::string out;
      to_json_text(out, v, style, 0);
      return value{std::move(out)};
    }
    if (f == "int") {
      if (v.is_int()) return v;
      if (v.is_float()) return value{static_cast<std::int64_t>(std::get<double>(v.v))};
      if (v.is_bool()) return value{std::int64_t{std::get<bool>(v.v) ? 1 : 0}};
      if (v.is_string()) {
        try {
          return value{static_cast<std::int64_t>(std::stoll(strip_chars(v.str(), nullptr, true, true)))};
        } catch (...) {
          return args.positional.empty() ? value{std::int64_t{0}} : args.positional[0];
        }
      }
      return value{std::int64_t{0}};
    }
    if (f == "float") {
      if (numeric(v)) return value{as_double(v)};
      if (v.is_string()) {
        try {
          return value{std::stod(v.str())};
        } catch (...) {
          return value{0.0};
        }
      }
      return value{0.0};
    }
    if (f == "abs") {
      if (v.is_int()) return value{std::llabs(std::get<std::int64_t>(v.v))};
      if (v.is_float()) return value{std::fabs(std::get<double>(v.v))};
      fail(e, "abs needs a number");
    }
    if (f == "items") {
      if (v.is_undefined()) return value::make_array();
      if (!v.is_object()) fail(e, "filter 'items' needs a mapping");
      return call(e, dict_method(v, "items"), {});
    }
    if (f == "dictsort") {
      if (!v.is_object()) fail(e, "filter 'dictsort' needs a mapping");
      auto items = v.obj().items;
      std::stable_sort(items.begin(), items.end(), [](const auto& x, const auto& y) {
        return ascii_lower(x.first) < ascii_lower(y.first);
      });
      value::array pairs;
      for (const auto& [k, x] : items) pairs.push_back(value::make_array({value{k}, x}));
      return value::make_array(std::move(pairs));
    }
    // Filters on sequences.
    value::array items = sequence_of(v, e.line, e.column);
    if (f == "list") return value::make_array(std::move(items));
    if (f == "first") return items.empty() ? value{} : items.front();
    if (f == "last") return items.empty() ? value{} : items.back();
    if (f == "reverse") {
      if (v.is_string()) {
        std::string out;
        for (auto it = items.rbegin(); it != items.rend(); ++it) out += it->str();
        return value{std::move(out)};
      }
      std::reverse(items.begin(), items.end());
      return value::make_array(std::move(items));
    }
    if (f == "join") {
      std::string separator;
      if (!args.positional.empty()) separator = to_str(args.positional[0]);
      const value* attribute_name = args.kw("attribute");
      std::string out;
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += separator;
        out += to_str(attribute_name ? attribute(e, items[i], to_str(*attribute_name)) : items[i]);
      }
      return value{std::move(out)};
    }
    if (f == "unique") {
      value::array out;
      for (const auto& item : items)
        if (std::none_of(out.begin(), out.end(), [&](const value& x) { return equal(x, item); })) out.push_back(item);
      return value::make_array(std::move(out));
    }
    if (f == "sort") {
      const bool reverse = args.kw("reverse") && truthy(*args.kw("reverse"));
      const value* attribute_name = args.kw("attribute");
      auto key = [&](const value& x) { return attribute_name ? attribute(e, x, to_str(*attribute_name)) : x; };
      std::stable_sort(items.begin(), items.end(),
                       [&](const value& x, const value& y) { return reverse ? less(e, key(y), key(x)) : less(e, key(x), key(y)); });
      return value::make_array(std::move(items));
    }
    if (f == "map") {
      value::array out;
      if (const value* attribute_name = args.kw("attribute")) {
        for (const auto& item : items) out.push_back(attribute(e, item, to_str(*attribute_name)));
      } else if (!args.positional.empty() && args.positional[0].is_string()) {
        for (const auto& item : items) out.push_back(filter_by_name(e, args.positional[0].str(), item));
      } else {
        fail(e, "map needs attribute= or a filter name");
      }
      return value::make_array(std::move(out));
    }
    if (f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
      const bool by_attribute = f == "selectattr" || f == "rejectattr";
      const bool keep_matching = f == "selectattr" || f == "select";
      std::size_t next_arg = 0;
      std::string attribute_name;
      if (by_attribute) {
        if (args.positional.empty() || !args.positional[0].is_string()) fail(e, f + " needs an attribute name");
        attribute_name = args.positional[0].str();
        next_arg = 1;
      }
      value::array out;
      for (const auto& item : items) {
        const value subject = by_attribute ? attribute(e, item, attribute_name) : item;
        bool match = truthy(subject);
        if (args.positional.size() > next_arg) {
          expression test;
          test.type = expression::kind::test;
          test.line = e.line;
          test.column = e.column;
          test.name = to_str(args.positional[next_arg]);
          match = run_test(test, subject,
                           std::vector<value>(args.positional.begin() + static_cast<std::ptrdiff_t>(next_arg) + 1,
                                              args.positional.end()));
        }
        if (match == keep_matching) out.push_back(item);
      }
      return value::make_array(std::move(out));
    }
    fail(e, "unknown filter '" + f + "'");
  }

  // A test applied to an already computed value (for select/selectattr).
  bool run_test(const expression& test, const value& subject, std::vector<value> arguments) {
    expression e;
    e.type = expression::kind::test;
    e.line = test.line;
    e.column = test.column;
    e.name = test.name;
    auto literal_of = [](value v) {
      auto x = std::make_unique<expression>();
      x->literal = std::move(v);
      return x;
    };
    e.a = literal_of(subject);
    for (auto& a : arguments) e.items.push_back(literal_of(std::move(a)));
    return apply_test(e);
  }

  value filter_by_name(const expression& at, const std::string& name, const value& subject) {
    expression e;
    e.type = expression::kind::filter;
    e.line = at.line;
    e.column = at.column;
    e.name = name;
    e.a = std::make_unique<expression>();
    e.a->literal = subject;
    return apply_filter(e);
  }

  std::vector<scope> scopes_;
  int loop_depth_ = 0;
};

}  // namespace

std::string render_program(const template_program& program, const nlohmann::ordered_json& context) {
  interpreter run(context);
  return run.run(program.root);
}

}  // namespace afd::text::detail
