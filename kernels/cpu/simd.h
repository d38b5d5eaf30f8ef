// Internal: the Highway-dispatched SIMD building blocks behind kernels.h (one symbol each; the CPU
// target is chosen at the first call and can be forced by force_simd_target for tests).
#pragma once

#include <cstdint>
#include <vector>

namespace llmc::kernels::simd {

// Y[t, r] = Σ_c W[r, c] · X[t, c] for t in [t_begin, t_end), r in [r_begin, r_end).
// W: [rows, cols] row-major in the named dtype; X: [*, cols] f32; Y: [*, rows] f32.
// Every element is one dot product in the fixed order of `dot` below: the result of an element
// does not depend on how rows and tokens are blocked, nor on which thread computes it.
using MatmulRowsFn = void (*)(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin,
                              int64_t t_end, int64_t r_begin, int64_t r_end, float* y);
void matmul_rows_f32(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                     int64_t r_begin, int64_t r_end, float* y);
void matmul_rows_f16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                     int64_t r_begin, int64_t r_end, float* y);
void matmul_rows_bf16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                      int64_t r_begin, int64_t r_end, float* y);
// Y[t * y_stride + r] = Σ_c W[r, c] · X[t, c] for r in [0, rows), t in [0, n): a block of rows
// (decoded to f32 by the caller) written straight into a wider output, in matmul_rows_f32's bits.
void matmul_block_f32(const float* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y,
                      int64_t y_stride);

// Σ a[i] b[i], the order every dot product of this file uses: one vector accumulator over the
// full vectors of columns (in column order, fused multiply-add), the lanes summed by a fixed
// tree (within each 128-bit block (l0 + l2) + (l1 + l3), then the blocks halved pairwise), then
// the scalar column tail in order with fused multiply-adds.
float dot(const float* a, const float* b, int64_t n);

// In-place softmax of x[n] with max subtraction (SIMD exp, sum in double).
void softmax(float* x, int64_t n);
// gate[i] = silu(gate[i]) · up[i] with the SIMD exp.
void silu_mul(float* gate, const float* up, int64_t n);

// Causal attention of one query head for tokens t in [t_begin, t_end) of a chunk whose token t
// sits at position pos + t and attends to cache positions [0, pos + t]:
//   out[t] = Σ_p softmax_p(scale · dot(q[t], k[p])) · v[p]
// q: token t's query of this head at q + t * q_stride; k, v: position p's key/value of this
// head's kv group at k + p * kv_stride (v likewise); out: token t's output at out + t * q_stride.
// scratch: (t_end - t_begin) * (pos + t_end) floats.
// Each score is dot() times scale, each row goes through softmax(), and each output element is
// one chain of fused multiply-adds over p in order from zero, whatever the token range: a token
// gives the same bits alone (decode) as inside any chunk (prefill).
void attention_head(const float* q, int64_t q_stride, const float* k, const float* v, int64_t kv_stride,
                    int64_t head_dim, float scale, int64_t pos, int64_t t_begin, int64_t t_end, float* scratch,
                    float* out);

// Targets some kernel file was compiled for that the CPU supports (under force_simd_target: the
// forced one and worse).
std::vector<int64_t> compiled_targets();

}  // namespace llmc::kernels::simd
