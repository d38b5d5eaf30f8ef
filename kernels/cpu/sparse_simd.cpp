// Highway SIMD kernels of Sparse linear layers: fused mask-expand + FMA over 8-column windows (bitmask, n:m
// with m | 8; on AVX-512 bitmask rows in 16-column steps with vexpandps), in-register permutes of x for n:m (2:4 and
// 1:2 in-lane on pre-arranged x, on AVX-512 32 columns per vpermt2ps; 4:8 and kin across lanes), gather + FMA over CSR
// entries, the expansion of bitmask rows to dense rows (prefill), and the dequantization of 4/8-bit Quant values.
#include "kernels/cpu/sparse_simd.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "kernels/cpu/prefetch.h"

#ifndef LLMC_SPARSE_SIMD_TABLES
#define LLMC_SPARSE_SIMD_TABLES
namespace llmc::kernels::simd {
// For each window mask byte b, the byte shuffle that expands 4-byte values (f32) to the window's
// kept lanes: lanes 0-3 read the 16 bytes at the window's first value, lanes 4-7 the 16 bytes at its
// value popcount(b & 15) (two in-lane halves: no cross-lane shuffle); lane i takes value rank(i) =
// popcount(b & ((1 << i) - 1)), or 0x80 bytes (shuffled to zero) where i is not kept. 8 KB.
struct ShuffleTable32 {
  alignas(32) uint8_t c[256][32];
  constexpr ShuffleTable32() : c() {
    for (int b = 0; b < 256; ++b) {
      int rank = 0, low = 0;
      for (int i = 0; i < 8; ++i) {
        if (i == 4) low = rank;
        const bool kept = (b >> i & 1) != 0;
        for (int j = 0; j < 4; ++j) c[b][4 * i + j] = kept ? static_cast<uint8_t>(4 * (rank - low) + j) : 0x80;
        rank += kept;
      }
    }
  }
};
inline constexpr ShuffleTable32 kShuffle32{};

// The same expansion for 2-byte values (f16, bf16) as a byte shuffle of 8 values (16 bytes): bytes
// 2i, 2i + 1 of lane i take value rank(i)'s bytes, or 0x80 (shuffled to zero) where i is not kept.
struct ShuffleTable {
  alignas(16) uint8_t c[256][16];
  constexpr ShuffleTable() : c() {
    for (int b = 0; b < 256; ++b) {
      int rank = 0;
      for (int i = 0; i < 8; ++i) {
        const bool kept = (b >> i & 1) != 0;
        c[b][2 * i] = kept ? static_cast<uint8_t>(2 * rank) : 0x80;
        c[b][2 * i + 1] = kept ? static_cast<uint8_t>(2 * rank + 1) : 0x80;
        rank += kept;
      }
    }
  }
};
inline constexpr ShuffleTable kShuffle{};
}  // namespace llmc::kernels::simd
#endif

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL  // the VBMI2 (vpexpandw) variant; Highway compiles it only on request
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/sparse_simd.cpp"
#include <hwy/cache_control.h>
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
constexpr int kDecodeRows = 4;  // rows per decode block: independent FMA chains

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

// Lanes 0, 1, 4, 5 of a and 2, 3, 6, 7 of b.
HWY_INLINE V8 blend_quads(D8 d, V8 a, V8 b) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  (void)d;
  return V8{_mm256_blend_ps(a.raw, b.raw, 0xCC)};
#else
  const DI8 di;
  alignas(32) static constexpr int32_t kFromB[8] = {0, 0, -1, -1, 0, 0, -1, -1};
  return hn::IfThenElse(hn::MaskFromVec(hn::BitCast(d, hn::Load(di, kFromB))), b, a);
#endif
}

// a · b + c with one rounding (the scalar tails; independent of how the compiler contracts).
HWY_INLINE float fmadd(float a, float b, float c) {
#if HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128
  return std::fma(a, b, c);  // these targets' MulAdd rounds twice
#else
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(hn::MulAdd(hn::Set(d1, a), hn::Set(d1, b), hn::Set(d1, c)));
#endif
}

// 8 two-byte values from p expanded to the kept lanes of window mask b (zeros elsewhere), as raw
// 16-bit lanes: one byte shuffle.
using D16 = hn::Rebind<uint16_t, D8>;
HWY_INLINE hn::Vec<D16> expand_half(const uint16_t* p, uint32_t b) {
  const D16 d16;
#if HWY_TARGET == HWY_SCALAR  // never runs the window paths
  (void)p;
  (void)b;
  return hn::Zero(d16);
#else
  const hn::Repartition<uint8_t, D16> d8;
  return hn::BitCast(
      d16, hn::TableLookupBytesOr0(hn::LoadU(d8, reinterpret_cast<const uint8_t*>(p)), hn::Load(d8, kShuffle.c[b])));
#endif
}

