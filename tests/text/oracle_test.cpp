// afd::text against Hugging Face's own implementations (npm `tokenizers`, `@huggingface/jinja`):
// the DeepSeek-V3 tokenizer and small tokenizers exercising every supported option, over the
// corpus; the DeepSeek-V3 and Step-3 chat templates over a set of conversations. Also prints the
// encode throughput of both tokenizers.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/text/chat_template.hpp"
#include "runtime/text/tokenizer.hpp"
#include "tests/text/corpus.hpp"
#include "tests/text/npm_oracle.hpp"

namespace {

namespace fs = std::filesystem;
using afd::text::chat_template;
using afd::text::tokenizer;
using afd::text::testing::npm_oracle;
using afd::text::testing::read_corpus;

const std::string corpus_path = std::string(AFD_TEXT_DATA_DIR) + "/corpus";

std::string show(const std::string& bytes) {
  std::string out;
  for (const unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7F) out.push_back(static_cast<char>(c));
    else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

// Every corpus case through `t` and HF on `tokenizer_json`: ids, ids with special tokens, decode
// with and without special tokens, decode from the second token, and the stream decoder.
void expect_same_as_hf(const tokenizer& t, const std::string& tokenizer_json) {
  const auto cases = read_corpus(corpus_path);
  const auto hf = npm_oracle::run("tokenize '" + tokenizer_json + "' '" + corpus_path + "'");
  ASSERT_TRUE(hf.is_array()) << hf.dump();
  ASSERT_EQ(hf.size(), cases.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < cases.size() && mismatches < 10; ++i) {
    const auto& expected = hf[i];
    const auto ids = t.encode(cases[i], false);
    const auto want = expected["ids"].get<std::vector<std::int32_t>>();
    if (ids != want) ++mismatches;
    EXPECT_EQ(ids, want) << "case " << i << ": " << show(cases[i]);
    EXPECT_EQ(t.encode(cases[i], true), expected["ids_special"].get<std::vector<std::int32_t>>())
        << "case " << i << ": " << show(cases[i]);
    EXPECT_EQ(t.decode(want, false), expected["decoded"].get<std::string>()) << "case " << i;
    EXPECT_EQ(t.decode(want, true), expected["decoded_skip_special"].get<std::string>()) << "case " << i;
    if (!want.empty()) {
      const std::vector<std::int32_t> tail(want.begin() + 1, want.end());
      EXPECT_EQ(t.decode(tail, false), expected["decoded_tail"].get<std::string>()) << "case " << i;
    }
    auto stream = t.make_stream_decoder(false);
    std::string streamed;
    for (const auto id : want) streamed += stream.push(id);
    streamed += stream.finish();
    EXPECT_EQ(streamed, expected["decoded"].get<std::string>()) << "case " << i;
  }
}

TEST(deepseek_v3_tokenizer, encodes_and_decodes_the_corpus_as_hugging_face_does) {
  AFD_REQUIRE_NPM_ORACLE();
  const std::string path = (npm_oracle::deepseek_dir() / "tokenizer.json").string();
  auto t = tokenizer::load(path);
  ASSERT_TRUE(t) << t.err().to_string();
  EXPECT_EQ(t->vocab_size(), 128815);
  expect_same_as_hf(*t, path);
}

// Random text from pools of scripts, whitespace, digits, specials and invalid bytes, written in the
// corpus format; the seed is fixed so that a failure can be replayed.
std::string random_corpus(std::uint64_t seed, int cases) {
  // Escapes (\\t, \\x80, \\u{301}, ...) are the corpus format's, written out by the corpus reader.
  static const std::vector<std::string> pool = {
      "a", "Z", "the", "ing", "'s", "'ll", "0", "7", "42", "1234", " ", " ", "  ", "\\t", "\\n", "\\r\\n", "\\n\\n",
      ".", ",", "!", "?", "(", ")", "{", "}", "<", ">", "/", "\\\\", "\"", "'", "-", "_", "=", "+", "*", "#", "@",
      "你", "好", "世界", "の", "カ", "한", "é", "e\\u{301}", "\\u{308}", "ß", "Ω", "д", "ع", "ש", "न", "\\u{a0}",
      "\\u{3000}", "\\u{2028}", "\\u{200b}", "\\u{200d}", "😀", "👍🏽", "🇯🇵", "👨\\u{200d}👩\\u{200d}👧", "１", "²",
      "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>", "<think>", "<｜tool▁sep｜>", "<｜", "｜>",
      "\\x80", "\\xff", "\\xe4\\xbd", "\\xf0\\x9f", "\\xc0\\xaf", "\\xed\\xa0\\x80", "Ġ", "Ċ"};
  std::uint64_t state = seed;
  auto next = [&state] {
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  std::string out;
  for (int c = 0; c < cases; ++c) {
    std::string line = "x";
    const int pieces = 1 + static_cast<int>(next() % 40);
    for (int k = 0; k < pieces; ++k) line += pool[next() % pool.size()];
    out += line + "\n";
  }
  return out;
}

TEST(deepseek_v3_tokenizer, random_text_encodes_as_hugging_face_does) {
  AFD_REQUIRE_NPM_ORACLE();
  constexpr std::uint64_t seed = 20250801;
  const fs::path corpus = npm_oracle::dir() / "random_corpus";
  std::ofstream(corpus, std::ios::binary) << random_corpus(seed, 1500);
  const std::string path = (npm_oracle::deepseek_dir() / "tokenizer.json").string();
  auto t = tokenizer::load(path);
  ASSERT_TRUE(t);
  const auto cases = read_corpus(corpus.string());
  const auto hf = npm_oracle::run("tokenize '" + path + "' '" + corpus.string() + "'");
  ASSERT_EQ(hf.size(), cases.size()) << "seed " << seed;
  int mismatches = 0;
  for (std::size_t i = 0; i < cases.size() && mismatches < 5; ++i) {
    const auto want = hf[i]["ids"].get<std::vector<std::int32_t>>();
    const auto ids = t->encode(cases[i], false);
    mismatches += ids != want;
    EXPECT_EQ(ids, want) << "seed " << seed << ", case " << i << ": " << show(cases[i]);
    EXPECT_EQ(t->decode(want, false), hf[i]["decoded"].get<std::string>()) << "case " << i;
  }
}

TEST(deepseek_v3_tokenizer, model_dir_adds_bos_as_transformers_does) {
  AFD_REQUIRE_NPM_ORACLE();
  // tokenizer_config.json says add_bos_token: true, which transformers' LlamaTokenizerFast turns
  // into "BOS $A"; the tokenizers library alone (the oracle above) adds nothing.
  auto t = tokenizer::from_model_dir(npm_oracle::deepseek_dir().string());
  ASSERT_TRUE(t) << t.err().to_string();
  ASSERT_TRUE(t->bos_id());
  EXPECT_EQ(*t->bos_id(), 0);
  EXPECT_EQ(t->eos_id(), 1);
  EXPECT_TRUE(t->chat_template());
  const auto hf = npm_oracle::run("tokenize '" + (npm_oracle::deepseek_dir() / "tokenizer.json").string() + "' '" +
                                  corpus_path + "'");
  const auto cases = read_corpus(corpus_path);
  ASSERT_EQ(hf.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    auto want = hf[i]["ids"].get<std::vector<std::int32_t>>();
    want.insert(want.begin(), 0);
    EXPECT_EQ(t->encode(cases[i], true), want) << "case " << i;
  }
}

TEST(small_tokenizers, every_supported_option_matches_hugging_face) {
  AFD_REQUIRE_NPM_ORACLE();
  for (const char* name : {"tiny_template.json", "tiny_fallback.json", "tiny_split.json"}) {
    SCOPED_TRACE(name);
    const std::string path = std::string(AFD_TEXT_DATA_DIR) + "/" + name;
    auto t = tokenizer::load(path);
    ASSERT_TRUE(t) << t.err().to_string();
    expect_same_as_hf(*t, path);
  }
}

// Random conversations (seeded): roles in any order, contents with newlines, quotes, braces, think
// blocks and non-ASCII text, tool calls, with and without the generation prompt. "</think>" is
// always followed by a word: @huggingface/jinja's lstrip('\n') strips all whitespace (it ignores
// the argument), Python's only newlines, and afd follows Python (chat_template_test checks it).
nlohmann::ordered_json random_conversations(std::uint64_t seed, int count) {
  static const std::vector<std::string> words = {"hi", "the answer", "\n", "\n\n", "  ", "{{ x }}", "{% if %}",
                                                 "\"q\"", "'s", "\\", "你好", "😀", "</think>ok", "<think>",
                                                 "\t", "42", "é", "<｜User｜>", "#"};
  std::uint64_t state = seed;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  auto content = [&] {
    std::string c;
    const auto n = next() % 6;
    for (std::uint64_t k = 0; k < n; ++k) c += words[next() % words.size()];
    return c;
  };
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (int i = 0; i < count; ++i) {
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    if (next() % 2) messages.push_back({{"role", "system"}, {"content", content()}});
    const auto turns = next() % 5;
    for (std::uint64_t t = 0; t < turns; ++t) {
      messages.push_back({{"role", "user"}, {"content", content()}});
      if (next() % 4 == 0) {
        nlohmann::ordered_json call = {{"type", "function"},
                                       {"function", {{"name", "get_weather"}, {"arguments", "{\"city\": \"" + content() + "\"}"}}}};
        messages.push_back({{"role", "assistant"}, {"content", nullptr}, {"tool_calls", {call}}});
        messages.push_back({{"role", "tool"}, {"content", content()}});
      }
      if (next() % 3) messages.push_back({{"role", "assistant"}, {"content", content()}});
    }
    nlohmann::ordered_json context = {{"messages", messages},
                                      {"bos_token", "<｜begin▁of▁sentence｜>"},
                                      {"eos_token", "<｜end▁of▁sentence｜>"},
                                      {"add_generation_prompt", next() % 2 == 0}};
    out.push_back({{"name", "random_" + std::to_string(i)}, {"context", context}});
  }
  return out;
}

// Renders every conversation with `source` here and with @huggingface/jinja.
void expect_same_rendering(const std::string& template_path, const std::string& template_name,
                           std::string conversations = std::string(AFD_TEXT_DATA_DIR) + "/conversations.json") {
  const auto hf = npm_oracle::run("render '" + template_path + "' '" + conversations + "'");
  ASSERT_TRUE(hf.is_array()) << hf.dump();
  auto parsed = chat_template::parse(afd::text::testing::read_text(template_path));
  ASSERT_TRUE(parsed) << parsed.err().to_string();
  const auto cases = nlohmann::ordered_json::parse(afd::text::testing::read_text(conversations));
  ASSERT_EQ(cases.size(), hf.size());
  int rendered = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto name = cases[i]["name"].get<std::string>();
    auto mine = parsed->render(cases[i]["context"]);
    // Where Python's Jinja raises and @huggingface/jinja does not (e.g. str + list), afd follows
    // Python: transformers' apply_chat_template is the reference.
    if (cases[i].contains("python_raises_for") &&
        std::find(cases[i]["python_raises_for"].begin(), cases[i]["python_raises_for"].end(), template_name) !=
            cases[i]["python_raises_for"].end()) {
      EXPECT_FALSE(mine) << name << ": Python's Jinja raises here";
      continue;
    }
    if (hf[i].contains("error")) {
      EXPECT_FALSE(mine) << name << ": Hugging Face failed (" << hf[i]["error"] << ") but afd rendered:\n" << *mine;
      continue;
    }
    ASSERT_TRUE(mine) << name << ": " << mine.err().to_string();
    EXPECT_EQ(*mine, hf[i]["text"].get<std::string>()) << name;
    ++rendered;
  }
  EXPECT_GE(rendered, static_cast<int>(cases.size()) - 2) << "most conversations must render";
}

TEST(chat_templates, deepseek_v3_renders_as_hugging_face_jinja_does) {
  AFD_REQUIRE_NPM_ORACLE();
  const auto config = nlohmann::json::parse(afd::text::testing::read_text(npm_oracle::deepseek_dir() / "tokenizer_config.json"));
  const fs::path template_path = npm_oracle::dir() / "deepseek_v3_chat_template.jinja";
  std::ofstream(template_path, std::ios::binary) << config["chat_template"].get<std::string>();
  expect_same_rendering(template_path.string(), "deepseek_v3");
}

TEST(chat_templates, step3_renders_as_hugging_face_jinja_does) {
  AFD_REQUIRE_NPM_ORACLE();
  expect_same_rendering(std::string(AFD_TEXT_DATA_DIR) + "/step3_chat_template.jinja", "step3");
}

TEST(chat_templates, random_conversations_render_as_hugging_face_jinja_does) {
  AFD_REQUIRE_NPM_ORACLE();
  constexpr std::uint64_t seed = 7;
  const fs::path conversations = npm_oracle::dir() / "random_conversations.json";
  std::ofstream(conversations, std::ios::binary) << random_conversations(seed, 150).dump();
  const auto config = nlohmann::json::parse(afd::text::testing::read_text(npm_oracle::deepseek_dir() / "tokenizer_config.json"));
  const fs::path deepseek = npm_oracle::dir() / "deepseek_v3_chat_template.jinja";
  std::ofstream(deepseek, std::ios::binary) << config["chat_template"].get<std::string>();
  SCOPED_TRACE("seed 7");
  expect_same_rendering(deepseek.string(), "deepseek_v3", conversations.string());
  expect_same_rendering(std::string(AFD_TEXT_DATA_DIR) + "/step3_chat_template.jinja", "step3", conversations.string());
}

TEST(throughput, afd_and_hugging_face_encode_the_corpus) {
  AFD_REQUIRE_NPM_ORACLE();
  const std::string path = (npm_oracle::deepseek_dir() / "tokenizer.json").string();
  auto t = tokenizer::load(path);
  ASSERT_TRUE(t);
  const auto cases = read_corpus(corpus_path);
  std::size_t bytes = 0;
  for (const auto& c : cases) bytes += c.size();
  // Measurement only (no assertion on speed): about two seconds of each.
  constexpr double measure_seconds = 2.0;
  const auto start = std::chrono::steady_clock::now();
  std::size_t rounds = 0, tokens = 0;
  double elapsed = 0;
  while (elapsed < measure_seconds) {
    for (const auto& c : cases) tokens += t->encode(c, false).size();
    ++rounds;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double afd_mb_s = static_cast<double>(bytes * rounds) / elapsed / 1e6;
  const auto hf = npm_oracle::run("bench '" + path + "' '" + corpus_path + "' 2", "RAYON_NUM_THREADS=1");
  std::printf("encode throughput on the corpus (%zu bytes, one thread): afd %.2f MB/s, HF tokenizers %.2f MB/s\n",
              bytes, afd_mb_s, hf.value("mb_per_s", 0.0));
  RecordProperty("afd_mb_per_s", std::to_string(afd_mb_s));
  RecordProperty("hf_mb_per_s", std::to_string(hf.value("mb_per_s", 0.0)));
  EXPECT_GT(tokens, 0u);
}

}  // namespace
