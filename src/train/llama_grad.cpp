// Forward and backward pass of the Llama family on f32 weights (train/llama_grad.h).
// Eigen's own OpenMP GEMM is off: its blocking depends on the thread count, and training results
// must not. Callers run sequences on separate threads instead.
#define EIGEN_DONT_PARALLELIZE
#include "train/llama_grad.h"

#include <cmath>

#include <Eigen/Dense>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"
#include "model/arch.h"

namespace llmc {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapM = Eigen::Map<Mat>;
using CMapM = Eigen::Map<const Mat>;
using Stride = Eigen::OuterStride<>;
using SMapM = Eigen::Map<Mat, 0, Stride>;
using CSMapM = Eigen::Map<const Mat, 0, Stride>;

// ---- LlamaParams ----

namespace {

Result<void> check_trainable(const Model& model) {
  LLMC_TRY(validate_model(model));
  if (model.config.norm != NormKind::kRmsNorm)
    return make_error(ErrorCode::kUnsupported, "training: only RMSNorm models are supported");
  if (model.config.activation != Activation::kSilu)
    return make_error(ErrorCode::kUnsupported, "training: only SiLU-gated (SwiGLU) FFNs are supported");
  return {};
}

}  // namespace

Result<LlamaParams> LlamaParams::from_model(const Model& model) { return decode(model, -1, BlockPart::kWhole); }

Result<LlamaParams> LlamaParams::block_of(const Model& model, int64_t layer, BlockPart part) {
  if (layer < 0 || layer >= model.config.n_layers)
    return make_error(ErrorCode::kInvalidArgument, "training: no block ", layer);
  return decode(model, layer, part);
}

bool in_block_part(const std::string& name, BlockPart part) {
  if (part == BlockPart::kWhole) return true;
  return name.find(part == BlockPart::kAttention ? ".attn_" : ".ffn_") != std::string::npos;
}

Result<LlamaParams> LlamaParams::decode(const Model& model, int64_t layer, BlockPart part) {
  LLMC_TRY(check_trainable(model));
  LlamaParams p;
  p.config_ = model.config;
  const std::string prefix = layer < 0 ? "" : layer_tensor_name(layer, "");
  for (const TensorSpec& spec : expected_tensors(model.config)) {
    if (spec.name.compare(0, prefix.size(), prefix) != 0) continue;
    if (layer >= 0 && !in_block_part(spec.name, part)) continue;
    p.index_[spec.name] = p.names_.size();
    p.names_.push_back(spec.name);
    p.values_.push_back(model.get(spec.name).to_f32());
    p.sources_.push_back(nullptr);
    p.sizes_.push_back(p.values_.back().size());
  }
  return p;
}

void LlamaParams::set_source(size_t i, const RowSource* source) {
  sources_[i] = source;
  std::vector<float>().swap(values_[i]);
}

LlamaParams LlamaParams::zeros_like() const {
  LlamaParams z;
  z.config_ = config_;
  z.names_ = names_;
  z.index_ = index_;
  z.sizes_ = sizes_;
  z.sources_.assign(sizes_.size(), nullptr);
  z.values_.reserve(sizes_.size());
  for (size_t n : sizes_) z.values_.emplace_back(n, 0.0f);
  return z;
}

int64_t LlamaParams::index(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? -1 : static_cast<int64_t>(it->second);
}

void LlamaParams::add(const LlamaParams& other) {
  for (size_t i = 0; i < values_.size(); ++i)
    for (size_t j = 0; j < values_[i].size(); ++j) values_[i][j] += other.values_[i][j];
}

void LlamaParams::fill_zero() {
  for (auto& v : values_) std::fill(v.begin(), v.end(), 0.0f);
}

// ---- tape ----

struct LayerTape {
  int64_t heads = 0, kv_heads = 0, hidden = 0;
  std::vector<float> x_in, r1, h1, q, k, v, probs, att, x_mid, r2, h2, a, b;
};

struct LlamaTape {
  int64_t n = 0;
  std::vector<int32_t> tokens;
  std::vector<LayerTape> layers;
  std::vector<float> x_last, rf, hf;
  std::vector<float> xt;  // linear_backward's buffer
};

namespace {

// out = x r g per row, r[t] = 1 / sqrt(mean(x²) + eps) (sum of squares in double, as the runtime).
void rms_forward(const float* x, const float* g, int64_t n, int64_t d, float eps, float* r, float* out) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    r[t] = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    for (int64_t i = 0; i < d; ++i) out[t * d + i] = xt[i] * r[t] * g[i];
  }
}

