// Weight-sharing arithmetic of share.kmeans: weighted 1-D k-means (k-means++ seeding, Lloyd
// iterations on sorted values with prefix sums) and fitting a whole weight matrix into a Palette
// encoding (codebook per tensor / group of rows / row, optional dense-and-sparse outliers).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/encoding.h"
#include "core/error.h"
#include "passes/quant/quant_gptq.h"

namespace llmc {

struct KmeansOptions {
  int64_t k = 16;            // centroids, exactly (duplicates fill up when there are fewer distinct values)
  int64_t iterations = 100;  // Lloyd iterations at most; stops earlier when no assignment changes
  int64_t inits = 4;         // k-means++ seedings; the one with the lowest weighted error is kept
  uint64_t seed = 0;
  bool int_grid = false;  // centroids on the integer grid (core/palette.h) instead of any f16
};

struct KmeansResult {
  std::vector<float> centroids;  // [k] ascending, each exactly representable in f16 (on the grid with int_grid)
  double error = 0;              // Σ w (x - nearest centroid)² with these centroids
  int64_t iterations = 0;        // Lloyd iterations of the kept seeding
};

// Clusters values x[n] weighted by w[n] (>= 0; empty or all zero = uniform) into exactly k
// centroids. x must be finite. Deterministic for (x, w, options) whatever the thread count.
KmeansResult weighted_kmeans_1d(std::span<const float> x, std::span<const float> w, const KmeansOptions& options);

// Index of the nearest of `centroids` (ascending) to v; ties go to the lower index.
uint32_t nearest_centroid(std::span<const float> centroids, float v);

// What fit_palette builds.
struct PaletteSpec {
  int bits = 4;              // index bits 1..8: codebooks of 2^bits entries
  int64_t group_rows = 0;    // rows per codebook (0 = whole tensor, 1 = per row)
  double outliers = 0;       // fraction of each codebook group's weights kept in the sparse part, [0, 1)
  int64_t iterations = 100;  // Lloyd iterations at most
  int64_t inits = 4;         // k-means++ seedings per codebook
  bool int_grid = false;     // codebooks on the integer grid (core/palette.h): the int8-activation kernel
};
// kInvalidArgument for impossible values (bits 0 or 9, negative group_rows, outliers outside [0, 1), ...).
Result<void> validate_palette_spec(const PaletteSpec& spec);
// "p4 rows:16 +0.5% outliers".
std::string describe_palette_spec(const PaletteSpec& spec);
// Parses "tensor" (0), "row" (1), "rows:N" (N >= 1) into group_rows; kInvalidArgument otherwise.
Result<int64_t> parse_palette_granularity(const std::string& text);

struct PaletteFit {
  PaletteEncoding encoding;
  std::vector<float> dequant;  // [rows, cols] decode_rows_to_f32 of `encoding`, bit for bit
  int64_t outliers = 0;        // entries in the sparse part
  double weighted_error = 0;   // Σ sensitivity · (w - dequant)² over the valid entries
};

// Fits w [rows, cols] (row-major): per codebook group, the largest-|w| `outliers` fraction of its
// entries (ties to the lower position) goes to the sparse part as the f16 residual w - codebook
// value; the rest is clustered by weighted k-means; every entry gets the index of its nearest
// centroid — or, with `hessian` (the layer input's GPTQ Hessian, natural column order), the
// index GPTQ's column sweep gives: nearest to the weight updated by the errors of the columns
// before it (inputs that never fire get zero weights first). Entry (r, c) stands for input column columns[r * cols + c]
// (empty: c) of the original weight, whose sensitivity is col_weight[that column] (col_weight empty: uniform); column
// -1 marks padding (of Sparse values), encoded but never clustered nor an outlier. Codebook groups run in parallel on
// `threads` (0 = all); the result does not depend on the thread count. kInvalidArgument for non-finite weights or
// outliers in a tensor of >= 2^32 elements.
Result<PaletteFit> fit_palette(std::span<const float> w, int64_t rows, int64_t cols, std::span<const float> col_weight,
                               std::span<const int32_t> columns, const PaletteSpec& spec, uint64_t seed, int threads,
                               const GptqHessian* hessian = nullptr);

}  // namespace llmc
