// Whole-model storage-type conversion (f32/f16/bf16, and ggml-compatible q8_0/q4_0).
#include "pipeline/cast.h"

#include <cmath>

#include "core/log.h"

namespace llmc {

void quantize_row_q8_0(const float* x, int64_t cols, uint8_t* codes, uint16_t* scales) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    scales[b] = f32_to_f16(d);
    for (int i = 0; i < 32; ++i)
      codes[b * 32 + i] = static_cast<uint8_t>(static_cast<int>(std::nearbyint(xb[i] * id)) + 128);
  }
}

void quantize_row_q4_0(const float* x, int64_t cols, uint8_t* codes, uint16_t* scales) {
  // codes: 4-bit values packed LSB-first, two per byte (column 2k in the low nibble).
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0, max = 0;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(xb[i]) > amax) {
        amax = std::fabs(xb[i]);
        max = xb[i];
      }
    const float d = max / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    scales[b] = f32_to_f16(d);
    for (int i = 0; i < 32; i += 2) {
      const int q0 = std::min(15, static_cast<int>(xb[i] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(xb[i + 1] * id + 8.5f));
      codes[(b * 32 + i) / 2] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

namespace {

Tensor quantize_tensor(const Tensor& t, int bits) {
  const int64_t rows = t.rows(), cols = t.cols();
  QuantEncoding q;
  q.bits = bits;
  q.scheme = QuantScheme::kSymmetric;
  q.group_size = 32;
  q.scale_dtype = DType::kF16;
  const int64_t stride = quant_row_stride(q, cols);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * stride));
  std::vector<uint16_t> scales(static_cast<size_t>(rows * (cols / 32)));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    t.rows_to_f32(r, r + 1, row.data());
    auto* c = codes.data() + r * stride;
    auto* s = scales.data() + r * (cols / 32);
    if (bits == 8)
      quantize_row_q8_0(row.data(), cols, c, s);
    else
      quantize_row_q4_0(row.data(), cols, c, s);
  }
  q.codes = Bytes::owned(std::move(codes));
  q.scales = Bytes::from_vector(scales);
  return Tensor{t.name, t.shape, std::make_shared<Encoding>(Encoding{q})};
}

bool is_dense_of(const Tensor& t, DType dtype) {
  const auto* d = std::get_if<DenseEncoding>(&t.encoding->node);
  return d && d->dtype == dtype;
}

}  // namespace

void cast_model(Model& model, ExportDType dtype) {
  if (dtype == ExportDType::kKeep) return;
  const std::vector<Tensor> tensors = model.tensors();
  for (const auto& t : tensors) {
    const bool one_d = t.shape.dims.size() < 2;
    if (one_d) {
      if (!is_dense_of(t, DType::kF32)) model.replace(make_dense(t.name, t.shape, t.to_f32(), DType::kF32));
      continue;
    }
    DType target = DType::kF32;
    switch (dtype) {
      case ExportDType::kF32: target = DType::kF32; break;
      case ExportDType::kF16: target = DType::kF16; break;
      case ExportDType::kBF16: target = DType::kBF16; break;
      case ExportDType::kQ8_0:
      case ExportDType::kQ4_0:
        if (t.cols() % 32 == 0) {
          model.replace(quantize_tensor(t, dtype == ExportDType::kQ8_0 ? 8 : 4));
          continue;
        }
        log_warn(t.name, ": row length ", t.cols(), " is not a multiple of 32; stored as f16 instead of ",
                 export_dtype_name(dtype));
        target = DType::kF16;
        break;
      case ExportDType::kKeep: break;
    }
    if (!is_dense_of(t, target)) model.replace(make_dense(t.name, t.shape, t.to_f32(), target));
  }
}

}  // namespace llmc
