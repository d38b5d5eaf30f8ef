// Palette linear kernels (every index width, codebook granularity, ragged shape, with and without
// outliers, under Sparse, every SIMD target, 1 and 2 threads) against the scalar references: the
// encoding's row decoder (matmul_ref) and the codebook lookup per element (matmul_palette_ref).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "core/palette.h"
#include "core/palette_test_util.h"
#include "core/sparse.h"
#include "kernels/cpu/kernels.h"
#include "kernels/simd_targets.h"
#include "test_util.h"

using namespace llmc;

namespace {

constexpr double kU = 1.0 / 16777216.0;  // f32 unit roundoff 2^-24

Tensor random_palette(int bits, int64_t group_rows, int64_t rows, int64_t cols, bool outliers, uint32_t seed,
                      test::TestCodebooks codebooks = test::TestCodebooks::kNormal) {
  return Tensor{"p", Shape{{rows, cols}},
                std::make_shared<const Encoding>(
                    Encoding{test::random_palette_encoding(bits, group_rows, rows, cols, outliers, seed, codebooks)})};
}

std::vector<float> random_x(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& e : v) e = normal(rng);
  return v;
}

// Error bound of the kernel against the double reference. Every weight is an exact f32 (a widened
// f16 entry, or an f16 outlier); the kernel sums ≤ cols lookup products in f32 (vector lanes, a
// reduction of ≤ 16 lanes, the scalar tail), then adds ≤ cols outlier products one by one. Every
// rounding is at most u times a partial sum of B = Σ_c |w_c x_c| + Σ_outliers |v x_c|:
//   |y - y_ref| ≤ 1.01 · (2 · cols + 16) · u · B.
// The row decoder adds codebook value and outlier in f32 first (one more rounding): ≤ 2 u B apart.
double magnitude(const Tensor& w, int64_t r, const float* x) {
  const auto& p = std::get<PaletteEncoding>(w.encoding->node);
  const int64_t cols = w.cols();
  std::vector<float> codebook(static_cast<size_t>(palette_entries(p.bits)));
  palette_codebook_f32(p, palette_codebook_of_row(p, r), codebook.data());
  const uint8_t* row = p.indices.data() + r * palette_row_stride(p.bits, cols);
  double b = 0;
  for (int64_t c = 0; c < cols; ++c)
    b += std::fabs(static_cast<double>(codebook[palette_index_at(row, p.bits, c)]) * x[c]);
  if (p.outliers) {
    const auto& s = std::get<SparseEncoding>(p.outliers->node);
    const PaletteOutlierRange range = palette_outlier_range(s, w.rows(), cols, r, r + 1);
    for (int64_t e = range.begin; e < range.end; ++e)
      b += std::fabs(static_cast<double>(palette_outlier_value(s, e)) *
                     x[palette_outlier_position(s, w.numel(), e) - static_cast<uint64_t>(r * cols)]);
  }
  return b;
}

// The dispatched kernel (matmul, and matvec per token) against both references (f32 activations:
// codebooks off the integer grid, or mode kF32).
void check_case(const Tensor& w, const std::vector<float>& x, int64_t n) {
  const int64_t rows = w.rows(), cols = w.cols();
  REQUIRE(validate_encoding(*w.encoding, w.shape).ok());
  REQUIRE_FALSE(kernels::palette_int8_activations(w));
  std::vector<float> y(static_cast<size_t>(n * rows)), ref(y.size()), pref(y.size());
  kernels::matmul(w, x.data(), n, y.data());
  kernels::matmul_ref(w, x.data(), n, ref.data());
  kernels::matmul_palette_ref(w, x.data(), n, pref.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      const size_t i = static_cast<size_t>(t * rows + r);
      const double b = magnitude(w, r, x.data() + t * cols);
      const double bound = 1.01 * static_cast<double>(2 * cols + 16) * kU * b;
      INFO("token " << t << " row " << r << " got " << y[i] << " palette_ref " << pref[i] << " bound " << bound);
      REQUIRE(std::fabs(static_cast<double>(y[i]) - pref[i]) <= bound);
      REQUIRE(std::fabs(static_cast<double>(ref[i]) - pref[i]) <= 2.02 * kU * b);
    }
  std::vector<float> yv(static_cast<size_t>(rows));
  for (int64_t t = 0; t < n; ++t) {
    kernels::matvec(w, x.data() + t * cols, yv.data());
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
}

}  // namespace

