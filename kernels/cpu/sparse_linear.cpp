// Sparse linear kernels: picks the fused SIMD kernel for a Sparse weight's pattern and values, prepares n:m
// window tables, dequantizes Quant values row by row and pads the last row for the kernels' vector loads.
#include "kernels/cpu/sparse_linear.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/sparse.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/sparse_index.h"
#include "kernels/cpu/sparse_simd.h"

namespace llmc::kernels {
namespace {

using simd::SparseRowKernel;
using simd::SparseValues;

// ---- n:m rows as window masks ----

// n:m patterns other than the quads and halves kernels' run through the bitmask kernel on masks
// built per row block. With m | 8 a window of 8 columns holds 8n/m kept entries whose packed
// indices are one field of 8n/m · index_bits bits: fields up to kMaxFieldBits map through a table
// (2^bits bytes) to the window's mask byte. Wider fields (5:8, 6:8, 7:8) and m not dividing 8 set
// the bits entry by entry.
constexpr int kMaxFieldBits = 12;

int window_field_bits(int n, int m) { return 8 % m == 0 ? 8 / m * n * sparse_nm_index_bits(m) : 0; }

const uint8_t* nm_window_table(int n, int m) {
  static std::array<std::once_flag, 17 * 17> once;
  static std::array<std::vector<uint8_t>, 17 * 17> tables;
  const int slot = n * 17 + m;
  std::call_once(once[slot], [&] {
    const int bits = sparse_nm_index_bits(m), field = window_field_bits(n, m), per_window = 8 / m * n;
    std::vector<uint8_t>& t = tables[slot];
    t.assign(size_t{1} << field, 0);
    for (uint32_t f = 0; f < t.size(); ++f) {
      uint32_t mask = 0;
      for (int i = 0; i < per_window; ++i) {
        const uint32_t in_group = (f >> (i * bits)) & ((1u << bits) - 1);
        mask |= 1u << ((i / n) * m + static_cast<int>(in_group)) % 8;
      }
      t[f] = static_cast<uint8_t>(mask);
    }
  });
  return tables[slot].data();
}

// The in-group index field of `width` bits at bit `bit` of a row's packed indices, read as a
// 16-bit word (the row needs one byte of padding).
inline uint32_t index_field(const uint8_t* idx, int64_t bit, int width) {
  uint16_t word;
  std::memcpy(&word, idx + (bit >> 3), 2);
  return (static_cast<uint32_t>(word) >> (bit & 7)) & ((1u << width) - 1);
}

// Bitmask bytes of rows [r0, r1) of an n:m weight (any n:m), into masks [r1 - r0, ceil(cols / 8)].
// Index fields come from a copy of each row padded by 2 bytes (no branch on whether a field
// crosses a byte).
void nm_row_masks(const SparseEncoding& s, int64_t cols, int64_t r0, int64_t r1, std::vector<uint8_t>& masks) {
  const int64_t stride = sparse_mask_stride(cols), index_stride = sparse_nm_index_stride(s.n, s.m, cols);
  const int bits = sparse_nm_index_bits(s.m), field = window_field_bits(s.n, s.m);
  const uint8_t* table = field > 0 && field <= kMaxFieldBits ? nm_window_table(s.n, s.m) : nullptr;
  const int64_t windows = table != nullptr ? cols / 8 : 0;       // windows mapped through the table
  masks.assign(static_cast<size_t>((r1 - r0) * stride + 8), 0);  // + the kernels' pattern over-read
  thread_local std::vector<uint8_t> padded;
  padded.assign(static_cast<size_t>(index_stride + 2), 0);
  uint8_t* const idx = padded.data();
  for (int64_t r = r0; r < r1; ++r) {
    std::memcpy(idx, s.index.data() + r * index_stride, static_cast<size_t>(index_stride));
    uint8_t* const row = masks.data() + (r - r0) * stride;
    for (int64_t j = 0; j < windows; ++j) row[j] = table[index_field(idx, j * field, field)];
    // The other entries group by group (a ragged last group keeps min(n, width)); columns increase,
    // so the bits of 64 columns gather in a register before they are stored.
    uint64_t acc = 0;
    int64_t base = windows * 8 / 64 * 64, bit = windows * 8 / s.m * s.n * bits;
    for (int64_t g0 = windows * 8; g0 < cols; g0 += s.m) {
      const int64_t kept = std::min<int64_t>(s.n, cols - g0);
      for (int64_t i = 0; i < kept; ++i, bit += bits) {
        const int64_t c = g0 + index_field(idx, bit, bits);
        if (c >= base + 64) {
          for (int64_t b = 0; b < 8; ++b) row[base / 8 + b] |= static_cast<uint8_t>(acc >> (8 * b));
          acc = 0;
          base = c / 64 * 64;
        }
        acc |= uint64_t{1} << (c - base);
      }
    }
    for (int64_t b = 0; b < 8 && base / 8 + b < stride; ++b) row[base / 8 + b] |= static_cast<uint8_t>(acc >> (8 * b));
  }
}

// ---- values ----

// The kept values of rows [r0, r1) as the kernels read them: in place for Dense values, else
// dequantized to f32 (padded by a window) in a per-thread buffer.
struct RowValues {
  const uint8_t* data;  // row r0's first value
  int64_t stride;       // entries between rows
  SparseValues type;
};

constexpr int64_t kValueSlack = 16;  // values the kernels may read past a row's last kept entry
constexpr int64_t kIndexSlack = 4;   // pattern bytes the kernels may read past a row's last one

SparseValues dense_value_type(DType dtype) {
  switch (dtype) {
    case DType::kF16: return SparseValues::kF16;
    case DType::kBF16: return SparseValues::kBF16;
    default: return SparseValues::kF32;
  }
}

// 4- and 8-bit codes in kBits packing, groups of whole windows: dequantized by the SIMD kernel.
bool fast_dequant(const QuantEncoding& q) {
  return (q.bits == 4 || q.bits == 8) && q.packing == QuantPacking::kBits &&
         (q.scheme == QuantScheme::kSymmetric || q.scheme == QuantScheme::kAsymmetric) && q.group_size % 8 == 0;
}

// Row r's group scales and biases (value = code · scale + bias) of a fast_dequant Quant as f32: the
// symmetric offset folded into the bias.
void quant_row_params(const QuantEncoding& q, int64_t gpr, int64_t r, float* scale, float* bias) {
  const bool symmetric = q.scheme == QuantScheme::kSymmetric;
  if (q.scale_dtype == DType::kF16) {  // the common case: converted by SIMD
    simd::f16_to_f32_n(q.scales.data() + r * gpr * 2, gpr, scale);
    if (!symmetric) simd::f16_to_f32_n(q.mins.data() + r * gpr * 2, gpr, bias);
  } else {
    for (int64_t g = 0; g < gpr; ++g) {
      scale[g] = quant_group_scale(q, r * gpr + g);
      if (!symmetric) bias[g] = quant_group_min(q, r * gpr + g);
    }
  }
  if (symmetric) {
    const float offset = static_cast<float>(1 << (q.bits - 1));
    for (int64_t g = 0; g < gpr; ++g) bias[g] = -offset * scale[g];
  }
}

RowValues row_values(const SparseEncoding& s, int64_t rows, int64_t r0, int64_t r1, std::vector<float>& buffer) {
  if (const auto* d = std::get_if<DenseEncoding>(&s.values->node))
    return {d->data.data() + static_cast<size_t>(r0 * s.kept_stride) * dtype_bytes(d->dtype), s.kept_stride,
            dense_value_type(d->dtype)};
  const int64_t kept = s.kept_stride;
  buffer.resize(static_cast<size_t>((r1 - r0) * kept + kValueSlack));
  const auto* q = std::get_if<QuantEncoding>(&s.values->node);
  if (q == nullptr || !fast_dequant(*q) || kept == 0) {
    decode_rows_to_f32(*s.values, sparse_values_shape(s, rows), r0, r1, buffer.data());
    return {reinterpret_cast<const uint8_t*>(buffer.data()), kept, SparseValues::kF32};
  }
  const int64_t gpr = quant_groups_per_row(*q, kept), group = gpr == 1 ? kept : q->group_size;
  const int64_t code_stride = quant_row_stride(*q, kept);
  thread_local std::vector<float> scale, bias;
  scale.resize(static_cast<size_t>(gpr));
  bias.resize(static_cast<size_t>(gpr));
  for (int64_t r = r0; r < r1; ++r) {
    quant_row_params(*q, gpr, r, scale.data(), bias.data());
    simd::dequant_codes(q->codes.data() + r * code_stride, q->bits, kept, group, scale.data(), bias.data(),
                        buffer.data() + (r - r0) * kept);
  }
  return {reinterpret_cast<const uint8_t*>(buffer.data()), kept, SparseValues::kF32};
}

size_t value_bytes(SparseValues t) { return t == SparseValues::kF32 ? 4 : 2; }

// Quant values the quads kernel dequantizes in registers (SparseValues::kQuant): fast_dequant codes
// whose groups are 16 · 2^s kept entries or the whole row, on a target that has the fused step.
// Returns s (40 for whole rows), or -1.
int fused_quant_shift(const SparseEncoding& s) {
  const auto* q = std::get_if<QuantEncoding>(&s.values->node);
  if (q == nullptr || !fast_dequant(*q) || s.kept_stride == 0 || !simd::sparse_avx512()) return -1;
  if (quant_groups_per_row(*q, s.kept_stride) == 1) return 40;
  for (int shift = 0; shift < 20; ++shift)
    if (q->group_size == int64_t{16} << shift) return shift;
  return -1;
}

// Sets a's kQuant fields for rows [r0, r1) (per row its scales, then its biases, as f32 in `params`).
void set_fused_quant(const SparseEncoding& s, int shift, int64_t r0, int64_t r1, std::vector<float>& params,
                     simd::SparseRowsArgs& a) {
  const auto& q = std::get<QuantEncoding>(s.values->node);
  const int64_t gpr = quant_groups_per_row(q, s.kept_stride);
  params.resize(static_cast<size_t>(2 * (r1 - r0) * gpr));
  for (int64_t r = r0; r < r1; ++r) {
    float* p = params.data() + 2 * (r - r0) * gpr;
    quant_row_params(q, gpr, r, p, p + gpr);
  }
  a.value_type = SparseValues::kQuant;
  a.quant_bits = q.bits;
  a.quant_step_shift = shift;
  a.quant_code_stride = quant_row_stride(q, s.kept_stride);
  a.quant_codes = q.codes.data() + r0 * a.quant_code_stride;
  a.quant_groups = gpr;
  a.quant_params = params.data();
}

// ---- patterns ----

// n:m patterns of the quads kernel (every 2 kept entries in one aligned quad of 4 columns) and of
// the halves kernel (every 4 kept entries start a group and span <= 8 columns).
bool nm_quads(int n, int m) { return m == 2 * n && (n == 1 || n == 2); }
bool nm_halves(int n, int m) { return 4 % n == 0 && m <= 2 * n; }

// Rows [r0, r1) of a pattern (bitmask or n:m) weight times tokens [t_begin, t_end) into y, or, with
// `expand`, the rows expanded to dense rows of the kernel's value type (returned) at row (r - r0) · cols
// of `expand` (n:m through their masks; x and y are then not read or written).
SparseValues pattern_rows(const SparseEncoding& s, int64_t rows, int64_t cols, const float* x, const float* aux,
                          int64_t t_begin, int64_t t_end, int64_t r0, int64_t r1, float* y, void* expand = nullptr) {
  simd::SparseRowsArgs a{};
  a.cols = cols;
  a.x = x + t_begin * cols;
  a.x_stride = cols;
  a.xq_stride = simd::quad_columns(cols);
  a.xq = aux != nullptr ? aux + t_begin * a.xq_stride : nullptr;
  a.tokens = t_end - t_begin;
  a.y_stride = rows;
  thread_local std::vector<uint8_t> built_masks;
  thread_local std::vector<float> dequantized;
  const uint8_t* index = s.index.data();
  a.kernel = SparseRowKernel::kMaskWindows;
  a.index_stride = sparse_mask_stride(cols);
  a.nm_n = s.n;
  a.nm_m = s.m;
  a.nm_bits = s.pattern == SparsePattern::kNM ? sparse_nm_index_bits(s.m) : 0;
  const SparsePath path = sparse_path(s);
  switch (expand != nullptr && path != SparsePath::kMaskWindows ? SparsePath::kNmMasks : path) {
    case SparsePath::kMaskWindows: index += r0 * a.index_stride; break;
    case SparsePath::kNmMasks:
      nm_row_masks(s, cols, r0, r1, built_masks);
      index = built_masks.data();
      break;
    case SparsePath::kNmQuads:
    case SparsePath::kNmHalves:
      a.kernel = nm_quads(s.n, s.m) ? SparseRowKernel::kNmQuads : SparseRowKernel::kNmHalves;
      a.index_stride = sparse_nm_index_stride(s.n, s.m, cols);
      index += r0 * a.index_stride;
      break;
    case SparsePath::kCsr: break;  // csr_rows
  }
  const int shift = expand == nullptr && a.kernel == SparseRowKernel::kNmQuads ? fused_quant_shift(s) : -1;
  thread_local std::vector<float> quant_params;
  RowValues v{nullptr, 0, SparseValues::kQuant};
  if (shift >= 0) {
    set_fused_quant(s, shift, r0, r1, quant_params, a);  // codes read in place, never past a row
  } else {
    v = row_values(s, rows, r0, r1, dequantized);
    a.value_type = v.type;
  }
  a.value_stride = v.stride;
  // A row may run in place when the rows after it, up to the tensor's end, hold at least the
  // kernel's over-read (kValueSlack values, kIndexSlack pattern bytes); the tensor's last rows
  // (one, or more when rows are narrower than the over-read) run one by one from padded copies.
  const int64_t tail = std::max({int64_t{1}, (kValueSlack + s.kept_stride - 1) / std::max<int64_t>(1, s.kept_stride),
                                 (kIndexSlack + a.index_stride - 1) / std::max<int64_t>(1, a.index_stride)});
  const int64_t direct = std::clamp<int64_t>(rows - tail - r0, 0, r1 - r0);
  a.index = index;
  a.values = v.data;
  a.rows = direct;
  a.y = y + t_begin * rows + r0;
  a.expand = expand;
  if (direct > 0) simd::sparse_pattern_rows(a);
  thread_local std::vector<uint8_t> index_copy, values_copy;
  const size_t esz = value_bytes(v.type);
  float* const y0 = y + t_begin * rows + r0;
  const simd::SparseRowsArgs first = a;
  for (int64_t r = direct; r < r1 - r0; ++r) {
    index_copy.assign(static_cast<size_t>(a.index_stride + kIndexSlack), 0);
    std::memcpy(index_copy.data(), index + r * a.index_stride, static_cast<size_t>(a.index_stride));
    a.index = index_copy.data();
    if (shift >= 0) {  // row r's codes and parameters in place
      a.quant_codes = first.quant_codes + r * a.quant_code_stride;
      a.quant_params = first.quant_params + 2 * r * a.quant_groups;
    } else {
      values_copy.assign(static_cast<size_t>(s.kept_stride + kValueSlack) * esz, 0);
      std::memcpy(values_copy.data(), v.data + static_cast<size_t>(r * v.stride) * esz,
                  static_cast<size_t>(s.kept_stride) * esz);
      a.values = values_copy.data();
    }
    a.rows = 1;
    a.y = y0 + r;
    if (expand != nullptr) a.expand = static_cast<uint8_t*>(expand) + r * cols * esz;
    simd::sparse_pattern_rows(a);
  }
  return v.type;
}

// Break-even sparsity of each kernel path at decode by value dtype: the sparse kernel beats the
// dense kernel of the same dtype from this sparsity on. Measured on an idle machine with
// bench/bench_sparse_matvec (2048 x 5632, 2 threads, weights streamed from DRAM, both kernels with
// prefetch) and whole-model decode; the tables and commands are in docs/sparsity.md. f16 bitmask
// rows on AVX-512 (16-column vexpandps steps) pay from 40 % (Sapphire Rapids: 1.15x kernel, 1.03-1.17x
// whole-model), on AVX2 from 50 % (Zen 3: 40 % 0.90x).
// Bitmask rows run through their window index (sparse_index.h) instead of the mask on AVX-512 targets from
// this sparsity on, for calls below sparse_expand_tokens (below that sparsity a window holds more than
// 16 kept entries too often: a second step and a mispredicted branch). Measured with
// bench/bench_sparse_matvec, docs/sparsity.md.
constexpr double kWindowIndexFrom = 0.6;

struct BreakEven {
  SparsePath path;
  double f16;         // f16 and bf16 values (2 bytes)
  double f16_avx512;  // the same on AVX-512 targets
  double f32;
};
constexpr BreakEven kBreakEven[] = {
    {SparsePath::kMaskWindows, 0.5, 0.4, 0.4}, {SparsePath::kNmQuads, 0.5, 0.5, 0.5},
    {SparsePath::kNmHalves, 0.5, 0.5, 0.5},    {SparsePath::kNmMasks, 0.5, 0.5, 0.5},
    {SparsePath::kCsr, 0.9, 0.9, 0.9},
};

void csr_rows(const SparseEncoding& s, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
              int64_t r0, int64_t r1, float* y) {
  thread_local std::vector<float> dequantized;
  thread_local std::vector<uint32_t> row_ptr;
  row_ptr.resize(static_cast<size_t>(r1 - r0 + 1));
  std::memcpy(row_ptr.data(), s.row_ptr.data() + r0 * 4, row_ptr.size() * 4);  // the section may be unaligned
  const RowValues v = row_values(s, rows, r0, r1, dequantized);
  simd::CsrRowsArgs a{};
  a.row_ptr = row_ptr.data();
  a.wide = sparse_csr_index_bytes(cols) == 4;
  a.columns = s.index.data() + static_cast<size_t>(row_ptr[0]) * (a.wide ? 4 : 2);
  a.values = v.data;
  a.value_stride = v.stride;
  a.value_type = v.type;
  a.rows = r1 - r0;
  a.x = x + t_begin * cols;
  a.x_stride = cols;
  a.n = t_end - t_begin;
  a.y = y + t_begin * rows + r0;
  a.y_stride = rows;
  simd::sparse_csr_rows(a);
}

// Bitmask rows through their window index (AVX-512 decode from kWindowIndexFrom sparsity), values as
// row_values gives them. The kernel reads up to kValueSlack values past a row's last one: stored values
// of the tensor's last rows run from padded copies (row_values' buffer carries that slack).
void window_index_rows(const SparseEncoding& s, const WindowIndex& wi, int64_t rows, int64_t cols, const float* x,
                       int64_t t_begin, int64_t t_end, int64_t r0, int64_t r1, float* y) {
  thread_local std::vector<float> dequantized;
  thread_local std::vector<uint8_t> padded;
  const RowValues v = row_values(s, rows, r0, r1, dequantized);
  simd::WindowIndexRowsArgs a{};
  a.windows = wi.windows;
  a.column_stride = wi.stride;
  a.value_stride = v.stride;
  a.value_type = v.type;
  a.cols = cols;
  a.x = x + t_begin * cols;
  a.x_stride = cols;
  a.tokens = t_end - t_begin;
  a.y_stride = rows;
  const auto run = [&](int64_t r, int64_t n, const uint8_t* values) {
    a.counts = wi.counts.data() + r * wi.windows;
    a.columns = wi.columns.data() + r * wi.stride;
    a.values = values;
    a.rows = n;
    a.y = y + t_begin * rows + r;
    simd::sparse_window_index_rows(a);
  };
  const size_t esz = value_bytes(v.type);
  const int64_t tail = std::holds_alternative<DenseEncoding>(s.values->node)
                           ? (kValueSlack + s.kept_stride - 1) / std::max<int64_t>(1, s.kept_stride)
                           : 0;
  const int64_t direct = std::clamp<int64_t>(rows - tail - r0, 0, r1 - r0);
  if (direct > 0) run(r0, direct, v.data);
  for (int64_t r = r0 + direct; r < r1; ++r) {
    padded.assign(static_cast<size_t>(s.kept_stride + kValueSlack) * esz, 0);
    std::memcpy(padded.data(), v.data + static_cast<size_t>((r - r0) * v.stride) * esz,
                static_cast<size_t>(s.kept_stride) * esz);
    run(r, 1, padded.data());
  }
}

}  // namespace

SparsePath sparse_path(const SparseEncoding& s) {
  switch (s.pattern) {
    case SparsePattern::kBitmask: return SparsePath::kMaskWindows;
    case SparsePattern::kCsr: return SparsePath::kCsr;
    case SparsePattern::kNM: break;
  }
  if (nm_quads(s.n, s.m)) return SparsePath::kNmQuads;
  if (nm_halves(s.n, s.m)) return SparsePath::kNmHalves;
  return SparsePath::kNmMasks;
}

const char* sparse_path_name(SparsePath path) {
  switch (path) {
    case SparsePath::kMaskWindows: return "bitmask windows";
    case SparsePath::kNmQuads: return "n:m quads";
    case SparsePath::kNmHalves: return "n:m halves";
    case SparsePath::kNmMasks: return "n:m as window masks";
    case SparsePath::kCsr: return "csr gather";
  }
  return "?";
}

bool sparse_beats_dense(const Tensor& w) {
  const auto* s = std::get_if<SparseEncoding>(&w.encoding->node);
  if (s == nullptr || w.numel() == 0) return false;
  const auto* values = std::get_if<DenseEncoding>(&s->values->node);
  if (values == nullptr) return false;
  const double sparsity = 1.0 - static_cast<double>(s->nnz) / static_cast<double>(w.numel());
  const SparsePath path = sparse_path(*s);
  for (const BreakEven& b : kBreakEven)
    if (b.path == path)
      return sparsity >= (values->dtype == DType::kF32 ? b.f32 : simd::sparse_avx512() ? b.f16_avx512 : b.f16);
  return false;
}

// Where the expansion (SIMD for bitmask rows, table lookups building n:m masks, the reference
// decoder for CSR) costs less than the sparse kernel's per-token work: measured with
// bench/bench_sparse_matvec at 2-12 tokens (docs/sparsity.md).
int64_t sparse_expand_tokens(const SparseEncoding& s) { return s.pattern == SparsePattern::kBitmask ? 4 : 16; }

int64_t sparse_aux_floats(const Tensor& w, int64_t n) {
  const auto& s = std::get<SparseEncoding>(w.encoding->node);
  return sparse_path(s) == SparsePath::kNmQuads ? n * simd::quad_columns(w.cols()) : 0;
}

bool sparse_window_index_path(const Tensor& w) {
  const auto* s = std::get_if<SparseEncoding>(&w.encoding->node);
  if (s == nullptr || s->pattern != SparsePattern::kBitmask || w.numel() == 0 || !simd::sparse_avx512()) return false;
  return 1.0 - static_cast<double>(s->nnz) / static_cast<double>(w.numel()) >= kWindowIndexFrom;
}

uint64_t decode_read_bytes(const Tensor& w) {
  if (!sparse_window_index_path(w)) return w.encoded_bytes();
  const auto& s = std::get<SparseEncoding>(w.encoding->node);
  const int64_t windows = (w.cols() + kIndexWindow - 1) / kIndexWindow;
  return w.encoded_bytes() - s.index.size() + static_cast<uint64_t>(w.rows() * (s.kept_stride + windows));
}

void sparse_prepare(const Tensor& w, const float* x, int64_t n, float* aux) {
  // The window index is built here, before the parallel loop, so that the build runs on every thread.
  if (sparse_window_index_path(w) && n < sparse_expand_tokens(std::get<SparseEncoding>(w.encoding->node)))
    window_index(w);
  const int64_t cols = w.cols(), qcols = simd::quad_columns(cols);
  if (sparse_aux_floats(w, n) == 0) return;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t b = 0; b < qcols; b += 16)
      for (int j = 0; j < 4; ++j)
        std::memcpy(aux + t * qcols + b + 4 * j, x + t * cols + b + 4 * simd::kQuadOrder[j], 4 * sizeof(float));
}

