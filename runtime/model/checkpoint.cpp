// Opening a checkpoint: map every file, reconcile names (VL prefixes, vision tensors, FP8
// scales) with the tensor set the config implies, and refuse anything inconsistent up front.
#include "runtime/model/checkpoint.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "runtime/model/config.hpp"
#include "runtime/model/safetensors.hpp"

namespace afd::model {
namespace {

using json = nlohmann::json;
using shape_t = std::vector<std::int64_t>;

constexpr std::string_view scale_suffix = "_scale_inv";

std::string shape_string(const shape_t& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Names of the language model proper; anything else in a VL checkpoint belongs to vision.
bool is_language_model_name(std::string_view n) {
  return starts_with(n, "model.layers.") || starts_with(n, "model.embed_tokens") || starts_with(n, "model.norm") ||
         starts_with(n, "lm_head");
}

// VL checkpoints may nest the LM: "language_model.model.layers..." or "model.language_model.layers...".
enum class lm_prefix { none, language_model_dot, model_language_model };

std::string canonical_name(lm_prefix p, const std::string& stored) {
  switch (p) {
    case lm_prefix::none: return stored;
    case lm_prefix::language_model_dot:
      if (starts_with(stored, "language_model.")) return stored.substr(std::strlen("language_model."));
      return stored;
    case lm_prefix::model_language_model:
      if (starts_with(stored, "model.language_model.")) return "model." + stored.substr(std::strlen("model.language_model."));
      return stored;
  }
  return stored;
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::int64_t tensor_info::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_tensors(const model_config& c) {
  std::vector<std::pair<std::string, shape_t>> out;
  const std::int64_t h = c.hidden_size;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "self_attn.q_proj.weight", {c.share_q_dim, h}});
    out.push_back({p + "self_attn.k_proj.weight", {c.head_dim, h}});
    out.push_back({p + "self_attn.v_proj.weight", {c.head_dim, h}});
    out.push_back({p + "self_attn.inter_norm.weight", {c.share_q_dim}});
    out.push_back({p + "self_attn.wq.weight", {c.q_width(), c.share_q_dim}});
    out.push_back({p + "self_attn.o_proj.weight", {h, c.q_width()}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
    const bool moe = static_cast<std::size_t>(i) < c.moe_layers.size() && c.moe_layers[static_cast<std::size_t>(i)];
    if (moe) {
      const std::int64_t e = c.moe_num_experts, ie = c.moe_intermediate_size;
      out.push_back({p + "moe.gate.weight", {e, h}});
      out.push_back({p + "moe.gate_proj.weight", {e, ie, h}});
      out.push_back({p + "moe.up_proj.weight", {e, ie, h}});
      out.push_back({p + "moe.down_proj.weight", {e, h, ie}});
      if (c.share_expert_dim > 0) {
        out.push_back({p + "share_expert.gate_proj.weight", {c.share_expert_dim, h}});
        out.push_back({p + "share_expert.up_proj.weight", {c.share_expert_dim, h}});
        out.push_back({p + "share_expert.down_proj.weight", {h, c.share_expert_dim}});
      }
    } else {
      out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, h}});
      out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, h}});
      out.push_back({p + "mlp.down_proj.weight", {h, c.intermediate_size}});
    }
  }
  out.push_back({"model.norm.weight", {h}});
  out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
}

struct checkpoint::impl {
  std::string dir;
  checkpoint_config cfg;
  std::vector<safetensors_file> files;
  // Canonical name -> tensor; node-based so that scale_inv pointers stay valid.
  std::map<std::string, tensor_info, std::less<>> tensors;
  std::vector<std::string> names;  // the model's tensors, in expected_tensors order
};

