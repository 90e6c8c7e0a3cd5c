#include "runtime/text/tokenizer.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/text/tokenizer_model.hpp"
#include "runtime/text/utf8.hpp"

namespace afd::text {

namespace detail {

namespace {

using json = nlohmann::json;

// Thrown inside the parser only, caught in parse_tokenizer_json: a field that is wrong.
struct field_problem {
  errc code;
  std::string field;
  std::string what;
};

[[noreturn]] void bad(errc code, std::string field, std::string what) {
  throw field_problem{code, std::move(field), std::move(what)};
}

const json* member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

bool get_bool(const json& object, const char* key, const std::string& path, bool fallback) {
  const json* v = member(object, key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_boolean()) bad(errc::invalid_config, path + "." + key, "must be true or false");
  return v->get<bool>();
}

std::string get_string(const json& object, const char* key, const std::string& path) {
  const json* v = member(object, key);
  if (!v || !v->is_string()) bad(errc::invalid_config, path + "." + key, "must be a string");
  return v->get<std::string>();
}

std::optional<std::string> get_optional_string(const json& object, const char* key, const std::string& path) {
  const json* v = member(object, key);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) bad(errc::invalid_config, path + "." + key, "must be a string or null");
  return v->get<std::string>();
}

std::int32_t to_id(const json& v, const std::string& path) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > INT32_MAX)
    bad(errc::invalid_config, path, "must be a token id (an integer 0 .. 2^31-1)");
  return static_cast<std::int32_t>(v.get<std::int64_t>());
}

void parse_normalizer(const json& n, const std::string& path) {
  if (n.is_null()) return;
  const std::string type = get_string(n, "type", path);
  if (type == "Sequence") {
    const json* list = member(n, "normalizers");
    if (!list || !list->is_array()) bad(errc::invalid_config, path + ".normalizers", "must be a list");
    for (std::size_t i = 0; i < list->size(); ++i)
      parse_normalizer((*list)[i], path + ".normalizers[" + std::to_string(i) + "]");
    return;
  }
  bad(errc::unsupported, path + ".type", "normalizer '" + type + "' is not supported (only none or an empty Sequence)");
}

split_behavior parse_behavior(const std::string& s, const std::string& path) {
  if (s == "Removed") return split_behavior::removed;
  if (s == "Isolated") return split_behavior::isolated;
  if (s == "MergedWithPrevious") return split_behavior::merged_with_previous;
  if (s == "MergedWithNext") return split_behavior::merged_with_next;
  if (s == "Contiguous") return split_behavior::contiguous;
  bad(errc::invalid_config, path, "unknown split behavior '" + s + "'");
}

