// The CPU forward pass for the Llama family and Qwen2: RMSNorm, RoPE, GQA attention over an f32
// KV cache, SwiGLU FFN, optional q/k/v biases, tied or untied output; batched prefill and decode.
#include "runtime/runtime.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <vector>

#include "core/sparse.h"
#include "kernels/cpu/kernels.h"
#include "model/arch.h"
#include "runtime/runq_emulation.h"

namespace llmc {
namespace {

constexpr int64_t kMaxBatch = 256;  // tokens per prefill chunk (bounds activation memory)
constexpr int64_t kDefaultContextCap = 4096;
constexpr size_t kMaxCacheFloats = size_t{8} << 30;  // 32 GiB per K or V: refuse rather than die

// Uninitialised float storage: KV cache pages are only touched when positions are written.
struct FloatBuffer {
  std::unique_ptr<float[]> data;
  size_t size = 0;
  void allocate(size_t n) {
    data.reset(new float[n]);
    size = n;
  }
  float* get() { return data.get(); }
  const float* get() const { return data.get(); }
};

// The O(dim) operations of the forward pass: the production kernels, or llama2.c runq.c's float32
// arithmetic when emulating runq.c (RuntimeOptions::activation_q8_group).
struct ForwardOps {
  void (*rmsnorm)(const float* x, const float* weight, int64_t n, float eps, float* out);
  void (*rope)(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* inv_freq, RopeStyle style);
  void (*silu_mul)(float* gate, const float* up, int64_t n);
  void (*attention)(const float* q, const float* k_cache, const float* v_cache, int64_t n_pos,
                    const kernels::AttentionShape& s, float* scratch, float* out, bool parallel);
};
constexpr ForwardOps kKernelOps{kernels::rmsnorm, kernels::rope, kernels::silu_mul, kernels::attention};
constexpr ForwardOps kRunqOps{runq::rmsnorm, runq::rope, runq::silu_mul, runq::attention};

// Where the sparse kernel beats the dense one of the same value dtype at decode (one token),
// measured with bench/bench_sparse_matvec on 2048 x 5632, f16 values, AVX2, 1 thread (fastest of
// 60; docs/runtime.md): dense 1.42 ms; 50 % bitmask 3.5 ms, 70 % 3.9 ms, 2:4 5.5-9.4 ms; 97 % CSR
// 0.32 ms. So only very sparse unstructured weights (the CSR regime) keep the sparse kernel, and
// n:m never does (kSparseMaxNmDensity = 0); others are expanded to Dense once at load.
constexpr double kSparseMinUnstructuredSparsity = 0.94;
constexpr double kSparseMaxNmDensity = 0.0;

bool sparse_kernel_pays(const Tensor& t, const SparseEncoding& s) {
  if (s.pattern == SparsePattern::kNM) return static_cast<double>(s.n) / s.m <= kSparseMaxNmDensity;
  const double sparsity = t.numel() == 0 ? 1.0 : 1.0 - static_cast<double>(s.nnz) / static_cast<double>(t.numel());
  return sparsity >= kSparseMinUnstructuredSparsity;
}

struct LayerWeights {
  const Tensor* wq;
  const Tensor* wk;
  const Tensor* wv;
  const Tensor* wo;
  const Tensor* gate;
  const Tensor* up;
  const Tensor* down;
  std::vector<float> attn_norm, ffn_norm;  // [dim]
  std::vector<float> bq, bk, bv;           // empty without biases
};

class TransformerRuntime final : public Runtime {
 public:
  TransformerRuntime(const Model& model, const RuntimeOptions& options, int64_t max_context)
      : model_(model),
        c_(model.config),
        threads_(options.threads),
        max_context_(max_context),
        act_group_(options.activation_q8_group) {}

  Result<void> init();
  Result<void> forward(std::span<const int32_t> tokens, int64_t pos, float* logits, bool all_logits) override;
  Result<void> copy_cache_from(const Runtime& other, int64_t n_positions) override;
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t max_context() const override { return max_context_; }
  uint64_t weight_bytes_per_token() const override { return weight_bytes_; }

