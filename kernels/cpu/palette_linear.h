// Internal: the Palette linear kernel behind kLinearKernels (linear.cpp) — per row a codebook lookup
// on the stored indices fused with the dot product, never a full-tensor decode.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Y[t, r] for t in [t_begin, t_end), r in [r_begin, r_end) of Y[n, rows] = X[n, cols] · Wᵀ for a
// Palette weight W (x: [*, cols], y: [*, rows]; aux unused). 4- and 8-bit indices are read in place,
// other widths unpacked one row at a time into L1; outliers are added after the lookup dot, in
// column order. Each element is computed the same way whatever the blocking: matmul rows equal
// matvec bit for bit and results do not depend on the thread count.
void palette_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                  int64_t r_end, float* y);
// Name of the row format palette_rows uses for this weight (e.g. "p4 nibbles, byte-plane lookup").
const char* palette_format_name(const Tensor& w);

}  // namespace llmc::kernels
