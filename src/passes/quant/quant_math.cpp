// Quantization arithmetic shared by every quantization pass: spec checks, group fitting (minmax,
// clipping search, least-squares refit, binary/ternary optimal scales), rounding and row packing.
#include "passes/quant/quant_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/cpu/quant_fit.h"

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

// The code map of fixed params (kernels' rtn_code): x = (v - min) * mul + add is v in code units. A
// zero scale maps every value to the code of x = add (sym: the zero code; asym/binary: 0; ternary:
// the zero code).
kernels::RtnCodeMap code_map(const QuantSpec& spec, const GroupParams& p) {
  kernels::RtnCodeMap m;
  const float inv = p.scale != 0 ? 1.0f / p.scale : 0.0f;
  m.min = p.min;
  switch (spec.scheme) {
    case QuantScheme::kSymmetric:
      m.mul = inv;
      m.add = static_cast<float>(1 << (spec.bits - 1));
      m.max_code = static_cast<float>((1 << spec.bits) - 1);
      break;
    case QuantScheme::kAsymmetric:
      m.mul = inv;
      m.max_code = static_cast<float>((1 << spec.bits) - 1);
      break;
    case QuantScheme::kBinary:
      m.mul = 0.5f * inv;
      m.add = 0.5f;
      m.max_code = 1;
      break;
    case QuantScheme::kTernary:
      m.mul = inv;
      m.add = 1;
      m.max_code = 2;
      break;
  }
  if (!std::isfinite(m.mul)) m.mul = 0;
  return m;
}

// Every scheme's decode as (k · q - z) · scale + min (quant_value), for kernels::rtn_error.
void dequant_form(const QuantSpec& spec, float& k, float& z) {
  k = spec.scheme == QuantScheme::kBinary ? 2.0f : 1.0f;
  z = spec.scheme == QuantScheme::kSymmetric ? static_cast<float>(1 << (spec.bits - 1))
      : spec.scheme == QuantScheme::kBinary  ? 1.0f
      : spec.scheme == QuantScheme::kTernary ? 1.0f
                                             : 0.0f;
}

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
  const kernels::RtnCodeMap map = code_map(spec, p);
  double err = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(w[i]) - dequantize_code(spec, p, kernels::rtn_code(map, w[i]));
    err += (imp ? imp[i] : 1.0) * d * d;
  }
  return err;
}

// Weighted least squares refit of (scale[, min]) given the codes p assigns: minimises
// Σ imp (w - (u * scale + min))² where u is the code's offset (q - zero point) — for schemes with a
// min — or Σ imp (w - u * scale)² otherwise. Keeps p when the system is degenerate.
GroupParams refit(const QuantSpec& spec, const GroupParams& p, const float* w, const float* imp, int64_t n) {
  const kernels::RtnCodeMap map = code_map(spec, p);
  double s_w = 0, s_u = 0, s_uu = 0, s_uw = 0, s_ww = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double wt = imp ? imp[i] : 1.0;
    // u: the code's multiplier of scale, i.e. quant_value with scale 1 and min 0.
    const double u = quant_value(spec.scheme, spec.bits, kernels::rtn_code(map, w[i]), 1.0f, 0.0f);
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

// Ratio i of 1, 1 - step, ..., min_ratio (i in [0, steps]; just 1 when the search is off).
double clip_ratio(const ScaleSearch& search, int i) {
  return i == 0 ? 1.0 : 1.0 - (1.0 - search.min_ratio) * i / search.steps;
}

// The signed extreme of a group whose largest |w| is amax: the first w with |w| = amax (0 when
// amax is 0), as the scan `|w| > amax` of the plain fit finds it.
float sym_extreme(const float* w, int64_t n, float amax) {
  if (!(amax > 0)) return 0.0f;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(w[i]) == amax) return w[i];
  return 0.0f;
}

// Plain symmetric RTN params from the group's largest |w|: the Q4_0 candidate only.
GroupParams sym_params(const QuantSpec& spec, const float* w, int64_t n, float amax) {
  const float half = static_cast<float>(1 << (spec.bits - 1));
  return round_params(spec, {-sym_extreme(w, n, amax) / half, 0.0f});
}

// Asymmetric params spanning [lo, hi] shrunk about its middle by ratio r.
GroupParams asym_params(const QuantSpec& spec, float lo, float hi, double r) {
  const double levels = static_cast<double>((1 << spec.bits) - 1);
  const double mid = 0.5 * (static_cast<double>(lo) + hi), half_range = 0.5 * (static_cast<double>(hi) - lo);
  const double a = mid - half_range * r, b = mid + half_range * r;
  return {static_cast<float>((b - a) / levels), static_cast<float>(a)};
}