// Value loaders: 8 consecutive values as f32 lanes; the 8 values from p expanded to the kept lanes
// of window mask b (zeros elsewhere); one value.
struct ValF32 {
  using T = float;
  static HWY_INLINE V8 load(D8 d, const T* p) { return hn::LoadU(d, p); }
  static HWY_INLINE V8 expand(D8 d, const T* p, uint32_t b) {
#if HWY_TARGET == HWY_SCALAR  // never runs the window paths
    (void)p;
    (void)b;
    return hn::Zero(d);
#else
    const hn::Half<D8> dh;
    const hn::Repartition<uint8_t, D8> d8;
    const V8 halves = hn::Combine(d, hn::LoadU(dh, p + std::popcount(b & 15u)), hn::LoadU(dh, p));
    return hn::BitCast(d, hn::TableLookupBytesOr0(hn::BitCast(d8, halves), hn::Load(d8, kShuffle32.c[b])));
#endif
  }
  static HWY_INLINE float get(const T* p) { return *p; }
};
struct ValF16 {
  using T = hwy::float16_t;
  static HWY_INLINE V8 load(D8 d, const T* p) { return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, D8>(), p)); }
  static HWY_INLINE V8 expand(D8 d, const T* p, uint32_t b) {
    return hn::PromoteTo(d, hn::BitCast(hn::Rebind<T, D8>(), expand_half(reinterpret_cast<const uint16_t*>(p), b)));
  }
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
  static HWY_INLINE V8 expand(D8 d, const T* p, uint32_t b) {
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(DU8(), expand_half(p, b))));
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

// Entries [k0, kept) of an n:m row (entry k's value at vals[k - vbase]), in order, with scalar fused
// multiply-adds into s[T].
template <class V, int T>
HWY_INLINE void nm_tail(const SparseRowsArgs& a, const uint8_t* row, const typename V::T* vals, int64_t vbase,
                        int64_t k0, const float* const* x, float* s) {
  const int64_t kept = nm_kept(a);
  for (int64_t k = k0; k < kept; ++k) {
    const int64_t c = (k / a.nm_n) * a.nm_m + nm_field(row, k * a.nm_bits, a.nm_bits);
    const float v = V::get(vals + (k - vbase));
    for (int t = 0; t < T; ++t) s[t] = fmadd(v, x[t][c], s[t]);
  }
}

// Decode streams several short rows at once, which the hardware prefetcher follows poorly: the
// index and value bytes kPrefetchRows rows on (the next-but-one block of rows) at the same place.
// A prefetch never faults, so the addresses may run past the tensor.
constexpr int64_t kPrefetchRows = 2 * kDecodeRows;
template <class T>
HWY_INLINE void prefetch_ahead(const uint8_t* index, int64_t index_stride, const T* values, int64_t value_stride) {
  // AVX2: into L2 (kernels/cpu/prefetch.h), n:m rows 1.2-1.3x faster on one thread and the mask
  // kernel unchanged; AVX-512 keeps L1 prefetches, with which its mask kernel is 10-25 % faster.
#if HWY_TARGET == HWY_AVX2
  prefetch_l2(index + kPrefetchRows * index_stride);
  prefetch_l2(values + kPrefetchRows * value_stride);
#else
  hwy::Prefetch(index + kPrefetchRows * index_stride);
  hwy::Prefetch(values + kPrefetchRows * value_stride);
#endif
}

// ---- window kernel (bitmask rows) ----

// Row r's ragged last window (cols % 8 columns, values from p) with scalar FMAs into s[T], then the
// row's outputs.
template <class V, int T>
HWY_INLINE void window_tail(const SparseRowsArgs& a, const uint8_t* row, const typename V::T* p, int64_t windows,
                            const float* const* x, int64_t t0, int64_t r, float* s) {
  if (windows * 8 < a.cols)
    for (uint32_t b = row[windows]; b != 0; b &= b - 1) {
      const float v = V::get(p++);
      for (int t = 0; t < T; ++t) s[t] = fmadd(v, x[t][windows * 8 + std::countr_zero(b)], s[t]);
    }
  for (int t = 0; t < T; ++t) a.y[(t0 + t) * a.y_stride + r] = s[t];
}

