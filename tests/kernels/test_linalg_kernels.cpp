// The f64 update kernel of GPTQ and SparseGPT (kernels/cpu/linalg.h) against its scalar reference,
// on every SIMD target, over shapes with row, column and depth tails and padded leading dimensions.
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/linalg.h"
#include "kernels/simd_targets.h"

using namespace llmc;

namespace {

std::vector<double> random_values(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

}  // namespace

TEST_CASE("sub_matmul_f64 equals the fused scalar reference on every target", "[kernels][linalg]") {
  std::mt19937_64 rng(11);
  struct Shape {
    int64_t m, n, k;
  };
  const Shape shapes[] = {{1, 1, 1}, {3, 5, 7}, {4, 8, 16}, {5, 33, 9}, {17, 70, 128}, {37, 64, 3}, {64, 129, 40}};
  test::for_each_target([&] {
    const std::string target = kernels::active_simd_target();
    for (const Shape& s : shapes) {
      INFO("m " << s.m << " n " << s.n << " k " << s.k);
      const int64_t lda = s.k + 3, ldb = s.n + 5, ldc = s.n + 2;
      const auto a = random_values(static_cast<size_t>(s.m * lda), rng);
      const auto b = random_values(static_cast<size_t>(s.k * ldb), rng);
      const auto c0 = random_values(static_cast<size_t>(s.m * ldc), rng);
      auto want = c0, got = c0, got2 = c0;
      kernels::sub_matmul_f64_ref(want.data(), ldc, a.data(), lda, b.data(), ldb, s.m, s.n, s.k);
      kernels::sub_matmul_f64(got.data(), ldc, a.data(), lda, b.data(), ldb, s.m, s.n, s.k, 1);
      kernels::sub_matmul_f64(got2.data(), ldc, a.data(), lda, b.data(), ldb, s.m, s.n, s.k, 2);
      CHECK(got == got2);  // thread count never changes a bit
      bool padding_kept = true;
      double worst = 0;
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
          const size_t e = static_cast<size_t>(i * ldc + j);
          if (j >= s.n) {
            padding_kept = padding_kept && got[e] == c0[e];
            continue;
          }
          worst = std::max(worst, std::abs(got[e] - want[e]) / (1.0 + std::abs(want[e])));
        }
      CHECK(padding_kept);
      // Fused targets round exactly like std::fma; the emulated one rounds twice per step.
      if (target.find("EMU128") == std::string::npos && target.find("SCALAR") == std::string::npos)
        CHECK(worst == 0.0);
      else
        CHECK(worst < 1e-13 * static_cast<double>(s.k));
    }
  });
}
