// Block decoders for ggml quantized types and the Q8_0/Q4_0 reference quantizers, written from
// the ggml block layouts. Arithmetic is f32 in the same order as ggml's reference dequantizers.
#include "formats/gguf_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"

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

const GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::kF32, "F32", 1, 4, dequant_f32},        {GgmlType::kF16, "F16", 1, 2, dequant_f16},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, dequant_q4_0},   {GgmlType::kQ4_1, "Q4_1", 32, 20, dequant_q4_1},
    {GgmlType::kQ5_0, "Q5_0", 32, 22, dequant_q5_0},   {GgmlType::kQ5_1, "Q5_1", 32, 24, dequant_q5_1},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, dequant_q8_0},   {GgmlType::kQ8_1, "Q8_1", 32, 40, nullptr},
    {GgmlType::kQ2_K, "Q2_K", 256, 84, dequant_q2_k},  {GgmlType::kQ3_K, "Q3_K", 256, 110, dequant_q3_k},
    {GgmlType::kQ4_K, "Q4_K", 256, 144, dequant_q4_k}, {GgmlType::kQ5_K, "Q5_K", 256, 176, dequant_q5_k},
    {GgmlType::kQ6_K, "Q6_K", 256, 210, dequant_q6_k}, {GgmlType::kQ8_K, "Q8_K", 256, 292, nullptr},
    {GgmlType::kBF16, "BF16", 1, 2, dequant_bf16},
};

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const auto& row : kGgmlTypes)
    if (static_cast<uint32_t>(row.type) == type) return &row;
  return nullptr;
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
