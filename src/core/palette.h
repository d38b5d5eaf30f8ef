// The Palette encoding (encoding.h): sizes, index access, builders, outlier access, validation and reference decode.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/encoding.h"

namespace llmc {

// Entries of every codebook: exactly 2^bits.
inline int64_t palette_entries(int bits) { return int64_t{1} << bits; }
// Bytes of one packed index row: ceil(cols * bits / 8).
inline int64_t palette_row_stride(int bits, int64_t cols) { return (cols * bits + 7) / 8; }
// Codebooks of a tensor with `rows` rows: 1 for group_rows 0 (whole tensor), else ceil(rows / group_rows).
int64_t palette_codebook_count(int64_t group_rows, int64_t rows);
// The codebook of row r.
inline int64_t palette_codebook_of_row(const PaletteEncoding& p, int64_t r) {
  return p.group_rows > 0 ? r / p.group_rows : 0;
}

// Index of column c in a packed row (LSB-first; an index may straddle a byte boundary).
inline uint32_t palette_index_at(const uint8_t* row, int bits, int64_t c) {
  const int64_t bit = c * bits;
  uint32_t word = row[bit >> 3];
  if ((bit & 7) + bits > 8) word |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  return (word >> (bit & 7)) & ((1u << bits) - 1);
}

// Codebook g as f32 (f16 widened exactly): out[2^bits].
void palette_codebook_f32(const PaletteEncoding& p, int64_t g, float* out);

// ---- The integer grid: codebooks the int8-activation kernel runs exactly ----
// A codebook is on the grid when every entry is v · 2^k for integers v in [-128, 127] and one k in
// [kPaletteGridMinExp, kPaletteGridMaxExp] (every such value is an exact f16). The kernel then looks up
// v (int8) and runs the Quant int8 dot products with scale 2^k (docs/weight_sharing.md, "Kernels").
constexpr int32_t kPaletteGridMin = -128;
constexpr int32_t kPaletteGridMax = 127;
constexpr int kPaletteGridMinExp = -24;  // 2^-24: the f16 subnormal step, so any f16 is a multiple
constexpr int kPaletteGridMaxExp = 8;    // 128 · 2^8 = 32768 <= f16 max
// The exponent k of entries[n] when they are on the grid (the smallest k whose range holds them), or
// kPaletteOffGrid.
constexpr int kPaletteOffGrid = 1000;
int palette_grid_exponent(const float* entries, int64_t n);
// Rounds values to the grid of the smallest k whose range [-128 · 2^k, 127 · 2^k] holds them
// (the finest grid; order kept, values may become equal). Returns false, leaving v unchanged, when
// no k <= kPaletteGridMaxExp holds them.
bool palette_snap_to_grid(std::vector<double>& v);

// Builds a Palette of a [rows, cols] tensor: codebooks [count, 2^bits] f32 (rounded to f16 here:
// pass values that are f16-exact so that decode equals them), one index per weight in
// index[rows * cols] (each < 2^bits). No outliers.
PaletteEncoding make_palette(int bits, int64_t group_rows, const std::vector<float>& codebooks,
                             const std::vector<uint8_t>& index, int64_t rows, int64_t cols);

// ---- Outliers: a csr Sparse of shape [1, numel] whose entries are added to the codebook values ----

// The outliers' logical shape for a tensor of `shape`.
inline Shape palette_outlier_shape(const Shape& shape) { return Shape{{1, shape.numel()}}; }
// Builds the outlier node: flat positions (r * cols + c, strictly increasing, < numel < 2^32) and
// their values, stored as Dense `dtype`. kInvalidArgument when the tensor is too large (>= 2^32
// elements) or positions are not increasing and in range.
Result<EncodingPtr> make_palette_outliers(const std::vector<uint64_t>& positions, const std::vector<float>& values,
                                          int64_t numel, DType dtype);
// Entries [begin, end) of the outliers that lie in rows [r0, r1) of a [rows, cols] tensor.
struct PaletteOutlierRange {
  int64_t begin = 0;
  int64_t end = 0;
};
PaletteOutlierRange palette_outlier_range(const SparseEncoding& outliers, int64_t rows, int64_t cols, int64_t r0,
                                          int64_t r1);
// Flat position (r * cols + c) of outlier entry e; `numel` is the parent tensor's element count.
uint64_t palette_outlier_position(const SparseEncoding& outliers, int64_t numel, int64_t e);
// Value of outlier entry e as f32.
float palette_outlier_value(const SparseEncoding& outliers, int64_t e);
// Entries of the outliers (0 when absent).
int64_t palette_outlier_count(const PaletteEncoding& p);

// Bytes of the codebooks, of the indices and of the outliers (pattern + values).
size_t palette_codebook_bytes(const PaletteEncoding& p);
size_t palette_outlier_bytes(const PaletteEncoding& p);
// "tensor", "rows:16", "row".
std::string palette_granularity_name(const PaletteEncoding& p);

// Used by encoding.cpp's visitors.
Result<void> validate_palette(const PaletteEncoding& p, const Shape& shape);
void decode_palette_rows(const PaletteEncoding& p, const Shape& shape, int64_t r0, int64_t r1, float* out);
size_t palette_bytes(const PaletteEncoding& p);
std::string describe_palette(const PaletteEncoding& p);

}  // namespace llmc
