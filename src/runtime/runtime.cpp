// The CPU forward pass for the Llama family and Qwen2: RMSNorm, RoPE, GQA attention over an f32
// KV cache, SwiGLU FFN, optional q/k/v biases, tied or untied output; batched prefill and decode.
#include "runtime/runtime.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include "core/sparse.h"
#include "formats/file_io.h"
#include "kernels/cpu/kernels.h"
#include "model/arch.h"
#include "runtime/runq_emulation.h"

namespace llmc {
namespace {

constexpr int64_t kMaxBatch = 256;  // tokens per prefill chunk (bounds activation memory)
// Elements of work (values touched or multiply-adds) below which a chunk's per-token steps and
// batched-decode attention stay on one thread: waking threads costs more than they give.
constexpr int64_t kMinParallelWork = 1 << 15;
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
  // Prefill: n tokens at positions [pos, pos + n), their keys and values already cached.
  void (*attention_chunk)(const float* q, const float* k_cache, const float* v_cache, int64_t n, int64_t pos,
                          const kernels::AttentionShape& s, float* out);
};

// Prefill attention token by token through a one-token attention (parallel over tokens).
template <auto kAttention>
void attention_by_token(const float* q, const float* k_cache, const float* v_cache, int64_t n, int64_t pos,
                        const kernels::AttentionShape& s, float* out) {
  const int64_t q_dim = s.n_heads * s.head_dim;
#pragma omp parallel for schedule(dynamic, 1) num_threads(kernels::num_threads())
  for (int64_t t = 0; t < n; ++t) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(s.n_heads * (pos + t + 1)));
    kAttention(&q[t * q_dim], k_cache, v_cache, pos + t + 1, s, scratch.data(), &out[t * q_dim], false);
  }
}

constexpr ForwardOps kKernelOps{kernels::rmsnorm, kernels::rope, kernels::silu_mul, kernels::attention,
                                kernels::attention_chunk};
constexpr ForwardOps kRunqOps{runq::rmsnorm, runq::rope, runq::silu_mul, runq::attention,
                              attention_by_token<runq::attention>};

struct LayerWeights {
  const Tensor* wq;
  const Tensor* wk;
  const Tensor* wv;
  const Tensor* wo;
  const Tensor* gate;
  const Tensor* up;
  const Tensor* down;
  std::vector<float> attn_norm, ffn_norm;           // [dim]
  std::vector<float> bq, bk, bv;                    // empty without biases
  int64_t n_heads = 0, n_kv_heads = 0, hidden = 0;  // this layer's widths (they differ after structured pruning)
};

// The architectures the forward pass runs (after validate_model).
Result<void> check_supported(const Model& model) {
  LLMC_TRY(validate_model(model));
  if (model.config.norm != NormKind::kRmsNorm)
    return make_error(ErrorCode::kUnsupported, "runtime: only RMSNorm models are supported");
  if (model.config.activation != Activation::kSilu)
    return make_error(ErrorCode::kUnsupported, "runtime: only SiLU-gated (SwiGLU) FFNs are supported");
  return {};
}

// Block `l`'s tensors as the model holds them now (norms and biases decoded to f32).
LayerWeights resolve_layer(const Model& model, int64_t l) {
  auto t = [&](const char* s) { return &model.get(layer_tensor_name(l, s)); };
  auto decode = [&](const char* s) { return model.get(layer_tensor_name(l, s)).to_f32(); };
  LayerWeights w{t("attn_q.weight"),
                 t("attn_k.weight"),
                 t("attn_v.weight"),
                 t("attn_output.weight"),
                 t("ffn_gate.weight"),
                 t("ffn_up.weight"),
                 t("ffn_down.weight"),
                 decode("attn_norm.weight"),
                 decode("ffn_norm.weight"),
                 {},
                 {},
                 {},
                 model.config.heads(l),
                 model.config.kv_heads(l),
                 model.config.hidden(l)};
  if (model.config.attn_qkv_bias) {
    w.bq = decode("attn_q.bias");
    w.bk = decode("attn_k.bias");
    w.bv = decode("attn_v.bias");
  }
  return w;
}

