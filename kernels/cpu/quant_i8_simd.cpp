// SIMD int8-activation Quant kernels (quant_i8.h): packed codes × int8 activations in exact integer
// dot products, compiled per Highway target — AVX2 (maddubs/madd), AVX-512 (the same 256-bit code
// with AVX-512VL) and AVX-512 VNNI (dpbusd) use intrinsics, every other target a portable loop.
#include <cstring>

#include "core/dtype.h"
#include "kernels/cpu/prefetch.h"
#include "kernels/cpu/quant_i8.h"
#include "kernels/cpu/quant_simd.h"

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL  // the VNNI variant; Highway compiles it only on request
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/quant_i8_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#include <immintrin.h>
#endif

HWY_BEFORE_NAMESPACE();
// The VNNI variant also needs avx512vnni (Highway's AVX3_DL target string has only AVX-VNNI).
#if HWY_TARGET == HWY_AVX3_DL
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#else
#pragma GCC target("avx512vnni")
#endif
#endif
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {

using K = QuantI8Kind;

// Bits per code of the extractors that read packed rows (0: one byte per code).
constexpr int kind_bits(K k) {
  switch (k) {
    case K::kSigned8: return 8;
    case K::kBytes: return 0;
    case K::kNibbles: return 4;
    case K::kCrumbs: return 2;
    case K::kBits1: return 1;
    case K::kBits3: return 3;
    case K::kBits5: return 5;
    case K::kBits6: return 6;
    case K::kBits7: return 7;
  }
  return 0;
}

// The portable kernel's view of slot values: u of column c of a row (see QuantI8Kind).
int32_t slot_value(K kind, const uint8_t* row, int64_t c) {
  const int bits = kind_bits(kind);
  if (kind == K::kBytes) return row[c];
  if (kind == K::kSigned8) return static_cast<int32_t>(row[c]) - 128;
  const int64_t bit = c * bits;
  uint32_t word = row[bit >> 3];
  if ((bit & 7) + bits > 8) word |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  const auto code = static_cast<int32_t>((word >> (bit & 7)) & ((1u << bits) - 1));
  return kind == K::kBits1 ? 2 * code : code;
}

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL

using V = __m256i;

HWY_INLINE V load2x128(const uint8_t* lo, const uint8_t* hi) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo))),
                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)), 1);
}

// Tables of the 3/5/6/7-bit extractor: 8 codes of an octet (`bits` bytes, LSB-first) become u16
// windows of two bytes (shuffle) shifted right by 1..8 bits (mulhi by 2^(16 - shift)); the window
// starts one byte early when a code is byte aligned, so no shift is 0 (2^16 does not fit a u16).
template <int kBits>
struct BitsTables {
  alignas(32) uint8_t first[32];   // shuffle for the first octet of each 128-bit lane
  alignas(32) uint8_t second[32];  // for the second octet
  alignas(32) uint16_t mul[16];
  constexpr BitsTables() : first(), second(), mul() {
    for (int lane = 0; lane < 2; ++lane)
      for (int i = 0; i < 8; ++i) {
        const int o = kBits * i;
        const int w = o % 8 == 0 ? o / 8 - 1 : o / 8;
        const int shift = o - 8 * w;
        const int k = lane * 16 + 2 * i;
        first[k] = w < 0 ? 0x80 : static_cast<uint8_t>(w);
        first[k + 1] = static_cast<uint8_t>(w + 1);
        second[k] = w < 0 ? 0x80 : static_cast<uint8_t>(w + 8);
        second[k + 1] = static_cast<uint8_t>(w + 9);
        mul[lane * 8 + i] = static_cast<uint16_t>(1u << (16 - shift));
      }
  }
};

// One block (32 codes) of a 3/5/6/7-bit row in natural order: lane 0 = columns 0..15, lane 1 = 16..31.
// Reads 3 · kBits + 8 bytes from p.
template <int kBits>
HWY_INLINE V bits_block(const uint8_t* p) {
  static constexpr BitsTables<kBits> kT{};
  uint64_t o[4];
  for (int i = 0; i < 4; ++i) std::memcpy(&o[i], p + kBits * i, 8);
  const V v = _mm256_setr_epi64x(static_cast<int64_t>(o[0]), static_cast<int64_t>(o[1]), static_cast<int64_t>(o[2]),
                                 static_cast<int64_t>(o[3]));
  const V mask = _mm256_set1_epi16(static_cast<int16_t>((1 << kBits) - 1));
  const V mul = _mm256_load_si256(reinterpret_cast<const V*>(kT.mul));
  const V s1 = _mm256_shuffle_epi8(v, _mm256_load_si256(reinterpret_cast<const V*>(kT.first)));
  const V s2 = _mm256_shuffle_epi8(v, _mm256_load_si256(reinterpret_cast<const V*>(kT.second)));
  return _mm256_packus_epi16(_mm256_and_si256(_mm256_mulhi_epu16(s1, mul), mask),
                             _mm256_and_si256(_mm256_mulhi_epu16(s2, mul), mask));
}

// A/B slot vectors of the pair of blocks at p0, p1: 128-bit lane h of A holds slots 0..15 of block
// h, of B slots 16..31 (the order QuantI8Plan::slot_col describes).
template <K kKind>
HWY_INLINE void extract_pair(const uint8_t* p0, const uint8_t* p1, V& a, V& b) {
  if constexpr (kKind == K::kSigned8 || kKind == K::kBytes) {
    a = load2x128(p0, p1);
    b = load2x128(p0 + 16, p1 + 16);
  } else if constexpr (kKind == K::kNibbles) {
    const V v = load2x128(p0, p1);
    const V m = _mm256_set1_epi8(0x0F);
    a = _mm256_and_si256(v, m);
    b = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
  } else if constexpr (kKind == K::kCrumbs) {
    const __m128i q = _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p0)),
                                         _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p1)));
    const V w = _mm256_permute4x64_epi64(_mm256_castsi128_si256(q), 0x50);  // q0 q0 | q1 q1
    const V m = _mm256_set1_epi8(3);
    a = _mm256_and_si256(_mm256_srlv_epi64(w, _mm256_setr_epi64x(0, 2, 0, 2)), m);
    b = _mm256_and_si256(_mm256_srlv_epi64(w, _mm256_setr_epi64x(4, 6, 4, 6)), m);
  } else if constexpr (kKind == K::kBits1) {
    uint32_t w0, w1;
    std::memcpy(&w0, p0, 4);
    std::memcpy(&w1, p1, 4);
    const V v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi32(static_cast<int>(w0))),
                                        _mm_set1_epi32(static_cast<int>(w1)), 1);
    const V bit = _mm256_set1_epi64x(0x8040201008040201LL);
    const V two = _mm256_set1_epi8(2);
    const V sa = _mm256_setr_epi64x(0, 0x0101010101010101LL, 0, 0x0101010101010101LL);
    const V sb =
        _mm256_setr_epi64x(0x0202020202020202LL, 0x0303030303030303LL, 0x0202020202020202LL, 0x0303030303030303LL);
    a = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, sa), bit), bit), two);
    b = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, sb), bit), bit), two);
  } else {
    constexpr int kBits = kind_bits(kKind);
    const V c0 = bits_block<kBits>(p0), c1 = bits_block<kBits>(p1);
    a = _mm256_permute2x128_si256(c0, c1, 0x20);
    b = _mm256_permute2x128_si256(c0, c1, 0x31);
  }
}

