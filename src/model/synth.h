// Random-weight models with the exact shapes and configs of real ones (format and speed tests).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/model.h"

namespace llmc {

// One row of the shape table: a published model's architecture.
struct SynthShape {
  const char* name;
  const char* source;  // where the numbers come from
  ModelConfig config;
};

const std::vector<SynthShape>& synth_shapes();
const SynthShape* find_synth_shape(std::string_view name);

struct SynthOptions {
  DType dtype = DType::kF32;  // f32, f16 or bf16
  uint64_t seed = 0;
  float stddev = 0.02f;  // weights ~ N(0, stddev); norm weights are 1
};

// Element `index` of the stream `key`: a standard normal from a counter-based generator, so any
// element can be computed independently (parallel fills are thread-count independent).
float synth_standard_normal(uint64_t key, uint64_t index);
// Stream key of a tensor: mixes the seed with the tensor's name.
uint64_t synth_tensor_key(uint64_t seed, std::string_view tensor_name);

// Builds every tensor of `config` directly in the target dtype (no f32 copy of the model).
Result<Model> synth_model(const ModelConfig& config, const SynthOptions& options);
Result<Model> synth_model(std::string_view shape_name, const SynthOptions& options);

// Logical parameter count of a config (all expected tensors).
int64_t count_parameters(const ModelConfig& config);

}  // namespace llmc