checkpoint::checkpoint(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
checkpoint::checkpoint(checkpoint&&) noexcept = default;
checkpoint& checkpoint::operator=(checkpoint&&) noexcept = default;
checkpoint::~checkpoint() = default;

const model_config& checkpoint::config() const { return impl_->cfg.model; }
const std::string& checkpoint::directory() const { return impl_->dir; }

const tensor_info* checkpoint::find(std::string_view name) const {
  auto it = impl_->tensors.find(name);
  return it == impl_->tensors.end() ? nullptr : &it->second;
}

std::vector<std::string> checkpoint::tensor_names() const { return impl_->names; }

namespace {

// Reads model.safetensors.index.json: tensor -> file name.
expected<std::map<std::string, std::string>> read_index(const std::string& index_path, const std::string& dir) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return fail(errc::io_error, index_path, ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i + 1 < e.byte && i < text.size(); ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return fail(errc::parse_error, index_path, ":", line, ":", col, ": not valid JSON (line ", line, ", column ",
                col, ")");
  }
  if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object())
    return fail(errc::parse_error, index_path, ": no 'weight_map' object");
  std::map<std::string, std::string> map;
  for (auto it = root["weight_map"].begin(); it != root["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      return fail(errc::parse_error, index_path, ": weight_map entry for tensor '", it.key(), "' is not a file name");
    const std::string file = it.value().get<std::string>();
    if (file.empty() || file.front() == '/' || file.find("..") != std::string::npos)
      return fail(errc::parse_error, index_path, ": weight_map entry for tensor '", it.key(), "' names file '", file,
                  "' outside the checkpoint directory");
    if (!file_exists(dir + "/" + file))
      return fail(errc::io_error, index_path, ": weight_map entry for tensor '", it.key(), "' names file '", file,
                  "', which does not exist in ", dir);
    map[it.key()] = file;
  }
  return map;
}

// Checks an F8 weight's scale tensor and finds the block size.
// Block sizes b with ceil(extent / b) == blocks: an interval [lo, hi] (hi = max when one block).
struct block_interval {
  std::int64_t lo = 1, hi = INT64_MAX;
  bool empty() const { return lo > hi; }
};
block_interval valid_blocks(std::int64_t extent, std::int64_t blocks) {
  if (extent == 0) return blocks == 0 ? block_interval{} : block_interval{1, 0};
  if (blocks < 1 || blocks > extent) return {1, 0};
  block_interval r{ceil_div(extent, blocks), blocks == 1 ? INT64_MAX : (extent - 1) / (blocks - 1)};
  if (!r.empty() && ceil_div(extent, r.lo) != blocks) r.hi = 0;
  return r;
}

// One (rows, cols) block size for all scale tensors: a single tensor with a partial block can be
// ambiguous (4 rows in 2 blocks: 2+2 or 3+1), the checkpoint as a whole rarely is. Picks the
// smallest size every tensor allows.
expected<std::pair<std::int64_t, std::int64_t>> infer_block_size(
    const std::vector<std::tuple<const shape_t*, const shape_t*, std::string>>& pairs) {
  block_interval rows, cols;
  for (const auto& [w, s, where] : pairs) {
    if (s->size() != w->size() || w->empty()) continue;  // attach_scale reports these
    const std::size_t r = w->size();
    block_interval c = valid_blocks((*w)[r - 1], (*s)[r - 1]);
    block_interval rr = r >= 2 ? valid_blocks((*w)[r - 2], (*s)[r - 2]) : block_interval{};
    auto clash = [&](const char* dim, const block_interval& mine, const block_interval& all) {
      return fail(errc::shape_mismatch, where, ": scale shape ", shape_string(*s), " for weight shape ",
                  shape_string(*w), " allows ", dim, " blocks of ", mine.lo, "..",
                  mine.hi == INT64_MAX ? std::string("any") : std::to_string(mine.hi),
                  ", inconsistent with the other scale tensors (", all.lo, "..",
                  all.hi == INT64_MAX ? std::string("any") : std::to_string(all.hi), ")");
    };
    if (c.empty() || rr.empty()) continue;  // attach_scale reports these with their own message
    const block_interval nc{std::max(cols.lo, c.lo), std::min(cols.hi, c.hi)};
    const block_interval nr{std::max(rows.lo, rr.lo), std::min(rows.hi, rr.hi)};
    if (nc.empty()) return clash("column", c, cols);
    if (nr.empty()) return clash("row", rr, rows);
    cols = nc;
    rows = nr;
  }
  return std::pair{rows.lo, cols.lo};
}

expected<void> attach_scale(tensor_info& w, const tensor_info& s, std::pair<std::int64_t, std::int64_t> block,
                            bool from_config) {
  auto where = [&] { return s.file + ": tensor '" + s.name + "'"; };
  if (w.type != dtype::f8_e4m3)
    return fail(errc::dtype_mismatch, where(), ": a scale for '", w.name, "', which is ", to_string(w.type),
                ", not F8_E4M3");
  if (s.type != dtype::f32 && s.type != dtype::bf16 && s.type != dtype::f16)
    return fail(errc::dtype_mismatch, where(), ": scale dtype ", to_string(s.type), " (expected F32 or BF16)");
  const std::size_t r = w.shape.size();
  const bool ok_rank = s.shape.size() == r && r >= 1;
  bool ok = ok_rank;
  for (std::size_t i = 0; ok && i + 2 < r; ++i) ok = s.shape[i] == w.shape[i];
  std::int64_t rows = 1, srows = 1, br = 1, bc = 1;
  const std::int64_t cols = w.shape.empty() ? 0 : w.shape[r - 1];
  const std::int64_t scols = ok ? s.shape[r - 1] : 0;
  if (ok && r >= 2) {
    rows = w.shape[r - 2];
    srows = s.shape[r - 2];
  }
  if (ok) {
    br = r >= 2 ? block.first : 1;
    bc = block.second;
    ok = br > 0 && bc > 0 && ceil_div(rows, br) == srows && ceil_div(cols, bc) == scols;
  }
  if (!ok) {
    const std::string detail = "blocks of " + std::to_string(block.first) + "x" + std::to_string(block.second) +
                               (from_config ? " (quantization_config)" : " (inferred from all scale tensors)");
    return fail(errc::shape_mismatch, where(), ": scale shape ", shape_string(s.shape),
                " is inconsistent with weight '", w.name, "' of shape ", shape_string(w.shape), " (", detail, ")");
  }
  w.scale_inv = &s;
  w.block_rows = br;
  w.block_cols = bc;
  return {};
}

}  // namespace

