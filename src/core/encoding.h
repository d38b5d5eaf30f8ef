// The encoding tree of a tensor (DESIGN.md §2): how its logical [rows, cols] values are stored.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/bytes.h"
#include "core/dtype.h"
#include "core/error.h"

namespace llmc {

// Logical shape: last dim is `cols` (a linear weight is [out_features, in_features], y = W x);
// all leading dims fold into `rows`.
struct Shape {
  std::vector<int64_t> dims;
  int64_t numel() const;
  int64_t cols() const { return dims.empty() ? 1 : dims.back(); }
  int64_t rows() const { return dims.empty() ? 1 : numel() / (cols() == 0 ? 1 : cols()); }
  std::string str() const;  // "[64, 172]"
  bool operator==(const Shape&) const = default;
};

// Dense{dtype}: rows*cols elements, row-major, little-endian.
struct DenseEncoding {
  DType dtype = DType::kF32;
  Bytes data;
};

enum class QuantScheme : uint8_t { kSymmetric = 0, kAsymmetric = 1, kBinary = 2, kTernary = 3 };
const char* quant_scheme_name(QuantScheme scheme);

// Quant{bits, scheme, group size}: each row is split into groups of `group_size` columns (the
// last group of a row may be shorter: ragged tail); one scale (and for asymmetric one min) per group.
// codes: unsigned q in [0, 2^bits), packed LSB-first; every row starts on a byte boundary,
//        row stride = ceil(cols * bits / 8) bytes.
// value: symmetric  (q - 2^(bits-1)) * scale
//        asymmetric q * scale + min
// scales/mins: [rows, groups_per_row] in scale_dtype (f32, f16 or bf16).
// Binary and ternary codes are added by the quantization issue.
struct QuantEncoding {
  int bits = 8;
  QuantScheme scheme = QuantScheme::kSymmetric;
  int64_t group_size = 0;  // 0 = whole row
  DType scale_dtype = DType::kF16;
  Bytes codes;
  Bytes scales;
  Bytes mins;  // asymmetric only
};

// One node of the tree. New encodings (Palette, Sparse, LowRank) are appended to the variant.
struct Encoding {
  std::variant<DenseEncoding, QuantEncoding> node;
};
using EncodingPtr = std::shared_ptr<const Encoding>;

// Number of groups in one row of `cols` columns.
int64_t quant_groups_per_row(const QuantEncoding& q, int64_t cols);
int64_t quant_row_stride(const QuantEncoding& q, int64_t cols);

// Checks every buffer size of the tree against the logical shape (for hostile input).
Result<void> validate_encoding(const Encoding& enc, const Shape& shape);

// Reference decode of rows [row_begin, row_end) into out[(row_end-row_begin) * cols].
void decode_rows_to_f32(const Encoding& enc, const Shape& shape, int64_t row_begin, int64_t row_end, float* out);

// Bytes of all buffers of the tree (codes, scales, mins, ...).
size_t encoded_bytes(const Encoding& enc);

// Human description, e.g. "f32", "q8 sym g4 (scale f32)".
std::string describe_encoding(const Encoding& enc);

// Name of the node kind: "dense", "quant", ...
const char* encoding_kind_name(const Encoding& enc);

}  // namespace llmc
