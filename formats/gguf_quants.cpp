// Block decoders for ggml quantized types, their exact repacking into Quant encodings and back, and the
// Q8_0/Q4_0 reference quantizers, written from the ggml block layouts. Decoder arithmetic is f32 in the
// same order as ggml's reference dequantizers.
#include "formats/gguf_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace llmc {

namespace {

constexpr int64_t kQK = 32;    // elements per block of the legacy types
constexpr int64_t kQKK = 256;  // elements per super-block of the K types

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

void store_f16(uint8_t* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

// Integral float v clamped to [lo, hi] as int (NaN -> 0); the guard keeps the cast defined
// for non-finite input, in range it equals ggml's plain cast.
inline int saturate(float v, int lo, int hi) {
  if (!(v == v)) return 0;
  return v <= static_cast<float>(lo) ? lo : v >= static_cast<float>(hi) ? hi : static_cast<int>(v);
}

// Low nibble of byte j is element j, high nibble is element j + 16.
inline int nibble(const uint8_t* qs, int i) { return i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4); }

void dequant_f32(const uint8_t* src, int64_t n, float* dst) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }

void dequant_f16(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(src + 2 * i);
}

void dequant_bf16(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = bf16_to_f32(h);
  }
}

// Q4_0 (18 bytes): f16 d, u8 qs[16]; x = d * (q - 8).
void dequant_q4_0(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 18, dst += kQK) {
    const float d = load_f16(src);
    for (int i = 0; i < kQK; ++i) dst[i] = d * static_cast<float>(nibble(src + 2, i) - 8);
  }
}

// Q4_1 (20 bytes): f16 d, f16 m, u8 qs[16]; x = d * q + m.
void dequant_q4_1(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 20, dst += kQK) {
    const float d = load_f16(src), m = load_f16(src + 2);
    for (int i = 0; i < kQK; ++i) dst[i] = d * static_cast<float>(nibble(src + 4, i)) + m;
  }
}

// Q5_0 (22 bytes): f16 d, u32 qh (bit i = 5th bit of element i), u8 qs[16]; x = d * (q - 16).
void dequant_q5_0(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 22, dst += kQK) {
    const float d = load_f16(src);
    uint32_t qh;
    std::memcpy(&qh, src + 2, 4);
    for (int i = 0; i < kQK; ++i) {
      const int q = nibble(src + 6, i) | static_cast<int>(((qh >> i) & 1u) << 4);
      dst[i] = d * static_cast<float>(q - 16);
    }
  }
}

// Q5_1 (24 bytes): f16 d, f16 m, u32 qh, u8 qs[16]; x = d * q + m.
void dequant_q5_1(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 24, dst += kQK) {
    const float d = load_f16(src), m = load_f16(src + 2);
    uint32_t qh;
    std::memcpy(&qh, src + 4, 4);
    for (int i = 0; i < kQK; ++i) {
      const int q = nibble(src + 8, i) | static_cast<int>(((qh >> i) & 1u) << 4);
      dst[i] = d * static_cast<float>(q) + m;
    }
  }
}

// Q8_0 (34 bytes): f16 d, i8 qs[32]; x = q * d.
void dequant_q8_0(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 34, dst += kQK) {
    const float d = load_f16(src);
    for (int i = 0; i < kQK; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(src[2 + i])) * d;
  }
}

// Q2_K (84 bytes): u8 scales[16] (low nibble scale, high nibble min, one per 16 elements),
// u8 qs[64], f16 d, f16 dmin. Element 128*h + 32*s + l is bits 2s..2s+1 of qs[32*h + l].
void dequant_q2_k(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 84, dst += kQKK) {
    const uint8_t* scales = src;
    const uint8_t* qs = src + 16;
    const float d = load_f16(src + 80), dmin = load_f16(src + 82);
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, s = (e / 32) % 4, l = e % 32;
      const int q = (qs[32 * h + l] >> (2 * s)) & 3;
      const uint8_t sc = scales[e / 16];
      const float dl = d * static_cast<float>(sc & 0x0F);
      const float ml = dmin * static_cast<float>(sc >> 4);
      dst[e] = dl * static_cast<float>(q) - ml;
    }
  }
}

