// Tensor tables of the supported architectures (Llama family, Qwen2).
#include "model/arch.h"

#include <algorithm>
#include <set>

namespace llmc {

std::string layer_tensor_name(int64_t layer, const char* suffix) { return str_cat("blk.", layer, ".", suffix); }

namespace {

struct LayerRow {
  const char* suffix;
  TensorRole role;
  bool qwen2_only;
  // shape of layer l's tensor from the config: {rows, cols} (cols = 0 -> 1-D of length rows)
  int64_t (*rows)(const ModelConfig&, int64_t l);
  int64_t (*cols)(const ModelConfig&, int64_t l);
};

int64_t q_dim(const ModelConfig& c, int64_t l) { return c.heads(l) * c.head_dim; }
int64_t kv_dim(const ModelConfig& c, int64_t l) { return c.kv_heads(l) * c.head_dim; }
int64_t dim(const ModelConfig& c, int64_t) { return c.dim; }
int64_t hidden(const ModelConfig& c, int64_t l) { return c.hidden(l); }
int64_t none(const ModelConfig&, int64_t) { return 0; }

const LayerRow kLayerRows[] = {
    {"attn_norm.weight", TensorRole::kNorm, false, dim, none},
    {"attn_q.weight", TensorRole::kLinear, false, q_dim, dim},
    {"attn_k.weight", TensorRole::kLinear, false, kv_dim, dim},
    {"attn_v.weight", TensorRole::kLinear, false, kv_dim, dim},
    {"attn_q.bias", TensorRole::kBias, true, q_dim, none},
    {"attn_k.bias", TensorRole::kBias, true, kv_dim, none},
    {"attn_v.bias", TensorRole::kBias, true, kv_dim, none},
    {"attn_output.weight", TensorRole::kLinear, false, dim, q_dim},
    {"ffn_norm.weight", TensorRole::kNorm, false, dim, none},
    {"ffn_gate.weight", TensorRole::kLinear, false, hidden, dim},
    {"ffn_up.weight", TensorRole::kLinear, false, hidden, dim},
    {"ffn_down.weight", TensorRole::kLinear, false, dim, hidden},
};

Shape shape_of(int64_t rows, int64_t cols) { return cols == 0 ? Shape{{rows}} : Shape{{rows, cols}}; }

// Per-layer widths (structured pruning): n_layers entries each, every layer's heads a positive
// multiple of its kv heads, and the scalar fields equal to the largest entry.
Result<void> validate_layer_widths(const ModelConfig& c) {
  struct Row {
    const char* name;
    const std::vector<int64_t>* per_layer;
    int64_t scalar;
    int64_t max;
  };
  const Row rows[] = {{"layer_n_heads", &c.layer_n_heads, c.n_heads, 4096},
                      {"layer_n_kv_heads", &c.layer_n_kv_heads, c.n_kv_heads, 4096},
                      {"layer_hidden_dim", &c.layer_hidden_dim, c.hidden_dim, 8 << 20}};
  for (const Row& row : rows) {
    const auto& v = *row.per_layer;
    if (v.empty()) continue;
    if (static_cast<int64_t>(v.size()) != c.n_layers)
      return make_error(ErrorCode::kFormat, "config ", row.name, " has ", v.size(), " entries for ", c.n_layers,
                        " layers");
    for (size_t l = 0; l < v.size(); ++l)
      if (v[l] <= 0 || v[l] > row.max)
        return make_error(ErrorCode::kFormat, "config ", row.name, "[", l, "] = ", v[l], " is out of range");
    if (*std::max_element(v.begin(), v.end()) != row.scalar)
      return make_error(ErrorCode::kFormat, "config ", row.name, ": the largest entry ",
                        *std::max_element(v.begin(), v.end()), " differs from the scalar value ", row.scalar);
  }
  for (int64_t l = 0; l < c.n_layers; ++l)
    if (c.kv_heads(l) > c.heads(l) || c.heads(l) % c.kv_heads(l) != 0)
      return make_error(ErrorCode::kFormat, "config: layer ", l, " has ", c.heads(l), " heads, not a multiple of its ",
                        c.kv_heads(l), " kv heads");
  return {};
}

}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  out.push_back({"token_embd.weight", Shape{{c.vocab_size, c.dim}}, TensorRole::kEmbedding});
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (const auto& row : kLayerRows) {
      if (row.qwen2_only && !c.attn_qkv_bias) continue;
      out.push_back({layer_tensor_name(l, row.suffix), shape_of(row.rows(c, l), row.cols(c, l)), row.role});
    }
  out.push_back({"output_norm.weight", Shape{{c.dim}}, TensorRole::kNorm});
  if (!c.tied_embeddings) out.push_back({"output.weight", Shape{{c.vocab_size, c.dim}}, TensorRole::kOutput});
  return out;
}

