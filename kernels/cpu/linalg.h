// Dense f64 linear algebra of the calibration-based passes (GPTQ's and SparseGPT's blocked error
// updates), dispatched to the best SIMD target: Eigen runs at the build's baseline ISA, these at
// the CPU's.
#pragma once

#include <cstdint>

namespace llmc::kernels {

// C[m, n] -= A[m, k] · B[k, n], all row-major with leading dimensions lda, ldb, ldc (C must not
// overlap A or B). Each element of C is one chain of fused multiply-subtracts over k in order
// (c ← c - a·b rounded once), so its bits do not depend on m, n, blocking or threads; targets
// without FMA (EMU128) round the product and the difference separately. `threads` (0: OpenMP's
// default) split C's rows in fixed chunks.
void sub_matmul_f64(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t m,
                    int64_t n, int64_t k, int threads = 1);
// The scalar reference (std::fma).
void sub_matmul_f64_ref(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t m,
                        int64_t n, int64_t k);

}  // namespace llmc::kernels