// The one implementation of a transformer block (DESIGN.md §5) over a chunk of up to kMaxBatch
// tokens, with its activation scratch; used by Runtime::forward and by BlockRunner.
class BlockForward {
 public:
  void init(const ModelConfig& c, int64_t act_group) {
    c_ = c;
    act_group_ = act_group;
    q_dim_ = c.n_heads * c.head_dim;
    kv_dim_ = c.n_kv_heads * c.head_dim;
    inv_freq_ = kernels::rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling);
    if (act_group > 0) {
      ops_ = kRunqOps;
      inv_freq_ = runq::rope_freq(c.head_dim, c.rope_theta);
    }
    const auto b = static_cast<size_t>(kMaxBatch);
    xb_.resize(b * std::max(c.dim, q_dim_));
    xb2_.resize(b * c.dim);
    q_.resize(b * q_dim_);
    k_.resize(b * kv_dim_);
    v_.resize(b * kv_dim_);
    att_.resize(b * q_dim_);
    hb_.resize(b * c.hidden_dim);
    hb2_.resize(b * c.hidden_dim);
  }
  int64_t max_kv_dim() const { return kv_dim_; }

  // Y[n, rows] = X[n, cols] · Wᵀ; under runq.c emulation with int8 activations and int32 group sums.
  void linear(const Tensor& w, const float* x, int64_t n, float* y) const {
    if (act_group_ > 0)
      runq::linear(w, x, n, act_group_, y);
    else
      kernels::linear(w, x, n, y);
  }

  // x: [n, dim] residual stream at positions pos..pos+n-1, n <= kMaxBatch, updated in place.
  // k_cache, v_cache: this layer's cache [positions, kv_dim]; positions pos..pos+n-1 are written
  // and [0, pos) must hold the earlier tokens' keys and values.
  // inputs_only: stop once the last linear's input was observed (x is then left half-updated).
  // seq_stride > 0: the n tokens are n independent sequences, all at position pos; sequence t's
  // cache starts at k_cache + t * seq_stride (v_cache likewise) (batched decode).
  void layer(const LayerWeights& w, float* x, int64_t n, int64_t pos, float* k_cache, float* v_cache,
             const LinearObserver* observer, bool inputs_only = false, int64_t seq_stride = 0) {
    attn_norm(w, x, n);
    observe(observer, {w.wq, w.wk, w.wv}, xb_.data(), n);
    attention(w, n, pos, k_cache, v_cache, seq_stride, att_.data());
    observe(observer, {w.wo}, att_.data(), n);
    add_linear(*w.wo, att_.data(), n, x);
    ffn_norm(w, x, n);
    observe(observer, {w.gate, w.up}, xb_.data(), n);
    swiglu(w, n, hb_.data());
    observe(observer, {w.down}, hb_.data(), n);
    if (inputs_only) return;
    add_linear(*w.down, hb_.data(), n, x);
  }

  // The same block split at its linear groups (BlockStage); act: this chunk's [n, q_dim] or
  // [n, hidden] activations (kDownInput: may be null, kFinish: null = recompute them from x).
  void stage(const LayerWeights& w, BlockStage s, float* x, int64_t n, int64_t pos, float* k_cache, float* v_cache,
             float* act, const LinearObserver* observer) {
    switch (s) {
      case BlockStage::kAttnInput:
        attn_norm(w, x, n);
        observe(observer, {w.wq, w.wk, w.wv}, xb_.data(), n);
        return;
      case BlockStage::kOutputInput:
        attn_norm(w, x, n);
        attention(w, n, pos, k_cache, v_cache, 0, act);
        observe(observer, {w.wo}, act, n);
        return;
      case BlockStage::kFfnInput:
        add_linear(*w.wo, act, n, x);
        ffn_norm(w, x, n);
        observe(observer, {w.gate, w.up}, xb_.data(), n);
        return;
      case BlockStage::kDownInput:
      case BlockStage::kFinish:
        if (s == BlockStage::kDownInput || act == nullptr) {
          ffn_norm(w, x, n);
          if (act == nullptr) act = hb_.data();
          swiglu(w, n, act);
        }
        if (s == BlockStage::kDownInput)
          observe(observer, {w.down}, act, n);
        else
          add_linear(*w.down, act, n, x);
        return;
    }
  }

  // Runs f(t) for every token of a chunk: the O(dim) per-token steps (norms, RoPE, SwiGLU), split
  // over threads by token when the chunk is long enough (each token is computed by one thread).
  template <class F>
  void for_tokens(int64_t n, const F& f) const {
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (n * c_.dim >= kMinParallelWork)
    for (int64_t t = 0; t < n; ++t) f(t);
  }

  // out [n, dim] = final RMSNorm of x [n, dim].
  void final_norm(const std::vector<float>& weight, const float* x, int64_t n, float* out) const {
    for (int64_t t = 0; t < n; ++t) ops_.rmsnorm(&x[t * c_.dim], weight.data(), c_.dim, c_.norm_eps, &out[t * c_.dim]);
  }

 private:
  static void observe(const LinearObserver* observer, std::initializer_list<const Tensor*> ws, const float* in,
                      int64_t n) {
    if (observer) (*observer)(LinearInput{std::span<const Tensor* const>(ws.begin(), ws.size()), in, n});
  }
  void attn_norm(const LayerWeights& w, const float* x, int64_t n) {
    for_tokens(
        n, [&](int64_t t) { ops_.rmsnorm(&x[t * c_.dim], w.attn_norm.data(), c_.dim, c_.norm_eps, &xb_[t * c_.dim]); });
  }
  void ffn_norm(const LayerWeights& w, const float* x, int64_t n) {
    for_tokens(
        n, [&](int64_t t) { ops_.rmsnorm(&x[t * c_.dim], w.ffn_norm.data(), c_.dim, c_.norm_eps, &xb_[t * c_.dim]); });
  }
  // x[n, dim] += X[n, cols] · Wᵀ
  void add_linear(const Tensor& w, const float* in, int64_t n, float* x) {
    linear(w, in, n, xb2_.data());
    for (int64_t i = 0; i < n * c_.dim; ++i) x[i] += xb2_[i];
  }
  // act[n, hidden] = silu(gate · xb) * (up · xb), xb the FFN norm output.
  void swiglu(const LayerWeights& w, int64_t n, float* act) {
    linear(*w.gate, xb_.data(), n, act);
    linear(*w.up, xb_.data(), n, hb2_.data());
    for_tokens(n, [&](int64_t t) { ops_.silu_mul(&act[t * w.hidden], &hb2_[t * w.hidden], w.hidden); });
  }

  // att[n, q_dim] = attention of the q/k/v projections of xb (the attention norm output); the
  // keys and values are written to the cache first (see layer()).
  void attention(const LayerWeights& w, int64_t n, int64_t pos, float* k_cache, float* v_cache, int64_t seq_stride,
                 float* att) {
    const int64_t q_dim = w.n_heads * c_.head_dim, kv_dim = w.n_kv_heads * c_.head_dim;
    const kernels::AttentionShape shape{w.n_heads, w.n_kv_heads, c_.head_dim, kv_dim};
    linear(*w.wq, xb_.data(), n, q_.data());
    linear(*w.wk, xb_.data(), n, k_.data());
    linear(*w.wv, xb_.data(), n, v_.data());
    for_tokens(n, [&](int64_t t) {
      float* q = &q_[t * q_dim];
      float* k = &k_[t * kv_dim];
      float* v = &v_[t * kv_dim];
      if (c_.attn_qkv_bias) {
        for (int64_t i = 0; i < q_dim; ++i) q[i] += w.bq[i];
        for (int64_t i = 0; i < kv_dim; ++i) k[i] += w.bk[i];
        for (int64_t i = 0; i < kv_dim; ++i) v[i] += w.bv[i];
      }
      const int64_t p = seq_stride > 0 ? pos : pos + t;
      const int64_t slot = seq_stride > 0 ? t * seq_stride + pos * kv_dim : (pos + t) * kv_dim;
      ops_.rope(q, w.n_heads, c_.head_dim, p, inv_freq_.data(), c_.rope_style);
      ops_.rope(k, w.n_kv_heads, c_.head_dim, p, inv_freq_.data(), c_.rope_style);
      std::memcpy(k_cache + slot, k, sizeof(float) * kv_dim);
      std::memcpy(v_cache + slot, v, sizeof(float) * kv_dim);
    });
    if (seq_stride > 0) {
      // One sequence per iteration, all its heads on one thread: each output has one writer.
#pragma omp parallel for schedule(static) \
    num_threads(kernels::num_threads()) if (n * w.n_heads * (pos + 1) * c_.head_dim >= kMinParallelWork)
      for (int64_t t = 0; t < n; ++t) {
        thread_local std::vector<float> scratch;
        scratch.resize(static_cast<size_t>(w.n_heads * (pos + 1)));
        ops_.attention(&q_[t * q_dim], k_cache + t * seq_stride, v_cache + t * seq_stride, pos + 1, shape,
                       scratch.data(), &att[t * q_dim], n == 1);
      }
    } else if (n == 1) {
      thread_local std::vector<float> scratch;
      scratch.resize(static_cast<size_t>(w.n_heads * (pos + 1)));
      ops_.attention(q_.data(), k_cache, v_cache, pos + 1, shape, scratch.data(), att, true);
    } else {
      ops_.attention_chunk(q_.data(), k_cache, v_cache, n, pos, shape, att);
    }
  }

  ModelConfig c_;
  int64_t act_group_ = 0;
  ForwardOps ops_ = kKernelOps;
  int64_t q_dim_ = 0, kv_dim_ = 0;  // the largest over the layers (buffer sizes)
  std::vector<float> inv_freq_;
  // Activations for one chunk of up to kMaxBatch tokens.
  std::vector<float> xb_, xb2_, q_, k_, v_, att_, hb_, hb2_;
};

