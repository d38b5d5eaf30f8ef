// Quantization arithmetic shared by every quantization pass: spec checks, group fitting (minmax,
// clipping search, least-squares refit, binary/ternary optimal scales), rounding and row packing.
#include "passes/quant/quant_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace llmc {

namespace {

// What each scheme allows; validate_quant_spec and quant_encoded_bytes read it.
struct SpecRule {
  QuantScheme scheme;
  int min_bits, max_bits;
};
constexpr SpecRule kSpecRules[] = {
    {QuantScheme::kSymmetric, 2, 8},
    {QuantScheme::kAsymmetric, 2, 8},
    {QuantScheme::kBinary, 1, 1},
    {QuantScheme::kTernary, 2, 2},
};

bool spec_has_mins(const QuantSpec& s) {
  return s.scheme == QuantScheme::kAsymmetric || (s.scheme == QuantScheme::kBinary && s.binary_two_level);
}

int64_t spec_groups_per_row(const QuantSpec& s, int64_t cols) {
  if (s.group_size <= 0 || s.group_size >= cols) return 1;
  return (cols + s.group_size - 1) / s.group_size;
}

int64_t spec_row_stride(const QuantSpec& s, int64_t cols) {
  if (s.scheme == QuantScheme::kTernary && s.trits5) return (cols + 4) / 5;
  return (cols * s.bits + 7) / 8;
}

constexpr float kF16Max = 65504.0f;

// The value the stored scale dtype will give back (u8 is snapped later, by the builder).
float round_to_dtype(DType dtype, float x) {
  if (!std::isfinite(x)) x = 0.0f;
  switch (dtype) {
    case DType::kF16: return f16_to_f32(f32_to_f16(std::clamp(x, -kF16Max, kF16Max)));
    case DType::kBF16: return bf16_to_f32(f32_to_bf16(x));
    default: return x;
  }
}

GroupParams round_params(const QuantSpec& spec, GroupParams p) {
  p.scale = round_to_dtype(spec.scale_dtype, p.scale);
  p.min = spec_has_mins(spec) ? round_to_dtype(spec.scale_dtype, p.min) : 0.0f;
  return p;
}

// Σ imp (w - dequant(quantize(w)))² under params p.
double group_error(const QuantSpec& spec, const GroupParams& p, const float* w, const float* imp, int64_t n) {
  double err = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(w[i]) - dequantize_code(spec, p, quantize_value(spec, p, w[i]));
    err += (imp ? imp[i] : 1.0) * d * d;
  }
  return err;
}

// Weighted least squares refit of (scale[, min]) given the codes p assigns: minimises
// Σ imp (w - (u * scale + min))² where u is the code's offset (q - zero point) — for schemes with a
// min — or Σ imp (w - u * scale)² otherwise. Keeps p when the system is degenerate.
GroupParams refit(const QuantSpec& spec, const GroupParams& p, const float* w, const float* imp, int64_t n) {
  double s_w = 0, s_u = 0, s_uu = 0, s_uw = 0, s_ww = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double wt = imp ? imp[i] : 1.0;
    // u: the code's multiplier of scale, i.e. quant_value with scale 1 and min 0.
    const double u = quant_value(spec.scheme, spec.bits, quantize_value(spec, p, w[i]), 1.0f, 0.0f);
    s_w += wt;
    s_u += wt * u;
    s_uu += wt * u * u;
    s_uw += wt * u * w[i];
    s_ww += wt * w[i];
  }
  GroupParams out = p;
  if (spec_has_mins(spec)) {
    const double det = s_w * s_uu - s_u * s_u;
    if (!(det > 1e-12 * std::max(1.0, s_w * s_uu))) return p;
    out.scale = static_cast<float>((s_w * s_uw - s_u * s_ww) / det);
    out.min = static_cast<float>((s_uu * s_ww - s_u * s_uw) / det);
  } else {
    if (!(s_uu > 0)) return p;
    out.scale = static_cast<float>(s_uw / s_uu);
  }
  return out;
}

// Keeps the candidate with the lowest error (first one on ties); candidates are rounded first so the
// error is the one decode will see.
struct BestParams {
  const QuantSpec& spec;
  const float* w;
  const float* imp;
  int64_t n;
  GroupParams best{};
  double best_err = std::numeric_limits<double>::infinity();
  void offer(GroupParams p) {
    p = round_params(spec, p);
    const double err = group_error(spec, p, w, imp, n);
    if (err < best_err) {
      best_err = err;
      best = p;
    }
  }
};

