// The Palette encoding: index packing, decode against hand-computed values for every width and
// codebook granularity, outliers, size accounting, and validation of hostile trees.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/palette.h"
#include "core/sparse.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace llmc;

namespace {

// A random Palette [rows, cols]: f16-exact codebook entries, random indices; `index` and `codebooks`
// receive what was stored so the test can compute every value itself.
PaletteEncoding random_palette(int bits, int64_t group_rows, int64_t rows, int64_t cols, uint32_t seed,
                               std::vector<uint8_t>& index, std::vector<float>& codebooks) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t k = palette_entries(bits);
  codebooks.resize(static_cast<size_t>(palette_codebook_count(group_rows, rows) * k));
  for (float& c : codebooks) c = f16_to_f32(f32_to_f16(normal(rng)));
  index.resize(static_cast<size_t>(rows * cols));
  for (uint8_t& i : index) i = static_cast<uint8_t>(rng() % static_cast<uint32_t>(k));
  return make_palette(bits, group_rows, codebooks, index, rows, cols);
}

Tensor tensor_of(PaletteEncoding p, int64_t rows, int64_t cols) {
  return Tensor{"w", Shape{{rows, cols}}, std::make_shared<const Encoding>(Encoding{std::move(p)})};
}

}  // namespace

TEST_CASE("Palette indices are packed LSB-first with rows on byte boundaries", "[palette]") {
  // 3-bit indices 1..5 of a 5-column row, from bit 0: 001 010 011 100 101 = bytes 0b11010001, 0b01011000.
  const std::vector<uint8_t> index = {1, 2, 3, 4, 5, 7, 0, 6, 5, 4};
  const std::vector<float> codebook = {0, 1, 2, 3, 4, 5, 6, 7};
  const PaletteEncoding p = make_palette(3, 0, codebook, index, 2, 5);
  REQUIRE(p.indices.size() == 4);  // ceil(15 / 8) = 2 bytes per row
  CHECK(p.indices.data()[0] == 0b11010001);
  CHECK(p.indices.data()[1] == 0b01011000);
  // Row 1 (7 0 6 5 4) starts on its own byte: 111 000 110 101 100.
  CHECK(p.indices.data()[2] == 0b10000111);
  CHECK(p.indices.data()[3] == 0b01001011);
  const Tensor t = tensor_of(p, 2, 5);
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  const std::vector<float> want = {1, 2, 3, 4, 5, 7, 0, 6, 5, 4};
  CHECK(t.to_f32() == want);
}

TEST_CASE("Palette decodes to codebook[group][index] for every width and granularity", "[palette]") {
  struct ShapeCase {
    int64_t rows, cols;
  };
  uint32_t seed = 1;
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t group_rows : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{64}})
      for (const ShapeCase s : {ShapeCase{7, 13}, ShapeCase{5, 172}, ShapeCase{1, 1}, ShapeCase{0, 9}}) {
        INFO("bits " << bits << " group_rows " << group_rows << " shape " << s.rows << "x" << s.cols);
        std::vector<uint8_t> index;
        std::vector<float> codebooks;
        const Tensor t =
            tensor_of(random_palette(bits, group_rows, s.rows, s.cols, seed++, index, codebooks), s.rows, s.cols);
        REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
        const auto& p = std::get<PaletteEncoding>(t.encoding->node);
        const int64_t k = int64_t{1} << bits;
        const int64_t groups = group_rows == 0 ? 1 : (s.rows + group_rows - 1) / group_rows;
        CHECK(p.codebooks.size() == static_cast<size_t>(groups * k * 2));
        CHECK(t.encoded_bytes() == static_cast<size_t>(groups * k * 2 + s.rows * ((s.cols * bits + 7) / 8)));
        const std::vector<float> got = t.to_f32();
        for (int64_t r = 0; r < s.rows; ++r)
          for (int64_t c = 0; c < s.cols; ++c) {
            const int64_t g = group_rows == 0 ? 0 : r / group_rows;
            REQUIRE(got[r * s.cols + c] == codebooks[g * k + index[r * s.cols + c]]);
          }
        // A row range decodes the same rows.
        if (s.rows >= 3) {
          std::vector<float> part(static_cast<size_t>(2 * s.cols));
          t.rows_to_f32(1, 3, part.data());
          CHECK(std::equal(part.begin(), part.end(), got.begin() + s.cols));
        }
      }
}