void parse_pre_tokenizer(const json& p, const std::string& path, tokenizer_model& m) {
  if (p.is_null()) return;
  const std::string type = get_string(p, "type", path);
  if (type == "Sequence") {
    const json* list = member(p, "pretokenizers");
    if (!list || !list->is_array()) bad(errc::invalid_config, path + ".pretokenizers", "must be a list");
    for (std::size_t i = 0; i < list->size(); ++i)
      parse_pre_tokenizer((*list)[i], path + ".pretokenizers[" + std::to_string(i) + "]", m);
    return;
  }
  if (m.byte_level)
    bad(errc::unsupported, path, "a pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
  pre_tokenizer_step step;
  if (type == "Split") {
    step.type = pre_tokenizer_step::kind::split;
    const json* pattern = member(p, "pattern");
    if (!pattern || !pattern->is_object()) bad(errc::invalid_config, path + ".pattern", "must be {\"Regex\": ...} or {\"String\": ...}");
    if (const json* r = member(*pattern, "Regex")) {
      if (!r->is_string()) bad(errc::invalid_config, path + ".pattern.Regex", "must be a string");
      auto compiled = regex::compile(r->get<std::string>());
      if (!compiled) bad(errc::invalid_argument, path + ".pattern.Regex", compiled.err().message());
      step.pattern = std::move(*compiled);
    } else if (const json* s = member(*pattern, "String")) {
      if (!s->is_string()) bad(errc::invalid_config, path + ".pattern.String", "must be a string");
      step.literal = s->get<std::string>();
    } else {
      bad(errc::invalid_config, path + ".pattern", "must be {\"Regex\": ...} or {\"String\": ...}");
    }
    step.behavior = parse_behavior(get_string(p, "behavior", path), path + ".behavior");
    step.invert = get_bool(p, "invert", path, false);
  } else if (type == "ByteLevel") {
    step.type = pre_tokenizer_step::kind::byte_level;
    step.add_prefix_space = get_bool(p, "add_prefix_space", path, true);
    step.use_regex = get_bool(p, "use_regex", path, true);
    m.byte_level = true;
  } else {
    bad(errc::unsupported, path + ".type",
        "pre-tokenizer '" + type + "' is not supported (Split, ByteLevel or a Sequence of them)");
  }
  m.pre_tokenizer.push_back(std::move(step));
}

void parse_model(const json& model, tokenizer_model& m) {
  const std::string path = "model";
  if (!model.is_object()) bad(errc::invalid_config, path, "must be an object");
  const json* type = member(model, "type");
  if (type && !type->is_string()) bad(errc::invalid_config, "model.type", "must be a string");
  const std::string type_name = type ? type->get<std::string>() : "BPE";
  if (type_name != "BPE")
    bad(errc::unsupported, "model.type", "model type '" + type_name + "' is not supported (only BPE)");
  if (const json* dropout = member(model, "dropout"); dropout && !dropout->is_null()) {
    if (!dropout->is_number()) bad(errc::invalid_config, "model.dropout", "must be a number or null");
    if (dropout->get<double>() != 0.0) bad(errc::unsupported, "model.dropout", "BPE dropout is not supported");
  }
  m.unk_token = get_optional_string(model, "unk_token", path);
  m.fuse_unk = get_bool(model, "fuse_unk", path, false);
  m.byte_fallback = get_bool(model, "byte_fallback", path, false);
  m.ignore_merges = get_bool(model, "ignore_merges", path, false);
  m.continuing_subword_prefix = get_optional_string(model, "continuing_subword_prefix", path).value_or("");
  m.end_of_word_suffix = get_optional_string(model, "end_of_word_suffix", path).value_or("");

  const json* vocab = member(model, "vocab");
  if (!vocab || !vocab->is_object()) bad(errc::invalid_config, "model.vocab", "must be an object of token: id");
  m.vocab.reserve(vocab->size());
  std::int32_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const std::int32_t id = to_id(it.value(), "model.vocab[\"" + it.key() + "\"]");
    m.vocab.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  m.vocab_r.assign(static_cast<std::size_t>(max_id + 1), std::string{});
  m.has_id.assign(static_cast<std::size_t>(max_id + 1), false);
  for (const auto& [token, id] : m.vocab) {
    m.vocab_r[static_cast<std::size_t>(id)] = token;
    m.has_id[static_cast<std::size_t>(id)] = true;
  }
  if (m.unk_token && !m.vocab.count(*m.unk_token))
    bad(errc::invalid_config, "model.unk_token", "'" + *m.unk_token + "' is not in model.vocab");

  const json* merges = member(model, "merges");
  if (!merges || !merges->is_array()) bad(errc::invalid_config, "model.merges", "must be a list");
  m.merges.reserve(merges->size());
  const std::size_t prefix_length = m.continuing_subword_prefix.size();
  for (std::size_t rank = 0; rank < merges->size(); ++rank) {
    const json& entry = (*merges)[rank];
    const std::string field = "model.merges[" + std::to_string(rank) + "]";
    std::string a, b;
    if (entry.is_string()) {
      const std::string s = entry.get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos) bad(errc::invalid_config, field, "\"" + s + "\" is not \"a b\"");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      bad(errc::invalid_config, field, "must be \"a b\" or [\"a\", \"b\"]");
    }
    const auto ia = m.vocab.find(a), ib = m.vocab.find(b);
    if (ia == m.vocab.end()) bad(errc::invalid_config, field, "token '" + a + "' is not in model.vocab");
    if (ib == m.vocab.end()) bad(errc::invalid_config, field, "token '" + b + "' is not in model.vocab");
    const std::string merged = a + (b.size() >= prefix_length ? b.substr(prefix_length) : b);
    const auto im = m.vocab.find(merged);
    if (im == m.vocab.end()) bad(errc::invalid_config, field, "merged token '" + merged + "' is not in model.vocab");
    const std::uint64_t key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(ia->second)) << 32) |
                              static_cast<std::uint32_t>(ib->second);
    m.merges[key] = {static_cast<std::uint32_t>(rank), im->second};
  }
  const auto& chars = byte_level_chars();
  for (std::size_t b = 0; b < 256; ++b) {
    const auto it = m.vocab.find(chars[b]);
    m.byte_token_id[b] = it == m.vocab.end() ? -1 : it->second;
  }
}