// Ratios 1, 1 - step, ..., min_ratio (just 1 when the search is off).
std::vector<double> clip_ratios(const ScaleSearch& search) {
  std::vector<double> r{1.0};
  for (int i = 1; i <= search.steps; ++i) r.push_back(1.0 - (1.0 - search.min_ratio) * i / search.steps);
  return r;
}

GroupParams fit_symmetric(const QuantSpec& spec, const float* w, const float* imp, int64_t n, const ScaleSearch& s) {
  // Two base scales: max|w| on the positive end (±(2^(b-1) - 1) levels, as Q8_0) and the signed
  // extreme on the -2^(b-1) end (as Q4_0, which uses every level).
  float amax = 0, extreme = 0;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(w[i]) > amax) {
      amax = std::fabs(w[i]);
      extreme = w[i];
    }
  const float half = static_cast<float>(1 << (spec.bits - 1));
  BestParams best{spec, w, imp, n};
  for (double r : clip_ratios(s)) {
    for (float base : {amax / (half - 1), -extreme / half}) {
      const GroupParams p{static_cast<float>(base * r), 0.0f};
      best.offer(p);
      if (s.steps > 0) best.offer(refit(spec, round_params(spec, p), w, imp, n));
    }
  }
  return best.best;
}

GroupParams fit_asymmetric(const QuantSpec& spec, const float* w, const float* imp, int64_t n, const ScaleSearch& s) {
  float lo = w[0], hi = w[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  const double levels = static_cast<double>((1 << spec.bits) - 1);
  const double mid = 0.5 * (static_cast<double>(lo) + hi), half_range = 0.5 * (static_cast<double>(hi) - lo);
  BestParams best{spec, w, imp, n};
  for (double r : clip_ratios(s)) {
    const double a = mid - half_range * r, b = mid + half_range * r;
    const GroupParams p{static_cast<float>((b - a) / levels), static_cast<float>(a)};
    best.offer(p);
    if (s.steps > 0) best.offer(refit(spec, round_params(spec, p), w, imp, n));
  }
  return best.best;
}

// Binary: one level pair ±scale (scale = weighted mean |w|, the least-squares optimum for sign
// codes), or two free levels min ± scale from a weighted 1-D two-means.
GroupParams fit_binary(const QuantSpec& spec, const float* w, const float* imp, int64_t n) {
  double sw = 0, swa = 0, swx = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double wt = imp ? imp[i] : 1.0;
    sw += wt;
    swa += wt * std::fabs(w[i]);
    swx += wt * w[i];
  }
  if (!(sw > 0)) return {};
  if (!spec.binary_two_level) return round_params(spec, {static_cast<float>(swa / sw), 0.0f});
  double threshold = swx / sw, lo = threshold, hi = threshold;
  for (int iter = 0; iter < 16; ++iter) {
    double s0 = 0, n0 = 0, s1 = 0, n1 = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double wt = imp ? imp[i] : 1.0;
      if (w[i] > threshold) {
        s1 += wt * w[i];
        n1 += wt;
      } else {
        s0 += wt * w[i];
        n0 += wt;
      }
    }
    const double new_lo = n0 > 0 ? s0 / n0 : threshold, new_hi = n1 > 0 ? s1 / n1 : threshold;
    if (new_lo == lo && new_hi == hi) break;
    lo = new_lo;
    hi = new_hi;
    threshold = 0.5 * (lo + hi);
  }
  return round_params(spec, {static_cast<float>(0.5 * (hi - lo)), static_cast<float>(0.5 * (hi + lo))});
}

// Ternary: for a support of the k largest |w|, the optimal scale is Σ imp|w| / Σ imp over it and the
// error drops by (Σ imp|w|)² / Σ imp; the best k is found exactly over all k (the ~0.7·mean|w|
// threshold rule is the usual approximation of this optimum).
GroupParams fit_ternary(const QuantSpec& spec, const float* w, const float* imp, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return std::fabs(w[a]) > std::fabs(w[b]); });
  double sa = 0, sw = 0, best_gain = 0, best_scale = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = order[static_cast<size_t>(k)];
    const double wt = imp ? imp[i] : 1.0;
    sa += wt * std::fabs(w[i]);
    sw += wt;
    if (sw > 0 && sa * sa / sw > best_gain) {
      best_gain = sa * sa / sw;
      best_scale = sa / sw;
    }
  }
  return round_params(spec, {static_cast<float>(best_scale), 0.0f});
}

}  // namespace

