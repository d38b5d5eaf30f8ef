// Palette linear kernels: per-row codebook tables (f32 entries and f16 byte planes), index rows read in
// place or unpacked, the SIMD lookup dot, the sparse outlier correction, and the scalar reference.
#include "kernels/cpu/palette_linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/palette.h"
#include "core/sparse.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/palette_i8.h"
#include "kernels/cpu/palette_simd.h"

namespace llmc::kernels {
namespace {

// Rows per palette_dot call: their tables and unpacked indices stay in L1.
constexpr int64_t kRowsPerCall = 4;
constexpr int64_t kPlaneBytes = 32;

// Codebook g of p as the kernel's row table: f32 entries and (bits <= 4) f16 byte planes.
void fill_table(const PaletteEncoding& p, int64_t g, float* f32, uint8_t* planes) {
  const int64_t entries = palette_entries(p.bits);
  palette_codebook_f32(p, g, f32);
  if (p.bits > 4) return;
  std::memset(planes, 0, kPlaneBytes);
  const uint8_t* src = p.codebooks.data() + static_cast<size_t>(g * entries) * 2;
  for (int64_t i = 0; i < entries; ++i) {
    planes[i] = src[2 * i];           // f16 little-endian: low byte
    planes[16 + i] = src[2 * i + 1];  // high byte
  }
}

bool indices_in_place(int bits) { return bits == 4 || bits == 8; }

// y[t, r] += Σ outliers of rows [r0, r1) · x[t, c], entries in position order.
void add_outliers(const PaletteEncoding& p, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                  int64_t r0, int64_t r1, float* y) {
  if (!p.outliers) return;
  const auto& s = std::get<SparseEncoding>(p.outliers->node);
  const int64_t numel = rows * cols;
  const PaletteOutlierRange range = palette_outlier_range(s, rows, cols, r0, r1);
  for (int64_t e = range.begin; e < range.end; ++e) {
    const uint64_t pos = palette_outlier_position(s, numel, e);
    const int64_t r = static_cast<int64_t>(pos / static_cast<uint64_t>(cols));
    const int64_t c = static_cast<int64_t>(pos % static_cast<uint64_t>(cols));
    const float v = palette_outlier_value(s, e);
    for (int64_t t = t_begin; t < t_end; ++t) y[t * rows + r] += v * x[t * cols + c];
  }
}

}  // namespace

const char* palette_format_name(const Tensor& w) {
  const int bits = std::get<PaletteEncoding>(w.encoding->node).bits;
  if (palette_int8_activations(w)) return "palette indices in place, grid lookup, int8 activations";
  if (bits == 4) return "palette nibbles in place, byte-plane lookup";
  if (bits < 4) return "palette unpacked indices, byte-plane lookup";
  if (bits == 8) return "palette u8 indices in place, gather";
  return "palette unpacked indices, gather";
}

namespace {

// The f32 lookup kernel on rows [r_begin, r_end), without outliers.
void palette_rows_f32(const Tensor& w, const float* x, int64_t t_begin, int64_t t_end, int64_t r_begin, int64_t r_end,
                      float* y) {
  const auto& p = std::get<PaletteEncoding>(w.encoding->node);
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t entries = palette_entries(p.bits), stride = palette_row_stride(p.bits, cols);
  const bool in_place = indices_in_place(p.bits);
  const int64_t ustride = (cols + 63) / 64 * 64;
  thread_local std::vector<float> f32;
  thread_local std::vector<uint8_t> planes, unpacked;
  f32.resize(static_cast<size_t>(kRowsPerCall * entries));
  planes.resize(static_cast<size_t>(kRowsPerCall * kPlaneBytes));
  if (!in_place) unpacked.resize(static_cast<size_t>(kRowsPerCall * ustride));
  // Slot i holds the table of codebook slot_group[i]; consecutive rows of one group reuse it.
  simd::PaletteRowTable tables[kRowsPerCall];
  int64_t slot_group[kRowsPerCall];
  std::fill(std::begin(slot_group), std::end(slot_group), int64_t{-1});

  simd::PaletteDotArgs a{};
  a.form = p.bits == 4 ? simd::PaletteIndexForm::kNibbles : simd::PaletteIndexForm::kU8;
  a.bits = p.bits;
  a.tables = tables;
  a.cols = cols;
  a.x = x + t_begin * cols;
  a.x_stride = cols;
  a.n = t_end - t_begin;
  a.y_stride = rows;
  for (int64_t r = r_begin; r < r_end; r += kRowsPerCall) {
    const int64_t nr = std::min(kRowsPerCall, r_end - r);
    bool used[kRowsPerCall] = {};
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t g = palette_codebook_of_row(p, r + i);
      int64_t slot = -1;
      for (int64_t j = 0; j < kRowsPerCall && slot < 0; ++j)
        if (slot_group[j] == g) slot = j;
      if (slot < 0) {  // a slot no earlier row of this block uses (at most nr - 1 <= 3 are)
        slot = 0;
        while (used[slot]) ++slot;
        fill_table(p, g, f32.data() + slot * entries, planes.data() + slot * kPlaneBytes);
        slot_group[slot] = g;
      }
      used[slot] = true;
      tables[i] = {f32.data() + slot * entries, planes.data() + slot * kPlaneBytes};
    }
    if (in_place) {
      a.idx = p.indices.data() + r * stride;
      a.idx_stride = stride;
    } else {
      for (int64_t i = 0; i < nr; ++i) {
        const uint8_t* row = p.indices.data() + (r + i) * stride;
        uint8_t* dst = unpacked.data() + i * ustride;
        for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<uint8_t>(palette_index_at(row, p.bits, c));
      }
      a.idx = unpacked.data();
      a.idx_stride = ustride;
    }
    a.rows = nr;
    a.y = y + t_begin * rows + r;
    simd::palette_dot(a);
  }
}

}  // namespace

