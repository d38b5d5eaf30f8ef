// Truncated (whitened) SVD through the Gram matrix of the smaller side, rank choice and budgets, Tucker (HOSVD + HOOI).
// Eigen's own OpenMP GEMM is off: its blocking depends on the thread count, and results must not.
#define EIGEN_DONT_PARALLELIZE
#include "passes/lowrank/lowrank_math.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>

namespace llmc {
namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Matrix = Eigen::MatrixXd;

// Damping multipliers tried in turn when Cholesky fails (H not positive definite).
constexpr double kDampRetry[] = {1, 10, 100, 1000};
// Components below this fraction of σ_max have no reliable vectors from the Gram matrix; they
// are kept as zero vectors (they carry no energy worth a rank).
constexpr double kTinySigma = 1e-10;

// Eigenvectors of a symmetric matrix, largest eigenvalue first, each with its largest-magnitude
// entry positive (a fixed sign whatever the solver's internals).
void sorted_eigen(const Matrix& g, Eigen::VectorXd& values, Matrix& vectors) {
  Eigen::SelfAdjointEigenSolver<Matrix> eig(g);
  const int64_t n = g.rows();
  values.resize(n);
  vectors.resize(n, n);
  for (int64_t i = 0; i < n; ++i) {
    values(i) = eig.eigenvalues()(n - 1 - i);
    Eigen::VectorXd v = eig.eigenvectors().col(n - 1 - i);
    Eigen::Index at = 0;
    v.cwiseAbs().maxCoeff(&at);
    if (v(at) < 0) v = -v;
    vectors.col(i) = v;
  }
}

}  // namespace

double WeightSpectrum::energy() const {
  double e = 0;
  for (double s : sigma) e += s * s;
  return e;
}

Result<WeightSpectrum> weight_spectrum(std::span<const float> w, int64_t rows, int64_t cols,
                                       const SpectrumOptions& options) {
  WeightSpectrum s;
  s.rows = rows;
  s.cols = cols;
  RowMatrix a =
      Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(w.data(), rows, cols)
          .cast<double>();
  const bool whiten = !options.xtx.empty();
  Matrix lower;  // S
  if (whiten) {
    if (options.xtx.size() != static_cast<size_t>(cols * cols))
      return make_error(ErrorCode::kInternal, "whitened SVD: X^T X has ", options.xtx.size(), " entries, expected ",
                        cols, "^2");
    const double norm = 1.0 / static_cast<double>(std::max<int64_t>(options.tokens, 1));
    Matrix h = Eigen::Map<const RowMatrix>(options.xtx.data(), cols, cols) * norm;
    const double mean_diag = h.diagonal().mean();
    if (!(mean_diag > 0))
      return make_error(ErrorCode::kInvalidArgument, "whitened SVD: the input covariance is zero (no active inputs)");
    bool ok = false;
    for (double retry : kDampRetry) {
      const double damp = std::max(options.damp, 1e-6) * retry;
      Matrix hd = h;
      hd.diagonal().array() += damp * mean_diag;
      Eigen::LLT<Matrix> llt(hd);
      if (llt.info() == Eigen::Success) {
        lower = llt.matrixL();
        s.damp_used = damp;
        ok = true;
        break;
      }
    }
    if (!ok)
      return make_error(ErrorCode::kInvalidArgument,
                        "whitened SVD: the input covariance is not positive definite even with damping ",
                        std::max(options.damp, 1e-6) * kDampRetry[std::size(kDampRetry) - 1]);
    a = a * lower;
  }
  const int64_t m = std::min(rows, cols);
  const int64_t kept = options.keep < 0 ? m : std::min(options.keep, m);
  Eigen::VectorXd lambda;
  Matrix vectors;
  Matrix p(rows, kept), q(cols, kept);
  if (cols <= rows) {
    sorted_eigen(a.transpose() * a, lambda, vectors);
    q = vectors.leftCols(kept);
    p = a * q;
  } else {
    sorted_eigen(a * a.transpose(), lambda, vectors);
    p = vectors.leftCols(kept);
    q = a.transpose() * p;
  }
  s.sigma.resize(m);
  for (int64_t i = 0; i < m; ++i) s.sigma[i] = std::sqrt(std::max(lambda(i), 0.0));
  // The product side is σ_i times a unit vector: normalise it (zero for negligible σ_i).
  Matrix& product = cols <= rows ? p : q;
  for (int64_t i = 0; i < kept; ++i) {
    if (s.sigma[i] > kTinySigma * s.sigma[0])
      product.col(i) /= s.sigma[i];
    else
      product.col(i).setZero();
  }
  if (whiten && kept > 0) q = lower.transpose().triangularView<Eigen::Upper>().solve(q);  // S⁻ᵀ q_i
  s.kept = kept;
  s.left.resize(static_cast<size_t>(rows * kept));
  s.right.resize(static_cast<size_t>(kept * cols));
  Eigen::Map<RowMatrix>(s.left.data(), rows, kept) = p;
  Eigen::Map<RowMatrix>(s.right.data(), kept, cols) = q.transpose();
  return s;
}