// Q3_K (110 bytes): u8 hmask[32], u8 qs[64], u8 scales[12] (16 x 6-bit, offset 32), f16 d.
// Low 2 bits as Q2_K; element 32*k + l takes its high bit from bit k of hmask[l]; a clear high
// bit subtracts 4. Scale i: low 4 bits from byte i%8 (nibble i/8), high 2 bits from byte
// 8 + i%4 (bits 2*(i/4)).
void dequant_q3_k(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 110, dst += kQKK) {
    const uint8_t* hmask = src;
    const uint8_t* qs = src + 32;
    const uint8_t* sc = src + 96;
    const float d = load_f16(src + 108);
    float dl[16];
    for (int i = 0; i < 16; ++i) {
      const int lo = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
      const int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
      dl[i] = d * static_cast<float>((lo | (hi << 4)) - 32);
    }
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, s = (e / 32) % 4, l = e % 32;
      const int low = (qs[32 * h + l] >> (2 * s)) & 3;
      const int high = (hmask[l] >> (e / 32)) & 1;
      dst[e] = dl[e / 16] * static_cast<float>(low - (high ? 0 : 4));
    }
  }
}

// The 12-byte 6-bit scale/min packing shared by Q4_K and Q5_K (8 sub-blocks of 32).
void k_scale_min(const uint8_t* q, int j, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K (144 bytes): f16 d, f16 dmin, u8 scales[12], u8 qs[128]. Element 64*h + 32*s + l is
// nibble s of qs[32*h + l]; sub-block e/32 gives x = d*sc * q - dmin*m.
void dequant_q4_k(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 144, dst += kQKK) {
    const float d = load_f16(src), dmin = load_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qs = src + 16;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k_scale_min(scales, j, sc, m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
        dst[32 * j + l] = d1 * static_cast<float>(q) - m1;
      }
    }
  }
}

// Q5_K (176 bytes): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]. As Q4_K plus a 5th
// bit: element 32*j + l takes bit j of qh[l].
void dequant_q5_k(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 176, dst += kQKK) {
    const float d = load_f16(src), dmin = load_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qh = src + 16;
    const uint8_t* qs = src + 48;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k_scale_min(scales, j, sc, m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const int q = ((qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F) | (((qh[l] >> j) & 1) << 4);
        dst[32 * j + l] = d1 * static_cast<float>(q) - m1;
      }
    }
  }
}

// Q6_K (210 bytes): u8 ql[128], u8 qh[64], i8 scales[16], f16 d. Element 128*h + 64*s + l
// (l < 64) takes nibble s of ql[64*h + l]; element 128*h + 32*t + l (l < 32) takes bits
// 2t..2t+1 of qh[32*h + l] as bits 4..5; x = d*scale[e/16] * (q - 32).
void dequant_q6_k(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 210, dst += kQKK) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const int8_t* scales = reinterpret_cast<const int8_t*>(src + 192);
    const float d = load_f16(src + 208);
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, r = e % 128;
      const int low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
      const int high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
      const float d1 = d * static_cast<float>(scales[e / 16]);
      dst[e] = d1 * static_cast<float>((low | (high << 4)) - 32);
    }
  }
}

// ---- Quant layouts: repacking blocks into a Quant encoding and back, never through f32.

// 8 codes of `bits` bits are exactly `bits` bytes LSB-first; n is a multiple of 8.
void pack_codes(const uint8_t* q, int64_t n, int bits, uint8_t* out) {
  for (int64_t i = 0; i < n; i += 8, out += bits) {
    uint64_t v = 0;
    for (int j = 0; j < 8; ++j) v |= static_cast<uint64_t>(q[i + j]) << (j * bits);
    for (int b = 0; b < bits; ++b) out[b] = static_cast<uint8_t>(v >> (8 * b));
  }
}

void unpack_codes(const uint8_t* in, int64_t n, int bits, uint8_t* q) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t i = 0; i < n; i += 8, in += bits) {
    uint64_t v = 0;
    for (int b = 0; b < bits; ++b) v |= static_cast<uint64_t>(in[b]) << (8 * b);
    for (int j = 0; j < 8; ++j) q[i + j] = static_cast<uint8_t>((v >> (j * bits)) & mask);
  }
}

bool f16_exact(float x) { return f32_to_bits(f16_to_f32(f32_to_f16(x))) == f32_to_bits(x); }

void store_meta(float* meta, float step, float base) {
  meta[0] = step;
  meta[1] = base;
}