namespace {

// Prefill: kExpandRows rows at a time expanded to dense rows of their value type (f16/bf16 values stay
// 16-bit, Quant values are f32) by the SIMD expansion, then the dense kernel of that type over all
// tokens of the call (CSR rows through the reference decoder).
void expanded_rows(const Tensor& w, const float* x, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                   float* y) {
  const auto& s = std::get<SparseEncoding>(w.encoding->node);
  if (s.pattern == SparsePattern::kCsr) return decoded_rows(w, x, nullptr, t_begin, t_end, r_begin, r_end, y);
  constexpr int64_t kExpandRows = 16;
  const int64_t rows = w.rows(), cols = w.cols(), n = t_end - t_begin;
  thread_local std::vector<float> block, out;
  block.resize(static_cast<size_t>(kExpandRows * cols));
  out.resize(static_cast<size_t>(kExpandRows * n));
  for (int64_t r = r_begin; r < r_end; r += kExpandRows) {
    const int64_t nr = std::min(kExpandRows, r_end - r);
    const SparseValues type = pattern_rows(s, rows, cols, x, nullptr, t_begin, t_begin, r, r + nr, y, block.data());
    const simd::MatmulRowsFn dense = type == SparseValues::kF16    ? simd::matmul_rows_f16
                                     : type == SparseValues::kBF16 ? simd::matmul_rows_bf16
                                                                   : simd::matmul_rows_f32;
    dense(reinterpret_cast<const uint8_t*>(block.data()), nr, cols, x + t_begin * cols, 0, n, 0, nr, out.data());
    for (int64_t t = 0; t < n; ++t) std::copy_n(out.data() + t * nr, nr, y + (t_begin + t) * rows + r);
  }
}

}  // namespace