// AVX-512: 16 columns (two windows) per step, the step's kept values expanded to its kept lanes by the
// 16-bit mask (vexpandps; the mask register loaded straight from the pattern bytes): no shuffle table,
// half the mask and pointer work per column of the 8-lane windows. On this path a row's values may be
// read up to 16 entries past its last kept one (kValueSlack in sparse_linear.cpp).
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// 16 f32, f16 or bf16 values from p as f32.
HWY_INLINE __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
HWY_INLINE __m512 load16(const hwy::float16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
HWY_INLINE __m512 load16(const uint16_t* p) {  // bf16
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// The values from p expanded to the kept lanes of mask b: f32 loaded by the expanding load (which
// reads only the kept ones), f16/bf16 converted (16) and expanded in registers.
HWY_INLINE __m512 expand16(const float* p, __mmask16 b) { return _mm512_maskz_expandloadu_ps(b, p); }
template <class T>
HWY_INLINE __m512 expand16(const T* p, __mmask16 b) {
  return _mm512_maskz_expand_ps(b, load16(p));
}

// AVX-512 VBMI2: the prefill expansion (expand_rows) stores 32 16-bit values per vpexpandw. Decode does not
// use it: a vpexpandw whose result feeds vcvtph2ps ran at ~15 cycles per 32 columns on the Sapphire Rapids
// VM against ~8 for two 16-lane steps (cvtph2ps, then vexpandps), measured in a standalone loop and in
// bench_sparse_matvec (docs/sparsity.md).
#if HWY_TARGET == HWY_AVX3_DL
template <class VT>
constexpr bool kExpand32 = sizeof(VT) == 2;
#else
template <class VT>
constexpr bool kExpand32 = false;
#endif

// R rows × T tokens in 16-column steps (an odd last window as a step of 8 columns), then the ragged
// tail like window_block. Every element's order is the same in any block shape.
template <class V, int R, int T>
HWY_INLINE void wide_window_block(const SparseRowsArgs& a, int64_t r0, int64_t t0) {
  using VT = typename V::T;
  const uint8_t* row[R];
  const VT* vp[R];
  for (int i = 0; i < R; ++i) {
    row[i] = a.index + (r0 + i) * a.index_stride;
    vp[i] = static_cast<const VT*>(a.values) + (r0 + i) * a.value_stride;
  }
  const float* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  const int64_t windows = a.cols / 8, steps = windows / 2;
  __m512 acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < steps; ++j) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x[t] + 16 * j);
    for (int i = 0; i < R; ++i) {
      if (j % 4 == 0) prefetch_ahead(row[i] + 2 * j, a.index_stride, vp[i], a.value_stride);
      uint16_t b;
      std::memcpy(&b, row[i] + 2 * j, 2);
      const __m512 w = expand16(vp[i], static_cast<__mmask16>(b));
      vp[i] += std::popcount(b);
      for (int t = 0; t < T; ++t) acc[i][t] = _mm512_fmadd_ps(w, xv[t], acc[i][t]);
    }
  }
  if (windows % 2 != 0)
    for (int i = 0; i < R; ++i) {
      const uint8_t b = row[i][2 * steps];
      const __m512 w = expand16(vp[i], static_cast<__mmask16>(b));
      vp[i] += std::popcount(b);
      for (int t = 0; t < T; ++t)
        acc[i][t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(0x00FF, x[t] + 16 * steps), acc[i][t]);
    }
  float s[R][T];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) s[i][t] = _mm512_reduce_add_ps(acc[i][t]);
  for (int i = 0; i < R; ++i) window_tail<V, T>(a, row[i], vp[i], windows, x, t0, r0 + i, s[i]);
}
#endif

// R rows × T tokens: each window of a row is expanded once and used for every token. R and T only
// interleave independent (row, token) accumulators (the FMA latency chain of one is 4 cycles):
// every element's order is the same in any block shape.
template <class V, int R, int T>
HWY_INLINE void window_block(const SparseRowsArgs& a, int64_t r0, int64_t t0) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  wide_window_block<V, R, T>(a, r0, t0);
#else
  using VT = typename V::T;
  const uint8_t* row[R];
  const VT* vp[R];
  for (int i = 0; i < R; ++i) {
    row[i] = a.index + (r0 + i) * a.index_stride;
    vp[i] = static_cast<const VT*>(a.values) + (r0 + i) * a.value_stride;
  }
  const float* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  const int64_t windows = a.cols / 8;
  float s[R][T];
  if constexpr (kWindowLanes) {
    const D8 d;
    V8 acc[R][T];
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t) acc[i][t] = hn::Zero(d);
    for (int64_t j = 0; j < windows; ++j) {
      for (int i = 0; i < R; ++i) {
        if (j % 4 == 0) prefetch_ahead(row[i] + j, a.index_stride, vp[i], a.value_stride);
        const uint32_t b = row[i][j];
        const V8 w = V::expand(d, vp[i], b);
        vp[i] += std::popcount(b);
        for (int t = 0; t < T; ++t) acc[i][t] = hn::MulAdd(w, hn::LoadU(d, x[t] + j * 8), acc[i][t]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t) s[i][t] = hn::GetLane(hn::SumOfLanes(d, acc[i][t]));
  } else {
    // Scalar path (targets narrower than a window): the kept entries in column order.
    for (int i = 0; i < R; ++i) {
      for (int t = 0; t < T; ++t) s[i][t] = 0.0f;
      for (int64_t j = 0; j < windows; ++j)
        for (uint32_t b = row[i][j]; b != 0; b &= b - 1) {
          const float v = V::get(vp[i]++);
          for (int t = 0; t < T; ++t) s[i][t] = fmadd(v, x[t][j * 8 + std::countr_zero(b)], s[i][t]);
        }
    }
  }
  for (int i = 0; i < R; ++i) window_tail<V, T>(a, row[i], vp[i], windows, x, t0, r0 + i, s[i]);
#endif
}