class TransformerRuntime final : public Runtime {
 public:
  TransformerRuntime(const Model& model, const RuntimeOptions& options, int64_t max_context)
      : model_(model),
        c_(model.config),
        threads_(options.threads),
        max_context_(max_context),
        sequences_(options.sequences),
        act_group_(options.activation_q8_group),
        huge_pages_(options.huge_pages),
        release_pages_(options.release_weight_pages),
        activations_(options.quant_activations) {}

  Result<void> init();
  Result<void> forward(std::span<const int32_t> tokens, int64_t pos, float* logits, bool all_logits) override;
  Result<void> forward_batch(std::span<const int32_t> tokens, int64_t pos, float* logits) override;
  Result<void> copy_cache_from(const Runtime& other, int64_t n_positions) override;
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t max_context() const override { return max_context_; }
  uint64_t weight_bytes_per_token() const override { return weight_bytes_; }

 private:
  Result<void> check_runq_emulation() const;
  Result<void> check_tokens(std::span<const int32_t> tokens) const;
  const Tensor* kernel_weight(const Tensor* t);
  void use_huge_pages() const;
  // batched: the n tokens are n sequences at position pos (forward_batch); otherwise positions
  // pos..pos+n-1 of sequence 0.
  void forward_chunk(const int32_t* ids, int64_t n, int64_t pos, float* logits, bool all_logits, bool batched = false);
  // Layer l's cache [sequences, max_context, kv_dim(l)] starts at cache_offset_[l].
  int64_t seq_stride(int64_t layer) const { return max_context_ * c_.kv_heads(layer) * c_.head_dim; }
  float* k_cache(int64_t layer) { return k_cache_.get() + cache_offset_[layer]; }
  float* v_cache(int64_t layer) { return v_cache_.get() + cache_offset_[layer]; }

