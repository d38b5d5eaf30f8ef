// Norms, softmax, SiLU-gated multiply, RoPE and KV-cache attention (production and _ref), and SIMD
// target control.
#include "kernels/cpu/kernels.h"

#include <hwy/targets.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numbers>

#include "kernels/cpu/simd.h"

namespace llmc::kernels {

void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * weight[i];
}

void rmsnorm_ref(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + static_cast<double>(eps));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<double>(x[i]) * inv * weight[i]);
}

void softmax(float* x, int64_t n) { simd::softmax(x, n); }

void softmax_ref(float* x, int64_t n) {
  if (n <= 0) return;
  double mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  std::vector<double> e(static_cast<size_t>(n));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += e[i] = std::exp(static_cast<double>(x[i]) - mx);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(e[i] / sum);
}

void silu_mul(float* gate, const float* up, int64_t n) { simd::silu_mul(gate, up, n); }

void silu_mul_ref(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    gate[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

std::vector<float> rope_inv_freq(int64_t head_dim, float theta, const RopeScaling& scaling) {
  std::vector<float> out(static_cast<size_t>(head_dim / 2));
  const double factor = scaling.factor > 0 ? scaling.factor : 1.0;
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    double f = 1.0 / std::pow(static_cast<double>(theta), 2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    if (scaling.type == RopeScalingType::kLinear) {
      f /= factor;
    } else if (scaling.type == RopeScalingType::kLlama3) {
      // Llama 3.1: keep high frequencies, divide low ones by factor, interpolate in between.
      const double orig = static_cast<double>(scaling.original_context);
      const double low_wavelen = orig / scaling.low_freq_factor;
      const double high_wavelen = orig / scaling.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= factor;
      } else if (wavelen >= high_wavelen && scaling.high_freq_factor != scaling.low_freq_factor) {
        const double smooth =
            (orig / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor);
        f = (1.0 - smooth) * f / factor + smooth * f;
      }
    }
    out[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return out;
}

namespace {
// Element offsets of rotary pair i within a head.
inline void pair_index(RopeStyle style, int64_t head_dim, int64_t i, int64_t* a, int64_t* b) {
  if (style == RopeStyle::kInterleaved) {
    *a = 2 * i;
    *b = 2 * i + 1;
  } else {
    *a = i;
    *b = i + head_dim / 2;
  }
}
}  // namespace

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* inv_freq, RopeStyle style) {
  const int64_t half = head_dim / 2;
  thread_local std::vector<float> cs;
  cs.resize(static_cast<size_t>(2 * half));
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq[i];
    cs[2 * i] = static_cast<float>(std::cos(angle));
    cs[2 * i + 1] = static_cast<float>(std::sin(angle));
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      int64_t a, b;
      pair_index(style, head_dim, i, &a, &b);
      const float x0 = v[a], x1 = v[b], c = cs[2 * i], s = cs[2 * i + 1];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

void rope_ref(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* inv_freq, RopeStyle style) {
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      int64_t a, b;
      pair_index(style, head_dim, i, &a, &b);
      const double angle = static_cast<double>(pos) * inv_freq[i];
      const double x0 = x[h * head_dim + a], x1 = x[h * head_dim + b];
      x[h * head_dim + a] = static_cast<float>(x0 * std::cos(angle) - x1 * std::sin(angle));
      x[h * head_dim + b] = static_cast<float>(x0 * std::sin(angle) + x1 * std::cos(angle));
    }
}

namespace {
constexpr int64_t kAttentionTokenBlock = 16;  // tokens of one work item of attention_chunk

float attention_scale(const AttentionShape& s) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.head_dim)));
}
int64_t kv_offset(const AttentionShape& s, int64_t h) { return (h / (s.n_heads / s.n_kv_heads)) * s.head_dim; }
}  // namespace

void attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_pos, const AttentionShape& s,
               float* scratch, float* out, bool parallel) {
  const bool par = parallel && s.n_heads * n_pos * s.head_dim >= (1 << 14);
  const int64_t q_dim = s.n_heads * s.head_dim;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (par)
  for (int64_t h = 0; h < s.n_heads; ++h)
    simd::attention_head(q + h * s.head_dim, q_dim, k_cache + kv_offset(s, h), v_cache + kv_offset(s, h), s.kv_stride,
                         s.head_dim, attention_scale(s), n_pos - 1, 0, 1, scratch + h * n_pos, out + h * s.head_dim);
}

void attention_chunk(const float* q, const float* k_cache, const float* v_cache, int64_t n, int64_t pos,
                     const AttentionShape& s, float* out) {
  const int64_t q_dim = s.n_heads * s.head_dim;
  const int64_t blocks = (n + kAttentionTokenBlock - 1) / kAttentionTokenBlock;
  const bool par = s.n_heads * n * (pos + n) * s.head_dim >= (1 << 15);
  // Work items (head, token block); later blocks see more positions, hence dynamic scheduling.
#pragma omp parallel num_threads(num_threads()) if (par)
  {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(kAttentionTokenBlock * (pos + n)));
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < s.n_heads * blocks; ++item) {
      const int64_t h = item % s.n_heads, b = item / s.n_heads;
      const int64_t t0 = b * kAttentionTokenBlock, t1 = std::min(n, t0 + kAttentionTokenBlock);
      simd::attention_head(q + h * s.head_dim, q_dim, k_cache + kv_offset(s, h), v_cache + kv_offset(s, h), s.kv_stride,
                           s.head_dim, attention_scale(s), pos, t0, t1, scratch.data(), out + h * s.head_dim);
    }
  }
}