// dx += d(out)/dx · dout, dg += d(out)/dg · dout.
void rms_backward(const float* x, const float* g, const float* r, const float* dout, int64_t n, int64_t d, float* dx,
                  float* dg) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * d;
    const float* dt = dout + t * d;
    double dot = 0;
    for (int64_t i = 0; i < d; ++i) {
      dot += static_cast<double>(g[i]) * dt[i] * xt[i];
      dg[i] += dt[i] * xt[i] * r[t];
    }
    const float k = static_cast<float>(dot * r[t] * r[t] * r[t] / static_cast<double>(d));
    for (int64_t i = 0; i < d; ++i) dx[t * d + i] += g[i] * dt[i] * r[t] - k * xt[i];
  }
}

// RoPE of every token of x [n, heads * hd] with the runtime's kernel: token t at position t, or at
// -t (the inverse rotation: the backward pass of a rotation is its transpose).
void rope_rows(float* x, int64_t n, int64_t heads, int64_t hd, const float* inv_freq, RopeStyle style, bool inverse) {
  for (int64_t t = 0; t < n; ++t) kernels::rope(x + t * heads * hd, heads, hd, inverse ? -t : t, inv_freq, style);
}

// The dense products run on the runtime's SIMD f32 kernel (kernels/cpu/simd.h: one fixed-order
// dot product per element, whatever the blocking), Y[t, r] = Σ_k A[r, k] B[t, k].
// With threads > 1 the rows of A are split between them (the same bits).
constexpr int64_t kRowBlock = 16;

void gemm_nt(const float* a, int64_t a_rows, int64_t k, const float* b, int64_t b_rows, float* y, int threads) {
  const auto* w = reinterpret_cast<const uint8_t*>(a);
  if (threads <= 1 || a_rows < 2 * kRowBlock) {
    kernels::simd::matmul_rows_f32(w, a_rows, k, b, 0, b_rows, 0, a_rows, y);
    return;
  }
  const int64_t chunks = (a_rows + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t c = 0; c < chunks; ++c)
    kernels::simd::matmul_rows_f32(w, a_rows, k, b, 0, b_rows, c * kRowBlock, std::min(a_rows, (c + 1) * kRowBlock), y);
}

void transpose(const float* x, int64_t rows, int64_t cols, std::vector<float>& out) {
  out.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = x[r * cols + c];
}

// A linear weight [rows, cols] as the products read it: stored values, or made by a RowSource a
// block of rows (forward) or columns (backward) at a time (the same bits either way).
struct WeightRef {
  const float* data = nullptr;
  const RowSource* source = nullptr;
  explicit WeightRef(const std::vector<float>& v) : data(v.data()) {}
  WeightRef(const float* d, const RowSource* s) : data(d), source(s) {}
};

WeightRef weight_ref(const LlamaParams& p, const std::string& name) {
  const size_t i = static_cast<size_t>(p.index(name));
  return {p.values(i).data(), p.source(i)};
}

// f(r0, r1, rows) for each block of kRowBlock rows of a source weight, split over `threads`;
// `rows` holds the block's values [r1 - r0, cols].
template <class F>
void for_each_row_block(const RowSource& source, int64_t rows, int64_t cols, int threads, const F& f) {
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> buf(static_cast<size_t>(kRowBlock * cols));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
      source.rows(r0, r1, buf.data());
      f(r0, r1, buf.data());
    }
  }
}

