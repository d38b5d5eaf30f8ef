// Highway SIMD kernels (compiled once per target: scalar/EMU128, AVX2, AVX-512) with runtime dispatch.
#include "kernels/cpu/simd.h"

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "kernels/cpu/prefetch.h"

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
// clang-format off: the math header is included once per target, after highway.h
#include <hwy/contrib/math/math-inl.h>
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using D1 = hn::CappedTag<float, 1>;  // one lane: scalar tails with the target's own MulAdd

// a · b + c rounded as the target's vector MulAdd rounds it (fused where the target has FMA).
HWY_INLINE float mul_add1(float a, float b, float c) {
  const D1 d1;
  return hn::GetLane(hn::MulAdd(hn::Set(d1, a), hn::Set(d1, b), hn::Set(d1, c)));
}

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

#if HWY_TARGET == HWY_SCALAR
// One lane per vector: the lane sums are the lanes.
HWY_INLINE void reduce4(VF a, VF b, VF c, VF e, float* sums) {
  sums[0] = hn::GetLane(a);
  sums[1] = hn::GetLane(b);
  sums[2] = hn::GetLane(c);
  sums[3] = hn::GetLane(e);
}
#else
using D4 = hn::Full128<float>;
static_assert(hn::MaxLanes(DF()) >= 4, "the lane-sum tree needs whole 128-bit blocks");

// Halves a vector pairwise (lower half + upper half) until one 128-bit block is left.
template <class D>
HWY_INLINE hn::Vec<D4> fold_blocks(D d, hn::Vec<D> v) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    return fold_blocks(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)));
  } else {
    return v;
  }
}

// sums[0..3] = the lane sums of a, b, c, e, each by the same tree: within each 128-bit block
// (l0 + l2) + (l1 + l3), then fold_blocks. Reducing four accumulators at once costs about as much
// as reducing one; reduce4(a, a, a, a) gives a's sum in the same bits.
HWY_INLINE void reduce4(VF a, VF b, VF c, VF e, float* sums) {
  const DF d;
  const hn::Repartition<uint64_t, DF> d64;
  const VF ab = hn::Add(hn::InterleaveLower(d, a, b), hn::InterleaveUpper(d, a, b));  // a0+a2 b0+b2 a1+a3 b1+b3
  const VF ce = hn::Add(hn::InterleaveLower(d, c, e), hn::InterleaveUpper(d, c, e));
  const auto ab64 = hn::BitCast(d64, ab), ce64 = hn::BitCast(d64, ce);
  const VF lo = hn::BitCast(d, hn::InterleaveLower(d64, ab64, ce64));  // a0+a2 b0+b2 c0+c2 e0+e2
  const VF hi = hn::BitCast(d, hn::InterleaveUpper(d64, ab64, ce64));  // a1+a3 b1+b3 c1+c3 e1+e3
  hn::StoreU(fold_blocks(d, hn::Add(lo, hi)), D4(), sums);
}
#endif

