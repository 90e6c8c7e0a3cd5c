// Edge cases of afd::text::tokenizer that need no npm: load errors naming file and field, the
// WHATWG replacement of invalid UTF-8 (expected strings written from the Encoding Standard), the
// stream decoder, tokenizer_config.json handling. Agreement with Hugging Face on real input is
// tests/text/oracle_test.cpp.
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/text/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
using afd::errc;
using afd::text::tokenizer;
using json = nlohmann::json;

const std::string data_dir = AFD_TEXT_DATA_DIR;

tokenizer tiny() {
  auto t = tokenizer::load(data_dir + "/tiny_template.json");
  EXPECT_TRUE(t) << t.err().to_string();
  return *t;
}

json tiny_json() {
  std::ifstream in(data_dir + "/tiny_template.json");
  return json::parse(in);
}

// Parses `doc` as "broken.json" and expects an error with `code` whose message has every piece.
void expect_load_error(const json& doc, errc code, const std::vector<std::string>& pieces) {
  auto t = tokenizer::parse(doc.dump(), "broken.json");
  ASSERT_FALSE(t) << doc.dump().substr(0, 200);
  EXPECT_EQ(t.err().code(), code) << t.err().to_string();
  EXPECT_NE(t.err().message().find("broken.json"), std::string::npos) << t.err().message();
  for (const auto& p : pieces) EXPECT_NE(t.err().message().find(p), std::string::npos) << t.err().message();
}

