// `afd make-model` then `afd generate` through the built binary: the JSON matches the library's
// result, and each bad argument gives its message and a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "runtime/engine/reference_engine.hpp"
#include "tests/engine/test_models.hpp"

namespace afd::engine {
namespace {

struct run_result {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

run_result afd(const std::string& args) {
  const auto dir = testing::scratch_root();
  const auto out = dir / "cli.out", err = dir / "cli.err";
  const std::string cmd = std::string("'") + AFD_BINARY + "' " + args + " >'" + out.string() + "' 2>'" + err.string() + "'";
  const int status = std::system(cmd.c_str());
  run_result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

const std::string& cli_model() {
  static const std::string dir = [] {
    const auto d = (testing::scratch_root() / "cli-tiny").string();
    const auto r = afd("make-model --preset tiny --out '" + d + "' --seed 3");
    EXPECT_EQ(r.code, 0) << r.err;
    return d;
  }();
  return dir;
}

result library_result(const std::string& dir, const request& r, const numerics& num) {
  auto w = model_weights::load(dir);
  EXPECT_TRUE(w.has_value());
  engine_options o;
  o.num = num;
  auto eng = reference_engine::create(*w, o);
  EXPECT_TRUE(eng.has_value());
  auto res = eng->generate({r});
  EXPECT_TRUE(res.has_value());
  return (*res)[0];
}

void expect_json_matches(const run_result& r, const result& lib) {
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"].get<std::vector<std::int32_t>>(), lib.tokens);
  ASSERT_EQ(j["logits"].size(), lib.logits.size());
  for (std::size_t i = 0; i < lib.logits.size(); ++i) {
    const auto row = j["logits"][i].get<std::vector<double>>();
    ASSERT_EQ(row.size(), lib.logits[i].size());
    for (std::size_t v = 0; v < row.size(); ++v)
      ASSERT_EQ(static_cast<float>(row[v]), lib.logits[i][v]) << "row " << i << " entry " << v;  // %.9g round-trips
  }
}

TEST(generate_cli, json_matches_the_library_with_default_numerics) {
  request r;
  r.prompt = {5, 17, 300};
  r.max_new_tokens = 6;
  r.logits_rows = 2;
  const auto run = afd("generate --model '" + cli_model() + "' --prompt-ids 5,17,300 --max-new-tokens 6 --json --logits 2");
  expect_json_matches(run, library_result(cli_model(), r, numerics{}));
}

TEST(generate_cli, kv_f32_alone_means_exact_numerics_and_sampling_options_apply) {
  request r;
  r.prompt = {1, 2, 3, 4, 5, 6, 7};
  r.max_new_tokens = 5;
  r.logits_rows = 1;
  r.sampling.temperature = 1.3f;
  r.sampling.top_k = 50;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 77;
  const auto run = afd("generate --model '" + cli_model() +
                       "' --prompt-ids 1,2,3,4,5,6,7 --max-new-tokens 5 --json --logits 1 --kv-dtype f32"
                       " --temperature 1.3 --top-k 50 --top-p 0.9 --seed 77");
  expect_json_matches(run, library_result(cli_model(), r, numerics::exact()));
}

TEST(generate_cli, stop_ids_and_text_output) {
  const auto first = afd("generate --model '" + cli_model() + "' --prompt-ids 9,8,7 --max-new-tokens 4 --json");
  ASSERT_EQ(first.code, 0) << first.err;
  const auto tokens = nlohmann::json::parse(first.out)["tokens"].get<std::vector<std::int32_t>>();
  ASSERT_EQ(tokens.size(), 4u);
  EXPECT_FALSE(nlohmann::json::parse(first.out).contains("logits"));
  const auto stopped = afd("generate --model '" + cli_model() + "' --prompt-ids 9,8,7 --max-new-tokens 4 --stop-ids " +
                           std::to_string(tokens[0]));
  ASSERT_EQ(stopped.code, 0) << stopped.err;
  EXPECT_EQ(stopped.out, std::to_string(tokens[0]) + "\n");
  EXPECT_NE(stopped.err.find("finish: stop"), std::string::npos) << stopped.err;
}

TEST(generate_cli, bad_arguments_fail_with_a_message) {
  const std::string m = "generate --model '" + cli_model() + "' ";
  struct bad {
    std::string args;
    int code;
    std::string message;
  };
  std::string long_prompt = "0";
  for (int i = 1; i < 2048; ++i) long_prompt += ",1";
  const std::string broken = (testing::scratch_root() / "broken").string();
  std::filesystem::create_directories(broken);
  std::ofstream(broken + "/config.json") << "{ not json";
  for (const bad& b : {
           bad{m + "--prompt-ids 5,17,512", 2, "prompt token 2 has id 512, outside the vocabulary [0, 512)"},
           bad{m + "--prompt-ids -3", 2, "has id -3"},
           bad{m + "--prompt-ids ''", 2, "empty prompt"},
           bad{m + "--prompt-ids 1,x", 2, "'x' is not a token id"},
           bad{m + "--prompt-ids " + long_prompt, 2, "the prompt has 2048 tokens; the context holds 2048"},
           bad{m + "--prompt-ids 1 --kv-dtype f64", 2, "unknown --kv-dtype 'f64'"},
           bad{m + "--prompt-ids 1 --combine-dtype fp8", 2, "unknown --combine-dtype 'fp8'"},
           bad{m + "--prompt-ids 1 --combine-mode fast", 2, "unknown --combine-mode 'fast'"},
           bad{m + "--prompt-ids 1 --max-new-tokens 0", 2, "max_new_tokens must be at least 1"},
           bad{"generate --prompt-ids 1", 2, "--model"},
           bad{"generate --model /nonexistent/afd-model --prompt-ids 1", 1, "cannot load model '/nonexistent/afd-model'"},
           bad{"generate --model '" + broken + "' --prompt-ids 1", 1, "cannot load model"},
       }) {
    const auto r = afd(b.args);
    EXPECT_EQ(r.code, b.code) << b.args.substr(0, 200) << "\n" << r.err;
    EXPECT_NE(r.err.find(b.message), std::string::npos) << b.args.substr(0, 200) << "\nstderr: " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

}  // namespace
}  // namespace afd::engine