// Register-blocked dot products: y[t * y_stride + r] = dot(w + r * w_stride, x + t * x_stride)
// for R rows (1, 4 or 8) × T tokens, one vector accumulator each. Every weight vector loaded feeds T
// tokens, every activation vector R rows; the accumulators of a token are reduced 4 rows at a time.
template <int R, int T, class L>
HWY_INLINE void micro(const typename L::T* w, int64_t w_stride, const float* x, int64_t x_stride, int64_t cols,
                      float* y, int64_t y_stride) {
  static_assert(R == 1 || R == 4 || R == 8);
  const DF d;
  const int64_t n = static_cast<int64_t>(hn::Lanes(d));
  VF acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);
  int64_t c = 0;
  for (; c + n <= cols; c += n) {
    VF xv[T];
    for (int t = 0; t < T; ++t) xv[t] = hn::LoadU(d, x + t * x_stride + c);
    for (int r = 0; r < R; ++r) {
      // Decode streams 4 short rows at once, which the hardware prefetcher follows poorly: the same
      // columns 8 rows on (the next-but-one block), once per 64 bytes of f32 or per 2 × 64 of f16.
      if (R == 4 && c % 16 == 0) prefetch_l2(w + (r + 8) * w_stride + c);
      VF wv = L::load(d, w + r * w_stride + c);
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
      // One load per weight vector: GCC otherwise folds it into each of the T multiply-adds as a
      // memory operand (T loads), and the loads, not the multiply-adds, bound the loop (AVX-512 f32
      // prefill +45 %). Not on AVX2: with 16 registers the folded form is faster there.
      asm("" : "+v"(wv.raw));
#endif
      for (int t = 0; t < T; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    float s[R < 4 ? 4 : R];
    if constexpr (R == 1)
      reduce4(acc[0][t], acc[0][t], acc[0][t], acc[0][t], s);
    else
      for (int r = 0; r < R; r += 4) reduce4(acc[r][t], acc[r + 1][t], acc[r + 2][t], acc[r + 3][t], s + r);
    for (int r = 0; r < R; ++r) {
      const auto* wr = w + r * w_stride;
      const float* xt = x + t * x_stride;
      for (int64_t j = c; j < cols; ++j) s[r] = mul_add1(L::get(wr + j), xt[j], s[r]);
      y[t * y_stride + r] = s[r];
    }
  }
}

// Rows [r0, r0 + R) × tokens [t_begin, t_end) in groups of up to 3 tokens.
template <int R, class L>
HWY_INLINE void micro_tokens(const typename L::T* w, int64_t w_stride, const float* x, int64_t x_stride, int64_t cols,
                             int64_t t_begin, int64_t t_end, float* y, int64_t y_stride) {
  int64_t t = t_begin;
  for (; t + 3 <= t_end; t += 3)
    micro<R, 3, L>(w, w_stride, x + t * x_stride, x_stride, cols, y + t * y_stride, y_stride);
  if (t_end - t == 2) micro<R, 2, L>(w, w_stride, x + t * x_stride, x_stride, cols, y + t * y_stride, y_stride);
  if (t_end - t == 1) micro<R, 1, L>(w, w_stride, x + t * x_stride, x_stride, cols, y + t * y_stride, y_stride);
}

// y[t * y_stride + r] = dot(w row r, x row t) for rows [r_begin, r_end) × tokens [t_begin, t_end):
// blocks of 4 rows walk every token while their weights stay in L1. With 32 vector registers
// (AVX-512) several tokens run in blocks of 8 rows (24 accumulators): half the activation loads per
// multiply-add, which come from L2 once the call's tokens outgrow L1 (f32 prefill on a 2.1 GHz
// Sapphire Rapids: ~34 GFLOP/s per core with 4 rows). Each (row, token) keeps its accumulator and
// reduction, so the bits do not change.
template <class L>
HWY_INLINE void dots(const typename L::T* w, int64_t w_stride, const float* x, int64_t x_stride, int64_t cols,
                     int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end, float* y, int64_t y_stride) {
  int64_t r = r_begin;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if (t_end - t_begin >= 3)
    for (; r + 8 <= r_end; r += 8)
      micro_tokens<8, L>(w + r * w_stride, w_stride, x, x_stride, cols, t_begin, t_end, y + r, y_stride);
#endif
  for (; r + 4 <= r_end; r += 4)
    micro_tokens<4, L>(w + r * w_stride, w_stride, x, x_stride, cols, t_begin, t_end, y + r, y_stride);
  for (; r < r_end; ++r)
    micro_tokens<1, L>(w + r * w_stride, w_stride, x, x_stride, cols, t_begin, t_end, y + r, y_stride);
}

template <class L>
HWY_INLINE void matmul_rows(const uint8_t* wb, int64_t rows, int64_t cols, const float* x, int64_t t_begin,
                            int64_t t_end, int64_t r_begin, int64_t r_end, float* y) {
  dots<L>(reinterpret_cast<const typename L::T*>(wb), cols, x, cols, cols, t_begin, t_end, r_begin, r_end, y, rows);
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

void MatmulBlockF32(const float* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y, int64_t y_stride) {
  dots<LoadF32>(w, cols, x, cols, cols, 0, n, 0, rows, y, y_stride);
}

float Dot(const float* a, const float* b, int64_t n) {
  float y = 0.0f;
  micro<1, 1, LoadF32>(a, 0, b, 0, n, &y, 0);
  return y;
}

// Σ of the lanes of e in double, added to `sums` (a vector of double partial sums).
#if HWY_TARGET == HWY_SCALAR
using SumVector = double;
HWY_INLINE SumVector zero_sums() { return 0.0; }
HWY_INLINE SumVector add_to_sums(SumVector sums, VF e) { return sums + hn::GetLane(e); }
HWY_INLINE double total(SumVector sums) { return sums; }
#else
using DHalf = hn::Half<DF>;
using DSum = hn::Rebind<double, DHalf>;
using SumVector = hn::Vec<DSum>;
HWY_INLINE SumVector zero_sums() { return hn::Zero(DSum()); }
HWY_INLINE SumVector add_to_sums(SumVector sums, VF e) {
  const DHalf dh;
  const DSum dd;
  return hn::Add(sums, hn::Add(hn::PromoteTo(dd, hn::LowerHalf(dh, e)), hn::PromoteTo(dd, hn::UpperHalf(dh, e))));
}
HWY_INLINE double total(SumVector sums) {
  alignas(64) double parts[hn::MaxLanes(DSum())];
  hn::Store(sums, DSum(), parts);
  double sum = 0.0;
  for (double p : parts) sum += p;
  return sum;
}
#endif

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const DF d;
  const D1 d1;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  const VF mxv = hn::Set(d, mx);
  SumVector sums = zero_sums();
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const VF e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), mxv));
    hn::StoreU(e, d, x + i);
    sums = add_to_sums(sums, e);
  }
  double sum = total(sums);
  for (; i < n; ++i) {
    x[i] = hn::GetLane(hn::Exp(d1, hn::Set(d1, x[i] - mx)));
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  const VF invv = hn::Set(d, inv);
  for (i = 0; i + lanes <= n; i += lanes) hn::StoreU(hn::Mul(hn::LoadU(d, x + i), invv), d, x + i);
  for (; i < n; ++i) x[i] *= inv;
}

