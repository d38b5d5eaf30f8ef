// Highway f64 kernels of linalg.h, compiled once per target (EMU128, AVX2, AVX-512) with runtime
// dispatch, and their scalar references.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/linalg.h"

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/linalg_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DD = hn::ScalableTag<double>;
using VD = hn::Vec<DD>;
using D1 = hn::CappedTag<double, 1>;  // one lane: column tails with the target's own NegMulAdd

// Vectors of columns per microkernel: MR rows × NV vectors of accumulators stay in registers
// (16 of 32 on AVX-512, 8 of 16 elsewhere) while B's rows stream past.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
constexpr int kNV = 4;
#else
constexpr int kNV = 2;
#endif
constexpr int kMR = 4;

// C[0:R, 0:NV vectors] -= A[0:R, 0:k] · B[0:k, same columns].
template <int R, int NV>
HWY_INLINE void micro(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t k) {
  const DD d;
  const int64_t n = static_cast<int64_t>(hn::Lanes(d));
  VD acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = hn::LoadU(d, c + r * ldc + j * n);
  for (int64_t p = 0; p < k; ++p) {
    VD bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = hn::LoadU(d, b + p * ldb + j * n);
    for (int r = 0; r < R; ++r) {
      const VD av = hn::Set(d, a[r * lda + p]);
      for (int j = 0; j < NV; ++j) acc[r][j] = hn::NegMulAdd(av, bv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) hn::StoreU(acc[r][j], d, c + r * ldc + j * n);
}

// Rows [0, m) of one block of NV vectors of columns.
template <int NV>
HWY_INLINE void rows_block(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb,
                           int64_t m, int64_t k) {
  int64_t i = 0;
  for (; i + kMR <= m; i += kMR) micro<kMR, NV>(c + i * ldc, ldc, a + i * lda, lda, b, ldb, k);
  for (; i < m; ++i) micro<1, NV>(c + i * ldc, ldc, a + i * lda, lda, b, ldb, k);
}

// Column blocks of kNV vectors keep a k × (kNV vectors) panel of B in L1 while every row passes.
void SubMatmulF64(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t m,
                  int64_t n, int64_t k) {
  const DD d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t j = 0;
  for (; j + kNV * lanes <= n; j += kNV * lanes) rows_block<kNV>(c + j, ldc, a, lda, b + j, ldb, m, k);
  for (; j + lanes <= n; j += lanes) rows_block<1>(c + j, ldc, a, lda, b + j, ldb, m, k);
  const D1 d1;
  for (; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      auto acc = hn::Set(d1, c[i * ldc + j]);
      for (int64_t p = 0; p < k; ++p)
        acc = hn::NegMulAdd(hn::Set(d1, a[i * lda + p]), hn::Set(d1, b[p * ldb + j]), acc);
      c[i * ldc + j] = hn::GetLane(acc);
    }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels {

HWY_EXPORT(SubMatmulF64);

void sub_matmul_f64(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t m,
                    int64_t n, int64_t k, int threads) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  constexpr int64_t kChunk = 32;  // rows of C per parallel work item
  const int64_t chunks = (m + kChunk - 1) / kChunk;
  const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && chunks > 1)
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t r0 = i * kChunk, rows = std::min(kChunk, m - r0);
    HWY_DYNAMIC_DISPATCH(SubMatmulF64)(c + r0 * ldc, ldc, a + r0 * lda, lda, b, ldb, rows, n, k);
  }
}

void sub_matmul_f64_ref(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t m,
                        int64_t n, int64_t k) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = c[i * ldc + j];
      for (int64_t p = 0; p < k; ++p) acc = std::fma(-a[i * lda + p], b[p * ldb + j], acc);
      c[i * ldc + j] = acc;
    }
}

}  // namespace llmc::kernels
#endif  // HWY_ONCE
