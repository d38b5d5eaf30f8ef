// Internal: the linear-layer kernel of Sparse weights, one row of kLinearKernels (linear.cpp).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Y[t_begin:t_end, r_begin:r_end] of Y[n, rows] = X[n, cols] · Wᵀ for a Sparse weight W, read
// straight from its pattern and values (no decoded row, no gathered buffer; see sparse_simd.h for
// the per-element order). Quant values are dequantized to f32 a row block at a time. Each
// (row, token) is computed alone: matmul rows equal matvec bit for bit, on any thread count, for
// calls of fewer than sparse_expand_tokens tokens. From that many on (prefill) the rows are expanded
// to dense rows and run by the dense kernel, which reuses each weight vector across tokens.
// aux: what sparse_prepare wrote for all n tokens of the call (the 2:4 / 1:2 kernel's arranged x).
void sparse_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                 int64_t r_end, float* y);
// True when a one-token call of w runs through the window index of its bitmask rows (sparse_index.h):
// bitmask pattern, an AVX-512 target, sparsity at or above the measured threshold (docs/sparsity.md).
bool sparse_window_index_path(const Tensor& w);
// Tokens per call from which sparse_rows expands rows and runs the dense kernel (docs/sparsity.md).
int64_t sparse_expand_tokens(const SparseEncoding& s);
// Floats of per-call scratch sparse_prepare fills for n tokens (0: none).
int64_t sparse_aux_floats(const Tensor& w, int64_t n);
void sparse_prepare(const Tensor& w, const float* x, int64_t n, float* aux);

// Any encoding: kDecodeRows rows at a time decoded with the reference decoder into a per-thread
// buffer, then the dense f32 kernel over them (linear.cpp; the table's last row, and sparse prefill).
void decoded_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                  int64_t r_end, float* y);

// The kernel path of a Sparse encoding.
enum class SparsePath : uint8_t {
  kMaskWindows,  // bitmask: 8-column windows expanded by mask byte
  kNmQuads,      // 2:4 and 1:2: x pre-arranged once per call, in-lane permutes
  kNmHalves,     // n:m with n | 4, m <= 2n (4:8, 4:5 .. 4:7, 2:3): x permuted across lanes
  kNmMasks,      // any other n:m (1:4, 3:8, 5:8, 8:16, ...): a bitmask built per row block, then the windows
  kCsr,          // CSR: x gathered at the column indices
};
SparsePath sparse_path(const SparseEncoding& s);
const char* sparse_path_name(SparsePath path);

}  // namespace llmc::kernels