#if HWY_TARGET == HWY_AVX3_DL
// vpdpbusd in its EVEX (AVX512-VNNI) form: Highway's AVX3_DL target also enables the VEX AVX-VNNI
// encoding, which Ice Lake lacks, so the 512-bit instruction is used on the low 256 bits.
HWY_INLINE V dpbusd(V acc, V u, V x) {
  return _mm512_castsi512_si256(
      _mm512_dpbusd_epi32(_mm512_castsi256_si512(acc), _mm512_castsi256_si512(u), _mm512_castsi256_si512(x)));
}
#endif

// int32 lanes: lanes 0..3 sum slot products of block 2p, lanes 4..7 of block 2p+1 (exact).
// kLut: a, b are palette magnitudes |v| <= 128 (the activations already carry the signs).
template <K kKind, bool kLut>
HWY_INLINE V dot_pair(V a, V b, V xa, V xb) {
  if constexpr (kKind == K::kSigned8 && !kLut) {  // v · x = |v| · sign(x, v); |v| <= 128 fits u8
    const V flip = _mm256_set1_epi8(static_cast<char>(0x80));
    const V va = _mm256_xor_si256(a, flip), vb = _mm256_xor_si256(b, flip);
    xa = _mm256_sign_epi8(xa, va);
    xb = _mm256_sign_epi8(xb, vb);
    a = _mm256_abs_epi8(va);
    b = _mm256_abs_epi8(vb);
  }
#if HWY_TARGET == HWY_AVX3_DL
  return dpbusd(dpbusd(_mm256_setzero_si256(), a, xa), b, xb);
#else
  const V ones = _mm256_set1_epi16(1);
  // maddubs pairs stay below 2^15 when u <= 128 (|x| <= 127); the sum of A and B pairs only when u <= 64
  // (kLut: u = |v| <= 128).
  if constexpr (kKind == K::kSigned8 || kKind == K::kBits7 || kLut)
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(a, xa), ones),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(b, xb), ones));
  else
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a, xa), _mm256_maddubs_epi16(b, xb)), ones);
#endif
}

HWY_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

HWY_INLINE float fmadd(float a, float b, float c) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

// Σ_g mins[g] · xsum[g]: 8 groups per vector in order, fixed lane reduction, scalar tail.
HWY_INLINE float min_terms(const float* mins, const float* xsum, int64_t groups) {
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(mins + g), _mm256_loadu_ps(xsum + g), acc);
  float s = hsum(acc);
  for (; g < groups; ++g) s = fmadd(mins[g], xsum[g], s);
  return s;
}

// Where a call's f16 scales are: the first group of pair p is (2p) >> shift, and `count` groups
// (1 or 2 for a pair, 1, 2 or 4 for two pairs) are widened and spread over the blocks' lanes.
struct HalfScales {
  int shift = 0;
  bool pair_two = true;  // a pair's blocks are in two groups (shift 0)
  __m256i pair_spread;   // group of each lane of a pair's sums
#if HWY_TARGET != HWY_AVX2
  __m512i quad_spread;
#endif
  explicit HalfScales(int block_shift) : shift(block_shift > 0 ? block_shift : 0), pair_two(shift == 0) {
    pair_spread = pair_two ? _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1) : _mm256_setzero_si256();
#if HWY_TARGET != HWY_AVX2
    quad_spread = shift == 0   ? _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)
                  : shift == 1 ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
                               : _mm512_setzero_si512();
#endif
  }
};

// The scales of blocks 2p, 2p+1 over the two 128-bit halves: f32 per block, or f16 per group
// (widening is exact).
HWY_INLINE __m256 pair_scales(bool half, const uint8_t* sc, int64_t p, const HalfScales& h) {
  if (half) {
    int32_t bits = 0;
    const uint8_t* at = sc + 2 * ((2 * p) >> h.shift);
    if (h.pair_two)
      std::memcpy(&bits, at, 4);
    else
      std::memcpy(&bits, at, 2);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(bits))), h.pair_spread);
  } else {
    return _mm256_permutevar8x32_ps(_mm256_castpd_ps(_mm256_broadcast_sd(reinterpret_cast<const double*>(sc + 8 * p))),
                                    _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  }
}

// Σ_g m'_g · X_g from f16 mins and scales per group, m' = m + centre · s (8 groups per vector).
HWY_INLINE float half_min_terms(const uint8_t* mins, const uint8_t* scales, float centre, const float* xsum,
                                int64_t groups) {
  const __m256 c = _mm256_set1_ps(centre);
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) {
    const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mins + 2 * g)));
    const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 2 * g)));
    acc = _mm256_fmadd_ps(_mm256_fmadd_ps(c, s, m), _mm256_loadu_ps(xsum + g), acc);
  }
  float sum = hsum(acc);
  for (; g < groups; ++g) {
    uint16_t m, s;
    std::memcpy(&m, mins + 2 * g, 2);
    std::memcpy(&s, scales + 2 * g, 2);
    sum = fmadd(fmadd(centre, _cvtsh_ss(s), _cvtsh_ss(m)), xsum[g], sum);
  }
  return sum;
}

