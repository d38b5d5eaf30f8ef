// Highway SIMD kernels of Sparse linear layers: fused mask-expand + FMA over 8-column windows (bitmask, n:m
// with m | 8), in-register permutes of x for n:m halves (2:4, 4:8, ...), gather + FMA over CSR entries, and the
// dequantization of 4/8-bit Quant values.
#include "kernels/cpu/sparse_simd.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "core/dtype.h"

#ifndef LLMC_SPARSE_SIMD_TABLES
#define LLMC_SPARSE_SIMD_TABLES
namespace llmc::kernels::simd {
// For each window mask byte b: the lane permutation that moves the window's kept values (stored
// consecutively) to their columns — lane i takes value rank(i) = popcount(b & ((1 << i) - 1)) —
// and the lanes to keep (-1) or zero (0). One 64-byte line per byte value (16 KB in all).
struct alignas(64) ExpandEntry {
  int32_t idx[8];
  int32_t keep[8];
};
struct ExpandTable {
  ExpandEntry e[256];
  constexpr ExpandTable() : e() {
    for (int b = 0; b < 256; ++b) {
      int rank = 0;
      for (int i = 0; i < 8; ++i) {
        const bool kept = (b >> i & 1) != 0;
        e[b].idx[i] = kept ? rank : 0;
        e[b].keep[i] = kept ? -1 : 0;
        rank += kept;
      }
    }
  }
};
inline constexpr ExpandTable kExpand{};
}  // namespace llmc::kernels::simd
#endif

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/sparse_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// One window = 8 columns = 8 lanes; targets with narrower vectors (EMU128) run the scalar path.
using D8 = hn::CappedTag<float, 8>;
using V8 = hn::Vec<D8>;
using DI8 = hn::RebindToSigned<D8>;
using DU8 = hn::RebindToUnsigned<D8>;
constexpr bool kWindowLanes = hn::MaxLanes(D8()) == 8;

// Lanes [0, 4) of lo and [4, 8) of hi (the scalar target never runs the vector paths).
HWY_INLINE V8 upper_lower(D8 d, V8 hi, V8 lo) {
#if HWY_TARGET == HWY_SCALAR
  (void)d;
  (void)hi;
  return lo;
#else
  return hn::ConcatUpperLower(d, hi, lo);
#endif
}

// a · b + c with one rounding (the scalar tails; independent of how the compiler contracts).
HWY_INLINE float fmadd(float a, float b, float c) {
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(hn::MulAdd(hn::Set(d1, a), hn::Set(d1, b), hn::Set(d1, c)));
}

// Value loaders: 8 consecutive values as f32 lanes, and one value.
struct ValF32 {
  using T = float;
  static HWY_INLINE V8 load(D8 d, const T* p) { return hn::LoadU(d, p); }
  static HWY_INLINE float get(const T* p) { return *p; }
};
struct ValF16 {
  using T = hwy::float16_t;
  static HWY_INLINE V8 load(D8 d, const T* p) { return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, D8>(), p)); }
  static HWY_INLINE float get(const T* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return f16_to_f32(bits);
  }
};
struct ValBF16 {
  using T = uint16_t;
  static HWY_INLINE V8 load(D8 d, const T* p) {
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(DU8(), hn::LoadU(hn::Rebind<uint16_t, D8>(), p))));
  }
  static HWY_INLINE float get(const T* p) { return bf16_to_f32(*p); }
};

// n:m in-group index of the kept entry whose field starts at `bit` of a row's packed indices.
HWY_INLINE uint32_t nm_field(const uint8_t* row, int64_t bit, int bits) {
  uint32_t word = row[bit >> 3];
  if ((bit & 7) + bits > 8) word |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  return (word >> (bit & 7)) & ((1u << bits) - 1);
}

int64_t nm_kept(const SparseRowsArgs& a) {
  return a.nm_n * (a.cols / a.nm_m) + std::min<int64_t>(a.nm_n, a.cols % a.nm_m);
}

// Entries [k0, kept) of an n:m row, in order, with scalar fused multiply-adds into s[T].
template <class V, int T>
HWY_INLINE void nm_tail(const SparseRowsArgs& a, const uint8_t* row, const typename V::T* vals, int64_t k0,
                        const float* const* x, float* s) {
  const int64_t kept = nm_kept(a);
  for (int64_t k = k0; k < kept; ++k) {
    const int64_t c = (k / a.nm_n) * a.nm_m + nm_field(row, k * a.nm_bits, a.nm_bits);
    const float v = V::get(vals + k);
    for (int t = 0; t < T; ++t) s[t] = fmadd(v, x[t][c], s[t]);
  }
}

