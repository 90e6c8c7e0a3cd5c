// The Jinja subset of afd::text::chat_template on small templates, with the output Python's Jinja2
// gives (as transformers configures it: trim_blocks, lstrip_blocks). The real DeepSeek-V3 and Step-3
// templates are compared with @huggingface/jinja in tests/text/oracle_test.cpp.
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/text/chat_template.hpp"

namespace {

using afd::errc;
using afd::text::chat_template;
using ojson = nlohmann::ordered_json;

std::string render(const std::string& source, const ojson& context = ojson::object()) {
  auto t = chat_template::parse(source);
  EXPECT_TRUE(t) << t.err().to_string();
  if (!t) return "<parse error>";
  auto out = t->render(context);
  EXPECT_TRUE(out) << out.err().to_string();
  return out ? *out : "<render error>";
}

TEST(chat_template, whitespace_control_as_transformers_configures_jinja) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("  {% if true %}\nA\n  {% endif %}\nB"), "A\nB");
  EXPECT_EQ(render("x  {%- if true -%}  \n y \n {%- endif %}"), "xy");
  EXPECT_EQ(render("a {{- ' b ' -}} c"), "a b c");
  EXPECT_EQ(render("{# a comment #}\nA{#- another -#}  B"), "AB");
  EXPECT_EQ(render("{{ 'x' }}\n"), "x");  // the template's single trailing newline is dropped
  EXPECT_EQ(render("{{ 'x' }}\ny"), "x\ny");  // no trim after a variable tag
  EXPECT_EQ(render("a  {% if true %}b{% endif %}"), "a  b");  // not at the start of a line
}

TEST(chat_template, values_print_as_python_prints_them) {
  EXPECT_EQ(render("{{ none }} {{ true }} {{ false }} {{ 1 }} {{ 1.0 }} {{ 2.5 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 % 3 }}"),
            "None True False 1 1.0 2.5 3.5 3 2");
  EXPECT_EQ(render("{{ undefined_name }}|{{ [1, 'a'] }}|{{ {'k': 'v'} }}"), "|[1, 'a']|{'k': 'v'}");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }}{{ 'ab' * 2 }}"), "a1Noneabab");
}

TEST(chat_template, statements_loops_and_namespaces) {
  const ojson ctx = {{"items", {"a", "b", "c"}}};
  EXPECT_EQ(render("{% for x in items %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", ctx),
            "1a,2b,3c");
  EXPECT_EQ(render("{% for x in items %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.length }};{% endfor %}", ctx),
            "03True3;12False3;21False3;");
  EXPECT_EQ(render("{% for x in items if x != 'b' %}{{ x }}{{ loop.index }}{% endfor %}", ctx), "a1c2");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in items %}{% if x == 'b' %}{% continue %}{% endif %}{% if x == 'c' %}{% break %}{% endif %}{{ x }}{% endfor %}", ctx),
            "a");
  // A plain set inside a loop does not leak; a namespace attribute does.
  EXPECT_EQ(render("{% set n = 0 %}{% set ns = namespace(n=0) %}{% for x in items %}{% set n = n + 1 %}"
                   "{% set ns.n = ns.n + 1 %}{% endfor %}{{ n }} {{ ns.n }}",
                   ctx),
            "0 3");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }} {% endfor %}"), "a=1 b=2 ");
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a + b }}"), "3");
  EXPECT_EQ(render("{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]"), "[in side]");
  EXPECT_EQ(render("{% if 0 %}a{% elif '' %}b{% elif [1] %}c{% else %}d{% endif %}"), "c");
}

TEST(chat_template, macros_with_defaults_and_keywords) {
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                   "{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', name='C') }}"),
            "Hi A! Hi B? Hi C.");
}

TEST(chat_template, expressions_tests_filters_and_methods) {
  const ojson ctx = {{"m", {{"role", "user"}, {"content", "  Hello World  "}, {"none_field", nullptr}}},
                     {"xs", {3, 1, 2}}};
  EXPECT_EQ(render("{{ m.role }} {{ m['role'] }} {{ m.missing is defined }} {{ m.none_field is none }}", ctx),
            "user user False True");
  EXPECT_EQ(render("{{ m.content | trim }}|{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}", ctx),
            "Hello World|Hello World|Hello World  |  Hello World");
  // The characters argument counts (@huggingface/jinja ignores it; Python does not).
  EXPECT_EQ(render("[{{ 'xxaxx'.strip('x') }}][{{ ' x '.lstrip('\\n') }}][{{ '\\n\\nx \\n'.rstrip('\\n') }}]"),
            "[a][ x ][\n\nx ]");
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'x</think>y'.split('</think>')[-1] }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] y");
  EXPECT_EQ(render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith('bc') }} {{ 'abc'.upper() }} {{ 'ABC' | lower }}"),
            "True True ABC abc");
  EXPECT_EQ(render("{{ xs | length }} {{ xs | first }} {{ xs | last }} {{ xs | sort | join(',') }} {{ xs | reverse | list }}",
                   ctx),
            "3 3 2 1,2,3 [2, 1, 3]");
  EXPECT_EQ(render("{{ xs[1:] }} {{ xs[::-1] }} {{ xs[-1] }} {{ 'hello'[1:3] }}", ctx), "[1, 2] [2, 1, 3] 2 el");
  EXPECT_EQ(render("{{ 'b' in 'abc' }} {{ 2 in xs }} {{ 5 not in xs }} {{ 'role' in m }}", ctx), "True True True True");
  EXPECT_EQ(render("{{ 'yes' if xs else 'no' }} {{ 'yes' if [] else 'no' }} {{ none or 'fallback' }}", ctx),
            "yes no fallback");
  EXPECT_EQ(render("{{ m.missing | default('d') }} {{ '' | default('e', true) }} {{ 1 is number }} {{ 'x' is string }}", ctx),
            "d e True True");
  EXPECT_EQ(render("{{ m is mapping }} {{ xs is iterable }} {{ 4 is divisibleby 2 }} {{ 3 is odd }} {{ 'A' is upper }}", ctx),
            "True True True True True");
  EXPECT_EQ(render("{{ range(3) | list }} {{ range(1, 7, 2) | list }}"), "[0, 1, 2] [1, 3, 5]");
  EXPECT_EQ(render("{{ [{'a': 1}, {'a': 2}] | map(attribute='a') | list }} {{ [1, none, 2] | select | list }}"),
            "[1, 2] [1, 2]");
  EXPECT_EQ(render("{{ 'Hello' | replace('l', 'L') }} {{ 'hello world' | title }} {{ '42' | int + 1 }}"),
            "HeLLo Hello World 43");
}

