// llama2.c runq.c's float32 forward-pass arithmetic (see runq_emulation.h for why it is kept exact).
#include "runtime/runq_emulation.h"

#include <omp.h>

#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <variant>

namespace llmc::runq {

Result<void> check_linear(const Tensor& w, int64_t group, const std::string& name) {
  const auto* q = std::get_if<QuantEncoding>(&w.encoding->node);
  if (!q || q->bits != 8 || q->scheme != QuantScheme::kSymmetric || q->group_size != group ||
      q->scale_dtype != DType::kF32 || w.cols() % group != 0)
    return make_error(ErrorCode::kUnsupported, "runtime: llama2.c runq.c emulation with groups of ", group,
                      " needs 8-bit symmetric weights in groups of ", group, " with f32 scales; ", name, " is ",
                      describe_encoding(*w.encoding), " of shape ", w.shape.str());
  return {};
}

void quantize(const float* x, int64_t n, int64_t group, int8_t* q, float* s) {
  constexpr float kQMax = 127.0f;
  for (int64_t g = 0; g < n / group; ++g) {
    const float* in = x + g * group;
    float wmax = 0.0f;
    for (int64_t i = 0; i < group; ++i) wmax = std::max(wmax, std::fabs(in[i]));
    const float scale = wmax / kQMax;
    s[g] = scale;
    for (int64_t i = 0; i < group; ++i) {
      if (scale == 0.0f) {
        q[g * group + i] = 0;
        continue;
      }
      // |v| <= 127 up to rounding for finite inputs; the clamp only keeps inf/NaN activations
      // (where runq.c's cast is undefined) from being undefined here too.
      const float v = in[i] / scale;
      const double r = std::round(v);
      q[g * group + i] = static_cast<int8_t>(std::isnan(r) ? 0.0 : std::clamp(r, -127.0, 127.0));
    }
  }
}

void linear(const Tensor& w, const float* x, int64_t n, int64_t group, float* y) {
  const auto& enc = std::get<QuantEncoding>(w.encoding->node);
  const int64_t rows = w.rows(), cols = w.cols(), groups = cols / group;
  // Activations of all n tokens, quantized once: xq [n, cols], xs [n, groups].
  std::vector<int8_t> xq(static_cast<size_t>(n * cols));
  std::vector<float> xs(static_cast<size_t>(n * groups));
  for (int64_t t = 0; t < n; ++t) quantize(x + t * cols, cols, group, &xq[t * cols], &xs[t * groups]);
  const uint8_t* codes = enc.codes.data();  // offset binary: code - 128 is the int8 value
  const uint8_t* scales = enc.scales.data();
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      float val = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t ival = 0;
        for (int64_t k = 0; k < group; ++k)
          ival += (static_cast<int32_t>(codes[r * cols + g * group + k]) - 128) *
                  static_cast<int32_t>(xq[t * cols + g * group + k]);
        float ws;
        std::memcpy(&ws, scales + (r * groups + g) * 4, 4);
        const float term_w = static_cast<float>(ival) * ws;
        const float term = term_w * xs[t * groups + g];
        val += term;
      }
      y[t * rows + r] = val;
    }
  }
}

void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  float ss = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const float sq = x[j] * x[j];
    ss += sq;
  }
  ss /= static_cast<float>(n);
  ss += eps;
  ss = 1.0f / sqrtf(ss);
  for (int64_t j = 0; j < n; ++j) {
    const float nx = ss * x[j];
    out[j] = weight[j] * nx;
  }
}

std::vector<float> rope_freq(int64_t head_dim, float theta) {
  std::vector<float> freq(static_cast<size_t>(head_dim / 2));
  for (int64_t p = 0; p < head_dim / 2; ++p)
    freq[p] = 1.0f / powf(theta, static_cast<float>(2 * p) / static_cast<float>(head_dim));
  return freq;
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* freq, RopeStyle style) {
  LLMC_CHECK(style == RopeStyle::kInterleaved);
  for (int64_t p = 0; p < head_dim / 2; ++p) {
    const float val = static_cast<float>(pos) * freq[p];
    const float fcr = cosf(val), fci = sinf(val);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim + 2 * p;
      const float v0 = v[0], v1 = v[1];
      const float a = v0 * fcr, b = v1 * fci, c = v0 * fci, d = v1 * fcr;
      v[0] = a - b;
      v[1] = c + d;
    }
  }
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float val = gate[i];
    val *= 1.0f / (1.0f + expf(-val));
    val *= up[i];
    gate[i] = val;
  }
}

void attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_pos,
               const kernels::AttentionShape& s, float* scratch, float* out, bool /*parallel*/) {
  const int64_t hd = s.head_dim, kv_mul = s.n_heads / s.n_kv_heads;
  const float scale = sqrtf(static_cast<float>(hd));
  for (int64_t h = 0; h < s.n_heads; ++h) {
    const float* qh = q + h * hd;
    const int64_t kv_off = (h / kv_mul) * hd;
    float* att = scratch + h * n_pos;
    for (int64_t t = 0; t < n_pos; ++t) {
      const float* k = k_cache + t * s.kv_stride + kv_off;
      float score = 0.0f;
      for (int64_t i = 0; i < hd; ++i) {
        const float p = qh[i] * k[i];
        score += p;
      }
      att[t] = score / scale;
    }
    float max_val = att[0];
    for (int64_t t = 1; t < n_pos; ++t) max_val = std::max(max_val, att[t]);
    float sum = 0.0f;
    for (int64_t t = 0; t < n_pos; ++t) {
      att[t] = expf(att[t] - max_val);
      sum += att[t];
    }
    for (int64_t t = 0; t < n_pos; ++t) att[t] /= sum;
    float* o = out + h * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t t = 0; t < n_pos; ++t) {
      const float* v = v_cache + t * s.kv_stride + kv_off;
      for (int64_t i = 0; i < hd; ++i) {
        const float p = att[t] * v[i];
        o[i] += p;
      }
    }
  }
}

}  // namespace llmc::runq
