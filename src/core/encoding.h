// The encoding tree of a tensor (DESIGN.md §2): how its logical [rows, cols] values are stored.
#pragma once

#include <cstdint>
#include <functional>
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

// How codes are packed in a row.
enum class QuantPacking : uint8_t {
  kBits = 0,    // `bits` bits per code, LSB-first; row stride ceil(cols * bits / 8) bytes
  kTrits5 = 1,  // ternary only: 5 codes per byte, code i of a byte = (byte / 3^i) % 3; stride ceil(cols / 5)
};

// Quant{bits, scheme, group size}: each row is split into groups of `group_size` columns (the
// last group of a row may be shorter: ragged tail); one scale (and optionally one min) per group.
// Every row starts on a byte boundary. Value of code q in a group with (scale, min):
//   symmetric  (bits 2..8) q in [0, 2^bits):  (q - 2^(bits-1)) * scale          no mins
//   asymmetric (bits 2..8) q in [0, 2^bits):  q * scale + min                   mins required
//   binary     (bits 1)    q in {0, 1}:       (2q - 1) * scale [+ min]          mins optional: with
//                                             them the two levels min ± scale are free ("two-level")
//   ternary    (bits 2)    q in {0, 1, 2}:    (q - 1) * scale                   no mins; q = 3 invalid
// quant_value() below is the one formula; decoders, kernels' _ref and passes all use it.
// scales/mins: [rows, groups_per_row] in scale_dtype: f32, f16 or bf16 — or u8 ("double
// quantization"): then every `scale_block` consecutive entries of the flattened array share one
// f32 (step, base) pair, entry = u8 * step + base; the pairs are [ceil(n / scale_block), 2] f32 in
// scale_meta (for scales) and min_meta (for mins).
struct QuantEncoding {
  int bits = 8;
  QuantScheme scheme = QuantScheme::kSymmetric;
  int64_t group_size = 0;  // 0 = whole row
  DType scale_dtype = DType::kF16;
  Bytes codes;
  Bytes scales;
  Bytes mins;  // empty when the scheme has none
  QuantPacking packing = QuantPacking::kBits;
  int64_t scale_block = 0;  // u8 scales only: entries per (step, base) pair
  Bytes scale_meta;
  Bytes min_meta;
};

inline float quant_value(QuantScheme scheme, int bits, uint32_t q, float scale, float min) {
  switch (scheme) {
    case QuantScheme::kSymmetric:
      return static_cast<float>(static_cast<int32_t>(q) - (int32_t{1} << (bits - 1))) * scale;
    case QuantScheme::kAsymmetric: return static_cast<float>(q) * scale + min;
    case QuantScheme::kBinary: return static_cast<float>(2 * static_cast<int32_t>(q) - 1) * scale + min;
    case QuantScheme::kTernary: return static_cast<float>(static_cast<int32_t>(q) - 1) * scale;
  }
  return 0.0f;
}

struct Encoding;
using EncodingPtr = std::shared_ptr<const Encoding>;

// Which entries of a Sparse tensor are kept (core/sparse.h has the builders and helpers).
enum class SparsePattern : uint8_t { kBitmask = 0, kCsr = 1, kNM = 2 };

// Sparse{pattern, values}: a [rows, cols] tensor of which only the kept entries are stored. The
// kept values are the nested encoding `values` of logical shape [rows, kept_stride] (Dense,
// Quant or Palette, never Sparse): row r's k-th kept entry in column order is values[r, k]. Keeping rows of
// values lets kernels and Quant groups work row by row; slots past a row's kept count are padding
// (only bitmask/CSR rows with fewer than kept_stride entries have them; counted in the bytes).
//   bitmask: index = mask [rows, ceil(cols / 8)] bytes, bit (c % 8) of byte c / 8 set = column c
//            kept; kept_stride = the largest kept count of a row.
//   csr:     row_ptr = [rows + 1] u32, row r's entries are [row_ptr[r], row_ptr[r+1]), row_ptr[0] = 0,
//            row_ptr[rows] = nnz; index = column of each entry, [nnz] u16 (u32 when cols > 65536),
//            increasing within a row. kept_stride as bitmask. Chosen when smaller than a bitmask.
//   n:m:     each row splits into groups of m columns (1 <= n < m <= 16; the last group may be
//            shorter, width t, and keeps min(n, t)); every group keeps exactly n entries;
//            kept_stride = n * (cols / m) + min(n, cols % m); index = per row, the column inside
//            its group of every kept entry in ceil(log2 m) bits, LSB-first, row stride
//            ceil(kept_stride * index_bits / 8) bytes, increasing within a group.
// nnz: kept entries of the whole tensor (padding excluded).
struct SparseEncoding {
  SparsePattern pattern = SparsePattern::kBitmask;
  int n = 0;  // n:m only
  int m = 0;
  int64_t kept_stride = 0;
  int64_t nnz = 0;
  Bytes index;
  Bytes row_ptr;  // csr only
  EncodingPtr values;
};

// LowRank{U, V}: W [rows, cols] = U [rows, rank] · V [rank, cols] (core/lowrank.h has the helpers;
// docs/lowrank.md the design). U and V are leaf encodings (Dense or Quant), each of its own logical
// shape; rank >= 1. Kernels compute W x as U (V x), never rebuilding W.
struct LowRankEncoding {
  int64_t rank = 0;
  EncodingPtr u;  // [rows, rank]
  EncodingPtr v;  // [rank, cols]
};