 private:
  // Y[n, rows] = X[n, cols] · Wᵀ; under runq.c emulation with int8 activations and int32 group sums.
  void linear(const Tensor& w, const float* x, int64_t n, float* y) {
    if (act_group_ > 0)
      runq::linear(w, x, n, act_group_, y);
    else
      kernels::linear(w, x, n, y);
  }
  Result<void> check_runq_emulation() const;
  const Tensor* kernel_weight(const Tensor* t);
  void forward_chunk(const int32_t* ids, int64_t n, int64_t pos, float* logits, bool all_logits);
  float* k_cache(int64_t layer, int64_t pos) { return k_cache_.get() + (layer * max_context_ + pos) * kv_dim_; }
  float* v_cache(int64_t layer, int64_t pos) { return v_cache_.get() + (layer * max_context_ + pos) * kv_dim_; }

  const Model& model_;
  ModelConfig c_;
  int threads_;
  int64_t max_context_;
  int64_t act_group_;
  ForwardOps ops_ = kKernelOps;
  int64_t q_dim_ = 0, kv_dim_ = 0;
  std::vector<LayerWeights> layers_;
  std::deque<Tensor> densified_;  // Sparse weights expanded to Dense where sparse kernels do not pay
  const Tensor* embedding_ = nullptr;
  const Tensor* output_ = nullptr;
  std::vector<float> output_norm_;
  std::vector<float> inv_freq_;
  uint64_t weight_bytes_ = 0;
  FloatBuffer k_cache_, v_cache_;  // [layers, max_context, kv_dim]
  // Activations for one chunk of up to kMaxBatch tokens.
  std::vector<float> x_, xb_, xb2_, q_, k_, v_, att_, hb_, hb2_;
};

// The tensor the kernels use for weight t: t itself, or a Dense copy when t is Sparse with Dense
// values at a sparsity where the sparse kernel is slower than the dense one.
const Tensor* TransformerRuntime::kernel_weight(const Tensor* t) {
  const auto* s = std::get_if<SparseEncoding>(&t->encoding->node);
  if (!s || sparse_kernel_pays(*t, *s)) return t;
  const auto* values = std::get_if<DenseEncoding>(&s->values->node);
  if (!values) return t;  // Quant values: expanding would multiply the memory; keep the sparse kernel
  densified_.push_back(make_dense(t->name, t->shape, t->to_f32(), values->dtype));
  return &densified_.back();
}

Result<void> TransformerRuntime::init() {
  LLMC_TRY(validate_model(model_));
  if (c_.norm != NormKind::kRmsNorm)
    return make_error(ErrorCode::kUnsupported, "runtime: only RMSNorm models are supported");
  if (c_.activation != Activation::kSilu)
    return make_error(ErrorCode::kUnsupported, "runtime: only SiLU-gated (SwiGLU) FFNs are supported");
  q_dim_ = c_.n_heads * c_.head_dim;
  kv_dim_ = c_.n_kv_heads * c_.head_dim;
  auto decode = [&](const std::string& name) { return model_.get(name).to_f32(); };
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    auto t = [&](const char* s) { return &model_.get(layer_tensor_name(l, s)); };
    LayerWeights w{t("attn_q.weight"),
                   t("attn_k.weight"),
                   t("attn_v.weight"),
                   t("attn_output.weight"),
                   t("ffn_gate.weight"),
                   t("ffn_up.weight"),
                   t("ffn_down.weight"),
                   decode(layer_tensor_name(l, "attn_norm.weight")),
                   decode(layer_tensor_name(l, "ffn_norm.weight")),
                   {},
                   {},
                   {}};
    if (c_.attn_qkv_bias) {
      w.bq = decode(layer_tensor_name(l, "attn_q.bias"));
      w.bk = decode(layer_tensor_name(l, "attn_k.bias"));
      w.bv = decode(layer_tensor_name(l, "attn_v.bias"));
    }
    for (const Tensor** lin : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate, &w.up, &w.down}) {
      *lin = kernel_weight(*lin);
      weight_bytes_ += (*lin)->encoded_bytes();
    }
    layers_.push_back(std::move(w));
  }
  embedding_ = &model_.get("token_embd.weight");
  output_ = c_.tied_embeddings ? embedding_ : kernel_weight(&model_.get("output.weight"));
  output_norm_ = decode("output_norm.weight");
  weight_bytes_ += output_->encoded_bytes() + embedding_->encoded_bytes() / static_cast<uint64_t>(c_.vocab_size);
  inv_freq_ = kernels::rope_inv_freq(c_.head_dim, c_.rope_theta, c_.rope_scaling);
  if (act_group_ > 0) {
    LLMC_TRY(check_runq_emulation());
    ops_ = kRunqOps;
    inv_freq_ = runq::rope_freq(c_.head_dim, c_.rope_theta);
  }