// Legacy types (32 elements, f16 d at 0 and for asymmetric ones f16 m at 2, copied as raw bytes).
// Codes: element order, q in [0, 2^bits).
template <int64_t kSizeT, int64_t kHeadT>
struct Q4Layout {
  static constexpr int64_t kBlock = 32, kSize = kSizeT, kHead = kHeadT;
  static constexpr int kBits = 4;
  static void codes(const uint8_t* b, uint8_t* q) {
    for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(nibble(b + kHead, i));
  }
  static void put_codes(const uint8_t* q, uint8_t* b) {
    for (int j = 0; j < 16; ++j) b[kHead + j] = static_cast<uint8_t>(q[j] | q[j + 16] << 4);
  }
};
using Q4_0Layout = Q4Layout<18, 2>;
using Q4_1Layout = Q4Layout<20, 4>;
// Q5_0 / Q5_1: u32 qh (bit i = 5th bit of element i) at kHead, then nibbles as Q4_0.
template <int64_t kSizeT, int64_t kHeadT>
struct Q5Layout {
  static constexpr int64_t kBlock = 32, kSize = kSizeT, kHead = kHeadT;
  static constexpr int kBits = 5;
  static void codes(const uint8_t* b, uint8_t* q) {
    uint32_t qh;
    std::memcpy(&qh, b + kHead, 4);
    for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(nibble(b + kHead + 4, i) | ((qh >> i) & 1u) << 4);
  }
  static void put_codes(const uint8_t* q, uint8_t* b) {
    uint32_t qh = 0;
    for (int i = 0; i < 32; ++i) qh |= static_cast<uint32_t>(q[i] >> 4) << i;
    std::memcpy(b + kHead, &qh, 4);
    for (int j = 0; j < 16; ++j) b[kHead + 4 + j] = static_cast<uint8_t>((q[j] & 15) | (q[j + 16] & 15) << 4);
  }
};
using Q5_0Layout = Q5Layout<22, 2>;
using Q5_1Layout = Q5Layout<24, 4>;
// Q8_0: int8 x; the symmetric 8-bit code is x + 128.
struct Q8_0Layout {
  static constexpr int64_t kBlock = 32, kSize = 34, kHead = 2;
  static constexpr int kBits = 8;
  static void codes(const uint8_t* b, uint8_t* q) {
    for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(b[kHead + i] ^ 0x80);
  }
  static void put_codes(const uint8_t* q, uint8_t* b) {
    for (int i = 0; i < 32; ++i) b[kHead + i] = static_cast<uint8_t>(q[i] ^ 0x80);
  }
};

// f16 scale (and min) of a legacy block: raw copies, so decode is ggml's f16 -> f32 bit for bit.
template <bool kMins>
struct LegacyScales {
  static constexpr int64_t kGroups = 1;
  static bool scales(const uint8_t* b, uint8_t* sc, uint8_t* mn, float*, float*) {
    std::memcpy(sc, b, 2);
    if (kMins) std::memcpy(mn, b + 2, 2);
    return true;
  }
  static void put_scales(const uint8_t* sc, const uint8_t* mn, const float*, const float*, uint8_t* b) {
    std::memcpy(b, sc, 2);
    if (kMins) std::memcpy(b + 2, mn, 2);
  }
};

