// Internal: Highway-dispatched fused kernels of Sparse linear layers (kernels/cpu/sparse_linear.cpp).
#pragma once

#include <cstdint>

namespace llmc::kernels::simd {

// Element type of the kept values a kernel reads: stored f32/f16/bf16, or (kQuant) 4/8-bit Quant codes
// dequantized in registers (n:m quads on sparse_avx512 targets; other Quant values are
// dequantized to f32 rows first).
enum class SparseValues : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kQuant = 3 };

// How a row's kept entries are found (see sparse_pattern_rows).
enum class SparseRowKernel : uint8_t {
  kMaskWindows = 0,  // bitmask rows (n:m rows converted to their bitmask): window j's mask is byte j
  kNmHalves = 1,     // n:m with n | 4 and m <= 2n (2:3, 4:5 .. 4:8): every 4 kept entries lie in one window
                     // of <= 8 columns starting at a group boundary
  kNmQuads = 2,      // 2:4 and 1:2: every 2 kept entries lie in one aligned quad of 4 columns; x comes
                     // pre-arranged (kQuadOrder) so that in-lane permutes gather it
};

// Columns of x the quads kernel reads pre-arranged: the full 16-column blocks.
inline int64_t quad_columns(int64_t cols) { return cols / 16 * 16; }
// The layout of xq: xq[16b + 4j + i] = x[16b + 4 · kQuadOrder[j] + i] for the full blocks b, so the
// two 8-float halves of a block are (quads 0, 2) and (quads 1, 3).
inline constexpr int kQuadOrder[4] = {0, 2, 1, 3};

// Rows of a sparse weight against n tokens:
//   y[t · y_stride + r] = Σ_{kept c} value[r, rank(c)] · x[t · x_stride + c]
// for r in [0, rows), t in [0, tokens).
// Window kernels: per (row, token) one 8-lane accumulator over the full 8-column windows in
// column order, each window's values expanded to their columns (zeros elsewhere); n:m halves: one
// accumulator over blocks of 8 kept entries, x permuted from two windows into entry order. Then a
// fixed lane reduction, then the entries not in a full window/block in order with scalar fused
// multiply-adds. The result does not depend on `rows`, `tokens` or the other rows/tokens of the
// call, so matvec equals each matmul row bit for bit and no thread count changes it.
// Reads: index rows index_stride bytes apart and values rows value_stride entries apart; the
// kernels read up to 4 index bytes and 8 values past a row's last ones, so the caller guarantees
// that slack (rows are followed by the next row, or by a padded copy for the last row).
struct SparseRowsArgs {
  SparseRowKernel kernel;
  const uint8_t* index;
  int64_t index_stride;
  int nm_n, nm_m, nm_bits;
  const void* values;
  int64_t value_stride;  // entries between rows
  SparseValues value_type;
  int64_t rows;
  int64_t cols;
  const float* x;
  int64_t x_stride;
  const float* xq;  // kNmQuads: x arranged by arrange_quads, token t at xq + t · xq_stride
  int64_t xq_stride;
  int64_t tokens;
  float* y;
  int64_t y_stride;
  // Non-null (kMaskWindows only): instead of multiplying, write each row's dense expansion (zeros
  // where not kept) in the value type to row r · cols of `expand`; x, tokens and y are not read.
  void* expand;
  // kQuant (kNmQuads only): row r's codes at quant_codes + r · quant_code_stride (quant_bits 4 or 8,
  // code k in bits [bits · k, bits · (k + 1))); entry k's value is code · scale + bias with one
  // rounding, scale = p[g], bias = p[quant_groups + g] for p = quant_params + 2 · quant_groups · r and
  // g = (k >> 4) >> quant_step_shift (groups of 16 · 2^quant_step_shift entries).
  const uint8_t* quant_codes;
  int64_t quant_code_stride;
  int quant_bits;
  int quant_step_shift;
  const float* quant_params;
  int64_t quant_groups;
};
void sparse_pattern_rows(const SparseRowsArgs& a);
// Whether the active target is AVX-512: it runs SparseValues::kQuant, and its bitmask kernel has its
// own break-even sparsity (sparse_linear.cpp kBreakEven).
bool sparse_avx512();

// Rows of a bitmask weight through its window index (sparse_index.h), AVX-512 decode of high sparsity:
//   y[t · y_stride + r] = Σ_{kept c} value[r, rank(c)] · x[t · x_stride + c]
// Per (row, token) one 16-lane accumulator: window by window, its kept entries in steps of 16 (lane j
// takes entry 16s + j, x gathered from the window's 32 columns by vpermt2ps), the FMA masked to the
// window's count; even and odd windows in two accumulators, added, then _mm512_reduce_add_ps.
// Independent of rows, tokens and the thread count. The kernel reads up to 16 values past a row's last
// one (the caller guarantees that slack; byte-masked loads were 2x slower on Zen 4), nothing past x's
// end, and the columns buffer carries its own slack. AVX-512 targets only (sparse_avx512(); other
// targets abort).
struct WindowIndexRowsArgs {
  const uint8_t* counts;   // row r's window counts at counts + r · windows
  const uint8_t* columns;  // row r's in-window columns at columns + r · column_stride
  int64_t windows;
  int64_t column_stride;
  const void* values;  // row r's kept values at values + r · value_stride entries
  int64_t value_stride;
  SparseValues value_type;  // kF32, kF16 or kBF16
  int64_t rows;
  int64_t cols;
  const float* x;
  int64_t x_stride;
  int64_t tokens;
  float* y;
  int64_t y_stride;
};
void sparse_window_index_rows(const WindowIndexRowsArgs& a);

// Rows of a CSR weight: row r's entries are [row_ptr[r] - row_ptr[0], row_ptr[r + 1] - row_ptr[0])
// of `columns` (u16 when `wide` is false, else u32) and values[r · value_stride + k] its k-th
// value. Per (row, token): one 8-lane accumulator over full blocks of 8 entries (x gathered at
// their columns), a fixed lane reduction, then the remaining entries in order.
struct CsrRowsArgs {
  const uint32_t* row_ptr;
  const void* columns;
  bool wide;
  const void* values;
  int64_t value_stride;
  SparseValues value_type;
  int64_t rows;
  const float* x;
  int64_t x_stride;
  int64_t n;
  float* y;
  int64_t y_stride;
};
void sparse_csr_rows(const CsrRowsArgs& a);

// out[k] = the f16 at bytes [2k, 2k + 2) of `in` (any alignment) as f32, k < n: the scales and mins
// of Quant values.
void f16_to_f32_n(const uint8_t* in, int64_t n, float* out);

// Dequantizes `count` kBits codes of `bits` (4 or 8) bits: out[k] = code[k] · scale[g] + bias[g]
// with g = k / group (group a multiple of 8); out needs count rounded up to 8 floats.
void dequant_codes(const uint8_t* codes, int bits, int64_t count, int64_t group, const float* scale, const float* bias,
                   float* out);

}  // namespace llmc::kernels::simd