// Y [n, rows] = X [n, cols] · Wᵀ.
void linear(const float* x, WeightRef w, int64_t n, int64_t cols, int64_t rows, float* y, int threads) {
  if (!w.source) {
    gemm_nt(w.data, rows, cols, x, n, y, threads);
    return;
  }
  for_each_row_block(*w.source, rows, cols, threads, [&](int64_t r0, int64_t r1, const float* block) {
    kernels::simd::matmul_block_f32(block, r1 - r0, cols, x, n, y + r0, rows);
  });
}

// dX [n, cols] += dY · W;  dW [rows, cols] += dYᵀ · X, each element one dot product; both split
// in blocks of kRowBlock columns of W (rows of Wᵀ, made by the source or gathered) and rows of dW
// over the threads. `xt`: the caller's buffer for Xᵀ, reused.
void linear_backward(const float* x, WeightRef w, const float* dy, int64_t n, int64_t cols, int64_t rows, float* dx,
                     std::vector<float>& dw, int threads, std::vector<float>& xt) {
  constexpr int64_t kB = kRowBlock;
  transpose(x, n, cols, xt);  // [cols, n]
  const float* xtp = xt.data();
  const int64_t col_blocks = (cols + kB - 1) / kB, row_blocks = (rows + kB - 1) / kB;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    // dX[t, c] = Σ_r Wᵀ[c, r] dY[t, r].
    std::vector<float> wt(static_cast<size_t>(kB * rows)), part(static_cast<size_t>(n * kB));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < col_blocks; ++b) {
      const int64_t c0 = b * kB, c1 = std::min(cols, c0 + kB), m = c1 - c0;
      if (w.source) {
        w.source->cols(c0, c1, wt.data());
      } else {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = c0; c < c1; ++c) wt[(c - c0) * rows + r] = w.data[r * cols + c];
      }
      kernels::simd::matmul_block_f32(wt.data(), m, rows, dy, n, part.data(), m);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < m; ++j) dx[t * cols + c0 + j] += part[t * m + j];
    }
    // dW[r, c] = Σ_t dYᵀ[r, t] Xᵀ[c, t].
    std::vector<float> dyt(static_cast<size_t>(kB * n)), buf(static_cast<size_t>(kB * cols));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < row_blocks; ++b) {
      const int64_t r0 = b * kB, r1 = std::min(rows, r0 + kB), m = r1 - r0;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < m; ++j) dyt[j * n + t] = dy[t * rows + r0 + j];
      kernels::simd::matmul_block_f32(xtp, cols, n, dyt.data(), m, buf.data(), cols);
      for (int64_t i = 0; i < m * cols; ++i) dw[r0 * cols + i] += buf[i];
    }
  }
}

float silu(float a) { return a / (1.0f + std::exp(-a)); }