Result<void> validate_quant_spec(const QuantSpec& spec) {
  const SpecRule* rule = nullptr;
  for (const SpecRule& r : kSpecRules)
    if (r.scheme == spec.scheme) rule = &r;
  if (!rule) return make_error(ErrorCode::kInvalidArgument, "unknown quantization scheme ", int(spec.scheme));
  const char* name = quant_scheme_name(spec.scheme);
  if (spec.bits < rule->min_bits || spec.bits > rule->max_bits)
    return make_error(
        ErrorCode::kInvalidArgument, "quantization scheme ", name, " takes ",
        rule->min_bits == rule->max_bits ? str_cat(rule->min_bits) : str_cat(rule->min_bits, "..", rule->max_bits),
        " bits, not ", spec.bits);
  if (spec.group_size < 0)
    return make_error(ErrorCode::kInvalidArgument, "group size must be >= 0 (0 = whole row), not ", spec.group_size);
  const DType sd = spec.scale_dtype;
  if (sd != DType::kF32 && sd != DType::kF16 && sd != DType::kBF16 && sd != DType::kU8)
    return make_error(ErrorCode::kInvalidArgument, "scale dtype must be f32, f16, bf16 or u8, not ", dtype_name(sd));
  if (sd == DType::kU8 && spec.scale_block <= 0)
    return make_error(ErrorCode::kInvalidArgument, "u8 scales need scale_block > 0, not ", spec.scale_block);
  if (spec.trits5 && spec.scheme != QuantScheme::kTernary)
    return make_error(ErrorCode::kInvalidArgument, "trits5 packing is for the ternary scheme only");
  if (spec.binary_two_level && spec.scheme != QuantScheme::kBinary)
    return make_error(ErrorCode::kInvalidArgument, "two-level scales are for the binary scheme only");
  return {};
}

std::string describe_quant_spec(const QuantSpec& spec) {
  std::string scale(dtype_name(spec.scale_dtype));
  if (spec.scale_dtype == DType::kU8) scale += str_cat("/", spec.scale_block);
  return str_cat("q", spec.bits, " ", quant_scheme_name(spec.scheme), spec.binary_two_level ? " two-level" : "", " g",
                 spec.group_size == 0 ? std::string("row") : std::to_string(spec.group_size),
                 spec.trits5 ? " trits5" : "", " ", scale);
}

uint64_t quant_encoded_bytes(const QuantSpec& spec, int64_t rows, int64_t cols) {
  const uint64_t r = static_cast<uint64_t>(rows);
  const uint64_t groups = r * static_cast<uint64_t>(spec_groups_per_row(spec, cols));
  const uint64_t tables = spec_has_mins(spec) ? 2 : 1;
  uint64_t bytes = r * static_cast<uint64_t>(spec_row_stride(spec, cols));
  bytes += tables * groups * static_cast<uint64_t>(dtype_bytes(spec.scale_dtype));
  if (spec.scale_dtype == DType::kU8 && spec.scale_block > 0) {
    const uint64_t blocks =
        (groups + static_cast<uint64_t>(spec.scale_block) - 1) / static_cast<uint64_t>(spec.scale_block);
    bytes += tables * blocks * 2 * sizeof(float);
  }
  return bytes;
}

GroupParams fit_group(const QuantSpec& spec, const float* w, const float* imp, int64_t n, const ScaleSearch& search) {
  if (n <= 0) return {};
  // All-zero importance (a dead input column group) carries no preference: fit as uniform.
  if (imp) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += imp[i];
    if (!(total > 0)) imp = nullptr;
  }
  switch (spec.scheme) {
    case QuantScheme::kSymmetric: return fit_symmetric(spec, w, imp, n, search);
    case QuantScheme::kAsymmetric: return fit_asymmetric(spec, w, imp, n, search);
    case QuantScheme::kBinary: return fit_binary(spec, w, imp, n);
    case QuantScheme::kTernary: return fit_ternary(spec, w, imp, n);
  }
  return {};
}

