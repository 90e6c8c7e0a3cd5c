// Chat templates, part 1: lexer and parser (Jinja syntax -> chat_template_ast.hpp).
#include "runtime/text/chat_template.hpp"

#include <cctype>
#include <cstring>

#include "runtime/text/chat_template_ast.hpp"

namespace afd::text {

namespace detail {

namespace {

struct token {
  enum class kind : std::uint8_t { text, var_begin, var_end, block_begin, block_end, name, string, integer, number, op, end }
      type = kind::end;
  std::string text;
  int line = 1, column = 1;
};

struct parse_failure {
  int line, column;
  std::string message;
};

[[noreturn]] void fail_at(int line, int column, std::string message) {
  throw parse_failure{line, column, std::move(message)};
}

// ---------------------------------------------------------------------------------------------
// Lexer with Jinja's whitespace rules as transformers configures them.

class lexer {
 public:
  explicit lexer(std::string source) : src_(std::move(source)) {
    // keep_trailing_newline=False: a single trailing newline of the source is dropped.
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<token> run() {
    while (pos_ < src_.size()) {
      const std::size_t open = find_tag_open(pos_);
      std::size_t text_end = open == std::string::npos ? src_.size() : open;
      std::string text = src_.substr(pos_, text_end - pos_);
      const std::size_t text_start = pos_;
      if (strip_next_text_) {
        std::size_t k = 0;
        while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
        text.erase(0, k);
        strip_next_text_ = false;
      }
      if (open == std::string::npos) {
        push_text(std::move(text), text_start);
        pos_ = src_.size();
        break;
      }
      const char kind = src_[open + 1];  // '{', '%' or '#'
      const char modifier = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (modifier == '-') {
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
      } else if (kind != '{' && modifier != '+') {
        // lstrip_blocks: spaces and tabs from the start of the line up to a block or comment tag.
        const std::size_t line_start = text.rfind('\n');
        const std::size_t from = line_start == std::string::npos ? 0 : line_start + 1;
        const bool at_line_start = line_start != std::string::npos || text_start == 0 || src_[text_start - 1] == '\n';
        if (at_line_start && text.find_first_not_of(" \t", from) == std::string::npos) text.erase(from);
      }
      push_text(std::move(text), text_start);
      pos_ = open + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      if (kind == '#') {
        lex_comment(open);
      } else {
        lex_tag(kind, open);
      }
    }
    out_.push_back(token{token::kind::end, "", line_of(src_.size()), column_of(src_.size())});
    return std::move(out_);
  }

 private:
  std::size_t find_tag_open(std::size_t from) const {
    for (std::size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  int line_of(std::size_t at) const {
    int line = 1;
    for (std::size_t i = 0; i < at && i < src_.size(); ++i) line += src_[i] == '\n';
    return line;
  }
  int column_of(std::size_t at) const {
    const std::size_t nl = at == 0 ? std::string::npos : src_.rfind('\n', at - 1);
    return static_cast<int>(at - (nl == std::string::npos ? 0 : nl + 1)) + 1;
  }

  void push_text(std::string text, std::size_t at) {
    if (text.empty()) return;
    out_.push_back(token{token::kind::text, std::move(text), line_of(at), column_of(at)});
  }

  // After a block or comment end: `-` strips all following whitespace, otherwise trim_blocks drops
  // one newline.
  void after_tag_end(bool dash, bool is_block_or_comment) {
    if (dash) {
      strip_next_text_ = true;
    } else if (is_block_or_comment && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
  }

  void lex_comment(std::size_t open) {
    const std::size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) fail_at(line_of(open), column_of(open), "unterminated comment {# ... #}");
    const bool dash = close > pos_ && src_[close - 1] == '-';
    pos_ = close + 2;
    after_tag_end(dash, true);
  }

  void lex_tag(char kind, std::size_t open) {
    const bool is_var = kind == '{';
    out_.push_back(token{is_var ? token::kind::var_begin : token::kind::block_begin, "", line_of(open), column_of(open)});
    const char closer = is_var ? '}' : '%';
    while (true) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) ++pos_;
      if (pos_ >= src_.size())
        fail_at(line_of(open), column_of(open), std::string("unterminated tag ") + (is_var ? "{{ ... }}" : "{% ... %}"));
      const std::size_t start = pos_;
      const char c = src_[pos_];
      // End of the tag: `}}`, `%}`, `-}}`, `-%}`.
      if (c == '-' && pos_ + 2 < src_.size() + 1 && pos_ + 1 < src_.size() && src_[pos_ + 1] == closer &&
          pos_ + 2 < src_.size() && src_[pos_ + 2] == '}') {
        pos_ += 3;
        out_.push_back(token{is_var ? token::kind::var_end : token::kind::block_end, "", line_of(start), column_of(start)});
        after_tag_end(true, !is_var);
        return;
      }
      if (c == closer && pos_ + 1 < src_.size() && src_[pos_ + 1] == '}') {
        pos_ += 2;
        out_.push_back(token{is_var ? token::kind::var_end : token::kind::block_end, "", line_of(start), column_of(start)});
        after_tag_end(false, !is_var);
        return;
      }
      token t;
      t.line = line_of(start);
      t.column = column_of(start);
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        t.type = token::kind::name;
        t.text = src_.substr(start, pos_ - start);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        bool is_float = false;
        while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
          is_float = true;
          ++pos_;
          while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
        }
        t.type = is_float ? token::kind::number : token::kind::integer;
        t.text = src_.substr(start, pos_ - start);
        std::erase(t.text, '_');
      } else if (c == '\'' || c == '"') {
        t.type = token::kind::string;
        t.text = lex_string(c, start);
      } else {
        static const char* two_char_ops[] = {"==", "!=", "<=", ">=", "//", "**"};
        t.type = token::kind::op;
        t.text = std::string(1, c);
        for (const char* op : two_char_ops) {
          if (src_.compare(pos_, 2, op) == 0) {
            t.text = op;
            break;
          }
        }
        if (std::strchr("+-*/%~<>=!|.,:()[]{}", c) == nullptr)
          fail_at(t.line, t.column, std::string("unexpected character '") + c + "'");
        pos_ += t.text.size();
      }
      out_.push_back(std::move(t));
    }
  }

