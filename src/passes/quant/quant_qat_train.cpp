// quant.qat's shared training pieces (quant_qat_train.h).
#include "passes/quant/quant_qat_train.h"

#include <cmath>
#include <cstring>
#include <random>

namespace llmc {
namespace {

QuantSpec spec_of(const QuantEncoding& q) {
  QuantSpec s;
  s.bits = q.bits;
  s.scheme = q.scheme;
  s.group_size = q.group_size;
  s.scale_dtype = q.scale_dtype;
  s.scale_block = q.scale_dtype == DType::kU8 ? q.scale_block : 256;
  s.trits5 = q.packing == QuantPacking::kTrits5;
  s.binary_two_level = q.scheme == QuantScheme::kBinary && !q.mins.empty();
  return s;
}

// Code-axis geometry of a scheme: value = (q - centre) · s + m with q in [0, qmax].
void code_axis(const QuantSpec& spec, float* centre, float* qmax) {
  switch (spec.scheme) {
    case QuantScheme::kSymmetric:
      *centre = static_cast<float>(1 << (spec.bits - 1));
      *qmax = static_cast<float>((1 << spec.bits) - 1);
      return;
    case QuantScheme::kAsymmetric:
      *centre = 0;
      *qmax = static_cast<float>((1 << spec.bits) - 1);
      return;
    case QuantScheme::kTernary:
      *centre = 1;
      *qmax = 2;
      return;
    case QuantScheme::kBinary:
      *centre = 0.5f;  // value = (2q - 1) s + m = (q - 1/2) (2s) + m
      *qmax = 1;
      return;
  }
}

std::vector<float> meta_floats(const Bytes& b) {
  std::vector<float> out(b.size() / sizeof(float));
  if (!out.empty()) std::memcpy(out.data(), b.data(), out.size() * sizeof(float));
  return out;
}

// Entry gi of a u8 grid nearest to v (the stored value); v itself without a grid.
float on_grid(const std::vector<float>& grid, int64_t block, size_t gi, float v) {
  if (grid.empty()) return v;
  const size_t b = 2 * (gi / static_cast<size_t>(block));
  const float step = grid[b], base = grid[b + 1];
  if (!(step > 0)) return base;
  return base + step * std::clamp(std::nearbyint((v - base) / step), 0.0f, 255.0f);
}

// Visits every weight of t with its group's stored (on-grid) params: f(i, gi, s, m, x, q, k) with
// x the unrounded code and q the code (both unused when s == 0, an all-zero group), the value
// being (q - centre) · s + m and k the scale's factor in s (2 for binary).
template <class F>
void for_each_weight(const QatTensor& t, const F& f) {
  float centre = 0, qmax = 1;
  code_axis(t.spec, &centre, &qmax);
  const float k = t.spec.scheme == QuantScheme::kBinary ? 2.0f : 1.0f;
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t c = 0; c < t.cols; ++c) {
      const size_t gi = static_cast<size_t>(r * t.gpr + c / t.gsize), i = static_cast<size_t>(r * t.cols + c);
      const float s = on_grid(t.scale_grid, t.spec.scale_block, gi, t.s[gi]) * k;
      const float m = t.has_mins() ? on_grid(t.min_grid, t.spec.scale_block, gi, t.m[gi]) : 0.0f;
      const float x = s == 0.0f ? 0.0f : (t.w[i] - m) / s + centre;
      f(i, gi, s, m, x, std::clamp(std::nearbyint(x), 0.0f, qmax), centre, qmax, k);
    }
}

// Given g = dL/d(fake-quantized weights): dL/dw into gw (may be g itself), dL/ds and dL/dm added
// to gs, gm. Straight through for w inside the clipping range; LSQ for s.
void fake_quant_backward(const QatTensor& t, const float* g, float* gw, float* gs, float* gm) {
  for_each_weight(t, [&](size_t i, size_t gi, float s, float, float x, float q, float centre, float qmax, float k) {
    const float gi_w = g[i];
    if (s == 0.0f) {
      gw[i] = 0.0f;
      gm[gi] += gi_w;
    } else if (x >= 0.0f && x <= qmax) {
      gw[i] = gi_w;
      gs[gi] += gi_w * (q - x) * k;
    } else {
      gw[i] = 0.0f;
      gs[gi] += gi_w * (q - centre) * k;
      gm[gi] += gi_w;
    }
  });
}

// The tensor re-encoded with its own spec from the trained latent weights and params; `changed`
// gets the number of codes that differ from `before`.
QuantEncoding encode_trained(const QatTensor& t, int64_t* changed, const QuantEncoding& before) {
  QuantRowsBuilder b(t.spec, t.rows, t.cols);
  if (t.spec.scale_dtype == DType::kU8) b.set_scale_grid_meta(t.scale_grid, t.min_grid);
  const int64_t stride = quant_row_stride(before, t.cols);
  *changed = 0;
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t g = 0; g < t.gpr; ++g) {
      const size_t gi = static_cast<size_t>(r * t.gpr + g);
      const GroupParams p = b.set_params(r, g, GroupParams{t.s[gi], t.has_mins() ? t.m[gi] : 0.0f});
      for (int64_t c = g * t.gsize; c < std::min(t.cols, (g + 1) * t.gsize); ++c) {
        const uint32_t q = quantize_value(t.spec, p, t.w[static_cast<size_t>(r * t.cols + c)]);
        b.set_code(r, c, q);
        *changed += q != quant_code_at(before, before.codes.data() + r * stride, c);
      }
    }
  return b.finish();
}

}  // namespace