// ---- n:m blocks of 8 kept entries (2:4 and 1:2 as quads; 4:8, 4:5 .. 4:7, 2:3 as halves) ----

// Lanes l of `v` permuted inside their 128-bit half by ctrl bits [1:0] (vpermilps; the upper bits
// of ctrl are ignored).
HWY_INLINE V8 permute_in_halves(D8 d, V8 v, hn::Vec<DI8> ctrl) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  (void)d;
  return V8{_mm256_permutevar_ps(v.raw, ctrl.raw)};
#else
  const DI8 di;
  const auto half = hn::ShiftLeft<2>(hn::ShiftRight<2>(hn::Iota(di, 0)));
  return hn::TableLookupLanes(v, hn::IndicesFromVec(d, hn::Add(hn::And(ctrl, hn::Set(di, 3)), half)));
#endif
}

// Quads (2:4, 1:2): a block of 8 kept entries spans 16 columns, entries 2q and 2q + 1 in quad q
// (columns 4q .. 4q + 3). With the arranged x's halves A = (quad 0 | quad 2) and B = (quad 1 |
// quad 3), lane l takes A or B (lanes 2, 3, 6, 7: B) permuted inside its 128-bit half by entry l's
// column in its quad: in-lane permutes and one blend, no cross-lane shuffle.
template <int kN_>
struct Quads {
  static constexpr bool kQuads = true;
  static constexpr int kN = kN_;
  const float* xq;
  int64_t xq_stride;
  hn::Vec<DU8> shifts;
  explicit Quads(const SparseRowsArgs& a)
      : xq(a.xq), xq_stride(a.xq_stride), shifts(hn::Iota(DU8(), 0) * hn::Set(DU8(), uint32_t{kN == 1 ? 1u : 2u})) {}
  int64_t blocks(const SparseRowsArgs& a) const { return quad_columns(a.cols) / 16; }
  // Lane l's column inside its quad (1:2: entry l sits in group l % 2 of its quad).
  HWY_INLINE hn::Vec<DI8> control(uint32_t word) const {
    const DI8 di;
    auto ctrl = hn::BitCast(di, hn::Set(DU8(), word) >> shifts);
    if constexpr (kN == 1) {
      alignas(32) static constexpr int32_t kPairBase[8] = {0, 2, 0, 2, 0, 2, 0, 2};
      ctrl = hn::Add(hn::And(ctrl, hn::Set(di, 1)), hn::Load(di, kPairBase));
    }
    return ctrl;
  }
  HWY_INLINE V8 gather(D8 d, int64_t t, int64_t b, hn::Vec<DI8> ctrl) const {
    const float* p = xq + t * xq_stride + b * 16;
    return blend_quads(d, permute_in_halves(d, hn::LoadU(d, p), ctrl), permute_in_halves(d, hn::LoadU(d, p + 8), ctrl));
  }
};

// Halves (n | 4, m <= 2n): entries 0-3 of a block lie in the `half` = 4m/n columns from its start c,
// entries 4-7 in the next `half`; lane l's column inside its half is ((l % 4) / n) · m + index_l
// (< 8). Two loads of x, two cross-lane permutes and a blend put x in entry order.
template <int kN>
struct Halves {
  static constexpr bool kQuads = false;
  static constexpr int kLog2N = kN == 4 ? 2 : 1;
  const float* x;
  int64_t x_stride, half;
  hn::Vec<DU8> shifts, field;
  hn::Vec<DI8> lane_base;
  explicit Halves(const SparseRowsArgs& a)
      : x(a.x),
        x_stride(a.x_stride),
        half(4 * a.nm_m / kN),
        shifts(hn::Iota(DU8(), 0) * hn::Set(DU8(), static_cast<uint32_t>(a.nm_bits))),
        field(hn::Set(DU8(), (1u << a.nm_bits) - 1)),
        lane_base(
            hn::Mul(hn::ShiftRight<kLog2N>(hn::And(hn::Iota(DI8(), 0), hn::Set(DI8(), 3))), hn::Set(DI8(), a.nm_m))) {}
  // Full blocks: all 8 entries in full groups and both 8-float loads inside the row.
  int64_t blocks(const SparseRowsArgs& a) const {
    int64_t n = kN * (a.cols / a.nm_m) / 8;
    while (n > 0 && (n - 1) * 2 * half + half + 8 > a.cols) --n;
    return n;
  }
  HWY_INLINE hn::Vec<DI8> control(uint32_t word) const {
    const DI8 di;
    const auto col = hn::BitCast(di, hn::And(hn::Set(DU8(), word) >> shifts, field));
    return kN == 4 ? col : hn::Add(col, lane_base);
  }
  HWY_INLINE V8 gather(D8 d, int64_t t, int64_t b, hn::Vec<DI8> ctrl) const {
    const float* p = x + t * x_stride + b * 2 * half;
    const auto perm = hn::IndicesFromVec(d, ctrl);
    return upper_lower(d, hn::TableLookupLanes(hn::LoadU(d, p + half), perm),
                       hn::TableLookupLanes(hn::LoadU(d, p), perm));
  }
};

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// The 16 kept values of step j (entries [16j, 16j + 16)) of a block's rows, as f32: stored values
// (f32, f16, bf16) ...
template <class VT, int R>
struct StoredValues {
  const VT* vals[R];
  int64_t stride;
  HWY_INLINE __m512 get(int i, int64_t j) const { return load16(vals[i] + 16 * j); }
  HWY_INLINE const void* prefetch(int i, int64_t j) const { return vals[i] + 16 * j; }
};
// 16 codes of kBits (4 or 8) from entry k on (k even) as i32 lanes.
template <int kBits>
HWY_INLINE __m512i codes16(const uint8_t* codes, int64_t k) {
  if constexpr (kBits == 4) {  // code 2b in the low nibble of byte b, 2b + 1 in the high
    const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + k / 2));
    const __m512i odd_shift = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(packed, packed)), odd_shift),
                            _mm512_set1_epi32(0x0F));
  } else {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + k)));
  }
}

