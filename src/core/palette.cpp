// The Palette encoding: builders, outlier access, hostile-input validation, reference decode and size accounting.
#include "core/palette.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/sparse.h"
#include "core/tensor.h"

namespace llmc {
namespace {

float dense_value(const DenseEncoding& d, int64_t i) {
  const uint8_t* p = d.data.data() + static_cast<size_t>(i) * dtype_bytes(d.dtype);
  uint16_t h;
  switch (d.dtype) {
    case DType::kF16: std::memcpy(&h, p, 2); return f16_to_f32(h);
    case DType::kBF16: std::memcpy(&h, p, 2); return bf16_to_f32(h);
    default: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
  }
}

}  // namespace

int64_t palette_codebook_count(int64_t group_rows, int64_t rows) {
  return group_rows <= 0 ? 1 : (rows + group_rows - 1) / group_rows;
}

void palette_codebook_f32(const PaletteEncoding& p, int64_t g, float* out) {
  const int64_t n = palette_entries(p.bits);
  const uint8_t* src = p.codebooks.data() + static_cast<size_t>(g * n) * 2;
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + i * 2, 2);
    out[i] = f16_to_f32(h);
  }
}

namespace {
// The smallest k in [kPaletteGridMinExp, kPaletteGridMaxExp + 1] with lo >= -128 · 2^k and hi <= 127 · 2^k
// (kPaletteGridMaxExp + 1: none).
int grid_range_exponent(double lo, double hi) {
  const auto fits = [&](int k) {
    const double step = std::ldexp(1.0, k);
    return lo >= kPaletteGridMin * step && hi <= kPaletteGridMax * step;
  };
  // Start near the answer (2^(e-1) <= m < 2^e), then step to the exact smallest k.
  const double m = std::max(hi / kPaletteGridMax, lo / kPaletteGridMin);
  int k = kPaletteGridMinExp;
  if (m > 0) {
    int e = 0;
    std::frexp(m, &e);
    k = std::clamp(e - 1, kPaletteGridMinExp, kPaletteGridMaxExp + 1);
  }
  while (k > kPaletteGridMinExp && fits(k - 1)) --k;
  while (k <= kPaletteGridMaxExp && !fits(k)) ++k;
  return k;
}
}  // namespace

int palette_grid_exponent(const float* entries, int64_t n) {
  if (n <= 0) return kPaletteOffGrid;
  double lo = entries[0], hi = entries[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min<double>(lo, entries[i]);
    hi = std::max<double>(hi, entries[i]);
  }
  if (!std::isfinite(lo) || !std::isfinite(hi)) return kPaletteOffGrid;
  const int k = grid_range_exponent(lo, hi);
  if (k > kPaletteGridMaxExp) return kPaletteOffGrid;
  const double inverse = std::ldexp(1.0, -k);
  for (int64_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(entries[i]) * inverse;  // exact: a power-of-two scaling
    if (u != std::nearbyint(u)) return kPaletteOffGrid;
  }
  return k;
}

bool palette_snap_to_grid(std::vector<double>& v) {
  if (v.empty()) return true;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  const int k = grid_range_exponent(*lo, *hi);
  if (k > kPaletteGridMaxExp) return false;
  for (double& e : v) {
    const double u = std::clamp(std::round(std::ldexp(e, -k)), double{kPaletteGridMin}, double{kPaletteGridMax});
    e = std::ldexp(u, k);
  }
  return true;
}