TEST(tokenizer_load, errors_name_the_file_and_the_field) {
  auto missing = tokenizer::load(data_dir + "/no_such_tokenizer.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code(), errc::io_error);
  EXPECT_NE(missing.err().message().find("no_such_tokenizer.json"), std::string::npos);

  auto bad_json = tokenizer::parse("{\"model\": ", "broken.json");
  ASSERT_FALSE(bad_json);
  EXPECT_EQ(bad_json.err().code(), errc::parse_error);
  EXPECT_NE(bad_json.err().message().find("broken.json"), std::string::npos);

  json doc = tiny_json();
  doc["model"]["type"] = "Unigram";
  expect_load_error(doc, errc::unsupported, {"model.type", "Unigram"});
  doc["model"]["type"] = "WordPiece";
  expect_load_error(doc, errc::unsupported, {"model.type", "WordPiece"});

  doc = tiny_json();
  doc["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                                              {"behavior", "Isolated"}, {"invert", false}}}}};
  expect_load_error(doc, errc::invalid_argument, {"pre_tokenizer.pretokenizers[0].pattern.Regex"});

  doc = tiny_json();
  doc["pre_tokenizer"]["type"] = "Metaspace";
  expect_load_error(doc, errc::unsupported, {"pre_tokenizer.type", "Metaspace"});

  doc = tiny_json();
  doc["normalizer"] = {{"type", "NFKC"}};
  expect_load_error(doc, errc::unsupported, {"normalizer.type", "NFKC"});

  doc = tiny_json();
  doc["model"]["merges"][1] = json::array({"h", "not-a-token"});
  expect_load_error(doc, errc::invalid_config, {"model.merges[1]", "not-a-token"});

  doc = tiny_json();
  doc["model"]["merges"][2] = "no_space_here";
  expect_load_error(doc, errc::invalid_config, {"model.merges[2]"});

  doc = tiny_json();
  doc["added_tokens"][0]["id"] = "zero";
  expect_load_error(doc, errc::invalid_config, {"added_tokens[0].id"});

  doc = tiny_json();
  doc["post_processor"]["special_tokens"].erase("</s>");
  expect_load_error(doc, errc::invalid_config, {"post_processor.special_tokens", "</s>"});

  doc = tiny_json();
  doc["decoder"] = {{"type", "WordPiece"}};
  expect_load_error(doc, errc::unsupported, {"decoder.type"});

  doc = tiny_json();
  doc["model"]["dropout"] = 0.1;
  expect_load_error(doc, errc::unsupported, {"model.dropout"});
}

TEST(tokenizer_load, merges_as_strings_or_pairs_are_the_same_model) {
  json pairs = tiny_json();
  json strings = pairs;
  for (auto& m : strings["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  auto a = tokenizer::parse(pairs.dump(), "pairs.json");
  auto b = tokenizer::parse(strings.dump(), "strings.json");
  ASSERT_TRUE(a && b);
  const std::string text = "the hello world abababab 123 你好 in er";
  EXPECT_EQ(a->encode(text, true), b->encode(text, true));
  EXPECT_GT(a->encode(text, false).size(), 5u);
}

TEST(tokenizer_lookup, ids_tokens_and_specials) {
  const tokenizer t = tiny();
  const auto s = t.token_to_id("<s>");
  ASSERT_TRUE(s);
  EXPECT_EQ(t.id_to_token(*s), "<s>");
  EXPECT_TRUE(t.is_special(*s));
  EXPECT_FALSE(t.is_special(*t.token_to_id("word")));
  EXPECT_EQ(t.token_to_id("a"), 97);
  EXPECT_FALSE(t.token_to_id("no such token"));
  EXPECT_FALSE(t.id_to_token(1 << 30));
  EXPECT_EQ(t.vocab_size(), *t.token_to_id("<s><s>") + 1);
  EXPECT_FALSE(t.bos_id());  // only tokenizer_config.json names BOS
  EXPECT_FALSE(t.chat_template());
}

TEST(tokenizer_encode, invalid_utf8_is_replaced_as_the_encoding_standard_says) {
  const tokenizer t = tiny();
  const std::string fffd = "\xEF\xBF\xBD";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a\x80" "b", "a" + fffd + "b"},                    // lone continuation byte
      {"a\xE4\xBD" "d", "a" + fffd + "d"},                // truncated 3-byte sequence: one U+FFFD
      {"a\xF0\x9F\x98", "a" + fffd},                      // truncated 4-byte sequence at the end
      {"\xC0\xAF", fffd + fffd},                          // overlong: C0 never starts a sequence
      {"\xE0\x80\xAF", fffd + fffd + fffd},               // E0 80: 80 is not a valid second byte
      {"\xED\xA0\x80", fffd + fffd + fffd},               // surrogate
      {"\xF5\x80", fffd + fffd},                          // beyond U+10FFFF
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd},    // beyond U+10FFFF
      {"\xE4\xBD\xA0\xE5", "\xE4\xBD\xA0" + fffd},        // valid then truncated
  };
  for (const auto& [bad, replaced] : cases) {
    EXPECT_EQ(t.encode(bad, false), t.encode(replaced, false)) << "input of " << bad.size() << " bytes";
    EXPECT_EQ(t.decode(t.encode(bad, false), false), " " + replaced);  // ByteLevel add_prefix_space
  }
  EXPECT_TRUE(t.encode("", false).empty());
  EXPECT_EQ(t.encode("", true).size(), 2u);  // <s> </s> around nothing
  const std::string nul("a\0b", 3);
  EXPECT_EQ(t.decode(t.encode(nul, false), false), " " + nul);
}

TEST(tokenizer_decode, unknown_ids_are_skipped_and_bytes_that_are_not_utf8_become_fffd) {
  const tokenizer t = tiny();
  const std::int32_t first_byte_of_ni = 0xE4;  // the byte-level token of byte E4 has id E4
  EXPECT_EQ(t.decode(std::vector<std::int32_t>{104, -5, 1 << 30, 105}, false), "hi");
  EXPECT_EQ(t.decode(std::vector<std::int32_t>{first_byte_of_ni, 104}, false), "\xEF\xBF\xBDh");
}

TEST(tokenizer_stream, holds_back_a_character_split_across_tokens) {
  const tokenizer t = tiny();
  // 世 is E4 B8 96: three byte-level tokens in this tokenizer (no merge joins them).
  const auto ids = t.encode("世a", false);
  ASSERT_EQ(ids.size(), 5u);  // Ġ, E4, B8, 96, a
  auto stream = t.make_stream_decoder(false);
  EXPECT_EQ(stream.push(ids[0]), " ");
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[2]), "");
  EXPECT_EQ(stream.push(ids[3]), "世");
  EXPECT_EQ(stream.push(ids[4]), "a");
  EXPECT_EQ(stream.finish(), "");
  // A stream cut inside a character ends with U+FFFD, as decode() of the same ids does.
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[2]), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode(std::vector<std::int32_t>{ids[1], ids[2]}, false), "\xEF\xBF\xBD");
  // A byte that cannot continue the held sequence releases it as U+FFFD right away.
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[4]), "\xEF\xBF\xBD" "a");
  // Special tokens: kept, or skipped when asked.
  auto skipping = t.make_stream_decoder(true);
  EXPECT_EQ(skipping.push(*t.token_to_id("<s>")), "");
  auto keeping = t.make_stream_decoder(false);
  EXPECT_EQ(keeping.push(*t.token_to_id("<s>")), "<s>");
}