// ... or Quant codes of kBits (4 or 8) dequantized in registers: code · scale + bias with one rounding,
// the bits dequant_codes gives; step j's group is j >> step_shift (groups of 16 · 2^step_shift entries).
template <int kBits, int R>
struct QuantValues {
  const uint8_t* codes[R];
  const float* params[R];  // the row's group scales, then (at + groups) its biases
  int64_t groups;
  int64_t stride;
  int step_shift;
  HWY_INLINE __m512 get(int i, int64_t j) const {
    const float* p = params[i] + (j >> step_shift);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(codes16<kBits>(codes[i], 16 * j)), _mm512_set1_ps(p[0]),
                           _mm512_set1_ps(p[groups]));
  }
  HWY_INLINE const void* prefetch(int i, int64_t j) const { return codes[i] + j * 2 * kBits; }
};

// AVX-512 quads (2:4, 1:2, `n` = kN): 32 columns = 16 kept entries per step, x put in entry order by
// one two-table permute (vpermt2ps) whose indices come straight from the 16 packed fields: entry k
// reads column (k / n) · 2n + field k. Twice the entries per step of the 8-lane blocks, no arranged
// x. Sums the first cols / 32 steps into s; returns the steps done.
template <int kN, int R, int T, class Src>
HWY_INLINE int64_t quad_steps(const SparseRowsArgs& a, const uint8_t* const (&row)[R], const Src& src,
                              const float* const (&x)[T], float (&s)[R][T]) {
  constexpr int kBits = kN == 1 ? 1 : 2;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i shifts = _mm512_slli_epi32(lane, kBits - 1);  // k · bits
  const __m512i base = kN == 1 ? _mm512_slli_epi32(lane, 1) : _mm512_slli_epi32(_mm512_srli_epi32(lane, 1), 2);
  const __m512i field = _mm512_set1_epi32((1 << kBits) - 1);
  const int64_t steps = a.cols / 32;
  __m512 acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < steps; ++j) {
    __m512 xlo[T], xhi[T];
    for (int t = 0; t < T; ++t) {
      xlo[t] = _mm512_loadu_ps(x[t] + 32 * j);
      xhi[t] = _mm512_loadu_ps(x[t] + 32 * j + 16);
    }
    for (int i = 0; i < R; ++i) {
      const uint8_t* fields = row[i] + j * 2 * kBits;
      if (j % 2 == 0) {
        prefetch_l2(fields + kPrefetchRows * a.index_stride);
        prefetch_l2(static_cast<const uint8_t*>(src.prefetch(i, j)) + kPrefetchRows * src.stride);
      }
      // 16 fields (1:2 reads 2 bytes of slack), broadcast straight from memory (no shuffle port)
      const __m512i word =
          _mm512_castps_si512(_mm512_broadcastss_ps(_mm_load_ss(reinterpret_cast<const float*>(fields))));
      const __m512i idx = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(word, shifts), field), base);
      const __m512 w = src.get(i, j);
      for (int t = 0; t < T; ++t)
        acc[i][t] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(xlo[t], idx, xhi[t]), acc[i][t]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) s[i][t] += _mm512_reduce_add_ps(acc[i][t]);
  return steps;
}
#endif

