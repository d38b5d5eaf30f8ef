// Sparse linear kernels: gather the activations at a row's kept columns, then a dense dot with the row's values.
#include "kernels/cpu/sparse_linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/sparse.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/sparse_simd.h"

namespace llmc::kernels {
namespace {

constexpr int64_t kMaxFloatExactKept = int64_t(1) << 20;  // gather_nm's float division is exact below

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// xg[k] = x[column of row r's k-th kept entry]; returns the kept count of the row.
int64_t gather_row(const SparseEncoding& s, int64_t cols, int64_t r, const float* x, float* xg) {
  switch (s.pattern) {
    case SparsePattern::kBitmask: return simd::gather_mask(s.index.data() + r * sparse_mask_stride(cols), cols, x, xg);
    case SparsePattern::kCsr: {
      const uint32_t b = load_u32(s.row_ptr.data() + r * 4), e = load_u32(s.row_ptr.data() + (r + 1) * 4);
      if (sparse_csr_index_bytes(cols) == 2)
        simd::gather_csr16(reinterpret_cast<const uint16_t*>(s.index.data()) + b, e - b, x, xg);
      else
        simd::gather_csr32(reinterpret_cast<const uint32_t*>(s.index.data()) + b, e - b, x, xg);
      return e - b;
    }
    case SparsePattern::kNM: {
      const uint8_t* idx = s.index.data() + r * sparse_nm_index_stride(s.n, s.m, cols);
      if (s.kept_stride < kMaxFloatExactKept) {
        simd::gather_nm(idx, s.n, s.m, sparse_nm_index_bits(s.m), s.kept_stride, x, xg);
        return s.kept_stride;
      }
      thread_local std::vector<int32_t> where;
      where.resize(static_cast<size_t>(s.kept_stride));
      const int64_t k = sparse_row_columns(s, cols, r, where.data());
      for (int64_t i = 0; i < k; ++i) xg[i] = x[where[i]];
      return k;
    }
  }
  return 0;
}

simd::MatmulRowsFn dot_for(const Encoding& values) {
  const auto* d = std::get_if<DenseEncoding>(&values.node);
  if (!d) return simd::matmul_rows_f32;  // values decoded to f32 first
  switch (d->dtype) {
    case DType::kF16: return simd::matmul_rows_f16;
    case DType::kBF16: return simd::matmul_rows_bf16;
    default: return simd::matmul_rows_f32;
  }
}

}  // namespace

void sparse_rows(const Tensor& w, const float* x, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                 float* y) {
  const auto& s = std::get<SparseEncoding>(w.encoding->node);
  const int64_t rows = w.rows(), cols = w.cols(), stride = s.kept_stride;
  thread_local std::vector<float> xg, vals;
  xg.resize(static_cast<size_t>(stride + 8));
  const auto* dense = std::get_if<DenseEncoding>(&s.values->node);
  const simd::MatmulRowsFn dot = dot_for(*s.values);
  const size_t esz = dense ? dtype_bytes(dense->dtype) : 4;
  const Shape values_shape = sparse_values_shape(s, rows);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const uint8_t* vrow;
    if (dense) {
      vrow = dense->data.data() + static_cast<size_t>(r * stride) * esz;
    } else {
      vals.resize(static_cast<size_t>(stride));
      decode_rows_to_f32(*s.values, values_shape, r, r + 1, vals.data());
      vrow = reinterpret_cast<const uint8_t*>(vals.data());
    }
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t k = gather_row(s, cols, r, x + t * cols, xg.data());
      float out = 0.0f;
      if (k > 0) dot(vrow, 1, k, xg.data(), 0, 1, 0, 1, &out);
      y[t * rows + r] = out;
    }
  }
}

}  // namespace llmc::kernels
