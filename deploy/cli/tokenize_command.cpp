// `afd tokenize`: text to token ids or ids to text with a Hugging Face tokenizer.json, printed as
// one JSON document: {"ids": [...]} or {"text": "..."}.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "deploy/cli/command_registry.hpp"
#include "runtime/text/tokenizer.hpp"

namespace {

// "1,2,3" (spaces allowed) -> ids; false on anything else.
bool parse_ids(const std::string& text, std::vector<std::int32_t>& ids, std::string& problem) {
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = text.find(',', at);
    std::string item = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    const auto first = item.find_first_not_of(" \t");
    const auto last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 10 ||
        std::stoll(item) > INT32_MAX) {
      problem = "'" + item + "' is not a token id (a non-negative integer)";
      return false;
    }
    ids.push_back(static_cast<std::int32_t>(std::stoll(item)));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return true;
}

int run_tokenize(int argc, char** argv) {
  CLI::App app{"Encodes text to token ids, or decodes ids to text, with a Hugging Face tokenizer.json.\n"
               "Prints one JSON document: {\"ids\": [...]} for --text, {\"text\": \"...\"} for --ids.\n"
               "With --model, tokenizer_config.json (when present) adds the BOS token as transformers does.\n"
               "Exit codes: 0 done, 1 the tokenizer cannot be loaded, 2 bad usage."};
  std::string tokenizer_file, model_dir, text, ids_text;
  bool no_special = false;
  auto* file_option = app.add_option("--tokenizer", tokenizer_file, "a tokenizer.json file");
  auto* model_option = app.add_option("--model", model_dir, "a model directory (tokenizer.json + tokenizer_config.json)");
  auto* text_option = app.add_option("--text", text, "text to encode (invalid UTF-8 is replaced by U+FFFD)");
  auto* ids_option = app.add_option("--ids", ids_text, "comma-separated token ids to decode");
  app.add_flag("--no-special", no_special,
               "encode without the post-processor's special tokens (BOS); decode skipping special tokens");
  file_option->excludes(model_option);
  text_option->excludes(ids_option);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (tokenizer_file.empty() == model_dir.empty()) {
    std::fprintf(stderr, "afd tokenize: give --tokenizer FILE or --model DIR\n");
    return 2;
  }
  if (text_option->count() == ids_option->count()) {
    std::fprintf(stderr, "afd tokenize: give --text TEXT or --ids 1,2,3\n");
    return 2;
  }
  std::vector<std::int32_t> ids;
  if (ids_option->count()) {
    std::string problem;
    if (!parse_ids(ids_text, ids, problem)) {
      std::fprintf(stderr, "afd tokenize: --ids: %s\n", problem.c_str());
      return 2;
    }
  }

  auto tok = model_dir.empty() ? afd::text::tokenizer::load(tokenizer_file)
                               : afd::text::tokenizer::from_model_dir(model_dir);
  if (!tok) {
    std::fprintf(stderr, "afd tokenize: %s\n", tok.err().message().c_str());
    return 1;
  }
  nlohmann::json out;
  if (text_option->count()) {
    out["ids"] = tok->encode(text, !no_special);
  } else {
    out["text"] = tok->decode(ids, no_special);
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

const bool registered = afd::cli::register_command(
    {"tokenize", "encode text to token ids or decode ids with a tokenizer.json", run_tokenize});

}  // namespace