PaletteEncoding make_palette(int bits, int64_t group_rows, const std::vector<float>& codebooks,
                             const std::vector<uint8_t>& index, int64_t rows, int64_t cols) {
  LLMC_CHECK(bits >= 1 && bits <= 8 && group_rows >= 0);
  LLMC_CHECK(static_cast<int64_t>(codebooks.size()) ==
             palette_codebook_count(group_rows, rows) * palette_entries(bits));
  LLMC_CHECK(static_cast<int64_t>(index.size()) == rows * cols);
  PaletteEncoding p;
  p.bits = bits;
  p.group_rows = group_rows;
  std::vector<uint16_t> half(codebooks.size());
  for (size_t i = 0; i < codebooks.size(); ++i) half[i] = f32_to_f16(codebooks[i]);
  p.codebooks = Bytes::from_vector(half);
  const int64_t stride = palette_row_stride(bits, cols);
  std::vector<uint8_t> packed(static_cast<size_t>(rows * stride), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t q = index[r * cols + c];
      LLMC_CHECK(q < (1u << bits), "palette index out of range");
      const int64_t bit = c * bits;
      uint8_t* dst = packed.data() + r * stride + (bit >> 3);
      const uint32_t v = q << (bit & 7);
      dst[0] |= static_cast<uint8_t>(v);
      if ((bit & 7) + bits > 8) dst[1] |= static_cast<uint8_t>(v >> 8);
    }
  p.indices = Bytes::owned(std::move(packed));
  return p;
}

Result<EncodingPtr> make_palette_outliers(const std::vector<uint64_t>& positions, const std::vector<float>& values,
                                          int64_t numel, DType dtype) {
  if (positions.size() != values.size())
    return make_error(ErrorCode::kInternal, positions.size(), " outlier positions but ", values.size(), " values");
  if (static_cast<uint64_t>(numel) > UINT32_MAX)
    return make_error(ErrorCode::kInvalidArgument, "outliers need a tensor of fewer than 2^32 elements, this one has ",
                      numel);
  for (size_t i = 0; i < positions.size(); ++i)
    if (positions[i] >= static_cast<uint64_t>(numel) || (i > 0 && positions[i] <= positions[i - 1]))
      return make_error(ErrorCode::kInternal, "outlier position ", positions[i], " out of range or not increasing");
  SparseEncoding s;
  s.pattern = SparsePattern::kCsr;
  s.nnz = static_cast<int64_t>(positions.size());
  s.kept_stride = s.nnz;
  const std::vector<uint32_t> row_ptr = {0, static_cast<uint32_t>(s.nnz)};
  s.row_ptr = Bytes::from_vector(row_ptr);
  const int64_t ib = sparse_csr_index_bytes(numel);
  std::vector<uint8_t> idx(static_cast<size_t>(s.nnz * ib));
  for (size_t i = 0; i < positions.size(); ++i) {
    const uint32_t v = static_cast<uint32_t>(positions[i]);
    std::memcpy(idx.data() + i * static_cast<size_t>(ib), &v, static_cast<size_t>(ib));  // little-endian
  }
  s.index = Bytes::owned(std::move(idx));
  sparse_set_dense_values(s, values, 1, dtype);
  return std::make_shared<const Encoding>(Encoding{std::move(s)});
}