#if HWY_TARGET != HWY_AVX2
// AVX-512: 256-bit half q of a 512-bit vector holds pair p + q in the 256-bit layout above.
using W = __m512i;

HWY_INLINE W join(V lo, V hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

#if HWY_TARGET == HWY_AVX3_DL
// VBMI tables of the 3/5/6/7-bit extractor for two pairs in the common layout (block j of the four
// at byte 4 · kBits · j): byte indices into the 16 · kBits bytes of the windows of bits_block, for
// 128-bit lane j = block j, A (octets 0, 1: columns 0..15) and B (octets 2, 3). A code aligned on a
// byte takes the byte before it as the low byte of its window (shifted out); block 0's first code
// any byte (index 0).
template <int kBits>
struct QuadBitsTables {
  alignas(64) uint8_t a_first[64], a_second[64], b_first[64], b_second[64];
  alignas(64) uint16_t mul[32];
  constexpr QuadBitsTables() : a_first(), a_second(), b_first(), b_second(), mul() {
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < 8; ++i) {
        const int o = kBits * i;
        const int w = o % 8 == 0 ? o / 8 - 1 : o / 8;
        const int k = 16 * j + 2 * i;
        const auto at = [&](int octet, int byte) {
          const int b = 4 * kBits * j + kBits * octet + byte;
          return static_cast<uint8_t>(b < 0 ? 0 : b);
        };
        a_first[k] = at(0, w), a_first[k + 1] = at(0, w + 1);
        a_second[k] = at(1, w), a_second[k + 1] = at(1, w + 1);
        b_first[k] = at(2, w), b_first[k + 1] = at(2, w + 1);
        b_second[k] = at(3, w), b_second[k + 1] = at(3, w + 1);
        mul[8 * j + i] = static_cast<uint16_t>(1u << (16 - (o - 8 * w)));
      }
  }
};

// The A and B vectors of the four blocks at `at` (reads their 16 · kBits bytes, no more).
template <int kBits>
HWY_INLINE void bits_quad(const uint8_t* at, W& wa, W& wb) {
  static constexpr QuadBitsTables<kBits> kT{};
  constexpr int kBytes = 16 * kBits;
  constexpr __mmask64 kLo = kBytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << kBytes) - 1;
  constexpr __mmask64 kHi = kBytes <= 64 ? 0 : (__mmask64{1} << (kBytes - 64)) - 1;
  const W lo = _mm512_maskz_loadu_epi8(kLo, at);
  const W hi = kHi == 0 ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi8(kHi, at + 64);
  const W mask = _mm512_set1_epi16(static_cast<int16_t>((1 << kBits) - 1));
  const W mul = _mm512_load_si512(kT.mul);
  const auto codes = [&](const uint8_t* first, const uint8_t* second) {
    const W s1 = _mm512_permutex2var_epi8(lo, _mm512_load_si512(first), hi);
    const W s2 = _mm512_permutex2var_epi8(lo, _mm512_load_si512(second), hi);
    return _mm512_packus_epi16(_mm512_and_si512(_mm512_mulhi_epu16(s1, mul), mask),
                               _mm512_and_si512(_mm512_mulhi_epu16(s2, mul), mask));
  };
  wa = codes(kT.a_first, kT.a_second);
  wb = codes(kT.b_first, kT.b_second);
}
#endif

// A/B slot vectors of pairs p, p+1 of a row, prefetching the bytes `ahead` rows on (as the pair step).
// kUniform (QuantI8DotArgs::uniform; 4-, 2- and 1-bit codes, on AVX3_DL also 3/5/6/7-bit): the four
// blocks are the 16 · bits bytes at 8 · bits · p, extracted in 512-bit vectors as extract_pair does
// per pair.
template <K kKind, bool kUniform>
HWY_INLINE void extract_quad(const QuantI8DotArgs& a, const uint8_t* row, int64_t p, int64_t ahead, W& wa, W& wb) {
  if constexpr (kUniform) {
    constexpr int kBits = kind_bits(kKind);
    const uint8_t* at = row + 8 * kBits * p;
    prefetch_l2(at + ahead * a.code_stride);
    if constexpr (kKind == K::kNibbles) {
      const W v = _mm512_loadu_si512(at);
      const W m = _mm512_set1_epi8(0x0F);
      wa = _mm512_and_si512(v, m);
      wb = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
    } else if constexpr (kKind == K::kCrumbs) {  // 64-bit lanes q0 q0 q1 q1 q2 q2 q3 q3
      const W w = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 0, 1, 1, 2, 2, 3, 3),
                                           _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const V*>(at))));
      const W m = _mm512_set1_epi8(3);
      wa = _mm512_and_si512(_mm512_srlv_epi64(w, _mm512_setr_epi64(0, 2, 0, 2, 0, 2, 0, 2)), m);
      wb = _mm512_and_si512(_mm512_srlv_epi64(w, _mm512_setr_epi64(4, 6, 4, 6, 4, 6, 4, 6)), m);
    } else if constexpr (kKind != K::kBits1) {
#if HWY_TARGET == HWY_AVX3_DL
      bits_quad<kBits>(at, wa, wb);
#endif
    } else {  // 128-bit lane j: the 4 bytes of block 2p + j, repeated
      const W v =
          _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                   _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at))));
      const W bit = _mm512_set1_epi64(0x8040201008040201LL);
      const W two = _mm512_set1_epi8(2);
      const W sa = _mm512_broadcast_i64x4(_mm256_setr_epi64x(0, 0x0101010101010101LL, 0, 0x0101010101010101LL));
      const W sb = _mm512_broadcast_i64x4(
          _mm256_setr_epi64x(0x0202020202020202LL, 0x0303030303030303LL, 0x0202020202020202LL, 0x0303030303030303LL));
      wa = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(_mm512_shuffle_epi8(v, sa), bit), two);
      wb = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(_mm512_shuffle_epi8(v, sb), bit), two);
    }
  } else {
    const int32_t* b = a.block_byte + 2 * p;
    prefetch_l2(row + ahead * a.code_stride + b[0]);
    prefetch_l2(row + ahead * a.code_stride + b[2]);
    V a0, b0, a1, b1;
    extract_pair<kKind>(row + b[0], row + b[1], a0, b0);
    extract_pair<kKind>(row + b[2], row + b[3], a1, b1);
    wa = join(a0, a1);
    wb = join(b0, b1);
  }
}

