// Highway SIMD kernel of Palette linear layers (codebook lookup fused with the dot product on the
// stored indices), compiled once per target (EMU128, AVX2, AVX-512) with runtime dispatch.
#include "kernels/cpu/palette_simd.h"

#include <cstring>

#include "kernels/cpu/prefetch.h"

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/palette_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DI32 = hn::RebindToSigned<DF>;

constexpr int64_t kLanes = static_cast<int64_t>(hn::MaxLanes(DF()));
// Byte-plane lookups decode 16 columns at a time into whole f32 vectors of 4, 8 or 16 lanes.
#if HWY_TARGET != HWY_SCALAR
constexpr bool kPlanes = kLanes == 4 || kLanes == 8 || kLanes == 16;
#else
constexpr bool kPlanes = false;
#endif
constexpr int64_t kChunk = 16;
// Decode streams 4 short rows at once, which the hardware prefetcher follows poorly: each row's
// indices are prefetched this many rows ahead (the next-but-one block of 4; a prefetch never faults).
constexpr int64_t kPrefetchRows = 8;
constexpr int kChunkVectors = kPlanes ? static_cast<int>(kChunk / kLanes) : 1;

HWY_INLINE uint32_t index_at(const PaletteDotArgs& a, const uint8_t* row, int64_t c) {
  return a.form == PaletteIndexForm::kNibbles ? (row[c >> 1] >> ((c & 1) * 4)) & 0x0Fu : row[c];
}

// a · b + c with one rounding on targets with FMA (as the vector MulAdd), whatever the compiler
// would contract in each instantiation.
HWY_INLINE float fmadd(float a, float b, float c) {
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(hn::MulAdd(hn::Set(d1, a), hn::Set(d1, b), hn::Set(d1, c)));
}

#if HWY_TARGET != HWY_SCALAR
using D8 = hn::Full128<uint8_t>;
using V8 = hn::Vec<D8>;

// The f32 weights of 16 columns from their u8 indices and the row's byte planes: the low and high
// bytes of the f16 entries are looked up in registers and interleaved back into f16 lanes.
template <class D>
HWY_INLINE void chunk_weights(D d, V8 idx, V8 lo_tab, V8 hi_tab, VF* w) {
  const D8 d8;
  const hn::Full128<uint16_t> d16;
  const V8 lo = hn::TableLookupBytes(lo_tab, idx);
  const V8 hi = hn::TableLookupBytes(hi_tab, idx);
  const auto h0 = hn::BitCast(d16, hn::InterleaveLower(d8, lo, hi));  // columns 0..7
  const auto h1 = hn::BitCast(d16, hn::InterleaveUpper(d8, lo, hi));  // columns 8..15
  constexpr size_t kL = hn::MaxLanes(D());
  const hn::Rebind<hwy::float16_t, D> dh;
  if constexpr (kL == 8) {
    w[0] = hn::PromoteTo(d, hn::BitCast(dh, h0));
    w[1] = hn::PromoteTo(d, hn::BitCast(dh, h1));
  } else if constexpr (kL == 16) {
    const hn::Rebind<uint16_t, D> du;
    w[0] = hn::PromoteTo(d, hn::BitCast(dh, hn::Combine(du, h1, h0)));
  } else if constexpr (kL == 4) {
    const hn::Half<decltype(d16)> d16h;
    w[0] = hn::PromoteTo(d, hn::BitCast(dh, hn::LowerHalf(d16h, h0)));
    w[1] = hn::PromoteTo(d, hn::BitCast(dh, hn::UpperHalf(d16h, h0)));
    w[2] = hn::PromoteTo(d, hn::BitCast(dh, hn::LowerHalf(d16h, h1)));
    w[3] = hn::PromoteTo(d, hn::BitCast(dh, hn::UpperHalf(d16h, h1)));
  }
}
#endif

// Per-block state: R rows × T tokens, one vector accumulator per (row, token).
template <int R, int T>
struct Block {
  const uint8_t* idx[R];
  const PaletteRowTable* table[R];
  const float* x[T];
  VF acc[R][T];

