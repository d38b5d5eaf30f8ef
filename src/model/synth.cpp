// Random-weight models: the shape table and a counter-based N(0, sigma) fill written straight
// into the target dtype, vectorized (Highway) with the same bits on every SIMD target.
#include "model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/log.h"
#include "model/arch.h"

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "model/synth.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

// The stream of a key: element i is in block b = i / 16 at j = i % 16. Pair p = 8b + j % 8 hashes
// its counter with SplitMix64, h = mix64(key + (p + 1) · 0x9e3779b97f4a7c15), into two 24-bit
// uniforms u1 = (h >> 40 + 1) / 2^24 in (0, 1] and u2 = (h & 0xffffff) / 2^24 in [0, 1); element
// j < 8 is r · cos θ and j >= 8 is r · sin θ (Box-Muller: r = sqrt(-2 ln u1), θ = 2π u2). ln, sin
// and cos are polynomials evaluated with f32 multiplies, adds and one divide only (no FMA, no
// libm), so every SIMD target and thread count gives the same bits.
#ifndef LLMC_SYNTH_STREAM_CONSTANTS  // this file is compiled once per SIMD target
#define LLMC_SYNTH_STREAM_CONSTANTS
namespace llmc::synth_detail {
constexpr int64_t kBlockElems = 16;
constexpr int64_t kBlockPairs = 8;

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace llmc::synth_detail
#endif

HWY_BEFORE_NAMESPACE();
// Multiplies and adds stay separate roundings on every target (no contraction into FMA).
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif
namespace llmc::synth_detail {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// out[16 · k + j] = scale · element j of block first_block + k, for k < blocks.
void FillNormals(uint64_t key, int64_t first_block, int64_t blocks, float scale, float* out) {
  const hn::CappedTag<float, kBlockPairs> d;
  const hn::RebindToSigned<decltype(d)> di;
  using VF = hn::Vec<decltype(d)>;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  alignas(64) float u1[kBlockPairs], u2[kBlockPairs];
  for (int64_t b = 0; b < blocks; ++b) {
    const uint64_t pair0 = static_cast<uint64_t>(first_block + b) * kBlockPairs;
    for (int64_t k = 0; k < kBlockPairs; ++k) {
      const uint64_t h = mix64(key + (pair0 + static_cast<uint64_t>(k) + 1) * 0x9e3779b97f4a7c15ull);
      u1[k] = (static_cast<float>(h >> 40) + 1.0f) * (1.0f / 16777216.0f);
      u2[k] = static_cast<float>(h & 0xffffffu) * (1.0f / 16777216.0f);
    }
    float* o = out + b * kBlockElems;
    for (int64_t k = 0; k < kBlockPairs; k += lanes) {
      // ln u1 = e ln 2 + ln m, m in [sqrt(1/2), sqrt(2)): ln m = 2 atanh(s), s = (m - 1) / (m + 1),
      // |s| < 0.172, by its series to s^9 (relative error < 1e-9).
      const VF a = hn::Load(d, u1 + k);
      const auto bits = hn::BitCast(di, a);
      VF m = hn::BitCast(d, hn::Or(hn::And(bits, hn::Set(di, 0x007fffff)), hn::Set(di, 0x3f800000)));
      VF e = hn::ConvertTo(d, hn::Sub(hn::ShiftRight<23>(bits), hn::Set(di, 127)));
      const auto big = hn::Gt(m, hn::Set(d, 1.41421356f));
      m = hn::IfThenElse(big, hn::Mul(m, hn::Set(d, 0.5f)), m);
      e = hn::IfThenElse(big, hn::Add(e, hn::Set(d, 1.0f)), e);
      const VF sr = hn::Div(hn::Sub(m, hn::Set(d, 1.0f)), hn::Add(m, hn::Set(d, 1.0f)));
      const VF s2 = hn::Mul(sr, sr);
      VF p = hn::Set(d, 2.0f / 9.0f);
      p = hn::Add(hn::Mul(p, s2), hn::Set(d, 2.0f / 7.0f));
      p = hn::Add(hn::Mul(p, s2), hn::Set(d, 2.0f / 5.0f));
      p = hn::Add(hn::Mul(p, s2), hn::Set(d, 2.0f / 3.0f));
      p = hn::Add(hn::Mul(p, s2), hn::Set(d, 2.0f));
      const VF ln = hn::Add(hn::Mul(e, hn::Set(d, 0.693145752f)),  // ln 2 = hi + lo
                            hn::Add(hn::Mul(e, hn::Set(d, 1.42860677e-06f)), hn::Mul(p, sr)));
      const VF r = hn::Sqrt(hn::Mul(ln, hn::Set(d, -2.0f)));
      // θ = 2π (q/4 + f), q = round(4 u2), f in [-1/8, 1/8] exact: sin/cos of x = 2π f in
      // [-π/4, π/4] by Taylor series to x^9 / x^8 (error < 3e-8), then the quadrant's rotation.
      const VF t = hn::Load(d, u2 + k);
      const VF q = hn::Floor(hn::Add(hn::Mul(t, hn::Set(d, 4.0f)), hn::Set(d, 0.5f)));
      const VF x = hn::Mul(hn::Sub(t, hn::Mul(q, hn::Set(d, 0.25f))), hn::Set(d, 6.28318530717958647692f));
      const VF x2 = hn::Mul(x, x);
      VF sn = hn::Set(d, 1.0f / 362880.0f);
      sn = hn::Add(hn::Mul(sn, x2), hn::Set(d, -1.0f / 5040.0f));
      sn = hn::Add(hn::Mul(sn, x2), hn::Set(d, 1.0f / 120.0f));
      sn = hn::Add(hn::Mul(sn, x2), hn::Set(d, -1.0f / 6.0f));
      sn = hn::Mul(hn::Add(hn::Mul(sn, x2), hn::Set(d, 1.0f)), x);
      VF cs = hn::Set(d, 1.0f / 40320.0f);
      cs = hn::Add(hn::Mul(cs, x2), hn::Set(d, -1.0f / 720.0f));
      cs = hn::Add(hn::Mul(cs, x2), hn::Set(d, 1.0f / 24.0f));
      cs = hn::Add(hn::Mul(cs, x2), hn::Set(d, -0.5f));
      cs = hn::Add(hn::Mul(cs, x2), hn::Set(d, 1.0f));
      const auto quadrant = hn::And(hn::ConvertTo(di, q), hn::Set(di, 3));
      const auto odd = hn::RebindMask(d, hn::Eq(hn::And(quadrant, hn::Set(di, 1)), hn::Set(di, 1)));
      const auto cos_neg =
          hn::RebindMask(d, hn::Or(hn::Eq(quadrant, hn::Set(di, 1)), hn::Eq(quadrant, hn::Set(di, 2))));
      const auto sin_neg = hn::RebindMask(d, hn::Gt(quadrant, hn::Set(di, 1)));
      VF c = hn::IfThenElse(odd, sn, cs), sv = hn::IfThenElse(odd, cs, sn);
      c = hn::IfThenElse(cos_neg, hn::Neg(c), c);
      sv = hn::IfThenElse(sin_neg, hn::Neg(sv), sv);
      const VF vs = hn::Set(d, scale);  // applied last: scale · standard normal, one rounding
      hn::StoreU(hn::Mul(hn::Mul(r, c), vs), d, o + k);
      hn::StoreU(hn::Mul(hn::Mul(r, sv), vs), d, o + kBlockPairs + k);
    }
  }
}

// dst[i] = f32_to_f16(src[i]): F16C rounds to nearest even like f32_to_f16; the portable target
// (whose DemoteTo truncates) uses f32_to_f16 itself.
void ToF16(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
#if HWY_TARGET != HWY_EMU128 && HWY_TARGET != HWY_SCALAR
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  for (; i + lanes <= n; i += lanes)
    hn::StoreU(hn::DemoteTo(dh, hn::LoadU(d, src + i)), dh, reinterpret_cast<hwy::float16_t*>(dst + i));
#endif
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::synth_detail
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::synth_detail {
HWY_EXPORT(FillNormals);
HWY_EXPORT(ToF16);
void fill_normals(uint64_t key, int64_t first_block, int64_t blocks, float scale, float* out) {
  HWY_DYNAMIC_DISPATCH(FillNormals)(key, first_block, blocks, scale, out);
}
void to_f16(const float* src, int64_t n, uint16_t* dst) { HWY_DYNAMIC_DISPATCH(ToF16)(src, n, dst); }
}  // namespace llmc::synth_detail

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
       llama_config(576, 1536, 30, 9, 3, 49152, 8192, 100000.0f, true, RopeStyle::kInterleaved)},
      {"tinyllama-1.1b", "TinyLlama/TinyLlama-1.1B config.json",
       llama_config(2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, false, RopeStyle::kInterleaved)},
      {"llama2-7b", "meta-llama/Llama-2-7b-hf config.json",
       llama_config(4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, false, RopeStyle::kInterleaved)},
  };
  return kShapes;
}