int64_t palette_aux_floats(const Tensor& w, int64_t n) { return palette_i8_aux_floats(w, n); }
void palette_prepare(const Tensor& w, const float* x, int64_t n, float* aux) { palette_i8_prepare(w, x, n, aux); }

void palette_rows(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end, int64_t r_begin,
                  int64_t r_end, float* y) {
  const auto& p = std::get<PaletteEncoding>(w.encoding->node);
  if (palette_i8_records(aux))
    palette_rows_grid(w, x, aux, t_begin, t_end, r_begin, r_end, y, palette_rows_f32);
  else
    palette_rows_f32(w, x, t_begin, t_end, r_begin, r_end, y);
  add_outliers(p, w.rows(), w.cols(), x, t_begin, t_end, r_begin, r_end, y);
}

void matmul_palette_ref(const Tensor& w, const float* x, int64_t n, float* y) {
  const auto& p = std::get<PaletteEncoding>(w.encoding->node);
  const int64_t rows = w.rows(), cols = w.cols(), stride = palette_row_stride(p.bits, cols);
  std::vector<float> codebook(static_cast<size_t>(palette_entries(p.bits)));
  std::vector<double> acc(static_cast<size_t>(n));
  const SparseEncoding* outliers = p.outliers ? &std::get<SparseEncoding>(p.outliers->node) : nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    palette_codebook_f32(p, palette_codebook_of_row(p, r), codebook.data());
    const uint8_t* row = p.indices.data() + r * stride;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t c = 0; c < cols; ++c) {
      const double wv = codebook[palette_index_at(row, p.bits, c)];
      for (int64_t t = 0; t < n; ++t) acc[t] += wv * x[t * cols + c];
    }
    if (outliers) {
      const PaletteOutlierRange range = palette_outlier_range(*outliers, rows, cols, r, r + 1);
      for (int64_t e = range.begin; e < range.end; ++e) {
        const int64_t c = static_cast<int64_t>(palette_outlier_position(*outliers, rows * cols, e)) - r * cols;
        const double v = palette_outlier_value(*outliers, e);
        for (int64_t t = 0; t < n; ++t) acc[t] += v * x[t * cols + c];
      }
    }
    for (int64_t t = 0; t < n; ++t) y[t * rows + r] = static_cast<float>(acc[t]);
  }
}

}  // namespace llmc::kernels