  // A Python string literal with its backslash escapes.
  std::string lex_string(char quote, std::size_t start) {
    std::string out;
    ++pos_;
    while (true) {
      if (pos_ >= src_.size()) fail_at(line_of(start), column_of(start), "unterminated string literal");
      const char c = src_[pos_++];
      if (c == quote) return out;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= src_.size()) fail_at(line_of(start), column_of(start), "unterminated string literal");
      const char e = src_[pos_++];
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case '0': out.push_back('\0'); break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case '\n': break;
        default:
          out.push_back('\\');
          out.push_back(e);
      }
    }
  }

  std::string src_;
  std::size_t pos_ = 0;
  bool strip_next_text_ = false;
  std::vector<token> out_;
};

// ---------------------------------------------------------------------------------------------
// Parser (Jinja's precedence: conditional < or < and < not < compare < ~ < + - < * / // % <
// ** < unary - < postfix, filters and tests).

class parser {
 public:
  explicit parser(std::vector<token> tokens) : t_(std::move(tokens)) {}

  body parse_template() {
    body root = parse_body({});
    if (peek().type != token::kind::end) {
      const token& at = peek();
      fail_at(at.line, at.column, "unexpected '" + at.text + "'");
    }
    return root;
  }

 private:
  const token& peek(std::size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool is_op(const char* op, std::size_t ahead = 0) const {
    return peek(ahead).type == token::kind::op && peek(ahead).text == op;
  }
  bool is_name(const char* name, std::size_t ahead = 0) const {
    return peek(ahead).type == token::kind::name && peek(ahead).text == name;
  }
  [[noreturn]] void unexpected(const std::string& wanted) const {
    const token& at = peek();
    std::string got = at.text;
    switch (at.type) {
      case token::kind::end: got = "end of template"; break;
      case token::kind::var_end: got = "}}"; break;
      case token::kind::block_end: got = "%}"; break;
      case token::kind::text: got = "text"; break;
      default: got = "'" + got + "'";
    }
    fail_at(at.line, at.column, "expected " + wanted + ", got " + got);
  }
  void expect_op(const char* op) {
    if (!is_op(op)) unexpected(std::string("'") + op + "'");
    ++i_;
  }
  void expect_block_end() {
    if (peek().type != token::kind::block_end) unexpected("%}");
    ++i_;
  }
  std::string expect_name() {
    if (peek().type != token::kind::name) unexpected("a name");
    return next().text;
  }

  // Parses statements until a block whose keyword is in `stops` (left unconsumed, after `{%`).
  body parse_body(const std::vector<std::string>& stops) {
    body out;
    while (true) {
      const token& t = peek();
      if (t.type == token::kind::end) {
        if (!stops.empty()) fail_at(t.line, t.column, "missing {% " + stops.front() + " %} before the end of the template");
        return out;
      }
      if (t.type == token::kind::text) {
        statement s;
        s.type = statement::kind::text;
        s.text = t.text;
        s.line = t.line;
        s.column = t.column;
        out.push_back(std::move(s));
        ++i_;
        continue;
      }
      if (t.type == token::kind::var_begin) {
        ++i_;
        statement s;
        s.type = statement::kind::output;
        s.line = t.line;
        s.column = t.column;
        s.expr = parse_expression();
        if (peek().type != token::kind::var_end) unexpected("}}");
        ++i_;
        out.push_back(std::move(s));
        continue;
      }
      if (t.type == token::kind::block_begin) {
        const token& keyword = peek(1);
        if (keyword.type != token::kind::name) {
          i_++;
          unexpected("a statement keyword");
        }
        for (const auto& stop : stops)
          if (keyword.text == stop) return out;
        i_ += 2;
        out.push_back(parse_statement(keyword));
        continue;
      }
      unexpected("text, {{ or {%");
    }
  }

  statement parse_statement(const token& keyword) {
    statement s;
    s.line = keyword.line;
    s.column = keyword.column;
    const std::string& k = keyword.text;
    if (k == "if") {
      s.type = statement::kind::if_chain;
      auto condition = parse_expression();
      expect_block_end();
      s.branches.emplace_back(std::move(condition), parse_body({"elif", "else", "endif"}));
      while (true) {
        ++i_;  // block_begin
        const std::string which = next().text;
        if (which == "elif") {
          auto c = parse_expression();
          expect_block_end();
          s.branches.emplace_back(std::move(c), parse_body({"elif", "else", "endif"}));
        } else if (which == "else") {
          expect_block_end();
          s.else_body = parse_body({"endif"});
        } else {
          expect_block_end();
          break;
        }
      }
      return s;
    }
    if (k == "for") {
      s.type = statement::kind::for_loop;
      s.targets.push_back(expect_name());
      while (is_op(",")) {
        ++i_;
        s.targets.push_back(expect_name());
      }
      if (!is_name("in")) unexpected("'in'");
      ++i_;
      s.expr = parse_ternary_free();
      if (is_name("if")) {
        ++i_;
        s.filter = parse_ternary_free();
      }
      expect_block_end();
      s.inner = parse_body({"else", "endfor"});
      ++i_;
      if (next().text == "else") {
        expect_block_end();
        s.else_body = parse_body({"endfor"});
        i_ += 2;
      }
      expect_block_end();
      return s;
    }
    if (k == "set") {
      std::string target = expect_name();
      if (is_op(".")) {
        ++i_;
        target += "." + expect_name();
      }
      s.targets.push_back(target);
      while (is_op(",")) {
        ++i_;
        s.targets.push_back(expect_name());
      }
      if (peek().type == token::kind::block_end) {
        if (s.targets.size() != 1) unexpected("'='");
        ++i_;
        s.type = statement::kind::set_block;
        s.inner = parse_body({"endset"});
        i_ += 2;
        expect_block_end();
        return s;
      }
      s.type = statement::kind::set;
      expect_op("=");
      s.expr = parse_tuple_or_expression();
      expect_block_end();
      return s;
    }
    if (k == "macro") {
      s.type = statement::kind::macro;
      s.text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        std::string param = expect_name();
        expression_ptr fallback;
        if (is_op("=")) {
          ++i_;
          fallback = parse_expression();
        }
        s.params.emplace_back(std::move(param), std::move(fallback));
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op(")");
      expect_block_end();
      s.inner = parse_body({"endmacro"});
      i_ += 2;
      expect_block_end();
      return s;
    }
    if (k == "break" || k == "continue") {
      s.type = k == "break" ? statement::kind::break_loop : statement::kind::continue_loop;
      expect_block_end();
      return s;
    }
    if (k == "generation") {
      // transformers' assistant-mask marker: renders its body unchanged.
      expect_block_end();
      s.type = statement::kind::if_chain;
      auto always = std::make_unique<expression>();
      always->literal = value{true};
      s.branches.emplace_back(std::move(always), parse_body({"endgeneration"}));
      i_ += 2;
      expect_block_end();
      return s;
    }
    fail_at(keyword.line, keyword.column, "unknown or unsupported statement '" + k + "'");
  }

  expression_ptr make(expression::kind kind, const token& at) {
    auto e = std::make_unique<expression>();
    e->type = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }

  // `a, b` at the top of a set statement makes a tuple.
  expression_ptr parse_tuple_or_expression() {
    const token& at = peek();
    auto first = parse_expression();
    if (!is_op(",")) return first;
    auto tuple = make(expression::kind::tuple, at);
    tuple->items.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      tuple->items.push_back(parse_expression());
    }
    return tuple;
  }

