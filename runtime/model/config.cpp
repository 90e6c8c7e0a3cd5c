// config.json parsing: strict on types and ranges, lenient on fields afd does not use.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/model/checkpoint.hpp"
#include "runtime/model/config.hpp"

namespace afd::model {
namespace {

using json = nlohmann::json;

// nlohmann reports a byte offset; users want line and column.
std::pair<std::size_t, std::size_t> line_and_column(std::string_view text, std::size_t byte) {
  std::size_t line = 1, column = 1;
  const std::size_t end = std::min(byte > 0 ? byte - 1 : 0, text.size());
  for (std::size_t i = 0; i < end; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

const char* type_name(const json& v) {
  return v.type_name();
}

// Reads the text-model fields from `obj`; `where` is the object's path for messages
// ("" at top level, "text_config." under step3_vl).
class field_reader {
 public:
  field_reader(const json& obj, std::string source, std::string where)
      : obj_(obj), source_(std::move(source)), where_(std::move(where)) {}

  error bad(const std::string& field, const std::string& why) const {
    return fail(errc::invalid_config, source_, ": field '", where_, field, "' ", why);
  }

  // Integer field; `fallback` nullopt means required.
  expected<std::int64_t> integer(const std::string& field, std::optional<std::int64_t> fallback,
                                 bool allow_zero = true) const {
    auto it = obj_.find(field);
    if (it == obj_.end() || it->is_null()) {
      if (fallback) return *fallback;
      return bad(field, "is missing");
    }
    if (!it->is_number_integer())
      return bad(field, std::string("must be an integer, got ") + type_name(*it) + " " + it->dump());
    std::int64_t v = 0;
    if (it->is_number_unsigned()) {
      const auto u = it->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return bad(field, "is too large: " + it->dump());
      v = static_cast<std::int64_t>(u);
    } else {
      v = it->get<std::int64_t>();
    }
    if (v < 0) return bad(field, "must not be negative, got " + std::to_string(v));
    if (!allow_zero && v == 0) return bad(field, "must be positive, got 0");
    return v;
  }

  expected<double> number(const std::string& field, double fallback) const {
    auto it = obj_.find(field);
    if (it == obj_.end() || it->is_null()) return fallback;
    if (!it->is_number())
      return bad(field, std::string("must be a number, got ") + type_name(*it) + " " + it->dump());
    const double v = it->get<double>();
    if (!(v > 0.0)) return bad(field, "must be positive, got " + it->dump());
    return v;
  }

  expected<bool> boolean(const std::string& field, bool fallback) const {
    auto it = obj_.find(field);
    if (it == obj_.end() || it->is_null()) return fallback;
    if (!it->is_boolean())
      return bad(field, std::string("must be true or false, got ") + type_name(*it) + " " + it->dump());
    return it->get<bool>();
  }

  // moe_layers_enum: "4,5,6" or [4, 5, 6]; absent means every layer but 0.
  expected<std::vector<bool>> moe_layers(std::int64_t layers) const {
    const std::string field = "moe_layers_enum";
    std::vector<bool> out(static_cast<std::size_t>(layers), false);
    auto it = obj_.find(field);
    if (it == obj_.end() || it->is_null()) {
      for (std::int64_t i = 1; i < layers; ++i) out[static_cast<std::size_t>(i)] = true;
      return out;
    }
    std::vector<std::int64_t> indices;
    if (it->is_string()) {
      const std::string s = it->get<std::string>();
      std::size_t pos = 0;
      bool all_blank = std::all_of(s.begin(), s.end(), [](unsigned char ch) { return std::isspace(ch); });
      while (!all_blank && pos <= s.size()) {
        std::size_t comma = s.find(',', pos);
        if (comma == std::string::npos) comma = s.size();
        std::string item = s.substr(pos, comma - pos);
        const auto first = item.find_first_not_of(" \t\n\r");
        const auto last = item.find_last_not_of(" \t\n\r");
        item = first == std::string::npos ? std::string() : item.substr(first, last - first + 1);
        if (item.empty() || item.size() > 18 ||
            !std::all_of(item.begin(), item.end(), [](unsigned char ch) { return std::isdigit(ch); }))
          return bad(field, "has a non-integer entry '" + item + "' in \"" + s + "\"");
        indices.push_back(std::stoll(item));
        pos = comma + 1;
      }
    } else if (it->is_array()) {
      for (const auto& e : *it) {
        if (!e.is_number_integer()) return bad(field, "must list integers, got " + e.dump());
        if (e.is_number_unsigned() &&
            e.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          return bad(field, "has an entry out of range: " + e.dump());
        indices.push_back(e.get<std::int64_t>());
      }
    } else {
      return bad(field, std::string("must be a comma-separated string or a list of integers, got ") +
                            type_name(*it));
    }
    for (std::int64_t i : indices) {
      if (i < 0 || i >= layers)
        return bad(field, "names layer " + std::to_string(i) + ", outside [0, " + std::to_string(layers) +
                              ") (num_hidden_layers = " + std::to_string(layers) + ")");
      if (out[static_cast<std::size_t>(i)]) return bad(field, "names layer " + std::to_string(i) + " twice");
      out[static_cast<std::size_t>(i)] = true;
    }
    return out;
  }

 private:
  const json& obj_;
  std::string source_;
  std::string where_;
};

// Reads quantization_config.weight_block_size, if any, from `obj`.
expected<std::optional<std::pair<std::int64_t, std::int64_t>>> block_size(const json& obj,
                                                                          const std::string& source,
                                                                          const std::string& where) {
  std::optional<std::pair<std::int64_t, std::int64_t>> none;
  auto q = obj.find("quantization_config");
  if (q == obj.end() || q->is_null()) return none;
  if (!q->is_object())
    return fail(errc::invalid_config, source, ": field '", where, "quantization_config' must be an object");
  auto b = q->find("weight_block_size");
  if (b == q->end() || b->is_null()) return none;
  if (!b->is_array() || b->size() != 2 || !(*b)[0].is_number_integer() || !(*b)[1].is_number_integer() ||
      (*b)[0].get<std::int64_t>() <= 0 || (*b)[1].get<std::int64_t>() <= 0)
    return fail(errc::invalid_config, source, ": field '", where,
                "quantization_config.weight_block_size' must be [rows, cols] of positive integers, got ",
                b->dump());
  return std::optional{std::pair{(*b)[0].get<std::int64_t>(), (*b)[1].get<std::int64_t>()}};
}

#define AFD_TRY(var, expr)                      \
  auto var##_result = (expr);                   \
  if (!var##_result) return var##_result.err(); \
  auto var = std::move(*var##_result)

}  // namespace

expected<checkpoint_config> parse_checkpoint_config_text(std::string_view text, const std::string& source) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    const auto [line, column] = line_and_column(text, e.byte);
    std::string what = e.what();
    // Keep nlohmann's description, drop its "[json.exception.parse_error.101] " tag.
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    return fail(errc::parse_error, source, ":", line, ":", column, ": not valid JSON (line ", line,
                ", column ", column, "): ", what);
  } catch (const std::exception& e) {
    return fail(errc::parse_error, source, ": not valid JSON: ", e.what());
  }
  if (!root.is_object()) return fail(errc::invalid_config, source, ": the top level must be a JSON object");

  checkpoint_config out;
  auto type = root.find("model_type");
  if (type == root.end()) return fail(errc::invalid_config, source, ": field 'model_type' is missing");
  if (!type->is_string())
    return fail(errc::invalid_config, source, ": field 'model_type' must be a string, got ", type->dump());
  out.model_type = type->get<std::string>();

  const json* text_fields = &root;
  std::string where;
  if (out.model_type == "step3_vl") {
    auto tc = root.find("text_config");
    if (tc == root.end())
      return fail(errc::invalid_config, source, ": field 'text_config' is missing (model_type step3_vl)");
    if (!tc->is_object())
      return fail(errc::invalid_config, source, ": field 'text_config' must be an object, got ", tc->type_name());
    text_fields = &*tc;
    where = "text_config.";
  } else if (out.model_type != "step3_text") {
    return fail(errc::invalid_config, source, ": field 'model_type' is \"", out.model_type,
                "\"; afd runs step3_text and step3_vl");
  }

  const field_reader r(*text_fields, source, where);
  model_config& c = out.model;
  AFD_TRY(hidden, r.integer("hidden_size", std::nullopt, false));
  AFD_TRY(layers, r.integer("num_hidden_layers", std::nullopt, false));
  AFD_TRY(heads, r.integer("num_attention_heads", std::nullopt, false));
  AFD_TRY(groups, r.integer("num_attention_groups", 1, false));
  AFD_TRY(head_dim, r.integer("head_dim", std::nullopt, false));
  AFD_TRY(share_q, r.integer("share_q_dim", std::nullopt, false));
  AFD_TRY(inter, r.integer("intermediate_size", std::nullopt));
  AFD_TRY(experts, r.integer("moe_num_experts", std::nullopt));
  AFD_TRY(top_k, r.integer("moe_top_k", std::nullopt));
  AFD_TRY(moe_inter, r.integer("moe_intermediate_size", std::nullopt));
  AFD_TRY(share_expert, r.integer("share_expert_dim", std::nullopt));
  AFD_TRY(vocab, r.integer("vocab_size", std::nullopt, false));
  // HF configs spell it both ways; Step-3's uses the singular.
  const bool plural = text_fields->contains("max_position_embeddings") && !text_fields->contains("max_position_embedding");
  AFD_TRY(max_pos, r.integer(plural ? "max_position_embeddings" : "max_position_embedding", 65536, false));
  AFD_TRY(eps, r.number("rms_norm_eps", 1e-5));
  AFD_TRY(theta, r.number("rope_theta", 500000.0));
  AFD_TRY(norm_w, r.boolean("norm_expert_weight", false));
  AFD_TRY(moe, r.moe_layers(layers));

  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_attention_groups = groups;
  c.head_dim = head_dim;
  c.share_q_dim = share_q;
  c.intermediate_size = inter;
  c.moe_num_experts = experts;
  c.moe_top_k = top_k;
  c.moe_intermediate_size = moe_inter;
  c.share_expert_dim = share_expert;
  c.vocab_size = vocab;
  c.max_position_embedding = max_pos;
  c.rms_norm_eps = eps;
  c.rope_theta = theta;
  c.norm_expert_weight = norm_w;
  c.moe_layers = std::move(moe);

  if (std::string why = validate(c); !why.empty())
    return fail(errc::invalid_config, source, ": ", where.empty() ? "" : "in text_config: ", why);

  // The FP8 layout may sit at the top level or beside the text fields.
  AFD_TRY(block, block_size(*text_fields, source, where));
  if (!block && text_fields != &root) {
    AFD_TRY(top_block, block_size(root, source, ""));
    block = top_block;
  }
  out.weight_block_size = block;
  return out;
}

expected<checkpoint_config> parse_checkpoint_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::io_error, "cannot open config file ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return fail(errc::io_error, "cannot read config file ", path);
  return parse_checkpoint_config_text(ss.str(), path);
}

expected<model_config> parse_config_text(std::string_view json_text, const std::string& source) {
  auto c = parse_checkpoint_config_text(json_text, source);
  if (!c) return c.err();
  return std::move(c->model);
}

expected<model_config> parse_config_file(const std::string& path) {
  auto c = parse_checkpoint_config_file(path);
  if (!c) return c.err();
  return std::move(c->model);
}

}  // namespace afd::model