// The rest of R rows × T tokens of an n:m weight from block b on (entry k = 8b), blocks of 8 kept
// entries gathered by G (Quads or Halves): per block and row one control vector from the 8 packed
// indices and one value vector, then per token the gathered x and one FMA; entries past the full
// blocks in order with scalar FMAs; then the rows' outputs. Entry k's value is vals[i][k - vbase].
template <class V, class G, int R, int T>
HWY_INLINE void nm_rest(const SparseRowsArgs& a, int64_t r0, int64_t t0, const uint8_t* const (&row)[R],
                        const typename V::T* const (&vals)[R], int64_t vbase, int64_t b, float (&s)[R][T]) {
  const float* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  int64_t k = 8 * b;
  if constexpr (kWindowLanes) {
    const D8 d;
    const G g(a);
    const int64_t blocks = g.blocks(a);
    V8 acc[R][T];
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t) acc[i][t] = hn::Zero(d);
    for (; b < blocks; ++b, k += 8) {
      for (int i = 0; i < R; ++i) {
        if (b % 4 == 0) prefetch_ahead(row[i] + b * a.nm_bits, a.index_stride, vals[i] + (k - vbase), a.value_stride);
        uint32_t word;
        std::memcpy(&word, row[i] + b * a.nm_bits, 4);  // 8 fields of nm_bits bits; up to 3 bytes of slack read
        const auto ctrl = g.control(word);
        const V8 w = V::load(d, vals[i] + (k - vbase));
        for (int t = 0; t < T; ++t) acc[i][t] = hn::MulAdd(w, g.gather(d, t0 + t, b, ctrl), acc[i][t]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t) s[i][t] += hn::GetLane(hn::SumOfLanes(d, acc[i][t]));
  }
  for (int i = 0; i < R; ++i) {
    nm_tail<V, T>(a, row[i], vals[i], vbase, k, x, s[i]);
    for (int t = 0; t < T; ++t) a.y[(t0 + t) * a.y_stride + r0 + i] = s[i][t];
  }
}

template <class V, class G, int R, int T>
HWY_INLINE void nm_block(const SparseRowsArgs& a, int64_t r0, int64_t t0) {
  using VT = typename V::T;
  const uint8_t* row[R];
  const VT* vals[R];
  for (int i = 0; i < R; ++i) {
    row[i] = a.index + (r0 + i) * a.index_stride;
    vals[i] = static_cast<const VT*>(a.values) + (r0 + i) * a.value_stride;
  }
  float s[R][T] = {};
  int64_t b = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if constexpr (G::kQuads && kWindowLanes) {  // AVX-512 quads: 32-column steps first
    StoredValues<VT, R> src;
    for (int i = 0; i < R; ++i) src.vals[i] = vals[i];
    src.stride = a.value_stride * static_cast<int64_t>(sizeof(VT));
    const float* x[T];
    for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
    b = 2 * quad_steps<G::kN, R, T>(a, row, src, x, s);
  }
#endif
  nm_rest<V, G, R, T>(a, r0, t0, row, vals, 0, b, s);
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// Quads with Quant values (SparseValues::kQuant, AVX-512 only: sparse_avx512): the 32-column
// steps dequantize the codes in registers (QuantValues); the few entries past them are dequantized
// into a small buffer (the same bits) and finish like nm_block. No dequantized row is stored.
template <int kN, int kBits, int R, int T>
HWY_INLINE void nm_quant_block(const SparseRowsArgs& a, int64_t r0, int64_t t0) {
  const uint8_t* row[R];
  QuantValues<kBits, R> src;
  src.stride = a.quant_code_stride;
  src.step_shift = a.quant_step_shift;
  src.groups = a.quant_groups;
  for (int i = 0; i < R; ++i) {
    row[i] = a.index + (r0 + i) * a.index_stride;
    src.codes[i] = a.quant_codes + (r0 + i) * a.quant_code_stride;
    src.params[i] = a.quant_params + (r0 + i) * 2 * a.quant_groups;
  }
  const float* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  float s[R][T] = {};
  const int64_t b = 2 * quad_steps<kN, R, T>(a, row, src, x, s);
  // Entries past the steps: fewer than 16 (less than 32 columns, n <= m / 2), plus 8 floats of the
  // 8-lane loads' over-read.
  const int64_t k0 = 8 * b, kept = nm_kept(a);
  alignas(32) float tail[R][32] = {};
  const float* vals[R];
  for (int i = 0; i < R; ++i) {
    for (int64_t k = k0; k < kept; ++k) {
      const uint32_t q = kBits == 4 ? (src.codes[i][k / 2] >> (4 * (k & 1))) & 0xFu : src.codes[i][k];
      const float* p = src.params[i] + ((k >> 4) >> src.step_shift);
      tail[i][k - k0] = fmadd(static_cast<float>(q), p[0], p[src.groups]);
    }
    vals[i] = tail[i];
  }
  nm_rest<ValF32, Quads<kN>, R, T>(a, r0, t0, row, vals, k0, b, s);
}
#endif

// One block kernel as a type: Block::run<R, T>(args, first row, first token).
template <class V>
struct WindowBlock {
  template <int R, int T>
  static HWY_INLINE void run(const SparseRowsArgs& a, int64_t r0, int64_t t0) {
    window_block<V, R, T>(a, r0, t0);
  }
};
template <class V, class G>
struct NmBlock {
  template <int R, int T>
  static HWY_INLINE void run(const SparseRowsArgs& a, int64_t r0, int64_t t0) {
    nm_block<V, G, R, T>(a, r0, t0);
  }
};

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
template <int kN, int kBits>
struct NmQuantBlock {
  template <int R, int T>
  static HWY_INLINE void run(const SparseRowsArgs& a, int64_t r0, int64_t t0) {
    nm_quant_block<kN, kBits, R, T>(a, r0, t0);
  }
};
#endif

// Prefill: blocks of 8 tokens × 1 row (8 accumulators share each expanded window or permute
// vector); the remaining tokens one at a time, 4 rows per block (decode: 4 independent chains).
template <class Block>
HWY_INLINE void blocks_of_rows(const SparseRowsArgs& a) {
  int64_t t = 0;
  for (; t + 8 <= a.tokens; t += 8)
    for (int64_t r = 0; r < a.rows; ++r) Block::template run<1, 8>(a, r, t);
  for (; t < a.tokens; ++t) {
    int64_t r = 0;
    for (; r + kDecodeRows <= a.rows; r += kDecodeRows) Block::template run<kDecodeRows, 1>(a, r, t);
    for (; r < a.rows; ++r) Block::template run<1, 1>(a, r, t);
  }
}

// Rows of a bitmask weight expanded to dense rows of their value type (a.expand), window by window:
// the same expansion as the window kernels (f16/bf16 as raw 16-bit lanes), stored instead of
// multiplied.
template <class V>
HWY_INLINE void expand_rows(const SparseRowsArgs& a) {
  using VT = typename V::T;
  const int64_t windows = a.cols / 8;
  for (int64_t r = 0; r < a.rows; ++r) {
    const uint8_t* row = a.index + r * a.index_stride;
    const VT* vp = static_cast<const VT*>(a.values) + r * a.value_stride;
    VT* out = static_cast<VT*>(a.expand) + r * a.cols;
    int64_t j = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
    // AVX-512: 16 f32 columns (expanding load), on AVX3_DL 32 16-bit columns (vpexpandw) per step.
    if constexpr (sizeof(VT) == 4) {
      for (; j + 2 <= windows; j += 2) {
        uint16_t b;
        std::memcpy(&b, row + j, 2);
        _mm512_storeu_ps(out + 8 * j, _mm512_maskz_expandloadu_ps(b, vp));
        vp += std::popcount(static_cast<uint32_t>(b));
      }
    } else if constexpr (kExpand32<VT>) {
      for (; j + 4 <= windows; j += 4) {
        uint32_t b;
        std::memcpy(&b, row + j, 4);
        _mm512_storeu_si512(out + 8 * j, _mm512_maskz_expandloadu_epi16(b, vp));
        vp += std::popcount(b);
      }
    }
#endif
    if constexpr (kWindowLanes) {
      for (; j < windows; ++j) {
        if constexpr (sizeof(VT) == 2) {
          const D16 d16;
          hn::StoreU(expand_half(reinterpret_cast<const uint16_t*>(vp), row[j]), d16,
                     reinterpret_cast<uint16_t*>(out + 8 * j));
        } else {
          const D8 d;
          hn::StoreU(V::expand(d, vp, row[j]), d, out + 8 * j);
        }
        vp += std::popcount(static_cast<uint32_t>(row[j]));
      }
    }
    std::memset(static_cast<void*>(out + 8 * j), 0, static_cast<size_t>(a.cols - 8 * j) * sizeof(VT));
    for (; j * 8 < a.cols; ++j)
      for (uint32_t b = row[j]; b != 0; b &= b - 1) out[j * 8 + std::countr_zero(b)] = *vp++;
  }
}

template <class V>
HWY_INLINE void pattern_rows(const SparseRowsArgs& a) {
  if (a.expand != nullptr) return expand_rows<V>(a);
  switch (a.kernel) {
    case SparseRowKernel::kMaskWindows: return blocks_of_rows<WindowBlock<V>>(a);
    case SparseRowKernel::kNmHalves:
      if (a.nm_n == 2) return blocks_of_rows<NmBlock<V, Halves<2>>>(a);
      return blocks_of_rows<NmBlock<V, Halves<4>>>(a);
    case SparseRowKernel::kNmQuads:
      if (a.nm_n == 1) return blocks_of_rows<NmBlock<V, Quads<1>>>(a);
      return blocks_of_rows<NmBlock<V, Quads<2>>>(a);
  }
}

// Quads with Quant values (sparse_avx512 targets only).
HWY_INLINE void quant_rows(const SparseRowsArgs& a) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if (a.nm_n == 1)
    return a.quant_bits == 4 ? blocks_of_rows<NmQuantBlock<1, 4>>(a) : blocks_of_rows<NmQuantBlock<1, 8>>(a);
  return a.quant_bits == 4 ? blocks_of_rows<NmQuantBlock<2, 4>>(a) : blocks_of_rows<NmQuantBlock<2, 8>>(a);
#else
  (void)a;
  HWY_ABORT("sparse: fused Quant values need AVX-512");
#endif
}

bool SparseAvx512() { return HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3; }

void SparsePatternRows(const SparseRowsArgs& a) {
  switch (a.value_type) {
    case SparseValues::kQuant: return quant_rows(a);
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
    case SparseValues::kQuant: HWY_ABORT("sparse: CSR rows take stored values");
  }
}

// 8 codes per step: 4-bit codes come from one 32-bit word (code i in bits 4i..4i+3), 8-bit codes
// from 8 bytes; then code · scale + bias with one rounding.
// 8 codes of `kBits` (4 or 8) from the codes of entries [k, k + 8) as u32 lanes.
template <int kBits>
HWY_INLINE hn::Vec<DU8> codes8(const uint8_t* codes, int64_t k) {
  const DU8 du;
  if constexpr (kBits == 4) {
    uint32_t word;
    std::memcpy(&word, codes + k / 2, 4);
    return hn::And(hn::Set(du, word) >> (hn::Iota(du, 0) * hn::Set(du, 4u)), hn::Set(du, 0xFu));
  } else {
    return hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint8_t, D8>(), codes + k));
  }
}