uint32_t quantize_value(const QuantSpec& spec, const GroupParams& p, float v) {
  // x: the value in code units; the nearest code is ceil(x - 0.5) (ties to the lower code).
  double x = 0, max_code = 0;
  const double t = p.scale != 0 && std::isfinite(v) ? (static_cast<double>(v) - p.min) / p.scale : 0.0;
  switch (spec.scheme) {
    case QuantScheme::kSymmetric:
      x = t + (1 << (spec.bits - 1));
      max_code = (1 << spec.bits) - 1;
      if (p.scale == 0) x = 1 << (spec.bits - 1);
      break;
    case QuantScheme::kAsymmetric:
      x = t;
      max_code = (1 << spec.bits) - 1;
      break;
    case QuantScheme::kBinary:
      x = 0.5 * (t + 1);
      max_code = 1;
      break;
    case QuantScheme::kTernary:
      x = t + 1;
      max_code = 2;
      break;
  }
  const double q = std::clamp(std::ceil(x - 0.5), 0.0, max_code);
  return static_cast<uint32_t>(q);
}

QuantRowsBuilder::QuantRowsBuilder(const QuantSpec& spec, int64_t rows, int64_t cols)
    : spec_(spec), rows_(rows), cols_(cols) {
  groups_per_row_ = spec_groups_per_row(spec, cols);
  group_size_ = groups_per_row_ == 1 ? cols : spec.group_size;
  codes_.assign(static_cast<size_t>(rows * cols), 0);
  params_.assign(static_cast<size_t>(rows * groups_per_row_), GroupParams{});
  if (spec.scale_dtype == DType::kU8) {
    scale_u8_.assign(params_.size(), 0);
    if (spec_has_mins(spec)) min_u8_.assign(params_.size(), 0);
  }
}

namespace {

// (step, base) per block of `block` entries so that u8 * step + base spans [min, max] of the block.
std::vector<float> fit_u8_grid(const std::vector<float>& entries, int64_t block) {
  const size_t n = entries.size(), b = static_cast<size_t>(block);
  std::vector<float> meta;
  for (size_t start = 0; start < n; start += b) {
    const size_t end = std::min(n, start + b);
    const auto [lo, hi] = std::minmax_element(entries.begin() + static_cast<std::ptrdiff_t>(start),
                                              entries.begin() + static_cast<std::ptrdiff_t>(end));
    meta.push_back((*hi - *lo) / 255.0f);
    meta.push_back(*lo);
  }
  return meta;
}

uint8_t snap_u8(float v, float step, float base) {
  if (!(step > 0)) return 0;
  const double u = std::round((static_cast<double>(v) - base) / step);
  return static_cast<uint8_t>(std::clamp(u, 0.0, 255.0));
}

}  // namespace

void QuantRowsBuilder::set_scale_grid(std::span<const float> w) {
  LLMC_CHECK(spec_.scale_dtype == DType::kU8 && static_cast<int64_t>(w.size()) == rows_ * cols_);
  std::vector<float> scales(params_.size()), mins(params_.size());
  QuantSpec f32_spec = spec_;
  f32_spec.scale_dtype = DType::kF32;
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t g = 0; g < groups_per_row_; ++g) {
      const int64_t c0 = g * group_size_, n = std::min(cols_, c0 + group_size_) - c0;
      const GroupParams p = fit_group(f32_spec, w.data() + r * cols_ + c0, nullptr, n, ScaleSearch{});
      scales[static_cast<size_t>(r * groups_per_row_ + g)] = p.scale;
      mins[static_cast<size_t>(r * groups_per_row_ + g)] = p.min;
    }
  scale_meta_ = fit_u8_grid(scales, spec_.scale_block);
  if (spec_has_mins(spec_)) min_meta_ = fit_u8_grid(mins, spec_.scale_block);
}

GroupParams QuantRowsBuilder::set_params(int64_t row, int64_t group, const GroupParams& p) {
  const size_t g = static_cast<size_t>(row * groups_per_row_ + group);
  GroupParams out;
  if (spec_.scale_dtype == DType::kU8) {
    LLMC_CHECK(!scale_meta_.empty(), "set_scale_grid() must come before set_params() for u8 scales");
    const size_t b = 2 * (g / static_cast<size_t>(spec_.scale_block));
    scale_u8_[g] = snap_u8(p.scale, scale_meta_[b], scale_meta_[b + 1]);
    out.scale = quant_u8_entry(scale_u8_[g], scale_meta_[b], scale_meta_[b + 1]);
    if (spec_has_mins(spec_)) {
      min_u8_[g] = snap_u8(p.min, min_meta_[b], min_meta_[b + 1]);
      out.min = quant_u8_entry(min_u8_[g], min_meta_[b], min_meta_[b + 1]);
    }
  } else {
    out = round_params(spec_, p);
  }
  params_[g] = out;
  return out;
}