  const size_t cache = static_cast<size_t>(c_.n_layers * max_context_ * kv_dim_);
  if (cache > kMaxCacheFloats)
    return make_error(ErrorCode::kInvalidArgument, "runtime: a KV cache of ", c_.n_layers, " layers x ", max_context_,
                      " positions x ", kv_dim_, " floats (x2) is too large; lower max_context");
  k_cache_.allocate(cache);
  v_cache_.allocate(cache);
  const auto b = static_cast<size_t>(kMaxBatch);
  x_.resize(b * c_.dim);
  xb_.resize(b * std::max(c_.dim, q_dim_));
  xb2_.resize(b * c_.dim);
  q_.resize(b * q_dim_);
  k_.resize(b * kv_dim_);
  v_.resize(b * kv_dim_);
  att_.resize(b * q_dim_);
  hb_.resize(b * c_.hidden_dim);
  hb2_.resize(b * c_.hidden_dim);
  return {};
}

// runq.c runs Llama models without biases or RoPE scaling, interleaved RoPE, every matrix
// (the classifier included) Q8 in groups of GS; the emulation accepts exactly those.
Result<void> TransformerRuntime::check_runq_emulation() const {
  if (c_.attn_qkv_bias || c_.rope_style != RopeStyle::kInterleaved || c_.rope_scaling.type != RopeScalingType::kNone)
    return make_error(ErrorCode::kUnsupported,
                      "runtime: llama2.c runq.c emulation needs a Llama model with interleaved, unscaled RoPE and no "
                      "biases");
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    const LayerWeights& w = layers_[l];
    for (const Tensor* lin : {w.wq, w.wk, w.wv, w.wo, w.gate, w.up, w.down})
      LLMC_TRY(runq::check_linear(*lin, act_group_, lin->name));
  }
  return runq::check_linear(*output_, act_group_, output_->name);
}

Result<void> TransformerRuntime::forward(std::span<const int32_t> tokens, int64_t pos, float* logits, bool all_logits) {
  const auto n = static_cast<int64_t>(tokens.size());
  if (pos < 0 || pos + n > max_context_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: positions [", pos, ", ", pos + n,
                      ") exceed the context of ", max_context_);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c_.vocab_size)
      return make_error(ErrorCode::kInvalidArgument, "runtime: token id ", tokens[i], " at index ", i,
                        " is outside the vocabulary [0, ", c_.vocab_size, ")");
  kernels::set_num_threads(threads_);
  for (int64_t start = 0; start < n; start += kMaxBatch) {
    const int64_t m = std::min(kMaxBatch, n - start);
    const bool last = start + m == n;
    float* out = nullptr;
    if (logits && all_logits) out = logits + start * c_.vocab_size;
    if (logits && !all_logits && last) out = logits;
    forward_chunk(tokens.data() + start, m, pos + start, out, all_logits);
  }
  return {};
}