void sparse_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                 int64_t r_end, float* y) {
  const auto& s = std::get<SparseEncoding>(w.encoding->node);
  if (t_end - t_begin >= sparse_expand_tokens(s)) return expanded_rows(w, x, t_begin, t_end, r_begin, r_end, y);
  const bool indexed = sparse_window_index_path(w);
  const std::shared_ptr<const WindowIndex> wi = indexed ? window_index(w) : nullptr;
  // Quant values are dequantized (row_values) kDequantRows rows at a time, so that the f32 values the
  // kernel reads are still in the cache; a thread's whole range at once would write and re-read them
  // from DRAM.
  constexpr int64_t kDequantRows = 16;
  const int64_t chunk =
      std::holds_alternative<DenseEncoding>(s.values->node) ? std::max<int64_t>(1, r_end - r_begin) : kDequantRows;
  for (int64_t r0 = r_begin; r0 < r_end; r0 += chunk) {
    const int64_t r1 = std::min(r_end, r0 + chunk);
    if (indexed)
      window_index_rows(s, *wi, w.rows(), w.cols(), x, t_begin, t_end, r0, r1, y);
    else if (s.pattern == SparsePattern::kCsr)
      csr_rows(s, w.rows(), w.cols(), x, t_begin, t_end, r0, r1, y);
    else
      pattern_rows(s, w.rows(), w.cols(), x, aux, t_begin, t_end, r0, r1, y);
  }
}

}  // namespace llmc::kernels