// A block's forward pass over one sequence's hidden states x [n, dim] is its attention half, then
// its FFN half, each in place, keeping its activations in L; products split over `threads` (same
// bits for any count). The attention half: x += wo(attention(norm(x))).
void attn_forward(const ModelConfig& c_, const float* inv_freq, int threads, const LlamaParams& p, int64_t l,
                  std::vector<float>& x, int64_t n, LayerTape& L) {
  const int64_t d = c_.dim, hd = c_.head_dim;
  auto w = [&](const char* s) -> const std::vector<float>& { return p.get(layer_tensor_name(l, s)); };
  auto lw = [&](const char* s) { return weight_ref(p, layer_tensor_name(l, s)); };
  L.heads = c_.heads(l);
  L.kv_heads = c_.kv_heads(l);
  const int64_t H = L.heads, Hk = L.kv_heads, qd = H * hd, kvd = Hk * hd;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  L.x_in = x;
  L.r1.resize(n);
  L.h1.resize(n * d);
  rms_forward(x.data(), w("attn_norm.weight").data(), n, d, c_.norm_eps, L.r1.data(), L.h1.data());
  L.q.resize(n * qd);
  L.k.resize(n * kvd);
  L.v.resize(n * kvd);
  linear(L.h1.data(), lw("attn_q.weight"), n, d, qd, L.q.data(), threads);
  linear(L.h1.data(), lw("attn_k.weight"), n, d, kvd, L.k.data(), threads);
  linear(L.h1.data(), lw("attn_v.weight"), n, d, kvd, L.v.data(), threads);
  if (c_.attn_qkv_bias) {
    const auto &bq = w("attn_q.bias"), &bk = w("attn_k.bias"), &bv = w("attn_v.bias");
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < qd; ++i) L.q[t * qd + i] += bq[i];
      for (int64_t i = 0; i < kvd; ++i) L.k[t * kvd + i] += bk[i];
      for (int64_t i = 0; i < kvd; ++i) L.v[t * kvd + i] += bv[i];
    }
  }
  rope_rows(L.q.data(), n, H, hd, inv_freq, c_.rope_style, false);
  rope_rows(L.k.data(), n, Hk, hd, inv_freq, c_.rope_style, false);
  L.probs.resize(static_cast<size_t>(H * n * n));  // only the lower triangles are written and read
  L.att.resize(n * qd);
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (threads > 1)
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / Hk);
    CSMapM qh(L.q.data() + h * hd, n, hd, Stride(qd));
    CSMapM kh(L.k.data() + g * hd, n, hd, Stride(kvd));
    CSMapM vh(L.v.data() + g * hd, n, hd, Stride(kvd));
    MapM P(L.probs.data() + h * n * n, n, n);
    // Causal: only the lower triangle of the scores is computed (the rest stays 0).
    P.triangularView<Eigen::Lower>() = qh * kh.transpose();
    for (int64_t i = 0; i < n; ++i) {
      float* row = &P(i, 0);
      for (int64_t j = 0; j <= i; ++j) row[j] *= scale;
      kernels::simd::softmax(row, i + 1);
    }
    SMapM(L.att.data() + h * hd, n, hd, Stride(qd)).noalias() = P.triangularView<Eigen::Lower>() * vh;
  }
  std::vector<float> tmp(n * d);
  linear(L.att.data(), lw("attn_output.weight"), n, qd, d, tmp.data(), threads);
  for (int64_t i = 0; i < n * d; ++i) x[i] += tmp[i];
}

// The FFN half: x [n, dim] (the attention half's output) in place, keeping its activations in L.
void ffn_forward(const ModelConfig& c_, int threads, const LlamaParams& p, int64_t l, std::vector<float>& x, int64_t n,
                 LayerTape& L) {
  const int64_t d = c_.dim;
  auto w = [&](const char* s) -> const std::vector<float>& { return p.get(layer_tensor_name(l, s)); };
  auto lw = [&](const char* s) { return weight_ref(p, layer_tensor_name(l, s)); };
  L.hidden = c_.hidden(l);
  const int64_t F = L.hidden;
  std::vector<float> tmp(n * d);
  L.x_mid = x;  // the FFN half's input
  L.r2.resize(n);
  L.h2.resize(n * d);
  rms_forward(x.data(), w("ffn_norm.weight").data(), n, d, c_.norm_eps, L.r2.data(), L.h2.data());
  L.a.resize(n * F);
  L.b.resize(n * F);
  linear(L.h2.data(), lw("ffn_gate.weight"), n, d, F, L.a.data(), threads);
  linear(L.h2.data(), lw("ffn_up.weight"), n, d, F, L.b.data(), threads);
  std::vector<float> m(n * F);  // not kept: the backward pass makes it again
  for (int64_t i = 0; i < n * F; ++i) m[i] = silu(L.a[i]) * L.b[i];
  linear(m.data(), lw("ffn_down.weight"), n, F, d, tmp.data(), threads);
  for (int64_t i = 0; i < n * d; ++i) x[i] += tmp[i];
}

