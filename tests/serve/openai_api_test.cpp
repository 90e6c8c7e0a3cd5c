// The OpenAI request checks and the cluster-error mapping, without a server.
#include "deploy/serve/openai_api.hpp"

#include <cmath>

#include <gtest/gtest.h>

namespace {

using namespace afd::serve;
using json = nlohmann::json;

struct fixture {
  afd::text::tokenizer tok = *afd::text::tokenizer::load(std::string(AFD_TEXT_DATA_DIR) + "/tiny_split.json");
  api_context ctx;
  fixture() {
    ctx.tokenizer = &tok;
    ctx.served_model_name = "m";
  }
};

TEST(openai_api, completion_prompts_in_every_form) {
  fixture f;
  generation_request g;
  ASSERT_FALSE(parse_completion(json{{"prompt", "hi there"}}, f.ctx, g));
  ASSERT_EQ(g.prompts.size(), 1u);
  EXPECT_EQ(g.prompts[0], f.tok.encode("hi there", true));
  EXPECT_EQ(g.max_tokens, 16);
  ASSERT_FALSE(parse_completion(json{{"prompt", {1, 2, 3}}, {"max_tokens", 5}, {"stream", true},
                                     {"stream_options", {{"include_usage", true}}}},
                                f.ctx, g));
  EXPECT_EQ(g.prompts, (std::vector<std::vector<std::int32_t>>{{1, 2, 3}}));
  EXPECT_TRUE(g.stream && g.include_usage);
  ASSERT_FALSE(parse_completion(json{{"prompt", json::array({"a", json::array({4, 5})})}}, f.ctx, g));
  EXPECT_EQ(g.prompts.size(), 2u);
  ASSERT_FALSE(parse_completion(json{{"prompt", "x"}, {"temperature", 0.5}, {"top_p", 0.9}, {"top_k", -1}, {"seed", 7},
                                     {"stop", {"a", "b"}}, {"stop_token_ids", {3}}, {"ignore_eos", true}, {"logprobs", 2},
                                     {"model", "m"}},
                                f.ctx, g));
  EXPECT_FLOAT_EQ(g.sampling.temperature, 0.5f);
  EXPECT_EQ(g.sampling.top_k, 0);
  EXPECT_EQ(g.sampling.seed, 7u);
  EXPECT_EQ(g.stop.size(), 2u);
  EXPECT_EQ(g.logprobs, 2);
  const auto r = to_cluster_request(g, 0, 9);
  EXPECT_EQ(r.stop_ids, (std::vector<std::int32_t>{3}));  // ignore_eos: 9 is not added
  EXPECT_EQ(r.logits_rows, g.max_tokens);
}

TEST(openai_api, bad_parameters_name_the_parameter) {
  fixture f;
  generation_request g;
  auto param_of = [&](const json& body) {
    auto e = parse_completion(body, f.ctx, g);
    return e ? std::to_string(e->status) + " " + e->param : std::string("ok");
  };
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"n", 2}}), "400 n");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"max_tokens", 1.5}}), "400 max_tokens");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"max_tokens", "3"}}), "400 max_tokens");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"temperature", -0.1}}), "400 temperature");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"top_p", 1.5}}), "400 top_p");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"stop", ""}}), "400 stop");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"stop_token_ids", {100000}}}), "400 stop_token_ids");
  EXPECT_EQ(param_of(json{{"prompt", {1, 100000}}}), "400 prompt");
  EXPECT_EQ(param_of(json{{"prompt", json::array()}}), "400 prompt");
  EXPECT_EQ(param_of(json{{"prompt", 5}}), "400 prompt");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}), "400 stream_options");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"model", "other"}}), "404 model");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"logprobs", 21}}), "400 logprobs");
  // Chat without a template in the model.
  auto e = parse_chat(json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}}, f.ctx, g);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "messages");
  const json err = e->to_json();
  EXPECT_TRUE(err["error"]["code"].is_null());
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");
}

TEST(openai_api, chat_messages_go_through_the_template) {
  fixture f;
  auto tmpl = afd::text::chat_template::parse(
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}");
  ASSERT_TRUE(tmpl);
  f.ctx.chat_template = &*tmpl;
  generation_request g;
  const json body{{"messages", {{{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "a"}},
                                                                            {{"type", "text"}, {"text", "b"}}})}}}},
                  {"max_completion_tokens", 7}, {"logprobs", true}, {"top_logprobs", 2}};
  ASSERT_FALSE(parse_chat(body, f.ctx, g));
  EXPECT_EQ(g.prompts[0], f.tok.encode("[user]ab[assistant]", false));
  EXPECT_EQ(g.max_tokens, 7);
  EXPECT_EQ(g.logprobs, 2);
}

TEST(openai_api, cluster_errors_map_to_http_statuses) {
  using afd::errc;
  EXPECT_EQ(from_cluster_error(afd::fail(errc::rejected, "admission queue full: 3 requests are waiting")).status, 429);
  EXPECT_EQ(from_cluster_error(afd::fail(errc::rejected, "the prompt has 9000 tokens; the context holds 2048")).status,
            400);
  EXPECT_EQ(from_cluster_error(afd::fail(errc::invalid_argument, "token id 7 outside")).status, 400);
  EXPECT_EQ(from_cluster_error(afd::fail(errc::unavailable, "cluster is shutting down")).status, 503);
  EXPECT_EQ(from_cluster_error(afd::fail(errc::internal, "?")).status, 500);
}

TEST(openai_api, logprobs_are_a_log_softmax) {
  const std::vector<std::vector<float>> logits = {{1.0f, 2.0f, 3.0f}, {0.0f, 0.0f, 0.0f}};
  const auto lp = compute_logprobs(logits, {2, 0}, 2);
  ASSERT_EQ(lp.size(), 2u);
  const double z = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(lp[0].logprob, 3.0 - z, 1e-6);
  ASSERT_EQ(lp[0].top.size(), 2u);
  EXPECT_EQ(lp[0].top[0].first, 2);
  EXPECT_EQ(lp[0].top[1].first, 1);
  EXPECT_NEAR(lp[1].logprob, -std::log(3.0), 1e-6);
  EXPECT_EQ(lp[1].top[0].first, 0);  // ties: the smaller id first
}

}  // namespace