TEST(chat_template, tojson_keeps_key_order_and_python_spacing) {
  const ojson ctx = ojson::parse(R"({"tool": {"name": "f", "b": [1, 2.5, true, null], "a": "é\"\n"}})");
  EXPECT_EQ(render("{{ tool | tojson }}", ctx), R"({"name": "f", "b": [1, 2.5, true, null], "a": "é\"\n"})");
  EXPECT_EQ(render("{{ tool | tojson(ensure_ascii=True) }}", ctx),
            R"({"name": "f", "b": [1, 2.5, true, null], "a": "\u00e9\"\n"})");
  EXPECT_EQ(render("{{ tool.b | tojson(indent=2) }}", ctx), "[\n  1,\n  2.5,\n  true,\n  null\n]");
  EXPECT_EQ(render("{{ tool | tojson(sort_keys=True) }}", ctx), R"({"a": "é\"\n", "b": [1, 2.5, true, null], "name": "f"})");
  EXPECT_EQ(render("{{ '😀' | tojson(ensure_ascii=True) }}"), R"("\ud83d\ude00")");
}

TEST(chat_template, parse_errors_name_line_and_column) {
  struct bad_case {
    const char* source;
    const char* line_column;
  };
  for (const auto& [source, where] : {bad_case{"line one\n{% if x %}never closed", "line 2"},
                                      bad_case{"ok\n  {{ 1 + }}", "line 2, column 10"},
                                      bad_case{"{% frobnicate %}", "line 1, column 4"},
                                      bad_case{"{{ 'unterminated }}", "line 1, column 4"},
                                      bad_case{"{{ x", "line 1, column 1"},
                                      bad_case{"{% for x in %}{% endfor %}", "line 1, column 13"}}) {
    auto t = chat_template::parse(source);
    ASSERT_FALSE(t) << source;
    EXPECT_EQ(t.err().code(), errc::parse_error);
    EXPECT_NE(t.err().message().find(where), std::string::npos) << source << " -> " << t.err().message();
  }
}

TEST(chat_template, render_errors_name_line_and_column) {
  auto t = chat_template::parse("a\n{% if messages | length > 1 %}{{ raise_exception('only one message') }}{% endif %}");
  ASSERT_TRUE(t);
  auto ok = t->render(ojson{{"messages", {1}}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, "a\n");
  auto raised = t->render(ojson{{"messages", {1, 2}}});
  ASSERT_FALSE(raised);
  EXPECT_EQ(raised.err().code(), errc::invalid_argument);
  EXPECT_NE(raised.err().message().find("only one message"), std::string::npos) << raised.err().message();
  EXPECT_NE(raised.err().message().find("line 2"), std::string::npos) << raised.err().message();

  for (const char* source : {"{{ 'a' + 1 }}", "{{ x | no_such_filter }}", "{{ 1 is no_such_test }}",
                             "{{ undefined_thing.attr }}", "{{ 'a' + undefined_thing }}", "{% set x.y = 1 %}",
                             "{{ none() }}"}) {
    auto bad = chat_template::parse(source);
    ASSERT_TRUE(bad) << source;
    auto out = bad->render(ojson::object());
    ASSERT_FALSE(out) << source << " rendered " << *out;
    EXPECT_NE(out.err().message().find("line 1, column"), std::string::npos) << out.err().message();
  }
}

TEST(chat_template, a_json_context_renders_too) {
  auto t = chat_template::parse("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}");
  ASSERT_TRUE(t);
  const nlohmann::json context = {{"bos_token", "<s>"},
                                  {"messages", {{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", "yo"}}}}};
  auto out = t->render(context);
  ASSERT_TRUE(out) << out.err().to_string();
  EXPECT_EQ(*out, "<s><user>hi<assistant>yo");
}

}  // namespace