// ---- window kernels (bitmask, n:m with m | 8) ----

// Mask byte of the window whose pattern bytes start at `p` (kKind: a SparseRowKernel value;
// kFieldWindows reads the 2 bytes holding the field at bit `bit` of the row).
template <int kKind>
HWY_INLINE uint32_t window_mask(const SparseRowsArgs& a, const uint8_t* row, const uint8_t* p, int64_t bit) {
  if constexpr (kKind == static_cast<int>(SparseRowKernel::kMaskWindows)) {
    return *p;
  } else {
    uint16_t two;
    std::memcpy(&two, row + (bit >> 3), 2);
    return a.lut[(static_cast<uint32_t>(two) >> (bit & 7)) & ((1u << a.field_bits) - 1)];
  }
}

// T tokens of one row: each window is expanded once and used for every token.
template <class V, int kKind, int T>
HWY_INLINE void window_row(const SparseRowsArgs& a, int64_t r, int64_t t0) {
  const uint8_t* row = a.index + r * a.index_stride;
  const auto* vals = static_cast<const typename V::T*>(a.values) + r * a.value_stride;
  const float* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  const int64_t windows = a.cols / 8;
  const typename V::T* vp = vals;
  float s[T];
  if constexpr (kWindowLanes) {
    const D8 d;
    const DI8 di;
    V8 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = hn::Zero(d);
    const auto window = [&](int64_t c, const uint8_t* p, int64_t bit) HWY_ATTR {
      const uint32_t b = window_mask<kKind>(a, row, p, bit);
      const ExpandEntry& te = kExpand.e[b];
      const V8 w =
          hn::IfThenElseZero(hn::MaskFromVec(hn::BitCast(d, hn::Load(di, te.keep))),
                             hn::TableLookupLanes(V::load(d, vp), hn::IndicesFromVec(d, hn::Load(di, te.idx))));
      for (int t = 0; t < T; ++t) acc[t] = hn::MulAdd(w, hn::LoadU(d, x[t] + c), acc[t]);
      vp += std::popcount(b);
    };
    // Two windows per iteration (loop overhead); the accumulation order is the windows' order.
    const uint8_t* p = row;
    int64_t c = 0, bit = 0;
    for (; c + 16 <= windows * 8; c += 16, p += 2, bit += 2 * a.field_bits) {
      window(c, p, bit);
      window(c + 8, p + 1, bit + a.field_bits);
    }
    if (c < windows * 8) window(c, p, bit);
    for (int t = 0; t < T; ++t) s[t] = hn::GetLane(hn::SumOfLanes(d, acc[t]));
  } else {
    // Scalar path (targets narrower than a window): the kept entries in column order.
    for (int t = 0; t < T; ++t) s[t] = 0.0f;
    for (int64_t j = 0; j < windows; ++j)
      for (uint32_t b = window_mask<kKind>(a, row, row + j, j * a.field_bits); b != 0; b &= b - 1) {
        const int64_t c = j * 8 + std::countr_zero(b);
        const float v = V::get(vp++);
        for (int t = 0; t < T; ++t) s[t] = fmadd(v, x[t][c], s[t]);
      }
  }
  if (windows * 8 < a.cols) {
    if constexpr (kKind == static_cast<int>(SparseRowKernel::kMaskWindows)) {
      for (uint32_t b = row[windows]; b != 0; b &= b - 1) {
        const float v = V::get(vp++);
        for (int t = 0; t < T; ++t) s[t] = fmadd(v, x[t][windows * 8 + std::countr_zero(b)], s[t]);
      }
    } else {
      nm_tail<V, T>(a, row, vals, vp - vals, x, s);
    }
  }
  for (int t = 0; t < T; ++t) a.y[(t0 + t) * a.y_stride + r] = s[t];
}

// ---- n:m halves (1:2, 2:3, 2:4, 4:5 .. 4:8) ----