TEST_CASE("Palette kernels match the references for every width, granularity, shape and outliers",
          "[kernels][palette]") {
  struct ShapeCase {
    int64_t rows, cols;
  };
  // Ragged: columns below, at and between the 16/32-column chunks; rows not a multiple of 4.
  const ShapeCase kShapes[] = {{13, 172}, {3, 67}, {5, 18}, {7, 16}, {6, 33}, {2, 5}, {9, 64}};
  uint32_t seed = 10;
  test::for_each_target([&] {
    for (int bits = 1; bits <= 8; ++bits)
      for (int64_t group_rows : {int64_t{0}, int64_t{1}, int64_t{3}})
        for (bool outliers : {false, true})
          for (const ShapeCase& s : kShapes) {
            INFO("bits " << bits << " group_rows " << group_rows << " outliers " << outliers << " shape " << s.rows
                         << "x" << s.cols);
            const Tensor w = random_palette(bits, group_rows, s.rows, s.cols, outliers, seed++);
            check_case(w, random_x(static_cast<size_t>(6 * s.cols), seed++), 6);
            CHECK(kernels::has_fast_linear(w));
          }
  });
}

TEST_CASE("Palette kernels: large activations, long rows, every row/token blocking path", "[kernels][palette]") {
  uint32_t seed = 70;
  test::for_each_target([&] {
    for (int bits : {2, 4, 8})
      for (bool outliers : {false, true}) {
        INFO("bits " << bits << " outliers " << outliers);
        const Tensor w = random_palette(bits, 5, 37, 1031, outliers, seed++);
        check_case(w, random_x(static_cast<size_t>(70 * 1031), seed++, 1e4f), 70);
      }
  });
}

TEST_CASE("Palette kernels give identical results on 1 and 2 threads", "[kernels][palette]") {
  for (int bits : {1, 3, 4, 5, 8}) {
    INFO("bits " << bits);
    test::require_thread_independent(random_palette(bits, 7, 300, 515, true, 3 + bits), random_x(40 * 515, 4), {1, 40});
  }
}

TEST_CASE("Sparse tensors with Palette values run through the sparse kernel", "[kernels][palette][sparse]") {
  const int64_t rows = 9, cols = 50;
  std::mt19937 rng(5);
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  std::vector<float> w(keep.size(), 0.0f), kept;
  for (auto& k : keep) k = rng() % 3 != 0;
  SparseEncoding s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
  const Tensor values = random_palette(3, 2, rows, s.kept_stride, true, 11);
  s.values = values.encoding;
  const Tensor t{"s", Shape{{rows, cols}}, std::make_shared<const Encoding>(Encoding{s})};
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  const auto x = random_x(static_cast<size_t>(3 * cols), 6);
  std::vector<float> y(static_cast<size_t>(3 * rows)), ref(y.size());
  kernels::matmul(t, x.data(), 3, y.data());
  kernels::matmul_ref(t, x.data(), 3, ref.data());
  for (size_t i = 0; i < y.size(); ++i) {
    double b = 0;
    const std::vector<float> dense = t.to_f32();
    for (int64_t c = 0; c < cols; ++c)
      b += std::fabs(static_cast<double>(dense[(i % rows) * cols + c]) * x[(i / rows) * cols + c]);
    REQUIRE(std::fabs(static_cast<double>(y[i]) - ref[i]) <= 1.01 * (2 * cols + 16) * kU * b);
  }
}

// ---- Codebooks on the integer grid: int8 activations through the Quant integer kernel ----