// Q2_K: 16 sub-blocks of 16; scale byte = sub-scale (low nibble) | sub-min << 4; x = d*sc*q - dmin*m.
// As Quant: asym 2-bit g16, u8 scale sc with (step d, base -0), u8 min m with (step -dmin, base -0).
struct Q2_KLayout {
  static constexpr int64_t kBlock = 256, kSize = 84, kGroups = 16;
  static constexpr int kBits = 2;
  static void codes(const uint8_t* b, uint8_t* q) {
    for (int e = 0; e < 256; ++e)
      q[e] = static_cast<uint8_t>((b[16 + 32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3);
  }
  static void put_codes(const uint8_t* q, uint8_t* b) {
    std::memset(b + 16, 0, 64);
    for (int e = 0; e < 256; ++e) b[16 + 32 * (e / 128) + e % 32] |= static_cast<uint8_t>(q[e] << (2 * ((e / 32) % 4)));
  }
  static bool scales(const uint8_t* b, uint8_t* sc, uint8_t* mn, float* sm, float* mm) {
    for (int i = 0; i < 16; ++i) {
      sc[i] = b[i] & 15;
      mn[i] = b[i] >> 4;
    }
    store_meta(sm, load_f16(b + 80), -0.0f);
    store_meta(mm, -load_f16(b + 82), -0.0f);
    return true;
  }
  static void put_scales(const uint8_t* sc, const uint8_t* mn, const float* sm, const float* mm, uint8_t* b) {
    for (int i = 0; i < 16; ++i) b[i] = static_cast<uint8_t>(sc[i] | mn[i] << 4);
    store_f16(b + 80, sm[0]);
    store_f16(b + 82, -mm[0]);
  }
  static bool fits(const QuantBlockIn& s, int64_t n_blocks);
};

// Q3_K: 16 sub-blocks of 16, 6-bit scales stored offset by 32, x = d*(sc - 32)*(q - 4) with the 3-bit
// code q = low 2 bits | hmask bit << 2. As Quant: sym 3-bit g16, u8 scale sc with (d, -32 d).
struct Q3_KLayout {
  static constexpr int64_t kBlock = 256, kSize = 110, kGroups = 16;
  static constexpr int kBits = 3;
  static void codes(const uint8_t* b, uint8_t* q) {
    for (int e = 0; e < 256; ++e) {
      const int low = (b[32 + 32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
      const int high = (b[e % 32] >> (e / 32)) & 1;
      q[e] = static_cast<uint8_t>(low | high << 2);
    }
  }
  static void put_codes(const uint8_t* q, uint8_t* b) {
    std::memset(b, 0, 96);
    for (int e = 0; e < 256; ++e) {
      b[32 + 32 * (e / 128) + e % 32] |= static_cast<uint8_t>((q[e] & 3) << (2 * ((e / 32) % 4)));
      b[e % 32] |= static_cast<uint8_t>((q[e] >> 2) << (e / 32));
    }
  }
  static bool scales(const uint8_t* b, uint8_t* sc, uint8_t*, float* sm, float*) {
    const uint8_t* p = b + 96;
    for (int i = 0; i < 16; ++i)
      sc[i] = static_cast<uint8_t>(((p[i % 8] >> (4 * (i / 8))) & 15) | ((p[8 + i % 4] >> (2 * (i / 4))) & 3) << 4);
    const float d = load_f16(b + 108);
    store_meta(sm, d, -32.0f * d);
    return std::isfinite(d);  // sc * d - 32 d is exactly d * (sc - 32) only for finite d
  }
  static void put_scales(const uint8_t* sc, const uint8_t*, const float* sm, const float*, uint8_t* b) {
    uint8_t* p = b + 96;
    std::memset(p, 0, 12);
    for (int i = 0; i < 16; ++i) {
      p[i % 8] |= static_cast<uint8_t>((sc[i] & 15) << (4 * (i / 8)));
      p[8 + i % 4] |= static_cast<uint8_t>((sc[i] >> 4) << (2 * (i / 4)));
    }
    store_f16(b + 108, sm[0]);
  }
  static bool fits(const QuantBlockIn& s, int64_t n_blocks);
};

// Q4_K / Q5_K: 8 sub-blocks of 32, 6-bit scale and min packed in 12 bytes (k_scale_min),
// x = d*sc*q - dmin*m. As Quant: asym g32, u8 scale sc with (d, -0), u8 min m with (-dmin, -0).
template <int kBitsT, int64_t kSizeT>
struct QK_KLayout {
  static constexpr int64_t kBlock = 256, kSize = kSizeT, kGroups = 8;
  static constexpr int kBits = kBitsT;
  static constexpr int kQs = kBits == 5 ? 48 : 16;  // Q5_K: qh[32] at 16, then qs
  static void codes(const uint8_t* b, uint8_t* q) {
    for (int e = 0; e < 256; ++e) {
      const int j = e / 32, l = e % 32;
      int v = (b[kQs + 32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
      if (kBits == 5) v |= ((b[16 + l] >> j) & 1) << 4;
      q[e] = static_cast<uint8_t>(v);
    }
  }
  static void put_codes(const uint8_t* q, uint8_t* b) {
    std::memset(b + 16, 0, static_cast<size_t>(kSize - 16));
    for (int e = 0; e < 256; ++e) {
      const int j = e / 32, l = e % 32;
      b[kQs + 32 * (j / 2) + l] |= static_cast<uint8_t>((q[e] & 15) << (4 * (j % 2)));
      if (kBits == 5) b[16 + l] |= static_cast<uint8_t>((q[e] >> 4) << j);
    }
  }
  static bool scales(const uint8_t* b, uint8_t* sc, uint8_t* mn, float* sm, float* mm) {
    for (int j = 0; j < 8; ++j) {
      int s, m;
      k_scale_min(b + 4, j, s, m);
      sc[j] = static_cast<uint8_t>(s);
      mn[j] = static_cast<uint8_t>(m);
    }
    store_meta(sm, load_f16(b), -0.0f);
    store_meta(mm, -load_f16(b + 2), -0.0f);
    return true;
  }
  static void put_scales(const uint8_t* sc, const uint8_t* mn, const float* sm, const float* mm, uint8_t* b) {
    store_f16(b, sm[0]);
    store_f16(b + 2, -mm[0]);
    uint8_t* p = b + 4;
    for (int k = 0; k < 4; ++k) {
      p[k] = static_cast<uint8_t>((sc[k] & 63) | (sc[k + 4] >> 4) << 6);
      p[k + 4] = static_cast<uint8_t>((mn[k] & 63) | (mn[k + 4] >> 4) << 6);
      p[k + 8] = static_cast<uint8_t>((sc[k + 4] & 15) | (mn[k + 4] & 15) << 4);
    }
  }
  static bool fits(const QuantBlockIn& s, int64_t n_blocks);
};
using Q4_KLayout = QK_KLayout<4, 144>;
using Q5_KLayout = QK_KLayout<5, 176>;

// Q6_K: 16 sub-blocks of 16, int8 scales, x = d*sc*(q - 32). As Quant: sym 6-bit g16, u8 scale
// sc + 128 with (d, -128 d).
struct Q6_KLayout {
  static constexpr int64_t kBlock = 256, kSize = 210, kGroups = 16;
  static constexpr int kBits = 6;
  static void codes(const uint8_t* b, uint8_t* q) {
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, r = e % 128;
      const int low = (b[64 * h + r % 64] >> (4 * (r / 64))) & 15;
      const int high = (b[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
      q[e] = static_cast<uint8_t>(low | high << 4);
    }
  }
  static void put_codes(const uint8_t* q, uint8_t* b) {
    std::memset(b, 0, 192);
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, r = e % 128;
      b[64 * h + r % 64] |= static_cast<uint8_t>((q[e] & 15) << (4 * (r / 64)));
      b[128 + 32 * h + r % 32] |= static_cast<uint8_t>((q[e] >> 4) << (2 * (r / 32)));
    }
  }
  static bool scales(const uint8_t* b, uint8_t* sc, uint8_t*, float* sm, float*) {
    for (int i = 0; i < 16; ++i) sc[i] = static_cast<uint8_t>(b[192 + i] ^ 0x80);
    const float d = load_f16(b + 208);
    store_meta(sm, d, -128.0f * d);
    return std::isfinite(d);  // (sc + 128) d - 128 d is exactly d * sc only for finite d
  }
  static void put_scales(const uint8_t* sc, const uint8_t*, const float* sm, const float*, uint8_t* b) {
    for (int i = 0; i < 16; ++i) b[192 + i] = static_cast<uint8_t>(sc[i] ^ 0x80);
    store_f16(b + 208, sm[0]);
  }
  static bool fits(const QuantBlockIn& s, int64_t n_blocks);
};

// Every u8 entry <= max_entry.
bool entries_within(const uint8_t* e, int64_t n, int max_entry) {
  uint8_t worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, e[i]);
  return worst <= max_entry;
}

// (step, base) pairs whose step is an f16 value and whose base is base_mul * step (0: ±0).
bool meta_of_form(const float* meta, int64_t n_blocks, float step_sign, float base_mul) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float step = meta[2 * b], base = meta[2 * b + 1];
    if (!std::isfinite(step) || !f16_exact(step_sign * step)) return false;
    if (base_mul == 0.0f ? base != 0.0f : f32_to_bits(base) != f32_to_bits(base_mul * step)) return false;
  }
  return true;
}

bool Q2_KLayout::fits(const QuantBlockIn& s, int64_t n) {
  return entries_within(s.scales, n * kGroups, 15) && entries_within(s.mins, n * kGroups, 15) &&
         meta_of_form(s.scale_meta, n, 1.0f, 0.0f) && meta_of_form(s.min_meta, n, -1.0f, 0.0f);
}
bool Q3_KLayout::fits(const QuantBlockIn& s, int64_t n) {
  return entries_within(s.scales, n * kGroups, 63) && meta_of_form(s.scale_meta, n, 1.0f, -32.0f);
}
template <int kBitsT, int64_t kSizeT>
bool QK_KLayout<kBitsT, kSizeT>::fits(const QuantBlockIn& s, int64_t n) {
  return entries_within(s.scales, n * kGroups, 63) && entries_within(s.mins, n * kGroups, 63) &&
         meta_of_form(s.scale_meta, n, 1.0f, 0.0f) && meta_of_form(s.min_meta, n, -1.0f, 0.0f);
}
bool Q6_KLayout::fits(const QuantBlockIn& s, int64_t n) { return meta_of_form(s.scale_meta, n, 1.0f, -128.0f); }

// Generic drivers over a code layout L and a scale layout S (S = L for the K types); kScaleBytes is
// the bytes of one scale entry (f16 2, u8 1).
template <class L, class S, int kScaleBytes>
bool to_quant(const uint8_t* src, int64_t n_blocks, const QuantBlockOut& dst) {
  constexpr int64_t kCodeBytes = L::kBlock * L::kBits / 8, kEntries = S::kGroups * kScaleBytes;
  uint8_t q[L::kBlock];
  bool exact = true;
  for (int64_t b = 0; b < n_blocks; ++b, src += L::kSize) {
    L::codes(src, q);
    pack_codes(q, L::kBlock, L::kBits, dst.codes + b * kCodeBytes);
    exact &=
        S::scales(src, dst.scales + b * kEntries, dst.mins ? dst.mins + b * kEntries : nullptr,
                  dst.scale_meta ? dst.scale_meta + 2 * b : nullptr, dst.min_meta ? dst.min_meta + 2 * b : nullptr);
  }
  return exact;
}

template <class L, class S, int kScaleBytes>
void from_quant(const QuantBlockIn& src, int64_t n_blocks, uint8_t* dst) {
  constexpr int64_t kCodeBytes = L::kBlock * L::kBits / 8, kEntries = S::kGroups * kScaleBytes;
  uint8_t q[L::kBlock];
  for (int64_t b = 0; b < n_blocks; ++b, dst += L::kSize) {
    unpack_codes(src.codes + b * kCodeBytes, L::kBlock, L::kBits, q);
    L::put_codes(q, dst);
    S::put_scales(src.scales + b * kEntries, src.mins ? src.mins + b * kEntries : nullptr,
                  src.scale_meta ? src.scale_meta + 2 * b : nullptr, src.min_meta ? src.min_meta + 2 * b : nullptr,
                  dst);
  }
}

template <class L, class S, int kScaleBytes>
constexpr GgmlQuantLayout make_layout(QuantScheme scheme, DType scale_dtype, bool mins,
                                      bool (*fits)(const QuantBlockIn&, int64_t)) {
  return {L::kBits,
          scheme,
          L::kBlock / S::kGroups,
          scale_dtype,
          mins,
          to_quant<L, S, kScaleBytes>,
          fits,
          from_quant<L, S, kScaleBytes>};
}

constexpr QuantScheme kSym = QuantScheme::kSymmetric, kAsym = QuantScheme::kAsymmetric;
const GgmlQuantLayout kQ4_0Quant = make_layout<Q4_0Layout, LegacyScales<false>, 2>(kSym, DType::kF16, false, nullptr);
const GgmlQuantLayout kQ4_1Quant = make_layout<Q4_1Layout, LegacyScales<true>, 2>(kAsym, DType::kF16, true, nullptr);
const GgmlQuantLayout kQ5_0Quant = make_layout<Q5_0Layout, LegacyScales<false>, 2>(kSym, DType::kF16, false, nullptr);
const GgmlQuantLayout kQ5_1Quant = make_layout<Q5_1Layout, LegacyScales<true>, 2>(kAsym, DType::kF16, true, nullptr);
const GgmlQuantLayout kQ8_0Quant = make_layout<Q8_0Layout, LegacyScales<false>, 2>(kSym, DType::kF16, false, nullptr);
const GgmlQuantLayout kQ2_KQuant = make_layout<Q2_KLayout, Q2_KLayout, 1>(kAsym, DType::kU8, true, Q2_KLayout::fits);
const GgmlQuantLayout kQ3_KQuant = make_layout<Q3_KLayout, Q3_KLayout, 1>(kSym, DType::kU8, false, Q3_KLayout::fits);
const GgmlQuantLayout kQ4_KQuant = make_layout<Q4_KLayout, Q4_KLayout, 1>(kAsym, DType::kU8, true, Q4_KLayout::fits);
const GgmlQuantLayout kQ5_KQuant = make_layout<Q5_KLayout, Q5_KLayout, 1>(kAsym, DType::kU8, true, Q5_KLayout::fits);
const GgmlQuantLayout kQ6_KQuant = make_layout<Q6_KLayout, Q6_KLayout, 1>(kSym, DType::kU8, false, Q6_KLayout::fits);

const GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::kF32, "F32", 1, 4, dequant_f32, nullptr},
    {GgmlType::kF16, "F16", 1, 2, dequant_f16, nullptr},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, dequant_q4_0, &kQ4_0Quant},
    {GgmlType::kQ4_1, "Q4_1", 32, 20, dequant_q4_1, &kQ4_1Quant},
    {GgmlType::kQ5_0, "Q5_0", 32, 22, dequant_q5_0, &kQ5_0Quant},
    {GgmlType::kQ5_1, "Q5_1", 32, 24, dequant_q5_1, &kQ5_1Quant},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, dequant_q8_0, &kQ8_0Quant},
    {GgmlType::kQ8_1, "Q8_1", 32, 40, nullptr, nullptr},
    {GgmlType::kQ2_K, "Q2_K", 256, 84, dequant_q2_k, &kQ2_KQuant},
    {GgmlType::kQ3_K, "Q3_K", 256, 110, dequant_q3_k, &kQ3_KQuant},
    {GgmlType::kQ4_K, "Q4_K", 256, 144, dequant_q4_k, &kQ4_KQuant},
    {GgmlType::kQ5_K, "Q5_K", 256, 176, dequant_q5_k, &kQ5_KQuant},
    {GgmlType::kQ6_K, "Q6_K", 256, 210, dequant_q6_k, &kQ6_KQuant},
    {GgmlType::kQ8_K, "Q8_K", 256, 292, nullptr, nullptr},
    {GgmlType::kBF16, "BF16", 1, 2, dequant_bf16, nullptr},
};

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const auto& row : kGgmlTypes)
    if (static_cast<uint32_t>(row.type) == type) return &row;
  return nullptr;
}