// T tokens of one row. A block of 8 kept entries: entries 0-3 lie in the `half` = 4m/n columns
// from c, entries 4-7 in the next `half`; lane l's column inside its half is ((l % 4) / n) · m +
// index_l (< 8). Two loads of x, two in-register permutes and a blend put x in entry order.
template <class V, int kN, int T>
HWY_INLINE void nm_half_row(const SparseRowsArgs& a, int64_t r, int64_t t0) {
  const uint8_t* row = a.index + r * a.index_stride;
  const auto* vals = static_cast<const typename V::T*>(a.values) + r * a.value_stride;
  const float* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  const int m = a.nm_m, bits = a.nm_bits;
  const int64_t half = 4 * m / kN;
  // Full blocks: all 8 entries in full groups and both 8-float loads inside the row.
  int64_t blocks = kN * (a.cols / m) / 8;
  while (blocks > 0 && (blocks - 1) * 2 * half + half + 8 > a.cols) --blocks;
  float s[T];
  int64_t k = 0;
  if constexpr (kWindowLanes) {
    const D8 d;
    const DI8 di;
    const DU8 du;
    alignas(32) int32_t base[8];
    for (int l = 0; l < 8; ++l) base[l] = ((l % 4) / kN) * m;
    const auto lane_base = hn::Load(di, base);
    const auto shifts = hn::Iota(du, 0) * hn::Set(du, static_cast<uint32_t>(bits));
    const auto field = hn::Set(du, kN == 4 ? 7u : (1u << bits) - 1);
    V8 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = hn::Zero(d);
    const uint8_t* p = row;
    for (int64_t c = 0; k < blocks * 8; k += 8, c += 2 * half, p += bits) {
      uint32_t word;
      std::memcpy(&word, p, 4);  // 8 fields of `bits` bits; up to 3 bytes of slack read
      auto col = hn::BitCast(di, hn::And(hn::Set(du, word) >> shifts, field));
      if constexpr (kN != 4) col = hn::Add(col, lane_base);
      const auto perm = hn::IndicesFromVec(d, col);
      const V8 w = V::load(d, vals + k);
      for (int t = 0; t < T; ++t) {
        const V8 lo = hn::TableLookupLanes(hn::LoadU(d, x[t] + c), perm);
        const V8 hi = hn::TableLookupLanes(hn::LoadU(d, x[t] + c + half), perm);
        acc[t] = hn::MulAdd(w, upper_lower(d, hi, lo), acc[t]);
      }
    }
    for (int t = 0; t < T; ++t) s[t] = hn::GetLane(hn::SumOfLanes(d, acc[t]));
  } else {
    for (int t = 0; t < T; ++t) s[t] = 0.0f;
  }
  nm_tail<V, T>(a, row, vals, k, x, s);
  for (int t = 0; t < T; ++t) a.y[(t0 + t) * a.y_stride + r] = s[t];
}

// One row kernel for T tokens, as a type: Row::run<T>(args, row, first token).
template <class V, int kKind>
struct WindowRow {
  template <int T>
  static HWY_INLINE void run(const SparseRowsArgs& a, int64_t r, int64_t t0) {
    window_row<V, kKind, T>(a, r, t0);
  }
};
template <class V, int kN>
struct NmHalfRow {
  template <int T>
  static HWY_INLINE void run(const SparseRowsArgs& a, int64_t r, int64_t t0) {
    nm_half_row<V, kN, T>(a, r, t0);
  }
};

// Tokens in blocks of 8 (prefill: 8 accumulators share each expanded window or permute vector),
// then one by one.
template <class Row>
HWY_INLINE void rows_by_tokens(const SparseRowsArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    int64_t t = 0;
    for (; t + 8 <= a.tokens; t += 8) Row::template run<8>(a, r, t);
    for (; t < a.tokens; ++t) Row::template run<1>(a, r, t);
  }
}

template <class V>
HWY_INLINE void pattern_rows(const SparseRowsArgs& a) {
  switch (a.kernel) {
    case SparseRowKernel::kMaskWindows:
      return rows_by_tokens<WindowRow<V, static_cast<int>(SparseRowKernel::kMaskWindows)>>(a);
    case SparseRowKernel::kFieldWindows:
      return rows_by_tokens<WindowRow<V, static_cast<int>(SparseRowKernel::kFieldWindows)>>(a);
    case SparseRowKernel::kNmHalves:
      if (a.nm_n == 1) return rows_by_tokens<NmHalfRow<V, 1>>(a);
      if (a.nm_n == 2) return rows_by_tokens<NmHalfRow<V, 2>>(a);
      return rows_by_tokens<NmHalfRow<V, 4>>(a);
  }
}

void SparsePatternRows(const SparseRowsArgs& a) {
  switch (a.value_type) {
    case SparseValues::kF32: return pattern_rows<ValF32>(a);
    case SparseValues::kF16: return pattern_rows<ValF16>(a);
    case SparseValues::kBF16: return pattern_rows<ValBF16>(a);
  }
}