  const Model& model_;
  ModelConfig c_;
  int threads_;
  int64_t max_context_;
  int64_t sequences_;
  int64_t act_group_;
  bool huge_pages_;
  bool release_pages_;
  std::optional<kernels::QuantActivations> activations_;
  BlockForward block_;
  std::vector<size_t> cache_offset_;  // [layers + 1] first float of each layer's [max_context, kv_dim] cache
  std::vector<LayerWeights> layers_;
  std::deque<Tensor> densified_;  // Sparse weights expanded to Dense where sparse kernels do not pay
  const Tensor* embedding_ = nullptr;
  const Tensor* output_ = nullptr;
  std::vector<float> output_norm_;
  uint64_t weight_bytes_ = 0;
  FloatBuffer k_cache_, v_cache_;  // per layer [sequences, max_context, that layer's kv_dim]
  std::vector<float> x_, xb_;      // [kMaxBatch, dim] residual stream and final-norm output
};

// The tensor the kernels use for weight t: t itself, or a Dense copy when t is Sparse with Dense
// values below the sparsity where its sparse kernel beats the dense one (kernels::sparse_beats_dense,
// measured per kernel path and value dtype; docs/sparsity.md).
const Tensor* TransformerRuntime::kernel_weight(const Tensor* t) {
  const auto* s = std::get_if<SparseEncoding>(&t->encoding->node);
  if (!s || kernels::sparse_beats_dense(*t)) return t;
  const auto* values = std::get_if<DenseEncoding>(&s->values->node);
  if (!values) return t;  // Quant values: expanding would multiply the memory; keep the sparse kernel
  densified_.push_back(make_dense(t->name, t->shape, t->to_f32(), values->dtype));
  return &densified_.back();
}

