// Internal: Palette weights on int8 activations — codebooks on the integer grid (core/palette.h) run
// through the Quant int8 kernel (quant_i8.h): the Quant extractor of the index width reads the
// indices in place, a 16-byte table per row turns each into the entry's grid integer v (int8,
// pshufb), the block dot products are exact int32, and the row's scale is 2^k. Rows whose codebook
// is off the grid take the f32 lookup kernel.
//
// Which weights: bits <= 4, mode kInt8x2, kInt8 or kAuto (i8_palette_format; kAuto takes one
// part), and codebook 0 on the grid (checked once per call: palette_int8_activations in kernels.h).
// Such a weight gets its activations quantized once per call (palette_i8_prepare); then every row
// whose codebook is on the grid takes this path. Per row the result does not depend on the
// row/token blocking or the thread count.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Per-call scratch: a header float (1 when the weight takes the path, else 0) and the int8 records of
// n tokens (none when it does not).
int64_t palette_i8_aux_floats(const Tensor& w, int64_t n);
// Writes the header and quantizes X[n, cols] into the records.
void palette_i8_prepare(const Tensor& w, const float* x, int64_t n, float* aux);
// True when palette_i8_prepare's scratch holds records.
inline bool palette_i8_records(const float* aux) { return aux != nullptr && aux[0] != 0.0f; }
// Exponent k of codebook g when it is on the grid, else kPaletteOffGrid.
int palette_codebook_grid_exponent(const PaletteEncoding& p, int64_t g);
// The f32 lookup kernel on rows [r0, r1) (palette_linear.cpp), for the rows off the grid.
using PaletteF32Rows = void (*)(const Tensor& w, const float* x, int64_t t_begin, int64_t t_end, int64_t r0, int64_t r1,
                                float* y);
// Y[t, r] for rows [r_begin, r_end) of a weight with records (aux): rows on the grid through the int8
// kernel in blocks of 4 (a block with a row off the grid row by row), rows off it through f32_rows.
// The lookup dot only: no outliers.
void palette_rows_grid(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end,
                       int64_t r_begin, int64_t r_end, float* y, PaletteF32Rows f32_rows);

}  // namespace llmc::kernels
