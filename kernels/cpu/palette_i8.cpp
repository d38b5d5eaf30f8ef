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
constexpr int64_t kRowsPerCall = 4;             // rows per simd::quant_i8_dot call (the decode microkernel's)

const PaletteEncoding& palette_of(const Tensor& w) { return std::get<PaletteEncoding>(w.encoding->node); }

// Codebook g's grid exponent and, when on the grid, its table: v = entry / 2^k (int8) at the value the
// extractor yields for each index (the index; 2 · index for 1-bit codes); other entries 0, never read.
int codebook_table(const PaletteEncoding& p, int64_t g, uint8_t* lut) {
  float entries[16];
  const int64_t n = palette_entries(p.bits);
  palette_codebook_f32(p, g, entries);
  const int k = palette_grid_exponent(entries, n);
  if (k == kPaletteOffGrid) return k;
  const auto inverse = static_cast<float>(std::ldexp(1.0, -k));
  const int64_t at = p.bits == 1 ? 2 : 1;
  std::memset(lut, 0, 16);
  for (int64_t i = 0; i < n && at * i < 16; ++i)  // n <= 16 / at: grid tables are for bits <= 4
    lut[at * i] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int32_t>(entries[i] * inverse)));
  return k;
}

// Per-thread scratch: each row slot's block scales (2^k for every block, refilled only when its
// exponent or the row's block count changes) and padded copies of index rows near the tensor's end.
struct GridScratch {
  std::vector<float> scales;
  int slot_exp[kRowsPerCall] = {};
  int64_t stride = -1;
  std::vector<uint8_t> buffer;
};

// Rows [r0, r0 + nr) (all on the grid: exps, luts [nr][16]) through the Quant int8 kernel.
void grid_rows(const Tensor& w, const QuantI8Plan& plan, const float* act, const int* exps, const uint8_t* luts,
               int64_t t_begin, int64_t t_end, int64_t r0, int64_t nr, float* y) {
  const PaletteEncoding& p = palette_of(w);
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t stride = palette_row_stride(p.bits, cols);
  const int64_t bstride = stride + kRowPad;
  const int64_t sstride = 2 * plan.pairs;
  thread_local GridScratch s;
  if (s.stride != sstride) {
    s.stride = sstride;
    s.scales.assign(static_cast<size_t>(kRowsPerCall * sstride), 0.0f);
    std::fill(std::begin(s.slot_exp), std::end(s.slot_exp), kPaletteOffGrid);
  }
  for (int64_t i = 0; i < nr; ++i)
    if (s.slot_exp[i] != exps[i]) {  // the phantom block's scale multiplies zero activations
      s.slot_exp[i] = exps[i];
      std::fill_n(s.scales.data() + i * sstride, sstride, static_cast<float>(std::ldexp(1.0, exps[i])));
    }
  if (s.buffer.size() < static_cast<size_t>(kRowsPerCall * bstride))
    s.buffer.assign(static_cast<size_t>(kRowsPerCall * bstride), 0);
  simd::QuantI8DotArgs a = i8_dot_args(plan, act, t_begin, t_end, rows);
  a.lut = luts;
  a.scales = s.scales.data();
  a.scales_stride = sstride;
  a.groups = 1;
  a.rows = nr;
  a.y = y + t_begin * rows + r0;
  const uint8_t* idx = p.indices.data() + r0 * stride;
  if ((r0 + nr) * stride + kRowPad > static_cast<int64_t>(p.indices.size())) {
    // Reads past the last row's end could pass the tensor's last byte: padded copies.
    for (int64_t i = 0; i < nr; ++i)
      std::memcpy(s.buffer.data() + i * bstride, idx + i * stride, static_cast<size_t>(stride));
    a.codes = s.buffer.data();
    a.code_stride = bstride;
  } else {
    a.codes = idx;
    a.code_stride = stride;
  }
  simd::quant_i8_dot(a);
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
  if (!palette_int8_activations(w)) return 1;
  return 1 + n * i8_palette_plan(palette_of(w).bits, w.cols()).record_floats;
}

void palette_i8_prepare(const Tensor& w, const float* x, int64_t n, float* aux) {
  aux[0] = 0.0f;
  if (!palette_int8_activations(w)) return;
  aux[0] = 1.0f;
  const QuantI8Plan& plan = i8_palette_plan(palette_of(w).bits, w.cols());
  const int64_t cols = w.cols();
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (n >= 2 * kQuantizeTokensPerTask)
  for (int64_t t = 0; t < n; ++t) i8_quantize_token(plan, false, x + t * cols, aux + 1 + t * plan.record_floats, false);
}

void palette_rows_grid(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end,
                       int64_t r_begin, int64_t r_end, float* y, PaletteF32Rows f32_rows) {
  const PaletteEncoding& p = palette_of(w);
  const QuantI8Plan& plan = i8_palette_plan(p.bits, w.cols());
  const float* act = aux + 1;
  int64_t group = -1;  // the last codebook looked at, its exponent and table
  int exp = kPaletteOffGrid;
  alignas(16) uint8_t lut[16] = {};
  for (int64_t r = r_begin; r < r_end; r += kRowsPerCall) {
    const int64_t nr = std::min(kRowsPerCall, r_end - r);
    int exps[kRowsPerCall];
    alignas(16) uint8_t luts[kRowsPerCall * 16];
    bool all = true;
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t g = palette_codebook_of_row(p, r + i);
      if (g != group) {
        group = g;
        exp = codebook_table(p, g, lut);
      }
      exps[i] = exp;
      std::memcpy(luts + 16 * i, lut, 16);
      all = all && exp != kPaletteOffGrid;
    }
    if (all) {
      grid_rows(w, plan, act, exps, luts, t_begin, t_end, r, nr, y);
      continue;
    }
    for (int64_t i = 0; i < nr; ++i)  // a block with rows off the grid: row by row, each on its own path
      if (exps[i] != kPaletteOffGrid)
        grid_rows(w, plan, act, exps + i, luts + 16 * i, t_begin, t_end, r + i, 1, y);
      else
        f32_rows(w, x, t_begin, t_end, r + i, r + i + 1, y);
  }
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
          const float* pairs = record.data() + plan.x_floats;
          int64_t j[4] = {0, 0, 0, 0};  // Σ v_c · xq_c per lane, v_c the grid integer of the entry
          for (int i = 0; i < 32; ++i) {
            if (plan.slot_col[i] >= plan.len[b]) continue;
            const int64_t c = plan.start[b] + plan.slot_col[i];
            const auto v = static_cast<int64_t>(std::ldexp(codebook[palette_index_at(row, p.bits, c)], -k));
            j[i8_slot_lane(i)] += v * i8_slot_activation(plan, pairs, b, i);
          }
          for (int l = 0; l < 4; ++l)
            s += std::ldexp(1.0, k) * i8_lane_dx(plan, pairs, b, l) * static_cast<double>(j[l]);
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
