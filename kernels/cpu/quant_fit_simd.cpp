// Highway SIMD loops of round-to-nearest quantization (quant_fit.h), compiled once per target
// (EMU128, AVX2, AVX-512) with runtime dispatch, and their scalar references. The lane-ordered
// reductions keep the references' 8 lanes: min/max as two 4-lane vectors on every target, the
// error as one 8-lane vector where the target has one (else two 4-lane ones); the code loop is
// elementwise and runs at full width.
#include <cmath>

#include "kernels/cpu/quant_fit.h"
#include "kernels/cpu/quant_simd.h"

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/quant_fit_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D4 = hn::CappedTag<float, 4>;  // lanes 0-3 and 4-7 of the references' 8 lanes
using V4 = hn::Vec<D4>;

// Keeps a unless b is strictly smaller (larger): the references' std::min/std::max step.
HWY_INLINE V4 keep_min(V4 a, V4 b) { return hn::IfThenElse(hn::Lt(b, a), b, a); }
HWY_INLINE V4 keep_max(V4 a, V4 b) { return hn::IfThenElse(hn::Gt(b, a), b, a); }

void MinMax8(const float* x, int64_t n, float* lo, float* hi) {
  const D4 d;
  if (hn::Lanes(d) != 4 || n < 16) return min_max_ref(x, n, *lo, *hi);
  V4 l0 = hn::LoadU(d, x), l1 = hn::LoadU(d, x + 4), h0 = l0, h1 = l1;
  int64_t i = 8;
  for (; i + 8 <= n; i += 8) {
    const V4 a = hn::LoadU(d, x + i), b = hn::LoadU(d, x + i + 4);
    l0 = keep_min(l0, a);
    l1 = keep_min(l1, b);
    h0 = keep_max(h0, a);
    h1 = keep_max(h1, b);
  }
  alignas(16) float l[8], h[8];
  hn::Store(l0, d, l);
  hn::Store(l1, d, l + 4);
  hn::Store(h0, d, h);
  hn::Store(h1, d, h + 4);
  min_max_finish(l, h, x, i, n, *lo, *hi);
}

void GroupMinMax(const float* x, int64_t n, int64_t group, float* lo, float* hi) {
  for (int64_t g = 0, c0 = 0; c0 < n; ++g, c0 += group) MinMax8(x + c0, std::min(group, n - c0), lo + g, hi + g);
}

void GroupAbsMax(const float* x, int64_t n, int64_t group, float* amax) {
  const D4 d;
  for (int64_t g = 0, c0 = 0; c0 < n; ++g, c0 += group) {
    const int64_t len = std::min(group, n - c0);
    const float* p = x + c0;
    // max |x| with NaN skipped: a NaN lane never compares greater, so any lane order gives the
    // references' value (a maximum is unique; only its sign could differ, and |x| has none).
    V4 m = hn::Zero(d);
    int64_t i = 0;
    if (hn::Lanes(d) == 4)
      for (; i + 4 <= len; i += 4) {
        const V4 a = hn::Abs(hn::LoadU(d, p + i));
        m = hn::IfThenElse(hn::Gt(a, m), a, m);
      }
    alignas(16) float lanes[4] = {};
    hn::Store(m, d, lanes);
    float best = 0;
    for (int j = 0; j < static_cast<int>(hn::Lanes(d)) && i > 0; ++j)
      if (lanes[j] > best) best = lanes[j];
    for (; i < len; ++i)
      if (std::fabs(p[i]) > best) best = std::fabs(p[i]);
    amax[g] = best;
  }
}

void RtnCodes(const float* x, int64_t n, int64_t group, const RtnCodeMap* maps, uint8_t* q) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const hn::Rebind<uint8_t, decltype(d)> d8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto half = hn::Set(d, 0.5f), minus1 = hn::Set(d, -1.0f);
  const auto one = hn::Set(di, 1);
  for (int64_t g = 0, c0 = 0; c0 < n; ++g, c0 += group) {
    const RtnCodeMap& m = maps[g];
    const int64_t end = std::min(n, c0 + group);
    const auto vmin = hn::Set(d, m.min), vmul = hn::Set(d, m.mul), vadd = hn::Set(d, m.add);
    const auto vmax = hn::Set(d, m.max_code);
    int64_t i = c0;
    for (; i + lanes <= end; i += lanes) {
      auto v = hn::Add(hn::Mul(hn::Sub(hn::LoadU(d, x + i), vmin), vmul), vadd);
      v = hn::IfThenElse(hn::Eq(v, v), v, vadd);
      const auto y = hn::Min(hn::Max(hn::Sub(v, half), minus1), vmax);  // y is not NaN: any lane order
      const auto t = hn::ConvertTo(di, y);                              // truncates toward zero
      const auto c = hn::IfThenElse(hn::RebindMask(di, hn::Lt(hn::ConvertTo(d, t), y)), hn::Add(t, one), t);
      hn::StoreU(hn::DemoteTo(d8, hn::Max(c, hn::Zero(di))), d8, q + i);
    }
    for (; i < end; ++i) q[i] = static_cast<uint8_t>(rtn_code(m, x[i]));
  }
}