template <int kBits>
HWY_INLINE void dequant(const uint8_t* codes, int64_t count, int64_t group, const float* scale, const float* bias,
                        float* out) {
  int64_t k = 0;
  if constexpr (kWindowLanes) {
    const D8 d;
    for (int64_t g = 0; g * group < count; ++g) {
      const int64_t end = std::min(count, (g + 1) * group) / 8 * 8;
      const V8 sv = hn::Set(d, scale[g]), bv = hn::Set(d, bias[g]);
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
      const __m512 sv16 = _mm512_set1_ps(scale[g]), bv16 = _mm512_set1_ps(bias[g]);
      for (; k + 16 <= end; k += 16)  // 16 per step, the same FMA per value
        _mm512_storeu_ps(out + k, _mm512_fmadd_ps(_mm512_cvtepi32_ps(codes16<kBits>(codes, k)), sv16, bv16));
#endif
      for (; k < end; k += 8)
        hn::StoreU(hn::MulAdd(hn::ConvertTo(d, hn::BitCast(DI8(), codes8<kBits>(codes, k))), sv, bv), d, out + k);
    }
  }
  for (; k < count; ++k) {
    const uint32_t q = kBits == 4 ? (codes[k / 2] >> (4 * (k & 1))) & 0xFu : codes[k];
    out[k] = fmadd(static_cast<float>(q), scale[k / group], bias[k / group]);
  }
}

