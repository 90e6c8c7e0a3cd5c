// The official `openai` npm client, unmodified, against `afd serve`: completions and chat, streamed
// and not, give the reference engine's tokens (afd generate on the same prompt ids: no cluster, no
// server), and 100 concurrent streams each get their whole output.

#include <set>

#include "tests/serve/serve_harness.hpp"

namespace {

using namespace afd::serve::testing;

served& server() {
  static served s(write_topology("openai", {}), {"--served-model-name", "tiny-ds"});
  return s;
}

const std::vector<std::int32_t> prompt_ids = {0, 5000, 6000, 7000, 8000};

TEST(serve_openai, completions_streamed_and_not_match_the_reference_engine) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const auto want = reference_tokens(prompt_ids, 10);
  const json params{{"model", "tiny-ds"}, {"prompt", prompt_ids}, {"max_tokens", 10}, {"ignore_eos", true}};
  const json plain = openai_client({"complete", s.url(), params.dump()});
  ASSERT_FALSE(plain.contains("error")) << plain.dump();
  EXPECT_EQ(plain["object"], "text_completion");
  EXPECT_EQ(plain["choices"][0]["token_ids"].get<std::vector<std::int32_t>>(), want);
  EXPECT_EQ(plain["choices"][0]["text"], decoded(want));
  EXPECT_EQ(plain["usage"]["completion_tokens"], 10);

  json stream_params = params;
  stream_params["stream_options"] = {{"include_usage", true}};
  const json streamed = openai_client({"stream", s.url(), stream_params.dump()});
  ASSERT_FALSE(streamed.contains("error")) << streamed.dump();
  EXPECT_EQ(streamed["token_ids"].get<std::vector<std::int32_t>>(), want);
  EXPECT_EQ(streamed["text"], plain["choices"][0]["text"]);
  EXPECT_EQ(streamed["finish_reason"], "length");
  EXPECT_EQ(streamed["usage"]["prompt_tokens"], prompt_ids.size());
  EXPECT_EQ(streamed["usage"]["completion_tokens"], 10);
  EXPECT_EQ(streamed["ids"].size(), 1u);  // every chunk carries the request's id

  // Sampled: the same seed gives the same tokens, streamed or not.
  json sampled = params;
  sampled["temperature"] = 0.8;
  sampled["top_p"] = 0.9;
  sampled["seed"] = 42;
  const json a = openai_client({"complete", s.url(), sampled.dump()});
  const json b = openai_client({"stream", s.url(), sampled.dump()});
  EXPECT_EQ(a["choices"][0]["token_ids"], b["token_ids"]);

