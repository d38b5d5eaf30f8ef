// SparseGPT column-by-column pruning with OBS error compensation through the Cholesky factor of H⁻¹.
#include "passes/prune/sparsegpt_math.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "core/sparse.h"
#include "kernels/cpu/linalg.h"
#include "passes/hessian.h"
#include "passes/prune/prune_common.h"
#include "passes/quant/quant_math.h"

namespace llmc {
namespace {

using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;

// Upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U) after damping; retries with 10x damping when H is
// not numerically positive definite.
Result<MatrixD> inverse_factor(const MatrixD& h, double damp, int threads) {
  const int64_t n = h.rows();
  const double mean_diag = h.diagonal().mean();
  // H is symmetric: its column-major storage is its row-major one.
  for (int attempt = 0; attempt < 4; ++attempt, damp *= 10.0)
    if (auto u = inverse_cholesky_upper(std::vector<double>(h.data(), h.data() + n * n), n,
                                        damp * (mean_diag > 0 ? mean_diag : 1.0), threads))
      return MatrixD(
          Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(u->data(), n, n));
  return make_error(ErrorCode::kInternal, "sparsegpt: the Hessian is not positive definite even with damping");
}

}  // namespace

Result<void> sparsegpt_prune(std::vector<float>& w, int64_t rows, int64_t cols, std::vector<double> h,
                             const PruneSpec& spec, const SparseGptOptions& options, std::vector<uint8_t>& keep,
                             const QuantSpec* quant, QuantEncoding* values) {
  if (spec.granularity == PruneGranularity::kGlobal && !spec.nm)
    return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt supports row and tensor granularity, not global");
  if (spec.nm) LLMC_TRY(check_nm_pattern(spec.n, spec.m, cols));
  if (quant) LLMC_TRY(check_joint_quant(spec, *quant));
  LLMC_CHECK(static_cast<int64_t>(h.size()) == cols * cols && static_cast<int64_t>(w.size()) == rows * cols);
  LLMC_CHECK(!quant || values);
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
  LLMC_ASSIGN_OR_RETURN(const MatrixD U, inverse_factor(H, options.damp, options.threads));

  // Kept entries per row in columns [0, c): the same in every row (exact per-row quotas).
  auto kept_before = [&](int64_t c) -> int64_t {
    if (spec.nm) return c / spec.m * spec.n + std::min<int64_t>(spec.n, c % spec.m);
    return c - std::llround(spec.sparsity * static_cast<double>(c));
  };
  const int64_t kept_stride = kept_before(cols);
  // Joint quantization groups the values along each row's kept entries (the Sparse{Quant} layout):
  // group k holds kept entries [k g, (k + 1) g). Blocks end where a whole number of groups was
  // kept, so a group's members all lie in one block, whose mask is chosen when the block starts.
  const int64_t group = quant ? (quant->group_size > 0 ? quant->group_size : std::max<int64_t>(1, kept_stride)) : 0;
  int64_t block = std::max<int64_t>(1, options.block_size);
  if (spec.nm) block = std::max<int64_t>(spec.m, block / spec.m * spec.m);
  auto block_end = [&](int64_t i1) {
    if (!quant) return std::min(cols, i1 + block);
    for (int64_t c = i1 + block; c < cols; c += spec.nm ? spec.m : 1)
      if (kept_before(c) % group == 0) return c;
    return cols;
  };
  std::optional<QuantRowsBuilder> builder;
  if (quant) builder.emplace(*quant, rows, kept_stride);
  std::vector<int64_t> next_kept(static_cast<size_t>(rows), 0);  // joint: the row's next kept entry
  std::vector<GroupParams> params(static_cast<size_t>(rows));

  Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic> prune(rows, cols);
  prune.setZero();
  std::vector<int64_t> order;
  std::vector<double> score;
  std::vector<float> group_values;
  Eigen::VectorXd err(rows), stored(rows);
  for (int64_t i1 = 0, i2 = 0; i1 < cols; i1 = i2) {
    i2 = block_end(i1);
    const int64_t count = i2 - i1;
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
        const int64_t quota = (i2 - kept_before(i2)) - (i1 - kept_before(i1));
        order.resize(static_cast<size_t>(count));
        for (int64_t r = 0; r < rows; ++r) {
          std::iota(order.begin(), order.end(), 0);
          const double* s = score.data() + r * count;
          select_lowest(order, static_cast<size_t>(quota), [&](int64_t e) { return s[e]; });
          for (int64_t j = 0; j < quota; ++j) prune(r, i1 + order[j]) = 1;
        }
      } else {
        const auto quota = static_cast<size_t>(std::llround(spec.sparsity * static_cast<double>(rows * count)));
        order.resize(static_cast<size_t>(rows * count));
        std::iota(order.begin(), order.end(), 0);
        select_lowest(order, quota, [&](int64_t e) { return score[e]; });
        for (size_t e = 0; e < quota; ++e) prune(order[e] / count, i1 + order[e] % count) = 1;
      }
    }
    // n:m: each group's mask when the sweep reaches it, from the current values `cur`.
    auto choose_nm = [&](int64_t j, const MatrixD& cur) {
      const int64_t width = std::min<int64_t>(spec.m, count - j);
      const int64_t drop = width - std::min<int64_t>(spec.n, width);
      order.resize(static_cast<size_t>(width));
      for (int64_t r = 0; r < rows; ++r) {
        std::iota(order.begin(), order.end(), 0);
        auto s = [&](int64_t a) { return cur(r, j + a) * cur(r, j + a) / d2(j + a); };
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s(a) < s(b); });
        for (int64_t e = 0; e < drop; ++e) prune(r, i1 + j + order[e]) = 1;
      }
    };
    if (quant) {
      // The block's groups are fitted to the values their members will have once the block's
      // pruning errors are compensated (a pruning-only sweep on a copy, which also chooses the
      // n:m masks as the plain sweep would): fitted to the values at the group's start instead,
      // later members drift out of the range by the (large) pruning compensation and are clipped.
      MatrixD sim = W1;
      for (int64_t j = 0; j < count; ++j) {
        if (spec.nm && j % spec.m == 0) choose_nm(j, sim);
        for (int64_t r = 0; r < rows; ++r) err(r) = prune(r, i1 + j) ? sim(r, j) / U1(j, j) : 0.0;
        sim.block(0, j, rows, count - j).noalias() -= err * U1.row(j).segment(j, count - j);
      }
      for (int64_t r = 0; r < rows; ++r) {
        group_values.clear();
        for (int64_t j = 0, k = next_kept[r]; j < count; ++j) {
          if (prune(r, i1 + j)) continue;
          group_values.push_back(static_cast<float>(sim(r, j)));
          const auto n = static_cast<int64_t>(group_values.size());
          if (n == group || k + n == kept_stride) {  // a whole group (or the row's last)
            builder->set_params(r, k / group, fit_group(*quant, group_values.data(), nullptr, n, {}));
            k += n;
            group_values.clear();
          }
        }
        LLMC_CHECK(group_values.empty(), "joint quantization group crosses a block");
      }
    }
    for (int64_t j = 0; j < count; ++j) {
      if (spec.nm && !quant && j % spec.m == 0) choose_nm(j, W1);
      const double d = U1(j, j);
      // err: (w - stored value) / d per row; stored: 0 when pruned, the dequantized code (joint) or w.
      for (int64_t r = 0; r < rows; ++r) {
        stored(r) = W1(r, j);
        if (prune(r, i1 + j)) {
          stored(r) = 0.0;
        } else if (quant) {
          const int64_t k = next_kept[r]++;
          if (k % group == 0) params[r] = builder->params(r, k / group);
          const uint32_t q = quantize_value(*quant, params[r], static_cast<float>(W1(r, j)));
          builder->set_code(r, k, q);
          stored(r) = dequantize_code(*quant, params[r], q);
        }
        err(r) = (W1(r, j) - stored(r)) / d;
      }
      W1.block(0, j, rows, count - j).noalias() -= err * U1.row(j).segment(j, count - j);
      W1.col(j) = stored;  // exactly 0, the dequantized value, or (kept, not quantized) unchanged
      Err1.col(j) = err;
    }
    W.middleCols(i1, count) = W1;
    // W[:, i2:] -= Err1 · U[i1:i2, i2:], as its transpose on the column-major storage: row c of Wᵀ
    // (column c of W) is contiguous, and so are Uᵀ's and Err1ᵀ's rows.
    if (i2 < cols)
      kernels::sub_matmul_f64(W.data() + i2 * rows, rows, U.data() + i1 + i2 * cols, cols, Err1.data(), rows, cols - i2,
                              rows, count, options.threads);
  }
  keep.assign(static_cast<size_t>(rows * cols), 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      keep[r * cols + c] = prune(r, c) ? 0 : 1;
      w[r * cols + c] = prune(r, c) ? 0.0f : static_cast<float>(W(r, c));
    }
  if (quant) *values = builder->finish();
  return {};
}

Result<void> check_joint_quant(const PruneSpec& spec, const QuantSpec& quant) {
  LLMC_TRY(validate_quant_spec(quant));
  if (quant.scheme != QuantScheme::kSymmetric && quant.scheme != QuantScheme::kAsymmetric)
    return make_error(ErrorCode::kInvalidArgument, "joint quantization: scheme ", quant_scheme_name(quant.scheme),
                      " is not supported (sym or asym)");
  if (quant.scale_dtype == DType::kU8)
    return make_error(ErrorCode::kInvalidArgument,
                      "joint quantization: u8 (double-quantized) scales are not supported");
  if (!spec.nm && spec.granularity != PruneGranularity::kRow)
    return make_error(ErrorCode::kInvalidArgument,
                      "joint quantization needs row granularity or N:M (every row keeps the same count)");
  return {};
}

}  // namespace llmc