  expression_ptr parse_expression() {
    auto e = parse_or();
    while (is_name("if")) {
      const token& at = next();
      auto cond = make(expression::kind::conditional, at);
      cond->b = parse_or();
      if (is_name("else")) {
        ++i_;
        cond->c = parse_expression();
      }
      cond->a = std::move(e);
      e = std::move(cond);
    }
    return e;
  }
  // For `for x in EXPR if COND`: no conditional expression at the top.
  expression_ptr parse_ternary_free() { return parse_or(); }

  expression_ptr parse_or() {
    auto e = parse_and();
    while (is_name("or")) {
      auto n = make(expression::kind::logical_or, next());
      n->a = std::move(e);
      n->b = parse_and();
      e = std::move(n);
    }
    return e;
  }
  expression_ptr parse_and() {
    auto e = parse_not();
    while (is_name("and")) {
      auto n = make(expression::kind::logical_and, next());
      n->a = std::move(e);
      n->b = parse_not();
      e = std::move(n);
    }
    return e;
  }
  expression_ptr parse_not() {
    if (is_name("not")) {
      auto n = make(expression::kind::logical_not, next());
      n->a = parse_not();
      return n;
    }
    return parse_compare();
  }
  expression_ptr parse_compare() {
    auto e = parse_concat();
    while (true) {
      std::string op;
      bool negated = false;
      if (peek().type == token::kind::op &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == ">" ||
           peek().text == "<=" || peek().text == ">=")) {
        op = peek().text;
      } else if (is_name("in")) {
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        op = "in";
        negated = true;
        ++i_;
      } else {
        return e;
      }
      auto n = make(expression::kind::compare, next());
      n->name = op;
      n->negated = negated;
      n->a = std::move(e);
      n->b = parse_concat();
      e = std::move(n);
    }
  }
  expression_ptr parse_concat() {
    auto e = parse_math1();
    while (is_op("~")) {
      auto n = make(expression::kind::binary, next());
      n->name = "~";
      n->a = std::move(e);
      n->b = parse_math1();
      e = std::move(n);
    }
    return e;
  }
  expression_ptr parse_math1() {
    auto e = parse_math2();
    while (is_op("+") || is_op("-")) {
      auto n = make(expression::kind::binary, peek());
      n->name = next().text;
      n->a = std::move(e);
      n->b = parse_math2();
      e = std::move(n);
    }
    return e;
  }
  expression_ptr parse_math2() {
    auto e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      auto n = make(expression::kind::binary, peek());
      n->name = next().text;
      n->a = std::move(e);
      n->b = parse_pow();
      e = std::move(n);
    }
    return e;
  }
  expression_ptr parse_pow() {
    auto e = parse_unary();
    while (is_op("**")) {
      auto n = make(expression::kind::binary, next());
      n->name = "**";
      n->a = std::move(e);
      n->b = parse_unary();
      e = std::move(n);
    }
    return e;
  }
  expression_ptr parse_unary() {
    if (is_op("-")) {
      auto n = make(expression::kind::negate, next());
      n->a = parse_unary();
      return parse_filters(std::move(n));
    }
    if (is_op("+")) {
      ++i_;
      return parse_unary();
    }
    return parse_filters(parse_postfix(parse_primary()));
  }

  void parse_call_arguments(expression& call) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().type == token::kind::name && is_op("=", 1)) {
        std::string key = next().text;
        ++i_;
        call.keyword.emplace_back(std::move(key), parse_expression());
      } else {
        call.items.push_back(parse_expression());
      }
      if (!is_op(",")) break;
      ++i_;
    }
    expect_op(")");
  }

  expression_ptr parse_postfix(expression_ptr e) {
    while (true) {
      if (is_op(".")) {
        auto n = make(expression::kind::attribute, next());
        if (peek().type == token::kind::integer) {
          n->type = expression::kind::subscript;
          auto index = make(expression::kind::literal, peek());
          index->literal = value{static_cast<std::int64_t>(std::stoll(next().text))};
          n->b = std::move(index);
        } else {
          n->name = expect_name();
        }
        n->a = std::move(e);
        e = std::move(n);
      } else if (is_op("[")) {
        const token& at = next();
        expression_ptr parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = parse_expression();
          if (k < 2 && is_op(":")) {
            is_slice = true;
            ++i_;
          } else {
            break;
          }
        }
        expect_op("]");
        auto n = make(is_slice ? expression::kind::slice : expression::kind::subscript, at);
        n->a = std::move(e);
        if (is_slice) {
          n->items.push_back(std::move(parts[0]));
          n->items.push_back(std::move(parts[1]));
          n->items.push_back(std::move(parts[2]));
        } else {
          if (!parts[0]) fail_at(at.line, at.column, "empty subscript []");
          n->b = std::move(parts[0]);
        }
        e = std::move(n);
      } else if (is_op("(")) {
        auto n = make(expression::kind::call, peek());
        parse_call_arguments(*n);
        n->a = std::move(e);
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  expression_ptr parse_filters(expression_ptr e) {
    while (true) {
      if (is_op("|")) {
        auto n = make(expression::kind::filter, next());
        n->name = expect_name();
        if (is_op("(")) parse_call_arguments(*n);
        n->a = std::move(e);
        e = std::move(n);
      } else if (is_name("is")) {
        auto n = make(expression::kind::test, next());
        if (is_name("not")) {
          n->negated = true;
          ++i_;
        }
        n->name = expect_name();
        if (is_op("(")) {
          parse_call_arguments(*n);
        } else if (peek().type == token::kind::string || peek().type == token::kind::integer ||
                   peek().type == token::kind::number ||
                   (peek().type == token::kind::name && !is_name("and") && !is_name("or") && !is_name("else") &&
                    !is_name("if") && !is_name("in") && !is_name("not") && !is_name("is"))) {
          // `is divisibleby 3`, `is sameas x`: one argument without parentheses.
          n->items.push_back(parse_postfix(parse_primary()));
        }
        n->a = std::move(e);
        e = std::move(n);
      } else if (is_op("(")) {
        auto n = make(expression::kind::call, peek());
        parse_call_arguments(*n);
        n->a = std::move(e);
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  expression_ptr parse_primary() {
    const token& t = peek();
    switch (t.type) {
      case token::kind::name: {
        ++i_;
        auto e = make(expression::kind::literal, t);
        if (t.text == "true" || t.text == "True") {
          e->literal = value{true};
        } else if (t.text == "false" || t.text == "False") {
          e->literal = value{false};
        } else if (t.text == "none" || t.text == "None") {
          e->literal = value::none();
        } else {
          e->type = expression::kind::name;
          e->name = t.text;
        }
        return e;
      }
      case token::kind::string: {
        auto e = make(expression::kind::literal, t);
        std::string s = next().text;
        while (peek().type == token::kind::string) s += next().text;  // adjacent literals concatenate
        e->literal = value{std::move(s)};
        return e;
      }
      case token::kind::integer: {
        auto e = make(expression::kind::literal, t);
        e->literal = value{static_cast<std::int64_t>(std::stoll(next().text))};
        return e;
      }
      case token::kind::number: {
        auto e = make(expression::kind::literal, t);
        e->literal = value{std::stod(next().text)};
        return e;
      }
      case token::kind::op:
        if (t.text == "(") {
          ++i_;
          if (is_op(")")) {
            ++i_;
            return make(expression::kind::tuple, t);
          }
          auto first = parse_expression();
          if (!is_op(",")) {
            expect_op(")");
            return first;
          }
          auto tuple = make(expression::kind::tuple, t);
          tuple->items.push_back(std::move(first));
          while (is_op(",")) {
            ++i_;
            if (is_op(")")) break;
            tuple->items.push_back(parse_expression());
          }
          expect_op(")");
          return tuple;
        }
        if (t.text == "[") {
          ++i_;
          auto list = make(expression::kind::list, t);
          while (!is_op("]")) {
            list->items.push_back(parse_expression());
            if (!is_op(",")) break;
            ++i_;
          }
          expect_op("]");
          return list;
        }
        if (t.text == "{") {
          ++i_;
          auto dict = make(expression::kind::dict, t);
          while (!is_op("}")) {
            auto key = parse_expression();
            expect_op(":");
            dict->pairs.emplace_back(std::move(key), parse_expression());
            if (!is_op(",")) break;
            ++i_;
          }
          expect_op("}");
          return dict;
        }
        break;
      default:
        break;
    }
    unexpected("an expression");
  }

  std::vector<token> t_;
  std::size_t i_ = 0;
};

}  // namespace

// Defined in chat_template_render.cpp.
std::string render_program(const template_program& program, const nlohmann::ordered_json& context);

}  // namespace detail

expected<chat_template> chat_template::parse(std::string source) {
  try {
    detail::lexer lex(std::move(source));
    auto tokens = lex.run();
    detail::parser p(std::move(tokens));
    auto program = std::make_shared<detail::template_program>();
    program->root = p.parse_template();
    chat_template t;
    t.program_ = std::move(program);
    return t;
  } catch (const detail::parse_failure& f) {
    return fail(errc::parse_error, "chat template: line ", f.line, ", column ", f.column, ": ", f.message);
  }
}

expected<std::string> chat_template::render(const nlohmann::ordered_json& context) const {
  try {
    return detail::render_program(*program_, context);
  } catch (const detail::template_failure& f) {
    return fail(errc::invalid_argument, "chat template: line ", f.line, ", column ", f.column, ": ", f.message);
  }
}

expected<std::string> chat_template::render(const nlohmann::json& context) const {
  return render(nlohmann::ordered_json(context));
}

}  // namespace afd::text
