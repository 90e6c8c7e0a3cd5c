#include "runtime/engine/model_weights.hpp"

#include <string>
#include <utility>

#include "runtime/model/checkpoint.hpp"

namespace afd::engine {

namespace {

std::string layer_prefix(std::int64_t i) { return "model.layers." + std::to_string(i) + "."; }

}  // namespace

model_weights::~model_weights() = default;

/// Turns checkpoint tensors into views: zero-copy where the stored type is one the kernels read
/// (f32, bf16, f16 without block scales), converted to owned f32 otherwise.
struct model_weights::loader {
  model_weights& w;
  const model::checkpoint& ckpt;
  volatile unsigned char sink = 0;

  /// Reads one byte per page of a mapped range, so that the first step does not pay the page
  /// faults and its latency reflects compute.
  void touch(const std::byte* data, std::size_t bytes) {
    unsigned char acc = 0;
    for (std::size_t i = 0; i < bytes; i += 4096) acc ^= static_cast<unsigned char>(data[i]);
    sink = sink ^ acc;
  }

  const model::tensor_info* find(const std::string& name, error& err) {
    const auto* t = ckpt.find(name);
    if (t == nullptr)
      err = fail(errc::missing_tensor, ckpt.directory(), ": tensor ", name, " is not in the checkpoint");
    return t;
  }

  /// Sub-tensors [first, first + count) along dimension 0 of `name`, viewed as a [rows, cols]
  /// matrix (cols = the last dimension).
  expected<kernels::weight_view> matrix(const std::string& name, std::int64_t first = 0,
                                             std::int64_t count = -1) {
    error err;
    const auto* t = find(name, err);
    if (!t) return err;
    if (t->shape.empty()) return fail(errc::shape_mismatch, ckpt.directory(), ": tensor ", name, " is a scalar");
    const std::int64_t dim0 = t->shape[0];
    if (count < 0) count = dim0 - first;
    if (first < 0 || first + count > dim0)
      return fail(errc::out_of_range, ckpt.directory(), ": tensor ", name, " has ", dim0,
                  " entries along dimension 0, asked for [", first, ", ", first + count, ")");
    const std::int64_t cols = t->shape.back();
    const std::int64_t per_entry = dim0 == 0 ? 0 : t->numel() / dim0;
    const std::int64_t rows = count * per_entry / (cols == 0 ? 1 : cols);
    const bool viewable = t->scale_inv == nullptr &&
                          (t->type == dtype::f32 || t->type == dtype::bf16 || t->type == dtype::f16);
    if (viewable) {
      const auto* base = t->data + static_cast<std::size_t>(first * per_entry) * size_of(t->type);
      touch(base, static_cast<std::size_t>(count * per_entry) * size_of(t->type));
      return kernels::weight_view{t->type, base, rows, cols};
    }
    auto data = ckpt.load_f32(name, first, count);
    if (!data) return std::move(data).err();
    w.owned_.push_back(std::move(*data));
    return kernels::weight_view{dtype::f32, w.owned_.back().data(), rows, cols};
  }

  expected<std::vector<float>> vector(const std::string& name) { return ckpt.load_f32(name); }

  expected<swiglu_weights> mlp(const std::string& prefix, std::int64_t expert = -1) {
    swiglu_weights s;
    const std::int64_t first = expert < 0 ? 0 : expert;
    const std::int64_t count = expert < 0 ? -1 : 1;
    auto g = matrix(prefix + "gate_proj.weight", first, count);
    if (!g) return std::move(g).err();
    auto u = matrix(prefix + "up_proj.weight", first, count);
    if (!u) return std::move(u).err();
    auto d = matrix(prefix + "down_proj.weight", first, count);
    if (!d) return std::move(d).err();
    s.gate = *g;
    s.up = *u;
    s.down = *d;
    return s;
  }

