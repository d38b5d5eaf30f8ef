// Validation, reference decoding and size accounting of the encoding tree.
#include "core/encoding.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <type_traits>

#include "core/lowrank.h"
#include "core/palette.h"
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

int64_t quant_row_stride(const QuantEncoding& q, int64_t cols) {
  if (q.packing == QuantPacking::kTrits5) return (cols + 4) / 5;
  return (cols * q.bits + 7) / 8;
}

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

enum class MinsRule : uint8_t { kNone, kRequired, kOptional };

// What each scheme allows (QuantEncoding's comment in encoding.h is the definition).
struct SchemeRule {
  QuantScheme scheme;
  int min_bits, max_bits;
  MinsRule mins;
  bool trits5;  // kTrits5 packing allowed
};
constexpr SchemeRule kSchemeRules[] = {
    {QuantScheme::kSymmetric, 2, 8, MinsRule::kNone, false},
    {QuantScheme::kAsymmetric, 2, 8, MinsRule::kRequired, false},
    {QuantScheme::kBinary, 1, 1, MinsRule::kOptional, false},
    {QuantScheme::kTernary, 2, 2, MinsRule::kNone, true},
};

const SchemeRule* scheme_rule(QuantScheme scheme) {
  for (const SchemeRule& r : kSchemeRules)
    if (r.scheme == scheme) return &r;
  return nullptr;
}

Result<void> validate_node(const QuantEncoding& q, const Shape& shape) {
  const SchemeRule* rule = scheme_rule(q.scheme);
  if (!rule) return make_error(ErrorCode::kFormat, "unknown quant scheme ", static_cast<int>(q.scheme));
  const char* name = quant_scheme_name(q.scheme);
  if (q.bits < rule->min_bits || q.bits > rule->max_bits)
    return make_error(ErrorCode::kFormat, "quant ", name, " with ", q.bits, " bits (allowed ", rule->min_bits, "..",
                      rule->max_bits, ")");
  if (q.packing != QuantPacking::kBits && q.packing != QuantPacking::kTrits5)
    return make_error(ErrorCode::kFormat, "unknown quant packing ", static_cast<int>(q.packing));
  if (q.packing == QuantPacking::kTrits5 && !rule->trits5)
    return make_error(ErrorCode::kFormat, "trits5 packing is for ternary only, not ", name);
  if (q.group_size < 0) return make_error(ErrorCode::kFormat, "negative quant group size ", q.group_size);
  const bool u8 = q.scale_dtype == DType::kU8;
  if (!is_float(q.scale_dtype) && !u8) return make_error(ErrorCode::kFormat, "quant scales must be f32/f16/bf16/u8");
  const bool has_mins = !q.mins.empty();
  if (rule->mins == MinsRule::kRequired && !has_mins)
    return make_error(ErrorCode::kFormat, "quant ", name, " needs mins");
  if (rule->mins == MinsRule::kNone && has_mins)
    return make_error(ErrorCode::kFormat, "quant ", name, " has no mins, but ", q.mins.size(), " bytes are given");

  const int64_t rows = shape.rows(), cols = shape.cols();
  const uint64_t codes = static_cast<uint64_t>(rows) * static_cast<uint64_t>(quant_row_stride(q, cols));
  const uint64_t groups = static_cast<uint64_t>(rows) * static_cast<uint64_t>(quant_groups_per_row(q, cols));
  const uint64_t scale_bytes = groups * static_cast<uint64_t>(dtype_bytes(q.scale_dtype));
  if (q.codes.size() != codes)
    return make_error(ErrorCode::kFormat, "quant codes of shape ", shape.str(), " need ", codes, " bytes, have ",
                      q.codes.size());
  if (q.scales.size() != scale_bytes)
    return make_error(ErrorCode::kFormat, "quant scales need ", scale_bytes, " bytes, have ", q.scales.size());
  if (has_mins && q.mins.size() != scale_bytes)
    return make_error(ErrorCode::kFormat, "quant mins need ", scale_bytes, " bytes, have ", q.mins.size());
  if (!u8) {
    if (q.scale_block != 0 || !q.scale_meta.empty() || !q.min_meta.empty())
      return make_error(ErrorCode::kFormat, "scale_block / scale_meta / min_meta are for u8 scales only");
    return {};
  }
  if (q.scale_block <= 0) return make_error(ErrorCode::kFormat, "u8 quant scales need scale_block > 0");
  const uint64_t blocks = (groups + static_cast<uint64_t>(q.scale_block) - 1) / static_cast<uint64_t>(q.scale_block);
  const uint64_t meta_bytes = blocks * 2 * sizeof(float);
  if (q.scale_meta.size() != meta_bytes)
    return make_error(ErrorCode::kFormat, "u8 scale_meta needs ", meta_bytes, " bytes, has ", q.scale_meta.size());
  if (q.min_meta.size() != (has_mins ? meta_bytes : 0))
    return make_error(ErrorCode::kFormat, "u8 min_meta needs ", has_mins ? meta_bytes : 0, " bytes, has ",
                      q.min_meta.size());
  return {};
}

