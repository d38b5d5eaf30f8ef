// Internal: Quant linear kernels on int8 activations — the per-call activation quantizer, the block
// plan of a weight's rows, the row kernel behind quant_rows and the scalar reference of the path.
//
// Math (exact integer dot products, f32 scaling):
//   Every row is split into blocks: each weight group [g0, g1) into consecutive blocks of 32
//   columns, the last one shorter when the group length is not a multiple of 32 (ragged row
//   tails, group sizes like 24 or 40). Each block's 32 slots (slot_col) form 4 lanes of 8 columns:
//   lane l holds slots 4l..4l+3 and 16+4l..16+4l+3, the slots of one int32 lane of the kernels'
//   dot products (4-bit codes: columns 8l..8l+7). A token's activations are quantized once per
//   call, symmetric int8 per lane: dx_l = max|x_c| / 127 over the lane, xq_c = round-half-even(x_c ·
//   (127 / max|x_c|)) (f32 product), |xq_c| <= 127; dx_l = 0 and xq = 0 for an all-zero lane (or
//   one so tiny that 127 / max overflows). A scale per 8 columns instead of per 32 costs the kernels
//   nothing (they scale every int32 lane anyway) and cuts one part's error: an outlier coarsens only
//   its own lane. In two-part mode (split: QuantActivations::kInt8x2, or kAuto above 4 bits) a
//   second part per column, lo_c = round-half-even(256 · (x_c · 127 / max - xq_c)) clamped to ±127,
//   gives x_c ≈ dx_l · (xq_c + lo_c / 256); the kernels then use xq' = 256 · xq + lo and dx_l / 256.
//   A weight of group g is w_c = v_c · s_g + m'_g with integer v_c (quant_value with scale 1, min
//   0; asymmetric codes are centred, v_c = q_c - 2^(bits-1), and m'_g = m_g + 2^(bits-1) · s_g, so
//   the int8 error multiplies small |v_c|). Then
//     y = Σ_b Σ_l s_{g(b)} · dx_bl · J_bl + Σ_g m'_g · X_g,   J_bl = Σ_{c in lane l of b} v_c · xq_c,
//   exact int32, and X_g = Σ_{c in g} x_c summed in f32 in column order (the exact activations: mins
//   see no int8 error).
// The kernels compute J_bl as u8 codes × int8 activations (AVX2 maddubs/madd, AVX-512 VNNI dpbusd)
// plus a per-lane integer correction -off · Σ xq_c, so every J_bl is exact; only the f32 scaling
// and summation round. matmul_quant_i8_ref computes the same J_bl and the sum in double.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/quant_simd.h"

namespace llmc::kernels {

// How one format runs on int8 activations (null from i8_format when it does not).
struct QuantI8Format {
  QuantScheme scheme;
  int bits;
  QuantPacking packing;
  simd::QuantI8Kind kind;  // code extractor of the SIMD kernel
  int32_t offset;          // v = u - offset, u the unsigned value the extractor yields
  int32_t centre;          // asymmetric: m' = m + centre · s (0 otherwise)
  const char* name;
};
const QuantI8Format* i8_format(const QuantEncoding& q, int64_t cols);

// The blocks of a row for one (cols, group length, format), and the per-token activation record.
// Blocks are processed in pairs; an odd count gets a phantom block (length 0, zero activations).
struct QuantI8Plan {
  int64_t cols = 0, glen = 0, groups = 0, blocks = 0, pairs = 0;
  const QuantI8Format* format = nullptr;
  std::vector<int32_t> start, len, group, byte;  // per block (2 · pairs): first column, length, group, code byte
  bool uniform = false;                          // QuantI8DotArgs::uniform
  int block_shift = -1;           // block k is in group k >> block_shift for every k (no phantom), else -1
  std::vector<uint8_t> slot_col;  // [32]: column offset in its block of A/B slot i (layout order)
  bool split = false;             // two int8 parts per activation (quant_int8_two_parts)
  int64_t pair_floats = 32;       // record floats per pair: 32, or 48 when split
  int64_t x_floats = 0;           // group sums X_g at the head of a record (0 without mins; padded to 8)
  int64_t record_floats = 0;      // floats per token: x_floats + pair_floats · pairs
};
// Thread-local cached plan for this weight (recomputed when the shape or format changes).
const QuantI8Plan& i8_plan(const QuantEncoding& q, int64_t cols);
// The same for Palette weights with `bits` <= 4 whose codebooks are on the integer grid (core/palette.h):
// one group per row, no mins, offset 0, indices read in place by the Quant extractor of their width.
// Null / not usable (mode kF32 or kF32Decoded, bits > 4) as i8_format.
const QuantI8Format* i8_palette_format(int bits, int64_t cols);
const QuantI8Plan& i8_palette_plan(int bits, int64_t cols);

// dx and 127 / max of a lane with max|x| = amax; both 0 for an all-zero lane and for one whose
// 127 / amax exceeds kI8MaxInverse (it would overflow), which is then quantized to zeros.
constexpr float kI8MaxInverse = 3.4e38f;
inline void i8_block_scale(float amax, float& dx, float& inv) {
  dx = amax / 127.0f;
  inv = 127.0f / amax;
  if (!(amax > 0.0f) || !(inv <= kI8MaxInverse)) dx = inv = 0.0f;
}
// Quantizes token x[cols] into its record (layout above): X by i8_group_sums when the weight has
// mins, blocks by simd::quantize_i8_blocks (production) or i8_quantize_blocks_ref (the reference;
// both give the same bytes).
void i8_quantize_token(const QuantI8Plan& plan, bool mins, const float* x, float* record, bool reference);
// The quantized activation xq of slot i of block k in a token's pair entries (record + x_floats):
// the int8 part, or 256 · hi + lo when split.
int64_t i8_slot_activation(const QuantI8Plan& plan, const float* pairs, int64_t k, int i);
// The lane of slot i (0..31) of a block, and the dx of lane l of block k (split: dx_l / 256).
constexpr int i8_slot_lane(int i) { return (i % 16) / 4; }
float i8_lane_dx(const QuantI8Plan& plan, const float* pairs, int64_t k, int l);
// X_g = Σ_{c in g} x_c in f32, column order; zeros up to x_floats.
void i8_group_sums(const QuantI8Plan& plan, const float* x, float* record);
// The blocks of a token (start/len per block, `blocks` = 2 · pairs) into the pair entries at
// `pairs`: xq in slot order, dx per lane, C per lane = -offset · Σ xq (split: hi, lo, dx / 256,
// -offset · Σ (256 hi + lo)).
// Scalar; the portable SIMD target uses it too.
void i8_quantize_blocks_ref(const uint8_t* slot_col, int32_t offset, bool split, const float* x, const int32_t* start,
                            const int32_t* len, int64_t blocks, float* pairs);

// The kernel arguments a plan fixes (block tables, record layout) for tokens [t_begin, t_end) of a call
// whose records start at act, into Y with `rows` columns; the caller sets codes, scales, mins, rows, y.
simd::QuantI8DotArgs i8_dot_args(const QuantI8Plan& plan, const float* act, int64_t t_begin, int64_t t_end,
                                 int64_t rows);
// Y[t, r] for the int8 path; act: the records of every token of the call (record_floats apart).
void quant_rows_i8(const Tensor& w, const float* act, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                   float* y);

// Centred min m' = m + centre · s in f32 (one helper so kernel and reference round alike).
inline float i8_centred_min(float m, int32_t centre, float s) { return m + static_cast<float>(centre) * s; }

}  // namespace llmc::kernels