expected<checkpoint> checkpoint::open(const std::string& dir_in) {
  auto p = std::make_unique<impl>();
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  p->dir = dir;

  auto cfg = parse_checkpoint_config_file(dir + "/config.json");
  if (!cfg) return cfg.err();
  p->cfg = std::move(*cfg);
  const bool vl = p->cfg.model_type == "step3_vl";

  // 1. Map the files; with an index, every tensor must be where the index says.
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;
  bool sharded = file_exists(index_path);
  std::vector<std::string> file_names;
  if (sharded) {
    auto m = read_index(index_path, dir);
    if (!m) return m.err();
    weight_map = std::move(*m);
    std::set<std::string> unique;
    for (const auto& [t, f] : weight_map) unique.insert(f);
    file_names.assign(unique.begin(), unique.end());
  } else {
    if (!file_exists(dir + "/model.safetensors"))
      return fail(errc::io_error, dir, ": neither model.safetensors nor model.safetensors.index.json exists");
    file_names.push_back("model.safetensors");
  }
  struct stored {
    const safetensors_entry* entry;
    std::string file;
  };
  std::map<std::string, stored> all;  // stored name -> entry
  for (const auto& name : file_names) {
    auto f = safetensors_file::open(dir + "/" + name);
    if (!f) return f.err();
    p->files.push_back(std::move(*f));
  }
  for (std::size_t i = 0; i < p->files.size(); ++i) {
    const auto& f = p->files[i];
    for (const auto& e : f.tensors()) {
      if (sharded) {
        auto it = weight_map.find(e.name);
        if (it == weight_map.end())
          return fail(errc::unexpected_tensor, f.path(), ": tensor '", e.name, "' is not listed in ", index_path);
        if (it->second != file_names[i])
          return fail(errc::unexpected_tensor, f.path(), ": tensor '", e.name, "' is here, but ", index_path,
                      " places it in ", it->second);
      }
      if (auto [it, fresh] = all.emplace(e.name, stored{&e, f.path()}); !fresh)
        return fail(errc::unexpected_tensor, f.path(), ": tensor '", e.name, "' also appears in ", it->second.file);
    }
  }
  if (sharded) {
    for (const auto& [t, file] : weight_map)
      if (!all.count(t))
        return fail(errc::missing_tensor, dir + "/" + file, ": tensor '", t, "' is not in this file, though ",
                    index_path, " places it there");
  }

  // 2. One consistent LM prefix (VL checkpoints), stripped.
  std::size_t plain = 0, lm_dot = 0, model_lm = 0;
  for (const auto& [n, s] : all) {
    plain += starts_with(n, "model.layers.") || starts_with(n, "model.embed_tokens.");
    lm_dot += starts_with(n, "language_model.model.");
    model_lm += starts_with(n, "model.language_model.");
  }
  lm_prefix prefix = lm_prefix::none;
  if ((plain > 0) + (lm_dot > 0) + (model_lm > 0) > 1)
    return fail(errc::unexpected_tensor, dir, ": language-model tensors under more than one prefix (",
                plain, " plain 'model.', ", lm_dot, " 'language_model.model.', ", model_lm,
                " 'model.language_model.')");
  if (lm_dot > 0) prefix = lm_prefix::language_model_dot;
  if (model_lm > 0) prefix = lm_prefix::model_language_model;

  // 3. Reconcile with the expected set.
  const auto want = expected_tensors(p->cfg.model);
  std::map<std::string, const shape_t*, std::less<>> want_by_name;
  for (const auto& [n, s] : want) want_by_name[n] = &s;
  std::map<std::string, std::pair<std::string, stored>> scales;  // canonical weight name -> (stored scale name, entry)
  for (const auto& [stored_name, s] : all) {
    const std::string name = canonical_name(prefix, stored_name);
    auto where = [&] { return s.file + ": tensor '" + stored_name + "'"; };
    if (name.size() > scale_suffix.size() && name.ends_with(scale_suffix)) {
      const std::string base = name.substr(0, name.size() - scale_suffix.size());
      if (want_by_name.count(base)) {
        scales.emplace(base, std::pair{stored_name, s});
        continue;
      }
    }
    if (!want_by_name.count(name)) {
      if (vl && !is_language_model_name(name)) continue;  // vision tower / projector
      return fail(errc::unexpected_tensor, where(), ": not a tensor of this model (", p->cfg.model_type, ", ",
                  p->cfg.model.num_hidden_layers, " layers)");
    }
    const shape_t& expect = *want_by_name[name];
    if (!s.entry->type)
      return fail(errc::dtype_mismatch, where(), ": dtype ", s.entry->dtype_name,
                  " is not supported (BF16, F16, F32 or F8_E4M3)");
    if (s.entry->shape != expect)
      return fail(errc::shape_mismatch, where(), ": shape ", shape_string(s.entry->shape), ", expected ",
                  shape_string(expect), " from the config");
    tensor_info t;
    t.name = name;
    t.type = *s.entry->type;
    t.shape = s.entry->shape;
    t.data = s.entry->data;
    t.bytes = s.entry->bytes;
    t.file = s.file;
    p->tensors.emplace(name, std::move(t));
  }
  for (const auto& [n, shape] : want) {
    if (!p->tensors.count(n))
      return fail(errc::missing_tensor, dir, ": tensor '", n, "' ", shape_string(shape), " is missing",
                  prefix == lm_prefix::none ? "" : " (after stripping the language-model prefix)");
    p->names.push_back(n);
  }
  // The FP8 block size: from quantization_config, else inferred from all scale shapes together.
  std::pair<std::int64_t, std::int64_t> block{1, 1};
  if (p->cfg.weight_block_size) block = *p->cfg.weight_block_size;
  if (!p->cfg.weight_block_size && !scales.empty()) {
    std::vector<std::tuple<const shape_t*, const shape_t*, std::string>> pairs;
    for (const auto& [base, named] : scales)
      pairs.emplace_back(&p->tensors.at(base).shape, &named.second.entry->shape,
                         named.second.file + ": tensor '" + named.first + "'");
    auto b = infer_block_size(pairs);
    if (!b) return b.err();
    block = *b;
  }
  for (const auto& [base, named] : scales) {
    const auto& [stored_name, s] = named;
    if (!s.entry->type)
      return fail(errc::dtype_mismatch, s.file, ": tensor '", stored_name, "': scale dtype ", s.entry->dtype_name,
                  " is not supported (F32 or BF16)");
    tensor_info t;
    t.name = base + std::string(scale_suffix);
    t.type = *s.entry->type;
    t.shape = s.entry->shape;
    t.data = s.entry->data;
    t.bytes = s.entry->bytes;
    t.file = s.file;
    auto [it, fresh] = p->tensors.emplace(t.name, std::move(t));
    const std::string stored_copy = stored_name;
    tensor_info named_scale = it->second;
    named_scale.name = stored_copy;  // errors name the tensor as stored
    auto ok = attach_scale(p->tensors.at(base), named_scale, block, p->cfg.weight_block_size.has_value());
    if (!ok) return ok.err();
    p->tensors.at(base).scale_inv = &it->second;
  }
  return checkpoint(std::move(p));
}

