// The inverse-Hessian factor shared by GPTQ and SparseGPT: U upper triangular with a positive
// diagonal, Uᵀ U (H + damp I) = I, thread-independent, and a refusal for indefinite matrices.
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "passes/hessian.h"

using namespace llmc;

TEST_CASE("inverse_cholesky_upper: Uᵀ U inverts the damped Hessian", "[hessian]") {
  const int64_t n = 150;  // two full blocks of 64 and a tail
  const int64_t samples = 400;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> x(static_cast<size_t>(samples * n));
  for (double& v : x) v = dist(rng);
  std::vector<double> h(static_cast<size_t>(n * n), 0.0);  // Σ x xᵀ, positive definite
  for (int64_t s = 0; s < samples; ++s)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) h[i * n + j] += x[s * n + i] * x[s * n + j];
  const double damp = 0.5;
  const auto u = inverse_cholesky_upper(h, n, damp, 1);
  REQUIRE(u.has_value());
  const auto u2 = inverse_cholesky_upper(h, n, damp, 2);
  REQUIRE(u2.has_value());
  CHECK(*u == *u2);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    CHECK((*u)[i * n + i] > 0);
    for (int64_t j = 0; j < i; ++j) CHECK((*u)[i * n + j] == 0.0);
  }
  // (Uᵀ U)(H + damp I) = I.
  std::vector<double> inv(static_cast<size_t>(n * n), 0.0);
  for (int64_t p = 0; p < n; ++p)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) inv[i * n + j] += (*u)[p * n + i] * (*u)[p * n + j];
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double e = 0;
      for (int64_t p = 0; p < n; ++p) e += inv[i * n + p] * (h[p * n + j] + (p == j ? damp : 0.0));
      worst = std::max(worst, std::abs(e - (i == j ? 1.0 : 0.0)));
    }
  CHECK(worst < 1e-9);

  std::vector<double> indefinite(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) indefinite[i * n + i] = i == 70 ? -1.0 : 1.0;
  CHECK_FALSE(inverse_cholesky_upper(indefinite, n, 0.0, 1).has_value());
}
