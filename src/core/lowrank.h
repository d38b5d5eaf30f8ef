// The LowRank and Tucker encodings (encoding.h): shapes of their parts, builders, validation, reference decode.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/encoding.h"

namespace llmc {

// Dense and Quant: the node kinds a decomposition's parts may use.
bool is_leaf_encoding(const Encoding& enc);
// LowRank and Tucker.
bool is_decomposition(const Encoding& enc);

inline Shape lowrank_u_shape(const LowRankEncoding& lr, const Shape& shape) { return Shape{{shape.rows(), lr.rank}}; }
inline Shape lowrank_v_shape(const LowRankEncoding& lr, const Shape& shape) { return Shape{{lr.rank, shape.cols()}}; }

// v[begin] ⋯ v[end - 1] (1 when empty).
int64_t dims_product(const std::vector<int64_t>& v, size_t begin, size_t end);

// r_1 ⋯ r_j (row modes) and r_{j+1} ⋯ r_K (column modes); the core is [row rank, col rank].
int64_t tucker_row_rank(const TuckerEncoding& t);
int64_t tucker_col_rank(const TuckerEncoding& t);
inline Shape tucker_core_shape(const TuckerEncoding& t) { return Shape{{tucker_row_rank(t), tucker_col_rank(t)}}; }
// A_k [n_k, r_k] for a row mode, B_k [r_k, n_k] for a column mode.
Shape tucker_factor_shape(const TuckerEncoding& t, size_t k);
// "192x256|576" (row modes | column modes).
std::string tucker_dims_name(const std::vector<int64_t>& dims, int64_t row_modes);

// The parts of a decomposition in a fixed order with their logical shapes (LowRank: u, v; Tucker:
// core, factor0 … factorK-1); empty for other nodes. Passes that transform leaves (a quantization
// stage after lowrank.svd) take them out and put them back with with_decomposition_parts.
struct DecompositionPart {
  std::string role;
  Shape shape;
  EncodingPtr encoding;
};
std::vector<DecompositionPart> decomposition_parts(const Encoding& enc, const Shape& shape);
// The same node with its parts replaced, in decomposition_parts order (same count).
Encoding with_decomposition_parts(const Encoding& enc, const std::vector<EncodingPtr>& parts);

// Builders from f32 values, stored as Dense `dtype` (rounded to nearest even).
// u: [rows, rank], v: [rank, cols].
LowRankEncoding make_lowrank_dense(const std::vector<float>& u, const std::vector<float>& v, int64_t rows, int64_t rank,
                                   int64_t cols, DType dtype);
// core: [row rank, col rank]; factors[k] in the shape tucker_factor_shape gives.
TuckerEncoding make_tucker_dense(std::vector<int64_t> dims, int64_t row_modes, std::vector<int64_t> ranks,
                                 const std::vector<float>& core, const std::vector<std::vector<float>>& factors,
                                 DType dtype);

// Mode product over the middle axis of a [pre, in_dim, post] array:
//   out[p, o, q] = Σ_i M[o, i] · in[p, i, q]      (out: [pre, out_dim, post])
// M is [out_dim, in_dim] row-major, or [in_dim, out_dim] when m_transposed. Acc is the accumulator
// type (double for the reference decode, float in kernels); sums run over i in increasing order.
template <class Acc, class In, class Out>
void mode_product(const In* in, int64_t pre, int64_t in_dim, int64_t post, const float* m, int64_t out_dim,
                  bool m_transposed, Out* out) {
  std::vector<Acc> acc(static_cast<size_t>(post));
  for (int64_t p = 0; p < pre; ++p)
    for (int64_t o = 0; o < out_dim; ++o) {
      std::fill(acc.begin(), acc.end(), Acc(0));
      for (int64_t i = 0; i < in_dim; ++i) {
        const Acc w = static_cast<Acc>(m_transposed ? m[i * out_dim + o] : m[o * in_dim + i]);
        const In* src = in + (p * in_dim + i) * post;
        for (int64_t q = 0; q < post; ++q) acc[q] += w * static_cast<Acc>(src[q]);
      }
      Out* dst = out + (p * out_dim + o) * post;
      for (int64_t q = 0; q < post; ++q) dst[q] = static_cast<Out>(acc[q]);
    }
}

// Structural checks of a Tucker node before its parts exist (the .llmc reader runs them on the
// header): 2..8 modes, `factors` == K ranks, 1 <= row_modes < K, the dims fold `shape` exactly,
// 1 <= r_k <= n_k. validate_encoding runs them too.
Result<void> check_tucker_layout(const std::vector<int64_t>& dims, int64_t row_modes, const std::vector<int64_t>& ranks,
                                 size_t factors, const Shape& shape);
// 1 <= rank <= min(rows, cols).
Result<void> check_lowrank_rank(int64_t rank, const Shape& shape);

// The description without ranks, for grouping tensors in size summaries: "lowrank (U f16, V f16)".
std::string describe_decomposition_group(const Encoding& enc);

// Used by encoding.cpp's visitors.
Result<void> validate_lowrank(const LowRankEncoding& lr, const Shape& shape);
void decode_lowrank_rows(const LowRankEncoding& lr, const Shape& shape, int64_t r0, int64_t r1, float* out);
std::string describe_lowrank(const LowRankEncoding& lr);
size_t lowrank_bytes(const LowRankEncoding& lr);
Result<void> validate_tucker(const TuckerEncoding& t, const Shape& shape);
void decode_tucker_rows(const TuckerEncoding& t, const Shape& shape, int64_t r0, int64_t r1, float* out);
std::string describe_tucker(const TuckerEncoding& t);
size_t tucker_bytes(const TuckerEncoding& t);

}  // namespace llmc