namespace {

// Buffer shares of one block in a Quant encoding of layout l (see GgmlQuantLayout).
struct BlockBytes {
  int64_t codes, entries;  // entries: bytes of the scale (or min) entries
};
BlockBytes block_bytes(const GgmlTypeInfo& info) {
  const GgmlQuantLayout& l = *info.quant;
  return {info.block_size * l.bits / 8, info.block_size / l.group_size * dtype_bytes(l.scale_dtype)};
}

QuantBlockIn block_in(const QuantEncoding& q, const GgmlTypeInfo& info, int64_t block) {
  const BlockBytes bb = block_bytes(info);
  const bool u8 = q.scale_dtype == DType::kU8;
  return {q.codes.data() + block * bb.codes, q.scales.data() + block * bb.entries,
          q.mins.empty() ? nullptr : q.mins.data() + block * bb.entries,
          u8 ? q.scale_meta.as<float>() + 2 * block : nullptr,
          u8 && !q.min_meta.empty() ? q.min_meta.as<float>() + 2 * block : nullptr};
}

constexpr int64_t kBlocksPerChunk = 1024;  // threads share a tensor in chunks of this many blocks

}  // namespace

std::optional<QuantEncoding> ggml_to_quant(const GgmlTypeInfo& info, const uint8_t* src, int64_t rows, int64_t cols) {
  if (!info.quant || cols % info.block_size != 0) return std::nullopt;
  const GgmlQuantLayout& l = *info.quant;
  const int64_t n_blocks = rows * (cols / info.block_size);
  const BlockBytes bb = block_bytes(info);
  const bool u8 = l.scale_dtype == DType::kU8;
  std::vector<uint8_t> codes(static_cast<size_t>(n_blocks * bb.codes)),
      scales(static_cast<size_t>(n_blocks * bb.entries));
  std::vector<uint8_t> mins(l.mins ? scales.size() : 0);
  std::vector<float> scale_meta(u8 ? static_cast<size_t>(2 * n_blocks) : 0);
  std::vector<float> min_meta(u8 && l.mins ? scale_meta.size() : 0);
  const int64_t n_chunks = (n_blocks + kBlocksPerChunk - 1) / kBlocksPerChunk;
  int exact = 1;
#pragma omp parallel for schedule(static) reduction(& : exact) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b0 = c * kBlocksPerChunk, nb = std::min(kBlocksPerChunk, n_blocks - b0);
    const QuantBlockOut out{codes.data() + b0 * bb.codes, scales.data() + b0 * bb.entries,
                            l.mins ? mins.data() + b0 * bb.entries : nullptr, u8 ? scale_meta.data() + 2 * b0 : nullptr,
                            u8 && l.mins ? min_meta.data() + 2 * b0 : nullptr};
    exact &= l.to_quant(src + b0 * info.type_size, nb, out) ? 1 : 0;
  }
  if (!exact) return std::nullopt;
  QuantEncoding q;
  q.bits = l.bits;
  q.scheme = l.scheme;
  q.group_size = l.group_size;
  q.scale_dtype = l.scale_dtype;
  q.codes = Bytes::owned(std::move(codes));
  q.scales = Bytes::owned(std::move(scales));
  if (l.mins) q.mins = Bytes::owned(std::move(mins));
  if (u8) {
    q.scale_block = info.block_size / l.group_size;
    q.scale_meta = Bytes::from_vector(scale_meta);
    if (l.mins) q.min_meta = Bytes::from_vector(min_meta);
  }
  return q;
}

