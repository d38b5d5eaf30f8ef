// Internal: Highway-dispatched SIMD building blocks of the Quant linear kernels (quant_linear.cpp).
#pragma once

#include <cstdint>

namespace llmc::kernels::simd {

// How the per-column values v of one row are stored for quant_dot (weight = v · scale [+ min]).
enum class QuantValues : uint8_t {
  kI8 = 0,          // int8 v (unpacked codes with the scheme's offset already applied)
  kU8 = 1,          // uint8 v = code (8-bit asymmetric codes read in place)
  kU8Minus128 = 2,  // uint8 code, v = code - 128 (8-bit symmetric codes read in place)
};

// `rows` consecutive rows of a Quant weight against `n` tokens; for row r and token t:
//   y[t * y_stride + r] = Σ_g scales[r, g] · Σ_{c in g} v[r, c] · x[t * x_stride + c]
//                         (+ mins[r, g] · xsum[t * xsum_stride + g])
// v: rows of `cols` values `v_stride` bytes apart (see QuantValues); groups are
// [g * group, min(cols, (g + 1) * group)); scales/mins: [rows, groups] f32 (mins may be null: no
// min term); xsum: per-token group sums of x (only read with mins).
// Per (row, token), each group accumulates full vectors of columns in one vector accumulator, the
// group's scale is applied with one vector FMA into a row accumulator, column tails and mins are
// summed in scalar: the result does not depend on `rows`, `n` or the other rows/tokens of the call.
struct QuantDotArgs {
  const void* v;
  int64_t v_stride;
  int64_t rows;
  QuantValues kind;
  int64_t cols;
  int64_t group;
  int64_t groups;
  const float* scales;
  const float* mins;
  const float* xsum;
  int64_t xsum_stride;
  const float* x;
  int64_t x_stride;
  int64_t n;
  float* y;
  int64_t y_stride;
};
void quant_dot(const QuantDotArgs& a);

// ---- int8-activation kernels (quant_i8.h has the math) ----

// Code extractor of the int8-activation kernel: what the unsigned value u of a code is and which
// A/B slot order (QuantI8Plan::slot_col) the activations of a block are stored in.
enum class QuantI8Kind : uint8_t {
  kSigned8 = 0,  // 8-bit codes in place; v = code - 128 (signed: AVX2 uses |v| and sign(x, v))
  kBytes = 1,    // one byte per code (codes unpacked into a row buffer); natural slot order
  kNibbles = 2,  // 4-bit: slots 0..15 = even columns (low nibbles), 16..31 = odd columns
  kCrumbs = 3,   // 2-bit: slots = columns 4j, 4j+1 (A), 4j+2, 4j+3 (B), j = 0..7
  kBits1 = 4,    // 1-bit: u = 2 · bit; natural order
  kBits3 = 5,    // 3, 5, 6, 7-bit LSB-first codes, 8 codes per `bits` bytes; natural order
  kBits5 = 6,
  kBits6 = 7,
  kBits7 = 8,
};

// `rows` rows of a Quant weight against `n` tokens on int8 activations:
//   y[t * y_stride + r] = Σ_p Σ_{h<2} s[r, 2p+h] · dx[t, 2p+h] · (U + C)  +  Σ_g mins[r, g] · X[t, g]
// with U = Σ_i u_i · xq_i over the 32 slots of block 2p+h, C = -offset · Σ xq of the block. Row r's
// codes start at codes + r * code_stride; block b's at + block_byte[b] (the kernel reads up to 64
// bytes past the last block's start: pad the last row of a tensor). s: [rows, 2 * pairs] f32 scale
// of each block (its group's), rows `scales_stride` apart. Token t's record
// starts at act + t * act_stride floats: X [x_floats] (group sums, read only with mins), then
// pair_floats floats per pair in six fields of 32 bytes (pair_field): int8 XA[32] (128-bit lane h =
// slots 0..15 of block 2p+h), XB[32] (slots 16..31), f32 dx[8] (block 2p in lanes 0..3, 2p+1 in
// 4..7), int32 C[8] (block 2p in lane 0, 2p+1 in lane 4), and when split the low parts XA_lo[32],
// XB_lo[32]. Per (row, token) the pairs are summed in order into one f32 vector accumulator (lanes
// reduced in a fixed order), then the min terms: the result does not depend on rows, n or blocking.
// The fields of a pair's activation entry, 8 floats (32 bytes) each.
enum PairField : int { kFieldXA = 0, kFieldXB = 1, kFieldDx = 2, kFieldC = 3, kFieldXALo = 4, kFieldXBLo = 5 };
// Offset in floats of field f of pair p from the start of the pair entries. The entries of pairs 2q
// and 2q+1 share 2 · pair_floats floats with each field's two halves adjacent (field f of pair 2q at
// 16 f, of 2q+1 at 16 f + 8): the 512-bit kernels load a field of two pairs at once. A record
// holds an even number of pair entries (the last of an odd count unused).
constexpr int64_t pair_field(int64_t p, int64_t pair_floats, int f) {
  return (p >> 1) * 2 * pair_floats + 16 * f + 8 * (p & 1);
}
// Byte offset from the start of the pair entries of the int8 activation of slot i (0..31) of block
// k: its high part, or its low part (`lo`, split records).
constexpr int64_t slot_byte(int64_t k, int64_t pair_floats, int i, bool lo) {
  return 4 * pair_field(k / 2, pair_floats, (i < 16 ? kFieldXA : kFieldXB) + (lo ? 4 : 0)) + 16 * (k % 2) + i % 16;
}

struct QuantI8DotArgs {
  QuantI8Kind kind;  // kSigned8 skips C (its offset is 0)
  bool split;        // two int8 parts per activation: U = 256 · U(hi) + U(lo)
  int64_t pair_floats;
  const uint8_t* codes;
  int64_t code_stride;
  // Palette weights on the integer grid (core/palette.h): [rows][16] tables (lut + 16 r: row r's) of
  // signed int8 values v, indexed by the u the extractor yields (kNibbles, kCrumbs, kBits3, kBits1);
  // the block sums are Σ v · xq (AVX2: |v| and sign(x, v), as kSigned8) and offset must be 0.
  // Null for Quant weights.
  const uint8_t* lut;
  int64_t rows;
  const int32_t* block_byte;   // [2 * pairs]
  bool uniform;                // every block is 32 columns long and block k starts at byte k · 4 · bits
  const int32_t* block_group;  // [2 * pairs] (portable kernel)
  const int32_t* block_start;  // [2 * pairs] first column (the portable kernel reads codes by column)
  const int32_t* block_len;    // [2 * pairs]
  const uint8_t* slot_col;     // [32]
  int64_t pairs;
  const float* scales;  // [rows, scales_stride] per block
  int64_t scales_stride;
  const float* mins;  // [rows, mins_stride] per group: centred mins m', or null
  int64_t mins_stride;
  int64_t groups;
  // Quant weights whose block k belongs to group k >> block_shift may instead give the stored f16
  // scales and mins per group ([rows, groups], 2 bytes each, no alignment): the kernel widens them
  // (exact) and centres the mins itself (m + centre · s). scales and mins are then not read.
  const uint8_t* half_scales;
  const uint8_t* half_mins;  // or null (no mins)
  int block_shift;
  float centre;
  const float* act;
  int64_t act_stride;
  int64_t x_floats;
  int64_t n;
  float* y;
  int64_t y_stride;
};
void quant_i8_dot(const QuantI8DotArgs& a);

// Quantizes the activation blocks of one token into the pair entries of its record (the layout
// above; blocks = 2 * pairs, block k = x[start[k], start[k] + len[k]), len <= 32) for the slot
// order of `kind` (slot_col). Bit for bit what i8_quantize_blocks_ref (quant_i8.h) writes.
void quantize_i8_blocks(QuantI8Kind kind, int32_t offset, bool split, const float* x, const int32_t* start,
                        const int32_t* len, const uint8_t* slot_col, int64_t blocks, float* pairs);

// 4-bit codes, LSB-first (code 2i in the low nibble of byte i): dst[c] = code[c] - offset (mod 256)
// for c in [0, 2 * nbytes).
void unpack_nibbles(const uint8_t* src, int64_t nbytes, uint8_t offset, uint8_t* dst);

// dst[i] = src[i] widened exactly to f32, for f16 (`bf16` false) or bf16 entries.
void widen_half(const uint16_t* src, int64_t n, bool bf16, float* dst);

}  // namespace llmc::kernels::simd
