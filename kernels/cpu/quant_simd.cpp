// Highway SIMD kernels of Quant linear layers (per-group dot products on unpacked codes, nibble
// unpacking), compiled once per target (EMU128, AVX2, AVX-512) with runtime dispatch.
#include "kernels/cpu/quant_simd.h"

#include <algorithm>

#include "core/dtype.h"

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/quant_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DI32 = hn::RebindToSigned<DF>;

// Loaders of Lanes(DF) per-column values as f32 (vector) and of one value (scalar tail).
struct LoadI8 {
  static HWY_INLINE VF load(DF d, const uint8_t* p) {
    return hn::ConvertTo(
        d, hn::PromoteTo(DI32(), hn::LoadU(hn::Rebind<int8_t, DF>(), reinterpret_cast<const int8_t*>(p))));
  }
  static HWY_INLINE float get(const uint8_t* p) { return static_cast<float>(static_cast<int8_t>(*p)); }
};
struct LoadU8 {
  static HWY_INLINE VF load(DF d, const uint8_t* p) {
    return hn::ConvertTo(d, hn::PromoteTo(DI32(), hn::LoadU(hn::Rebind<uint8_t, DF>(), p)));
  }
  static HWY_INLINE float get(const uint8_t* p) { return static_cast<float>(*p); }
};
struct LoadU8Minus128 {
  static HWY_INLINE VF load(DF d, const uint8_t* p) {
    const DI32 di;
    return hn::ConvertTo(d, hn::Sub(hn::PromoteTo(di, hn::LoadU(hn::Rebind<uint8_t, DF>(), p)), hn::Set(di, 128)));
  }
  static HWY_INLINE float get(const uint8_t* p) { return static_cast<float>(static_cast<int32_t>(*p) - 128); }
};

// a · b + c with one rounding on targets with FMA: scalar tails must not depend on whether the
// compiler contracts an expression differently in each instantiation of dot_block.
HWY_INLINE float fmadd(float a, float b, float c) {
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(hn::MulAdd(hn::Set(d1, a), hn::Set(d1, b), hn::Set(d1, c)));
}

// R rows × T tokens: every value vector is converted once and used for T tokens, every activation
// vector is loaded once and used for R rows.
template <int R, int T, class L>
HWY_INLINE void dot_block(const QuantDotArgs& a, int64_t r0, int64_t t0) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const uint8_t* v[R];
  const float* scales[R];
  const float* mins[R];
  const float* x[T];
  VF yacc[R][T];
  float ys[R][T];
  for (int r = 0; r < R; ++r) {
    v[r] = static_cast<const uint8_t*>(a.v) + (r0 + r) * a.v_stride;
    scales[r] = a.scales + (r0 + r) * a.groups;
    mins[r] = a.mins != nullptr ? a.mins + (r0 + r) * a.groups : nullptr;
    for (int t = 0; t < T; ++t) {
      yacc[r][t] = hn::Zero(d);
      ys[r][t] = 0.0f;
    }
  }
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  for (int64_t g = 0; g < a.groups; ++g) {
    const int64_t c0 = g * a.group;
    const int64_t c1 = std::min(a.cols, c0 + a.group);
    const int64_t cv = c0 + (c1 - c0) / lanes * lanes;
    if (cv > c0) {
      VF acc[R][T];
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);
      for (int64_t c = c0; c < cv; c += lanes) {
        VF xv[T];
        for (int t = 0; t < T; ++t) xv[t] = hn::LoadU(d, x[t] + c);
        for (int r = 0; r < R; ++r) {
          const VF w = L::load(d, v[r] + c);
          for (int t = 0; t < T; ++t) acc[r][t] = hn::MulAdd(w, xv[t], acc[r][t]);
        }
      }
      for (int r = 0; r < R; ++r) {
        const VF sv = hn::Set(d, scales[r][g]);
        for (int t = 0; t < T; ++t) yacc[r][t] = hn::MulAdd(sv, acc[r][t], yacc[r][t]);
      }
    }
    if (cv < c1) {
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
          float tail = 0.0f;
          for (int64_t c = cv; c < c1; ++c) tail = fmadd(L::get(v[r] + c), x[t][c], tail);
          ys[r][t] = fmadd(scales[r][g], tail, ys[r][t]);
        }
    }
    if (a.mins != nullptr)
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) ys[r][t] = fmadd(mins[r][g], a.xsum[(t0 + t) * a.xsum_stride + g], ys[r][t]);
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t)
      a.y[(t0 + t) * a.y_stride + r0 + r] = hn::GetLane(hn::SumOfLanes(d, yacc[r][t])) + ys[r][t];
}

