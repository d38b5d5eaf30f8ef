// The lane-wise loops of round-to-nearest quantization (the quantization passes' hot loops on a
// checkpoint: min/max per group, codes, squared error), dispatched to the best SIMD target. Each
// SIMD function equals its scalar reference bit for bit on every target (ties between ±0 and NaN
// lanes included), so a pass gives the same file whichever path or target ran.
#pragma once

#include <algorithm>
#include <cstdint>

namespace llmc::kernels {

// dst[i] = src[i] widened exactly to f32, for f16 (`bf16` false) or bf16 entries (NaN stays NaN).
void widen_half(const uint16_t* src, int64_t n, bool bf16, float* dst);

// How a group's values map to codes: x = (v - min) · mul + add is v in code units, the code is
// ceil(x - 0.5) (ties to the lower code) clamped to [0, max_code]; NaN maps like x = add.
struct RtnCodeMap {
  float min = 0, mul = 0, add = 0, max_code = 0;
};

// The one scalar formula (also the SIMD tail): y = x - 0.5 clamped to [-1, max_code], then
// ceil(y) = trunc(y) + (trunc(y) < y), and negative codes (y in [-1, 0)) clamp to 0. Equal to
// clamp(ceil(x - 0.5), 0, max_code) for every x, ±inf included. Separate multiply and add (the
// files that use it compile with -ffp-contract=off).
inline uint32_t rtn_code(const RtnCodeMap& m, float v) {
  float x = (v - m.min) * m.mul + m.add;
  x = x == x ? x : m.add;
  const float y = std::min(std::max(x - 0.5f, -1.0f), m.max_code);
  const int32_t t = static_cast<int32_t>(y);
  const int32_t c = t + (static_cast<float>(t) < y ? 1 : 0);
  return static_cast<uint32_t>(std::max(c, 0));
}

// Min and max of x[0, n) (n >= 1): for n >= 16 in 8 lanes started at x[0..8) (lane j takes x[i]
// with i % 8 == j up to the last full 8), combined in lane order, then the tail in order; shorter
// inputs in order. Every step keeps the value it has unless the new one is strictly smaller
// (larger), so the first of equal values wins and NaN is skipped unless it came first.
void min_max_ref(const float* x, int64_t n, float& lo, float& hi);
// Its last steps (shared by the SIMD form): the 8 lanes l/h (null: none) combined in order into
// x[0], then x[i, n) in order.
inline void min_max_finish(const float* l, const float* h, const float* x, int64_t i, int64_t n, float& lo, float& hi) {
  float a = x[0], b = x[0];
  for (int j = 0; l && j < 8; ++j) {
    a = std::min(a, l[j]);
    b = std::max(b, h[j]);
  }
  for (; i < n; ++i) {
    a = std::min(a, x[i]);
    b = std::max(b, x[i]);
  }
  lo = a;
  hi = b;
}
// The same per group: groups [g·group, min(n, (g+1)·group)), lo/hi[g] as min_max_ref of each.
void group_min_max(const float* x, int64_t n, int64_t group, float* lo, float* hi);
void group_min_max_ref(const float* x, int64_t n, int64_t group, float* lo, float* hi);

// Largest |x| per group, in order from 0 with strict comparisons (NaN skipped, 0 for a group of
// zeros).
void group_abs_max(const float* x, int64_t n, int64_t group, float* amax);
void group_abs_max_ref(const float* x, int64_t n, int64_t group, float* amax);

// q[i] = rtn_code(maps[g], x[i]) for column i of group g = i / group.
void rtn_codes(const float* x, int64_t n, int64_t group, const RtnCodeMap* maps, uint8_t* q);
void rtn_codes_ref(const float* x, int64_t n, int64_t group, const RtnCodeMap* maps, uint8_t* q);

// The squared error of codes q against x when code q decodes to (k · q - z) · scale + min (every
// scheme of quant_value), and Σ x²: each group is summed in 8 f32 lanes (lane j takes the columns
// c with c % 8 == j), its lanes added in order to the double sums. err and norm accumulate.
struct RtnDequantMap {
  float scale = 0, min = 0;
};
void rtn_error(const float* x, const uint8_t* q, int64_t n, int64_t group, const RtnDequantMap* maps, float k, float z,
               double& err, double& norm);
void rtn_error_ref(const float* x, const uint8_t* q, int64_t n, int64_t group, const RtnDequantMap* maps, float k,
                   float z, double& err, double& norm);

}  // namespace llmc::kernels
