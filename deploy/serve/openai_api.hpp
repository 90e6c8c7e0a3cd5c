#pragma once
/// The OpenAI HTTP API as afd serves it: request bodies of /v1/completions and
/// /v1/chat/completions checked and turned into cluster requests, and the error object. Pure
/// functions over JSON; no sockets (server.cpp does the HTTP).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <afd/client.hpp>
#include "runtime/core/error.hpp"
#include "runtime/text/chat_template.hpp"
#include "runtime/text/tokenizer.hpp"

namespace afd::serve {

/// An OpenAI error: the HTTP status and the fields of {"error": {message, type, param, code}}.
struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  ///< empty: null
  std::string code;   ///< empty: null
  /// {"error": {...}}
  nlohmann::json to_json() const;
};

/// 400 invalid_request_error naming `param`.
api_error bad_request(std::string message, std::string param = {});

/// The HTTP status and error object of a cluster error: invalid_argument and a prompt too long for
/// the context 400, a full admission queue 429, unavailable 503, anything else 500.
api_error from_cluster_error(const afd::error& e);

/// Which endpoint a request came through.
enum class api_kind { completion, chat };

/// A checked generation request: one cluster request per prompt, and how to present its output.
struct generation_request {
  api_kind kind = api_kind::completion;
  std::vector<std::vector<std::int32_t>> prompts;  ///< token ids; one choice each
  std::int64_t max_tokens = 16;
  client::sampling_params sampling;
  std::vector<std::string> stop;            ///< stop strings (never in the returned text)
  std::vector<std::int32_t> stop_token_ids; ///< extra ids that end generation (their text is not returned)
  bool ignore_eos = false;
  bool stream = false;
  bool include_usage = false;               ///< stream_options.include_usage
  int logprobs = -1;                        ///< -1: none; else how many alternatives per position
  bool skip_special_tokens = true;
};

/// What the checks need besides the body.
struct api_context {
  const text::tokenizer* tokenizer = nullptr;
  const text::chat_template* chat_template = nullptr;  ///< null: the model has none
  std::string served_model_name;
  std::int64_t default_chat_max_tokens = 256;
  int max_logprobs = 20;
};

/// Checks a /v1/completions body. `prompt`: a string, a list of token ids, or a list of either.
std::optional<api_error> parse_completion(const nlohmann::json& body, const api_context& ctx,
                                          generation_request& out);
/// Checks a /v1/chat/completions body and renders its messages with the chat template.
std::optional<api_error> parse_chat(const nlohmann::json& body, const api_context& ctx, generation_request& out);

/// The cluster request of prompt `i`: EOS (unless ignore_eos) and stop_token_ids end it; logits are
/// kept for every position when logprobs are asked for.
client::request to_cluster_request(const generation_request& g, std::size_t i, std::optional<std::int32_t> eos_id);

/// OpenAI's finish reason of a cluster finish reason ("context" is "length").
std::string openai_finish_reason(const std::string& cluster_reason);

/// Logprobs of generated tokens from the kept logits rows: the chosen token's log-probability and
/// the `top` most likely alternatives (log-softmax of the fp32 row).
struct token_logprob {
  std::int32_t id = 0;
  double logprob = 0;
  std::vector<std::pair<std::int32_t, double>> top;
};
std::vector<token_logprob> compute_logprobs(const std::vector<std::vector<float>>& logits,
                                            const std::vector<std::int32_t>& tokens, int top);

/// `logprobs` of a completion choice (tokens, token_logprobs, top_logprobs, text_offset) or of a
/// chat choice ({"content": [...]}).
nlohmann::json completion_logprobs_json(const std::vector<token_logprob>& lp, const text::tokenizer& tok,
                                        std::size_t text_offset);
nlohmann::json chat_logprobs_json(const std::vector<token_logprob>& lp, const text::tokenizer& tok);

}  // namespace afd::serve