Result<void> validate_config(const ModelConfig& c) {
  constexpr int64_t kMaxDim = 1 << 20;  // generous upper bounds that reject absurd headers
  auto bad = [](const char* what, int64_t v) {
    return make_error(ErrorCode::kFormat, "config ", what, " = ", v, " is out of range");
  };
  if (c.dim <= 0 || c.dim > kMaxDim) return bad("dim", c.dim);
  if (c.hidden_dim <= 0 || c.hidden_dim > 8 * kMaxDim) return bad("hidden_dim", c.hidden_dim);
  if (c.n_layers <= 0 || c.n_layers > 4096) return bad("n_layers", c.n_layers);
  if (c.n_heads <= 0 || c.n_heads > 4096) return bad("n_heads", c.n_heads);
  if (c.n_kv_heads <= 0 || c.n_kv_heads > c.n_heads) return bad("n_kv_heads", c.n_kv_heads);
  // With per-layer head counts the largest heads and kv heads may come from different layers.
  if (c.layer_n_heads.empty() && c.layer_n_kv_heads.empty() && c.n_heads % c.n_kv_heads != 0)
    return make_error(ErrorCode::kFormat, "n_heads ", c.n_heads, " is not a multiple of n_kv_heads ", c.n_kv_heads);
  if (c.head_dim <= 0 || c.head_dim > 65536 || c.head_dim % 2 != 0) return bad("head_dim", c.head_dim);
  LLMC_TRY(validate_layer_widths(c));
  if (c.vocab_size <= 0 || c.vocab_size > (1 << 24)) return bad("vocab_size", c.vocab_size);
  if (c.context_length < 0 || c.context_length > (1 << 24)) return bad("context_length", c.context_length);
  if (!(c.norm_eps > 0.0f && c.norm_eps < 1.0f))
    return make_error(ErrorCode::kFormat, "config norm_eps = ", c.norm_eps, " is out of range");
  if (!(c.rope_theta > 0.0f)) return make_error(ErrorCode::kFormat, "config rope_theta must be positive");
  return {};
}

Result<void> validate_model(const Model& model) {
  LLMC_TRY(validate_config(model.config));
  std::set<std::string> expected;
  for (const auto& spec : expected_tensors(model.config)) {
    expected.insert(spec.name);
    const Tensor* t = model.find(spec.name);
    if (!t) return make_error(ErrorCode::kShape, "missing tensor '", spec.name, "'");
    if (!(t->shape == spec.shape))
      return make_error(ErrorCode::kShape, "tensor '", spec.name, "' has shape ", t->shape.str(), ", expected ",
                        spec.shape.str());
  }
  for (const auto& t : model.tensors())
    if (!expected.count(t.name)) return make_error(ErrorCode::kShape, "unexpected tensor '", t.name, "'");
  return {};
}

bool counts_for_bpw(TensorRole role) {
  return role == TensorRole::kLinear || role == TensorRole::kEmbedding || role == TensorRole::kOutput;
}

TensorRole tensor_role(const std::string& name) {
  if (name == "token_embd.weight") return TensorRole::kEmbedding;
  if (name == "output.weight") return TensorRole::kOutput;
  auto ends = [&](const char* s) {
    const std::string suf(s);
    return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (ends("norm.weight")) return TensorRole::kNorm;
  if (ends(".bias")) return TensorRole::kBias;
  return TensorRole::kLinear;
}

}  // namespace llmc