const SynthShape* find_synth_shape(std::string_view name) {
  for (const SynthShape& s : synth_shapes())
    if (name == s.name) return &s;
  return nullptr;
}

namespace {

using synth_detail::kBlockElems;
using synth_detail::mix64;

constexpr int64_t kChunk = 1 << 16;  // elements per parallel work item (a multiple of kBlockElems)

// Fills n elements of a dense buffer in `dtype`: element i = stddev * synth_standard_normal(key, i),
// or 1 for norms.
void fill(uint8_t* out, DType dtype, int64_t n, uint64_t key, float stddev, bool ones) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    thread_local std::vector<float> values;
    const int64_t begin = ch * kChunk, count = std::min(n, begin + kChunk) - begin;
    values.resize(static_cast<size_t>((count + kBlockElems - 1) / kBlockElems * kBlockElems));
    if (ones)
      std::fill(values.begin(), values.end(), 1.0f);
    else
      synth_detail::fill_normals(key, begin / kBlockElems, static_cast<int64_t>(values.size()) / kBlockElems, stddev,
                                 values.data());
    switch (dtype) {
      case DType::kF16: synth_detail::to_f16(values.data(), count, reinterpret_cast<uint16_t*>(out) + begin); break;
      case DType::kBF16: {
        auto* dst = reinterpret_cast<uint16_t*>(out) + begin;
        for (int64_t i = 0; i < count; ++i) dst[i] = f32_to_bf16(values[static_cast<size_t>(i)]);
        break;
      }
      default: std::memcpy(out + begin * 4, values.data(), static_cast<size_t>(count) * 4); break;
    }
  }
}

}  // namespace

float synth_standard_normal(uint64_t key, uint64_t index) {
  float block[kBlockElems];
  synth_detail::fill_normals(key, static_cast<int64_t>(index / kBlockElems), 1, 1.0f, block);
  return block[index % kBlockElems];
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
#endif  // HWY_ONCE
