#include "deploy/serve/openai_api.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace afd::serve {

using json = nlohmann::json;

json api_error::to_json() const {
  json e{{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}};
}

api_error bad_request(std::string message, std::string param) {
  api_error e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

api_error from_cluster_error(const afd::error& e) {
  api_error out;
  out.message = e.message();
  switch (e.code()) {
    case errc::invalid_argument:
      out.status = 400;
      break;
    case errc::rejected:
      // errc::rejected covers both a request that can never fit (longer than the context, more KV
      // than any worker has: the caller's mistake) and a full admission queue (try again later).
      // The coordinator's message tells them apart.
      if (e.message().find("admission queue full") != std::string::npos) {
        out.status = 429;
        out.type = "rate_limit_error";
        out.code = "queue_full";
      } else {
        out.status = 400;
        out.code = "context_length_exceeded";
      }
      break;
    case errc::unavailable:
    case errc::timeout:
    case errc::peer_failed:
      out.status = 503;
      out.type = "service_unavailable";
      out.code = "cluster_unavailable";
      break;
    case errc::cancelled:
      out.status = 499;
      out.type = "cancelled";
      break;
    default:
      out.status = 500;
      out.type = "server_error";
      break;
  }
  return out;
}

namespace {

/// A JSON number that is an integer (5 or 5.0), within [lo, hi].
std::optional<api_error> get_int(const json& body, const char* name, std::int64_t lo, std::int64_t hi,
                                 std::int64_t& out) {
  if (!body.contains(name) || body[name].is_null()) return std::nullopt;
  const json& v = body[name];
  double d = 0;
  if (v.is_number_integer()) {
    d = static_cast<double>(v.get<std::int64_t>());
  } else if (v.is_number_float()) {
    d = v.get<double>();
    if (d != std::floor(d)) return bad_request(std::string(name) + " must be an integer", name);
  } else {
    return bad_request(std::string(name) + " must be an integer", name);
  }
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    return bad_request(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                           "], got " + v.dump(),
                       name);
  out = static_cast<std::int64_t>(d);
  return std::nullopt;
}

std::optional<api_error> get_float(const json& body, const char* name, double lo, double hi, float& out) {
  if (!body.contains(name) || body[name].is_null()) return std::nullopt;
  const json& v = body[name];
  if (!v.is_number()) return bad_request(std::string(name) + " must be a number", name);
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    return bad_request(std::string(name) + " must be in [" + json(lo).dump() + ", " + json(hi).dump() + "], got " +
                           v.dump(),
                       name);
  out = static_cast<float>(d);
  return std::nullopt;
}

std::optional<api_error> get_bool(const json& body, const char* name, bool& out) {
  if (!body.contains(name) || body[name].is_null()) return std::nullopt;
  if (!body[name].is_boolean()) return bad_request(std::string(name) + " must be true or false", name);
  out = body[name].get<bool>();
  return std::nullopt;
}

std::optional<api_error> token_ids(const json& v, const char* name, std::vector<std::int32_t>& out) {
  if (!v.is_array()) return bad_request(std::string(name) + " must be a list of token ids", name);
  for (const auto& x : v) {
    if (!x.is_number_integer() || x.get<std::int64_t>() < 0 ||
        x.get<std::int64_t>() > std::numeric_limits<std::int32_t>::max())
      return bad_request(std::string(name) + ": " + (x.is_number() ? x.dump() : std::string("a ") + x.type_name()) +
                             " is not a token id",
                         name);
    out.push_back(static_cast<std::int32_t>(x.get<std::int64_t>()));
  }
  return std::nullopt;
}

/// The fields both endpoints share.
std::optional<api_error> parse_common(const json& body, const api_context& ctx, generation_request& out) {
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) return bad_request("model must be a string", "model");
    if (body["model"].get<std::string>() != ctx.served_model_name) {
      api_error e;
      e.status = 404;
      e.message = "The model `" + body["model"].get<std::string>() + "` does not exist; this server serves `" +
                  ctx.served_model_name + "`.";
      e.type = "NotFoundError";
      e.param = "model";
      e.code = "model_not_found";
      return e;
    }
  }
  std::int64_t n = 1;
  if (auto e = get_int(body, "n", 1, 1, n)) {
    e->message = "only n = 1 is supported; " + e->message;
    return e;
  }
  if (body.contains("best_of") && !body["best_of"].is_null() &&
      !(body["best_of"].is_number_integer() && body["best_of"].get<std::int64_t>() == 1))
    return bad_request("only best_of = 1 is supported", "best_of");
  if (auto e = get_float(body, "temperature", 0.0, 100.0, out.sampling.temperature)) return e;
  if (auto e = get_float(body, "top_p", 0.0, 1.0, out.sampling.top_p)) return e;
  if (out.sampling.top_p <= 0.0f) return bad_request("top_p must be in (0, 1]", "top_p");
  std::int64_t top_k = 0;
  // vLLM's convention: -1 (or 0) means off.
  if (auto e = get_int(body, "top_k", -1, std::numeric_limits<std::int32_t>::max(), top_k)) return e;
  out.sampling.top_k = static_cast<std::int32_t>(std::max<std::int64_t>(top_k, 0));
  std::int64_t seed = 0;
  if (auto e = get_int(body, "seed", std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max(),
                       seed))
    return e;
  out.sampling.seed = static_cast<std::uint64_t>(seed);
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& s = body["stop"];
    if (s.is_string()) {
      out.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const auto& x : s) {
        if (!x.is_string()) return bad_request("stop must be a string or a list of strings", "stop");
        out.stop.push_back(x.get<std::string>());
      }
    } else {
      return bad_request("stop must be a string or a list of strings", "stop");
    }
    for (const auto& x : out.stop)
      if (x.empty()) return bad_request("stop strings must not be empty", "stop");
  }
  if (body.contains("stop_token_ids") && !body["stop_token_ids"].is_null()) {
    if (auto e = token_ids(body["stop_token_ids"], "stop_token_ids", out.stop_token_ids)) return e;
    for (auto id : out.stop_token_ids)
      if (id >= ctx.tokenizer->vocab_size())
        return bad_request("stop_token_ids: " + std::to_string(id) + " is outside the vocabulary [0, " +
                               std::to_string(ctx.tokenizer->vocab_size()) + ")",
                           "stop_token_ids");
  }
  if (auto e = get_bool(body, "ignore_eos", out.ignore_eos)) return e;
  if (auto e = get_bool(body, "skip_special_tokens", out.skip_special_tokens)) return e;
  if (auto e = get_bool(body, "stream", out.stream)) return e;
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) return bad_request("stream_options must be an object", "stream_options");
    if (!out.stream) return bad_request("stream_options is only allowed with stream: true", "stream_options");
    if (auto e = get_bool(so, "include_usage", out.include_usage)) {
      e->param = "stream_options.include_usage";
      return e;
    }
  }
  return std::nullopt;
}

