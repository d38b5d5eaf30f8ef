// Quantization arithmetic shared by every quantization pass: quantization specs, fitting one
// group's scale/min (with importance weights and clipping search), rounding, and packing rows into
// a QuantEncoding whose decode equals the pass's own dequantized values bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/encoding.h"
#include "core/error.h"
#include "core/tensor.h"

namespace llmc {

// The target encoding of a quantization pass.
struct QuantSpec {
  int bits = 4;  // 2..8 for sym/asym; binary 1; ternary 2
  QuantScheme scheme = QuantScheme::kAsymmetric;
  int64_t group_size = 32;          // 0 = whole row
  DType scale_dtype = DType::kF16;  // f32/f16/bf16, or u8 = double quantization
  int64_t scale_block = 256;        // u8 scales only
  bool trits5 = false;              // ternary: 1.6-bit packing
  bool binary_two_level = false;    // binary: per-group min (levels min ± scale)
};
// kInvalidArgument for impossible combinations (bits 9, group < 0, ternary with 3 bits, ...).
Result<void> validate_quant_spec(const QuantSpec& spec);
std::string describe_quant_spec(const QuantSpec& spec);  // "q4 asym g32 f16"
// Bytes of codes + scales + mins (+ meta) for a [rows, cols] tensor; bpw = 8 * bytes / (rows*cols).
uint64_t quant_encoded_bytes(const QuantSpec& spec, int64_t rows, int64_t cols);

// The parameters of one group after rounding to the stored scale dtype (what decode will use).
struct GroupParams {
  float scale = 0;
  float min = 0;  // 0 for schemes without mins
};

// Clipping search: try shrinking the range by ratios 1, 1 - step, ... down to min_ratio and keep
// the one with the lowest importance-weighted squared error. steps = 0 disables the search.
struct ScaleSearch {
  int steps = 0;
  double min_ratio = 0.7;
};

// Fits one group of n weights w (importance `imp` per weight, nullptr = uniform): returns the
// params rounded to the spec's scale dtype. Deterministic.
GroupParams fit_group(const QuantSpec& spec, const float* w, const float* imp, int64_t n, const ScaleSearch& search);

// Nearest code for value v under params (ties to the lower code), and its dequantized value
// (quant_value with the same params).
uint32_t quantize_value(const QuantSpec& spec, const GroupParams& p, float v);
inline float dequantize_code(const QuantSpec& spec, const GroupParams& p, uint32_t q) {
  return quant_value(spec.scheme, spec.bits, q, p.scale, p.min);
}

// Collects codes and group params row by row, then packs them into a QuantEncoding.
// Double quantization (u8 scales): call set_scale_grid() first with the weights (it fits each
// block's (step, base) from RTN params of those weights); set_params() then snaps every scale (and
// min) onto that grid. set_params() returns the params decode will use: passes quantize values
// with the returned params, so decode equals their own dequantized weights exactly.
class QuantRowsBuilder {
 public:
  // packed = true: rows arrive whole through store_row() and are packed at once, so the builder
  // never holds a byte per weight (set_code/row_codes are then not available).
  QuantRowsBuilder(const QuantSpec& spec, int64_t rows, int64_t cols, bool packed = false);
  int64_t groups_per_row() const { return groups_per_row_; }
  int64_t group_size() const { return group_size_; }  // columns per group (last may be shorter)
  void set_scale_grid(std::span<const float> w);      // u8 scales only; w: [rows, cols]
  // The same in two steps, for rows that are not all in memory at once: the plain-RTN f32 params
  // of one row's groups into scales/mins [rows * groups_per_row] (thread-safe across rows), then
  // the grid from all of them.
  void grid_params_of_row(int64_t row, const float* w, float* scales, float* mins) const;
  void set_scale_grid(const std::vector<float>& scales, const std::vector<float>& mins);
  // Or a given grid: (step, base) f32 pairs per block of scale_block entries, as QuantEncoding's
  // scale_meta / min_meta hold them (min_meta empty for specs without mins).
  void set_scale_grid_meta(std::vector<float> scale_meta, std::vector<float> min_meta);
  GroupParams set_params(int64_t row, int64_t group, const GroupParams& p);
  void set_code(int64_t row, int64_t col, uint32_t q);
  uint8_t* row_codes(int64_t row) { return codes_.data() + row * cols_; }  // [cols] codes, one per byte
  void store_row(int64_t row, const uint8_t* codes);                       // packed builders: [cols] codes
  GroupParams params(int64_t row, int64_t group) const;
  QuantEncoding finish();  // once

 private:
  QuantSpec spec_;
  int64_t rows_, cols_, groups_per_row_, group_size_;
  QuantEncoding layout_;        // bits, scheme, packing of the result (no buffers)
  std::vector<uint8_t> codes_;  // one per weight, packed in finish(); packed builders: packed rows
  std::vector<GroupParams> params_;
  std::vector<float> scale_meta_, min_meta_;  // u8 scales: (step, base) per block
  std::vector<uint8_t> scale_u8_, min_u8_;    // u8 scales: the stored entries
  bool packed_ = false;
};

// t.rows_to_f32(r0, r1, out), bit for bit except NaN payloads (NaN stays NaN), with Dense f16/bf16
// rows widened by the SIMD converter (the usual input of RTN on a checkpoint).
void tensor_rows_to_f32(const Tensor& t, int64_t r0, int64_t r1, float* out);

// Fills out[(r1 - r0) * cols] with rows [r0, r1) of the weight being quantized, as f32; called
// from several threads at once on disjoint ranges.
using RowLoader = std::function<void(int64_t r0, int64_t r1, float* out)>;

// Σ (w - dequant)² and Σ w² of a quantized weight: summed per row in double, then in row order.
struct QuantError {
  double err = 0;
  double norm = 0;
};

// Round-to-nearest of a [rows, cols] weight read through `load` in blocks of rows (the weight is
// never held whole as f32; threads share the blocks and the result does not depend on them).
// `dequant` (if not null, [rows * cols]) receives decode_to_f32 of the result, `error` its error.
QuantEncoding quantize_rtn_rows(const QuantSpec& spec, int64_t rows, int64_t cols, const RowLoader& load,
                                std::span<const float> col_imp, const ScaleSearch& search, float* dequant,
                                QuantError* error);

// Round-to-nearest of a whole [rows, cols] weight (importance per column `col_imp`, may be empty):
// returns the encoding; `dequant` (if not null) receives decode_to_f32 of it.
QuantEncoding quantize_rtn(const QuantSpec& spec, std::span<const float> w, int64_t rows, int64_t cols,
                           std::span<const float> col_imp, const ScaleSearch& search, std::vector<float>* dequant);

}  // namespace llmc