  expected<void> attention_layer(std::int64_t i, attention_weights& a) {
    const std::string p = layer_prefix(i);
    auto in = vector(p + "input_layernorm.weight");
    if (!in) return std::move(in).err();
    auto post = vector(p + "post_attention_layernorm.weight");
    if (!post) return std::move(post).err();
    auto inter = vector(p + "self_attn.inter_norm.weight");
    if (!inter) return std::move(inter).err();
    a.input_norm = std::move(*in);
    a.post_norm = std::move(*post);
    a.inter_norm = std::move(*inter);
    struct named {
      const char* name;
      kernels::weight_view* view;
    };
    for (named n : {named{"self_attn.q_proj.weight", &a.q_proj}, named{"self_attn.k_proj.weight", &a.k_proj},
                    named{"self_attn.v_proj.weight", &a.v_proj}, named{"self_attn.wq.weight", &a.wq},
                    named{"self_attn.o_proj.weight", &a.o_proj}}) {
      auto m = matrix(p + n.name);
      if (!m) return std::move(m).err();
      *n.view = *m;
    }
    if (w.config_.is_moe_layer(i)) {
      auto r = matrix(p + "moe.gate.weight");
      if (!r) return std::move(r).err();
      a.router = *r;
    }
    return {};
  }
};

expected<std::shared_ptr<const model_weights>> model_weights::load(const std::string& dir,
                                                                   const weight_selection& selection) {
  auto ckpt = model::checkpoint::open(dir);
  if (!ckpt) return std::move(ckpt).err();
  return load(std::make_shared<const model::checkpoint>(std::move(*ckpt)), selection);
}

expected<std::shared_ptr<const model_weights>> model_weights::load(std::shared_ptr<const model::checkpoint> ckpt,
                                                                   const weight_selection& selection) {
  if (!ckpt) return fail(errc::invalid_argument, "model_weights::load: no checkpoint");
  std::shared_ptr<model_weights> w(new model_weights());
  w->checkpoint_ = ckpt;
  w->config_ = ckpt->config();
  const model_config& c = w->config_;
  loader l{*w, *ckpt};
  const auto layers = static_cast<std::size_t>(c.num_hidden_layers);
  w->attention_.resize(layers);
  w->ffn_.resize(layers);

  if (selection.attention) {
    w->has_attention_ = true;
    auto e = l.matrix("model.embed_tokens.weight");
    if (!e) return std::move(e).err();
    w->embedding_ = *e;
    auto h = l.matrix("lm_head.weight");
    if (!h) return std::move(h).err();
    w->lm_head_ = *h;
    auto n = l.vector("model.norm.weight");
    if (!n) return std::move(n).err();
    w->final_norm_ = std::move(*n);
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
      auto ok = l.attention_layer(i, w->attention_[static_cast<std::size_t>(i)]);
      if (!ok) return ok.err();
    }
  }

  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    ffn_weights& f = w->ffn_[static_cast<std::size_t>(i)];
    f.moe = c.is_moe_layer(i);
    const std::string p = layer_prefix(i);
    if (!f.moe) {
      if (selection.loads_shared(i)) {
        auto s = l.mlp(p + "mlp.");
        if (!s) return std::move(s).err();
        f.shared = *s;
      }
      continue;
    }
    f.experts.resize(static_cast<std::size_t>(c.moe_num_experts));
    if (selection.loads_shared(i) && c.share_expert_dim > 0) {
      auto s = l.mlp(p + "share_expert.");
      if (!s) return std::move(s).err();
      f.shared = *s;
    }
    std::vector<std::int32_t> wanted;
    if (!selection.experts) {
      for (std::int32_t e = 0; e < c.moe_num_experts; ++e) wanted.push_back(e);
    } else if (static_cast<std::size_t>(i) < selection.experts->size()) {
      wanted = (*selection.experts)[static_cast<std::size_t>(i)];
    }
    for (std::int32_t e : wanted) {
      if (e < 0 || e >= c.moe_num_experts)
        return fail(errc::invalid_argument, "model_weights::load: expert ", e, " of layer ", i,
                    " is outside [0, ", c.moe_num_experts, ")");
      auto s = l.mlp(p + "moe.", e);
      if (!s) return std::move(s).err();
      f.experts[static_cast<std::size_t>(e)] = *s;
    }
  }
  return std::shared_ptr<const model_weights>(std::move(w));
}

}  // namespace afd::engine
