// SparseGPT column-by-column pruning with OBS error compensation through the Cholesky factor of H⁻¹.
#include "passes/prune/sparsegpt_math.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/sparse.h"

namespace llmc {
namespace {

using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;

// Upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U) after damping; retries with 10x damping when H is
// not numerically positive definite.
Result<MatrixD> inverse_cholesky_upper(MatrixD h, double damp) {
  const int64_t n = h.rows();
  const double mean_diag = h.diagonal().mean();
  for (int attempt = 0; attempt < 4; ++attempt, damp *= 10.0) {
    MatrixD hd = h;
    hd.diagonal().array() += damp * (mean_diag > 0 ? mean_diag : 1.0);
    Eigen::LLT<MatrixD> llt(hd);
    if (llt.info() != Eigen::Success) continue;
    MatrixD inv = llt.solve(MatrixD::Identity(n, n));
    Eigen::LLT<MatrixD> llt_inv(inv);
    if (llt_inv.info() != Eigen::Success) continue;
    return MatrixD(llt_inv.matrixU());
  }
  return make_error(ErrorCode::kInternal, "sparsegpt: the Hessian is not positive definite even with damping");
}

}  // namespace

Result<void> sparsegpt_prune(std::vector<float>& w, int64_t rows, int64_t cols, std::vector<double> h,
                             const PruneSpec& spec, const SparseGptOptions& options, std::vector<uint8_t>& keep) {
  if (spec.granularity == PruneGranularity::kGlobal && !spec.nm)
    return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt supports row and tensor granularity, not global");
  if (spec.nm) LLMC_TRY(check_nm_pattern(spec.n, spec.m, cols));
  LLMC_CHECK(static_cast<int64_t>(h.size()) == cols * cols && static_cast<int64_t>(w.size()) == rows * cols);
  MatrixD W(rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) W(r, c) = w[r * cols + c];
  MatrixD H =
      Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(h.data(), cols, cols);
  for (int64_t c = 0; c < cols; ++c)
    if (H(c, c) == 0.0) {
      H(c, c) = 1.0;
      W.col(c).setZero();
    }
  LLMC_ASSIGN_OR_RETURN(const MatrixD U, inverse_cholesky_upper(std::move(H), options.damp));

  int64_t block = std::max<int64_t>(1, options.block_size);
  if (spec.nm) block = std::max<int64_t>(spec.m, block / spec.m * spec.m);
  Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic> prune(rows, cols);
  prune.setZero();
  std::vector<int64_t> order;
  std::vector<double> score;
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    const int64_t i2 = std::min(cols, i1 + block), count = i2 - i1;
    MatrixD W1 = W.middleCols(i1, count);
    MatrixD Err1 = MatrixD::Zero(rows, count);
    const MatrixD U1 = U.block(i1, i1, count, count);
    const Eigen::VectorXd d2 = U1.diagonal().array().square();
    if (!spec.nm) {
      // Score w² / [U]_cc² over the block; prune the smallest.
      score.resize(static_cast<size_t>(rows * count));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < count; ++j) score[r * count + j] = W1(r, j) * W1(r, j) / d2(j);
      if (spec.granularity == PruneGranularity::kRow) {
        const auto quota = static_cast<int64_t>(std::llround(spec.sparsity * static_cast<double>(i2)) -
                                                std::llround(spec.sparsity * static_cast<double>(i1)));
        order.resize(static_cast<size_t>(count));
        for (int64_t r = 0; r < rows; ++r) {
          std::iota(order.begin(), order.end(), 0);
          const double* s = score.data() + r * count;
          std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[a] < s[b]; });
          for (int64_t j = 0; j < quota; ++j) prune(r, i1 + order[j]) = 1;
        }
      } else {
        const auto quota = static_cast<size_t>(std::llround(spec.sparsity * static_cast<double>(rows * count)));
        order.resize(static_cast<size_t>(rows * count));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] < score[b]; });
        for (size_t e = 0; e < quota; ++e) prune(order[e] / count, i1 + order[e] % count) = 1;
      }
    }
    for (int64_t j = 0; j < count; ++j) {
      if (spec.nm && j % spec.m == 0) {
        const int64_t width = std::min<int64_t>(spec.m, count - j);
        const int64_t drop = width - std::min<int64_t>(spec.n, width);
        order.resize(static_cast<size_t>(width));
        for (int64_t r = 0; r < rows; ++r) {
          std::iota(order.begin(), order.end(), 0);
          auto s = [&](int64_t a) { return W1(r, j + a) * W1(r, j + a) / d2(j + a); };
          std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s(a) < s(b); });
          for (int64_t e = 0; e < drop; ++e) prune(r, i1 + j + order[e]) = 1;
        }
      }
      const double d = U1(j, j);
      for (int64_t r = 0; r < rows; ++r) {
        if (!prune(r, i1 + j)) continue;
        const double err = W1(r, j) / d;
        W1.row(r).segment(j, count - j) -= err * U1.row(j).segment(j, count - j);
        W1(r, j) = 0.0;
        Err1(r, j) = err;
      }
    }
    W.middleCols(i1, count) = W1;
    if (i2 < cols) W.rightCols(cols - i2).noalias() -= Err1 * U.block(i1, i2, count, cols - i2);
  }
  keep.assign(static_cast<size_t>(rows * cols), 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      keep[r * cols + c] = prune(r, c) ? 0 : 1;
      w[r * cols + c] = prune(r, c) ? 0.0f : static_cast<float>(W(r, c));
    }
  return {};
}

}  // namespace llmc