// gate[i] = gate[i] / (1 + exp(-gate[i])) · up[i]
void SiluMul(float* gate, const float* up, int64_t n) {
  const DF d;
  const D1 d1;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const VF one = hn::Set(d, 1.0f);
  // Exp is valid up to 104 (e^104 is already +inf in f32): larger arguments are clamped.
  const VF exp_max = hn::Set(d, 104.0f);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const VF g = hn::LoadU(d, gate + i);
    const VF silu = hn::Div(g, hn::Add(one, hn::Exp(d, hn::Min(hn::Neg(g), exp_max))));
    hn::StoreU(hn::Mul(silu, hn::LoadU(d, up + i)), d, gate + i);
  }
  for (; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + hn::GetLane(hn::Exp(d1, hn::Set(d1, std::min(-g, 104.0f))))) * up[i];
  }
}

// out[t] += Σ_p probs[t][p] · v[p] over columns [c0, c0 + NV · lanes) for T tokens starting at
// token t0 of the chunk: positions [0, pos + t0 + 1) for all, then each later token's own extra
// positions, so every element is one fused multiply-add chain over p in order from zero.
template <int T, int NV>
HWY_INLINE void weighted_values(const float* probs, int64_t probs_stride, const float* v, int64_t kv_stride, int64_t c0,
                                int64_t pos, int64_t t0, float* out, int64_t out_stride) {
  const DF d;
  const int64_t n = static_cast<int64_t>(hn::Lanes(d));
  VF acc[T][NV];
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < NV; ++j) acc[t][j] = hn::Zero(d);
  const int64_t common = pos + t0 + 1;
  for (int64_t p = 0; p < common; ++p) {
    const float* vp = v + p * kv_stride + c0;
    VF pt[T];
    for (int t = 0; t < T; ++t) pt[t] = hn::Set(d, probs[t * probs_stride + p]);
    for (int j = 0; j < NV; ++j) {
      const VF vv = hn::LoadU(d, vp + j * n);
      for (int t = 0; t < T; ++t) acc[t][j] = hn::MulAdd(pt[t], vv, acc[t][j]);
    }
  }
  for (int t = 1; t < T; ++t)
    for (int64_t p = common; p <= pos + t0 + t; ++p) {
      const VF pt = hn::Set(d, probs[t * probs_stride + p]);
      for (int j = 0; j < NV; ++j) acc[t][j] = hn::MulAdd(pt, hn::LoadU(d, v + p * kv_stride + c0 + j * n), acc[t][j]);
    }
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < NV; ++j) hn::StoreU(acc[t][j], d, out + t * out_stride + c0 + j * n);
}

