// Quant linear kernels: per-format row unpackers (codes -> int8 values in L1), per-row scale/min
// decoding (f32/f16/bf16/u8 double-quantized), the dispatch of the SIMD group dot, and the
// scalar reference that applies quant_value per element.
#include "kernels/cpu/quant_linear.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant_i8.h"
#include "kernels/cpu/quant_simd.h"
#include "kernels/cpu/simd.h"

namespace llmc::kernels {
namespace {

// Integer value of code q with scale 1 and min 0: the per-column factor v of weight = v·scale + min.
int32_t code_value(QuantScheme scheme, int bits, uint32_t q) {
  return static_cast<int32_t>(quant_value(scheme, bits, q, 1.0f, 0.0f));
}

// Code c of a kBits row (LSB-first, codes may straddle a byte boundary).
uint32_t bits_code(const uint8_t* row, int64_t c, int bits) {
  const int64_t bit = c * bits;
  uint32_t word = row[bit >> 3];
  if ((bit & 7) + bits > 8) word |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  return (word >> (bit & 7)) & ((1u << bits) - 1);
}
// Code c of a kTrits5 row: digit c % 5 of byte c / 5 in base 3.
uint32_t trits5_code(const uint8_t* row, int64_t c) {
  static constexpr uint32_t kPow3[5] = {1, 3, 9, 27, 81};
  return (row[c / 5] / kPow3[c % 5]) % 3;
}

uint32_t code_at(const QuantEncoding& q, const uint8_t* row, int64_t c) {
  return q.packing == QuantPacking::kTrits5 ? trits5_code(row, c) : bits_code(row, c, q.bits);
}

int64_t group_len(const QuantEncoding& q, int64_t cols) {
  return quant_groups_per_row(q, cols) == 1 ? cols : q.group_size;
}

// Unpacks the `cols` codes of one row into int8 values v (see code_value). dst has cols + 8 bytes.
using Unpack = void (*)(const QuantEncoding& q, const uint8_t* row, int64_t cols, uint8_t* dst);

template <uint8_t kOffset>
void unpack_nibbles(const QuantEncoding&, const uint8_t* row, int64_t cols, uint8_t* dst) {
  simd::unpack_nibbles(row, cols / 2, kOffset, dst);
  if (cols % 2) dst[cols - 1] = static_cast<uint8_t>((row[cols / 2] & 0x0F) - kOffset);
}

// A byte -> values table (up to 8 int8 values packed little-endian in a u64) for 1- and 2-bit
// codes and trits.
template <QuantScheme kScheme, int kBits, QuantPacking kPacking>
const std::array<uint64_t, 256>& byte_lut() {
  static const std::array<uint64_t, 256> lut = [] {
    std::array<uint64_t, 256> t{};
    QuantEncoding q;
    q.bits = kBits;
    q.packing = kPacking;
    const int per_byte = kPacking == QuantPacking::kTrits5 ? 5 : 8 / kBits;
    for (int b = 0; b < 256; ++b) {
      const uint8_t byte = static_cast<uint8_t>(b);
      uint64_t e = 0;
      for (int i = 0; i < per_byte; ++i) {
        const auto v = static_cast<uint8_t>(code_value(kScheme, kBits, code_at(q, &byte, i)));
        e |= static_cast<uint64_t>(v) << (8 * i);
      }
      t[b] = e;
    }
    return t;
  }();
  return lut;
}

template <QuantScheme kScheme, int kBits, QuantPacking kPacking>
void unpack_lut(const QuantEncoding&, const uint8_t* row, int64_t cols, uint8_t* dst) {
  constexpr int kPerByte = kPacking == QuantPacking::kTrits5 ? 5 : 8 / kBits;
  const auto& lut = byte_lut<kScheme, kBits, kPacking>();
  const int64_t nbytes = (cols + kPerByte - 1) / kPerByte;
  // Each entry writes 8 bytes; the buffer's 8 bytes of padding absorb the overhang.
  for (int64_t i = 0; i < nbytes; ++i) std::memcpy(dst + i * kPerByte, &lut[row[i]], 8);
}

// Any kBits width: 8 codes (kBits bytes) per step from one little-endian word; scheme values are
// code - kOffset (symmetric: 2^(bits-1), asymmetric: 0).
template <int kBits, int kOffset>
void unpack_bits(const QuantEncoding&, const uint8_t* row, int64_t cols, uint8_t* dst) {
  constexpr uint64_t kMask = (uint64_t{1} << kBits) - 1;
  const int64_t chunks = cols / 8;
  // Chunks whose 8-byte word lies inside the row load it whole; the last ones copy kBits bytes.
  const int64_t row_bytes = (cols * kBits + 7) / 8;
  const int64_t wide = row_bytes >= 8 ? std::min(chunks, (row_bytes - 8) / kBits + 1) : 0;
  for (int64_t i = 0; i < chunks; ++i) {
    uint64_t word = 0;
    if (i < wide)
      std::memcpy(&word, row + i * kBits, 8);
    else
      std::memcpy(&word, row + i * kBits, kBits);
    for (int k = 0; k < 8; ++k) dst[i * 8 + k] = static_cast<uint8_t>(((word >> (k * kBits)) & kMask) - kOffset);
  }
  for (int64_t c = chunks * 8; c < cols; ++c) dst[c] = static_cast<uint8_t>(bits_code(row, c, kBits) - kOffset);
}

void unpack_generic(const QuantEncoding& q, const uint8_t* row, int64_t cols, uint8_t* dst) {
  for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<uint8_t>(code_value(q.scheme, q.bits, code_at(q, row, c)));
}

struct QuantRowFormat {
  QuantScheme scheme;
  int bits;  // 0 = any
  QuantPacking packing;
  const char* name;
  Unpack unpack;  // null: the codes are read in place
  simd::QuantValues values;
};

using S = QuantScheme;
using P = QuantPacking;
using V = simd::QuantValues;
// First matching row wins; the last row handles every kBits layout whose values fit int8.
const QuantRowFormat kQuantRowFormats[] = {
    {S::kSymmetric, 8, P::kBits, "q8 sym in place", nullptr, V::kU8Minus128},
    {S::kAsymmetric, 8, P::kBits, "q8 asym in place", nullptr, V::kU8},
    {S::kSymmetric, 4, P::kBits, "q4 sym nibbles", unpack_nibbles<8>, V::kI8},
    {S::kAsymmetric, 4, P::kBits, "q4 asym nibbles", unpack_nibbles<0>, V::kI8},
    {S::kSymmetric, 3, P::kBits, "q3 sym words", unpack_bits<3, 4>, V::kI8},
    {S::kAsymmetric, 3, P::kBits, "q3 asym words", unpack_bits<3, 0>, V::kI8},
    {S::kSymmetric, 5, P::kBits, "q5 sym words", unpack_bits<5, 16>, V::kI8},
    {S::kAsymmetric, 5, P::kBits, "q5 asym words", unpack_bits<5, 0>, V::kI8},
    {S::kSymmetric, 6, P::kBits, "q6 sym words", unpack_bits<6, 32>, V::kI8},
    {S::kAsymmetric, 6, P::kBits, "q6 asym words", unpack_bits<6, 0>, V::kI8},
    {S::kSymmetric, 7, P::kBits, "q7 sym words", unpack_bits<7, 64>, V::kI8},
    {S::kAsymmetric, 7, P::kBits, "q7 asym words", unpack_bits<7, 0>, V::kI8},
    {S::kSymmetric, 2, P::kBits, "q2 sym byte table", unpack_lut<S::kSymmetric, 2, P::kBits>, V::kI8},
    {S::kAsymmetric, 2, P::kBits, "q2 asym byte table", unpack_lut<S::kAsymmetric, 2, P::kBits>, V::kI8},
    {S::kTernary, 2, P::kBits, "ternary 2-bit byte table", unpack_lut<S::kTernary, 2, P::kBits>, V::kI8},
    {S::kTernary, 2, P::kTrits5, "ternary trits5 byte table", unpack_lut<S::kTernary, 2, P::kTrits5>, V::kI8},
    {S::kBinary, 1, P::kBits, "binary byte table", unpack_lut<S::kBinary, 1, P::kBits>, V::kI8},
    {S::kSymmetric, 0, P::kBits, "generic bits", unpack_generic, V::kI8},
};

const QuantRowFormat& row_format(const QuantEncoding& q) {
  for (const auto& f : kQuantRowFormats) {
    if (f.bits != 0 && (f.scheme != q.scheme || f.bits != q.bits || f.packing != q.packing)) continue;
    return f;
  }
  return kQuantRowFormats[std::size(kQuantRowFormats) - 1];
}

float load_float(DType dtype, const uint8_t* p) {
  uint16_t h;
  switch (dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::kF16: std::memcpy(&h, p, 2); return f16_to_f32(h);
    case DType::kBF16: std::memcpy(&h, p, 2); return bf16_to_f32(h);
    default: return 0.0f;
  }
}

// The f32 values of flattened scale (or min) entries [begin, begin + n): float dtypes as stored,
// u8 entries as u8 · step + base with the (step, base) pair of their scale_block.
void decode_params(const QuantEncoding& q, const Bytes& values, const Bytes& meta, int64_t begin, int64_t n,
                   float* out) {
  if (q.scale_dtype == DType::kU8) {
    const float* pairs = meta.as<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t e = begin + i;
      const int64_t b = e / q.scale_block;
      float step, base;
      std::memcpy(&step, pairs + 2 * b, 4);
      std::memcpy(&base, pairs + 2 * b + 1, 4);
      out[i] = quant_u8_entry(values.data()[e], step, base);
    }
    return;
  }
  const int64_t esz = dtype_bytes(q.scale_dtype);
  if (q.scale_dtype == DType::kF16 || q.scale_dtype == DType::kBF16) {
    // Copied through a small buffer: a mapped section gives no alignment guarantee for the entries.
    uint16_t tmp[64];
    for (int64_t i = 0; i < n; i += 64) {
      const int64_t m = std::min<int64_t>(64, n - i);
      std::memcpy(tmp, values.data() + (begin + i) * esz, static_cast<size_t>(m) * 2);
      simd::widen_half(tmp, m, q.scale_dtype == DType::kBF16, out + i);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = load_float(q.scale_dtype, values.data() + (begin + i) * esz);
}

bool has_mins(const QuantEncoding& q) { return !q.mins.empty(); }

bool decoded_mode() { return quant_activations() == QuantActivations::kF32Decoded; }

// Row i of a decoded block: o[c] = v[c] · scale + min per group (rounded as quant_value rounds it: a
// product, then a sum; no min term without mins), v read from the value bytes as K stores them.
template <simd::QuantValues K, bool kMins>
void decode_row(const uint8_t* v, int64_t cols, int64_t glen, const float* scales, const float* mins, float* o) {
  for (int64_t c0 = 0, g = 0; c0 < cols; c0 += glen, ++g) {
    const int64_t c1 = std::min(cols, c0 + glen);
    const float sc = scales[g];
    const float m = kMins ? mins[g] : 0.0f;
    for (int64_t c = c0; c < c1; ++c) {
      float value;
      if constexpr (K == simd::QuantValues::kI8)
        value = static_cast<float>(static_cast<int8_t>(v[c]));
      else if constexpr (K == simd::QuantValues::kU8)
        value = static_cast<float>(v[c]);
      else
        value = static_cast<float>(static_cast<int32_t>(v[c]) - 128);
      if constexpr (kMins)
        o[c] = value * sc + m;
      else
        o[c] = value * sc;
    }
  }
}

using DecodeRow = void (*)(const uint8_t*, int64_t, int64_t, const float*, const float*, float*);
DecodeRow decode_row_fn(simd::QuantValues kind, bool mins) {
  using V = simd::QuantValues;
  switch (kind) {
    case V::kI8: return mins ? decode_row<V::kI8, true> : decode_row<V::kI8, false>;
    case V::kU8: return mins ? decode_row<V::kU8, true> : decode_row<V::kU8, false>;
    case V::kU8Minus128: return mins ? decode_row<V::kU8Minus128, true> : decode_row<V::kU8Minus128, false>;
  }
  return nullptr;
}

// Mode kF32Decoded: kDecodedRows rows at a time are decoded to f32 into a per-thread buffer, then
// the dense f32 kernel runs them against all tokens of the call (kDecodedTokens at a time, so the
// activations it walks stay in cache).
constexpr int64_t kDecodedRows = 16;
constexpr int64_t kDecodedTokens = 64;
void quant_rows_decoded(const Tensor& w, const float* x, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                        float* y) {
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  const QuantRowFormat& f = row_format(q);
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t gpr = quant_groups_per_row(q, cols), glen = group_len(q, cols);
  const int64_t stride = quant_row_stride(q, cols);
  const bool mins = has_mins(q);
  const DecodeRow decode = decode_row_fn(f.values, mins);
  thread_local std::vector<uint8_t> values;
  thread_local std::vector<float> scales, min_values, block;
  values.resize(static_cast<size_t>(cols + 8));
  scales.resize(static_cast<size_t>(kDecodedRows * gpr));
  min_values.resize(static_cast<size_t>(kDecodedRows * gpr));
  block.resize(static_cast<size_t>(kDecodedRows * cols));
  for (int64_t r = r_begin; r < r_end; r += kDecodedRows) {
    const int64_t nr = std::min(kDecodedRows, r_end - r);
    decode_params(q, q.scales, q.scale_meta, r * gpr, nr * gpr, scales.data());
    if (mins) decode_params(q, q.mins, q.min_meta, r * gpr, nr * gpr, min_values.data());
    for (int64_t i = 0; i < nr; ++i) {
      const uint8_t* v = q.codes.data() + (r + i) * stride;
      if (f.unpack != nullptr) {
        f.unpack(q, v, cols, values.data());
        v = values.data();
      }
      decode(v, cols, glen, scales.data() + i * gpr, min_values.data() + i * gpr, block.data() + i * cols);
    }
    for (int64_t t0 = t_begin; t0 < t_end; t0 += kDecodedTokens)
      simd::matmul_block_f32(block.data(), nr, cols, x + t0 * cols, std::min(kDecodedTokens, t_end - t0),
                             y + t0 * rows + r, rows);
  }
}

}  // namespace

void quant_decode_params(const QuantEncoding& q, bool mins, int64_t begin, int64_t n, float* out) {
  if (mins)
    decode_params(q, q.mins, q.min_meta, begin, n, out);
  else
    decode_params(q, q.scales, q.scale_meta, begin, n, out);
}

void quant_unpack_trits5_codes(const uint8_t* row, int64_t cols, uint8_t* dst) {
  unpack_lut<S::kAsymmetric, 2, P::kTrits5>(QuantEncoding{}, row, cols, dst);  // asymmetric values = codes
}

const char* quant_format_name(const Tensor& w) {
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  if (const QuantI8Format* f = i8_format(q, w.cols())) return f->name;
  return row_format(q).name;
}

int64_t quant_token_block(int64_t n, int64_t standard) { return decoded_mode() ? n : standard; }

int64_t quant_aux_floats(const Tensor& w, int64_t n) {
  if (decoded_mode()) return 0;
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  if (i8_format(q, w.cols()) != nullptr) return n * i8_plan(q, w.cols()).record_floats;
  return has_mins(q) ? n * quant_groups_per_row(q, w.cols()) : 0;
}

// Tokens per OpenMP chunk of the activation quantizer (it runs before the kernel's parallel loop).
constexpr int64_t kQuantizeTokensPerTask = 16;

void quant_prepare(const Tensor& w, const float* x, int64_t n, float* aux) {
  if (decoded_mode()) return;
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  if (i8_format(q, w.cols()) != nullptr) {
    const QuantI8Plan& plan = i8_plan(q, w.cols());  // this thread's cache; the loop never rebuilds it
    const int64_t cols = w.cols();
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (n >= 2 * kQuantizeTokensPerTask)
    for (int64_t t = 0; t < n; ++t)
      i8_quantize_token(plan, has_mins(q), x + t * cols, aux + t * plan.record_floats, false);
    return;
  }
  if (!has_mins(q)) return;
  const int64_t cols = w.cols(), gpr = quant_groups_per_row(q, cols), glen = group_len(q, cols);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < gpr; ++g) {
      float s = 0.0f;
      for (int64_t c = g * glen; c < std::min(cols, (g + 1) * glen); ++c) s += x[t * cols + c];
      aux[t * gpr + g] = s;
    }
}

// Rows are processed in blocks of kRowsPerCall: unpacked values [block, cols + 8] and scales
// [block, groups] stay in L1 while quant_dot runs over them.
constexpr int64_t kRowsPerCall = 4;

void quant_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                int64_t r_end, float* y) {
  if (decoded_mode()) return quant_rows_decoded(w, x, t_begin, t_end, r_begin, r_end, y);
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  if (i8_format(q, w.cols()) != nullptr) return quant_rows_i8(w, aux, t_begin, t_end, r_begin, r_end, y);
  const QuantRowFormat& f = row_format(q);
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t gpr = quant_groups_per_row(q, cols);
  const int64_t stride = quant_row_stride(q, cols);
  const int64_t vstride = (cols + 8 + 63) / 64 * 64;
  const bool mins = has_mins(q);
  thread_local std::vector<uint8_t> values;
  thread_local std::vector<float> scales, min_values;
  values.resize(static_cast<size_t>(kRowsPerCall * vstride));
  scales.resize(static_cast<size_t>(kRowsPerCall * gpr));
  min_values.resize(static_cast<size_t>(kRowsPerCall * gpr));
  simd::QuantDotArgs a{};
  a.kind = f.values;
  a.cols = cols;
  a.group = group_len(q, cols);
  a.groups = gpr;
  a.scales = scales.data();
  a.mins = mins ? min_values.data() : nullptr;
  a.xsum = mins ? aux + t_begin * gpr : nullptr;
  a.xsum_stride = gpr;
  a.x = x + t_begin * cols;
  a.x_stride = cols;
  a.n = t_end - t_begin;
  a.y_stride = rows;
  for (int64_t r = r_begin; r < r_end; r += kRowsPerCall) {
    const int64_t nr = std::min(kRowsPerCall, r_end - r);
    decode_params(q, q.scales, q.scale_meta, r * gpr, nr * gpr, scales.data());
    if (mins) decode_params(q, q.mins, q.min_meta, r * gpr, nr * gpr, min_values.data());
    if (f.unpack != nullptr) {
      for (int64_t i = 0; i < nr; ++i)
        f.unpack(q, q.codes.data() + (r + i) * stride, cols, values.data() + i * vstride);
      a.v = values.data();
      a.v_stride = vstride;
    } else {
      a.v = q.codes.data() + r * stride;
      a.v_stride = stride;
    }
    a.rows = nr;
    a.y = y + t_begin * rows + r;
    simd::quant_dot(a);
  }
}

void matmul_quant_ref(const Tensor& w, const float* x, int64_t n, float* y) {
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t gpr = quant_groups_per_row(q, cols), glen = group_len(q, cols);
  const int64_t stride = quant_row_stride(q, cols);
  std::vector<float> scales(static_cast<size_t>(gpr)), mins(static_cast<size_t>(gpr), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    decode_params(q, q.scales, q.scale_meta, r * gpr, gpr, scales.data());
    if (has_mins(q)) decode_params(q, q.mins, q.min_meta, r * gpr, gpr, mins.data());
    const uint8_t* row = q.codes.data() + r * stride;
    for (int64_t t = 0; t < n; ++t) {
      double s = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t g = c / glen;
        const float wv = quant_value(q.scheme, q.bits, code_at(q, row, c), scales[g], mins[g]);
        s += static_cast<double>(wv) * x[t * cols + c];
      }
      y[t * rows + r] = static_cast<float>(s);
    }
  }
}

}  // namespace llmc::kernels
