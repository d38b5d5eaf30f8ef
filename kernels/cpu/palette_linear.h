// Internal: the Palette linear kernel behind kLinearKernels (linear.cpp) — per row a codebook lookup
// on the stored indices fused with the dot product, never a full-tensor decode.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Per-call preparation (linear.cpp's aux): the int8 activation records of weights on the integer
// grid (palette_i8.h); nothing otherwise.
int64_t palette_aux_floats(const Tensor& w, int64_t n);
void palette_prepare(const Tensor& w, const float* x, int64_t n, float* aux);
// Y[t, r] for t in [t_begin, t_end), r in [r_begin, r_end) of Y[n, rows] = X[n, cols] · Wᵀ for a
// Palette weight W (x: [*, cols], y: [*, rows]; aux: palette_prepare's records). Rows whose codebook
// is on the integer grid run on int8 activations when palette_int8_activations(w). 4- and 8-bit indices are read in
// place, other widths unpacked one row at a time into L1; outliers are added after the lookup dot, in column order.
// Each element is computed the same way whatever the blocking: matmul rows equal matvec bit for bit and results do not
// depend on the thread count.
void palette_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                  int64_t r_end, float* y);
// Name of the row format palette_rows uses for this weight (e.g. "p4 nibbles, byte-plane lookup").
const char* palette_format_name(const Tensor& w);

}  // namespace llmc::kernels