// x where s >= 0, -x where s < 0 (sign(x, s) where |s| multiplies the result: s = 0 gives 0 either way).
HWY_INLINE W apply_sign(W x, W s) { return _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(s), _mm512_setzero_si512(), x); }

// acc + the products of dot_pair, for two pairs (int32 lanes 4j..4j+3: block 2p + j).
template <K kKind, bool kLut>
HWY_INLINE W dot_quad(W acc, W a, W b, W xa, W xb) {
  if constexpr (kKind == K::kSigned8 && !kLut) {  // v · x = |v| · sign(x, v); |v| <= 128 fits u8
    const W flip = _mm512_set1_epi8(static_cast<char>(0x80));
    const W va = _mm512_xor_si512(a, flip), vb = _mm512_xor_si512(b, flip);
    xa = apply_sign(xa, va);
    xb = apply_sign(xb, vb);
    a = _mm512_abs_epi8(va);
    b = _mm512_abs_epi8(vb);
  }
#if HWY_TARGET == HWY_AVX3_DL
  return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc, a, xa), b, xb);
#else
  const W ones = _mm512_set1_epi16(1);
  if constexpr (kKind == K::kSigned8 || kKind == K::kBits7 || kLut)  // as dot_pair
    return _mm512_add_epi32(acc, _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(a, xa), ones),
                                                  _mm512_madd_epi16(_mm512_maddubs_epi16(b, xb), ones)));
  else
    return _mm512_add_epi32(
        acc, _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(a, xa), _mm512_maddubs_epi16(b, xb)), ones));
#endif
}

// A token's activation vectors for pairs p, p+1 (p even; e = their entries, simd::pair_field),
// loaded once and used by every row of a decode block.
struct QuadAct {
  W xa, xb, xa_lo, xb_lo, c;  // int8 parts (lo: split only), C (Quant weights other than kSigned8)
  __m512 dx;
};
template <K kKind, bool kLut, bool kSplit>
HWY_INLINE QuadAct quad_act(const float* e) {
  const auto field = [&](int f) { return _mm512_loadu_si512(e + 16 * f); };
  QuadAct x;
  x.xa = field(kFieldXA);
  x.xb = field(kFieldXB);
  x.dx = _mm512_castsi512_ps(field(kFieldDx));
  x.c = kKind != K::kSigned8 && !kLut ? field(kFieldC) : _mm512_setzero_si512();
  if constexpr (kSplit) {
    x.xa_lo = field(kFieldXALo);
    x.xb_lo = field(kFieldXBLo);
  }
  return x;
}

// pair_sums of pairs p, p+1.
template <K kKind, bool kLut, bool kSplit>
HWY_INLINE W quad_sums(W ca, W cb, W sa, W sb, const QuadAct& x) {
  const auto act = [&](W v, W s) {
    if constexpr (kLut) {
      return apply_sign(v, s);
    } else {
      (void)s;
      return v;
    }
  };
  if constexpr (kSplit) {
    // Two independent chains (256 · hi + (C + lo), exact in int32): half the dependent latency.
    const W hi = dot_quad<kKind, kLut>(_mm512_setzero_si512(), ca, cb, act(x.xa, sa), act(x.xb, sb));
    const W lo = dot_quad<kKind, kLut>(x.c, ca, cb, act(x.xa_lo, sa), act(x.xb_lo, sb));
    return _mm512_add_epi32(_mm512_slli_epi32(hi, 8), lo);
  } else {
    return dot_quad<kKind, kLut>(x.c, ca, cb, act(x.xa, sa), act(x.xb, sb));
  }
}

// The f16 scales of a quad's 4, 2 or 1 groups (shift 0, 1, >= 2) at `at`: a plain load of that size,
// none past the row's last group. (A masked load instead made the decode step slower on Zen 4.)
template <int kShift>
HWY_INLINE __m128i quad_half_bits(const uint8_t* at) {
  if constexpr (kShift == 0) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(at));
  } else if constexpr (kShift == 1) {
    uint32_t v;
    std::memcpy(&v, at, 4);
    return _mm_cvtsi32_si128(static_cast<int>(v));
  } else {
    uint16_t v;
    std::memcpy(&v, at, 2);
    return _mm_cvtsi32_si128(v);
  }
}

// The scales of blocks 2p..2p+3 (p even) of R rows, each over four int32 lanes (as pair_scales); one
// branch on the group shape for all rows.
template <int R>
HWY_INLINE void quad_scales(bool half, const uint8_t* const* sc, int64_t p, const HalfScales& h, __m512* s) {
  if (!half) {
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (int r = 0; r < R; ++r)
      s[r] = _mm512_permutexvar_ps(spread,
                                   _mm512_castps128_ps512(_mm_loadu_ps(reinterpret_cast<const float*>(sc[r] + 8 * p))));
    return;
  }
  const int64_t at = 2 * ((2 * p) >> h.shift);
  const auto rows = [&](auto load) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      s[r] = _mm512_permutexvar_ps(h.quad_spread, _mm512_castps128_ps512(_mm_cvtph_ps(load(sc[r] + at))));
  };
  if (h.shift == 0)
    rows(quad_half_bits<0>);
  else if (h.shift == 1)
    rows(quad_half_bits<1>);
  else
    rows(quad_half_bits<2>);
}
#endif

// Block sums U + C of pair p for one token, e its entry (simd::pair_field; int32 lanes as dot_pair;
// exact).
// kLut: sa, sb the signed values, ca, cb their magnitudes (v · x = |v| · sign(x, v)).
template <K kKind, bool kLut, bool kSplit>
HWY_INLINE V pair_sums(V ca, V cb, V sa, V sb, const float* e) {
  const auto act = [&](int field, V s) {
    const V x = _mm256_loadu_si256(reinterpret_cast<const V*>(e + 16 * field));
    if constexpr (kLut) {
      return _mm256_sign_epi8(x, s);
    } else {
      (void)s;
      return x;
    }
  };
  V d = dot_pair<kKind, kLut>(ca, cb, act(kFieldXA, sa), act(kFieldXB, sb));
  if constexpr (kSplit)  // 256 · hi + lo: exact in int32
    d = _mm256_add_epi32(_mm256_slli_epi32(d, 8),
                         dot_pair<kKind, kLut>(ca, cb, act(kFieldXALo, sa), act(kFieldXBLo, sb)));
  if constexpr (kKind != K::kSigned8 && !kLut)  // palette: offset 0
    d = _mm256_add_epi32(d, _mm256_loadu_si256(reinterpret_cast<const V*>(e + 16 * kFieldC)));
  return d;
}

