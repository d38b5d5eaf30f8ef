// Internal: the linear-layer kernel of Sparse weights, one row of kLinearKernels (linear.cpp).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Y[t_begin:t_end, r_begin:r_end] of Y[n, rows] = X[n, cols] · Wᵀ for a Sparse weight W, read
// straight from its pattern and values (no decoded row, no gathered buffer; see sparse_simd.h for
// the per-element order). Quant values are dequantized to f32 a row block at a time. Each
// (row, token) is computed alone: matmul rows equal matvec bit for bit, on any thread count.
void sparse_rows(const Tensor& w, const float* x, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                 float* y);

// The kernel path of a Sparse encoding.
enum class SparsePath : uint8_t {
  kMaskWindows,   // bitmask: 8-column windows expanded by mask byte
  kNmHalves,      // n:m with n | 4, m <= 2n (2:4, 4:8, 1:2, ...): x permuted in registers
  kFieldWindows,  // other n:m with m | 8 and <= 12 index bits per window (1:4, 3:4, 1:8, 3:8, ...)
  kNmMasks,       // any other n:m: a bitmask built per row block, then the window kernel
  kCsr,           // CSR: x gathered at the column indices
};
SparsePath sparse_path(const SparseEncoding& s);
const char* sparse_path_name(SparsePath path);

}  // namespace llmc::kernels
