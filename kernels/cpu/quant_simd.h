// Internal: Highway-dispatched SIMD building blocks of the Quant linear kernels (quant_linear.cpp).
#pragma once

#include <cstdint>

namespace llmc::kernels::simd {

// How the per-column values v of one row are stored for quant_dot (weight = v · scale [+ min]).
enum class QuantValues : uint8_t {
  kI8 = 0,          // int8 v (unpacked codes with the scheme's offset already applied)
  kU8 = 1,          // uint8 v = code (8-bit asymmetric codes read in place)
  kU8Minus128 = 2,  // uint8 code, v = code - 128 (8-bit symmetric codes read in place)
};

// `rows` consecutive rows of a Quant weight against `n` tokens; for row r and token t:
//   y[t * y_stride + r] = Σ_g scales[r, g] · Σ_{c in g} v[r, c] · x[t * x_stride + c]
//                         (+ mins[r, g] · xsum[t * xsum_stride + g])
// v: rows of `cols` values `v_stride` bytes apart (see QuantValues); groups are
// [g * group, min(cols, (g + 1) * group)); scales/mins: [rows, groups] f32 (mins may be null: no
// min term); xsum: per-token group sums of x (only read with mins).
// Per (row, token), each group accumulates full vectors of columns in one vector accumulator, the
// group's scale is applied with one vector FMA into a row accumulator, column tails and mins are
// summed in scalar: the result does not depend on `rows`, `n` or the other rows/tokens of the call.
struct QuantDotArgs {
  const void* v;
  int64_t v_stride;
  int64_t rows;
  QuantValues kind;
  int64_t cols;
  int64_t group;
  int64_t groups;
  const float* scales;
  const float* mins;
  const float* xsum;
  int64_t xsum_stride;
  const float* x;
  int64_t x_stride;
  int64_t n;
  float* y;
  int64_t y_stride;
};
void quant_dot(const QuantDotArgs& a);

// 4-bit codes, LSB-first (code 2i in the low nibble of byte i): dst[c] = code[c] - offset (mod 256)
// for c in [0, 2 * nbytes).
void unpack_nibbles(const uint8_t* src, int64_t nbytes, uint8_t offset, uint8_t* dst);

// dst[i] = src[i] widened exactly to f32, for f16 (`bf16` false) or bf16 entries.
void widen_half(const uint16_t* src, int64_t n, bool bf16, float* dst);

}  // namespace llmc::kernels::simd