// x: [n, dim] residual stream; positions pos..pos+n-1.
void TransformerRuntime::forward_chunk(const int32_t* ids, int64_t n, int64_t pos, float* logits, bool all_logits) {
  const int64_t dim = c_.dim;
  for (int64_t t = 0; t < n; ++t) embedding_->rows_to_f32(ids[t], ids[t] + 1, x_.data() + t * dim);
  const kernels::AttentionShape shape{c_.n_heads, c_.n_kv_heads, c_.head_dim, kv_dim_};
  const int threads = kernels::num_threads();
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    const LayerWeights& w = layers_[l];
    for (int64_t t = 0; t < n; ++t) ops_.rmsnorm(&x_[t * dim], w.attn_norm.data(), dim, c_.norm_eps, &xb_[t * dim]);
    linear(*w.wq, xb_.data(), n, q_.data());
    linear(*w.wk, xb_.data(), n, k_.data());
    linear(*w.wv, xb_.data(), n, v_.data());
    for (int64_t t = 0; t < n; ++t) {
      float* q = &q_[t * q_dim_];
      float* k = &k_[t * kv_dim_];
      float* v = &v_[t * kv_dim_];
      if (c_.attn_qkv_bias) {
        for (int64_t i = 0; i < q_dim_; ++i) q[i] += w.bq[i];
        for (int64_t i = 0; i < kv_dim_; ++i) k[i] += w.bk[i];
        for (int64_t i = 0; i < kv_dim_; ++i) v[i] += w.bv[i];
      }
      ops_.rope(q, c_.n_heads, c_.head_dim, pos + t, inv_freq_.data(), c_.rope_style);
      ops_.rope(k, c_.n_kv_heads, c_.head_dim, pos + t, inv_freq_.data(), c_.rope_style);
      std::memcpy(k_cache(l, pos + t), k, sizeof(float) * kv_dim_);
      std::memcpy(v_cache(l, pos + t), v, sizeof(float) * kv_dim_);
    }
    if (n == 1) {
      thread_local std::vector<float> scratch;
      scratch.resize(static_cast<size_t>(c_.n_heads * (pos + 1)));
      ops_.attention(q_.data(), k_cache(l, 0), v_cache(l, 0), pos + 1, shape, scratch.data(), att_.data(), true);
    } else {
      // One token per iteration, all its heads on one thread: each output has one writer.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int64_t t = 0; t < n; ++t) {
        thread_local std::vector<float> scratch;
        scratch.resize(static_cast<size_t>(c_.n_heads * (pos + t + 1)));
        ops_.attention(&q_[t * q_dim_], k_cache(l, 0), v_cache(l, 0), pos + t + 1, shape, scratch.data(),
                       &att_[t * q_dim_], false);
      }
    }
    linear(*w.wo, att_.data(), n, xb2_.data());
    for (int64_t i = 0; i < n * dim; ++i) x_[i] += xb2_[i];

    for (int64_t t = 0; t < n; ++t) ops_.rmsnorm(&x_[t * dim], w.ffn_norm.data(), dim, c_.norm_eps, &xb_[t * dim]);
    linear(*w.gate, xb_.data(), n, hb_.data());
    linear(*w.up, xb_.data(), n, hb2_.data());
    for (int64_t t = 0; t < n; ++t) ops_.silu_mul(&hb_[t * c_.hidden_dim], &hb2_[t * c_.hidden_dim], c_.hidden_dim);
    linear(*w.down, hb_.data(), n, xb2_.data());
    for (int64_t i = 0; i < n * dim; ++i) x_[i] += xb2_[i];
  }
  if (!logits) return;
  if (all_logits) {
    for (int64_t t = 0; t < n; ++t) ops_.rmsnorm(&x_[t * dim], output_norm_.data(), dim, c_.norm_eps, &xb_[t * dim]);
    linear(*output_, xb_.data(), n, logits);
  } else {
    ops_.rmsnorm(&x_[(n - 1) * dim], output_norm_.data(), dim, c_.norm_eps, xb_.data());
    linear(*output_, xb_.data(), 1, logits);
  }
}

Result<void> TransformerRuntime::copy_cache_from(const Runtime& other, int64_t n_positions) {
  const auto* o = dynamic_cast<const TransformerRuntime*>(&other);
  if (!o || &o->model_ != &model_ || o->max_context_ != max_context_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: copy_cache_from needs a runtime of the same model");
  if (n_positions < 0 || n_positions > max_context_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: cannot copy ", n_positions, " positions");
  const size_t count = static_cast<size_t>(n_positions * kv_dim_);
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    const size_t off = static_cast<size_t>(l * max_context_ * kv_dim_);
    std::memcpy(k_cache_.get() + off, o->k_cache_.get() + off, count * sizeof(float));
    std::memcpy(v_cache_.get() + off, o->v_cache_.get() + off, count * sizeof(float));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Runtime>> Runtime::create(const Model& model, const RuntimeOptions& options) {
  if (options.threads < 0) return make_error(ErrorCode::kInvalidArgument, "runtime: threads must be >= 0");
  if (options.activation_q8_group < 0)
    return make_error(ErrorCode::kInvalidArgument, "runtime: activation_q8_group must be >= 0");
  if (options.max_context < 0) return make_error(ErrorCode::kInvalidArgument, "runtime: max_context must be >= 0");
  int64_t ctx = options.max_context;
  if (ctx == 0)
    ctx = model.config.context_length > 0 ? std::min(model.config.context_length, kDefaultContextCap)
                                          : kDefaultContextCap;
  if (ctx > (1 << 20)) return make_error(ErrorCode::kInvalidArgument, "runtime: max_context ", ctx, " is too large");
  auto rt = std::make_unique<TransformerRuntime>(model, options, ctx);
  LLMC_TRY(rt->init());
  return std::unique_ptr<Runtime>(std::move(rt));
}

}  // namespace llmc