/// max_tokens (or max_completion_tokens for chat).
std::optional<api_error> parse_max_tokens(const json& body, const char* name, generation_request& out) {
  if (auto e = get_int(body, name, 1, std::numeric_limits<std::int32_t>::max(), out.max_tokens)) return e;
  return std::nullopt;
}

}  // namespace

std::optional<api_error> parse_completion(const json& body, const api_context& ctx, generation_request& out) {
  if (!body.is_object()) return bad_request("the request body must be a JSON object");
  out = generation_request{};
  out.kind = api_kind::completion;
  out.max_tokens = 16;  // OpenAI's default for completions
  if (auto e = parse_common(body, ctx, out)) return e;
  if (auto e = parse_max_tokens(body, "max_tokens", out)) return e;
  if (body.contains("echo") && body["echo"].is_boolean() && body["echo"].get<bool>())
    return bad_request("echo is not supported", "echo");
  if (body.contains("suffix") && !body["suffix"].is_null()) return bad_request("suffix is not supported", "suffix");
  if (body.contains("logprobs") && !body["logprobs"].is_null()) {
    std::int64_t k = 0;
    if (body["logprobs"].is_boolean()) return bad_request("logprobs must be an integer for completions", "logprobs");
    if (auto e = get_int(body, "logprobs", 0, ctx.max_logprobs, k)) return e;
    out.logprobs = static_cast<int>(k);
  }
  if (!body.contains("prompt") || body["prompt"].is_null()) return bad_request("prompt is required", "prompt");
  const json& p = body["prompt"];
  auto add_text = [&](const std::string& text) { out.prompts.push_back(ctx.tokenizer->encode(text, true)); };
  if (p.is_string()) {
    add_text(p.get<std::string>());
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    std::vector<std::int32_t> ids;
    if (auto e = token_ids(p, "prompt", ids)) return e;
    out.prompts.push_back(std::move(ids));
  } else if (p.is_array() && !p.empty()) {
    for (const auto& item : p) {
      if (item.is_string()) {
        add_text(item.get<std::string>());
      } else if (item.is_array()) {
        std::vector<std::int32_t> ids;
        if (auto e = token_ids(item, "prompt", ids)) return e;
        out.prompts.push_back(std::move(ids));
      } else {
        return bad_request("prompt must be a string, a list of token ids, or a list of either", "prompt");
      }
    }
  } else {
    return bad_request("prompt must be a string, a list of token ids, or a list of either (not empty)", "prompt");
  }
  for (const auto& ids : out.prompts) {
    if (ids.empty()) return bad_request("a prompt has no tokens", "prompt");
    for (auto id : ids)
      if (id >= ctx.tokenizer->vocab_size())
        return bad_request("prompt: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                               std::to_string(ctx.tokenizer->vocab_size()) + ")",
                           "prompt");
  }
  return std::nullopt;
}

