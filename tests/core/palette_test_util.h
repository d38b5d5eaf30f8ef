// Random Palette encodings for format and kernel tests (values do not matter there, only coverage).
#pragma once

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "core/palette.h"

namespace llmc::test {

// Codebook values of random_palette_encoding.
enum class TestCodebooks {
  kNormal,     // f16 entries ~ N(0, 0.05) (off the integer grid, but for a freak draw)
  kGrid,       // every codebook on the integer grid: v · 2^e, v uniform in -128..127, e in -10..-6
  kGridMixed,  // codebook 0 and two of every three others on the grid; the rest one entry off it
};

// Codebooks per `codebooks`, uniform random indices and (when `outliers`) about 3 % of the positions
// with a random f16 outlier ~ N(0, 0.2).
inline PaletteEncoding random_palette_encoding(int bits, int64_t group_rows, int64_t rows, int64_t cols, bool outliers,
                                               uint32_t seed, TestCodebooks codebook_kind = TestCodebooks::kNormal) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t k = palette_entries(bits);
  std::vector<float> codebooks(static_cast<size_t>(palette_codebook_count(group_rows, rows) * k));
  if (codebook_kind == TestCodebooks::kNormal)
    for (float& c : codebooks) c = normal(rng);
  else
    for (size_t g = 0; g < codebooks.size() / static_cast<size_t>(k); ++g) {
      const int e = -10 + static_cast<int>(rng() % 5);
      for (int64_t i = 0; i < k; ++i)
        codebooks[g * k + i] = std::ldexp(static_cast<float>(static_cast<int>(rng() % 256) - 128), e);
      if (codebook_kind == TestCodebooks::kGridMixed && g % 3 == 2)
        codebooks[g * k] += std::ldexp(1.0f, e - 3);  // f16-exact, not a multiple of 2^e
    }
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