void spectrum_factors(const WeightSpectrum& s, int64_t rank, std::vector<float>& u, std::vector<float>& v) {
  LLMC_CHECK(rank >= 1 && rank <= s.kept, "rank within the kept components");
  u.resize(static_cast<size_t>(s.rows * rank));
  v.resize(static_cast<size_t>(rank * s.cols));
  for (int64_t a = 0; a < rank; ++a) {
    const double root = std::sqrt(s.sigma[a]);
    for (int64_t i = 0; i < s.rows; ++i) u[i * rank + a] = static_cast<float>(s.left[i * s.kept + a] * root);
    for (int64_t c = 0; c < s.cols; ++c) v[a * s.cols + c] = static_cast<float>(s.right[a * s.cols + c] * root);
  }
}

double retained_energy(const std::vector<double>& sigma, int64_t rank) {
  double total = 0, kept = 0;
  for (size_t i = 0; i < sigma.size(); ++i) {
    total += sigma[i] * sigma[i];
    if (static_cast<int64_t>(i) < rank) kept += sigma[i] * sigma[i];
  }
  return total > 0 ? kept / total : 1.0;
}

int64_t rank_for_energy(const std::vector<double>& sigma, double energy) {
  double total = 0;
  for (double s : sigma) total += s * s;
  double kept = 0;
  for (size_t i = 0; i < sigma.size(); ++i) {
    kept += sigma[i] * sigma[i];
    if (kept >= energy * total) return static_cast<int64_t>(i) + 1;
  }
  return std::max<int64_t>(1, static_cast<int64_t>(sigma.size()));
}

int64_t rank_for_ratio(int64_t rows, int64_t cols, double ratio) {
  const double r =
      std::floor(ratio * static_cast<double>(rows) * static_cast<double>(cols) / static_cast<double>(rows + cols));
  return std::max<int64_t>(1, static_cast<int64_t>(r));
}

int64_t max_useful_rank(int64_t rows, int64_t cols) { return rows + cols > 0 ? (rows * cols - 1) / (rows + cols) : 0; }

Result<std::vector<int64_t>> allocate_ranks(const std::vector<BudgetItem>& items, double fraction) {
  struct Candidate {
    double priority;
    size_t item;
    int64_t index;
  };
  double full = 0, used = 0;
  std::vector<int64_t> ranks(items.size(), 1);
  std::vector<Candidate> candidates;
  for (size_t t = 0; t < items.size(); ++t) {
    const BudgetItem& it = items[t];
    full += static_cast<double>(it.rows) * static_cast<double>(it.cols);
    used += static_cast<double>(it.rows + it.cols);
    double total = 0;
    for (double s : it.sigma) total += s * s;
    const int64_t top = std::min<int64_t>(max_useful_rank(it.rows, it.cols), static_cast<int64_t>(it.sigma.size()));
    for (int64_t i = 1; i < top; ++i)
      candidates.push_back(
          {total > 0 ? it.sigma[i] * it.sigma[i] / total / static_cast<double>(it.rows + it.cols) : 0, t, i});
  }
  const double budget = fraction * full;
  if (used > budget)
    return make_error(ErrorCode::kInvalidArgument, "target_params ", fraction, " keeps ", budget,
                      " parameters, but rank 1 for every target already needs ", used);
  std::stable_sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    if (a.item != b.item) return a.item < b.item;
    return a.index < b.index;
  });
  for (const Candidate& c : candidates) {
    const BudgetItem& it = items[c.item];
    const double cost = static_cast<double>(it.rows + it.cols);
    // Components of one matrix come in index order (σ descends); one that does not fit blocks the rest.
    if (ranks[c.item] != c.index || used + cost > budget) continue;
    ranks[c.item] = c.index + 1;
    used += cost;
  }
  return ranks;
}

// ---- Tucker ----

