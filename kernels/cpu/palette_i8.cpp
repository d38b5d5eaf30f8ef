// Palette weights on int8 activations (palette_i8.h): the per-call activation quantizer, the row
// tables and scales handed to the Quant int8 kernel, and the scalar reference of the path.
#include "kernels/cpu/palette_i8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/palette.h"
#include "core/sparse.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant_i8.h"

namespace llmc::kernels {
namespace {

constexpr int64_t kRowPad = 64;                 // bytes the int8 kernel may read past a row's last block
constexpr int64_t kQuantizeTokensPerTask = 16;  // tokens below which quantizing stays on one thread
constexpr int64_t kMaxRowsPerCall = 4;          // rows of one palette_rows_i8 call (the decode microkernel's)

const PaletteEncoding& palette_of(const Tensor& w) { return std::get<PaletteEncoding>(w.encoding->node); }

// Row r's table: u = entry / 2^k + 64 for each index (entries past 2^bits repeat entry 0; never read).
void fill_lut(const PaletteEncoding& p, int64_t g, int k, uint8_t* lut) {
  float entries[16];
  const int64_t n = palette_entries(p.bits);
  palette_codebook_f32(p, g, entries);
  for (int64_t i = 0; i < 16; ++i) {
    const double v = std::ldexp(static_cast<double>(entries[i < n ? i : 0]), -k);
    lut[i] = static_cast<uint8_t>(static_cast<int32_t>(v) + kPaletteGridOffset);
  }
}

}  // namespace

int palette_codebook_grid_exponent(const PaletteEncoding& p, int64_t g) {
  float entries[256];
  const int64_t n = palette_entries(p.bits);
  palette_codebook_f32(p, g, entries);
  return palette_grid_exponent(entries, n);
}

bool palette_int8_activations(const Tensor& w) {
  const auto* p = std::get_if<PaletteEncoding>(&w.encoding->node);
  return p != nullptr && i8_palette_format(p->bits, w.cols()) != nullptr &&
         palette_codebook_grid_exponent(*p, 0) != kPaletteOffGrid;
}

int64_t palette_i8_aux_floats(const Tensor& w, int64_t n) {
  if (!palette_int8_activations(w)) return 0;
  return n * i8_palette_plan(palette_of(w).bits, w.cols()).record_floats;
}

void palette_i8_prepare(const Tensor& w, const float* x, int64_t n, float* aux) {
  if (!palette_int8_activations(w)) return;
  const QuantI8Plan& plan = i8_palette_plan(palette_of(w).bits, w.cols());
  const int64_t cols = w.cols();
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (n >= 2 * kQuantizeTokensPerTask)
  for (int64_t t = 0; t < n; ++t) i8_quantize_token(plan, false, x + t * cols, aux + t * plan.record_floats, false);
}

void palette_rows_i8(const Tensor& w, const float* act, const int* exps, int64_t t_begin, int64_t t_end, int64_t r0,
                     int64_t r1, float* y) {
  const PaletteEncoding& p = palette_of(w);
  const QuantI8Plan& plan = i8_palette_plan(p.bits, w.cols());
  const int64_t rows = w.rows(), cols = w.cols(), nr = r1 - r0;
  const int64_t stride = palette_row_stride(p.bits, cols);
  const bool in_place = p.bits == 4;
  const int64_t bstride = (in_place ? stride : (cols + 63) / 64 * 64) + kRowPad;
  const int64_t sstride = 2 * plan.pairs;
  LLMC_CHECK(nr >= 1 && nr <= kMaxRowsPerCall);
  thread_local std::vector<float> scales;
  thread_local std::vector<uint8_t> buffer;  // unpacked index rows, or padded copies of rows near the tensor's end
  alignas(16) uint8_t lut[kMaxRowsPerCall * 16];
  scales.resize(static_cast<size_t>(nr * sstride));
  if (buffer.size() < static_cast<size_t>(kMaxRowsPerCall * bstride))
    buffer.assign(static_cast<size_t>(kMaxRowsPerCall * bstride), 0);
  for (int64_t i = 0; i < nr; ++i) {
    fill_lut(p, palette_codebook_of_row(p, r0 + i), exps[i], lut + 16 * i);
    const auto s = static_cast<float>(std::ldexp(1.0, exps[i]));
    std::fill_n(scales.data() + i * sstride, plan.blocks, s);
    std::fill(scales.data() + i * sstride + plan.blocks, scales.data() + (i + 1) * sstride, 0.0f);  // phantom
  }
  simd::QuantI8DotArgs a{};
  a.kind = plan.format->kind;
  a.split = plan.split;
  a.pair_floats = plan.pair_floats;
  a.lut = lut;
  a.block_byte = plan.byte.data();
  a.block_group = plan.group.data();
  a.block_start = plan.start.data();
  a.block_len = plan.len.data();
  a.slot_col = plan.slot_col.data();
  a.pairs = plan.pairs;
  a.scales = scales.data();
  a.scales_stride = sstride;
  a.groups = 1;
  a.act = act + t_begin * plan.record_floats;
  a.act_stride = plan.record_floats;
  a.x_floats = plan.x_floats;
  a.n = t_end - t_begin;
  a.y_stride = rows;
  a.rows = nr;
  a.y = y + t_begin * rows + r0;
  const uint8_t* idx = p.indices.data() + r0 * stride;
  if (!in_place) {
    for (int64_t i = 0; i < nr; ++i) {
      const uint8_t* row = idx + i * stride;
      uint8_t* dst = buffer.data() + i * bstride;
      for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<uint8_t>(palette_index_at(row, p.bits, c));
    }
    a.codes = buffer.data();
    a.code_stride = bstride;
  } else if ((r1 - 1) * stride + stride + kRowPad > static_cast<int64_t>(p.indices.size())) {
    // Reads past the last row's end could pass the tensor's last byte: padded copies.
    for (int64_t i = 0; i < nr; ++i) std::memcpy(buffer.data() + i * bstride, idx + i * stride, stride);
    a.codes = buffer.data();
    a.code_stride = bstride;
  } else {
    a.codes = idx;
    a.code_stride = stride;
  }
  simd::quant_i8_dot(a);
}

void matmul_palette_i8_ref(const Tensor& w, const float* x, int64_t n, float* y) {
  const PaletteEncoding& p = palette_of(w);
  LLMC_CHECK(palette_int8_activations(w));
  const int64_t rows = w.rows(), cols = w.cols(), stride = palette_row_stride(p.bits, cols);
  const QuantI8Plan& plan = i8_palette_plan(p.bits, cols);
  std::vector<float> record(static_cast<size_t>(plan.record_floats));
  std::vector<float> codebook(static_cast<size_t>(palette_entries(p.bits)));
  const SparseEncoding* outliers = p.outliers ? &std::get<SparseEncoding>(p.outliers->node) : nullptr;
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    i8_quantize_token(plan, false, xt, record.data(), true);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t g = palette_codebook_of_row(p, r);
      palette_codebook_f32(p, g, codebook.data());
      const int k = palette_grid_exponent(codebook.data(), palette_entries(p.bits));
      const uint8_t* row = p.indices.data() + r * stride;
      double s = 0.0;
      if (k == kPaletteOffGrid) {  // f32 activations, as matmul_palette_ref
        for (int64_t c = 0; c < cols; ++c) s += static_cast<double>(codebook[palette_index_at(row, p.bits, c)]) * xt[c];
      } else {
        for (int64_t b = 0; b < plan.blocks; ++b) {
          const float* e = record.data() + plan.x_floats + (b / 2) * plan.pair_floats;
          const int h = static_cast<int>(b % 2);
          const auto* bytes = reinterpret_cast<const int8_t*>(e);
          int64_t j = 0;  // Σ v_c · xq_c, v_c the grid integer of the entry
          for (int i = 0; i < 32; ++i) {
            if (plan.slot_col[i] >= plan.len[b]) continue;
            const int64_t c = plan.start[b] + plan.slot_col[i];
            const auto v = static_cast<int64_t>(std::ldexp(codebook[palette_index_at(row, p.bits, c)], -k));
            const int slot = (i < 16 ? 0 : 32) + 16 * h + i % 16;
            const int64_t xq = plan.split ? 256 * bytes[slot] + bytes[128 + slot] : bytes[slot];
            j += v * xq;
          }
          s += std::ldexp(1.0, k) * e[16 + 4 * h] * static_cast<double>(j);
        }
      }
      if (outliers) {
        const PaletteOutlierRange range = palette_outlier_range(*outliers, rows, cols, r, r + 1);
        for (int64_t e = range.begin; e < range.end; ++e) {
          const int64_t c = static_cast<int64_t>(palette_outlier_position(*outliers, rows * cols, e)) - r * cols;
          s += static_cast<double>(palette_outlier_value(*outliers, e)) * xt[c];
        }
      }
      y[t * rows + r] = static_cast<float>(s);
    }
  }
}

}  // namespace llmc::kernels