#if HWY_TARGET == HWY_AVX2
using Acc = __m256;
HWY_INLINE Acc acc_zero() { return _mm256_setzero_ps(); }
HWY_INLINE Acc acc_pair(Acc acc, __m256 u, __m256 s) { return _mm256_fmadd_ps(u, s, acc); }
HWY_INLINE float acc_sum(Acc acc) { return hsum(acc); }
#else
// AVX-512: pairs p, p+1 at once (quad_sums); a last odd pair goes to the low half.
using Acc = __m512;
HWY_INLINE Acc acc_zero() { return _mm512_setzero_ps(); }
HWY_INLINE Acc acc_pair(Acc acc, __m256 u, __m256 s) {
  return _mm512_mask3_fmadd_ps(_mm512_castps256_ps512(u), _mm512_castps256_ps512(s), acc, 0xFF);
}
HWY_INLINE float acc_sum(Acc acc) {
  return hsum(_mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1)));
}
#endif

// R rows × T tokens: every extracted code pair feeds T tokens, every activation record R rows.
// The small loops are unrolled so the accumulators live in registers.
// kHalf: f16 scales per group (QuantI8DotArgs::half_scales), else f32 per block.
template <K kKind, bool kLut, bool kSplit, bool kUniform, bool kHalf, int R, int T>
HWY_INLINE void i8_block(const QuantI8DotArgs& a, int64_t r0, int64_t t0) {
  constexpr bool half = kHalf;
  Acc acc[R][T];
  const float* rec[T];
  const uint8_t* row[R];
  const uint8_t* sc[R];  // the row's scales: f32, or f16 (half)
  V lut[R];              // kLut: the row's table in both 128-bit lanes
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) rec[t] = a.act + (t0 + t) * a.act_stride + a.x_floats;
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    row[r] = a.codes + (r0 + r) * a.code_stride;
    sc[r] = half ? a.half_scales + 2 * (r0 + r) * a.scales_stride
                 : reinterpret_cast<const uint8_t*>(a.scales + (r0 + r) * a.scales_stride);
    if constexpr (kLut)
      lut[r] = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.lut + (r0 + r) * 16)));
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = acc_zero();
  }
  constexpr int64_t kPairFloats = kSplit ? 48 : 32;
  const auto entry = [&](int t, int64_t pair) { return rec[t] + pair_field(pair, kPairFloats, kFieldXA); };
  const HalfScales hs(a.block_shift);
  // Rows ahead that the codes and scales are prefetched: the next-but-one decode block (8 rows), or
  // on VNNI 10 rows with one activation part, whose shorter step reaches the rows sooner (q4 decode
  // +2 % in the fast minutes on Zen 4, q8 unchanged; docs/runtime.md; other targets not measured).
  constexpr int64_t kAhead = R > 1 && !kSplit && HWY_TARGET == HWY_AVX3_DL ? 10 : 2 * R;
  if constexpr (R > 1) {
    // The scales of the rows the codes' prefetch reaches (kAhead rows on): a stream of
    // their own, which the hardware prefetcher follows poorly next to the code rows (q4 decode on
    // tinyllama +21 % at 2 threads on Zen 4, docs/runtime.md; the mins, read once per row, gained nothing).
    const int64_t sc_row = half ? 2 * a.scales_stride : 4 * a.scales_stride;
    for (int r = 0; r < R; ++r)
      for (int64_t b = 0; b < sc_row; b += 64) prefetch_l2(sc[r] + kAhead * sc_row + b);
  }
  int64_t p = 0;
#if HWY_TARGET != HWY_AVX2
  for (; p + 2 <= a.pairs; p += 2) {
    // Decode blocks (R > 1, T == 1) build the token's vectors once for all rows.
    static_assert(R == 1 || T == 1);
    QuadAct shared{};
    if constexpr (R > 1) shared = quad_act<kKind, kLut, kSplit>(entry(0, p));
    const auto act_of = [&](int t) {
      if constexpr (R > 1) {
        (void)t;
        return shared;
      } else {
        return quad_act<kKind, kLut, kSplit>(entry(t, p));
      }
    };
    __m512 s[R];
    quad_scales<R>(half, sc, p, hs, s);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      W ca, cb, sa, sb;
      extract_quad<kKind, kUniform>(a, row[r], p, kAhead, ca, cb);
      if constexpr (kLut) {
        const W lut4 = _mm512_broadcast_i64x4(lut[r]);
        sa = _mm512_shuffle_epi8(lut4, ca);
        sb = _mm512_shuffle_epi8(lut4, cb);
        ca = _mm512_abs_epi8(sa);
        cb = _mm512_abs_epi8(sb);
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const QuadAct x = act_of(t);
        const W d = quad_sums<kKind, kLut, kSplit>(ca, cb, sa, sb, x);
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(s[r], x.dx), acc[r][t]);
      }
    }
  }
#endif
  for (; p < a.pairs; ++p) {
    const int32_t b0 = a.block_byte[2 * p], b1 = a.block_byte[2 * p + 1];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      // The same bytes kAhead rows on (a later call's rows): decode streams several short rows
      // at once, which the hardware prefetcher alone follows poorly (+60 % q4 decode on tinyllama
      // at 2 threads). A prefetch never faults.
      prefetch_l2(row[r] + kAhead * a.code_stride + b0);
      V ca, cb;
      extract_pair<kKind>(row[r] + b0, row[r] + b1, ca, cb);
      V sa = ca, sb = cb;  // kLut: the signed values v; ca, cb then hold |v|
      if constexpr (kLut) {
        sa = _mm256_shuffle_epi8(lut[r], ca);
        sb = _mm256_shuffle_epi8(lut[r], cb);
        ca = _mm256_abs_epi8(sa);
        cb = _mm256_abs_epi8(sb);
      }
      const __m256 s = pair_scales(half, sc[r], p, hs);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const float* e = entry(t, p);
        const V d = pair_sums<kKind, kLut, kSplit>(ca, cb, sa, sb, e);
        acc[r][t] = acc_pair(acc[r][t], _mm256_cvtepi32_ps(d), _mm256_mul_ps(s, _mm256_loadu_ps(e + 16 * kFieldDx)));
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      float v = acc_sum(acc[r][t]);
      const float* xsum = a.act + (t0 + t) * a.act_stride;
      if (half && a.half_mins != nullptr)
        v += half_min_terms(a.half_mins + 2 * (r0 + r) * a.groups, sc[r], a.centre, xsum, a.groups);
      else if (a.mins != nullptr)
        v += min_terms(a.mins + (r0 + r) * a.mins_stride, xsum, a.groups);
      a.y[(t0 + t) * a.y_stride + r0 + r] = v;
    }
}

