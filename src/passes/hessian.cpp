// Inverse-Hessian factor: Eigen's Cholesky factorization, then a blocked triangular inverse whose
// products run on kernels::sub_matmul_f64.
#define EIGEN_DONT_PARALLELIZE  // results must not depend on the thread count
#include "passes/hessian.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "kernels/cpu/linalg.h"

namespace llmc {

std::optional<std::vector<double>> inverse_cholesky_upper(std::span<const double> h, int64_t n, double damp,
                                                          int threads) {
  using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMatrix a(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) a(i, j) = h[(n - 1 - i) * n + (n - 1 - j)];
  a.diagonal().array() += damp;
  Eigen::LLT<RowMatrix> llt(a);
  if (llt.info() != Eigen::Success) return std::nullopt;
  const RowMatrix l = llt.matrixL();

  // X = L⁻¹ (lower triangular): row i is (e_i - Σ_{p<i} L_ip X_p) / L_ii. Row p of X is zero
  // beyond column p, so a block's update by the rows above it touches columns [0, i0) only.
  constexpr int64_t kBlock = 64;
  std::vector<double> x(static_cast<size_t>(n * n), 0.0);
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    kernels::sub_matmul_f64(x.data() + i0 * n, n, l.data() + i0 * n, n, x.data(), n, i1 - i0, i0, i0, threads);
    for (int64_t i = i0; i < i1; ++i) {
      double* xi = x.data() + i * n;
      xi[i] = 1.0;
      for (int64_t p = i0; p < i; ++p) {
        const double lip = l(i, p);
        const double* xp = x.data() + p * n;
        for (int64_t j = 0; j <= p; ++j) xi[j] -= lip * xp[j];
      }
      const double inv = 1.0 / l(i, i);
      for (int64_t j = 0; j <= i; ++j) xi[j] *= inv;
    }
  }
  std::vector<double> u(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double v = x[(n - 1 - i) * n + (n - 1 - j)];
      if (!std::isfinite(v) || (i == j && !(v > 0))) return std::nullopt;
      u[i * n + j] = v;
    }
  return u;
}

}  // namespace llmc