float group_entry(const QuantEncoding& q, const Bytes& entries, const Bytes& meta, int64_t g) {
  if (q.scale_dtype != DType::kU8)
    return load_scalar(q.scale_dtype, entries.data() + static_cast<size_t>(g) * dtype_bytes(q.scale_dtype));
  const size_t block = static_cast<size_t>(g / q.scale_block);
  float step, base;
  std::memcpy(&step, meta.data() + block * 8, 4);
  std::memcpy(&base, meta.data() + block * 8 + 4, 4);
  return quant_u8_entry(entries.data()[g], step, base);
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
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* codes = q.codes.data() + r * stride;
    float* o = out + (r - r0) * cols;
    for (int64_t c0 = 0, g = r * gpr; c0 < cols; c0 += gsize, ++g) {
      const float scale = quant_group_scale(q, g), min = quant_group_min(q, g);
      const int64_t c1 = std::min(cols, c0 + gsize);
      for (int64_t c = c0; c < c1; ++c) o[c] = quant_value(q.scheme, q.bits, quant_code_at(q, codes, c), scale, min);
    }
  }
}

Result<void> validate_node(const SparseEncoding& s, const Shape& shape) { return validate_sparse(s, shape); }
void decode_node(const SparseEncoding& s, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  decode_sparse_rows(s, shape, r0, r1, out);
}

Result<void> validate_node(const LowRankEncoding& lr, const Shape& shape) { return validate_lowrank(lr, shape); }
void decode_node(const LowRankEncoding& lr, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  decode_lowrank_rows(lr, shape, r0, r1, out);
}

Result<void> validate_node(const TuckerEncoding& t, const Shape& shape) { return validate_tucker(t, shape); }
void decode_node(const TuckerEncoding& t, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  decode_tucker_rows(t, shape, r0, r1, out);
}

Result<void> validate_node(const PaletteEncoding& p, const Shape& shape) { return validate_palette(p, shape); }
void decode_node(const PaletteEncoding& p, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  decode_palette_rows(p, shape, r0, r1, out);
}

}  // namespace

float quant_group_scale(const QuantEncoding& q, int64_t g) { return group_entry(q, q.scales, q.scale_meta, g); }

float quant_group_min(const QuantEncoding& q, int64_t g) {
  return q.mins.empty() ? 0.0f : group_entry(q, q.mins, q.min_meta, g);
}

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
    size_t operator()(const QuantEncoding& q) const {
      return q.codes.size() + q.scales.size() + q.mins.size() + q.scale_meta.size() + q.min_meta.size();
    }
    size_t operator()(const SparseEncoding& s) const { return sparse_pattern_bytes(s) + sparse_values_bytes(s); }
    size_t operator()(const LowRankEncoding& lr) const { return lowrank_bytes(lr); }
    size_t operator()(const TuckerEncoding& t) const { return tucker_bytes(t); }
    size_t operator()(const PaletteEncoding& p) const { return palette_bytes(p); }
  } visitor;
  return std::visit(visitor, enc.node);
}

void for_each_buffer(const Encoding& enc, const std::function<void(const Bytes&)>& fn) {
  const auto buffers = [&](std::initializer_list<const Bytes*> list) {
    for (const Bytes* b : list)
      if (!b->empty()) fn(*b);
  };
  const auto child = [&](const EncodingPtr& e) {
    if (e) for_each_buffer(*e, fn);
  };
  std::visit(
      [&](const auto& n) {
        using N = std::decay_t<decltype(n)>;
        if constexpr (std::is_same_v<N, DenseEncoding>) {
          buffers({&n.data});
        } else if constexpr (std::is_same_v<N, QuantEncoding>) {
          buffers({&n.codes, &n.scales, &n.mins, &n.scale_meta, &n.min_meta});
        } else if constexpr (std::is_same_v<N, SparseEncoding>) {
          buffers({&n.index, &n.row_ptr});
          child(n.values);
        } else if constexpr (std::is_same_v<N, LowRankEncoding>) {
          child(n.u);
          child(n.v);
        } else if constexpr (std::is_same_v<N, TuckerEncoding>) {
          child(n.core);
          for (const EncodingPtr& f : n.factors) child(f);
        } else {
          static_assert(std::is_same_v<N, PaletteEncoding>);
          buffers({&n.codebooks, &n.indices});
          child(n.outliers);
        }
      },
      enc.node);
}