template <int T>
HWY_INLINE void weighted_values_tokens(const float* probs, int64_t probs_stride, const float* v, int64_t kv_stride,
                                       int64_t head_dim, int64_t pos, int64_t t0, float* out, int64_t out_stride) {
  const DF d;
  const D1 d1;
  const int64_t n = static_cast<int64_t>(hn::Lanes(d));
  const int64_t vectors = head_dim / n;
  constexpr int kMaxVectors = 4;  // T x 4 accumulators + 4 broadcasts stay within 16 AVX2 registers
  for (int64_t j = 0; j < vectors; j += kMaxVectors) {
    const int64_t c0 = j * n;
    switch (std::min<int64_t>(kMaxVectors, vectors - j)) {
      case 4: weighted_values<T, 4>(probs, probs_stride, v, kv_stride, c0, pos, t0, out, out_stride); break;
      case 3: weighted_values<T, 3>(probs, probs_stride, v, kv_stride, c0, pos, t0, out, out_stride); break;
      case 2: weighted_values<T, 2>(probs, probs_stride, v, kv_stride, c0, pos, t0, out, out_stride); break;
      default: weighted_values<T, 1>(probs, probs_stride, v, kv_stride, c0, pos, t0, out, out_stride); break;
    }
  }
  // Columns past the last full vector: one chain per element with the one-lane MulAdd.
  for (int t = 0; t < T; ++t)
    for (int64_t c = vectors * n; c < head_dim; ++c) {
      auto acc = hn::Zero(d1);
      for (int64_t p = 0; p <= pos + t0 + t; ++p)
        acc = hn::MulAdd(hn::Set(d1, probs[t * probs_stride + p]), hn::Set(d1, v[p * kv_stride + c]), acc);
      out[t * out_stride + c] = hn::GetLane(acc);
    }
}

void AttentionHead(const float* q, int64_t q_stride, const float* k, const float* v, int64_t kv_stride,
                   int64_t head_dim, float scale, int64_t pos, int64_t t_begin, int64_t t_end, float* scratch,
                   float* out) {
  const int64_t width = pos + t_end;  // positions the last token sees: the row stride of scratch
  // Scores of groups of 3 tokens over the positions the group's last token sees (the earlier
  // tokens' extra entries are computed and never read).
  for (int64_t t = t_begin; t < t_end; t += 3) {
    const int64_t group_end = std::min(t_end, t + 3);
    const int64_t positions = pos + group_end;
    dots<LoadF32>(k, kv_stride, q + t * q_stride, q_stride, head_dim, 0, group_end - t, 0, positions,
                  scratch + (t - t_begin) * width, width);
  }
  for (int64_t t = t_begin; t < t_end; ++t) {
    float* row = scratch + (t - t_begin) * width;
    const int64_t len = pos + t + 1;
    for (int64_t p = 0; p < len; ++p) row[p] *= scale;
    Softmax(row, len);
  }
  for (int64_t t = t_begin; t < t_end; t += 3) {
    const float* probs = scratch + (t - t_begin) * width;
    float* o = out + t * q_stride;
    switch (std::min<int64_t>(3, t_end - t)) {
      case 3: weighted_values_tokens<3>(probs, width, v, kv_stride, head_dim, pos, t, o, q_stride); break;
      case 2: weighted_values_tokens<2>(probs, width, v, kv_stride, head_dim, pos, t, o, q_stride); break;
      default: weighted_values_tokens<1>(probs, width, v, kv_stride, head_dim, pos, t, o, q_stride); break;
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(MatmulRowsF32);
HWY_EXPORT(MatmulRowsF16);
HWY_EXPORT(MatmulRowsBF16);
HWY_EXPORT(MatmulBlockF32);
HWY_EXPORT(Dot);
HWY_EXPORT(Softmax);
HWY_EXPORT(SiluMul);
HWY_EXPORT(AttentionHead);

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
void matmul_block_f32(const float* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y,
                      int64_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatmulBlockF32)(w, rows, cols, x, n, y, y_stride);
}
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }
void softmax(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(Softmax)(x, n); }
void silu_mul(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluMul)(gate, up, n); }
void attention_head(const float* q, int64_t q_stride, const float* k, const float* v, int64_t kv_stride,
                    int64_t head_dim, float scale, int64_t pos, int64_t t_begin, int64_t t_end, float* scratch,
                    float* out) {
  HWY_DYNAMIC_DISPATCH(AttentionHead)(q, q_stride, k, v, kv_stride, head_dim, scale, pos, t_begin, t_end, scratch, out);
}
std::vector<int64_t> compiled_targets() {
  std::vector<int64_t> out;
  // AVX3_DL: compiled only by the sparse and int8-activation kernels (they request it); every other
  // kernel file runs its AVX3 code under it. SupportedTargets() honours force_simd_target's mask.
#if HWY_ARCH_X86
  constexpr int64_t kTargets = HWY_TARGETS | HWY_AVX3_DL;
#else
  constexpr int64_t kTargets = HWY_TARGETS;
#endif
  for (int64_t bits = hwy::SupportedTargets() & kTargets; bits != 0; bits &= bits - 1) {
    const int64_t t = bits & ~(bits - 1);
    out.push_back(t);
  }
  return out;
}

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