namespace {

// Gram matrix T_(k) T_(k)ᵀ of the mode-k unfolding of t (dims n_1..n_K, row-major).
Matrix mode_gram(const std::vector<double>& t, const std::vector<int64_t>& dims, size_t k) {
  int64_t pre = 1, post = 1;
  for (size_t m = 0; m < k; ++m) pre *= dims[m];
  for (size_t m = k + 1; m < dims.size(); ++m) post *= dims[m];
  const int64_t n = dims[k];
  if (post == 1) {
    Eigen::Map<const RowMatrix> a(t.data(), pre, n);
    return a.transpose() * a;
  }
  Matrix g = Matrix::Zero(n, n);
  for (int64_t p = 0; p < pre; ++p) {
    Eigen::Map<const RowMatrix> block(t.data() + p * n * post, n, post);
    g.selfadjointView<Eigen::Lower>().rankUpdate(block);
  }
  return g.selfadjointView<Eigen::Lower>();
}

// out[p, a, q] = Σ_i U[i, a] t[p, i, q]: mode k of t contracted with U [n_k, r] (row-major); dims updated.
std::vector<double> contract_mode(const std::vector<double>& t, std::vector<int64_t>& dims, size_t k,
                                  const std::vector<double>& u, int64_t r) {
  int64_t pre = 1, post = 1;
  for (size_t m = 0; m < k; ++m) pre *= dims[m];
  for (size_t m = k + 1; m < dims.size(); ++m) post *= dims[m];
  const int64_t n = dims[k];
  Eigen::Map<const RowMatrix> um(u.data(), n, r);
  std::vector<double> out(static_cast<size_t>(pre * r * post));
  if (post == 1) {
    Eigen::Map<RowMatrix>(out.data(), pre, r) = Eigen::Map<const RowMatrix>(t.data(), pre, n) * um;
  } else {
    for (int64_t p = 0; p < pre; ++p)
      Eigen::Map<RowMatrix>(out.data() + p * r * post, r, post) =
          um.transpose() * Eigen::Map<const RowMatrix>(t.data() + p * n * post, n, post);
  }
  dims[k] = r;
  return out;
}

// The leading r eigenvectors of g as a row-major [n, r] matrix.
std::vector<double> leading_vectors(const Matrix& g, int64_t r) {
  Eigen::VectorXd values;
  Matrix vectors;
  sorted_eigen(g, values, vectors);
  std::vector<double> u(static_cast<size_t>(g.rows() * r));
  Eigen::Map<RowMatrix>(u.data(), g.rows(), r) = vectors.leftCols(r);
  return u;
}

}  // namespace

std::vector<std::vector<double>> mode_energies(std::span<const float> t, const std::vector<int64_t>& dims) {
  const std::vector<double> td(t.begin(), t.end());
  std::vector<std::vector<double>> out;
  for (size_t k = 0; k < dims.size(); ++k) {
    Eigen::VectorXd values;
    Matrix vectors;
    sorted_eigen(mode_gram(td, dims, k), values, vectors);
    std::vector<double> e(static_cast<size_t>(values.size()));
    for (Eigen::Index i = 0; i < values.size(); ++i) e[i] = std::max(values(i), 0.0);
    out.push_back(std::move(e));
  }
  return out;
}

TuckerResult tucker_decompose(std::span<const float> t, const std::vector<int64_t>& dims,
                              const std::vector<int64_t>& ranks, int64_t iterations) {
  const std::vector<double> td(t.begin(), t.end());
  const size_t modes = dims.size();
  TuckerResult r;
  for (size_t k = 0; k < modes; ++k) r.factors.push_back(leading_vectors(mode_gram(td, dims, k), ranks[k]));
  // HOOI: each factor becomes the leading subspace of T projected on all the other factors.
  for (int64_t it = 0; it < iterations; ++it)
    for (size_t k = 0; k < modes; ++k) {
      std::vector<int64_t> d = dims;
      std::vector<double> y = td;
      for (size_t m = 0; m < modes; ++m)
        if (m != k) y = contract_mode(y, d, m, r.factors[m], ranks[m]);
      r.factors[k] = leading_vectors(mode_gram(y, d, k), ranks[k]);
    }
  std::vector<int64_t> d = dims;
  r.core = td;
  for (size_t m = 0; m < modes; ++m) r.core = contract_mode(r.core, d, m, r.factors[m], ranks[m]);
  double total = 0, kept = 0;
  for (double v : td) total += v * v;
  for (double v : r.core) kept += v * v;
  r.rel_err = total > 0 ? std::sqrt(std::max(0.0, total - kept) / total) : 0.0;
  return r;
}

std::vector<int64_t> tucker_ranks_for_energy(const std::vector<std::vector<double>>& spectra, double energy) {
  std::vector<int64_t> ranks;
  for (const auto& e : spectra) {
    double total = std::accumulate(e.begin(), e.end(), 0.0), kept = 0;
    int64_t r = static_cast<int64_t>(e.size());
    for (size_t i = 0; i < e.size(); ++i) {
      kept += e[i];
      if (kept >= energy * total) {
        r = static_cast<int64_t>(i) + 1;
        break;
      }
    }
    ranks.push_back(std::max<int64_t>(1, r));
  }
  return ranks;
}

int64_t tucker_params(const std::vector<int64_t>& dims, const std::vector<int64_t>& ranks) {
  int64_t core = 1, factors = 0;
  for (size_t k = 0; k < dims.size(); ++k) {
    core *= ranks[k];
    factors += dims[k] * ranks[k];
  }
  return core + factors;
}

std::vector<int64_t> tucker_ranks_for_ratio(const std::vector<std::vector<double>>& spectra,
                                            const std::vector<int64_t>& dims, double ratio) {
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  const double budget = ratio * static_cast<double>(numel);
  double lo = 0, hi = 1;
  std::vector<int64_t> best(dims.size(), 1);
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    const std::vector<int64_t> ranks = tucker_ranks_for_energy(spectra, mid);
    if (static_cast<double>(tucker_params(dims, ranks)) <= budget) {
      best = ranks;
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return best;
}

}  // namespace llmc