void parse_added_tokens(const json& list, tokenizer_model& m) {
  if (list.is_null()) return;
  if (!list.is_array()) bad(errc::invalid_config, "added_tokens", "must be a list");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    const json& t = list[i];
    added_token token;
    const json* id = member(t, "id");
    if (!id) bad(errc::invalid_config, path + ".id", "is missing");
    token.id = to_id(*id, path + ".id");
    token.content = get_string(t, "content", path);
    token.single_word = get_bool(t, "single_word", path, false);
    token.lstrip = get_bool(t, "lstrip", path, false);
    token.rstrip = get_bool(t, "rstrip", path, false);
    token.special = get_bool(t, "special", path, false);
    token.normalized = get_bool(t, "normalized", path, !token.special);
    if (token.content.empty()) continue;  // HF ignores empty added tokens
    if (!is_valid_utf8(token.content)) bad(errc::invalid_config, path + ".content", "is not valid UTF-8");
    const auto index = m.added.size();
    m.added_by_content[token.content] = token.id;
    m.added_by_id[token.id] = index;
    m.added.push_back(std::move(token));
  }
  for (std::size_t i = 0; i < m.added.size(); ++i) {
    // Later entries with the same content replace earlier ones (HF keeps one per content).
    if (m.added_by_id.at(m.added_by_content.at(m.added[i].content)) != i) continue;
    auto& matcher = m.added[i].normalized ? m.normalized_matcher : m.raw_matcher;
    matcher.add(m.added[i].content, static_cast<std::uint32_t>(i));
  }
}

void parse_post_processor(const json& p, const std::string& path, tokenizer_model& m) {
  if (p.is_null()) return;
  const std::string type = get_string(p, "type", path);
  if (type == "ByteLevel") return;  // offsets only; ids unchanged
  if (type == "Sequence") {
    const json* list = member(p, "processors");
    if (!list || !list->is_array()) bad(errc::invalid_config, path + ".processors", "must be a list");
    for (std::size_t i = 0; i < list->size(); ++i)
      parse_post_processor((*list)[i], path + ".processors[" + std::to_string(i) + "]", m);
    return;
  }
  if (type == "TemplateProcessing") {
    const json* single = member(p, "single");
    if (!single || !single->is_array()) bad(errc::invalid_config, path + ".single", "must be a list");
    const json* specials = member(p, "special_tokens");
    bool seen_sequence = false;
    std::vector<std::int32_t> before, after;
    for (std::size_t i = 0; i < single->size(); ++i) {
      const std::string field = path + ".single[" + std::to_string(i) + "]";
      const json& piece = (*single)[i];
      if (const json* seq = member(piece, "Sequence")) {
        if (get_string(*seq, "id", field + ".Sequence") != "A")
          bad(errc::invalid_config, field + ".Sequence.id", "a single-sequence template can only use A");
        seen_sequence = true;
      } else if (const json* special = member(piece, "SpecialToken")) {
        const std::string name = get_string(*special, "id", field + ".SpecialToken");
        const json* entry = specials ? member(*specials, name.c_str()) : nullptr;
        if (!entry) bad(errc::invalid_config, path + ".special_tokens", "has no entry '" + name + "'");
        const json* ids = member(*entry, "ids");
        if (!ids || !ids->is_array())
          bad(errc::invalid_config, path + ".special_tokens[\"" + name + "\"].ids", "must be a list of ids");
        for (std::size_t k = 0; k < ids->size(); ++k)
          (seen_sequence ? after : before)
              .push_back(to_id((*ids)[k], path + ".special_tokens[\"" + name + "\"].ids[" + std::to_string(k) + "]"));
      } else {
        bad(errc::invalid_config, field, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    // A Sequence of processors applies them one after the other: each wraps the previous output.
    m.post_prefix.insert(m.post_prefix.begin(), before.begin(), before.end());
    m.post_suffix.insert(m.post_suffix.end(), after.begin(), after.end());
    return;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto token_of = [&](const char* key) {
      const json* pair = member(p, key);
      if (!pair || !pair->is_array() || pair->size() != 2 || !(*pair)[0].is_string())
        bad(errc::invalid_config, path + "." + key, "must be [token, id]");
      return to_id((*pair)[1], path + "." + key + "[1]");
    };
    m.post_prefix.insert(m.post_prefix.begin(), token_of("cls"));
    m.post_suffix.push_back(token_of("sep"));
    return;
  }
  bad(errc::unsupported, path + ".type", "post-processor '" + type + "' is not supported");
}

void parse_decoder(const json& d, const std::string& path, tokenizer_model& m) {
  if (d.is_null()) return;
  const std::string type = get_string(d, "type", path);
  if (type == "ByteLevel") {
    m.decoder = decoder_kind::byte_level;
    return;
  }
  if (type == "Sequence") {
    const json* list = member(d, "decoders");
    if (!list || !list->is_array()) bad(errc::invalid_config, path + ".decoders", "must be a list");
    for (std::size_t i = 0; i < list->size(); ++i)
      parse_decoder((*list)[i], path + ".decoders[" + std::to_string(i) + "]", m);
    return;
  }
  bad(errc::unsupported, path + ".type", "decoder '" + type + "' is not supported (only ByteLevel)");
}

}  // namespace

expected<tokenizer_model> parse_tokenizer_json(std::string_view json_text, const std::string& file) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    return fail(errc::parse_error, file, ": not valid JSON: ", e.what());
  }
  if (!doc.is_object()) return fail(errc::parse_error, file, ": the top level must be a JSON object");
  tokenizer_model m;
  m.file = file;
  try {
    if (const json* model = member(doc, "model"))
      parse_model(*model, m);
    else
      bad(errc::invalid_config, "model", "is missing");
    if (const json* n = member(doc, "normalizer")) parse_normalizer(*n, "normalizer");
    if (const json* p = member(doc, "pre_tokenizer")) parse_pre_tokenizer(*p, "pre_tokenizer", m);
    if (const json* a = member(doc, "added_tokens")) parse_added_tokens(*a, m);
    if (const json* p = member(doc, "post_processor")) parse_post_processor(*p, "post_processor", m);
    if (const json* d = member(doc, "decoder")) parse_decoder(*d, "decoder", m);
    for (const char* unsupported : {"truncation", "padding"}) {
      const json* v = member(doc, unsupported);
      if (v && !v->is_null()) bad(errc::unsupported, unsupported, "must be null (not supported)");
    }
  } catch (const field_problem& p) {
    return fail(p.code, file, ": ", p.field, ": ", p.what);
  }
  m.vocab_size = static_cast<std::int32_t>(m.vocab_r.size());
  for (const auto& t : m.added) m.vocab_size = std::max(m.vocab_size, t.id + 1);
  return m;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Public API.

namespace {

expected<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::io_error, path, ": cannot open");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return fail(errc::io_error, path, ": read failed");
  return buffer.str();
}

