// Highway SIMD kernels (compiled once per target: scalar/EMU128, AVX2, AVX-512) with runtime dispatch.
#include "kernels/cpu/simd.h"

#include <cstring>

#include "core/dtype.h"

// Targets: the portable fallback, AVX2 (+FMA, F16C) and AVX-512; SSSE3/SSE4 are skipped to keep
// build time down (they are never the best target of a CPU that runs LLMs).
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Weight element loaders: a vector of Lanes(DF) weights promoted to f32, and one scalar.
struct LoadF32 {
  using T = float;
  static HWY_INLINE VF load(DF d, const T* p) { return hn::LoadU(d, p); }
  static HWY_INLINE float get(const T* p) { return *p; }
};
struct LoadF16 {
  using T = hwy::float16_t;
  static HWY_INLINE VF load(DF d, const T* p) { return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, DF>(), p)); }
  static HWY_INLINE float get(const T* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return f16_to_f32(bits);
  }
};
struct LoadBF16 {
  using T = uint16_t;
  static HWY_INLINE VF load(DF d, const T* p) {
    const hn::RebindToUnsigned<DF> du32;
    const hn::Rebind<uint16_t, DF> du16;
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
  }
  static HWY_INLINE float get(const T* p) { return bf16_to_f32(*p); }
};

// Register-blocked microkernel: R weight rows × T tokens, one accumulator each; every weight
// vector is loaded once and used for T tokens, every activation vector used for R rows.
template <int R, int T, class L>
HWY_INLINE void micro(const typename L::T* w, int64_t rows, int64_t cols, const float* x, int64_t r0, int64_t t0,
                      float* y) {
  const DF d;
  const int64_t n = static_cast<int64_t>(hn::Lanes(d));
  VF acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);
  int64_t c = 0;
  for (; c + n <= cols; c += n) {
    VF xv[T];
    for (int t = 0; t < T; ++t) xv[t] = hn::LoadU(d, x + (t0 + t) * cols + c);
    for (int r = 0; r < R; ++r) {
      const VF wv = L::load(d, w + (r0 + r) * cols + c);
      for (int t = 0; t < T; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      float s = hn::GetLane(hn::SumOfLanes(d, acc[r][t]));
      const auto* wr = w + (r0 + r) * cols;
      const float* xt = x + (t0 + t) * cols;
      for (int64_t j = c; j < cols; ++j) s += L::get(wr + j) * xt[j];
      y[(t0 + t) * rows + r0 + r] = s;
    }
}

constexpr int kRowsPerBlock = 4;
constexpr int kTokensPerBlock = 3;  // 12 accumulators + 4 weights + 1 activation fit 16 AVX2 registers

template <class L>
HWY_INLINE void matmul_rows(const uint8_t* wb, int64_t rows, int64_t cols, const float* x, int64_t t_begin,
                            int64_t t_end, int64_t r_begin, int64_t r_end, float* y) {
  const auto* w = reinterpret_cast<const typename L::T*>(wb);
  int64_t r = r_begin;
  for (; r + kRowsPerBlock <= r_end; r += kRowsPerBlock) {
    int64_t t = t_begin;
    for (; t + kTokensPerBlock <= t_end; t += kTokensPerBlock)
      micro<kRowsPerBlock, kTokensPerBlock, L>(w, rows, cols, x, r, t, y);
    for (; t < t_end; ++t) micro<kRowsPerBlock, 1, L>(w, rows, cols, x, r, t, y);
  }
  for (; r < r_end; ++r) {
    int64_t t = t_begin;
    for (; t + kTokensPerBlock <= t_end; t += kTokensPerBlock) micro<1, kTokensPerBlock, L>(w, rows, cols, x, r, t, y);
    for (; t < t_end; ++t) micro<1, 1, L>(w, rows, cols, x, r, t, y);
  }
}

void MatmulRowsF32(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                   int64_t r_begin, int64_t r_end, float* y) {
  matmul_rows<LoadF32>(w, rows, cols, x, t_begin, t_end, r_begin, r_end, y);
}
void MatmulRowsF16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                   int64_t r_begin, int64_t r_end, float* y) {
  matmul_rows<LoadF16>(w, rows, cols, x, t_begin, t_end, r_begin, r_end, y);
}
void MatmulRowsBF16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                    int64_t r_begin, int64_t r_end, float* y) {
  matmul_rows<LoadBF16>(w, rows, cols, x, t_begin, t_end, r_begin, r_end, y);
}

float Dot(const float* a, const float* b, int64_t n) {
  float y = 0.0f;
  micro<1, 1, LoadF32>(a, 1, n, b, 0, 0, &y);
  return y;
}

void Axpy(float a, const float* x, float* y, int64_t n) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const VF av = hn::Set(d, a);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::MulAdd(av, hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

int64_t CurrentTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(MatmulRowsF32);
HWY_EXPORT(MatmulRowsF16);
HWY_EXPORT(MatmulRowsBF16);
HWY_EXPORT(Dot);
HWY_EXPORT(Axpy);
HWY_EXPORT(CurrentTarget);

void matmul_rows_f32(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                     int64_t r_begin, int64_t r_end, float* y) {
  HWY_DYNAMIC_DISPATCH(MatmulRowsF32)(w, rows, cols, x, t_begin, t_end, r_begin, r_end, y);
}
void matmul_rows_f16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                     int64_t r_begin, int64_t r_end, float* y) {
  HWY_DYNAMIC_DISPATCH(MatmulRowsF16)(w, rows, cols, x, t_begin, t_end, r_begin, r_end, y);
}
void matmul_rows_bf16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                      int64_t r_begin, int64_t r_end, float* y) {
  HWY_DYNAMIC_DISPATCH(MatmulRowsBF16)(w, rows, cols, x, t_begin, t_end, r_begin, r_end, y);
}
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }
void axpy(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(Axpy)(a, x, y, n); }
int64_t current_target() { return HWY_DYNAMIC_DISPATCH(CurrentTarget)(); }

std::vector<int64_t> compiled_targets() {
  std::vector<int64_t> out;
  // SupportedTargets() honours force_simd_target's mask: query with no target forced.
  for (int64_t bits = hwy::SupportedTargets() & HWY_TARGETS; bits != 0; bits &= bits - 1) {
    const int64_t t = bits & ~(bits - 1);
    out.push_back(t);
  }
  return out;
}

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