// Tucker{dims, row_modes, ranks, core, factors}: the [rows, cols] matrix viewed as a K-way tensor
// T of dims n_1..n_K (row-major; 2 <= K <= 8), whose first `row_modes` = j modes make the row index
// (n_1 ⋯ n_j = rows) and the others the column index (n_{j+1} ⋯ n_K = cols):
//   T[i_1..i_K] = Σ_{a_1..a_K} G[a_1..a_K] Π_{k<=j} A_k[i_k, a_k] Π_{k>j} B_k[a_k, i_k]
// i.e. W = (A_1 ⊗ … ⊗ A_j) · G · (B_{j+1} ⊗ … ⊗ B_K). The core G is stored as the matrix
// [r_1 ⋯ r_j, r_{j+1} ⋯ r_K]; factors[k] is A_k [n_k, r_k] for a row mode and B_k [r_k, n_k] for a
// column mode (so K = 2 with G = I is LowRank{A_1, B_2}). Core and factors are leaf encodings.
struct TuckerEncoding {
  std::vector<int64_t> dims;   // n_1..n_K
  int64_t row_modes = 1;       // j, 1 <= j < K
  std::vector<int64_t> ranks;  // r_1..r_K, 1 <= r_k
  EncodingPtr core;
  std::vector<EncodingPtr> factors;  // K entries
};

// Palette{bits, group_rows, codebooks, indices[, outliers]} (weight sharing): every value is an entry
// of a codebook of exactly 2^bits (bits 1..8) f16 values, chosen by a bits-bit index; core/palette.h
// has the helpers.
//   codebooks: one per group of `group_rows` consecutive rows (0 = one for the whole tensor, 1 = one
//              per row; the last group may be shorter): [codebook count, 2^bits] f16.
//   indices:   [rows, ceil(cols * bits / 8)] bytes, LSB-first like Quant codes, each row on a byte
//              boundary.
//   outliers:  optional dense-and-sparse part (SqueezeLLM): a Sparse node of logical shape
//              [1, rows * cols] (the tensor flattened row-major), csr pattern, Dense float values,
//              ADDED to the codebook values: value(r, c) = codebook[r's group][index(r, c)] +
//              outliers[0, r * cols + c]. Flattened so that few, unevenly spread outliers cost no
//              padding (a [rows, cols] Sparse pads every row to the fullest one).
struct PaletteEncoding {
  int bits = 4;
  int64_t group_rows = 0;
  Bytes codebooks;
  Bytes indices;
  EncodingPtr outliers;  // null when absent
};

// One node of the tree. New encodings (...) are appended to the variant.
struct Encoding {
  std::variant<DenseEncoding, QuantEncoding, SparseEncoding, LowRankEncoding, TuckerEncoding, PaletteEncoding> node;
};

// Number of groups in one row of `cols` columns.
int64_t quant_groups_per_row(const QuantEncoding& q, int64_t cols);
// Bytes per packed row: ceil(cols * bits / 8), or ceil(cols / 5) for kTrits5.
int64_t quant_row_stride(const QuantEncoding& q, int64_t cols);

// u8 double quantization: the value of a stored u8 entry given its block's (step, base).
inline float quant_u8_entry(uint8_t u, float step, float base) { return static_cast<float>(u) * step + base; }

// Scale / min of flattened group index g (= row * groups_per_row + group), decoded from the scale
// dtype (u8 via scale_meta / min_meta). quant_group_min is 0 when the encoding has no mins.
// The encoding must have passed validate_encoding.
float quant_group_scale(const QuantEncoding& q, int64_t g);
float quant_group_min(const QuantEncoding& q, int64_t g);

// Code of column c in a packed row (either packing). For kBits ternary, code 3 is invalid: it can
// only come from a hand-made or hostile file and decodes through quant_value to 2 * scale (finite).
inline uint32_t quant_code_at(const QuantEncoding& q, const uint8_t* row, int64_t c) {
  if (q.packing == QuantPacking::kTrits5) {
    static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
    return static_cast<uint32_t>((row[c / 5] / kPow3[c % 5]) % 3);
  }
  const int64_t bit = c * q.bits;
  uint32_t word = row[bit >> 3];
  if ((bit & 7) + q.bits > 8) word |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  return (word >> (bit & 7)) & ((1u << q.bits) - 1);
}

// Checks every buffer size of the tree against the logical shape (for hostile input).
Result<void> validate_encoding(const Encoding& enc, const Shape& shape);

// Reference decode of rows [row_begin, row_end) into out[(row_end-row_begin) * cols].
void decode_rows_to_f32(const Encoding& enc, const Shape& shape, int64_t row_begin, int64_t row_end, float* out);

// Bytes of all buffers of the tree (codes, scales, mins, ...).
size_t encoded_bytes(const Encoding& enc);

// Calls fn on every non-empty buffer of the tree, children included.
void for_each_buffer(const Encoding& enc, const std::function<void(const Bytes&)>& fn);
// A copy of the tree whose every non-empty buffer is fn(buffer), children included, in
// for_each_buffer's order (how a tensor's bytes move to other storage, formats/scratch_file.h).
Result<EncodingPtr> map_buffers(const Encoding& enc, const std::function<Result<Bytes>(const Bytes&)>& fn);

// Human description, e.g. "f32", "q8 sym g4 (scale f32)".
std::string describe_encoding(const Encoding& enc);

// Name of the node kind: "dense", "quant", ...
const char* encoding_kind_name(const Encoding& enc);

}  // namespace llmc