expected<std::vector<float>> checkpoint::load_f32(std::string_view name) const {
  const tensor_info* t = find(name);
  if (!t) return fail(errc::missing_tensor, impl_->dir, ": no tensor '", name, "'");
  if (t->shape.empty()) {
    std::vector<float> out(1);
    out[0] = load_as_f32(t->type, t->data, 0);  // scalars are never scaled blocks
    return out;
  }
  return load_f32(name, 0, t->shape[0]);
}

namespace {

// Element i of a possibly unaligned buffer, as f32.
inline float element(dtype type, const std::byte* data, std::size_t i) {
  switch (type) {
    case dtype::f32: {
      float v;
      std::memcpy(&v, data + 4 * i, 4);
      return v;
    }
    case dtype::bf16: {
      std::uint16_t v;
      std::memcpy(&v, data + 2 * i, 2);
      return bf16_to_f32(v);
    }
    case dtype::f16: {
      std::uint16_t v;
      std::memcpy(&v, data + 2 * i, 2);
      return f16_to_f32(v);
    }
    case dtype::f8_e4m3: return fp8_e4m3_to_f32(std::to_integer<std::uint8_t>(data[i]));
  }
  return 0.0f;
}

}  // namespace

expected<std::vector<float>> checkpoint::load_f32(std::string_view name, std::int64_t first, std::int64_t count) const {
  const tensor_info* t = find(name);
  if (!t) return fail(errc::missing_tensor, impl_->dir, ": no tensor '", name, "'");
  if (t->shape.empty()) return fail(errc::out_of_range, t->file, ": tensor '", name, "' is a scalar; it has no rows");
  const std::int64_t dim0 = t->shape[0];
  if (first < 0 || count < 0 || first > dim0 || count > dim0 - first)
    return fail(errc::out_of_range, t->file, ": tensor '", name, "': range [", first, ", ", first + count,
                ") outside dimension 0 of size ", dim0);
  const std::int64_t inner = dim0 > 0 ? t->numel() / dim0 : 0;
  std::vector<float> out(static_cast<std::size_t>(count * inner));
  const std::size_t begin = static_cast<std::size_t>(first * inner);
  if (!t->scale_inv) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = element(t->type, t->data, begin + i);
    return out;
  }
  // Block FP8: view as [matrices, rows, cols] (a 1-D weight is one row).
  const std::size_t r = t->shape.size();
  const std::int64_t cols = t->shape[r - 1];
  const std::int64_t rows = r >= 2 ? t->shape[r - 2] : 1;
  const tensor_info& s = *t->scale_inv;
  const std::int64_t scols = s.shape[r - 1];
  const std::int64_t srows = r >= 2 ? s.shape[r - 2] : 1;
  const std::int64_t total_rows = cols > 0 ? static_cast<std::int64_t>(out.size()) / cols : 0;
  const std::int64_t first_row = cols > 0 ? static_cast<std::int64_t>(begin) / cols : 0;
  std::vector<float> row_scales(static_cast<std::size_t>(scols));
  for (std::int64_t g = 0; g < total_rows; ++g) {
    const std::int64_t row = first_row + g;
    const std::int64_t m = row / rows, rr = row % rows;
    const std::size_t sbase = static_cast<std::size_t>((m * srows + rr / t->block_rows) * scols);
    for (std::int64_t b = 0; b < scols; ++b)
      row_scales[static_cast<std::size_t>(b)] = element(s.type, s.data, sbase + static_cast<std::size_t>(b));
    float* dst = out.data() + g * cols;
    const std::size_t src = static_cast<std::size_t>(row * cols);
    for (std::int64_t c = 0; c < cols; ++c)
      dst[c] = element(dtype::f8_e4m3, t->data, src + static_cast<std::size_t>(c)) *
               row_scales[static_cast<std::size_t>(c / t->block_cols)];
  }
  return out;
}

}  // namespace afd::model
