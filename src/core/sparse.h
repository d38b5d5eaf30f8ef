// The Sparse encoding (encoding.h): builders from a keep-mask, validation, reference decode, row access.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/encoding.h"

namespace llmc {

// Bits of one n:m in-group index: ceil(log2 m).
int sparse_nm_index_bits(int m);
// kept_stride of an n:m row of `cols` columns.
int64_t sparse_nm_kept_per_row(int n, int m, int64_t cols);
// Bytes of one row of packed n:m indices.
int64_t sparse_nm_index_stride(int n, int m, int64_t cols);
// Bytes of a bitmask row.
inline int64_t sparse_mask_stride(int64_t cols) { return (cols + 7) / 8; }
// Bytes of one CSR column index (2 when cols <= 65536, else 4).
inline int64_t sparse_csr_index_bytes(int64_t cols) { return cols <= 65536 ? 2 : 4; }

// kInvalidArgument unless 1 <= n < m <= 16 and a row of `cols` columns holds at least one group.
Result<void> check_nm_pattern(int n, int m, int64_t cols);

// Builds the pattern part of a Sparse encoding from keep[rows * cols] (nonzero = kept) and returns
// the kept values of w [rows, cols] as [rows, kept_stride] f32 (padding 0) in `kept`. Unstructured:
// bitmask or CSR, whichever is smaller. n:m: every group must keep exactly n (min(n, tail)) entries,
// else kInvalidArgument. `values` is left empty: set it with sparse_set_values.
SparseEncoding sparse_unstructured_pattern(const uint8_t* keep, const float* w, int64_t rows, int64_t cols,
                                           std::vector<float>& kept);
Result<SparseEncoding> sparse_nm_pattern(const uint8_t* keep, const float* w, int64_t rows, int64_t cols, int n, int m,
                                         std::vector<float>& kept);
// Sets the values to a Dense node of `dtype` holding kept [rows, kept_stride] f32 (rounded to dtype).
void sparse_set_dense_values(SparseEncoding& s, const std::vector<float>& kept, int64_t rows, DType dtype);
// The values' logical shape: [rows, kept_stride].
inline Shape sparse_values_shape(const SparseEncoding& s, int64_t rows) { return Shape{{rows, s.kept_stride}}; }

// Columns of the kept entries of row r, in order; returns their count (<= kept_stride).
// cols_out must hold kept_stride entries.
int64_t sparse_row_columns(const SparseEncoding& s, int64_t cols, int64_t r, int32_t* cols_out);

// Bytes of the pattern (mask / indices / row pointers) and of the values.
size_t sparse_pattern_bytes(const SparseEncoding& s);
size_t sparse_values_bytes(const SparseEncoding& s);
// "2:4", "bitmask", "csr".
std::string sparse_pattern_name(const SparseEncoding& s);

// Used by encoding.cpp's visitors.
Result<void> validate_sparse(const SparseEncoding& s, const Shape& shape);
void decode_sparse_rows(const SparseEncoding& s, const Shape& shape, int64_t r0, int64_t r1, float* out);
std::string describe_sparse(const SparseEncoding& s);

}  // namespace llmc
