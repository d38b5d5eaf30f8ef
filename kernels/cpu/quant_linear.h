// Internal: the Quant linear kernel behind kLinearKernels (linear.cpp) — codes are unpacked one
// row at a time into an L1 buffer and multiplied per group, never decoded to a full f32 tensor.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Tokens per quant_rows call for a call of n tokens, given the standard block: all n in mode
// kF32Decoded (its rows are decoded once per call), else `standard`.
int64_t quant_token_block(int64_t n, int64_t standard);
// Floats of per-call scratch quant_prepare fills for `n` tokens (0 when the weight has no mins).
int64_t quant_aux_floats(const Tensor& w, int64_t n);
// aux: [n, groups_per_row] group sums of x (x: [n, cols]), summed in f32 in column order.
void quant_prepare(const Tensor& w, const float* x, int64_t n, float* aux);
// Y[t, r] for t in [t_begin, t_end), r in [r_begin, r_end); x: [*, cols], y: [*, rows], aux from
// quant_prepare over all tokens of the call.
void quant_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                int64_t r_end, float* y);
// Scale (mins false) or min entries [begin, begin + n) of the flattened [rows, groups] arrays as f32.
void quant_decode_params(const QuantEncoding& q, bool mins, int64_t begin, int64_t n, float* out);
// Ternary kTrits5 codes (0..2) of a row, one byte each; dst holds cols + 8 bytes.
void quant_unpack_trits5_codes(const uint8_t* row, int64_t cols, uint8_t* dst);

// Name of the row format quant_rows uses for this weight (e.g. "q4 nibbles"), for reports.
const char* quant_format_name(const Tensor& w);

}  // namespace llmc::kernels
