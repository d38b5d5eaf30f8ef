// Internal: Palette weights on int8 activations — codebooks on the integer grid (core/palette.h) run
// through the Quant int8 kernel (quant_i8.h): a 16-byte table per row turns each index into
// u = v + 64 (v the grid integer of the entry), the block dot products are exact int32, and the
// row's scale is 2^k. Rows whose codebook is off the grid take the f32 lookup kernel.
//
// Which weights: bits <= 4, mode kInt8x2 or kInt8 (i8_palette_format), and codebook 0 on the grid
// (checked per call; a cheap, per-tensor property: palette_int8_activations in kernels.h). Such a weight gets its activations quantized
// once per call (palette_i8_prepare); then every row whose codebook is on the grid takes this
// path. Per row the result does not depend on the row/token blocking or the thread count.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Floats of the per-call activation records for n tokens (0 when the weight does not use the path).
int64_t palette_i8_aux_floats(const Tensor& w, int64_t n);
// Quantizes X[n, cols] into the records (nothing when the weight does not use the path).
void palette_i8_prepare(const Tensor& w, const float* x, int64_t n, float* aux);
// Exponent k of codebook g when it is on the grid, else kPaletteOffGrid.
int palette_codebook_grid_exponent(const PaletteEncoding& p, int64_t g);
// Y[t, r] for rows [r0, r1) (all on the grid; exps[i] the exponent of row r0 + i) from the records `act` (palette_i8_prepare's, token t
// at act + t · record_floats): the lookup dot only, no outliers.
void palette_rows_i8(const Tensor& w, const float* act, const int* exps, int64_t t_begin, int64_t t_end, int64_t r0,
                     int64_t r1, float* y);

}  // namespace llmc::kernels