std::optional<api_error> parse_chat(const json& body, const api_context& ctx, generation_request& out) {
  if (!body.is_object()) return bad_request("the request body must be a JSON object");
  out = generation_request{};
  out.kind = api_kind::chat;
  out.max_tokens = ctx.default_chat_max_tokens;
  if (auto e = parse_common(body, ctx, out)) return e;
  if (auto e = parse_max_tokens(body, "max_tokens", out)) return e;
  if (auto e = parse_max_tokens(body, "max_completion_tokens", out)) return e;
  bool want_logprobs = false;
  if (auto e = get_bool(body, "logprobs", want_logprobs)) return e;
  if (want_logprobs) {
    std::int64_t k = 0;
    if (auto e = get_int(body, "top_logprobs", 0, ctx.max_logprobs, k)) return e;
    out.logprobs = static_cast<int>(k);
  } else if (body.contains("top_logprobs") && !body["top_logprobs"].is_null()) {
    return bad_request("top_logprobs needs logprobs: true", "top_logprobs");
  }
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty())
    return bad_request("messages must be a non-empty list", "messages");
  if (ctx.chat_template == nullptr)
    return bad_request("the model has no chat_template in its tokenizer_config.json; use /v1/completions",
                       "messages");
  // The template sees each message with its content as a string (a list of text parts is joined).
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const auto& m : body["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      return bad_request("each message needs a string role", "messages");
    nlohmann::ordered_json msg = nlohmann::ordered_json::object();
    msg["role"] = m["role"];
    if (!m.contains("content") || m["content"].is_null()) {
      msg["content"] = "";
    } else if (m["content"].is_string()) {
      msg["content"] = m["content"];
    } else if (m["content"].is_array()) {
      std::string text;
      for (const auto& part : m["content"]) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          return bad_request("message content parts must be {\"type\": \"text\", \"text\": ...}", "messages");
        text += part["text"].get<std::string>();
      }
      msg["content"] = text;
    } else {
      return bad_request("message content must be a string or a list of text parts", "messages");
    }
    for (const auto& [k, v] : m.items())
      if (k != "role" && k != "content") msg[k] = v;
    messages.push_back(std::move(msg));
  }
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = std::move(messages);
  bool add_generation_prompt = true;
  if (auto e = get_bool(body, "add_generation_prompt", add_generation_prompt)) return e;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = ctx.tokenizer->bos_token().value_or("");
  context["eos_token"] = ctx.tokenizer->eos_token().value_or("");
  auto rendered = ctx.chat_template->render(context);
  if (!rendered) return bad_request("chat template: " + rendered.err().message(), "messages");
  // The template writes BOS itself: no post-processor on top (as vLLM and transformers do).
  out.prompts.push_back(ctx.tokenizer->encode(*rendered, false));
  if (out.prompts.back().empty()) return bad_request("the rendered conversation has no tokens", "messages");
  return std::nullopt;
}

