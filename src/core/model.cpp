// Model IR helpers.
#include "core/model.h"

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