// The streamed weights held in heap memory, collapsed into transparent huge pages in place
// (RuntimeOptions::huge_pages; collapse_huge_pages). Decode then pays one TLB walk per 2 MiB instead
// of per 4 KiB (two-level in a virtual machine): synthetic tinyllama-1.1b q4 decode ~1.2x faster.
// Weights in a mapped file stay as they are (the page cache maps part of a file with 2 MiB entries
// itself; copying them out cost seconds for a few percent: docs/runtime.md), and so do models whose
// weights fit the TLB's reach anyway.
void TransformerRuntime::use_huge_pages() const {
  constexpr uint64_t kFromBytes = uint64_t{64} << 20;
  if (weight_bytes_ < kFromBytes) return;
  const auto collapse = [](const Tensor* t) {
    for_each_buffer(*t->encoding, [](const Bytes& b) { collapse_huge_pages(b.data(), b.size()); });
  };
  for (const LayerWeights& w : layers_)
    for (const Tensor* lin : {w.wq, w.wk, w.wv, w.wo, w.gate, w.up, w.down}) collapse(lin);
  collapse(output_);
}

Result<void> TransformerRuntime::init() {
  LLMC_TRY(check_supported(model_));
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    LayerWeights w = resolve_layer(model_, l);
    for (const Tensor** lin : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate, &w.up, &w.down}) {
      *lin = kernel_weight(*lin);
      weight_bytes_ += kernels::decode_read_bytes(**lin);
    }
    layers_.push_back(std::move(w));
  }
  embedding_ = &model_.get("token_embd.weight");
  output_ = c_.tied_embeddings ? embedding_ : kernel_weight(&model_.get("output.weight"));
  output_norm_ = model_.get("output_norm.weight").to_f32();
  weight_bytes_ +=
      kernels::decode_read_bytes(*output_) + embedding_->encoded_bytes() / static_cast<uint64_t>(c_.vocab_size);
  if (huge_pages_) use_huge_pages();
  if (act_group_ > 0) LLMC_TRY(check_runq_emulation());
  block_.init(c_, act_group_);

  cache_offset_.assign(1, 0);
  double cache_floats = 0;
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    cache_floats += static_cast<double>(sequences_) * static_cast<double>(seq_stride(l));
    if (cache_floats > static_cast<double>(kMaxCacheFloats))
      return make_error(ErrorCode::kInvalidArgument, "runtime: a KV cache of ", c_.n_layers, " layers x ", sequences_,
                        " sequences x ", max_context_, " positions x up to ", c_.n_kv_heads * c_.head_dim,
                        " floats (x2) is too large; lower max_context");
    cache_offset_.push_back(cache_offset_.back() + static_cast<size_t>(sequences_ * seq_stride(l)));
  }
  const size_t cache = cache_offset_.back();
  k_cache_.allocate(cache);
  v_cache_.allocate(cache);
  x_.resize(static_cast<size_t>(kMaxBatch * c_.dim));
  xb_.resize(static_cast<size_t>(kMaxBatch * c_.dim));
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

Result<void> TransformerRuntime::check_tokens(std::span<const int32_t> tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= c_.vocab_size)
      return make_error(ErrorCode::kInvalidArgument, "runtime: token id ", tokens[i], " at index ", i,
                        " is outside the vocabulary [0, ", c_.vocab_size, ")");
  return {};
}