std::optional<GgmlType> ggml_type_of_quant(const QuantEncoding& q, int64_t rows, int64_t cols) {
  if (q.packing != QuantPacking::kBits || cols <= 0) return std::nullopt;
  const int64_t gsize = quant_groups_per_row(q, cols) == 1 ? cols : q.group_size;
  for (const GgmlTypeInfo& info : kGgmlTypes) {
    const GgmlQuantLayout* l = info.quant;
    if (!l || l->bits != q.bits || l->scheme != q.scheme || l->scale_dtype != q.scale_dtype || l->group_size != gsize ||
        cols % info.block_size != 0 || l->mins != !q.mins.empty())
      continue;
    if (q.scale_dtype == DType::kU8 && q.scale_block != info.block_size / l->group_size) continue;
    if (l->fits) {
      const int64_t n_blocks = rows * (cols / info.block_size);
      const int64_t n_chunks = (n_blocks + kBlocksPerChunk - 1) / kBlocksPerChunk;
      int fits = 1;
#pragma omp parallel for schedule(static) reduction(& : fits) if (n_chunks > 1)
      for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t b0 = c * kBlocksPerChunk;
        fits &= l->fits(block_in(q, info, b0), std::min(kBlocksPerChunk, n_blocks - b0)) ? 1 : 0;
      }
      if (!fits) continue;
    }
    return info.type;
  }
  return std::nullopt;
}