// A tokenizer_config.json token entry: "text" or {"content": "text", ...}.
expected<std::optional<std::string>> config_token(const nlohmann::json& config, const char* key,
                                                  const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::optional<std::string>{};
  if (it->is_string()) return std::optional<std::string>{it->get<std::string>()};
  if (it->is_object()) {
    const auto content = it->find("content");
    if (content != it->end() && content->is_string()) return std::optional<std::string>{content->get<std::string>()};
  }
  return fail(errc::invalid_config, file, ": ", key, ": must be a string or {\"content\": string}");
}

}  // namespace

expected<tokenizer> tokenizer::parse(std::string_view json_text, const std::string& name) {
  auto m = detail::parse_tokenizer_json(json_text, name);
  if (!m) return std::move(m).err();
  tokenizer t;
  t.model_ = std::make_shared<const detail::tokenizer_model>(std::move(*m));
  return t;
}

expected<tokenizer> tokenizer::load(const std::string& tokenizer_json) {
  auto text = read_file(tokenizer_json);
  if (!text) return std::move(text).err();
  return parse(*text, tokenizer_json);
}

expected<tokenizer> tokenizer::from_model_dir(const std::string& dir) {
  const std::string json_path = (std::filesystem::path(dir) / "tokenizer.json").string();
  auto text = read_file(json_path);
  if (!text) return std::move(text).err();
  auto m = detail::parse_tokenizer_json(*text, json_path);
  if (!m) return std::move(m).err();

  const std::string config_path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    auto config_text = read_file(config_path);
    if (!config_text) return std::move(config_text).err();
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(*config_text);
    } catch (const nlohmann::json::exception& e) {
      return fail(errc::parse_error, config_path, ": not valid JSON: ", e.what());
    }
    if (!config.is_object()) return fail(errc::parse_error, config_path, ": the top level must be a JSON object");
    auto bos = config_token(config, "bos_token", config_path);
    if (!bos) return std::move(bos).err();
    auto eos = config_token(config, "eos_token", config_path);
    if (!eos) return std::move(eos).err();
    m->bos_token = *bos;
    m->eos_token = *eos;
    if (m->bos_token) {
      m->bos_id = m->token_to_id(*m->bos_token);
      if (!m->bos_id)
        return fail(errc::invalid_config, config_path, ": bos_token: '", *m->bos_token, "' is not in ", json_path);
    }
    if (m->eos_token) {
      m->eos_id = m->token_to_id(*m->eos_token);
      if (!m->eos_id)
        return fail(errc::invalid_config, config_path, ": eos_token: '", *m->eos_token, "' is not in ", json_path);
    }
    if (const auto it = config.find("chat_template"); it != config.end() && !it->is_null()) {
      if (!it->is_string())
        return fail(errc::unsupported, config_path, ": chat_template: only a single template string is supported");
      m->chat_template = it->get<std::string>();
    }
    // transformers' LlamaTokenizerFast replaces the post-processor with "bos? $A eos?" built from
    // these flags; DeepSeek-V3's tokenizer relies on it for its BOS.
    const auto add_bos = config.find("add_bos_token");
    const auto add_eos = config.find("add_eos_token");
    const bool has_flags = (add_bos != config.end() && add_bos->is_boolean()) ||
                           (add_eos != config.end() && add_eos->is_boolean());
    if (has_flags) {
      const bool bos_on = add_bos != config.end() && add_bos->is_boolean() && add_bos->get<bool>();
      const bool eos_on = add_eos != config.end() && add_eos->is_boolean() && add_eos->get<bool>();
      if (bos_on && !m->bos_id)
        return fail(errc::invalid_config, config_path, ": add_bos_token is true but bos_token is not set");
      if (eos_on && !m->eos_id)
        return fail(errc::invalid_config, config_path, ": add_eos_token is true but eos_token is not set");
      m->post_prefix.clear();
      m->post_suffix.clear();
      if (bos_on) m->post_prefix.push_back(*m->bos_id);
      if (eos_on) m->post_suffix.push_back(*m->eos_id);
    }
  }
  tokenizer t;
  t.model_ = std::make_shared<const detail::tokenizer_model>(std::move(*m));
  return t;
}