void attention_ref(const float* q, const float* k_cache, const float* v_cache, int64_t n_pos, const AttentionShape& s,
                   float* out) {
  const int64_t group = s.n_heads / s.n_kv_heads;
  std::vector<float> scores(static_cast<size_t>(n_pos));
  for (int64_t h = 0; h < s.n_heads; ++h) {
    const int64_t kv_off = (h / group) * s.head_dim;
    for (int64_t p = 0; p < n_pos; ++p) {
      double d = 0.0;
      for (int64_t i = 0; i < s.head_dim; ++i)
        d += static_cast<double>(q[h * s.head_dim + i]) * k_cache[p * s.kv_stride + kv_off + i];
      scores[p] = static_cast<float>(d / std::sqrt(static_cast<double>(s.head_dim)));
    }
    softmax_ref(scores.data(), n_pos);
    for (int64_t i = 0; i < s.head_dim; ++i) {
      double acc = 0.0;
      for (int64_t p = 0; p < n_pos; ++p) acc += static_cast<double>(scores[p]) * v_cache[p * s.kv_stride + kv_off + i];
      out[h * s.head_dim + i] = static_cast<float>(acc);
    }
  }
}

namespace {
// Tile side of gram_upper_accumulate (a multiple of the dot microkernel's 4 rows and 3 tokens).
constexpr int64_t kGramTile = 96;
constexpr int64_t kTransposeBlock = 32;
}  // namespace

void gram_upper_accumulate(const float* x, int64_t n, int64_t cols, double* total) {
  if (n <= 0 || cols <= 0) return;
  // xt: [cols, n], so that element (i, j) is the dot product of rows i and j. Not thread_local:
  // it would stay allocated after the pass (3 MiB for SmolLM2's FFN at 512 tokens) under the next
  // one's peak. Not zero-filled: every element is written below.
  const auto transposed = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(cols * n));
  float* xt = transposed.get();
  const int64_t tiles = (cols + kGramTile - 1) / kGramTile;
  const int64_t pairs = tiles * (tiles + 1) / 2;
  const bool parallel = cols * cols * n >= (int64_t{1} << 20);
#pragma omp parallel num_threads(num_threads()) if (parallel)
  {
    // Transposed in square blocks of columns: element by element, every write of a token's row went
    // to another cache line (a third of this function's time at 512 x 1536).
#pragma omp for schedule(static)
    for (int64_t c0 = 0; c0 < cols; c0 += kTransposeBlock)
      for (int64_t t0 = 0; t0 < n; t0 += kTransposeBlock) {
        const int64_t t1 = std::min(n, t0 + kTransposeBlock), c1 = std::min(cols, c0 + kTransposeBlock);
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t t = t0; t < t1; ++t) xt[c * n + t] = x[t * cols + c];
      }
    thread_local std::vector<float> tile;
    tile.resize(static_cast<size_t>(kGramTile * kGramTile));
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < pairs; ++p) {
      // Pair p -> tile (bi, bj) with bi <= bj, row by row of the upper triangle.
      int64_t bi = 0, rest = p;
      while (rest >= tiles - bi) rest -= tiles - bi++;
      const int64_t bj = bi + rest;
      const int64_t i0 = bi * kGramTile, i1 = std::min(cols, i0 + kGramTile);
      const int64_t j0 = bj * kGramTile, j1 = std::min(cols, j0 + kGramTile);
      // tile[(j - j0) * kGramTile + (i - i0)] = Σ_t xt[i, t] · xt[j, t]
      simd::matmul_rows_f32(reinterpret_cast<const uint8_t*>(xt + i0 * n), i1 - i0, n, xt + j0 * n, 0, j1 - j0, 0,
                            i1 - i0, tile.data());
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = std::max(i, j0); j < j1; ++j) total[i * cols + j] += tile[(j - j0) * (i1 - i0) + (i - i0)];
    }
  }
}

std::vector<int64_t> simd_targets() {
  std::vector<int64_t> t = simd::compiled_targets();
  std::sort(t.begin(), t.end());  // lower bit = better target
  return t;
}

std::string simd_target_name(int64_t target) { return hwy::TargetName(target); }

// `target` and every worse one stay enabled, so that each kernel file dispatches to its best compiled
// target no better than `target` (a file without `target` would otherwise fall back to scalar code).
void force_simd_target(int64_t target) {
  hwy::SetSupportedTargetsForTest(0);
  if (target != 0) hwy::SetSupportedTargetsForTest(hwy::SupportedTargets() & ~(target - 1));
}

std::string active_simd_target() {
  const std::vector<int64_t> t = simd_targets();  // under force_simd_target: the forced one first
  return t.empty() ? "none" : simd_target_name(t.front());
}

}  // namespace llmc::kernels
