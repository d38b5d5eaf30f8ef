// Highway-dispatched decode kernel of highly sparse bitmask rows through their window index
// (sparse_simd.h sparse_window_index_rows, sparse_index.h): per 32-column window one vpermt2ps gathers x
// at up to 16 kept entries, where the mask kernel expands values over every 16 columns.
#include <type_traits>

#include "kernels/cpu/sparse_simd.h"

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/sparse_index_simd.cpp"
#include <hwy/cache_control.h>
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {

template <SparseValues kV>
using ValueT = std::conditional_t<kV == SparseValues::kF32, float, uint16_t>;

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// The lane mask of a window's first step by its count c (<= 32): min(c, 16) lanes.
struct StepMasks {
  uint16_t m[33];
  constexpr StepMasks() : m() {
    for (int c = 0; c <= 32; ++c) m[c] = static_cast<uint16_t>(c >= 16 ? 0xFFFF : (1u << c) - 1);
  }
};
inline constexpr StepMasks kStepMasks{};

// 16 values from p as f32 lanes (those past a window's count are not used: the FMA is masked). The caller
// guarantees 16 values of slack after a row's last one.
template <SparseValues kV>
HWY_INLINE __m512 load_values(const ValueT<kV>* p) {
  if constexpr (kV == SparseValues::kF32) {
    return _mm512_loadu_ps(p);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (kV == SparseValues::kF16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// Up to 16 kept entries (lanes k) at (ip, vp) of window w into acc[T]; x past `rest` columns of the
// window is not read.
template <SparseValues kV, int T, bool kRagged>
HWY_INLINE void index_step(const float* const* x, int64_t w, int64_t rest, const uint8_t* ip, const ValueT<kV>* vp,
                           __mmask16 k, __m512* acc) {
  const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ip)));
  const __m512 v = load_values<kV>(vp);
  for (int t = 0; t < T; ++t) {
    const float* xw = x[t] + 32 * w;
    __m512 x0, x1;
    if constexpr (kRagged) {
      x0 = _mm512_maskz_loadu_ps(static_cast<__mmask16>(rest >= 16 ? 0xFFFF : (1u << rest) - 1), xw);
      x1 = _mm512_maskz_loadu_ps(static_cast<__mmask16>(rest >= 32  ? 0xFFFF
                                                        : rest > 16 ? (1u << (rest - 16)) - 1
                                                                    : 0),
                                 xw + 16);
    } else {
      x0 = _mm512_loadu_ps(xw);
      x1 = _mm512_loadu_ps(xw + 16);
    }
    acc[t] = _mm512_mask3_fmadd_ps(v, _mm512_permutex2var_ps(x0, idx, x1), acc[t], k);
  }
}

// Window w's c kept entries (one step, a second one past 16), then the pointers past them.
template <SparseValues kV, int T, bool kRagged>
HWY_INLINE void index_window(const float* const* x, int64_t w, int64_t rest, uint32_t c, const uint8_t*& ip,
                             const ValueT<kV>*& vp, __m512* acc) {
  index_step<kV, T, kRagged>(x, w, rest, ip, vp, static_cast<__mmask16>(kStepMasks.m[c]), acc);
  if (c > 16) [[unlikely]]
    index_step<kV, T, kRagged>(x, w, rest, ip + 16, vp + 16, static_cast<__mmask16>(kStepMasks.m[c - 16]), acc);
  ip += c;
  vp += c;
}

// The value and column streams are prefetched this many entries ahead (software prefetch measured faster
// than the hardware's alone on Zen 4).
constexpr int64_t kPrefetchEntries = 1024;

// Row r × T tokens: two accumulators per token (even and odd windows) hide the FMA latency; their sum
// is reduced at the end.
template <SparseValues kV, int T>
HWY_INLINE void index_row(const WindowIndexRowsArgs& a, int64_t r, int64_t t0) {
  const uint8_t* cp = a.counts + r * a.windows;
  const uint8_t* ip = a.columns + r * a.column_stride;
  const ValueT<kV>* vp = static_cast<const ValueT<kV>*>(a.values) + r * a.value_stride;
  const float* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  __m512 even[T], odd[T];
  for (int t = 0; t < T; ++t) even[t] = odd[t] = _mm512_setzero_ps();
  const int64_t full = a.cols / 32;
  int64_t w = 0;
  for (; w + 2 <= full; w += 2) {
    hwy::Prefetch(vp + kPrefetchEntries);
    if (w % 4 == 0) hwy::Prefetch(ip + kPrefetchEntries);
    index_window<kV, T, false>(x, w, 32, cp[w], ip, vp, even);
    index_window<kV, T, false>(x, w + 1, 32, cp[w + 1], ip, vp, odd);
  }
  for (; w < a.windows; ++w) index_window<kV, T, true>(x, w, a.cols - 32 * w, cp[w], ip, vp, w % 2 == 0 ? even : odd);
  for (int t = 0; t < T; ++t) a.y[(t0 + t) * a.y_stride + r] = _mm512_reduce_add_ps(_mm512_add_ps(even[t], odd[t]));
}

template <SparseValues kV>
HWY_INLINE void index_rows(const WindowIndexRowsArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    int64_t t0 = 0;
    for (; t0 + 3 <= a.tokens; t0 += 3) index_row<kV, 3>(a, r, t0);
    if (a.tokens - t0 == 2) index_row<kV, 2>(a, r, t0);
    if (a.tokens - t0 == 1) index_row<kV, 1>(a, r, t0);
  }
}
#else
template <SparseValues kV>
HWY_INLINE void index_rows(const WindowIndexRowsArgs&) {
  HWY_ABORT("sparse: the window index kernel runs on AVX-512 targets only (sparse_window_index_path)");
}
#endif

void SparseWindowIndexRows(const WindowIndexRowsArgs& a) {
  switch (a.value_type) {
    case SparseValues::kF32: return index_rows<SparseValues::kF32>(a);
    case SparseValues::kF16: return index_rows<SparseValues::kF16>(a);
    case SparseValues::kBF16: return index_rows<SparseValues::kBF16>(a);
    case SparseValues::kQuant: HWY_ABORT("sparse: window index rows take f32/f16/bf16 values");
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(SparseWindowIndexRows);
void sparse_window_index_rows(const WindowIndexRowsArgs& a) { HWY_DYNAMIC_DISPATCH(SparseWindowIndexRows)(a); }

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
