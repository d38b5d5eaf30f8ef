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
  // Two n x n buffers in all: J H J (reversing the flat row-major array reverses rows and columns),
  // factored in place into L (lower triangle; the upper one is never read), and X = L⁻¹, which
  // reversed in place is U.
  LLMC_CHECK(h.size() == static_cast<size_t>(n * n));
  std::vector<double> a = std::move(h);
  std::reverse(a.begin(), a.end());
  Eigen::Map<RowMatrix> am(a.data(), n, n);
  am.diagonal().array() += damp;
  Eigen::LLT<Eigen::Ref<RowMatrix>> llt(am);
  if (llt.info() != Eigen::Success) return std::nullopt;
  const double* l = a.data();

  // X = L⁻¹ (lower triangular): row i is (e_i - Σ_{p<i} L_ip X_p) / L_ii. Row p of X is zero
  // beyond column p, so a block's update by the rows above it touches columns [0, i0) only.
  constexpr int64_t kBlock = 64;
  std::vector<double> x(static_cast<size_t>(n * n), 0.0);
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    kernels::sub_matmul_f64(x.data() + i0 * n, n, l + i0 * n, n, x.data(), n, i1 - i0, i0, i0, threads);
    for (int64_t i = i0; i < i1; ++i) {
      double* xi = x.data() + i * n;
      xi[i] = 1.0;
      for (int64_t p = i0; p < i; ++p) {
        const double lip = l[i * n + p];
        const double* xp = x.data() + p * n;
        for (int64_t j = 0; j <= p; ++j) xi[j] -= lip * xp[j];
      }
      const double inv = 1.0 / l[i * n + i];
      for (int64_t j = 0; j <= i; ++j) xi[j] *= inv;
    }
  }
  a = {};
  std::reverse(x.begin(), x.end());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double v = x[i * n + j];
      if (!std::isfinite(v) || (i == j && !(v > 0))) return std::nullopt;
    }
  return x;
}

}  // namespace llmc