Result<void> TransformerRuntime::forward(std::span<const int32_t> tokens, int64_t pos, float* logits, bool all_logits) {
  const auto n = static_cast<int64_t>(tokens.size());
  if (pos < 0 || pos + n > max_context_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: positions [", pos, ", ", pos + n,
                      ") exceed the context of ", max_context_);
  LLMC_TRY(check_tokens(tokens));
  kernels::set_num_threads(threads_);
  std::optional<kernels::ScopedQuantActivations> mode;
  if (activations_) mode.emplace(*activations_);
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

Result<void> TransformerRuntime::forward_batch(std::span<const int32_t> tokens, int64_t pos, float* logits) {
  if (static_cast<int64_t>(tokens.size()) != sequences_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: forward_batch needs one token per sequence (", sequences_,
                      "), got ", tokens.size());
  if (pos < 0 || pos >= max_context_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: position ", pos, " exceeds the context of ", max_context_);
  LLMC_TRY(check_tokens(tokens));
  kernels::set_num_threads(threads_);
  std::optional<kernels::ScopedQuantActivations> mode;
  if (activations_) mode.emplace(*activations_);
  forward_chunk(tokens.data(), sequences_, pos, logits, true, true);
  return {};
}

// x: [n, dim] residual stream; positions pos..pos+n-1 of sequence 0, or position pos of
// sequences 0..n-1 when batched.
void TransformerRuntime::forward_chunk(const int32_t* ids, int64_t n, int64_t pos, float* logits, bool all_logits,
                                       bool batched) {
  const int64_t dim = c_.dim;
  for (int64_t t = 0; t < n; ++t) embedding_->rows_to_f32(ids[t], ids[t] + 1, x_.data() + t * dim);
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    const LayerWeights& w = layers_[l];
    block_.layer(w, x_.data(), n, pos, k_cache(l), v_cache(l), nullptr, false, batched ? seq_stride(l) : 0);
    if (release_pages_)
      for (const Tensor* t : {w.wq, w.wk, w.wv, w.wo, w.gate, w.up, w.down}) release_file_pages(*t->encoding);
  }
  if (logits) {
    if (all_logits) {
      block_.final_norm(output_norm_, x_.data(), n, xb_.data());
      block_.linear(*output_, xb_.data(), n, logits);
    } else {
      block_.final_norm(output_norm_, x_.data() + (n - 1) * dim, 1, xb_.data());
      block_.linear(*output_, xb_.data(), 1, logits);
    }
  }
  if (release_pages_) {
    release_file_pages(*embedding_->encoding);
    release_file_pages(*output_->encoding);
  }
}

Result<void> TransformerRuntime::copy_cache_from(const Runtime& other, int64_t n_positions) {
  const auto* o = dynamic_cast<const TransformerRuntime*>(&other);
  if (!o || &o->model_ != &model_ || o->max_context_ != max_context_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: copy_cache_from needs a runtime of the same model");
  if (n_positions < 0 || n_positions > max_context_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: cannot copy ", n_positions, " positions");
  if (o->sequences_ != sequences_)
    return make_error(ErrorCode::kInvalidArgument, "runtime: copy_cache_from needs the same number of sequences");
  for (int64_t l = 0; l < c_.n_layers; ++l)
    for (int64_t s = 0; s < sequences_; ++s) {
      const size_t off = cache_offset_[l] + static_cast<size_t>(s * seq_stride(l));
      const size_t count = static_cast<size_t>(n_positions * c_.kv_heads(l) * c_.head_dim);
      std::memcpy(k_cache_.get() + off, o->k_cache_.get() + off, count * sizeof(float));
      std::memcpy(v_cache_.get() + off, o->v_cache_.get() + off, count * sizeof(float));
    }
  return {};
}

class BlockRunnerImpl final : public BlockRunner {
 public:
  BlockRunnerImpl(const Model& model, int64_t max_tokens, int threads)
      : model_(model), max_tokens_(max_tokens), threads_(threads) {}

  Result<void> init() {
    LLMC_TRY(check_supported(model_));
    block_.init(model_.config, 0);
    const size_t kv = static_cast<size_t>(max_tokens_ * block_.max_kv_dim());
    k_.resize(kv);
    v_.resize(kv);
    return {};
  }

  Result<void> embed(std::span<const int32_t> tokens, float* x) override {
    const ModelConfig& c = model_.config;
    const Tensor& emb = model_.get("token_embd.weight");
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
        return make_error(ErrorCode::kInvalidArgument, "runtime: token id ", tokens[i], " at index ", i,
                          " is outside the vocabulary [0, ", c.vocab_size, ")");
      emb.rows_to_f32(tokens[i], tokens[i] + 1, x + static_cast<int64_t>(i) * c.dim);
    }
    return {};
  }

  Result<void> forward_layer(int64_t layer, float* x, int64_t n, const LinearObserver* observer,
                             bool inputs_only) override {
    LLMC_TRY(check_call(layer, n));
    kernels::set_num_threads(threads_);
    const kernels::ScopedQuantActivations exact(kernels::QuantActivations::kF32Decoded);
    const LayerWeights w = resolve_layer(model_, layer);
    for (int64_t start = 0; start < n; start += kMaxBatch)
      block_.layer(w, x + start * model_.config.dim, std::min(kMaxBatch, n - start), start, k_.data(), v_.data(),
                   observer, inputs_only);
    return {};
  }

  Result<void> forward_stage(int64_t layer, BlockStage stage, float* x, float* act, int64_t n,
                             const LinearObserver* observer) override {
    LLMC_TRY(check_call(layer, n));
    if (act == nullptr && (stage == BlockStage::kOutputInput || stage == BlockStage::kFfnInput))
      return make_error(ErrorCode::kInvalidArgument, "runtime: block stage ", static_cast<int>(stage),
                        " needs the activation buffer");
    kernels::set_num_threads(threads_);
    const kernels::ScopedQuantActivations exact(kernels::QuantActivations::kF32Decoded);
    const LayerWeights w = resolve_layer(model_, layer);
    const bool attn = stage == BlockStage::kOutputInput || stage == BlockStage::kFfnInput;
    const int64_t act_width = attn ? w.n_heads * model_.config.head_dim : w.hidden;
    for (int64_t start = 0; start < n; start += kMaxBatch)
      block_.stage(w, stage, x + start * model_.config.dim, std::min(kMaxBatch, n - start), start, k_.data(), v_.data(),
                   act ? act + start * act_width : nullptr, observer);
    return {};
  }

  void final_norm(const float* x, int64_t n, float* out) override {
    block_.final_norm(model_.get("output_norm.weight").to_f32(), x, n, out);
  }

  void head(const float* normed, int64_t n, float* logits) override {
    kernels::set_num_threads(threads_);
    const kernels::ScopedQuantActivations exact(kernels::QuantActivations::kF32Decoded);
    block_.linear(head_weight(), normed, n, logits);
  }

  const Tensor& head_weight() const override {
    return model_.get(model_.config.tied_embeddings ? "token_embd.weight" : "output.weight");
  }

  void release_layer_pages(int64_t layer) override {
    const LayerWeights w = resolve_layer(model_, layer);
    for (const Tensor* t : {w.wq, w.wk, w.wv, w.wo, w.gate, w.up, w.down}) release_file_pages(*t->encoding);
  }

  void release_embedding_pages() override {
    release_file_pages(*model_.get("token_embd.weight").encoding);
    release_file_pages(*head_weight().encoding);
  }

 private:
  Result<void> check_call(int64_t layer, int64_t n) const {
    if (layer < 0 || layer >= model_.config.n_layers)
      return make_error(ErrorCode::kInvalidArgument, "runtime: layer ", layer, " is outside [0, ",
                        model_.config.n_layers, ")");
    if (n < 0 || n > max_tokens_)
      return make_error(ErrorCode::kInvalidArgument, "runtime: ", n, " tokens exceed the block runner's ", max_tokens_);
    return {};
  }

  const Model& model_;
  int64_t max_tokens_;
  int threads_;
  BlockForward block_;
  std::vector<float> k_, v_;  // one layer's keys and values [max_tokens, kv_dim]
};

}  // namespace

Result<std::unique_ptr<BlockRunner>> BlockRunner::create(const Model& model, int64_t max_tokens, int threads) {
  if (threads < 0) return make_error(ErrorCode::kInvalidArgument, "runtime: threads must be >= 0");
  if (max_tokens < 1 || max_tokens > (1 << 20))
    return make_error(ErrorCode::kInvalidArgument, "runtime: block runner length ", max_tokens,
                      " is outside [1, 2^20]");
  auto r = std::make_unique<BlockRunnerImpl>(model, max_tokens, threads);
  LLMC_TRY(r->init());
  return std::unique_ptr<BlockRunner>(std::move(r));
}

Result<std::unique_ptr<Runtime>> Runtime::create(const Model& model, const RuntimeOptions& options) {
  if (options.threads < 0) return make_error(ErrorCode::kInvalidArgument, "runtime: threads must be >= 0");
  if (options.activation_q8_group < 0)
    return make_error(ErrorCode::kInvalidArgument, "runtime: activation_q8_group must be >= 0");
  if (options.max_context < 0) return make_error(ErrorCode::kInvalidArgument, "runtime: max_context must be >= 0");
  if (options.sequences < 1 || options.sequences > kMaxBatch)
    return make_error(ErrorCode::kInvalidArgument, "runtime: sequences must be in [1, ", kMaxBatch, "], got ",
                      options.sequences);
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