TEST_CASE("Palette outliers are added at their flat positions", "[palette]") {
  std::vector<uint8_t> index;
  std::vector<float> codebooks;
  PaletteEncoding p = random_palette(2, 2, 5, 11, 7, index, codebooks);
  const std::vector<uint64_t> positions = {0, 12, 13, 54};  // (0,0) (1,1) (1,2) (4,10)
  const std::vector<float> values = {0.5f, -0.25f, 1.0f, 2.0f};
  auto outliers = make_palette_outliers(positions, values, 55, DType::kF16);
  REQUIRE(outliers.ok());
  p.outliers = *outliers;
  const Tensor t = tensor_of(p, 5, 11);
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  const std::vector<float> got = t.to_f32();
  for (int64_t e = 0; e < 55; ++e) {
    float want = codebooks[(e / 11 / 2) * 4 + index[e]];
    for (size_t i = 0; i < positions.size(); ++i)
      if (positions[i] == static_cast<uint64_t>(e)) want += values[i];
    REQUIRE(got[e] == want);
  }
  const auto& s = std::get<SparseEncoding>(p.outliers->node);
  const PaletteOutlierRange rows1to3 = palette_outlier_range(s, 5, 11, 1, 4);
  CHECK(rows1to3.begin == 1);
  CHECK(rows1to3.end == 3);
  CHECK(palette_outlier_count(p) == 4);
  // csr of [1, 55]: row_ptr 2 x u32, u16 positions, f16 values.
  CHECK(palette_outlier_bytes(p) == 8 + 4 * 2 + 4 * 2);
  CHECK(t.encoded_bytes() == p.codebooks.size() + p.indices.size() + palette_outlier_bytes(p));
  CHECK(test::visited_buffer_bytes(*t.encoding) == t.encoded_bytes());  // for_each_buffer sees every buffer
  CHECK(describe_encoding(*t.encoding) == "p2 rows:2 +outliers f16");
  CHECK(std::string(encoding_kind_name(*t.encoding)) == "palette");
  // Positions must increase and fit the tensor.
  CHECK_FALSE(make_palette_outliers({3, 3}, {1, 1}, 55, DType::kF16).ok());
  CHECK_FALSE(make_palette_outliers({55}, {1}, 55, DType::kF16).ok());
}

TEST_CASE("Palette as the values of a Sparse tensor (pruned then shared)", "[palette][sparse]") {
  // 3x8 with 4 kept per row (2:4); the kept values are a 1-bit palette [3, 4].
  std::vector<uint8_t> keep(24, 0);
  std::vector<float> w(24);
  for (int64_t i = 0; i < 24; ++i) {
    keep[i] = (i % 4) < 2;
    w[i] = static_cast<float>(i);
  }
  std::vector<float> kept;
  auto s = sparse_nm_pattern(keep.data(), w.data(), 3, 8, 2, 4, kept);
  REQUIRE(s.ok());
  const std::vector<uint8_t> index = {0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 1};
  s->values = std::make_shared<const Encoding>(Encoding{make_palette(1, 1, {-1, 1, -2, 2, -3, 3}, index, 3, 4)});
  const Tensor t{"w", Shape{{3, 8}}, std::make_shared<const Encoding>(Encoding{*s})};
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  const std::vector<float> want = {-1, 1, 0, 0, 1, -1, 0, 0, 2, 2, 0, 0, -2, -2, 0, 0, -3, 3, 0, 0, -3, 3, 0, 0};
  CHECK(t.to_f32() == want);
  CHECK(describe_encoding(*t.encoding) == "2:4 of p1 row");
}