client::request to_cluster_request(const generation_request& g, std::size_t i, std::optional<std::int32_t> eos_id) {
  client::request r;
  r.prompt = g.prompts[i];
  r.max_new_tokens = g.max_tokens;
  r.sampling = g.sampling;
  r.stop_ids = g.stop_token_ids;
  if (eos_id && !g.ignore_eos) r.stop_ids.push_back(*eos_id);
  if (g.logprobs >= 0) r.logits_rows = g.max_tokens;
  return r;
}

std::string openai_finish_reason(const std::string& cluster_reason) {
  return cluster_reason == "stop" ? "stop" : "length";
}

std::vector<token_logprob> compute_logprobs(const std::vector<std::vector<float>>& logits,
                                            const std::vector<std::int32_t>& tokens, int top) {
  std::vector<token_logprob> out;
  const std::size_t n = std::min(logits.size(), tokens.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto& row = logits[i];
    token_logprob lp;
    lp.id = tokens[i];
    if (row.empty()) {
      out.push_back(lp);
      continue;
    }
    const double mx = *std::max_element(row.begin(), row.end());
    double sum = 0;
    for (float v : row) sum += std::exp(static_cast<double>(v) - mx);
    const double log_z = mx + std::log(sum);
    if (lp.id >= 0 && static_cast<std::size_t>(lp.id) < row.size()) lp.logprob = row[static_cast<std::size_t>(lp.id)] - log_z;
    if (top > 0) {
      std::vector<std::int32_t> order(row.size());
      for (std::size_t j = 0; j < row.size(); ++j) order[j] = static_cast<std::int32_t>(j);
      const auto k = std::min<std::size_t>(static_cast<std::size_t>(top), row.size());
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                        [&](std::int32_t a, std::int32_t b) {
                          const float x = row[static_cast<std::size_t>(a)], y = row[static_cast<std::size_t>(b)];
                          return x > y || (x == y && a < b);
                        });
      for (std::size_t j = 0; j < k; ++j)
        lp.top.emplace_back(order[j], row[static_cast<std::size_t>(order[j])] - log_z);
    }
    out.push_back(std::move(lp));
  }
  return out;
}

namespace {
std::string token_text(const text::tokenizer& tok, std::int32_t id) {
  const std::int32_t one[] = {id};
  return tok.decode(one, false);
}
json utf8_bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}
}  // namespace

json completion_logprobs_json(const std::vector<token_logprob>& lp, const text::tokenizer& tok,
                              std::size_t text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  for (const auto& t : lp) {
    const std::string s = token_text(tok, t.id);
    tokens.push_back(s);
    token_logprobs.push_back(t.logprob);
    json alternatives = json::object();
    for (const auto& [id, v] : t.top) alternatives[token_text(tok, id)] = v;
    top.push_back(std::move(alternatives));
    offsets.push_back(text_offset);
    text_offset += s.size();
  }
  return json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json chat_logprobs_json(const std::vector<token_logprob>& lp, const text::tokenizer& tok) {
  json content = json::array();
  for (const auto& t : lp) {
    const std::string s = token_text(tok, t.id);
    json alternatives = json::array();
    for (const auto& [id, v] : t.top) {
      const std::string a = token_text(tok, id);
      alternatives.push_back({{"token", a}, {"logprob", v}, {"bytes", utf8_bytes(a)}});
    }
    content.push_back({{"token", s}, {"logprob", t.logprob}, {"bytes", utf8_bytes(s)}, {"top_logprobs", alternatives}});
  }
  return json{{"content", content}};
}

}  // namespace afd::serve
