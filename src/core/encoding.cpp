// Validation, reference decoding and size accounting of the encoding tree.
#include "core/encoding.h"

#include <sstream>

#include "core/sparse.h"

namespace llmc {

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < dims.size(); ++i) out << (i ? ", " : "") << dims[i];
  out << "]";
  return out.str();
}

const char* quant_scheme_name(QuantScheme scheme) {
  switch (scheme) {
    case QuantScheme::kSymmetric: return "sym";
    case QuantScheme::kAsymmetric: return "asym";
    case QuantScheme::kBinary: return "binary";
    case QuantScheme::kTernary: return "ternary";
  }
  return "?";
}

int64_t quant_groups_per_row(const QuantEncoding& q, int64_t cols) {
  if (q.group_size <= 0 || q.group_size >= cols) return 1;
  return (cols + q.group_size - 1) / q.group_size;
}

int64_t quant_row_stride(const QuantEncoding& q, int64_t cols) { return (cols * q.bits + 7) / 8; }

namespace {

float load_scalar(DType dtype, const uint8_t* p) {
  switch (dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return f16_to_f32(h);
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return bf16_to_f32(h);
    }
    default: LLMC_CHECK(false, "not a float dtype");
  }
  return 0;
}

bool is_float(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

Result<void> validate_node(const DenseEncoding& d, const Shape& shape) {
  if (!is_float(d.dtype))
    return make_error(ErrorCode::kFormat, "dense tensor has non-float dtype ", dtype_name(d.dtype));
  const uint64_t want = static_cast<uint64_t>(shape.numel()) * dtype_bytes(d.dtype);
  if (d.data.size() != want)
    return make_error(ErrorCode::kFormat, "dense ", dtype_name(d.dtype), " tensor of shape ", shape.str(), " needs ",
                      want, " bytes, has ", d.data.size());
  return {};
}

Result<void> validate_node(const QuantEncoding& q, const Shape& shape) {
  if (q.bits < 1 || q.bits > 8) return make_error(ErrorCode::kFormat, "quant bits ", q.bits, " outside 1..8");
  if (q.scheme != QuantScheme::kSymmetric && q.scheme != QuantScheme::kAsymmetric)
    return make_error(ErrorCode::kUnsupported, "quant scheme ", quant_scheme_name(q.scheme), " not supported yet");
  if (q.group_size < 0) return make_error(ErrorCode::kFormat, "negative quant group size");
  if (!is_float(q.scale_dtype)) return make_error(ErrorCode::kFormat, "quant scales must be f32/f16/bf16");
  const int64_t rows = shape.rows(), cols = shape.cols();
  const uint64_t codes = static_cast<uint64_t>(rows) * quant_row_stride(q, cols);
  const uint64_t groups = static_cast<uint64_t>(rows) * quant_groups_per_row(q, cols);
  const uint64_t scale_bytes = groups * dtype_bytes(q.scale_dtype);
  if (q.codes.size() != codes)
    return make_error(ErrorCode::kFormat, "quant codes of shape ", shape.str(), " need ", codes, " bytes, have ",
                      q.codes.size());
  if (q.scales.size() != scale_bytes)
    return make_error(ErrorCode::kFormat, "quant scales need ", scale_bytes, " bytes, have ", q.scales.size());
  const uint64_t min_bytes = q.scheme == QuantScheme::kAsymmetric ? scale_bytes : 0;
  if (q.mins.size() != min_bytes)
    return make_error(ErrorCode::kFormat, "quant mins need ", min_bytes, " bytes, have ", q.mins.size());
  return {};
}

void decode_node(const DenseEncoding& d, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  const int64_t cols = shape.cols();
  const size_t esz = dtype_bytes(d.dtype);
  const uint8_t* p = d.data.data() + static_cast<size_t>(r0 * cols) * esz;
  const int64_t n = (r1 - r0) * cols;
  if (d.dtype == DType::kF32) {
    std::memcpy(out, p, static_cast<size_t>(n) * 4);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = load_scalar(d.dtype, p + i * esz);
}

void decode_node(const QuantEncoding& q, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  const int64_t cols = shape.cols();
  const int64_t stride = quant_row_stride(q, cols);
  const int64_t gpr = quant_groups_per_row(q, cols);
  const int64_t gsize = gpr == 1 ? cols : q.group_size;
  const size_t ssz = dtype_bytes(q.scale_dtype);
  const uint32_t mask = (1u << q.bits) - 1;
  const int32_t sym_zero = 1 << (q.bits - 1);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* codes = q.codes.data() + r * stride;
    float* o = out + (r - r0) * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t bit = c * q.bits;
      uint32_t word = codes[bit >> 3];
      if ((bit & 7) + q.bits > 8) word |= static_cast<uint32_t>(codes[(bit >> 3) + 1]) << 8;
      const uint32_t code = (word >> (bit & 7)) & mask;
      const int64_t g = r * gpr + c / gsize;
      const float scale = load_scalar(q.scale_dtype, q.scales.data() + g * ssz);
      if (q.scheme == QuantScheme::kAsymmetric)
        o[c] = static_cast<float>(code) * scale + load_scalar(q.scale_dtype, q.mins.data() + g * ssz);
      else
        o[c] = static_cast<float>(static_cast<int32_t>(code) - sym_zero) * scale;
    }
  }
}

Result<void> validate_node(const SparseEncoding& s, const Shape& shape) { return validate_sparse(s, shape); }
void decode_node(const SparseEncoding& s, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  decode_sparse_rows(s, shape, r0, r1, out);
}

}  // namespace

Result<void> validate_encoding(const Encoding& enc, const Shape& shape) {
  for (int64_t d : shape.dims)
    if (d < 0) return make_error(ErrorCode::kShape, "negative dimension in shape ", shape.str());
  return std::visit([&](const auto& node) { return validate_node(node, shape); }, enc.node);
}

void decode_rows_to_f32(const Encoding& enc, const Shape& shape, int64_t row_begin, int64_t row_end, float* out) {
  LLMC_CHECK(row_begin >= 0 && row_begin <= row_end && row_end <= shape.rows());
  std::visit([&](const auto& node) { decode_node(node, shape, row_begin, row_end, out); }, enc.node);
}

size_t encoded_bytes(const Encoding& enc) {
  struct {
    size_t operator()(const DenseEncoding& d) const { return d.data.size(); }
    size_t operator()(const QuantEncoding& q) const { return q.codes.size() + q.scales.size() + q.mins.size(); }
    size_t operator()(const SparseEncoding& s) const { return sparse_pattern_bytes(s) + sparse_values_bytes(s); }
  } visitor;
  return std::visit(visitor, enc.node);
}

std::string describe_encoding(const Encoding& enc) {
  struct {
    std::string operator()(const DenseEncoding& d) const { return std::string(dtype_name(d.dtype)); }
    std::string operator()(const QuantEncoding& q) const {
      return str_cat("q", q.bits, " ", quant_scheme_name(q.scheme), " g",
                     q.group_size == 0 ? std::string("row") : std::to_string(q.group_size), " (scale ",
                     dtype_name(q.scale_dtype), ")");
    }
    std::string operator()(const SparseEncoding& s) const { return describe_sparse(s); }
  } visitor;
  return std::visit(visitor, enc.node);
}

const char* encoding_kind_name(const Encoding& enc) {
  struct {
    const char* operator()(const DenseEncoding&) const { return "dense"; }
    const char* operator()(const QuantEncoding&) const { return "quant"; }
    const char* operator()(const SparseEncoding&) const { return "sparse"; }
  } visitor;
  return std::visit(visitor, enc.node);
}

}  // namespace llmc