TEST_CASE("Palette validation rejects impossible trees", "[palette]") {
  std::vector<uint8_t> index;
  std::vector<float> codebooks;
  const PaletteEncoding good = random_palette(4, 2, 6, 10, 3, index, codebooks);
  const Shape shape{{6, 10}};
  auto check_bad = [&](const PaletteEncoding& p, const char* fragment) {
    auto v = validate_encoding(Encoding{p}, shape);
    INFO(fragment);
    REQUIRE_FALSE(v.ok());
    INFO(v.error().message);
    CHECK(v.error().message.find(fragment) != std::string::npos);
  };
  REQUIRE(validate_encoding(Encoding{good}, shape).ok());
  PaletteEncoding p = good;
  p.bits = 0;
  check_bad(p, "index bits");
  p.bits = 9;
  check_bad(p, "index bits");
  p = good;
  p.group_rows = -1;
  check_bad(p, "negative");
  p = good;
  p.group_rows = 1;  // 6 codebooks needed, 3 stored
  check_bad(p, "codebooks");
  p = good;
  p.indices = p.indices.slice(0, p.indices.size() - 1);
  check_bad(p, "indices");
  p = good;
  p.outliers = std::make_shared<const Encoding>(
      Encoding{DenseEncoding{DType::kF32, Bytes::from_vector(std::vector<float>(60))}});
  check_bad(p, "sparse node");
  // A bitmask pattern, Quant values, a wrong logical shape: refused.
  std::vector<uint8_t> keep(60, 0);
  keep[5] = 1;
  std::vector<float> vals(60, 1.0f), kept;
  SparseEncoding mask = sparse_unstructured_pattern(keep.data(), vals.data(), 1, 60, kept);
  sparse_set_dense_values(mask, kept, 1, DType::kF16);
  if (mask.pattern == SparsePattern::kBitmask) {
    p = good;
    p.outliers = std::make_shared<const Encoding>(Encoding{mask});
    check_bad(p, "csr");
  }
  auto outliers = make_palette_outliers({5}, {1.0f}, 60, DType::kF16);
  REQUIRE(outliers.ok());
  SparseEncoding quant_values = std::get<SparseEncoding>((*outliers)->node);
  QuantEncoding q;
  q.bits = 8;
  q.codes = Bytes::from_vector(std::vector<uint8_t>{1});
  q.scales = Bytes::from_vector(std::vector<uint16_t>{f32_to_f16(1.0f)});
  quant_values.values = std::make_shared<const Encoding>(Encoding{q});
  p = good;
  p.outliers = std::make_shared<const Encoding>(Encoding{quant_values});
  check_bad(p, "dense");
  // Outliers of a [1, 70000] tensor (u32 positions) on a 60-element one (u16 positions).
  auto too_long = make_palette_outliers({5}, {1.0f}, 70000, DType::kF16);
  REQUIRE(too_long.ok());
  p = good;
  p.outliers = *too_long;
  check_bad(p, "outliers");
}

TEST_CASE("Palette integer grid: exponent of on-grid codebooks, off-grid ones refused, snapping", "[palette]") {
  // v · 2^k with v in -128..127: the smallest k whose range [-128, 127] · 2^k holds the entries.
  const float a[] = {-64 * 0x1p-7f, 63 * 0x1p-7f, 0.0f, 5 * 0x1p-7f};  // -0.5 = -128 · 2^-8
  CHECK(palette_grid_exponent(a, 4) == -8);
  const float half[] = {0.5f};  // 127 · 2^-8 < 0.5 <= 127 · 2^-7, and 0.5 = 64 · 2^-7
  CHECK(palette_grid_exponent(half, 1) == -7);
  const float ends[] = {-128.0f, 127.0f};
  CHECK(palette_grid_exponent(ends, 2) == 0);
  const float big[] = {128.0f};  // > 127 · 2^0: k = 1, v = 64
  CHECK(palette_grid_exponent(big, 1) == 1);
  const float zeros[] = {0.0f, 0.0f};
  CHECK(palette_grid_exponent(zeros, 2) == kPaletteGridMinExp);
  const float fraction[] = {1.0f, 1.0f + 0x1p-10f};  // k = -6: 64.06 is not an integer
  CHECK(palette_grid_exponent(fraction, 2) == kPaletteOffGrid);
  const float huge[] = {65504.0f};  // would need 2^10 > 2^kPaletteGridMaxExp
  CHECK(palette_grid_exponent(huge, 1) == kPaletteOffGrid);
  const float nan[] = {0.0f, NAN};
  CHECK(palette_grid_exponent(nan, 2) == kPaletteOffGrid);

  // Snapping: k from the range (-0.7 >= -128 · 2^-7, not 2^-8), then each value to the nearest
  // multiple of 2^-7: -89.6, 1.28, 38.4.
  std::vector<double> v = {-0.7, 0.01, 0.3};
  REQUIRE(palette_snap_to_grid(v));
  CHECK(v == std::vector<double>{-90 * 0x1p-7, 1 * 0x1p-7, 38 * 0x1p-7});
  const std::vector<float> vf(v.begin(), v.end());
  CHECK(palette_grid_exponent(vf.data(), 3) == -7);
  for (float f : vf) CHECK(f16_to_f32(f32_to_f16(f)) == f);  // grid values are exact f16
  std::vector<double> too_large = {1e5, 2.0};
  CHECK_FALSE(palette_snap_to_grid(too_large));
  CHECK(too_large == std::vector<double>{1e5, 2.0});
}
