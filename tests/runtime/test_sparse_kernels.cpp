// Sparse linear kernels (bitmask, CSR, n:m; f32/f16/bf16 and Quant values) against matmul_ref on every SIMD target.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "core/sparse.h"
#include "kernels/cpu/kernels.h"

using namespace llmc;

namespace {

std::vector<float> normal_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// keep: unstructured with density `density`, or n:m with a random choice per group.
std::vector<uint8_t> random_keep(int64_t rows, int64_t cols, double density, int n, int m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  if (n == 0) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (auto& k : keep) k = u(rng) < density;
    return keep;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < cols; g0 += m) {
      const int64_t width = std::min<int64_t>(m, cols - g0);
      std::vector<int64_t> cols_in(static_cast<size_t>(width));
      for (int64_t j = 0; j < width; ++j) cols_in[j] = j;
      std::shuffle(cols_in.begin(), cols_in.end(), rng);
      for (int64_t j = 0; j < std::min<int64_t>(n, width); ++j) keep[r * cols + g0 + cols_in[j]] = 1;
    }
  return keep;
}

Tensor sparse_tensor(int64_t rows, int64_t cols, const std::vector<uint8_t>& keep, int n, int m, DType dtype,
                     bool quant_values, uint32_t seed) {
  const auto w = normal_values(static_cast<size_t>(rows * cols), seed);
  std::vector<float> kept;
  SparseEncoding s;
  if (n == 0) {
    s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
  } else {
    auto r = sparse_nm_pattern(keep.data(), w.data(), rows, cols, n, m, kept);
    REQUIRE(r.ok());
    s = *r;
  }
  if (quant_values) {  // q8 symmetric, one f32 scale per row, random codes
    std::mt19937 rng(seed + 1);
    QuantEncoding q;
    q.bits = 8;
    q.group_size = 0;
    q.scale_dtype = DType::kF32;
    std::vector<uint8_t> codes(static_cast<size_t>(rows * s.kept_stride));
    for (auto& c : codes) c = static_cast<uint8_t>(rng());
    q.codes = Bytes::owned(codes);
    q.scales = Bytes::from_vector(std::vector<float>(static_cast<size_t>(rows), 0.01f));
    s.values = std::make_shared<Encoding>(Encoding{q});
  } else {
    sparse_set_dense_values(s, kept, rows, dtype);
  }
  Tensor t{"w", Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{s})};
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  return t;
}

// The kernel against the double-accumulating reference, within f32 accumulation error of the
// kept products (|err| <= 1.01 (kept + 2) u Σ|w x|); matvec equals each matmul row bit for bit.
void check_against_ref(const Tensor& w, int64_t n, uint32_t seed) {
  const int64_t rows = w.rows(), cols = w.cols();
  const auto x = normal_values(static_cast<size_t>(n * cols), seed);
  std::vector<float> y(static_cast<size_t>(n * rows)), ref(y.size());
  kernels::matmul_ref(w, x.data(), n, ref.data());
  kernels::matmul(w, x.data(), n, y.data());
  const auto wf = w.to_f32();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += std::fabs(static_cast<double>(wf[r * cols + c]) * x[t * cols + c]);
      const double bound = 1.01 * static_cast<double>(cols + 2) / 16777216.0 * s + 1e-30;
      const double err = std::fabs(static_cast<double>(y[t * rows + r]) - ref[t * rows + r]);
      if (err > bound) {
        INFO("token " << t << " row " << r << " got " << y[t * rows + r] << " ref " << ref[t * rows + r]);
        REQUIRE(err <= bound);
      }
    }
  std::vector<float> yv(static_cast<size_t>(rows));
  for (int64_t t = 0; t < n; ++t) {
    kernels::matvec(w, x.data() + t * cols, yv.data());
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
}

}  // namespace

TEST_CASE("sparse matvec/matmul match _ref on every target, pattern and value type", "[sparse][kernels]") {
  struct Pattern {
    const char* name;
    double density;
    int n, m;
  };
  const Pattern kPatterns[] = {
      {"bitmask 50%", 0.5, 0, 0}, {"bitmask 30%", 0.7, 0, 0}, {"csr 97%", 0.03, 0, 0}, {"2:4", 0, 2, 4},
      {"4:8", 0, 4, 8},           {"3:8", 0, 3, 8},           {"1:16", 0, 1, 16},      {"5:7", 0, 5, 7}};
  const int64_t kCols[] = {16, 37, 172, 1031};
  const DType kDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};
  uint32_t seed = 7;
  const auto targets = kernels::simd_targets();
  REQUIRE(!targets.empty());
  for (int64_t target : targets) {
    kernels::force_simd_target(target);
    INFO("SIMD target " << kernels::simd_target_name(target));
    for (const Pattern& p : kPatterns)
      for (int64_t cols : kCols)
        for (DType dt : kDtypes)
          for (bool quant : {false, true}) {
            if (quant && dt != DType::kF32) continue;
            INFO(p.name << " cols " << cols << " dtype " << dtype_name(dt) << (quant ? " quant values" : ""));
            const int64_t rows = 19;
            const auto keep = random_keep(rows, cols, p.density, p.n, p.m, seed++);
            const Tensor w = sparse_tensor(rows, cols, keep, p.n, p.m, dt, quant, seed++);
            CHECK(kernels::has_fast_linear(w));
            check_against_ref(w, 1, seed++);
            check_against_ref(w, 5, seed++);
          }
  }
  kernels::force_simd_target(0);
}

TEST_CASE("sparse CSR with u32 column indices (rows wider than 65536)", "[sparse][kernels]") {
  const int64_t rows = 3, cols = 70001;
  const auto keep = random_keep(rows, cols, 0.01, 0, 0, 99);
  const Tensor w = sparse_tensor(rows, cols, keep, 0, 0, DType::kF32, false, 100);
  REQUIRE(std::get<SparseEncoding>(w.encoding->node).pattern == SparsePattern::kCsr);
  check_against_ref(w, 2, 101);
}