GroupParams fit_symmetric(const QuantSpec& spec, const float* w, const float* imp, int64_t n, const ScaleSearch& s) {
  float amax = 0;
  kernels::group_abs_max_ref(w, n, n, &amax);
  if (s.steps == 0) return sym_params(spec, w, n, amax);  // plain RTN
  // Two base scales: max|w| on the positive end (±(2^(b-1) - 1) levels, as Q8_0) and the signed
  // extreme on the -2^(b-1) end (as Q4_0, which uses every level).
  const float half = static_cast<float>(1 << (spec.bits - 1)), extreme = sym_extreme(w, n, amax);
  BestParams best{spec, w, imp, n};
  for (int i = 0; i <= s.steps; ++i) {
    const double r = clip_ratio(s, i);
    for (float base : {amax / (half - 1), -extreme / half}) {
      const GroupParams p{static_cast<float>(base * r), 0.0f};
      best.offer(p);
      best.offer(refit(spec, round_params(spec, p), w, imp, n));
    }
  }
  return best.best;
}

GroupParams fit_asymmetric(const QuantSpec& spec, const float* w, const float* imp, int64_t n, const ScaleSearch& s) {
  float lo, hi;
  kernels::min_max_ref(w, n, lo, hi);
  if (s.steps == 0) return round_params(spec, asym_params(spec, lo, hi, 1.0));  // plain RTN
  BestParams best{spec, w, imp, n};
  for (int i = 0; i <= s.steps; ++i) {
    const GroupParams p = asym_params(spec, lo, hi, clip_ratio(s, i));
    best.offer(p);
    best.offer(refit(spec, round_params(spec, p), w, imp, n));
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
  return kernels::rtn_code(code_map(spec, p), v);
}

QuantRowsBuilder::QuantRowsBuilder(const QuantSpec& spec, int64_t rows, int64_t cols, bool packed)
    : spec_(spec), rows_(rows), cols_(cols), packed_(packed) {
  groups_per_row_ = spec_groups_per_row(spec, cols);
  group_size_ = groups_per_row_ == 1 ? cols : spec.group_size;
  layout_.bits = spec.bits;
  layout_.scheme = spec.scheme;
  layout_.group_size = spec.group_size;
  layout_.scale_dtype = spec.scale_dtype;
  layout_.packing = spec.scheme == QuantScheme::kTernary && spec.trits5 ? QuantPacking::kTrits5 : QuantPacking::kBits;
  codes_.assign(static_cast<size_t>(rows * (packed ? quant_row_stride(layout_, cols) : cols)), 0);
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
  for (int64_t r = 0; r < rows_; ++r) grid_params_of_row(r, w.data() + r * cols_, scales.data(), mins.data());
  set_scale_grid(scales, mins);
}

void QuantRowsBuilder::grid_params_of_row(int64_t row, const float* w, float* scales, float* mins) const {
  QuantSpec f32_spec = spec_;
  f32_spec.scale_dtype = DType::kF32;
  for (int64_t g = 0; g < groups_per_row_; ++g) {
    const int64_t c0 = g * group_size_, n = std::min(cols_, c0 + group_size_) - c0;
    const GroupParams p = fit_group(f32_spec, w + c0, nullptr, n, ScaleSearch{});
    scales[row * groups_per_row_ + g] = p.scale;
    mins[row * groups_per_row_ + g] = p.min;
  }
}

void QuantRowsBuilder::set_scale_grid(const std::vector<float>& scales, const std::vector<float>& mins) {
  LLMC_CHECK(spec_.scale_dtype == DType::kU8 && scales.size() == params_.size() && mins.size() == params_.size());
  scale_meta_ = fit_u8_grid(scales, spec_.scale_block);
  if (spec_has_mins(spec_)) min_meta_ = fit_u8_grid(mins, spec_.scale_block);
}

void QuantRowsBuilder::set_scale_grid_meta(std::vector<float> scale_meta, std::vector<float> min_meta) {
  const size_t pairs = 2 * ((params_.size() + static_cast<size_t>(spec_.scale_block) - 1) / spec_.scale_block);
  LLMC_CHECK(spec_.scale_dtype == DType::kU8 && scale_meta.size() == pairs &&
             min_meta.size() == (spec_has_mins(spec_) ? pairs : 0));
  scale_meta_ = std::move(scale_meta);
  min_meta_ = std::move(min_meta);
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

namespace {

// One row of codes (one per byte) into the packing of q; `out` is zeroed, stride bytes.
void pack_row(const QuantEncoding& q, const uint8_t* in, int64_t cols, uint8_t* out) {
  if (q.packing == QuantPacking::kTrits5) {
    static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
    for (int64_t c = 0; c < cols; ++c) out[c / 5] = static_cast<uint8_t>(out[c / 5] + in[c] * kPow3[c % 5]);
    return;
  }
  if (q.bits == 8) {
    std::memcpy(out, in, static_cast<size_t>(cols));
    return;
  }
  if (q.bits == 4) {
    for (int64_t c = 0; c + 1 < cols; c += 2) out[c / 2] = static_cast<uint8_t>(in[c] | in[c + 1] << 4);
    if (cols % 2) out[cols / 2] = in[cols - 1];
    return;
  }
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t bit = c * q.bits;
    const uint32_t v = static_cast<uint32_t>(in[c]) << (bit & 7);
    out[bit >> 3] = static_cast<uint8_t>(out[bit >> 3] | (v & 0xff));
    if ((bit & 7) + q.bits > 8) out[(bit >> 3) + 1] = static_cast<uint8_t>(out[(bit >> 3) + 1] | (v >> 8));
  }
}

}  // namespace

void QuantRowsBuilder::store_row(int64_t row, const uint8_t* codes) {
  LLMC_CHECK(packed_, "store_row needs a packed builder");
  const int64_t stride = quant_row_stride(layout_, cols_);
  pack_row(layout_, codes, cols_, codes_.data() + row * stride);
}

QuantEncoding QuantRowsBuilder::finish() {
  QuantEncoding q = layout_;
  if (packed_) {
    q.codes = Bytes::owned(std::move(codes_));
  } else {
    const int64_t stride = quant_row_stride(q, cols_);
    std::vector<uint8_t> packed(static_cast<size_t>(rows_ * stride), 0);
    // Rows start on byte boundaries: each row is packed by one thread.
#pragma omp parallel for schedule(static) if (rows_ * cols_ > (1 << 16))
    for (int64_t r = 0; r < rows_; ++r) pack_row(q, codes_.data() + r * cols_, cols_, packed.data() + r * stride);
    q.codes = Bytes::owned(std::move(packed));
  }
  const bool mins = spec_has_mins(spec_);
  auto table = [&](bool want_min) -> Bytes {
    if (spec_.scale_dtype == DType::kU8) return Bytes::from_vector(want_min ? min_u8_ : scale_u8_);
    std::vector<uint8_t> raw(params_.size() * static_cast<size_t>(dtype_bytes(spec_.scale_dtype)));
    const int64_t n = static_cast<int64_t>(params_.size());
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t g = 0; g < n; ++g) {
      const GroupParams& p = params_[static_cast<size_t>(g)];
      const float v = want_min ? p.min : p.scale;
      uint8_t* dst = raw.data() + g * dtype_bytes(spec_.scale_dtype);
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

namespace {

// Runs body(r0, r1, rows) over blocks of about 64K weights on the OpenMP threads; `rows` holds
// rows [r0, r1) as f32 (loaded into a per-thread buffer).
template <class Body>
void for_row_blocks(int64_t rows, int64_t cols, const RowLoader& load, const Body& body) {
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, cols));
  const int64_t n_blocks = (rows + block - 1) / block;
#pragma omp parallel if (n_blocks > 1)
  {
    std::vector<float> buf;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t r0 = b * block, r1 = std::min(rows, r0 + block);
      buf.resize(static_cast<size_t>((r1 - r0) * cols));
      load(r0, r1, buf.data());
      body(r0, r1, buf.data());
    }
  }
}

}  // namespace

