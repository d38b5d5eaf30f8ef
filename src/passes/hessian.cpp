// Inverse-Hessian factor: Eigen's Cholesky factorization, then a blocked triangular inverse whose
// products run on kernels::sub_matmul_f64.
#define EIGEN_DONT_PARALLELIZE  // results must not depend on the thread count
#include "passes/hessian.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/linalg.h"

namespace llmc {

std::optional<std::vector<double>> inverse_cholesky_upper(std::vector<double> h, int64_t n, double damp, int threads) {
  using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  // One n x n buffer in all: J H J (reversing the flat row-major array reverses rows and columns),
  // factored in place into L (lower triangle; the upper one is never read), then X = L⁻¹ in place
  // of L, which reversed in place is U.
  LLMC_CHECK(h.size() == static_cast<size_t>(n * n));
  std::vector<double> a = std::move(h);
  std::reverse(a.begin(), a.end());
  Eigen::Map<RowMatrix> am(a.data(), n, n);
  am.diagonal().array() += damp;
  Eigen::LLT<Eigen::Ref<RowMatrix>> llt(am);
  if (llt.info() != Eigen::Success) return std::nullopt;
  const double* l = a.data();

  // X = L⁻¹ (lower triangular), computed over L a block of rows at a time: row i is
  // (e_i - Σ_{p<i} L_ip X_p) / L_ii. Row p of X is zero beyond column p, so a block's update by the
  // rows above it (already X) touches columns [0, i0) only. The block is built in `t` while its
  // rows of L are still read, then copied over them: one n x n array and a block in all.
  constexpr int64_t kBlock = 64;
  double* x = a.data();
  std::vector<double> t(static_cast<size_t>(std::min(n, kBlock) * n));
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    std::fill(t.begin(), t.end(), 0.0);
    kernels::sub_matmul_f64(t.data(), n, l + i0 * n, n, x, n, i1 - i0, i0, i0, threads);
    for (int64_t i = i0; i < i1; ++i) {
      double* ti = t.data() + (i - i0) * n;
      ti[i] = 1.0;
      for (int64_t p = i0; p < i; ++p) {
        const double lip = l[i * n + p];
        const double* tp = t.data() + (p - i0) * n;
        for (int64_t j = 0; j <= p; ++j) ti[j] -= lip * tp[j];
      }
      const double inv = 1.0 / l[i * n + i];
      for (int64_t j = 0; j <= i; ++j) ti[j] *= inv;
    }
    std::copy(t.begin(), t.begin() + (i1 - i0) * n, a.begin() + i0 * n);
  }
  std::reverse(a.begin(), a.end());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double v = a[i * n + j];
      if (!std::isfinite(v) || (i == j && !(v > 0))) return std::nullopt;
    }
  return a;
}

}  // namespace llmc
