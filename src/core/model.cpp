// Model IR helpers.
#include "core/model.h"

#include <algorithm>

namespace llmc {

const char* family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama: return "llama";
    case ModelFamily::kQwen2: return "qwen2";
  }
  return "?";
}

std::optional<ModelFamily> family_from_name(const std::string& name) {
  if (name == "llama") return ModelFamily::kLlama;
  if (name == "qwen2") return ModelFamily::kQwen2;
  return std::nullopt;
}

namespace {

// Stores `widths` as `per_layer` unless all entries are equal; `scalar` becomes the largest entry.
void store_widths(std::vector<int64_t> widths, int64_t& scalar, std::vector<int64_t>& per_layer) {
  per_layer.clear();
  if (widths.empty()) return;
  scalar = *std::max_element(widths.begin(), widths.end());
  if (std::any_of(widths.begin(), widths.end(), [&](int64_t w) { return w != widths.front(); }))
    per_layer = std::move(widths);
}

std::vector<int64_t> expand(const std::vector<int64_t>& per_layer, int64_t scalar, int64_t n_layers) {
  return per_layer.empty() ? std::vector<int64_t>(static_cast<size_t>(std::max<int64_t>(0, n_layers)), scalar)
                           : per_layer;
}

}  // namespace

void ModelConfig::set_layer_widths(std::vector<int64_t> heads, std::vector<int64_t> kv_heads,
                                   std::vector<int64_t> hidden) {
  store_widths(std::move(heads), n_heads, layer_n_heads);
  store_widths(std::move(kv_heads), n_kv_heads, layer_n_kv_heads);
  store_widths(std::move(hidden), hidden_dim, layer_hidden_dim);
}

std::vector<int64_t> ModelConfig::all_heads() const { return expand(layer_n_heads, n_heads, n_layers); }
std::vector<int64_t> ModelConfig::all_kv_heads() const { return expand(layer_n_kv_heads, n_kv_heads, n_layers); }
std::vector<int64_t> ModelConfig::all_hidden() const { return expand(layer_hidden_dim, hidden_dim, n_layers); }

Result<void> Model::add(Tensor t) {
  if (index_.count(t.name)) return make_error(ErrorCode::kFormat, "duplicate tensor name '", t.name, "'");
  index_[t.name] = tensors_.size();
  tensors_.push_back(std::move(t));
  return {};
}

void Model::replace(Tensor t) {
  auto it = index_.find(t.name);
  LLMC_CHECK(it != index_.end(), "replace of unknown tensor");
  tensors_[it->second] = std::move(t);
}

const Tensor* Model::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const Tensor& Model::get(const std::string& name) const {
  const Tensor* t = find(name);
  LLMC_CHECK(t != nullptr, "missing tensor");
  return *t;
}

}  // namespace llmc