void tensor_rows_to_f32(const Tensor& t, int64_t r0, int64_t r1, float* out) {
  const auto* d = std::get_if<DenseEncoding>(&t.encoding->node);
  if (!d || (d->dtype != DType::kF16 && d->dtype != DType::kBF16)) return t.rows_to_f32(r0, r1, out);
  const int64_t n = (r1 - r0) * t.cols();
  kernels::widen_half(reinterpret_cast<const uint16_t*>(d->data.data()) + r0 * t.cols(), n, d->dtype == DType::kBF16,
                      out);
}

namespace {

// One row's groups fitted (params set in the builder) and their code maps. Plain RTN of sym/asym
// groups (no clipping search; importance only weighs the search) takes each group's range from the
// SIMD loops and gives the params fit_group gives.
void fit_row(const QuantSpec& spec, QuantRowsBuilder& builder, int64_t r, const float* w, int64_t cols,
             std::span<const float> col_imp, const ScaleSearch& search, std::vector<float>& lo, std::vector<float>& hi,
             kernels::RtnCodeMap* maps, kernels::RtnDequantMap* deq) {
  const int64_t gpr = builder.groups_per_row(), gsize = builder.group_size();
  const bool plain = search.steps == 0;
  const bool asym = plain && spec.scheme == QuantScheme::kAsymmetric;
  const bool sym = plain && spec.scheme == QuantScheme::kSymmetric;
  lo.resize(static_cast<size_t>(gpr));
  hi.resize(lo.size());
  if (asym) kernels::group_min_max(w, cols, gsize, lo.data(), hi.data());
  if (sym) kernels::group_abs_max(w, cols, gsize, lo.data());
  for (int64_t g = 0; g < gpr; ++g) {
    const int64_t c0 = g * gsize, n = std::min(cols, c0 + gsize) - c0;
    const size_t gi = static_cast<size_t>(g);
    const GroupParams fitted =
        asym  ? round_params(spec, asym_params(spec, lo[gi], hi[gi], 1.0))
        : sym ? sym_params(spec, w + c0, n, lo[gi])
              : fit_group(spec, w + c0, col_imp.empty() ? nullptr : col_imp.data() + c0, n, search);
    const GroupParams p = builder.set_params(r, g, fitted);
    maps[g] = code_map(spec, p);
    deq[g] = {p.scale, p.min};
  }
}

}  // namespace