Result<EncodingPtr> map_buffers(const Encoding& enc, const std::function<Result<Bytes>(const Bytes&)>& fn) {
  Encoding out = enc;
  const auto buffers = [&](std::initializer_list<Bytes*> list) -> Result<void> {
    for (Bytes* b : list)
      if (!b->empty()) {
        LLMC_ASSIGN_OR_RETURN(*b, fn(*b));
      }
    return {};
  };
  const auto child = [&](EncodingPtr& e) -> Result<void> {
    if (e) {
      LLMC_ASSIGN_OR_RETURN(e, map_buffers(*e, fn));
    }
    return {};
  };
  LLMC_TRY(std::visit(
      [&](auto& n) -> Result<void> {
        using N = std::decay_t<decltype(n)>;
        if constexpr (std::is_same_v<N, DenseEncoding>) {
          return buffers({&n.data});
        } else if constexpr (std::is_same_v<N, QuantEncoding>) {
          return buffers({&n.codes, &n.scales, &n.mins, &n.scale_meta, &n.min_meta});
        } else if constexpr (std::is_same_v<N, SparseEncoding>) {
          LLMC_TRY(buffers({&n.index, &n.row_ptr}));
          return child(n.values);
        } else if constexpr (std::is_same_v<N, LowRankEncoding>) {
          LLMC_TRY(child(n.u));
          return child(n.v);
        } else if constexpr (std::is_same_v<N, TuckerEncoding>) {
          LLMC_TRY(child(n.core));
          for (EncodingPtr& f : n.factors) LLMC_TRY(child(f));
          return {};
        } else {
          static_assert(std::is_same_v<N, PaletteEncoding>);
          LLMC_TRY(buffers({&n.codebooks, &n.indices}));
          return child(n.outliers);
        }
      },
      out.node));
  return std::make_shared<const Encoding>(std::move(out));
}

std::string describe_encoding(const Encoding& enc) {
  struct {
    std::string operator()(const DenseEncoding& d) const { return std::string(dtype_name(d.dtype)); }
    // "q4 asym g32 (scale f16)", "q2 ternary g64 trits5 (scale u8/256)", "q1 binary two-level g32 ..."
    std::string operator()(const QuantEncoding& q) const {
      std::string scale(dtype_name(q.scale_dtype));
      if (q.scale_dtype == DType::kU8) scale += str_cat("/", q.scale_block);
      const bool two_level = q.scheme == QuantScheme::kBinary && !q.mins.empty();
      return str_cat("q", q.bits, " ", quant_scheme_name(q.scheme), two_level ? " two-level" : "", " g",
                     q.group_size == 0 ? std::string("row") : std::to_string(q.group_size),
                     q.packing == QuantPacking::kTrits5 ? " trits5" : "", " (scale ", scale, ")");
    }
    std::string operator()(const SparseEncoding& s) const { return describe_sparse(s); }
    std::string operator()(const LowRankEncoding& lr) const { return describe_lowrank(lr); }
    std::string operator()(const TuckerEncoding& t) const { return describe_tucker(t); }
    std::string operator()(const PaletteEncoding& p) const { return describe_palette(p); }
  } visitor;
  return std::visit(visitor, enc.node);
}

const char* encoding_kind_name(const Encoding& enc) {
  struct {
    const char* operator()(const DenseEncoding&) const { return "dense"; }
    const char* operator()(const QuantEncoding&) const { return "quant"; }
    const char* operator()(const SparseEncoding&) const { return "sparse"; }
    const char* operator()(const LowRankEncoding&) const { return "lowrank"; }
    const char* operator()(const TuckerEncoding&) const { return "tucker"; }
    const char* operator()(const PaletteEncoding&) const { return "palette"; }
  } visitor;
  return std::visit(visitor, enc.node);
}

}  // namespace llmc
