// Random-weight models: the shape table and a counter-based N(0, sigma) fill written straight
// into the target dtype.
#include "model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/log.h"
#include "model/arch.h"

namespace llmc {

namespace {

ModelConfig llama_config(int64_t dim, int64_t hidden, int64_t layers, int64_t heads, int64_t kv_heads, int64_t vocab,
                         int64_t ctx, float theta, bool tied, RopeStyle rope) {
  ModelConfig c;
  c.family = ModelFamily::kLlama;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = dim / heads;
  c.vocab_size = vocab;
  c.context_length = ctx;
  c.norm = NormKind::kRmsNorm;
  c.norm_eps = 1e-5f;
  c.rope_theta = theta;
  c.rope_style = rope;
  c.activation = Activation::kSilu;
  c.tied_embeddings = tied;
  return c;
}

}  // namespace

const std::vector<SynthShape>& synth_shapes() {
  // dim, hidden, layers, heads, kv heads, vocab, context, rope theta, tied embeddings, rope pairing
  static const std::vector<SynthShape> kShapes = {
      {"stories260k", "llama2.c stories260K.bin header",
       llama_config(64, 172, 5, 8, 4, 512, 512, 10000.0f, true, RopeStyle::kInterleaved)},
      {"smollm2-135m", "HuggingFaceTB/SmolLM2-135M config.json",
       llama_config(576, 1536, 30, 9, 3, 49152, 8192, 100000.0f, true, RopeStyle::kNeox)},
      {"tinyllama-1.1b", "TinyLlama/TinyLlama-1.1B config.json",
       llama_config(2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, false, RopeStyle::kNeox)},
      {"llama2-7b", "meta-llama/Llama-2-7b-hf config.json",
       llama_config(4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, false, RopeStyle::kNeox)},
  };
  return kShapes;
}

const SynthShape* find_synth_shape(std::string_view name) {
  for (const SynthShape& s : synth_shapes())
    if (name == s.name) return &s;
  return nullptr;
}

namespace {

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr float kTwoPi = 6.28318530717958647692f;
constexpr int64_t kChunk = 1 << 16;  // elements per parallel work item

// Fills n elements of a dense buffer in `dtype`; element i = stddev * normal(key, i), or 1 for norms.
void fill(uint8_t* out, DType dtype, int64_t n, uint64_t key, float stddev, bool ones) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t end = std::min(n, (ch + 1) * kChunk);
    for (int64_t i = ch * kChunk; i < end; ++i) {
      const float v = ones ? 1.0f : stddev * synth_standard_normal(key, static_cast<uint64_t>(i));
      switch (dtype) {
        case DType::kF16: {
          const uint16_t h = f32_to_f16(v);
          std::memcpy(out + i * 2, &h, 2);
          break;
        }
        case DType::kBF16: {
          const uint16_t h = f32_to_bf16(v);
          std::memcpy(out + i * 2, &h, 2);
          break;
        }
        default: std::memcpy(out + i * 4, &v, 4); break;
      }
    }
  }
}

}  // namespace

float synth_standard_normal(uint64_t key, uint64_t index) {
  // Box-Muller on two 32-bit halves of one hashed counter; u1 in (0, 1] keeps log finite.
  const uint64_t h = mix64(key + mix64(index + 0x9e3779b97f4a7c15ull));
  const float u1 = (static_cast<float>(h >> 40) + 1.0f) * (1.0f / 16777216.0f);
  const float u2 = static_cast<float>(h & 0xffffffu) * (1.0f / 16777216.0f);
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(kTwoPi * u2);
}

uint64_t synth_tensor_key(uint64_t seed, std::string_view tensor_name) {
  uint64_t fnv = 0xcbf29ce484222325ull;  // FNV-1a 64 of the name
  for (char ch : tensor_name) fnv = (fnv ^ static_cast<uint8_t>(ch)) * 0x100000001b3ull;
  return mix64(mix64(seed) ^ fnv);
}

int64_t count_parameters(const ModelConfig& config) {
  int64_t n = 0;
  for (const TensorSpec& spec : expected_tensors(config)) n += spec.shape.numel();
  return n;
}

Result<Model> synth_model(const ModelConfig& config, const SynthOptions& options) {
  LLMC_TRY(validate_config(config));
  if (options.dtype != DType::kF32 && options.dtype != DType::kF16 && options.dtype != DType::kBF16)
    return make_error(ErrorCode::kInvalidArgument, "synth dtype must be f32, f16 or bf16, not ",
                      dtype_name(options.dtype));
  if (!(options.stddev >= 0.0f) || !std::isfinite(options.stddev))
    return make_error(ErrorCode::kInvalidArgument, "synth stddev must be a finite non-negative number");
  Model model;
  model.config = config;
  const std::vector<TensorSpec> specs = expected_tensors(config);
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    const int64_t n = spec.shape.numel();
    std::vector<uint8_t> data(static_cast<size_t>(n) * dtype_bytes(options.dtype));
    fill(data.data(), options.dtype, n, synth_tensor_key(options.seed, spec.name), options.stddev,
         spec.role == TensorRole::kNorm);
    Tensor t;
    t.name = spec.name;
    t.shape = spec.shape;
    t.encoding = std::make_shared<Encoding>(Encoding{DenseEncoding{options.dtype, Bytes::owned(std::move(data))}});
    LLMC_TRY(model.add(std::move(t)));
    report_progress("synth", static_cast<int64_t>(i + 1), static_cast<int64_t>(specs.size()), "tensors");
  }
  model.metadata["synth.seed"] = std::to_string(options.seed);
  model.metadata["synth.stddev"] = str_cat(options.stddev);
  return model;
}

Result<Model> synth_model(std::string_view shape_name, const SynthOptions& options) {
  const SynthShape* shape = find_synth_shape(shape_name);
  if (!shape) {
    std::string names;
    for (const SynthShape& s : synth_shapes()) names += str_cat(names.empty() ? "" : ", ", s.name);
    return make_error(ErrorCode::kInvalidArgument, "unknown synth shape '", shape_name, "' (known: ", names, ")");
  }
  LLMC_ASSIGN_OR_RETURN(Model model, synth_model(shape->config, options));
  model.metadata["synth.shape"] = shape->name;
  model.metadata["general.name"] = str_cat("synth-", shape->name);
  return model;
}

}  // namespace llmc
