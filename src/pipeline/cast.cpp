// Whole-model storage-type conversion (f32/f16/bf16, and ggml-compatible q8_0/q4_0).
#include "pipeline/cast.h"

#include <algorithm>
#include <cstring>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/gguf_quants.h"
#include "formats/scratch_file.h"

namespace llmc {

namespace {

// ggml's reference quantizers (formats/gguf_quants.h) produce Q8_0/Q4_0 blocks; these repack one
// row of them into the Quant layout: offset-binary codes packed LSB-first, f16 scales apart.
void quantize_row_q8_0(const float* x, int64_t cols, uint8_t* codes, uint16_t* scales) {
  std::vector<uint8_t> blocks(static_cast<size_t>(cols / 32 * 34));
  quantize_q8_0(x, cols, blocks.data());
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* block = blocks.data() + b * 34;
    std::memcpy(&scales[b], block, 2);
    for (int i = 0; i < 32; ++i) codes[b * 32 + i] = static_cast<uint8_t>(static_cast<int8_t>(block[2 + i]) + 128);
  }
}

void quantize_row_q4_0(const float* x, int64_t cols, uint8_t* codes, uint16_t* scales) {
  std::vector<uint8_t> blocks(static_cast<size_t>(cols / 32 * 18));
  quantize_q4_0(x, cols, blocks.data());
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* block = blocks.data() + b * 18;
    std::memcpy(&scales[b], block, 2);
    uint8_t* out = codes + b * 16;  // 32 codes, two per byte, column 2k in the low nibble
    std::memset(out, 0, 16);
    for (int j = 0; j < 16; ++j) {
      const int lo = block[2 + j] & 15, hi = block[2 + j] >> 4;  // columns j and j + 16 of the block
      out[j / 2] |= static_cast<uint8_t>(lo << (4 * (j & 1)));
      out[(16 + j) / 2] |= static_cast<uint8_t>(hi << (4 * (j & 1)));
    }
  }
}

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

void cast_model(Model& model, ExportDType dtype, ScratchFile* scratch) {
  if (dtype == ExportDType::kKeep) return;
  const std::vector<Tensor> tensors = model.tensors();
  // The input's pages are given back as each tensor is replaced; the new one goes to `scratch`.
  const auto replace = [&](const Tensor& old, Tensor t) {
    t.encoding = store_or_keep(scratch, t.encoding);
    model.replace(std::move(t));
    release_file_pages(*old.encoding);
    if (scratch) trim_heap();
  };
  for (const auto& t : tensors) {
    const bool one_d = t.shape.dims.size() < 2;
    if (one_d) {
      if (!is_dense_of(t, DType::kF32)) replace(t, to_dense(t, DType::kF32));
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
          replace(t, quantize_tensor(t, dtype == ExportDType::kQ8_0 ? 8 : 4));
          continue;
        }
        log_warn(t.name, ": row length ", t.cols(), " is not a multiple of 32; stored as f16 instead of ",
                 export_dtype_name(dtype));
        target = DType::kF16;
        break;
      case ExportDType::kKeep: break;
    }
    if (!is_dense_of(t, target)) replace(t, to_dense(t, target));
  }
}

}  // namespace llmc