// Decode: 4 rows share each activation record; prefill: 4 tokens share each extracted pair.
// Scales: f32 (palette weights always), or f16 per group, compiled apart (a branch per scale load
// cost ~10 % of AVX2's q4 decode; on AVX-512 the branch per row kept an accumulator on the stack).
template <K kKind, bool kLut, bool kSplit, bool kUniform, bool kHalf>
void i8_rows_tokens(const QuantI8DotArgs& a) {
  if (a.n == 1) {
    int64_t r = 0;
    for (; r + 4 <= a.rows; r += 4) i8_block<kKind, kLut, kSplit, kUniform, kHalf, 4, 1>(a, r, 0);
    for (; r < a.rows; ++r) i8_block<kKind, kLut, kSplit, kUniform, kHalf, 1, 1>(a, r, 0);
    return;
  }
  int64_t r0 = 0;
#if HWY_TARGET != HWY_AVX2
  // AVX-512, 4- and 2-bit codes: the decode block token by token. Its 4 rows' codes stay in L1
  // across the tokens, and each token's activation vectors (256-bit halves joined per two pairs)
  // are built once for 4 rows instead of once per row: q4 prefill 1.3-1.6x faster, q2 1.1-1.2x.
  // Codes whose extraction costs more (3/5/6/7-bit, 8-bit, 1-bit, palette tables) gained nothing
  // or lost (q3 -10 %), and AVX2, whose pair step loads a pair's activations whole, lost at 16
  // tokens: they keep 4 tokens per extracted row. Same bits either way (accumulation per element
  // does not depend on the blocking).
  if constexpr ((kKind == K::kNibbles || kKind == K::kCrumbs) && !kLut)
    for (; r0 + 4 <= a.rows; r0 += 4)
      for (int64_t t = 0; t < a.n; ++t) i8_block<kKind, kLut, kSplit, kUniform, kHalf, 4, 1>(a, r0, t);
#endif
  for (int64_t r = r0; r < a.rows; ++r) {
    int64_t t = 0;
    for (; t + 4 <= a.n; t += 4) i8_block<kKind, kLut, kSplit, kUniform, kHalf, 1, 4>(a, r, t);
    for (; t < a.n; ++t) i8_block<kKind, kLut, kSplit, kUniform, kHalf, 1, 1>(a, r, t);
  }
}
template <K kKind, bool kLut, bool kSplit, bool kUniform>
void i8_shapes(const QuantI8DotArgs& a) {
  if constexpr (!kLut) {  // palette weights have f32 scales
    if (a.half_scales != nullptr) return i8_rows_tokens<kKind, kLut, kSplit, kUniform, true>(a);
  }
  i8_rows_tokens<kKind, kLut, kSplit, kUniform, false>(a);
}
// Codes in the common layout (QuantI8DotArgs::uniform) take the 512-bit extractors where there are.
template <K kKind, bool kLut, bool kSplit>
void i8_layout(const QuantI8DotArgs& a) {
  constexpr bool kOdd = kKind == K::kBits3 || kKind == K::kBits5 || kKind == K::kBits6 || kKind == K::kBits7;
  constexpr bool kWide =
      kKind == K::kNibbles || kKind == K::kCrumbs || kKind == K::kBits1 || (kOdd && HWY_TARGET == HWY_AVX3_DL);
  if constexpr (kWide && HWY_TARGET != HWY_AVX2) {
    if (a.uniform) return i8_shapes<kKind, kLut, kSplit, true>(a);
  }
  i8_shapes<kKind, kLut, kSplit, false>(a);
}
template <K kKind, bool kLut = false>
void i8_all(const QuantI8DotArgs& a) {
  if (a.split)
    i8_layout<kKind, kLut, true>(a);
  else
    i8_layout<kKind, kLut, false>(a);
}
// Palette weights: the extractors of 4-, 3-, 2- and 1-bit codes read the indices in place.
void i8_palette(const QuantI8DotArgs& a) {
  switch (a.kind) {
    case K::kNibbles: return i8_all<K::kNibbles, true>(a);
    case K::kBits3: return i8_all<K::kBits3, true>(a);
    case K::kCrumbs: return i8_all<K::kCrumbs, true>(a);
    case K::kBits1: return i8_all<K::kBits1, true>(a);
    default: HWY_ASSERT(false);
  }
}

// 32 int8 values in column order -> the slot order of kKind (QuantI8Plan::slot_col).
template <K kKind>
HWY_INLINE V to_slots(V n) {
  if constexpr (kKind == K::kNibbles) {  // evens of both lanes, then odds
    const V sh = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3,
                                  5, 7, 9, 11, 13, 15);
    return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(n, sh), 0xD8);
  } else if constexpr (kKind == K::kCrumbs) {  // columns 4j, then 4j+1, 4j+2, 4j+3
    const V sh = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6,
                                  10, 14, 3, 7, 11, 15);
    return _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(n, sh), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  } else {
    return n;
  }
}