// Decode (one token): 4 rows share each activation vector. Prefill: 4 tokens share each
// converted value vector. Blocks never change the per-element order.
template <class L>
HWY_INLINE void dot_all(const QuantDotArgs& a) {
  if (a.n == 1) {
    int64_t r = 0;
    for (; r + 4 <= a.rows; r += 4) dot_block<4, 1, L>(a, r, 0);
    for (; r < a.rows; ++r) dot_block<1, 1, L>(a, r, 0);
    return;
  }
  for (int64_t r = 0; r < a.rows; ++r) {
    int64_t t = 0;
    for (; t + 4 <= a.n; t += 4) dot_block<1, 4, L>(a, r, t);
    for (; t < a.n; ++t) dot_block<1, 1, L>(a, r, t);
  }
}

void QuantDot(const QuantDotArgs& a) {
  switch (a.kind) {
    case QuantValues::kI8: return dot_all<LoadI8>(a);
    case QuantValues::kU8: return dot_all<LoadU8>(a);
    case QuantValues::kU8Minus128: return dot_all<LoadU8Minus128>(a);
  }
}

void UnpackNibbles(const uint8_t* src, int64_t nbytes, uint8_t offset, uint8_t* dst) {
  int64_t i = 0;
#if HWY_TARGET != HWY_SCALAR
  // One 16-byte block gives 32 codes: low and high nibbles interleaved back into column order.
  const hn::Full128<uint8_t> d8;
  const auto mask = hn::Set(d8, uint8_t{0x0F});
  const auto off = hn::Set(d8, offset);
  for (; i + 16 <= nbytes; i += 16) {
    const auto b = hn::LoadU(d8, src + i);
    const auto lo = hn::Sub(hn::And(b, mask), off);
    const auto hi = hn::Sub(hn::ShiftRight<4>(b), off);
    hn::StoreU(hn::InterleaveLower(d8, lo, hi), d8, dst + 2 * i);
    hn::StoreU(hn::InterleaveUpper(d8, lo, hi), d8, dst + 2 * i + 16);
  }
#endif
  for (; i < nbytes; ++i) {
    dst[2 * i] = static_cast<uint8_t>((src[i] & 0x0F) - offset);
    dst[2 * i + 1] = static_cast<uint8_t>((src[i] >> 4) - offset);
  }
}

void WidenHalf(const uint16_t* src, int64_t n, bool bf16, float* dst) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  if (bf16) {
    const DI32 di;
    const hn::Rebind<uint16_t, DF> d16;
    for (; i + lanes <= n; i += lanes)
      hn::StoreU(hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(di, hn::LoadU(d16, src + i)))), d, dst + i);
    for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
    return;
  }
#if HWY_TARGET != HWY_EMU128 && HWY_TARGET != HWY_SCALAR
  // (Highway's emulated conversion reads exponent 31 as a finite exponent, inf as 65536: the
  // portable targets take core's exact decoder below.)
  const hn::Rebind<hwy::float16_t, DF> dh;
  for (; i + lanes <= n; i += lanes)
    hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(src + i))), d, dst + i);
#endif
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(QuantDot);
HWY_EXPORT(UnpackNibbles);
HWY_EXPORT(WidenHalf);

void quant_dot(const QuantDotArgs& a) { HWY_DYNAMIC_DISPATCH(QuantDot)(a); }
void unpack_nibbles(const uint8_t* src, int64_t nbytes, uint8_t offset, uint8_t* dst) {
  HWY_DYNAMIC_DISPATCH(UnpackNibbles)(src, nbytes, offset, dst);
}

void widen_half(const uint16_t* src, int64_t n, bool bf16, float* dst) {
  HWY_DYNAMIC_DISPATCH(WidenHalf)(src, n, bf16, dst);
}

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
