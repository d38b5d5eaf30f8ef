// Sparse linear kernels (bitmask, CSR, n:m; f32/f16/bf16 and Quant values) against matmul_ref on every SIMD target.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "core/sparse.h"
#include "kernels/cpu/kernels.h"
#include "passes/quant/quant_math.h"

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

// How the kept values are stored: a Dense dtype, or a Quant spec (RTN of the kept values).
struct Values {
  const char* name;
  DType dtype = DType::kF32;
  bool quant = false;
  QuantSpec spec{};
};

QuantSpec quant_spec(int bits, QuantScheme scheme, int64_t group, DType scale_dtype = DType::kF16) {
  QuantSpec s;
  s.bits = bits;
  s.scheme = scheme;
  s.group_size = group;
  s.scale_dtype = scale_dtype;
  return s;
}

const Values kValues[] = {
    {"f32", DType::kF32},
    {"f16", DType::kF16},
    {"bf16", DType::kBF16},
    // 4/8-bit with groups of whole windows: the SIMD dequantizer
    {"q4 asym g32", DType::kF32, true, quant_spec(4, QuantScheme::kAsymmetric, 32)},
    {"q4 sym g16 f32 scales", DType::kF32, true, quant_spec(4, QuantScheme::kSymmetric, 16, DType::kF32)},
    {"q8 sym row", DType::kF32, true, quant_spec(8, QuantScheme::kSymmetric, 0)},
    // the reference decoder: groups that split windows, other widths
    {"q4 asym g12", DType::kF32, true, quant_spec(4, QuantScheme::kAsymmetric, 12)},
    {"q3 sym g32", DType::kF32, true, quant_spec(3, QuantScheme::kSymmetric, 32)},
};

Tensor sparse_tensor(int64_t rows, int64_t cols, const std::vector<uint8_t>& keep, int n, int m, const Values& values,
                     uint32_t seed) {
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
  if (values.quant)
    s.values = std::make_shared<Encoding>(
        Encoding{quantize_rtn(values.spec, kept, rows, s.kept_stride, {}, ScaleSearch{}, nullptr)});
  else
    sparse_set_dense_values(s, kept, rows, values.dtype);
  Tensor t{"w", Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{s})};
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  return t;
}

// The kernel against the double-accumulating reference, within f32 accumulation error of the
// kept products (|err| <= 1.01 (cols + 2) u Σ|w x|); matvec equals each matmul row bit for bit.
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
    INFO("token " << t << " of " << n);
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
}

struct Pattern {
  const char* name;
  double density;
  int n, m;
};
// Every kernel path: bitmask windows, CSR, n:m halves (1:2, 2:3, 2:4, 4:5 .. 4:8), n:m field windows
// (1:4, 3:4, 1:8, 2:8, 3:8) and n:m through per-row masks (5:8, 7:8, 5:7, 1:16, 8:16).
const Pattern kPatterns[] = {
    {"bitmask 50%", 0.5, 0, 0}, {"bitmask 30%", 0.7, 0, 0}, {"bitmask 90%", 0.1, 0, 0}, {"csr 97%", 0.03, 0, 0},
    {"1:2", 0, 1, 2},           {"2:3", 0, 2, 3},           {"2:4", 0, 2, 4},           {"4:5", 0, 4, 5},
    {"4:7", 0, 4, 7},           {"4:8", 0, 4, 8},           {"1:4", 0, 1, 4},           {"3:4", 0, 3, 4},
    {"1:8", 0, 1, 8},           {"3:8", 0, 3, 8},           {"5:8", 0, 5, 8},           {"7:8", 0, 7, 8},
    {"5:7", 0, 5, 7},           {"1:16", 0, 1, 16},         {"8:16", 0, 8, 16}};

}  // namespace

TEST_CASE("sparse matvec/matmul match _ref on every target, pattern and value type", "[sparse][kernels]") {
  // Widths: shorter than a window, one window, ragged windows and ragged n:m groups, several blocks.
  const int64_t kCols[] = {16, 37, 172, 1031};
  uint32_t seed = 7;
  const auto targets = kernels::simd_targets();
  REQUIRE(!targets.empty());
  for (int64_t target : targets) {
    kernels::force_simd_target(target);
    INFO("SIMD target " << kernels::simd_target_name(target));
    for (const Pattern& p : kPatterns)
      for (int64_t cols : kCols)
        for (const Values& v : kValues) {
          if (cols < p.m) continue;
          INFO(p.name << " cols " << cols << " values " << v.name);
          const int64_t rows = 19;
          const auto keep = random_keep(rows, cols, p.density, p.n, p.m, seed++);
          const Tensor w = sparse_tensor(rows, cols, keep, p.n, p.m, v, seed++);
          CHECK(kernels::has_fast_linear(w));
          check_against_ref(w, 1, seed++);
          check_against_ref(w, 11, seed++);  // a block of 8 tokens, then 3 alone
        }
  }
  kernels::force_simd_target(0);
}

TEST_CASE("sparse kernels: rows with no kept entries and fully kept rows", "[sparse][kernels]") {
  const int64_t rows = 6, cols = 45;
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  for (int64_t c = 0; c < cols; ++c) keep[2 * cols + c] = 1;  // row 2 dense, rows 0, 1, 3.. empty but 5
  keep[5 * cols + 44] = 1;                                    // a single entry in the ragged tail
  for (const Values& v : kValues) {
    INFO(v.name);
    check_against_ref(sparse_tensor(rows, cols, keep, 0, 0, v, 3), 9, 4);
  }
}

TEST_CASE("sparse kernels give the same bits on 1 and 2 threads", "[sparse][kernels]") {
  const int64_t rows = 301, cols = 1031;
  for (const Pattern& p : kPatterns) {
    INFO(p.name);
    const auto keep = random_keep(rows, cols, p.density, p.n, p.m, 11);
    const Tensor w = sparse_tensor(rows, cols, keep, p.n, p.m, kValues[1], 12);
    const auto x = normal_values(static_cast<size_t>(9 * cols), 13);
    std::vector<float> y1(static_cast<size_t>(9 * rows)), y2(y1.size());
    kernels::set_num_threads(1);
    kernels::matmul(w, x.data(), 9, y1.data());
    kernels::set_num_threads(2);
    kernels::matmul(w, x.data(), 9, y2.data());
    kernels::set_num_threads(0);
    REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("sparse CSR with u32 column indices (rows wider than 65536)", "[sparse][kernels]") {
  const int64_t rows = 3, cols = 70001;
  const auto keep = random_keep(rows, cols, 0.01, 0, 0, 99);
  const Tensor w = sparse_tensor(rows, cols, keep, 0, 0, kValues[0], 100);
  REQUIRE(std::get<SparseEncoding>(w.encoding->node).pattern == SparsePattern::kCsr);
  check_against_ref(w, 2, 101);
}