// max over each 128-bit vector: {max x0, max x1, max x2, max x3} (inputs without NaN).
HWY_INLINE __m128 max4(__m128 x0, __m128 x1, __m128 x2, __m128 x3) {
  const __m128 t0 = _mm_max_ps(_mm_unpacklo_ps(x0, x1), _mm_unpackhi_ps(x0, x1));  // x0 02, x1 02, x0 13, x1 13
  const __m128 t1 = _mm_max_ps(_mm_unpacklo_ps(x2, x3), _mm_unpackhi_ps(x2, x3));
  return _mm_max_ps(_mm_movelh_ps(t0, t1), _mm_movehl_ps(t1, t0));
}
HWY_INLINE __m128 lo128(__m256 v) { return _mm256_castps256_ps128(v); }
HWY_INLINE __m128 hi128(__m256 v) { return _mm256_extractf128_ps(v, 1); }

// Per lane of a block (quant_i8.h: slots 4l..4l+3 and 16+4l..16+4l+3), from |x| of its 32 columns
// in column order (a[i]: columns 8i..8i+7): the max over the lane's columns, which depend on kKind's
// slot order — 4-bit: columns 8l..8l+7; 2-bit: lane 2 · (c % 2) + c / 16; natural order: lane
// (c % 16) / 4.
template <K kKind>
HWY_INLINE __m128 lane_max(const __m256* a) {
  if constexpr (kKind == K::kNibbles) {
    return max4(_mm_max_ps(lo128(a[0]), hi128(a[0])), _mm_max_ps(lo128(a[1]), hi128(a[1])),
                _mm_max_ps(lo128(a[2]), hi128(a[2])), _mm_max_ps(lo128(a[3]), hi128(a[3])));
  } else if constexpr (kKind == K::kCrumbs) {  // columns c and c + 8 share a lane below 16, as above
    const __m256 b0 = _mm256_max_ps(a[0], a[1]), b1 = _mm256_max_ps(a[2], a[3]);
    __m128 x = _mm_max_ps(lo128(b0), hi128(b0)), y = _mm_max_ps(lo128(b1), hi128(b1));  // even, odd, even, odd
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));                                             // lanes 0, 2
    y = _mm_max_ps(y, _mm_movehl_ps(y, y));                                             // lanes 1, 3
    return _mm_unpacklo_ps(x, y);
  } else {  // columns c and c + 16 share a lane
    const __m256 b0 = _mm256_max_ps(a[0], a[2]), b1 = _mm256_max_ps(a[1], a[3]);
    return max4(lo128(b0), hi128(b0), lo128(b1), hi128(b1));
  }
}
// The inverse of each column's lane, in column order (as a[] above).
template <K kKind>
HWY_INLINE void lane_inverses(const float* inv, __m256* out) {
  const auto two = [](float lo, float hi) { return _mm256_setr_m128(_mm_set1_ps(lo), _mm_set1_ps(hi)); };
  if constexpr (kKind == K::kNibbles) {
    for (int i = 0; i < 4; ++i) out[i] = _mm256_set1_ps(inv[i]);
  } else if constexpr (kKind == K::kCrumbs) {
    out[0] = out[1] = _mm256_setr_ps(inv[0], inv[2], inv[0], inv[2], inv[0], inv[2], inv[0], inv[2]);
    out[2] = out[3] = _mm256_setr_ps(inv[1], inv[3], inv[1], inv[3], inv[1], inv[3], inv[1], inv[3]);
  } else {
    out[0] = out[2] = two(inv[0], inv[1]);
    out[1] = out[3] = two(inv[2], inv[3]);
  }
}

template <K kKind>
void quantize_blocks(int32_t offset, bool split, const float* x, const int32_t* start, const int32_t* len,
                     int64_t blocks, float* pairs) {
  const int64_t pair_floats = split ? 48 : 32;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const V hi = _mm256_set1_epi32(127), lo = _mm256_set1_epi32(-127);
  const __m256 k256 = _mm256_set1_ps(256.0f);
  const __m128 k127 = _mm_set1_ps(127.0f), max_inverse = _mm_set1_ps(kI8MaxInverse);
  alignas(32) float tmp[32];
  // 32 int32 in column order -> 32 int8 in slot order.
  auto pack = [](const V* q) {
    const V bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    return to_slots<kKind>(_mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  };
  // Σ xq of each lane from the slot-order bytes (A in the low 128 bits, B in the high).
  auto lane_sums = [](V slots) {
    const V s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), slots), _mm256_set1_epi16(1));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  };
  // Slots 0..15 to field xa, 16..31 to xb (XA, XB or their low parts) of entry e.
  auto store = [](float* e, int xa, int h, V slots) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(e + 16 * xa + 4 * h), _mm256_castsi256_si128(slots));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(e + 16 * (xa + 1) + 4 * h), _mm256_extracti128_si256(slots, 1));
  };
  for (int64_t k = 0; k < blocks; ++k) {
    float* e = pairs + pair_field(k / 2, pair_floats, kFieldXA);
    const int h = static_cast<int>(k % 2);
    const float* src = x + start[k];
    if (len[k] < 32) {  // short and phantom blocks: zero padded
      std::memset(tmp, 0, sizeof(tmp));
      std::memcpy(tmp, src, static_cast<size_t>(len[k]) * sizeof(float));
      src = tmp;
    }
    __m256 v[4], a[4];
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(src + 8 * i);
      // |x|, a NaN as 0: the max ignores it, as std::max(max, NaN) keeps max
      a[i] = _mm256_and_ps(_mm256_and_ps(v[i], abs_mask), _mm256_cmp_ps(v[i], v[i], _CMP_ORD_Q));
    }
    // i8_block_scale per lane: 0 where max is 0 or 127 / max overflows
    const __m128 m = lane_max<kKind>(a);
    const __m128 inv4 = _mm_div_ps(k127, m);
    const __m128 ok = _mm_and_ps(_mm_cmpgt_ps(m, _mm_setzero_ps()), _mm_cmple_ps(inv4, max_inverse));
    const __m128 dx4 = _mm_and_ps(_mm_div_ps(m, k127), ok);
    alignas(16) float inv[4];
    _mm_store_ps(inv, _mm_and_ps(inv4, ok));
    __m256 vinv[4];
    lane_inverses<kKind>(inv, vinv);
    V qh[4], ql[4];
    for (int i = 0; i < 4; ++i) {  // round half even (MXCSR default); NaN -> INT_MIN -> -127
      const __m256 p = _mm256_mul_ps(v[i], vinv[i]);
      qh[i] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(p), hi), lo);
      if (split)  // p - hi is exact; the low part in units of 1/256
        ql[i] = _mm256_max_epi32(
            _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(p, _mm256_cvtepi32_ps(qh[i])), k256)), hi),
            lo);
    }
    const V slots_hi = pack(qh);
    store(e, kFieldXA, h, slots_hi);
    __m128i sum = lane_sums(slots_hi);
    if (split) {
      const V slots_lo = pack(ql);
      store(e, kFieldXALo, h, slots_lo);
      sum = _mm_add_epi32(_mm_slli_epi32(sum, 8), lane_sums(slots_lo));
    }
    _mm_storeu_ps(e + 16 * kFieldDx + 4 * h, split ? _mm_mul_ps(dx4, _mm_set1_ps(1.0f / 256.0f)) : dx4);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(e + 16 * kFieldC + 4 * h),
                     _mm_mullo_epi32(sum, _mm_set1_epi32(-offset)));
  }
}