  // acc[r][t] += w[j] · x[t][c + j·lanes] for the kChunkVectors vectors of one chunk, in column order.
  HWY_INLINE void fma_chunk(int r, int64_t c, const VF* w) {
    const DF d;
    for (int j = 0; j < kChunkVectors; ++j)
      for (int t = 0; t < T; ++t) acc[r][t] = hn::MulAdd(w[j], hn::LoadU(d, x[t] + c + j * kLanes), acc[r][t]);
  }

#if HWY_TARGET != HWY_SCALAR
  // bits <= 4: columns [0, cols / 16 * 16) by byte-plane lookups; returns the first column left.
  HWY_INLINE int64_t plane_columns(const PaletteDotArgs& a) {
    const DF d;
    const D8 d8;
    V8 lo_tab[R], hi_tab[R];
    for (int r = 0; r < R; ++r) {
      lo_tab[r] = hn::LoadU(d8, table[r]->planes);
      hi_tab[r] = hn::LoadU(d8, table[r]->planes + 16);
    }
    VF w[kChunkVectors];
    int64_t c = 0;
    if (a.form == PaletteIndexForm::kNibbles) {
      const V8 mask = hn::Set(d8, uint8_t{0x0F});
      // 16 stored bytes = 32 columns: low nibbles are the even columns, high nibbles the odd ones.
      auto split = [&](const uint8_t* bytes, V8& first, V8& second) {
        const V8 b = hn::LoadU(d8, bytes);
        const V8 lo = hn::And(b, mask), hi = hn::ShiftRight<4>(b);
        first = hn::InterleaveLower(d8, lo, hi);
        second = hn::InterleaveUpper(d8, lo, hi);
      };
      for (; c + 2 * kChunk <= a.cols; c += 2 * kChunk)
        for (int r = 0; r < R; ++r) {
          prefetch_l2(idx[r] + kPrefetchRows * a.idx_stride + c / 2);
          V8 i0, i1;
          split(idx[r] + c / 2, i0, i1);
          chunk_weights(d, i0, lo_tab[r], hi_tab[r], w);
          fma_chunk(r, c, w);
          chunk_weights(d, i1, lo_tab[r], hi_tab[r], w);
          fma_chunk(r, c + kChunk, w);
        }
      if (c + kChunk <= a.cols) {
        for (int r = 0; r < R; ++r) {
          uint8_t bytes[16] = {};
          std::memcpy(bytes, idx[r] + c / 2, kChunk / 2);
          V8 i0, i1;
          split(bytes, i0, i1);
          chunk_weights(d, i0, lo_tab[r], hi_tab[r], w);
          fma_chunk(r, c, w);
        }
        c += kChunk;
      }
      return c;
    }
    for (; c + kChunk <= a.cols; c += kChunk)
      for (int r = 0; r < R; ++r) {
        prefetch_l2(idx[r] + kPrefetchRows * a.idx_stride + c);
        chunk_weights(d, hn::LoadU(d8, idx[r] + c), lo_tab[r], hi_tab[r], w);
        fma_chunk(r, c, w);
      }
    return c;
  }
#endif

  // Any width: columns [0, cols / lanes * lanes) by gathers from the f32 entries.
  HWY_INLINE int64_t gather_columns(const PaletteDotArgs& a) {
    const DF d;
    const DI32 di;
    int64_t c = 0;
    for (; c + kLanes <= a.cols; c += kLanes)
      for (int r = 0; r < R; ++r) {
        hn::Vec<DI32> vi;
        if (a.form == PaletteIndexForm::kU8) {
          vi = hn::PromoteTo(di, hn::LoadU(hn::Rebind<uint8_t, DF>(), idx[r] + c));
        } else {
          HWY_ALIGN int32_t lanes[kLanes];
          for (int64_t j = 0; j < kLanes; ++j) lanes[j] = static_cast<int32_t>(index_at(a, idx[r], c + j));
          vi = hn::Load(di, lanes);
        }
        const VF wv = hn::GatherIndex(d, table[r]->f32, vi);
        for (int t = 0; t < T; ++t) acc[r][t] = hn::MulAdd(wv, hn::LoadU(d, x[t] + c), acc[r][t]);
      }
    return c;
  }

  HWY_INLINE void run(const PaletteDotArgs& a, int64_t r0, int64_t t0) {
    const DF d;
    for (int r = 0; r < R; ++r) {
      idx[r] = a.idx + (r0 + r) * a.idx_stride;
      table[r] = a.tables + r0 + r;
      for (int t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);
    }
    for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
    int64_t cv;
#if HWY_TARGET != HWY_SCALAR
    if (kPlanes && a.bits <= 4)
      cv = plane_columns(a);
    else
#endif
      cv = gather_columns(a);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) {
        float s = hn::GetLane(hn::SumOfLanes(d, acc[r][t]));
        for (int64_t c = cv; c < a.cols; ++c) s = fmadd(table[r]->f32[index_at(a, idx[r], c)], x[t][c], s);
        a.y[(t0 + t) * a.y_stride + r0 + r] = s;
      }
  }
};

// Decode (one token): 4 rows share each activation vector. Prefill: 4 tokens share each looked-up
// weight vector. Blocks never change the per-element order.
void PaletteDot(const PaletteDotArgs& a) {
  if (a.n == 1) {
    int64_t r = 0;
    for (; r + 4 <= a.rows; r += 4) Block<4, 1>().run(a, r, 0);
    for (; r < a.rows; ++r) Block<1, 1>().run(a, r, 0);
    return;
  }
  for (int64_t r = 0; r < a.rows; ++r) {
    int64_t t = 0;
    for (; t + 4 <= a.n; t += 4) Block<1, 4>().run(a, r, t);
    for (; t < a.n; ++t) Block<1, 1>().run(a, r, t);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(PaletteDot);

void palette_dot(const PaletteDotArgs& a) { HWY_DYNAMIC_DISPATCH(PaletteDot)(a); }

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