void quant_to_ggml(const QuantEncoding& q, GgmlType type, int64_t block_begin, int64_t block_end, uint8_t* dst) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  LLMC_CHECK(info.quant != nullptr, "quant_to_ggml: type without a Quant layout");
  const int64_t n_chunks = (block_end - block_begin + kBlocksPerChunk - 1) / kBlocksPerChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b0 = block_begin + c * kBlocksPerChunk, nb = std::min(kBlocksPerChunk, block_end - b0);
    info.quant->from_quant(block_in(q, info, b0), nb, dst + (b0 - block_begin) * info.type_size);
  }
}

void quantize_q8_0(const float* src, int64_t n, uint8_t* dst) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQK, dst += 34) {
    float amax = 0.0f;
    for (int i = 0; i < kQK; ++i) amax = std::fmax(amax, std::fabs(src[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(dst, d);
    for (int i = 0; i < kQK; ++i)
      dst[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(saturate(std::round(src[i] * id), -127, 127)));
  }
}

void quantize_q4_0(const float* src, int64_t n, uint8_t* dst) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQK, dst += 18) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < kQK; ++i)
      if (amax < std::fabs(src[i])) {
        amax = std::fabs(src[i]);
        max = src[i];
      }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(dst, d);
    for (int j = 0; j < 16; ++j) {
      const int q0 = saturate(std::trunc(src[j] * id + 8.5f), 0, 15);
      const int q1 = saturate(std::trunc(src[16 + j] * id + 8.5f), 0, 15);
      dst[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

}  // namespace llmc
