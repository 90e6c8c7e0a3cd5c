// `afd tokenize` and `afd make-model --tokenizer` as a user runs them: the whole stdout is one JSON
// document whose ids and text equal Hugging Face's (npm `tokenizers` on DeepSeek-V3's tokenizer),
// and a model made with the tokenizer takes text in and gives text out.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/text/npm_oracle.hpp"

namespace {

namespace fs = std::filesystem;
using afd::text::testing::npm_oracle;
using afd::text::testing::read_text;
using afd::text::testing::run_command;
using json = nlohmann::json;

struct cli_result {
  int code = -1;
  std::string out, err;
};

// A scratch folder for this process, removed when it exits.
struct scratch_folder {
  fs::path path = fs::temp_directory_path() / ("afd-text-cli-" + std::to_string(::getpid()));
  scratch_folder() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~scratch_folder() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

fs::path scratch() {
  static const scratch_folder folder;
  return folder.path;
}

// Single quotes for sh: 'it'\''s'.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

cli_result afd(const std::string& args) {
  const fs::path err = scratch() / "stderr";
  auto [code, out] = run_command(std::string(quoted(AFD_EXECUTABLE)) + " " + args + " 2>" + quoted(err.string()));
  return {code, out, read_text(err)};
}

std::string deepseek_json() { return (npm_oracle::deepseek_dir() / "tokenizer.json").string(); }

const std::vector<std::string> texts = {"Hello world", "你好，世界！ 👨‍👩‍👧 e\xcc\x81", "<｜User｜>Hi<｜Assistant｜>",
                                        "  spaces\tand\nnewlines\n\n", "x = f(1, 2) // 12345"};

// HF's ids of `texts`, through a corpus file in the oracle's format (none of them has a backslash).
std::vector<std::vector<std::int32_t>> hf_ids() {
  const fs::path corpus = scratch() / "cli_corpus";
  std::ofstream out(corpus, std::ios::binary);
  for (const auto& t : texts) {
    std::string escaped;
    for (const char c : t) escaped += c == '\n' ? std::string("\\n") : c == '\t' ? std::string("\\t") : std::string(1, c);
    out << escaped << "\n";
  }
  out.close();
  const auto hf = npm_oracle::run("tokenize " + quoted(deepseek_json()) + " " + quoted(corpus.string()));
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& entry : hf) ids.push_back(entry["ids"].get<std::vector<std::int32_t>>());
  return ids;
}

json hf_decode(const std::vector<std::vector<std::int32_t>>& batches) {
  return npm_oracle::run("decode " + quoted(deepseek_json()) + " " + quoted(json(batches).dump()));
}

std::string ids_arg(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

TEST(tokenize_cli, encodes_and_decodes_like_hugging_face) {
  AFD_REQUIRE_NPM_ORACLE();
  const auto want = hf_ids();
  ASSERT_EQ(want.size(), texts.size());
  const auto decoded = hf_decode(want);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto enc = afd("tokenize --tokenizer " + quoted(deepseek_json()) + " --text " + quoted(texts[i]));
    ASSERT_EQ(enc.code, 0) << enc.err;
    const json doc = json::parse(enc.out);  // the whole stdout is one document
    ASSERT_EQ(doc.size(), 1u) << enc.out;
    EXPECT_EQ(doc.at("ids").get<std::vector<std::int32_t>>(), want[i]) << texts[i];

    const auto dec = afd("tokenize --tokenizer " + quoted(deepseek_json()) + " --ids " + ids_arg(want[i]));
    ASSERT_EQ(dec.code, 0) << dec.err;
    EXPECT_EQ(json::parse(dec.out), (json{{"text", decoded[i]["text"]}})) << texts[i];
    const auto skip = afd("tokenize --tokenizer " + quoted(deepseek_json()) + " --no-special --ids " + ids_arg(want[i]));
    ASSERT_EQ(skip.code, 0) << skip.err;
    EXPECT_EQ(json::parse(skip.out)["text"], decoded[i]["text_skip_special"]) << texts[i];
  }
  // --model reads tokenizer_config.json (add_bos_token): BOS first, as transformers does.
  const auto with_bos = afd("tokenize --model " + quoted(npm_oracle::deepseek_dir().string()) + " --text " + quoted(texts[0]));
  ASSERT_EQ(with_bos.code, 0) << with_bos.err;
  auto expected = want[0];
  expected.insert(expected.begin(), 0);
  EXPECT_EQ(json::parse(with_bos.out)["ids"].get<std::vector<std::int32_t>>(), expected);
  const auto no_bos = afd("tokenize --model " + quoted(npm_oracle::deepseek_dir().string()) + " --no-special --text " +
                          quoted(texts[0]));
  EXPECT_EQ(json::parse(no_bos.out)["ids"].get<std::vector<std::int32_t>>(), want[0]);
}

TEST(tokenize_cli, bad_usage_and_bad_files_are_clear_errors) {
  const std::string data = AFD_TEXT_DATA_DIR;
  auto r = afd("tokenize --text hi");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--tokenizer"), std::string::npos) << r.err;
  r = afd("tokenize --tokenizer " + quoted(data + "/tiny_split.json"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--text"), std::string::npos) << r.err;
  r = afd("tokenize --tokenizer " + quoted(data + "/tiny_split.json") + " --ids 1,-2");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("'-2'"), std::string::npos) << r.err;
  r = afd("tokenize --tokenizer " + quoted(data + "/no_such_file.json") + " --text hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no_such_file.json"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  const fs::path broken = scratch() / "broken.json";
  std::ofstream(broken) << R"({"model": {"type": "Unigram", "vocab": []}})";
  r = afd("tokenize --tokenizer " + quoted(broken.string()) + " --text hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("model.type"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("broken.json"), std::string::npos) << r.err;
  r = afd("make-model --preset tiny --out " + quoted((scratch() / "never").string()) + " --tokenizer " +
          quoted(broken.string()));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("Unigram"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(scratch() / "never" / "config.json"));
}

TEST(make_model_cli, a_model_made_with_a_tokenizer_takes_text_in_and_gives_text_out) {
  AFD_REQUIRE_NPM_ORACLE();
  const fs::path out = scratch() / "deepseek-tiny";
  auto r = afd("make-model --preset tiny --out " + quoted(out.string()) + " --tokenizer " + quoted(deepseek_json()));
  ASSERT_EQ(r.code, 0) << r.err;
  const json config = json::parse(read_text(out / "config.json"));
  EXPECT_EQ(config["vocab_size"], 128815);  // DeepSeek-V3's largest id (an added token) + 1
  EXPECT_EQ(read_text(out / "tokenizer.json"), read_text(deepseek_json()));
  const json source_config = json::parse(read_text(npm_oracle::deepseek_dir() / "tokenizer_config.json"));
  const json written_config = json::parse(read_text(out / "tokenizer_config.json"));
  EXPECT_EQ(written_config["chat_template"], source_config["chat_template"]);
  EXPECT_EQ(written_config["bos_token"], source_config["bos_token"]);
  EXPECT_EQ(written_config["eos_token"], source_config["eos_token"]);

  // Text in: the prompt's ids (with BOS); the model generates; text out: the ids decoded.
  const auto prompt = afd("tokenize --model " + quoted(out.string()) + " --text " + quoted("Hello, 世界"));
  ASSERT_EQ(prompt.code, 0) << prompt.err;
  const auto prompt_ids = json::parse(prompt.out)["ids"].get<std::vector<std::int32_t>>();
  ASSERT_FALSE(prompt_ids.empty());
  EXPECT_EQ(prompt_ids.front(), 0);
  const auto generated = afd("generate --model " + quoted(out.string()) + " --prompt-ids " + ids_arg(prompt_ids) +
                             " --max-new-tokens 6 --json");
  ASSERT_EQ(generated.code, 0) << generated.err;
  const auto tokens = json::parse(generated.out)["tokens"].get<std::vector<std::int32_t>>();
  ASSERT_EQ(tokens.size(), 6u);
  for (const auto t : tokens) EXPECT_LT(t, 128815);
  const auto text = afd("tokenize --model " + quoted(out.string()) + " --ids " + ids_arg(tokens));
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_EQ(json::parse(text.out)["text"], hf_decode({tokens})[0]["text"]);
}

}  // namespace
