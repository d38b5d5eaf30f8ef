// The numerics of the low-rank passes: (whitened) truncated SVD of one weight, rank choice, the global
// rank budget, and Tucker (HOSVD + HOOI) of a matrix folded into a K-way tensor.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"

namespace llmc {

// W [rows, cols] (row-major) ≈ P diag(σ) Qᵀ S⁻¹ where S is the lower Cholesky factor of the damped
// input covariance H = Σ x xᵀ / tokens + damp · mean(diag H) · I (activation-aware, SVD-LLM), or
// S = I (plain SVD). Truncating to rank r minimises ‖(W − W_r) X‖ (whitened) or ‖W − W_r‖ (plain),
// and the error is Σ_{i>r} σ_i². Only the leading `keep` components are kept.
struct WeightSpectrum {
  int64_t rows = 0, cols = 0;
  std::vector<double> sigma;  // [min(rows, cols)] descending, all of them (for rank choice)
  int64_t kept = 0;           // components with vectors below
  std::vector<double> left;   // [rows, kept] row-major: P
  std::vector<double> right;  // [kept, cols] row-major: row i = (S⁻ᵀ q_i)ᵀ (unwhitened right vector)
  double damp_used = 0;       // fraction of mean(diag H) finally added (whitened only)
  double energy() const;      // Σ σ²
};

struct SpectrumOptions {
  std::span<const double> xtx;  // [cols, cols] Σ x xᵀ; empty = plain SVD
  int64_t tokens = 0;           // inputs summed in xtx
  double damp = 0.01;
  int64_t keep = -1;  // leading components to keep vectors for; -1 = all
};

// kInvalidArgument when the covariance stays singular after raising the damping 1000×. Single-threaded
// (the caller parallelises over tensors), so results never depend on the thread count.
Result<WeightSpectrum> weight_spectrum(std::span<const float> w, int64_t rows, int64_t cols,
                                       const SpectrumOptions& options);

// Factors of rank r <= kept with the singular values split evenly: U = P_r diag(√σ) [rows, r],
// V = diag(√σ) Q_rᵀ S⁻¹ [r, cols] (row-major f32).
void spectrum_factors(const WeightSpectrum& s, int64_t rank, std::vector<float>& u, std::vector<float>& v);

// Σ_{i<r} σ_i² / Σ σ_i² (1 for an all-zero weight).
double retained_energy(const std::vector<double>& sigma, int64_t rank);
// Smallest r >= 1 with retained_energy >= energy.
int64_t rank_for_energy(const std::vector<double>& sigma, double energy);
// floor(ratio · rows · cols / (rows + cols)), at least 1: the rank that keeps `ratio` of the parameters.
int64_t rank_for_ratio(int64_t rows, int64_t cols, double ratio);
// Largest rank whose factors have fewer parameters than the matrix: r (rows + cols) < rows · cols.
int64_t max_useful_rank(int64_t rows, int64_t cols);

// Global budget: ranks for several matrices so that Σ r_t (rows_t + cols_t) <= fraction · Σ rows_t cols_t,
// greedily taking the component with the largest share of its matrix's energy per parameter
// (σ²_{t,i} / Σ_i σ²_{t,i} / (rows_t + cols_t)); every matrix gets rank >= 1 and at most
// max_useful_rank. Ties go to the earlier matrix, then the lower index. kInvalidArgument when rank 1
// everywhere already exceeds the budget.
struct BudgetItem {
  int64_t rows = 0, cols = 0;
  std::vector<double> sigma;
};
Result<std::vector<int64_t>> allocate_ranks(const std::vector<BudgetItem>& items, double fraction);

// ---- Tucker ----

// Tucker of the row-major tensor t with dims n_1..n_K: factors U_k [n_k, r_k] (orthonormal columns,
// row-major) and core G [r_1, …, r_K] (row-major) with T ≈ G ×_1 U_1 … ×_K U_K. `ranks` are chosen
// by the caller from mode_energies; `iterations` HOOI sweeps refine the HOSVD start.
struct TuckerResult {
  std::vector<std::vector<double>> factors;
  std::vector<double> core;
  double rel_err = 0;  // ‖T − T̂‖ / ‖T‖ (from ‖T‖² − ‖G‖², exact for orthonormal factors)
};
// Eigenvalues (descending) of every mode's unfolding Gram matrix T_(k) T_(k)ᵀ: the mode's energy spectrum.
std::vector<std::vector<double>> mode_energies(std::span<const float> t, const std::vector<int64_t>& dims);
TuckerResult tucker_decompose(std::span<const float> t, const std::vector<int64_t>& dims,
                              const std::vector<int64_t>& ranks, int64_t iterations);
// Per-mode ranks: smallest r_k with retained energy >= `energy` in every mode.
std::vector<int64_t> tucker_ranks_for_energy(const std::vector<std::vector<double>>& spectra, double energy);
// Per-mode ranks from a common energy level, the largest whose parameters Π r_k + Σ n_k r_k stay
// within `ratio` · Π n_k (bisection; at least rank 1 per mode).
std::vector<int64_t> tucker_ranks_for_ratio(const std::vector<std::vector<double>>& spectra,
                                            const std::vector<int64_t>& dims, double ratio);
int64_t tucker_params(const std::vector<int64_t>& dims, const std::vector<int64_t>& ranks);

}  // namespace llmc