QuantEncoding quantize_rtn_rows(const QuantSpec& spec, int64_t rows, int64_t cols, const RowLoader& load,
                                std::span<const float> col_imp, const ScaleSearch& search, float* dequant,
                                QuantError* error) {
  LLMC_CHECK(col_imp.empty() || static_cast<int64_t>(col_imp.size()) == cols);
  QuantRowsBuilder builder(spec, rows, cols, /*packed=*/true);  // no byte per weight: rows packed as done
  const int64_t gpr = builder.groups_per_row(), gsize = builder.group_size();
  if (spec.scale_dtype == DType::kU8) {  // first pass: the per-block grids from plain RTN params
    std::vector<float> scales(static_cast<size_t>(rows * gpr)), mins(scales.size());
    for_row_blocks(rows, cols, load, [&](int64_t r0, int64_t r1, const float* w) {
      for (int64_t r = r0; r < r1; ++r) builder.grid_params_of_row(r, w + (r - r0) * cols, scales.data(), mins.data());
    });
    builder.set_scale_grid(scales, mins);
  }
  std::vector<double> row_err(error ? static_cast<size_t>(rows) : 0), row_norm(row_err.size());
  float k, z;
  dequant_form(spec, k, z);
  // Rows are independent and each is done by one thread: the result does not depend on threads.
  for_row_blocks(rows, cols, load, [&](int64_t r0, int64_t r1, const float* w) {
    std::vector<float> lo, hi;
    std::vector<kernels::RtnCodeMap> maps(static_cast<size_t>(gpr));
    std::vector<kernels::RtnDequantMap> deq(maps.size());
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    uint8_t* qr = codes.data();
    for (int64_t r = r0; r < r1; ++r) {
      const float* wr = w + (r - r0) * cols;
      fit_row(spec, builder, r, wr, cols, col_imp, search, lo, hi, maps.data(), deq.data());
      kernels::rtn_codes(wr, cols, gsize, maps.data(), qr);
      builder.store_row(r, qr);
      if (dequant)
        for (int64_t g = 0, c0 = 0; c0 < cols; ++g, c0 += gsize) {
          const kernels::RtnDequantMap& m = deq[static_cast<size_t>(g)];
          for (int64_t c = c0; c < std::min(cols, c0 + gsize); ++c)
            dequant[r * cols + c] = quant_value(spec.scheme, spec.bits, qr[c], m.scale, m.min);
        }
      if (error)
        kernels::rtn_error(wr, qr, cols, gsize, deq.data(), k, z, row_err[static_cast<size_t>(r)],
                           row_norm[static_cast<size_t>(r)]);
    }
  });
  if (error) {
    *error = {};
    for (int64_t r = 0; r < rows; ++r) {
      error->err += row_err[static_cast<size_t>(r)];
      error->norm += row_norm[static_cast<size_t>(r)];
    }
  }
  return builder.finish();
}

QuantEncoding quantize_rtn(const QuantSpec& spec, std::span<const float> w, int64_t rows, int64_t cols,
                           std::span<const float> col_imp, const ScaleSearch& search, std::vector<float>* dequant) {
  LLMC_CHECK(static_cast<int64_t>(w.size()) == rows * cols);
  if (dequant) dequant->assign(w.size(), 0.0f);
  const RowLoader load = [&](int64_t r0, int64_t r1, float* out) {
    std::memcpy(out, w.data() + r0 * cols, static_cast<size_t>((r1 - r0) * cols) * sizeof(float));
  };
  return quantize_rtn_rows(spec, rows, cols, load, col_imp, search, dequant ? dequant->data() : nullptr, nullptr);
}

}  // namespace llmc