void QuantizeI8Blocks(QuantI8Kind kind, int32_t offset, bool split, const float* x, const int32_t* start,
                      const int32_t* len, const uint8_t*, int64_t blocks, float* pairs) {
  switch (kind) {
    case K::kNibbles: return quantize_blocks<K::kNibbles>(offset, split, x, start, len, blocks, pairs);
    case K::kCrumbs: return quantize_blocks<K::kCrumbs>(offset, split, x, start, len, blocks, pairs);
    default: return quantize_blocks<K::kBytes>(offset, split, x, start, len, blocks, pairs);  // natural order
  }
}

void QuantI8Dot(const QuantI8DotArgs& a) {
  if (a.lut != nullptr) return i8_palette(a);
  switch (a.kind) {
    case K::kSigned8: return i8_all<K::kSigned8>(a);
    case K::kBytes: return i8_all<K::kBytes>(a);
    case K::kNibbles: return i8_all<K::kNibbles>(a);
    case K::kCrumbs: return i8_all<K::kCrumbs>(a);
    case K::kBits1: return i8_all<K::kBits1>(a);
    case K::kBits3: return i8_all<K::kBits3>(a);
    case K::kBits5: return i8_all<K::kBits5>(a);
    case K::kBits6: return i8_all<K::kBits6>(a);
    case K::kBits7: return i8_all<K::kBits7>(a);
  }
}

#else  // portable targets: one block at a time, codes read by column through the slot order

namespace hn = hwy::HWY_NAMESPACE;

HWY_INLINE float fmadd(float a, float b, float c) {
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(hn::MulAdd(hn::Set(d1, a), hn::Set(d1, b), hn::Set(d1, c)));
}

void QuantI8Dot(const QuantI8DotArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    const uint8_t* row = a.codes + r * a.code_stride;
    const uint8_t* lut = a.lut != nullptr ? a.lut + 16 * r : nullptr;
    const auto half = [&](const uint8_t* base, int64_t g) {
      uint16_t h;
      std::memcpy(&h, base + 2 * (r * a.groups + g), 2);
      return f16_to_f32(h);
    };
    const auto scale = [&](int64_t k) {
      return a.half_scales != nullptr ? half(a.half_scales, k >> a.block_shift) : a.scales[r * a.scales_stride + k];
    };
    const bool mins = a.mins != nullptr || a.half_mins != nullptr;
    const auto min_value = [&](int64_t g) {
      return a.half_mins != nullptr ? fmadd(a.centre, half(a.half_scales, g), half(a.half_mins, g))
                                    : a.mins[r * a.mins_stride + g];
    };
    for (int64_t t = 0; t < a.n; ++t) {
      const float* rec = a.act + t * a.act_stride;
      float acc = 0.0f;
      for (int64_t k = 0; k < 2 * a.pairs; ++k) {
        const float* pairs = rec + a.x_floats;
        const float* e = pairs + pair_field(k / 2, a.pair_floats, kFieldXA);
        const int h = static_cast<int>(k % 2);
        const auto* bytes = reinterpret_cast<const int8_t*>(pairs);
        int32_t u[4] = {0, 0, 0, 0};  // per lane (quant_i8.h)
        for (int i = 0; i < 32; ++i) {
          if (a.slot_col[i] >= a.block_len[k]) continue;
          const int32_t hi = bytes[slot_byte(k, a.pair_floats, i, false)];
          const int32_t xq = a.split ? 256 * hi + bytes[slot_byte(k, a.pair_floats, i, true)] : hi;
          const int32_t u_c = slot_value(a.kind, row, a.block_start[k] + a.slot_col[i]);
          u[i8_slot_lane(i)] += (lut != nullptr ? static_cast<int8_t>(lut[u_c]) : u_c) * xq;
        }
        int32_t c[4];
        std::memcpy(c, e + 16 * kFieldC + 4 * h, sizeof(c));
        for (int l = 0; l < 4; ++l)
          acc = fmadd(static_cast<float>(a.kind != K::kSigned8 ? u[l] + c[l] : u[l]),
                      scale(k) * e[16 * kFieldDx + 4 * h + l], acc);
      }
      if (mins) {
        float m = 0.0f;
        for (int64_t g = 0; g < a.groups; ++g) m = fmadd(min_value(g), rec[g], m);
        acc += m;
      }
      a.y[t * a.y_stride + r] = acc;
    }
  }
}

void QuantizeI8Blocks(QuantI8Kind, int32_t offset, bool split, const float* x, const int32_t* start, const int32_t* len,
                      const uint8_t* slot_col, int64_t blocks, float* pairs) {
  i8_quantize_blocks_ref(slot_col, offset, split, x, start, len, blocks, pairs);
}

#endif

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
#if HWY_TARGET == HWY_AVX3_DL && defined(__clang__)
#pragma clang attribute pop
#endif
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(QuantI8Dot);
HWY_EXPORT(QuantizeI8Blocks);

void quant_i8_dot(const QuantI8DotArgs& a) { HWY_DYNAMIC_DISPATCH(QuantI8Dot)(a); }
void quantize_i8_blocks(QuantI8Kind kind, int32_t offset, bool split, const float* x, const int32_t* start,
                        const int32_t* len, const uint8_t* slot_col, int64_t blocks, float* pairs) {
  HWY_DYNAMIC_DISPATCH(QuantizeI8Blocks)(kind, offset, split, x, start, len, slot_col, blocks, pairs);
}

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