  // logprobs: the chosen token's log-probability is among the top alternatives and at most 0.
  json with_logprobs = params;
  with_logprobs["logprobs"] = 3;
  const json lp = openai_client({"complete", s.url(), with_logprobs.dump()});
  ASSERT_FALSE(lp.contains("error")) << lp.dump();
  const auto& l = lp["choices"][0]["logprobs"];
  ASSERT_EQ(l["token_logprobs"].size(), 10u);
  for (std::size_t i = 0; i < 10; ++i) {
    EXPECT_LE(l["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_EQ(l["top_logprobs"][i].size(), 3u);
  }
}

TEST(serve_openai, chat_renders_the_models_template_and_matches_the_reference_engine) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const json messages = json::array({json{{"role", "system"}, {"content", "You are terse."}},
                                     json{{"role", "user"}, {"content", "Hello, 世界!"}}});
  // The prompt ids from Hugging Face's renderer (@huggingface/jinja) and afd's tokenizer (itself
  // checked against Hugging Face's): independent of the server's own rendering.
  const json config = json::parse(read_text(model_dir() / "tokenizer_config.json"));
  const fs::path template_file = scratch() / "chat_template.jinja", conversations = scratch() / "conversations.json";
  std::ofstream(template_file) << config["chat_template"].get<std::string>();
  const json tokenizer_config = json::parse(read_text(model_dir() / "tokenizer_config.json"));
  auto token_text = [](const json& t) { return t.is_object() ? t["content"] : t; };
  std::ofstream(conversations) << json::array({json{{"name", "chat"},
                                                    {"context",
                                                     {{"messages", messages},
                                                      {"bos_token", token_text(tokenizer_config["bos_token"])},
                                                      {"eos_token", token_text(tokenizer_config["eos_token"])},
                                                      {"add_generation_prompt", true}}}}})
                                       .dump();
  const json rendered = npm_oracle::run("render " + quoted(template_file.string()) + " " + quoted(conversations.string()));
  ASSERT_TRUE(rendered[0].contains("text")) << rendered.dump();
  const auto ids = run_afd("tokenize --model " + quoted(model_dir().string()) + " --no-special --text " +
                       quoted(rendered[0]["text"].get<std::string>()));
  const auto prompt = json::parse(ids.out)["ids"].get<std::vector<std::int32_t>>();
  const auto want = reference_tokens(prompt, 8);

  const json params{{"model", "tiny-ds"}, {"messages", messages}, {"max_tokens", 8}, {"ignore_eos", true}};
  const json plain = openai_client({"chat", s.url(), params.dump()});
  ASSERT_FALSE(plain.contains("error")) << plain.dump();
  EXPECT_EQ(plain["object"], "chat.completion");
  EXPECT_EQ(plain["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(plain["choices"][0]["token_ids"].get<std::vector<std::int32_t>>(), want);
  EXPECT_EQ(plain["choices"][0]["message"]["content"], decoded(want));
  EXPECT_EQ(plain["usage"]["prompt_tokens"], prompt.size());

  json stream_params = params;
  stream_params["stream"] = true;
  stream_params["stream_options"] = {{"include_usage", true}};
  const json streamed = openai_client({"chat", s.url(), stream_params.dump()});
  ASSERT_FALSE(streamed.contains("error")) << streamed.dump();
  EXPECT_EQ(streamed["token_ids"].get<std::vector<std::int32_t>>(), want);
  EXPECT_EQ(streamed["text"], plain["choices"][0]["message"]["content"]);
  EXPECT_EQ(streamed["usage"]["completion_tokens"], 8);
}

TEST(serve_openai, errors_reach_the_client_as_api_errors) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const json bad = openai_client({"complete", s.url(), json{{"model", "tiny-ds"}, {"prompt", "hi"}, {"n", 3}}.dump()});
  EXPECT_EQ(bad["status"], 400) << bad.dump();
  const json missing = openai_client({"complete", s.url(), json{{"model", "nope"}, {"prompt", "hi"}}.dump()});
  EXPECT_EQ(missing["status"], 404) << missing.dump();
}

TEST(serve_openai, a_hundred_concurrent_streams_each_get_their_whole_output) {
  AFD_REQUIRE_SERVE_MODEL();
  auto& s = server();
  const auto want = reference_tokens(prompt_ids, 6);
  const json params{{"model", "tiny-ds"}, {"prompt", prompt_ids}, {"max_tokens", 6}, {"ignore_eos", true},
                    {"stream_options", {{"include_usage", true}}}};
  const json all = openai_client({"concurrent", s.url(), "100", params.dump()});
  ASSERT_TRUE(all.is_array()) << all.dump();
  ASSERT_EQ(all.size(), 100u);
  std::set<std::string> ids;
  for (const auto& r : all) {
    EXPECT_EQ(r["token_ids"].get<std::vector<std::int32_t>>(), want);  // batch-invariant: alone or with 99 others
    EXPECT_EQ(r["finish_reason"], "length");
    EXPECT_EQ(r["usage"]["completion_tokens"], 6);
    ids.insert(r["ids"][0].get<std::string>());
  }
  EXPECT_EQ(ids.size(), 100u);
  // A client that drops its stream after the first token: its request is cancelled.
  const json dropped = openai_client({"abort", s.url(),
                                      json{{"model", "tiny-ds"}, {"prompt", prompt_ids}, {"max_tokens", 1000},
                                           {"ignore_eos", true}}
                                          .dump()});
  EXPECT_GE(dropped["tokens"].get<int>(), 1) << dropped.dump();
  std::map<std::string, double> m;
  for (int i = 0; i < 300; ++i) {
    m = scrape(s.url());
    if (m.at("afd:num_requests_running{model_name=\"tiny-ds\"}") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(m.at("afd:num_requests_running{model_name=\"tiny-ds\"}"), 0);
  EXPECT_EQ(m.at("afd:request_failure_total{model_name=\"tiny-ds\",reason=\"abort\"}"), 1);
}

}  // namespace