TEST(tokenizer_encode, concurrent_calls_agree) {
  const tokenizer t = tiny();
  const std::string text = "the hello world [MASK] word words <tool>  x 12345 你好 é";
  const auto want = t.encode(text, true);
  std::vector<std::thread> threads;
  std::vector<int> same(4, 0);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int i = 0; i < 200; ++i) same[static_cast<std::size_t>(k)] += t.encode(text, true) == want;
    });
  for (auto& th : threads) th.join();
  for (const int s : same) EXPECT_EQ(s, 200);
}

class model_dir_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("afd-text-model-dir-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    fs::copy_file(data_dir + "/tiny_template.json", dir_ / "tokenizer.json", fs::copy_options::overwrite_existing);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_config(const json& config) { std::ofstream(dir_ / "tokenizer_config.json") << config.dump(); }
  fs::path dir_;
};

TEST_F(model_dir_test, without_a_config_the_post_processor_of_tokenizer_json_applies) {
  auto t = tokenizer::from_model_dir(dir_.string());
  ASSERT_TRUE(t) << t.err().to_string();
  const auto plain = t->encode("hello", false);
  auto framed = plain;
  framed.insert(framed.begin(), *t->token_to_id("<s>"));
  framed.push_back(*t->token_to_id("</s>"));
  EXPECT_EQ(t->encode("hello", true), framed);
  EXPECT_FALSE(t->bos_id());
}

TEST_F(model_dir_test, add_bos_token_and_add_eos_token_replace_the_post_processor) {
  write_config({{"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}}, {"eos_token", "</s>"},
                {"add_bos_token", true}, {"add_eos_token", false}, {"chat_template", "{{ bos_token }}hi"}});
  auto t = tokenizer::from_model_dir(dir_.string());
  ASSERT_TRUE(t) << t.err().to_string();
  EXPECT_EQ(t->bos_token(), "<s>");
  EXPECT_EQ(t->eos_token(), "</s>");
  EXPECT_EQ(t->bos_id(), t->token_to_id("<s>"));
  EXPECT_EQ(t->eos_id(), t->token_to_id("</s>"));
  EXPECT_EQ(t->chat_template(), "{{ bos_token }}hi");
  auto want = t->encode("hello", false);
  want.insert(want.begin(), *t->bos_id());
  EXPECT_EQ(t->encode("hello", true), want);

  write_config({{"bos_token", "<s>"}, {"add_bos_token", false}});
  t = tokenizer::from_model_dir(dir_.string());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->encode("hello", true), t->encode("hello", false));
}

TEST_F(model_dir_test, a_bad_config_is_an_error_naming_it) {
  write_config({{"bos_token", "<not in vocab>"}});
  auto t = tokenizer::from_model_dir(dir_.string());
  ASSERT_FALSE(t);
  EXPECT_EQ(t.err().code(), errc::invalid_config);
  EXPECT_NE(t.err().message().find("tokenizer_config.json"), std::string::npos) << t.err().message();
  EXPECT_NE(t.err().message().find("bos_token"), std::string::npos) << t.err().message();

  std::ofstream(dir_ / "tokenizer_config.json") << "{not json";
  t = tokenizer::from_model_dir(dir_.string());
  ASSERT_FALSE(t);
  EXPECT_EQ(t.err().code(), errc::parse_error);
  EXPECT_NE(t.err().message().find("tokenizer_config.json"), std::string::npos);
}

}  // namespace