// The backward passes of the halves. dx [n, dim]: in, the gradient with respect to the half's
// output; out, with respect to its input. Each adds the gradients of its weights, norm gain and
// biases to grad. The FFN half: x = x_mid + down(silu(a) b).
void ffn_backward(const ModelConfig& c_, int threads, const LlamaParams& p, int64_t l, const LayerTape& L, int64_t n,
                  std::vector<float>& dx, LlamaParams& grad, std::vector<float>& xt) {
  const int64_t d = c_.dim, F = L.hidden;
  auto w = [&](const char* s) -> const std::vector<float>& { return p.get(layer_tensor_name(l, s)); };
  auto lw = [&](const char* s) { return weight_ref(p, layer_tensor_name(l, s)); };
  auto gw = [&](const char* s) -> std::vector<float>& { return grad.get(layer_tensor_name(l, s)); };
  std::vector<float> m(n * F), dm(n * F, 0.0f);
  for (int64_t i = 0; i < n * F; ++i) m[i] = silu(L.a[i]) * L.b[i];
  linear_backward(m.data(), lw("ffn_down.weight"), dx.data(), n, F, d, dm.data(), gw("ffn_down.weight"), threads, xt);
  // d(up) into m's buffer, d(gate) into dm's, in place.
  std::vector<float>&da = dm, &db = m;
  for (int64_t i = 0; i < n * F; ++i) {
    const float a = L.a[i], sg = 1.0f / (1.0f + std::exp(-a)), g = dm[i];
    da[i] = g * L.b[i] * sg * (1.0f + a * (1.0f - sg));
    db[i] = g * a * sg;
  }
  std::vector<float> dh(n * d, 0.0f);
  linear_backward(L.h2.data(), lw("ffn_gate.weight"), da.data(), n, d, F, dh.data(), gw("ffn_gate.weight"), threads,
                  xt);
  linear_backward(L.h2.data(), lw("ffn_up.weight"), db.data(), n, d, F, dh.data(), gw("ffn_up.weight"), threads, xt);
  rms_backward(L.x_mid.data(), w("ffn_norm.weight").data(), L.r2.data(), dh.data(), n, d, dx.data(),
               gw("ffn_norm.weight").data());
}

// The attention half: x_mid = x_in + wo(att).
void attn_backward(const ModelConfig& c_, const float* inv_freq, int threads, const LlamaParams& p, int64_t l,
                   const LayerTape& L, int64_t n, std::vector<float>& dx, LlamaParams& grad, std::vector<float>& xt) {
  const int64_t d = c_.dim, hd = c_.head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  auto w = [&](const char* s) -> const std::vector<float>& { return p.get(layer_tensor_name(l, s)); };
  auto lw = [&](const char* s) { return weight_ref(p, layer_tensor_name(l, s)); };
  auto gw = [&](const char* s) -> std::vector<float>& { return grad.get(layer_tensor_name(l, s)); };
  const int64_t H = L.heads, Hk = L.kv_heads, qd = H * hd, kvd = Hk * hd;
  std::vector<float> datt(n * qd, 0.0f);
  linear_backward(L.att.data(), lw("attn_output.weight"), dx.data(), n, qd, d, datt.data(), gw("attn_output.weight"),
                  threads, xt);
  std::vector<float> dq(n * qd, 0.0f), dk(n * kvd, 0.0f), dv(n * kvd, 0.0f);
  // One task per kv head: its query heads in order (dk, dv of a kv head are sums over them).
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (threads > 1)
  for (int64_t g = 0; g < Hk; ++g) {
    Mat dP(n, n), dS(n, n);
    for (int64_t h = g * (H / Hk); h < (g + 1) * (H / Hk); ++h) {
      CMapM P(L.probs.data() + h * n * n, n, n);
      CSMapM dO(datt.data() + h * hd, n, hd, Stride(qd));
      CSMapM qh(L.q.data() + h * hd, n, hd, Stride(qd));
      CSMapM kh(L.k.data() + g * hd, n, hd, Stride(kvd));
      CSMapM vh(L.v.data() + g * hd, n, hd, Stride(kvd));
      dP.triangularView<Eigen::Lower>() = dO * vh.transpose();
      for (int64_t i = 0; i < n; ++i) {
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += static_cast<double>(dP(i, j)) * P(i, j);
        for (int64_t j = 0; j <= i; ++j) dS(i, j) = P(i, j) * (dP(i, j) - static_cast<float>(dot)) * scale;
      }
      SMapM(dq.data() + h * hd, n, hd, Stride(qd)).noalias() += dS.triangularView<Eigen::Lower>() * kh;
      SMapM(dk.data() + g * hd, n, hd, Stride(kvd)).noalias() += dS.transpose().triangularView<Eigen::Upper>() * qh;
      SMapM(dv.data() + g * hd, n, hd, Stride(kvd)).noalias() += P.transpose().triangularView<Eigen::Upper>() * dO;
    }
  }
  rope_rows(dq.data(), n, H, hd, inv_freq, c_.rope_style, true);
  rope_rows(dk.data(), n, Hk, hd, inv_freq, c_.rope_style, true);
  if (c_.attn_qkv_bias) {
    auto &gbq = gw("attn_q.bias"), &gbk = gw("attn_k.bias"), &gbv = gw("attn_v.bias");
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < qd; ++i) gbq[i] += dq[t * qd + i];
      for (int64_t i = 0; i < kvd; ++i) gbk[i] += dk[t * kvd + i];
      for (int64_t i = 0; i < kvd; ++i) gbv[i] += dv[t * kvd + i];
    }
  }
  std::vector<float> dh(n * d, 0.0f);
  linear_backward(L.h1.data(), lw("attn_q.weight"), dq.data(), n, d, qd, dh.data(), gw("attn_q.weight"), threads, xt);
  linear_backward(L.h1.data(), lw("attn_k.weight"), dk.data(), n, d, kvd, dh.data(), gw("attn_k.weight"), threads, xt);
  linear_backward(L.h1.data(), lw("attn_v.weight"), dv.data(), n, d, kvd, dh.data(), gw("attn_v.weight"), threads, xt);
  rms_backward(L.x_in.data(), w("attn_norm.weight").data(), L.r1.data(), dh.data(), n, d, dx.data(),
               gw("attn_norm.weight").data());
}