// Error sums of one group in the references' 8 lanes, as kVecs vectors of 8 / kVecs lanes (one
// full 8-lane vector where the target has it, else two 4-lane ones).
template <class D, int kVecs>
void GroupError(D d, const float* w, const uint8_t* c, int64_t len, const RtnDequantMap& m, float k, float z,
                double* err, double* norm) {
  using V = hn::Vec<D>;
  const hn::RebindToSigned<D> di;
  const hn::Rebind<uint8_t, D> d8;
  constexpr int64_t kLanes = 8 / kVecs;
  const V vk = hn::Set(d, k), vz = hn::Set(d, z), scale = hn::Set(d, m.scale), min = hn::Set(d, m.min);
  V e[kVecs], s[kVecs];
  for (int v = 0; v < kVecs; ++v) e[v] = s[v] = hn::Zero(d);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8)
    for (int v = 0; v < kVecs; ++v) {
      const int64_t at = i + v * kLanes;
      const V u = hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, c + at)));
      const V a = hn::LoadU(d, w + at);
      const V diff = hn::Sub(a, hn::Add(hn::Mul(hn::Sub(hn::Mul(vk, u), vz), scale), min));
      e[v] = hn::Add(e[v], hn::Mul(diff, diff));
      s[v] = hn::Add(s[v], hn::Mul(a, a));
    }
  alignas(32) float el[8], sl[8];
  for (int v = 0; v < kVecs; ++v) {
    hn::Store(e[v], d, el + v * kLanes);
    hn::Store(s[v], d, sl + v * kLanes);
  }
  for (; i < len; ++i) {
    const float diff = w[i] - ((k * static_cast<float>(c[i]) - z) * m.scale + m.min);
    el[i % 8] += diff * diff;
    sl[i % 8] += w[i] * w[i];
  }
  for (int j = 0; j < 8; ++j) {
    *err += el[j];
    *norm += sl[j];
  }
}

void RtnError(const float* x, const uint8_t* q, int64_t n, int64_t group, const RtnDequantMap* maps, float k, float z,
              double* err, double* norm) {
  const hn::CappedTag<float, 8> d8;
  const D4 d4;
  const bool full = hn::Lanes(d8) == 8;
  if (!full && hn::Lanes(d4) != 4) return rtn_error_ref(x, q, n, group, maps, k, z, *err, *norm);
  for (int64_t g = 0, c0 = 0; c0 < n; ++g, c0 += group) {
    const int64_t len = std::min(group, n - c0);
    if (full)
      GroupError<decltype(d8), 1>(d8, x + c0, q + c0, len, maps[g], k, z, err, norm);
    else
      GroupError<D4, 2>(d4, x + c0, q + c0, len, maps[g], k, z, err, norm);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels {

HWY_EXPORT(GroupMinMax);
HWY_EXPORT(GroupAbsMax);
HWY_EXPORT(RtnCodes);
HWY_EXPORT(RtnError);

void min_max_ref(const float* x, int64_t n, float& lo, float& hi) {
  if (n < 16) return min_max_finish(nullptr, nullptr, x, 1, n, lo, hi);
  float l[8], h[8];
  for (int j = 0; j < 8; ++j) l[j] = h[j] = x[j];
  int64_t i = 8;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      l[j] = std::min(l[j], x[i + j]);
      h[j] = std::max(h[j], x[i + j]);
    }
  min_max_finish(l, h, x, i, n, lo, hi);
}

void widen_half(const uint16_t* src, int64_t n, bool bf16, float* dst) { simd::widen_half(src, n, bf16, dst); }

void group_min_max(const float* x, int64_t n, int64_t group, float* lo, float* hi) {
  HWY_DYNAMIC_DISPATCH(GroupMinMax)(x, n, group, lo, hi);
}
void group_min_max_ref(const float* x, int64_t n, int64_t group, float* lo, float* hi) {
  for (int64_t g = 0, c0 = 0; c0 < n; ++g, c0 += group) min_max_ref(x + c0, std::min(group, n - c0), lo[g], hi[g]);
}

void group_abs_max(const float* x, int64_t n, int64_t group, float* amax) {
  HWY_DYNAMIC_DISPATCH(GroupAbsMax)(x, n, group, amax);
}
void group_abs_max_ref(const float* x, int64_t n, int64_t group, float* amax) {
  for (int64_t g = 0, c0 = 0; c0 < n; ++g, c0 += group) {
    float best = 0;
    for (int64_t i = c0; i < std::min(n, c0 + group); ++i)
      if (std::fabs(x[i]) > best) best = std::fabs(x[i]);
    amax[g] = best;
  }
}

void rtn_codes(const float* x, int64_t n, int64_t group, const RtnCodeMap* maps, uint8_t* q) {
  HWY_DYNAMIC_DISPATCH(RtnCodes)(x, n, group, maps, q);
}
void rtn_codes_ref(const float* x, int64_t n, int64_t group, const RtnCodeMap* maps, uint8_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = static_cast<uint8_t>(rtn_code(maps[i / group], x[i]));
}

void rtn_error(const float* x, const uint8_t* q, int64_t n, int64_t group, const RtnDequantMap* maps, float k, float z,
               double& err, double& norm) {
  HWY_DYNAMIC_DISPATCH(RtnError)(x, q, n, group, maps, k, z, &err, &norm);
}
void rtn_error_ref(const float* x, const uint8_t* q, int64_t n, int64_t group, const RtnDequantMap* maps, float k,
                   float z, double& err, double& norm) {
  for (int64_t g = 0, c0 = 0; c0 < n; ++g, c0 += group) {
    float e[8] = {}, s[8] = {};
    for (int64_t i = c0; i < std::min(n, c0 + group); ++i) {
      const float v = (k * static_cast<float>(q[i]) - z) * maps[g].scale + maps[g].min;
      const float diff = x[i] - v;
      e[(i - c0) % 8] += diff * diff;
      s[(i - c0) % 8] += x[i] * x[i];
    }
    for (int j = 0; j < 8; ++j) {
      err += e[j];
      norm += s[j];
    }
  }
}

}  // namespace llmc::kernels
#endif  // HWY_ONCE