void F16ToF32(const uint8_t* in, int64_t n, float* out) {
  int64_t k = 0;
  if constexpr (kWindowLanes) {
    const D8 d;
    for (; k + 8 <= n; k += 8)  // unaligned loads: `in` may sit anywhere in a section
      hn::StoreU(ValF16::load(d, reinterpret_cast<const hwy::float16_t*>(in + 2 * k)), d, out + k);
  }
  for (; k < n; ++k) {
    uint16_t h;
    std::memcpy(&h, in + 2 * k, 2);
    out[k] = f16_to_f32(h);
  }
}

void DequantCodes(const uint8_t* codes, int bits, int64_t count, int64_t group, const float* scale, const float* bias,
                  float* out) {
  if (bits == 4)
    dequant<4>(codes, count, group, scale, bias, out);
  else
    dequant<8>(codes, count, group, scale, bias, out);
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(SparsePatternRows);
HWY_EXPORT(SparseAvx512);
HWY_EXPORT(SparseCsrRows);
HWY_EXPORT(DequantCodes);
HWY_EXPORT(F16ToF32);

void sparse_pattern_rows(const SparseRowsArgs& a) { HWY_DYNAMIC_DISPATCH(SparsePatternRows)(a); }
bool sparse_avx512() { return HWY_DYNAMIC_DISPATCH(SparseAvx512)(); }
void f16_to_f32_n(const uint8_t* in, int64_t n, float* out) { HWY_DYNAMIC_DISPATCH(F16ToF32)(in, n, out); }
void sparse_csr_rows(const CsrRowsArgs& a) { HWY_DYNAMIC_DISPATCH(SparseCsrRows)(a); }
void dequant_codes(const uint8_t* codes, int bits, int64_t count, int64_t group, const float* scale, const float* bias,
                   float* out) {
  HWY_DYNAMIC_DISPATCH(DequantCodes)(codes, bits, count, group, scale, bias, out);
}

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
