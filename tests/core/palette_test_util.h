// Random Palette encodings for format and kernel tests (values do not matter there, only coverage).
#pragma once

#include <catch2/catch.hpp>
#include <random>

#include "core/palette.h"

namespace llmc::test {

// f16 codebook entries ~ N(0, 0.05), uniform random indices and (when `outliers`) about 3 % of
// the positions with a random f16 outlier ~ N(0, 0.2).
inline PaletteEncoding random_palette_encoding(int bits, int64_t group_rows, int64_t rows, int64_t cols, bool outliers,
                                               uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t k = palette_entries(bits);
  std::vector<float> codebooks(static_cast<size_t>(palette_codebook_count(group_rows, rows) * k));
  for (float& c : codebooks) c = normal(rng);
  std::vector<uint8_t> index(static_cast<size_t>(rows * cols));
  for (uint8_t& i : index) i = static_cast<uint8_t>(rng() % static_cast<uint32_t>(k));
  PaletteEncoding p = make_palette(bits, group_rows, codebooks, index, rows, cols);
  if (outliers) {
    std::vector<uint64_t> pos;
    std::vector<float> val;
    for (int64_t e = 0; e < rows * cols; ++e)
      if (rng() % 32 == 0) {
        pos.push_back(static_cast<uint64_t>(e));
        val.push_back(4 * normal(rng));
      }
    auto o = make_palette_outliers(pos, val, rows * cols, DType::kF16);
    REQUIRE(o.ok());
    p.outliers = *o;
  }
  return p;
}

}  // namespace llmc::test
