// The inverse-Hessian factor of the calibration-based reconstruction passes (GPTQ, SparseGPT).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace llmc {

// U, the upper Cholesky factor of (H + damp · I)⁻¹ (so that (H + damp · I)⁻¹ = Uᵀ U), row-major
// [n, n], from a symmetric row-major H. One Cholesky factorization of H in reversed order
// (J H J = L Lᵀ gives H = R Rᵀ with R = J L J upper triangular, and U = R⁻¹ = J L⁻¹ J) and one
// blocked triangular inverse on the SIMD update kernel: L⁻¹'s rows in blocks, each block's rows
// first updated by the rows above it (one product) and then solved in order. The result does not
// depend on `threads`. nullopt when H + damp · I is not numerically positive definite (or U is not
// finite with a positive diagonal). H is consumed: its buffer becomes the factorization's and then
// the result's, so the peak is one n x n array and a block of 64 rows.
std::optional<std::vector<double>> inverse_cholesky_upper(std::vector<double> h, int64_t n, double damp, int threads);

}  // namespace llmc