namespace {

using QA = kernels::QuantActivations;

// Grid exponent of row r's codebook (kPaletteOffGrid when off the grid).
int row_grid_exponent(const Tensor& w, int64_t r) {
  const auto& p = std::get<PaletteEncoding>(w.encoding->node);
  std::vector<float> codebook(static_cast<size_t>(palette_entries(p.bits)));
  palette_codebook_f32(p, palette_codebook_of_row(p, r), codebook.data());
  return palette_grid_exponent(codebook.data(), palette_entries(p.bits));
}

// Bounds of a grid row, from the definition in kernels/cpu/palette_i8.h and quant_i8.h: blocks of 32
// columns, dx_b = max|x| / 127 and |x_c - dx_b·xq_c| <= dx_b · (step + 381u) (step 1/2, or 1/256 with
// two int8 parts). The kernel's block sums J_b = Σ v_c·xq_c are exact; per block it converts J_b to f32,
// multiplies by 2^k·dx_b and accumulates (<= 3 roundings per block, a reduction of 8 lanes), then adds
// the outliers one by one. Each rounding is at most u times a partial sum of
// B = Σ_c |w_c|·(|x_c| + dx_b) + Σ_outliers |o·x_c|.
struct GridBounds {
  double rounding = 0;    // kernel vs matmul_palette_i8_ref
  double activation = 0;  // matmul_palette_i8_ref vs matmul_palette_ref (f32 activations)
};
GridBounds grid_bounds(const Tensor& w, int64_t r, const float* x) {
  const auto& p = std::get<PaletteEncoding>(w.encoding->node);
  const int64_t cols = w.cols();
  std::vector<float> codebook(static_cast<size_t>(palette_entries(p.bits)));
  palette_codebook_f32(p, palette_codebook_of_row(p, r), codebook.data());
  const uint8_t* row = p.indices.data() + r * palette_row_stride(p.bits, cols);
  const double step = kernels::quant_int8_two_parts(kernels::quant_activations(), p.bits) ? 1.0 / 256 : 0.5;
  double b = 0, act = 0;
  for (int64_t b0 = 0; b0 < cols; b0 += 32) {
    const int64_t b1 = std::min(cols, b0 + 32);
    double amax = 0;
    for (int64_t c = b0; c < b1; ++c) amax = std::max(amax, std::fabs(double(x[c])));
    const double dx = amax / 127.0 * (1 + kU);
    for (int64_t c = b0; c < b1; ++c) {
      const double wc = std::fabs(double(codebook[palette_index_at(row, p.bits, c)]));
      b += wc * (std::fabs(double(x[c])) + dx);
      act += wc * dx * (step + 381 * kU);
    }
  }
  int64_t n_out = 0;
  if (p.outliers) {
    const auto& s = std::get<SparseEncoding>(p.outliers->node);
    const PaletteOutlierRange range = palette_outlier_range(s, w.rows(), cols, r, r + 1);
    n_out = range.end - range.begin;
    for (int64_t e = range.begin; e < range.end; ++e)
      b += std::fabs(static_cast<double>(palette_outlier_value(s, e)) *
                     x[palette_outlier_position(s, w.numel(), e) - static_cast<uint64_t>(r * cols)]);
  }
  const double blocks = static_cast<double>((cols + 31) / 32);
  GridBounds out;
  out.rounding = 1.01 * (3 * blocks + 16 + static_cast<double>(n_out)) * kU * b;
  out.activation = act + 4 * kU * b;
  return out;
}

// The dispatched kernel on a grid weight: rows on the grid within the bounds of the int8 model,
// rows off it bit for bit the f32 kernel (mode kF32); matvec equals matmul rows. Returns the rows off the grid.
int64_t check_grid_case(const Tensor& w, const std::vector<float>& x, int64_t n) {
  const int64_t rows = w.rows(), cols = w.cols();
  REQUIRE(validate_encoding(*w.encoding, w.shape).ok());
  REQUIRE(kernels::palette_int8_activations(w));
  std::vector<float> y(static_cast<size_t>(n * rows)), iref(y.size()), pref(y.size()), yf(y.size());
  kernels::matmul(w, x.data(), n, y.data());
  kernels::matmul_palette_i8_ref(w, x.data(), n, iref.data());
  kernels::matmul_palette_ref(w, x.data(), n, pref.data());
  {
    kernels::ScopedQuantActivations f32(QA::kF32);
    REQUIRE_FALSE(kernels::palette_int8_activations(w));
    kernels::matmul(w, x.data(), n, yf.data());
  }
  int64_t off = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const bool grid = row_grid_exponent(w, r) != kPaletteOffGrid;
    off += !grid;
    for (int64_t t = 0; t < n; ++t) {
      const size_t i = static_cast<size_t>(t * rows + r);
      INFO("token " << t << " row " << r << " grid " << grid << " got " << y[i] << " i8_ref " << iref[i]
                    << " palette_ref " << pref[i]);
      if (!grid) {
        REQUIRE(std::memcmp(&y[i], &yf[i], sizeof(float)) == 0);
        continue;
      }
      const GridBounds bnd = grid_bounds(w, r, x.data() + t * cols);
      REQUIRE(std::fabs(static_cast<double>(y[i]) - iref[i]) <= bnd.rounding);
      REQUIRE(std::fabs(static_cast<double>(iref[i]) - pref[i]) <= bnd.activation);
    }
  }
  std::vector<float> yv(static_cast<size_t>(rows));
  for (int64_t t = 0; t < n; ++t) {
    kernels::matvec(w, x.data() + t * cols, yv.data());
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
  return off;
}

}  // namespace