void QuantRowsBuilder::set_code(int64_t row, int64_t col, uint32_t q) {
  codes_[static_cast<size_t>(row * cols_ + col)] = static_cast<uint8_t>(q);
}

GroupParams QuantRowsBuilder::params(int64_t row, int64_t group) const {
  return params_[static_cast<size_t>(row * groups_per_row_ + group)];
}

QuantEncoding QuantRowsBuilder::finish() const {
  QuantEncoding q;
  q.bits = spec_.bits;
  q.scheme = spec_.scheme;
  q.group_size = spec_.group_size;
  q.scale_dtype = spec_.scale_dtype;
  q.packing = spec_.scheme == QuantScheme::kTernary && spec_.trits5 ? QuantPacking::kTrits5 : QuantPacking::kBits;
  const int64_t stride = quant_row_stride(q, cols_);
  std::vector<uint8_t> packed(static_cast<size_t>(rows_ * stride), 0);
  for (int64_t r = 0; r < rows_; ++r) {
    uint8_t* out = packed.data() + r * stride;
    const uint8_t* in = codes_.data() + r * cols_;
    if (q.packing == QuantPacking::kTrits5) {
      static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
      for (int64_t c = 0; c < cols_; ++c) out[c / 5] = static_cast<uint8_t>(out[c / 5] + in[c] * kPow3[c % 5]);
      continue;
    }
    for (int64_t c = 0; c < cols_; ++c) {
      const int64_t bit = c * q.bits;
      const uint32_t v = static_cast<uint32_t>(in[c]) << (bit & 7);
      out[bit >> 3] = static_cast<uint8_t>(out[bit >> 3] | (v & 0xff));
      if ((bit & 7) + q.bits > 8) out[(bit >> 3) + 1] = static_cast<uint8_t>(out[(bit >> 3) + 1] | (v >> 8));
    }
  }
  q.codes = Bytes::owned(std::move(packed));
  const bool mins = spec_has_mins(spec_);
  auto table = [&](bool want_min) -> Bytes {
    if (spec_.scale_dtype == DType::kU8) return Bytes::from_vector(want_min ? min_u8_ : scale_u8_);
    std::vector<uint8_t> raw(params_.size() * static_cast<size_t>(dtype_bytes(spec_.scale_dtype)));
    for (size_t g = 0; g < params_.size(); ++g) {
      const float v = want_min ? params_[g].min : params_[g].scale;
      uint8_t* dst = raw.data() + g * static_cast<size_t>(dtype_bytes(spec_.scale_dtype));
      if (spec_.scale_dtype == DType::kF32) {
        std::memcpy(dst, &v, 4);
      } else {
        const uint16_t h = spec_.scale_dtype == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(dst, &h, 2);
      }
    }
    return Bytes::owned(std::move(raw));
  };
  q.scales = table(false);
  if (mins) q.mins = table(true);
  if (spec_.scale_dtype == DType::kU8) {
    q.scale_block = spec_.scale_block;
    q.scale_meta = Bytes::from_vector(scale_meta_);
    if (mins) q.min_meta = Bytes::from_vector(min_meta_);
  }
  return q;
}

QuantEncoding quantize_rtn(const QuantSpec& spec, std::span<const float> w, int64_t rows, int64_t cols,
                           std::span<const float> col_imp, const ScaleSearch& search, std::vector<float>* dequant) {
  LLMC_CHECK(static_cast<int64_t>(w.size()) == rows * cols);
  LLMC_CHECK(col_imp.empty() || static_cast<int64_t>(col_imp.size()) == cols);
  QuantRowsBuilder builder(spec, rows, cols);
  if (spec.scale_dtype == DType::kU8) builder.set_scale_grid(w);
  if (dequant) dequant->assign(w.size(), 0.0f);
  const int64_t gpr = builder.groups_per_row(), gsize = builder.group_size();
  // Rows are independent: the result does not depend on the thread count.
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < gpr; ++g) {
      const int64_t c0 = g * gsize, n = std::min(cols, c0 + gsize) - c0;
      const float* wg = w.data() + r * cols + c0;
      const GroupParams p =
          builder.set_params(r, g, fit_group(spec, wg, col_imp.empty() ? nullptr : col_imp.data() + c0, n, search));
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t q = quantize_value(spec, p, wg[i]);
        builder.set_code(r, c0 + i, q);
        if (dequant) (*dequant)[static_cast<size_t>(r * cols + c0 + i)] = dequantize_code(spec, p, q);
      }
    }
  }
  return builder.finish();
}

}  // namespace llmc