// The parts of block l in `part`, forward (x: their input, replaced by their output) and backward.
void layer_forward(const ModelConfig& c, const float* inv_freq, int threads, const LlamaParams& p, int64_t l,
                   std::vector<float>& x, int64_t n, LayerTape& L, BlockPart part = BlockPart::kWhole) {
  if (part != BlockPart::kFfn) attn_forward(c, inv_freq, threads, p, l, x, n, L);
  if (part != BlockPart::kAttention) ffn_forward(c, threads, p, l, x, n, L);
}

void layer_backward(const ModelConfig& c, const float* inv_freq, int threads, const LlamaParams& p, int64_t l,
                    const LayerTape& L, int64_t n, std::vector<float>& dx, LlamaParams& grad, std::vector<float>& xt,
                    BlockPart part = BlockPart::kWhole) {
  if (part != BlockPart::kAttention) ffn_backward(c, threads, p, l, L, n, dx, grad, xt);
  if (part != BlockPart::kFfn) attn_backward(c, inv_freq, threads, p, l, L, n, dx, grad, xt);
}

}  // namespace

LlamaGrad::LlamaGrad(const ModelConfig& config)
    : c_(config),
      inv_freq_(kernels::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)),
      tape_(new LlamaTape) {}

LlamaGrad::~LlamaGrad() { delete tape_; }

