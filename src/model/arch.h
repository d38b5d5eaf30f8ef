// Architecture descriptions: canonical tensor names (GGUF scheme) and expected shapes per family.
#pragma once

#include <string>
#include <vector>

#include "core/model.h"

namespace llmc {

// Canonical per-layer names are "blk.N.<suffix>", e.g. blk.3.attn_q.weight; globals are
// token_embd.weight, output_norm.weight and output.weight (absent when embeddings are tied).
std::string layer_tensor_name(int64_t layer, const char* suffix);

enum class TensorRole : uint8_t { kEmbedding, kNorm, kLinear, kBias, kOutput };

struct TensorSpec {
  std::string name;
  Shape shape;
  TensorRole role;
};

// Every tensor the family needs, in canonical order, with its shape.
std::vector<TensorSpec> expected_tensors(const ModelConfig& config);

// Checks the config for impossible values (zero/negative dims, heads not dividing, ...).
Result<void> validate_config(const ModelConfig& config);

// Checks that exactly the expected tensors are present with the expected shapes.
Result<void> validate_model(const Model& model);

// True for weights that count towards bits-per-weight: linear layers, embeddings, output.
bool counts_for_bpw(TensorRole role);
// Role of a canonical tensor name (by suffix).
TensorRole tensor_role(const std::string& name);

}  // namespace llmc