void Adam::resize(size_t n) {
  m.assign(n, 0.0f);
  v.assign(n, 0.0f);
}

void Adam::step(float* x, const float* g, size_t n, const std::function<float(size_t)>& lr, int64_t t) {
  constexpr double b1 = 0.9, b2 = 0.999, eps = 1e-20;
  const double c1 = 1.0 - std::pow(b1, static_cast<double>(t)), c2 = 1.0 - std::pow(b2, static_cast<double>(t));
  for (size_t i = 0; i < n; ++i) {
    m[i] = static_cast<float>(b1 * m[i] + (1 - b1) * g[i]);
    v[i] = static_cast<float>(b2 * v[i] + (1 - b2) * static_cast<double>(g[i]) * g[i]);
    const double mh = m[i] / c1, vh = v[i] / c2;
    x[i] -= static_cast<float>(lr(i) * mh / (std::sqrt(vh) + eps));
  }
}

QatTensor make_qat_tensor(const Tensor& t, std::vector<float> values, size_t param) {
  const QuantEncoding& q = std::get<QuantEncoding>(t.encoding->node);
  QatTensor x;
  x.name = t.name;
  x.param = param;
  x.spec = spec_of(q);
  x.rows = t.rows();
  x.cols = t.cols();
  x.gpr = quant_groups_per_row(q, x.cols);
  x.gsize = q.group_size > 0 ? q.group_size : x.cols;
  x.w = std::move(values);
  x.s.resize(static_cast<size_t>(x.rows * x.gpr));
  x.m.resize(x.s.size());
  for (size_t g = 0; g < x.s.size(); ++g) {
    x.s[g] = quant_group_scale(q, static_cast<int64_t>(g));
    x.m[g] = quant_group_min(q, static_cast<int64_t>(g));
  }
  x.s0 = x.s;
  if (q.scale_dtype == DType::kU8) {
    x.scale_grid = meta_floats(q.scale_meta);
    x.min_grid = meta_floats(q.min_meta);
  }
  x.aw.resize(x.w.size());
  x.as.resize(x.s.size());
  x.am.resize(x.m.size());
  return x;
}

namespace {

// The fake-quantization constants of t: code axis centre and maximum, the scale's factor (2 for
// binary).
struct FakeQuant {
  float centre = 0, qmax = 1, k = 1;
  explicit FakeQuant(const QatTensor& t) {
    code_axis(t.spec, &centre, &qmax);
    k = t.spec.scheme == QuantScheme::kBinary ? 2.0f : 1.0f;
  }
  // Group gi's stored (on-grid) scale, times k, and min.
  void params(const QatTensor& t, size_t gi, float* s, float* m) const {
    *s = on_grid(t.scale_grid, t.spec.scale_block, gi, t.s[gi]) * k;
    *m = t.has_mins() ? on_grid(t.min_grid, t.spec.scale_block, gi, t.m[gi]) : 0.0f;
  }
  // The value of latent w under (s, m): for_each_weight's, bit for bit (clamping before rounding
  // gives the same codes, and adding and subtracting 1.5 · 2^23 rounds half to even like
  // std::nearbyint over the codes' range), in a form the compiler vectorizes.
  float value(float w, float s, float m) const {
    if (s == 0.0f) return m;
    constexpr float kMagic = 12582912.0f;
    const float x = std::min(std::max((w - m) / s + centre, 0.0f), qmax);
    return ((x + kMagic) - kMagic - centre) * s + m;
  }
};

}  // namespace