Result<void> LlamaGrad::forward(const LlamaParams& p, std::span<const int32_t> tokens, float* logits, bool keep) {
  const int64_t n = static_cast<int64_t>(tokens.size()), d = c_.dim, V = c_.vocab_size;
  for (int32_t id : tokens)
    if (id < 0 || id >= V)
      return make_error(ErrorCode::kInvalidArgument, "token id ", id, " is outside the vocabulary");
  LlamaTape& tp = *tape_;
  tp.n = n;
  tp.tokens.assign(tokens.begin(), tokens.end());
  const std::vector<float>& embd = p.get("token_embd.weight");
  std::vector<float> x(n * d);
  for (int64_t t = 0; t < n; ++t) std::copy_n(&embd[tokens[t] * d], d, &x[t * d]);
  tp.layers.resize(c_.n_layers);
  LayerTape scratch;
  for (int64_t l = 0; l < c_.n_layers; ++l)
    layer_forward(c_, inv_freq_.data(), 1, p, l, x, n, keep ? tp.layers[l] : scratch);
  tp.x_last = x;
  tp.rf.resize(n);
  tp.hf.resize(n * d);
  rms_forward(x.data(), p.get("output_norm.weight").data(), n, d, c_.norm_eps, tp.rf.data(), tp.hf.data());
  const std::vector<float>& head = p.get(c_.tied_embeddings ? "token_embd.weight" : "output.weight");
  linear(tp.hf.data(), WeightRef(head), n, d, V, logits, 1);
  return {};
}

void LlamaGrad::backward(const LlamaParams& p, const float* dlogits, LlamaParams& grad) {
  const LlamaTape& tp = *tape_;
  const int64_t n = tp.n, d = c_.dim, V = c_.vocab_size;
  const char* head_name = c_.tied_embeddings ? "token_embd.weight" : "output.weight";
  std::vector<float> dhf(n * d, 0.0f), dx(n * d, 0.0f);
  linear_backward(tp.hf.data(), WeightRef(p.get(head_name)), dlogits, n, d, V, dhf.data(), grad.get(head_name), 1,
                  tape_->xt);
  rms_backward(tp.x_last.data(), p.get("output_norm.weight").data(), tp.rf.data(), dhf.data(), n, d, dx.data(),
               grad.get("output_norm.weight").data());
  for (int64_t l = c_.n_layers - 1; l >= 0; --l)
    layer_backward(c_, inv_freq_.data(), 1, p, l, tp.layers[l], n, dx, grad, tape_->xt);
  std::vector<float>& gembd = grad.get("token_embd.weight");
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < d; ++i) gembd[tp.tokens[t] * d + i] += dx[t * d + i];
}

BlockGrad::BlockGrad(const ModelConfig& config, int threads)
    : c_(config),
      inv_freq_(kernels::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)),
      threads_(std::max(threads, 1)),
      tape_(new LayerTape) {}

BlockGrad::~BlockGrad() { delete tape_; }

void BlockGrad::forward(const LlamaParams& p, int64_t layer, std::vector<float>& x, int64_t n, BlockPart part) {
  if (part != part_) *tape_ = LayerTape{};  // the other part's activations are not needed any more
  layer_forward(c_, inv_freq_.data(), threads_, p, layer, x, n, *tape_, part);
  layer_ = layer;
  n_ = n;
  part_ = part;
}

void BlockGrad::backward(const LlamaParams& p, std::vector<float>& dx, LlamaParams& grad) {
  layer_backward(c_, inv_freq_.data(), threads_, p, layer_, *tape_, n_, dx, grad, xt_, part_);
}

double kl_loss(const float* teacher, const float* student, int64_t n, int64_t vocab, float weight, float* dstudent) {
  double total = 0;
  std::vector<double> pt(vocab), ps(vocab);
  auto softmax = [vocab](const float* z, std::vector<double>& p) {
    float mx = z[0];
    for (int64_t i = 1; i < vocab; ++i) mx = std::max(mx, z[i]);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += p[i] = std::exp(static_cast<double>(z[i]) - mx);
    for (int64_t i = 0; i < vocab; ++i) p[i] /= sum;
  };
  for (int64_t t = 0; t < n; ++t) {
    softmax(teacher + t * vocab, pt);
    softmax(student + t * vocab, ps);
    double kl = 0;
    for (int64_t i = 0; i < vocab; ++i)
      if (pt[i] > 0) kl += pt[i] * (std::log(pt[i]) - std::log(std::max(ps[i], 1e-300)));
    total += kl;
    if (dstudent)
      for (int64_t i = 0; i < vocab; ++i) dstudent[t * vocab + i] = static_cast<float>((ps[i] - pt[i]) * weight);
  }
  return total;
}

}  // namespace llmc