uint64_t palette_outlier_position(const SparseEncoding& outliers, int64_t numel, int64_t e) {
  const uint8_t* p = outliers.index.data();
  if (sparse_csr_index_bytes(numel) == 2) {
    uint16_t v;
    std::memcpy(&v, p + e * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, p + e * 4, 4);
  return v;
}

float palette_outlier_value(const SparseEncoding& outliers, int64_t e) {
  return dense_value(std::get<DenseEncoding>(outliers.values->node), e);
}

PaletteOutlierRange palette_outlier_range(const SparseEncoding& outliers, int64_t rows, int64_t cols, int64_t r0,
                                          int64_t r1) {
  const int64_t numel = rows * cols;
  // First entry whose position is >= target (positions increase).
  auto first_at = [&](uint64_t target) {
    int64_t lo = 0, hi = outliers.nnz;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (palette_outlier_position(outliers, numel, mid) < target)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  };
  return {first_at(static_cast<uint64_t>(r0 * cols)), first_at(static_cast<uint64_t>(r1 * cols))};
}

int64_t palette_outlier_count(const PaletteEncoding& p) {
  return p.outliers ? std::get<SparseEncoding>(p.outliers->node).nnz : 0;
}

size_t palette_codebook_bytes(const PaletteEncoding& p) { return p.codebooks.size(); }
size_t palette_outlier_bytes(const PaletteEncoding& p) { return p.outliers ? encoded_bytes(*p.outliers) : 0; }
size_t palette_bytes(const PaletteEncoding& p) {
  return p.codebooks.size() + p.indices.size() + palette_outlier_bytes(p);
}

std::string palette_granularity_name(const PaletteEncoding& p) {
  if (p.group_rows == 0) return "tensor";
  if (p.group_rows == 1) return "row";
  return str_cat("rows:", p.group_rows);
}

std::string describe_palette(const PaletteEncoding& p) {
  std::string out = str_cat("p", p.bits, " ", palette_granularity_name(p));
  if (p.outliers) {
    const auto& s = std::get<SparseEncoding>(p.outliers->node);
    out += str_cat(" +outliers ", dtype_name(std::get<DenseEncoding>(s.values->node).dtype));
  }
  return out;
}

Result<void> validate_palette(const PaletteEncoding& p, const Shape& shape) {
  if (p.bits < 1 || p.bits > 8)
    return make_error(ErrorCode::kFormat, "palette with ", p.bits, " index bits (allowed 1..8)");
  if (p.group_rows < 0) return make_error(ErrorCode::kFormat, "palette group_rows ", p.group_rows, " is negative");
  const int64_t rows = shape.rows(), cols = shape.cols();
  const uint64_t codebook_bytes = static_cast<uint64_t>(palette_codebook_count(p.group_rows, rows)) *
                                  static_cast<uint64_t>(palette_entries(p.bits)) * 2;
  if (p.codebooks.size() != codebook_bytes)
    return make_error(ErrorCode::kFormat, "palette codebooks of shape ", shape.str(), " (", palette_granularity_name(p),
                      ", ", p.bits, " bits) need ", codebook_bytes, " bytes, have ", p.codebooks.size());
  const uint64_t index_bytes = static_cast<uint64_t>(rows) * static_cast<uint64_t>(palette_row_stride(p.bits, cols));
  if (p.indices.size() != index_bytes)
    return make_error(ErrorCode::kFormat, "palette indices of shape ", shape.str(), " need ", index_bytes,
                      " bytes, have ", p.indices.size());
  if (!p.outliers) return {};
  const auto* s = std::get_if<SparseEncoding>(&p.outliers->node);
  if (!s) return make_error(ErrorCode::kFormat, "palette outliers must be a sparse node");
  if (s->pattern != SparsePattern::kCsr)
    return make_error(ErrorCode::kFormat, "palette outliers must use the csr pattern, not ", sparse_pattern_name(*s));
  if (auto v = validate_encoding(*p.outliers, palette_outlier_shape(shape)); !v.ok())
    return with_context(v.error(), "palette outliers");
  if (!std::holds_alternative<DenseEncoding>(s->values->node))
    return make_error(ErrorCode::kFormat, "palette outlier values must be dense");
  return {};
}

void decode_palette_rows(const PaletteEncoding& p, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  const int64_t cols = shape.cols(), stride = palette_row_stride(p.bits, cols);
  std::vector<float> codebook(static_cast<size_t>(palette_entries(p.bits)));
  int64_t cached = -1;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t g = palette_codebook_of_row(p, r);
    if (g != cached) {
      palette_codebook_f32(p, g, codebook.data());
      cached = g;
    }
    const uint8_t* row = p.indices.data() + r * stride;
    float* o = out + (r - r0) * cols;
    for (int64_t c = 0; c < cols; ++c) o[c] = codebook[palette_index_at(row, p.bits, c)];
  }
  if (!p.outliers) return;
  const auto& s = std::get<SparseEncoding>(p.outliers->node);
  const int64_t numel = shape.numel();
  const PaletteOutlierRange range = palette_outlier_range(s, shape.rows(), cols, r0, r1);
  const uint64_t base = static_cast<uint64_t>(r0 * cols);
  for (int64_t e = range.begin; e < range.end; ++e)
    out[palette_outlier_position(s, numel, e) - base] += palette_outlier_value(s, e);
}

}  // namespace llmc