std::vector<std::int32_t> tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = model_->post_prefix;
  if (detail::is_valid_utf8(text)) {
    model_->encode(text, ids);
  } else {
    const std::string valid = detail::to_valid_utf8(text);
    model_->encode(valid, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), model_->post_suffix.begin(), model_->post_suffix.end());
  return ids;
}

std::string tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  bool first = true;
  std::string token;
  for (const auto id : ids) {
    token.clear();
    if (!model_->token_bytes(id, skip_special_tokens, token)) continue;
    // Without a decoder HF joins the tokens with spaces.
    if (model_->decoder == detail::decoder_kind::none && !first) bytes.push_back(' ');
    bytes += token;
    first = false;
  }
  return detail::to_valid_utf8(bytes);
}

tokenizer::stream_decoder::stream_decoder(std::shared_ptr<const detail::tokenizer_model> model,
                                          bool skip_special_tokens)
    : model_(std::move(model)), skip_special_tokens_(skip_special_tokens) {}

std::string tokenizer::stream_decoder::push(std::int32_t id) {
  const bool had_output = started_;
  std::string token;
  if (!model_->token_bytes(id, skip_special_tokens_, token)) return {};
  if (model_->decoder == detail::decoder_kind::none && had_output) pending_.push_back(' ');
  pending_ += token;
  started_ = true;
  const std::size_t hold = detail::incomplete_tail_length(pending_);
  std::string complete = detail::to_valid_utf8(std::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return complete;
}

std::string tokenizer::stream_decoder::finish() {
  std::string rest = detail::to_valid_utf8(pending_);
  pending_.clear();
  started_ = false;
  return rest;
}

tokenizer::stream_decoder tokenizer::make_stream_decoder(bool skip_special_tokens) const {
  return stream_decoder(model_, skip_special_tokens);
}

std::int32_t tokenizer::vocab_size() const { return model_->vocab_size; }
std::optional<std::int32_t> tokenizer::token_to_id(std::string_view token) const { return model_->token_to_id(token); }
std::optional<std::string> tokenizer::id_to_token(std::int32_t id) const { return model_->id_to_token(id); }
bool tokenizer::is_special(std::int32_t id) const { return model_->is_special(id); }
std::optional<std::int32_t> tokenizer::bos_id() const { return model_->bos_id; }
std::optional<std::string> tokenizer::bos_token() const { return model_->bos_token; }
std::optional<std::int32_t> tokenizer::eos_id() const { return model_->eos_id; }
std::optional<std::string> tokenizer::eos_token() const { return model_->eos_token; }
std::optional<std::string> tokenizer::chat_template() const { return model_->chat_template; }

}  // namespace afd::text
