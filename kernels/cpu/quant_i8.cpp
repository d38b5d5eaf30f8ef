// Quant linear kernels on int8 activations: the format table, the block plan of a row, the per-call
// activation quantizer, the row kernel (scales, padded rows, SIMD dispatch) and the scalar reference.
#include "kernels/cpu/quant_i8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "core/palette.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant_linear.h"

namespace llmc::kernels {
namespace {

using S = QuantScheme;
using P = QuantPacking;
using Kd = simd::QuantI8Kind;

// Every format the int8 path runs: extractor, offset (v = u - offset) and the asymmetric centre.
const QuantI8Format kQuantI8Formats[] = {
    {S::kSymmetric, 8, P::kBits, Kd::kSigned8, 0, 0, "q8 sym, int8 activations"},
    {S::kAsymmetric, 8, P::kBits, Kd::kSigned8, 0, 128, "q8 asym, int8 activations"},
    {S::kSymmetric, 7, P::kBits, Kd::kBits7, 64, 0, "q7 sym, int8 activations"},
    {S::kAsymmetric, 7, P::kBits, Kd::kBits7, 64, 64, "q7 asym, int8 activations"},
    {S::kSymmetric, 6, P::kBits, Kd::kBits6, 32, 0, "q6 sym, int8 activations"},
    {S::kAsymmetric, 6, P::kBits, Kd::kBits6, 32, 32, "q6 asym, int8 activations"},
    {S::kSymmetric, 5, P::kBits, Kd::kBits5, 16, 0, "q5 sym, int8 activations"},
    {S::kAsymmetric, 5, P::kBits, Kd::kBits5, 16, 16, "q5 asym, int8 activations"},
    {S::kSymmetric, 4, P::kBits, Kd::kNibbles, 8, 0, "q4 sym, int8 activations"},
    {S::kAsymmetric, 4, P::kBits, Kd::kNibbles, 8, 8, "q4 asym, int8 activations"},
    {S::kSymmetric, 3, P::kBits, Kd::kBits3, 4, 0, "q3 sym, int8 activations"},
    {S::kAsymmetric, 3, P::kBits, Kd::kBits3, 4, 4, "q3 asym, int8 activations"},
    {S::kSymmetric, 2, P::kBits, Kd::kCrumbs, 2, 0, "q2 sym, int8 activations"},
    {S::kAsymmetric, 2, P::kBits, Kd::kCrumbs, 2, 2, "q2 asym, int8 activations"},
    {S::kTernary, 2, P::kBits, Kd::kCrumbs, 1, 0, "ternary 2-bit, int8 activations"},
    {S::kTernary, 2, P::kTrits5, Kd::kBytes, 1, 0, "ternary trits5, int8 activations"},
    {S::kBinary, 1, P::kBits, Kd::kBits1, 1, 0, "binary, int8 activations"},
};

// Palette indices on the integer grid (the extractor's u indexes the row's table of v; offset 0), by
// bits - 1; scheme and packing unused.
const QuantI8Format kPaletteI8Formats[] = {
    {S::kSymmetric, 1, P::kBits, Kd::kBits1, 0, 0, "palette 1-bit grid, int8 activations"},
    {S::kSymmetric, 2, P::kBits, Kd::kCrumbs, 0, 0, "palette 2-bit grid, int8 activations"},
    {S::kSymmetric, 3, P::kBits, Kd::kBits3, 0, 0, "palette 3-bit grid, int8 activations"},
    {S::kSymmetric, 4, P::kBits, Kd::kNibbles, 0, 0, "palette 4-bit grid, int8 activations"},
};

std::atomic<QuantActivations> g_mode{QuantActivations::kAuto};

constexpr int64_t kBlock = 32;       // activation block (columns)
constexpr int64_t kRowPad = 64;      // bytes the kernel may read past a row's end (at most 32)
constexpr int64_t kRowsPerCall = 4;  // rows per simd::quant_i8_dot call (scales stay in L1)

// Slot i of a block (0..15 in A, 16..31 in B) holds column slot_col[i] of the block.
void fill_slots(Kd kind, uint8_t* slot_col) {
  for (int i = 0; i < 32; ++i) {
    switch (kind) {
      case Kd::kNibbles: slot_col[i] = static_cast<uint8_t>(i < 16 ? 2 * i : 2 * (i - 16) + 1); break;
      case Kd::kCrumbs: slot_col[i] = static_cast<uint8_t>(4 * (i % 8) + i / 8); break;
      default: slot_col[i] = static_cast<uint8_t>(i); break;
    }
  }
}

// code_bits: bits per stored code (the byte of a block's first code is start · code_bits / 8).
void build_plan(int64_t cols, int64_t groups, int64_t glen, int code_bits, bool mins, const QuantI8Format* f,
                bool split, QuantI8Plan& p) {
  p.cols = cols;
  p.split = split;
  p.pair_floats = split ? 48 : 32;
  p.groups = groups;
  p.glen = glen;
  p.format = f;
  p.start.clear();
  p.len.clear();
  p.group.clear();
  p.byte.clear();
  const int bits = code_bits;
  for (int64_t g = 0; g < p.groups; ++g) {
    const int64_t end = std::min(cols, (g + 1) * p.glen);
    for (int64_t s = g * p.glen; s < end; s += kBlock) {
      p.start.push_back(static_cast<int32_t>(s));
      p.len.push_back(static_cast<int32_t>(std::min(kBlock, end - s)));
      p.group.push_back(static_cast<int32_t>(g));
      p.byte.push_back(static_cast<int32_t>(s * bits / 8));
    }
  }
  p.blocks = static_cast<int64_t>(p.start.size());
  if (p.blocks % 2) {  // phantom block: zero activations, codes of the block before it
    p.start.push_back(p.start.back());
    p.len.push_back(0);
    p.group.push_back(p.group.back());
    p.byte.push_back(p.byte.back());
  }
  p.pairs = static_cast<int64_t>(p.start.size()) / 2;
  p.uniform = true;
  for (size_t k = 0; k < p.start.size(); ++k)
    p.uniform = p.uniform && p.len[k] == kBlock && p.byte[k] == static_cast<int32_t>(k) * 4 * bits;
  p.block_shift = -1;
  for (int sh = 0; p.blocks == 2 * p.pairs && p.block_shift < 0 && (p.groups << sh) <= p.blocks; ++sh) {
    bool fits = (p.groups << sh) == p.blocks;
    for (int64_t k = 0; fits && k < p.blocks; ++k) fits = p.group[k] == (k >> sh);
    if (fits) p.block_shift = sh;
  }
  p.slot_col.resize(32);
  fill_slots(f->kind, p.slot_col.data());
  p.x_floats = mins ? (p.groups + 7) / 8 * 8 : 0;
  p.record_floats = p.x_floats + p.pair_floats * (p.pairs + p.pairs % 2);  // simd::pair_field
}

// Round half to even for |v| < 2^22 (f32 adds, no FMA or libm call).
float round_even(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 · 2^23
  return (v + kMagic) - kMagic;
}

}  // namespace

void set_quant_activations(QuantActivations mode) { g_mode.store(mode); }
bool quant_int8_two_parts(QuantActivations mode, int bits) {
  return mode == QuantActivations::kInt8x2 || (mode == QuantActivations::kAuto && bits > 4);
}
QuantActivations quant_activations() { return g_mode.load(); }

const char* quant_activations_name(QuantActivations mode) {
  switch (mode) {
    case QuantActivations::kF32: return "f32";
    case QuantActivations::kInt8x2: return "int8x2";
    case QuantActivations::kInt8: return "int8";
    case QuantActivations::kF32Decoded: return "f32-decoded";
    case QuantActivations::kAuto: return "auto";
  }
  return "?";
}

std::optional<QuantActivations> parse_quant_activations(std::string_view name) {
  for (const auto mode : {QuantActivations::kF32, QuantActivations::kInt8x2, QuantActivations::kInt8,
                          QuantActivations::kF32Decoded, QuantActivations::kAuto})
    if (name == quant_activations_name(mode)) return mode;
  return std::nullopt;
}

const QuantI8Format* i8_format(const QuantEncoding& q, int64_t cols) {
  const bool whole_row = q.group_size == 0 || q.group_size >= cols;
  if (!whole_row && q.group_size % 8 != 0) return nullptr;  // blocks must start on byte boundaries
  if (cols > (int64_t{1} << 30)) return nullptr;            // block tables hold int32 columns
  const QuantActivations mode = g_mode.load(std::memory_order_relaxed);
  if (mode == QuantActivations::kF32 || mode == QuantActivations::kF32Decoded) return nullptr;
  for (const QuantI8Format& f : kQuantI8Formats)
    if (f.scheme == q.scheme && f.bits == q.bits && f.packing == q.packing) return &f;
  return nullptr;
}

const QuantI8Plan& i8_plan(const QuantEncoding& q, int64_t cols) {
  thread_local QuantI8Plan plan;
  const QuantI8Format* f = i8_format(q, cols);
  const int64_t glen = quant_groups_per_row(q, cols) == 1 ? cols : q.group_size;
  const bool split = quant_int8_two_parts(g_mode.load(std::memory_order_relaxed), q.bits);
  if (plan.format != f || plan.cols != cols || plan.glen != glen || plan.split != split ||
      (plan.x_floats > 0) != !q.mins.empty())
    build_plan(cols, quant_groups_per_row(q, cols), glen, f->kind == Kd::kBytes ? 8 : q.bits, !q.mins.empty(), f, split,
               plan);
  return plan;
}

const QuantI8Format* i8_palette_format(int bits, int64_t cols) {
  if (bits > 4 || cols > (int64_t{1} << 30)) return nullptr;
  const QuantActivations mode = g_mode.load(std::memory_order_relaxed);
  if (mode == QuantActivations::kF32 || mode == QuantActivations::kF32Decoded) return nullptr;
  return bits >= 1 ? &kPaletteI8Formats[bits - 1] : nullptr;
}

const QuantI8Plan& i8_palette_plan(int bits, int64_t cols) {
  thread_local QuantI8Plan plan;
  const QuantI8Format* f = i8_palette_format(bits, cols);
  const bool split = quant_int8_two_parts(g_mode.load(std::memory_order_relaxed), bits);
  if (plan.format != f || plan.cols != cols || plan.split != split)
    build_plan(cols, 1, cols, bits, false, f, split, plan);
  return plan;
}

void i8_group_sums(const QuantI8Plan& plan, const float* x, float* record) {
  for (int64_t g = 0; g < plan.groups; ++g) {
    float s = 0.0f;
    for (int64_t c = g * plan.glen; c < std::min(plan.cols, (g + 1) * plan.glen); ++c) s += x[c];
    record[g] = s;
  }
  for (int64_t g = plan.groups; g < plan.x_floats; ++g) record[g] = 0.0f;
}

void i8_quantize_blocks_ref(const uint8_t* slot_col, int32_t offset, bool split, const float* x, const int32_t* start,
                            const int32_t* len, int64_t blocks, float* pairs) {
  const int64_t pair_floats = split ? 48 : 32;
  auto clamp = [](float r) {
    if (r > 127.0f) r = 127.0f;
    if (!(r >= -127.0f)) r = -127.0f;  // NaN too
    return r;
  };
  auto* bytes = reinterpret_cast<int8_t*>(pairs);
  for (int64_t k = 0; k < blocks; ++k) {
    const int h = static_cast<int>(k % 2);
    const float* src = x + start[k];
    float amax[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < 32; ++i)
      if (slot_col[i] < len[k]) amax[i8_slot_lane(i)] = std::max(amax[i8_slot_lane(i)], std::fabs(src[slot_col[i]]));
    float dx[4], inv[4];
    for (int l = 0; l < 4; ++l) i8_block_scale(amax[l], dx[l], inv[l]);
    int32_t sum[4] = {0, 0, 0, 0};
    for (int i = 0; i < 32; ++i) {
      const int64_t c = slot_col[i];
      const int l = i8_slot_lane(i);
      float hi = 0.0f, lo = 0.0f;
      if (c < len[k]) {
        const float p = src[c] * inv[l];
        hi = clamp(round_even(p));
        lo = clamp(round_even((p - hi) * 256.0f));  // p - hi is exact
      }
      bytes[simd::slot_byte(k, pair_floats, i, false)] = static_cast<int8_t>(hi);
      sum[l] += static_cast<int32_t>(hi) * (split ? 256 : 1);
      if (split) {
        bytes[simd::slot_byte(k, pair_floats, i, true)] = static_cast<int8_t>(lo);
        sum[l] += static_cast<int32_t>(lo);
      }
    }
    float* dxv = pairs + simd::pair_field(k / 2, pair_floats, simd::kFieldDx) + 4 * h;
    int32_t c[4];
    for (int l = 0; l < 4; ++l) {
      dxv[l] = split ? dx[l] * (1.0f / 256.0f) : dx[l];
      c[l] = -offset * sum[l];
    }
    std::memcpy(pairs + simd::pair_field(k / 2, pair_floats, simd::kFieldC) + 4 * h, c, sizeof(c));
  }
}

int64_t i8_slot_activation(const QuantI8Plan& plan, const float* pairs, int64_t k, int i) {
  const auto* bytes = reinterpret_cast<const int8_t*>(pairs);
  const int64_t hi = bytes[simd::slot_byte(k, plan.pair_floats, i, false)];
  return plan.split ? 256 * hi + bytes[simd::slot_byte(k, plan.pair_floats, i, true)] : hi;
}

float i8_lane_dx(const QuantI8Plan& plan, const float* pairs, int64_t k, int l) {
  return pairs[simd::pair_field(k / 2, plan.pair_floats, simd::kFieldDx) + 4 * (k % 2) + l];
}

void i8_quantize_token(const QuantI8Plan& plan, bool mins, const float* x, float* record, bool reference) {
  if (mins) i8_group_sums(plan, x, record);
  float* pairs = record + plan.x_floats;
  if (reference)
    i8_quantize_blocks_ref(plan.slot_col.data(), plan.format->offset, plan.split, x, plan.start.data(), plan.len.data(),
                           2 * plan.pairs, pairs);
  else
    simd::quantize_i8_blocks(plan.format->kind, plan.format->offset, plan.split, x, plan.start.data(), plan.len.data(),
                             plan.slot_col.data(), 2 * plan.pairs, pairs);
  if (plan.pairs % 2)  // the unused entry next to the last pair's: zeros, not stale values
    for (int f = 0; f < plan.pair_floats / 8; ++f)
      std::fill_n(pairs + simd::pair_field(plan.pairs, plan.pair_floats, f), 8, 0.0f);
}

simd::QuantI8DotArgs i8_dot_args(const QuantI8Plan& plan, const float* act, int64_t t_begin, int64_t t_end,
                                 int64_t rows) {
  simd::QuantI8DotArgs a{};
  a.kind = plan.format->kind;
  a.split = plan.split;
  a.pair_floats = plan.pair_floats;
  a.block_byte = plan.byte.data();
  a.uniform = plan.uniform;
  a.block_group = plan.group.data();
  a.block_start = plan.start.data();
  a.block_len = plan.len.data();
  a.slot_col = plan.slot_col.data();
  a.pairs = plan.pairs;
  a.act = act + t_begin * plan.record_floats;
  a.act_stride = plan.record_floats;
  a.x_floats = plan.x_floats;
  a.n = t_end - t_begin;
  a.y_stride = rows;
  return a;
}

void quant_rows_i8(const Tensor& w, const float* act, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                   float* y) {
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  const QuantI8Plan& plan = i8_plan(q, w.cols());
  const int64_t rows = w.rows(), cols = w.cols(), gpr = plan.groups;
  const int64_t stride = quant_row_stride(q, cols);
  const bool mins = !q.mins.empty();
  const bool unpacked = plan.format->kind == Kd::kBytes;
  const int64_t bstride = (unpacked ? cols : stride) + kRowPad;
  thread_local std::vector<float> scales, group_scales, min_values;
  thread_local std::vector<uint8_t> buffer;  // unpacked rows, or the padded copy of a tensor's last row
  // Per row: the scale of every block (phantom: 0, it multiplies zero activations) and the
  // centred min of every group. One block per group and no phantom: the group scales as decoded.
  const bool direct = plan.block_shift == 0;
  const int64_t sstride = direct ? gpr : 2 * plan.pairs;
  scales.resize(static_cast<size_t>(kRowsPerCall * sstride));
  group_scales.resize(static_cast<size_t>(kRowsPerCall * gpr));
  if (mins) min_values.resize(static_cast<size_t>(kRowsPerCall * gpr));
  // Bytes past a row are read but multiply zero activations: they only have to be readable.
  if (buffer.size() < static_cast<size_t>(kRowsPerCall * bstride))
    buffer.assign(static_cast<size_t>(kRowsPerCall * bstride), 0);
  simd::QuantI8DotArgs a = i8_dot_args(plan, act, t_begin, t_end, rows);
  a.scales = direct ? group_scales.data() : scales.data();
  a.scales_stride = sstride;
  a.mins_stride = gpr;
  a.groups = gpr;
  // Rows whose reads (up to kRowPad bytes past the row's end) could pass the tensor's last
  // byte run alone from a padded copy: with narrow rows that is more than the last row.
  const int64_t first_tail =
      unpacked
          ? rows
          : std::max<int64_t>(0, rows - (kRowPad + std::max<int64_t>(stride, 1) - 1) / std::max<int64_t>(stride, 1));
  // f16 scales and mins of a weight whose blocks map to groups by a shift are read in place by the
  // kernel: nothing is decoded per row, so one call takes every packed row up to the tail.
  const bool half = plan.block_shift >= 0 && q.scale_dtype == DType::kF16;
  if (half) a.scales_stride = gpr;
  a.block_shift = plan.block_shift;
  a.centre = static_cast<float>(plan.format->centre);
  for (int64_t r = r_begin; r < r_end; r += kRowsPerCall) {
    const bool tail = r >= first_tail;
    const int64_t nr = tail                ? 1
                       : half && !unpacked ? std::min(r_end, first_tail) - r
                                           : std::min({kRowsPerCall, r_end - r, first_tail - r});
    a.half_scales = half ? q.scales.data() + 2 * r * gpr : nullptr;
    a.half_mins = half && mins ? q.mins.data() + 2 * r * gpr : nullptr;
    a.mins = nullptr;
    if (!half) {
      quant_decode_params(q, false, r * gpr, nr * gpr, group_scales.data());
      if (!direct)
        for (int64_t i = 0; i < nr; ++i) {
          float* sb = scales.data() + i * sstride;
          for (int64_t k = 0; k < plan.blocks; ++k) sb[k] = group_scales[i * gpr + plan.group[k]];
          if (plan.blocks < sstride) sb[plan.blocks] = 0.0f;
        }
      if (mins) {
        quant_decode_params(q, true, r * gpr, nr * gpr, min_values.data());
        for (int64_t i = 0; i < nr * gpr; ++i)
          min_values[i] = i8_centred_min(min_values[i], plan.format->centre, group_scales[i]);
        a.mins = min_values.data();
      }
    }
    const uint8_t* codes = q.codes.data() + r * stride;
    a.codes = codes;
    a.code_stride = stride;
    if (unpacked) {
      for (int64_t i = 0; i < nr; ++i) quant_unpack_trits5_codes(codes + i * stride, cols, buffer.data() + i * bstride);
      a.codes = buffer.data();
      a.code_stride = bstride;
    } else if (tail) {
      std::memcpy(buffer.data(), codes, static_cast<size_t>(stride));
      a.codes = buffer.data();
    }
    a.rows = nr;
    a.y = y + t_begin * rows + r;
    simd::quant_i8_dot(a);
    r += nr - kRowsPerCall;  // the loop adds kRowsPerCall
  }
}

bool quant_int8_activations(const Tensor& w) {
  const auto* q = std::get_if<QuantEncoding>(&w.encoding->node);
  return q != nullptr && i8_format(*q, w.cols()) != nullptr;
}

void matmul_quant_i8_ref(const Tensor& w, const float* x, int64_t n, float* y) {
  const auto& q = std::get<QuantEncoding>(w.encoding->node);
  const int64_t rows = w.rows(), cols = w.cols();
  const QuantI8Plan& plan = i8_plan(q, cols);
  const int64_t gpr = plan.groups, stride = quant_row_stride(q, cols);
  const bool mins = !q.mins.empty();
  std::vector<float> record(static_cast<size_t>(plan.record_floats));
  std::vector<float> scales(static_cast<size_t>(gpr)), mvals(static_cast<size_t>(gpr), 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    i8_quantize_token(plan, mins, x + t * cols, record.data(), true);
    for (int64_t r = 0; r < rows; ++r) {
      quant_decode_params(q, false, r * gpr, gpr, scales.data());
      if (mins) quant_decode_params(q, true, r * gpr, gpr, mvals.data());
      const uint8_t* row = q.codes.data() + r * stride;
      double s = 0.0;
      for (int64_t k = 0; k < plan.blocks; ++k) {
        const float* pairs = record.data() + plan.x_floats;
        int64_t j[4] = {0, 0, 0, 0};  // J_bl = Σ v_c · xq_c with v_c the centred integer value of the code
        for (int i = 0; i < 32; ++i) {
          if (plan.slot_col[i] >= plan.len[k]) continue;
          const int64_t c = plan.start[k] + plan.slot_col[i];
          const auto v = static_cast<int64_t>(quant_value(q.scheme, q.bits, quant_code_at(q, row, c), 1.0f, 0.0f));
          j[i8_slot_lane(i)] += (v - plan.format->centre) * i8_slot_activation(plan, pairs, k, i);
        }
        for (int l = 0; l < 4; ++l)
          s += static_cast<double>(scales[plan.group[k]]) * i8_lane_dx(plan, pairs, k, l) * static_cast<double>(j[l]);
      }
      for (int64_t g = 0; mins && g < gpr; ++g)
        s += static_cast<double>(i8_centred_min(mvals[g], plan.format->centre, scales[g])) * record[g];
      y[t * rows + r] = static_cast<float>(s);
    }
  }
}

}  // namespace llmc::kernels