void fake_quant_rows(const QatTensor& t, int64_t r0, int64_t r1, float* out) {
  const FakeQuant fq(t);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t g = 0; g < t.gpr; ++g) {
      float s = 0, m = 0;
      fq.params(t, static_cast<size_t>(r * t.gpr + g), &s, &m);
      const float* w = t.w.data() + r * t.cols;
      float* o = out + (r - r0) * t.cols;
      for (int64_t c = g * t.gsize; c < std::min(t.cols, (g + 1) * t.gsize); ++c) o[c] = fq.value(w[c], s, m);
    }
}

void fake_quant_cols(const QatTensor& t, int64_t c0, int64_t c1, float* out) {
  const FakeQuant fq(t);
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t g = c0 / t.gsize; g * t.gsize < c1; ++g) {
      float s = 0, m = 0;
      fq.params(t, static_cast<size_t>(r * t.gpr + g), &s, &m);
      const float* w = t.w.data() + r * t.cols;
      for (int64_t c = std::max(c0, g * t.gsize); c < std::min(c1, (g + 1) * t.gsize); ++c)
        out[(c - c0) * t.rows + r] = fq.value(w[c], s, m);
    }
}

void fake_quant(const QatTensor& t, float* out) { fake_quant_rows(t, 0, t.rows, out); }

double cosine_decay(int64_t step, int64_t steps) {
  return 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step - 1) / static_cast<double>(steps)));
}

void qat_update(QatTensor& t, std::vector<float>& g, const QatOptions& o, double decay, int64_t step) {
  std::vector<float> gs(t.s.size(), 0.0f), gm(t.m.size(), 0.0f);
  fake_quant_backward(t, g.data(), g.data(), gs.data(), gm.data());
  auto unit = [&](size_t gi) { return static_cast<float>(std::abs(t.s0[gi])); };
  t.aw.step(
      t.w.data(), g.data(), g.size(),
      [&](size_t i) {
        return static_cast<float>(o.lr * decay) *
               unit(static_cast<size_t>((i / t.cols) * t.gpr + (i % t.cols) / t.gsize));
      },
      step);
  t.as.step(
      t.s.data(), gs.data(), gs.size(), [&](size_t gi) { return static_cast<float>(o.lr_scales * decay) * unit(gi); },
      step);
  if (t.has_mins())
    t.am.step(
        t.m.data(), gm.data(), gm.size(), [&](size_t gi) { return static_cast<float>(o.lr_scales * decay) * unit(gi); },
        step);
  // Scales keep their sign (symmetric fits may choose a negative one) and stay away from 0.
  for (size_t gi = 0; gi < t.s.size(); ++gi)
    if (t.s[gi] * t.s0[gi] < 1e-3f * t.s0[gi] * t.s0[gi]) t.s[gi] = 1e-3f * t.s0[gi];
}

void norm_update(std::vector<float>& gain, Adam& adam, std::vector<float>& g, const QatOptions& o, double decay,
                 int64_t step) {
  adam.step(
      gain.data(), g.data(), g.size(), [&](size_t) { return static_cast<float>(o.lr_norms * decay); }, step);
}

void store_trained(Model& model, const QatTensor& t, nlohmann::json& tensors) {
  const Tensor old = model.get(t.name);
  int64_t changed = 0;
  QuantEncoding enc = encode_trained(t, &changed, std::get<QuantEncoding>(old.encoding->node));
  tensors[t.name] = {{"spec", describe_quant_spec(t.spec)},
                     {"codes_changed", static_cast<double>(changed) / static_cast<double>(t.rows * t.cols)}};
  replace_and_release(model, Tensor{t.name, old.shape, std::make_shared<const Encoding>(Encoding{std::move(enc)})});
}

void store_norm(Model& model, const std::string& name, const std::vector<float>& values) {
  const Tensor& old = model.get(name);
  const auto* dense = std::get_if<DenseEncoding>(&old.encoding->node);
  replace_and_release(model, make_dense(old.name, old.shape, values, dense ? dense->dtype : DType::kF32));
}

std::vector<std::vector<int32_t>> noisy_sequences(std::vector<std::vector<int32_t>> seqs, double noise, uint64_t seed,
                                                  int64_t vocab) {
  if (noise <= 0) return seqs;
  std::mt19937_64 rng(seed ^ 0x71a7u);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  for (auto& seq : seqs)
    for (size_t i = 1; i < seq.size(); ++i)
      if (u(rng) < noise) seq[i] = id(rng);
  return seqs;
}

}  // namespace llmc
