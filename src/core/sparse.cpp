// The Sparse encoding: pattern builders, hostile-input validation, reference decode and size accounting.
#include "core/sparse.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/tensor.h"

namespace llmc {
namespace {

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// CSR column index e of the flat index array.
uint32_t csr_col(const SparseEncoding& s, int64_t cols, uint64_t e) {
  const uint8_t* p = s.index.data();
  if (sparse_csr_index_bytes(cols) == 2) {
    uint16_t v;
    std::memcpy(&v, p + e * 2, 2);
    return v;
  }
  return load_u32(p + e * 4);
}

// In-group index k of an n:m row (`row` points at the row's packed indices).
uint32_t nm_index(const uint8_t* row, int bits, int64_t k) {
  const int64_t bit = k * bits;
  uint32_t word = row[bit >> 3];
  if ((bit & 7) + bits > 8) word |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  return (word >> (bit & 7)) & ((1u << bits) - 1);
}

}  // namespace

int sparse_nm_index_bits(int m) {
  int bits = 0;
  while ((1 << bits) < m) ++bits;
  return std::max(bits, 1);
}

int64_t sparse_nm_kept_per_row(int n, int m, int64_t cols) { return n * (cols / m) + std::min<int64_t>(n, cols % m); }

int64_t sparse_nm_index_stride(int n, int m, int64_t cols) {
  return (sparse_nm_kept_per_row(n, m, cols) * sparse_nm_index_bits(m) + 7) / 8;
}

Result<void> check_nm_pattern(int n, int m, int64_t cols) {
  if (m < 2 || m > 16)
    return make_error(ErrorCode::kInvalidArgument, "n:m pattern ", n, ":", m, ": m must be in 2..16");
  if (n < 1 || n >= m)
    return make_error(ErrorCode::kInvalidArgument, "n:m pattern ", n, ":", m, ": n must be in 1..m-1");
  if (cols < m)
    return make_error(ErrorCode::kInvalidArgument, "n:m pattern ", n, ":", m, " needs rows of at least ", m,
                      " columns, the tensor's rows have ", cols);
  return {};
}

SparseEncoding sparse_unstructured_pattern(const uint8_t* keep, const float* w, int64_t rows, int64_t cols,
                                           std::vector<float>& kept) {
  SparseEncoding s;
  std::vector<int64_t> count(static_cast<size_t>(rows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) count[r] += keep[r * cols + c] != 0;
  for (int64_t r = 0; r < rows; ++r) {
    s.kept_stride = std::max(s.kept_stride, count[r]);
    s.nnz += count[r];
  }
  const uint64_t mask_bytes = static_cast<uint64_t>(rows * sparse_mask_stride(cols));
  const int64_t ib = sparse_csr_index_bytes(cols);
  const uint64_t csr_bytes = static_cast<uint64_t>((rows + 1) * 4 + s.nnz * ib);
  kept.assign(static_cast<size_t>(rows * s.kept_stride), 0.0f);
  if (csr_bytes < mask_bytes) {
    s.pattern = SparsePattern::kCsr;
    std::vector<uint32_t> row_ptr(static_cast<size_t>(rows + 1), 0);
    std::vector<uint8_t> idx(static_cast<size_t>(s.nnz * ib));
    uint32_t e = 0;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t k = 0;
      for (int64_t c = 0; c < cols; ++c) {
        if (!keep[r * cols + c]) continue;
        const uint32_t cc = static_cast<uint32_t>(c);
        std::memcpy(idx.data() + static_cast<size_t>(e) * ib, &cc, static_cast<size_t>(ib));  // little-endian
        kept[r * s.kept_stride + k++] = w[r * cols + c];
        ++e;
      }
      row_ptr[r + 1] = e;
    }
    s.row_ptr = Bytes::from_vector(row_ptr);
    s.index = Bytes::owned(std::move(idx));
    return s;
  }
  s.pattern = SparsePattern::kBitmask;
  const int64_t stride = sparse_mask_stride(cols);
  std::vector<uint8_t> mask(static_cast<size_t>(mask_bytes), 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t k = 0;
    for (int64_t c = 0; c < cols; ++c) {
      if (!keep[r * cols + c]) continue;
      mask[r * stride + c / 8] |= static_cast<uint8_t>(1u << (c % 8));
      kept[r * s.kept_stride + k++] = w[r * cols + c];
    }
  }
  s.index = Bytes::owned(std::move(mask));
  return s;
}

Result<SparseEncoding> sparse_nm_pattern(const uint8_t* keep, const float* w, int64_t rows, int64_t cols, int n, int m,
                                         std::vector<float>& kept) {
  LLMC_TRY(check_nm_pattern(n, m, cols));
  SparseEncoding s;
  s.pattern = SparsePattern::kNM;
  s.n = n;
  s.m = m;
  s.kept_stride = sparse_nm_kept_per_row(n, m, cols);
  s.nnz = rows * s.kept_stride;
  const int bits = sparse_nm_index_bits(m);
  const int64_t stride = sparse_nm_index_stride(n, m, cols);
  std::vector<uint8_t> idx(static_cast<size_t>(rows * stride), 0);
  kept.assign(static_cast<size_t>(rows * s.kept_stride), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t k = 0;
    for (int64_t g0 = 0; g0 < cols; g0 += m) {
      const int64_t width = std::min<int64_t>(m, cols - g0);
      const int64_t want = std::min<int64_t>(n, width);
      int64_t got = 0;
      for (int64_t j = 0; j < width; ++j) {
        if (!keep[r * cols + g0 + j]) continue;
        if (++got > want) break;
        const int64_t bit = (k + got - 1) * bits;
        const uint32_t v = static_cast<uint32_t>(j) << (bit & 7);
        idx[r * stride + (bit >> 3)] |= static_cast<uint8_t>(v);
        if ((bit & 7) + bits > 8) idx[r * stride + (bit >> 3) + 1] |= static_cast<uint8_t>(v >> 8);
        kept[r * s.kept_stride + k + got - 1] = w[r * cols + g0 + j];
      }
      if (got != want)
        return make_error(ErrorCode::kInvalidArgument, "row ", r, ", columns ", g0, "..", g0 + width - 1, ": ",
                          got > want ? "more" : "fewer", " than ", want, " kept entries for pattern ", n, ":", m);
      k += want;
    }
  }
  s.index = Bytes::owned(std::move(idx));
  return s;
}

void sparse_set_dense_values(SparseEncoding& s, const std::vector<float>& kept, int64_t rows, DType dtype) {
  Tensor t = make_dense("values", sparse_values_shape(s, rows), kept, dtype);
  s.values = t.encoding;
}

int64_t sparse_row_columns(const SparseEncoding& s, int64_t cols, int64_t r, int32_t* cols_out) {
  switch (s.pattern) {
    case SparsePattern::kBitmask: {
      const int64_t stride = sparse_mask_stride(cols);
      const uint8_t* p = s.index.data() + r * stride;
      int64_t k = 0;
      for (int64_t b = 0; b < stride; ++b)
        for (uint32_t bits = p[b]; bits != 0; bits &= bits - 1)
          cols_out[k++] = static_cast<int32_t>(b * 8 + std::countr_zero(bits));
      return k;
    }
    case SparsePattern::kCsr: {
      const uint32_t begin = load_u32(s.row_ptr.data() + r * 4), end = load_u32(s.row_ptr.data() + (r + 1) * 4);
      for (uint32_t e = begin; e < end; ++e) cols_out[e - begin] = static_cast<int32_t>(csr_col(s, cols, e));
      return end - begin;
    }
    case SparsePattern::kNM: {
      const int bits = sparse_nm_index_bits(s.m);
      const uint8_t* p = s.index.data() + r * sparse_nm_index_stride(s.n, s.m, cols);
      for (int64_t k = 0; k < s.kept_stride; ++k)
        cols_out[k] = static_cast<int32_t>((k / s.n) * s.m + nm_index(p, bits, k));
      return s.kept_stride;
    }
  }
  return 0;
}

size_t sparse_pattern_bytes(const SparseEncoding& s) { return s.index.size() + s.row_ptr.size(); }
size_t sparse_values_bytes(const SparseEncoding& s) { return s.values ? encoded_bytes(*s.values) : 0; }

std::string sparse_pattern_name(const SparseEncoding& s) {
  switch (s.pattern) {
    case SparsePattern::kBitmask: return "bitmask";
    case SparsePattern::kCsr: return "csr";
    case SparsePattern::kNM: return str_cat(s.n, ":", s.m);
  }
  return "?";
}

std::string describe_sparse(const SparseEncoding& s) {
  return str_cat(sparse_pattern_name(s), " of ", s.values ? describe_encoding(*s.values) : std::string("(none)"));
}

Result<void> validate_sparse(const SparseEncoding& s, const Shape& shape) {
  const int64_t rows = shape.rows(), cols = shape.cols();
  if (!s.values) return make_error(ErrorCode::kFormat, "sparse tensor without values");
  if (std::holds_alternative<SparseEncoding>(s.values->node))
    return make_error(ErrorCode::kFormat, "sparse values must not be sparse themselves");
  if (s.kept_stride < 0 || s.kept_stride > cols)
    return make_error(ErrorCode::kFormat, "sparse kept_stride ", s.kept_stride, " outside 0..", cols);
  if (s.nnz < 0 || s.nnz > rows * s.kept_stride)
    return make_error(ErrorCode::kFormat, "sparse nnz ", s.nnz, " outside 0..", rows * s.kept_stride);
  if (auto v = validate_encoding(*s.values, sparse_values_shape(s, rows)); !v.ok())
    return with_context(v.error(), "sparse values");
  const uint8_t* idx = s.index.data();
  switch (s.pattern) {
    case SparsePattern::kBitmask: {
      const int64_t stride = sparse_mask_stride(cols);
      if (s.index.size() != static_cast<uint64_t>(rows * stride) || !s.row_ptr.empty())
        return make_error(ErrorCode::kFormat, "sparse bitmask of shape ", shape.str(), " needs ", rows * stride,
                          " bytes, has ", s.index.size());
      const uint8_t tail_mask = cols % 8 == 0 ? 0 : static_cast<uint8_t>(0xFFu << (cols % 8));
      int64_t total = 0;
      for (int64_t r = 0; r < rows; ++r) {
        int64_t count = 0;
        for (int64_t b = 0; b < stride; ++b) count += std::popcount(idx[r * stride + b]);
        if (stride > 0 && (idx[r * stride + stride - 1] & tail_mask) != 0)
          return make_error(ErrorCode::kFormat, "sparse bitmask row ", r, " marks columns past ", cols);
        if (count > s.kept_stride)
          return make_error(ErrorCode::kFormat, "sparse bitmask row ", r, " keeps ", count, " entries, kept_stride is ",
                            s.kept_stride);
        total += count;
      }
      if (total != s.nnz)
        return make_error(ErrorCode::kFormat, "sparse bitmask keeps ", total, " entries, nnz is ", s.nnz);
      return {};
    }
    case SparsePattern::kCsr: {
      const int64_t ib = sparse_csr_index_bytes(cols);
      if (s.row_ptr.size() != static_cast<uint64_t>(rows + 1) * 4)
        return make_error(ErrorCode::kFormat, "sparse csr row pointers need ", (rows + 1) * 4, " bytes, have ",
                          s.row_ptr.size());
      if (s.index.size() != static_cast<uint64_t>(s.nnz * ib))
        return make_error(ErrorCode::kFormat, "sparse csr column indices need ", s.nnz * ib, " bytes, have ",
                          s.index.size());
      if (load_u32(s.row_ptr.data()) != 0) return make_error(ErrorCode::kFormat, "sparse csr row_ptr[0] is not 0");
      for (int64_t r = 0; r < rows; ++r) {
        const uint32_t b = load_u32(s.row_ptr.data() + r * 4), e = load_u32(s.row_ptr.data() + (r + 1) * 4);
        if (e < b || e > static_cast<uint64_t>(s.nnz) || e - b > static_cast<uint64_t>(s.kept_stride))
          return make_error(ErrorCode::kFormat, "sparse csr row ", r, ": entries [", b, ", ", e, ") invalid (nnz ",
                            s.nnz, ", kept_stride ", s.kept_stride, ")");
        for (uint32_t i = b; i < e; ++i) {
          const uint32_t c = csr_col(s, cols, i);
          if (c >= static_cast<uint64_t>(cols) || (i > b && c <= csr_col(s, cols, i - 1)))
            return make_error(ErrorCode::kFormat, "sparse csr row ", r, ": column index ", c, " at entry ", i,
                              " out of range or not increasing");
        }
      }
      if (load_u32(s.row_ptr.data() + rows * 4) != static_cast<uint64_t>(s.nnz))
        return make_error(ErrorCode::kFormat, "sparse csr row_ptr[rows] is not nnz ", s.nnz);
      return {};
    }
    case SparsePattern::kNM: {
      if (auto v = check_nm_pattern(s.n, s.m, cols); !v.ok())
        return make_error(ErrorCode::kFormat, "sparse: ", v.error().message);
      if (s.kept_stride != sparse_nm_kept_per_row(s.n, s.m, cols) || s.nnz != rows * s.kept_stride ||
          !s.row_ptr.empty())
        return make_error(ErrorCode::kFormat, "sparse ", s.n, ":", s.m, " kept_stride ", s.kept_stride, " / nnz ",
                          s.nnz, " do not match the shape ", shape.str());
      const int64_t stride = sparse_nm_index_stride(s.n, s.m, cols);
      if (s.index.size() != static_cast<uint64_t>(rows * stride))
        return make_error(ErrorCode::kFormat, "sparse ", s.n, ":", s.m, " indices need ", rows * stride,
                          " bytes, have ", s.index.size());
      const int bits = sparse_nm_index_bits(s.m);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* p = idx + r * stride;
        for (int64_t k = 0; k < s.kept_stride; ++k) {
          const int64_t g0 = (k / s.n) * s.m;
          const uint32_t j = nm_index(p, bits, k);
          const bool increasing = k % s.n == 0 || j > nm_index(p, bits, k - 1);
          if (g0 + static_cast<int64_t>(j) >= cols || j >= static_cast<uint32_t>(s.m) || !increasing)
            return make_error(ErrorCode::kFormat, "sparse ", s.n, ":", s.m, " row ", r, ": index ", j, " of entry ", k,
                              " out of its group or not increasing");
        }
      }
      return {};
    }
  }
  return make_error(ErrorCode::kFormat, "sparse pattern ", int(s.pattern), " unknown");
}

void decode_sparse_rows(const SparseEncoding& s, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  const int64_t cols = shape.cols(), nr = r1 - r0;
  std::fill(out, out + nr * cols, 0.0f);
  if (s.kept_stride == 0 || nr == 0) return;
  std::vector<float> vals(static_cast<size_t>(nr * s.kept_stride));
  std::vector<int32_t> where(static_cast<size_t>(s.kept_stride));
  decode_rows_to_f32(*s.values, sparse_values_shape(s, shape.rows()), r0, r1, vals.data());
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t k = sparse_row_columns(s, cols, r, where.data());
    const float* v = vals.data() + (r - r0) * s.kept_stride;
    float* o = out + (r - r0) * cols;
    for (int64_t i = 0; i < k; ++i) o[where[i]] = v[i];
  }
}

}  // namespace llmc