TEST_CASE("Palette kernels, integer-grid codebooks: int8 activations within the bounds of their scalar model",
          "[kernels][palette]") {
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8);
  kernels::ScopedQuantActivations scoped(mode);
  INFO("mode " << static_cast<int>(mode));
  struct ShapeCase {
    int64_t rows, cols;
  };
  // 192 columns: one step of two pairs and one single pair in the 512-bit kernels.
  const ShapeCase kShapes[] = {{13, 172}, {3, 67}, {5, 18}, {7, 16}, {6, 33}, {2, 5}, {9, 64}, {6, 192}, {5, 1031}};
  uint32_t seed = 200;
  int64_t off_rows = 0;
  test::for_each_target([&] {
    for (int bits = 1; bits <= 4; ++bits)
      for (int64_t group_rows : {int64_t{0}, int64_t{1}, int64_t{3}})
        for (auto kind : {test::TestCodebooks::kGrid, test::TestCodebooks::kGridMixed})
          for (bool outliers : {false, true})
            for (const ShapeCase& s : kShapes) {
              INFO("bits " << bits << " group_rows " << group_rows << " mixed "
                           << (kind == test::TestCodebooks::kGridMixed) << " outliers " << outliers << " shape "
                           << s.rows << "x" << s.cols);
              const Tensor w = random_palette(bits, group_rows, s.rows, s.cols, outliers, seed++, kind);
              const float scale = s.cols == 1031 ? 1e4f : 1.0f;
              off_rows += check_grid_case(w, random_x(static_cast<size_t>(6 * s.cols), seed++, scale), 6);
            }
  });
  CHECK(off_rows > 0);  // the mixed cases reached the f32 rows
}

TEST_CASE("Palette kernels: which weights take int8 activations", "[kernels][palette]") {
  const Tensor grid4 = random_palette(4, 2, 8, 40, false, 1, test::TestCodebooks::kGrid);
  CHECK(kernels::palette_int8_activations(grid4));
  CHECK(kernels::palette_int8_activations(random_palette(1, 0, 8, 40, true, 2, test::TestCodebooks::kGrid)));
  CHECK_FALSE(kernels::palette_int8_activations(random_palette(5, 0, 8, 40, false, 3, test::TestCodebooks::kGrid)));
  CHECK_FALSE(kernels::palette_int8_activations(random_palette(4, 0, 8, 40, false, 4)));
  for (QA mode : {QA::kF32, QA::kF32Decoded}) {
    kernels::ScopedQuantActivations scoped(mode);
    CHECK_FALSE(kernels::palette_int8_activations(grid4));
  }
}

TEST_CASE("Palette kernels, integer-grid codebooks: identical results on 1 and 2 threads", "[kernels][palette]") {
  for (int bits : {2, 4}) {
    INFO("bits " << bits);
    const Tensor w = random_palette(bits, 7, 300, 515, true, 30 + bits, test::TestCodebooks::kGridMixed);
    REQUIRE(kernels::palette_int8_activations(w));
    test::require_thread_independent(w, random_x(40 * 515, 5), {1, 40});
  }
}
