// Internal: the linear-layer kernel of Sparse weights, one row of kLinearKernels (linear.cpp).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Y[t_begin:t_end, r_begin:r_end] of Y[n, rows] = X[n, cols] · Wᵀ for a Sparse weight W.
// Per row and token: gather x at the row's kept columns, then a dense dot (the f32/f16/bf16 SIMD
// microkernel) with the row's values, so memory traffic is pattern + values only. Quant values are
// decoded one row at a time. Each token is computed alone: matmul rows equal matvec bit for bit.
void sparse_rows(const Tensor& w, const float* x, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                 float* y);

}  // namespace llmc::kernels
