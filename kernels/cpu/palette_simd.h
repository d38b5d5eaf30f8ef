// Internal: the Highway-dispatched codebook-lookup dot product of Palette linear kernels (palette_linear.cpp).
#pragma once

#include <cstdint>

namespace llmc::kernels::simd {

// How the index rows handed to palette_dot are stored.
enum class PaletteIndexForm : uint8_t {
  kU8 = 0,       // one index per byte (8-bit indices read in place, other widths unpacked)
  kNibbles = 1,  // 4-bit indices read in place: column 2i in the low nibble of byte i, 2i + 1 in the high
};

// The codebook of one row: f32 entries [2^bits] and, for bits <= 4, the f16 bit patterns of the
// entries split into byte planes: planes[0..15] low bytes, planes[16..31] high bytes (entries past
// 2^bits are 0).
struct PaletteRowTable {
  const float* f32;
  const uint8_t* planes;
};

// `rows` consecutive rows of a Palette weight against `n` tokens; for row r and token t:
//   y[t * y_stride + r] = Σ_c tables[r].f32[index(r, c)] · x[t * x_stride + c]
// idx: rows of indices `idx_stride` bytes apart in `form`. Per (row, token) one vector accumulator
// takes the full 16-column chunks (bits <= 4: in-register lookup of the f16 entries in their byte
// planes) or full vectors of columns (bits > 4: gather from the f32 entries) in column order; then a
// fixed lane reduction and the scalar column tail. The lookups are exact (f16 widens exactly to
// f32), so the result does not depend on `rows`, `n` or the other rows/tokens of the call.
struct PaletteDotArgs {
  const uint8_t* idx;
  int64_t idx_stride;
  PaletteIndexForm form;
  int bits;
  int64_t rows;
  const PaletteRowTable* tables;  // [rows]
  int64_t cols;
  const float* x;
  int64_t x_stride;
  int64_t n;
  float* y;
  int64_t y_stride;
};
void palette_dot(const PaletteDotArgs& a);

}  // namespace llmc::kernels::simd