// Columns of 8 CSR entries as int32 lanes.
template <bool kWide>
HWY_INLINE hn::Vec<DI8> csr_columns(const void* columns, int64_t k) {
  const DI8 di;
  if constexpr (kWide) {
    return hn::LoadU(di, static_cast<const int32_t*>(columns) + k);
  } else {
    const hn::Rebind<uint16_t, D8> d16;
    return hn::BitCast(di, hn::PromoteTo(DU8(), hn::LoadU(d16, static_cast<const uint16_t*>(columns) + k)));
  }
}
template <bool kWide>
HWY_INLINE int64_t csr_column(const void* columns, int64_t k) {
  if constexpr (kWide) return static_cast<const uint32_t*>(columns)[k];
  return static_cast<const uint16_t*>(columns)[k];
}

template <class V, bool kWide>
HWY_INLINE void csr_row(const CsrRowsArgs& a, int64_t r, int64_t t) {
  const int64_t begin = a.row_ptr[r] - a.row_ptr[0], end = a.row_ptr[r + 1] - a.row_ptr[0];
  const auto* vals = static_cast<const typename V::T*>(a.values) + r * a.value_stride;
  const float* x = a.x + t * a.x_stride;
  const int64_t count = end - begin;
  int64_t k = 0;
  float s = 0.0f;
  if constexpr (kWindowLanes) {
    const D8 d;
    V8 acc = hn::Zero(d);
    for (; k + 8 <= count; k += 8)
      acc = hn::MulAdd(V::load(d, vals + k), hn::GatherIndex(d, x, csr_columns<kWide>(a.columns, begin + k)), acc);
    s = hn::GetLane(hn::SumOfLanes(d, acc));
  }
  for (; k < count; ++k) s = fmadd(V::get(vals + k), x[csr_column<kWide>(a.columns, begin + k)], s);
  a.y[t * a.y_stride + r] = s;
}

template <class V, bool kWide>
HWY_INLINE void csr_rows(const CsrRowsArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t t = 0; t < a.n; ++t) csr_row<V, kWide>(a, r, t);
}

template <class V>
HWY_INLINE void csr_rows_width(const CsrRowsArgs& a) {
  if (a.wide)
    csr_rows<V, true>(a);
  else
    csr_rows<V, false>(a);
}

void SparseCsrRows(const CsrRowsArgs& a) {
  switch (a.value_type) {
    case SparseValues::kF32: return csr_rows_width<ValF32>(a);
    case SparseValues::kF16: return csr_rows_width<ValF16>(a);
    case SparseValues::kBF16: return csr_rows_width<ValBF16>(a);
  }
}

// 8 codes per step: 4-bit codes come from one 32-bit word (code i in bits 4i..4i+3), 8-bit codes
// from 8 bytes; then code · scale + bias with one rounding.
void DequantCodes(const uint8_t* codes, int bits, int64_t count, int64_t group, const float* scale, const float* bias,
                  float* out) {
  int64_t k = 0;
  if constexpr (kWindowLanes) {
    const D8 d;
    const DU8 du;
    const auto shifts = hn::Iota(du, 0) * hn::Set(du, 4u);
    const auto nibble = hn::Set(du, 0xFu);
    for (; k + 8 <= count; k += 8) {
      const int64_t g = k / group;
      hn::Vec<DU8> q;
      if (bits == 4) {
        uint32_t word;
        std::memcpy(&word, codes + k / 2, 4);
        q = hn::And(hn::Set(du, word) >> shifts, nibble);
      } else {
        q = hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint8_t, D8>(), codes + k));
      }
      hn::StoreU(hn::MulAdd(hn::ConvertTo(d, hn::BitCast(DI8(), q)), hn::Set(d, scale[g]), hn::Set(d, bias[g])), d,
                 out + k);
    }
  }
  for (; k < count; ++k) {
    const uint32_t q = bits == 4 ? (codes[k / 2] >> (4 * (k & 1))) & 0xFu : codes[k];
    out[k] = fmadd(static_cast<float>(q), scale[k / group], bias[k / group]);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(SparsePatternRows);
HWY_EXPORT(SparseCsrRows);
HWY_EXPORT(DequantCodes);

void sparse_pattern_rows(const SparseRowsArgs& a) { HWY_DYNAMIC_DISPATCH(SparsePatternRows)(a); }
void sparse_csr_rows(const CsrRowsArgs& a) { HWY_DYNAMIC_DISPATCH(SparseCsrRows)(a); }
void dequant_codes(const uint8_t* codes, int bits, int64_t count, int64_t group, const float* scale, const float* bias,
                   float* out) {
  HWY_DYNAMIC_DISPATCH(DequantCodes)(codes, bits, count, group, scale, bias, out);
}

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
