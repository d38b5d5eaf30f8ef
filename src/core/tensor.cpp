// Tensor helpers: whole-tensor decode and dense construction.
#include "core/tensor.h"

#include <algorithm>
#include <cstring>

namespace llmc {

std::vector<float> Tensor::to_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  if (!out.empty()) rows_to_f32(0, rows(), out.data());
  return out;
}

Tensor make_dense_f32(std::string name, Shape shape, const std::vector<float>& values) {
  return make_dense(std::move(name), std::move(shape), values, DType::kF32);
}

Tensor make_dense(std::string name, Shape shape, const std::vector<float>& values, DType dtype) {
  LLMC_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "value count does not match shape");
  DenseEncoding d;
  d.dtype = dtype;
  if (dtype == DType::kF32) {
    d.data = Bytes::from_vector(values);
  } else {
    LLMC_CHECK(dtype == DType::kF16 || dtype == DType::kBF16, "dense dtype must be a float type");
    std::vector<uint16_t> half(values.size());
    for (size_t i = 0; i < values.size(); ++i)
      half[i] = dtype == DType::kF16 ? f32_to_f16(values[i]) : f32_to_bf16(values[i]);
    d.data = Bytes::from_vector(half);
  }
  return Tensor{std::move(name), std::move(shape), std::make_shared<Encoding>(Encoding{d})};
}

Tensor to_dense(const Tensor& t, DType dtype) {
  const int64_t rows = t.shape.dims.size() < 2 ? 1 : t.rows(), cols = t.numel() / std::max<int64_t>(rows, 1);
  const int width = dtype_bytes(dtype);
  std::vector<uint8_t> out(static_cast<size_t>(t.numel() * width));
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(cols, 1));
  std::vector<float> buf;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk), n = (r1 - r0) * cols;
    buf.resize(static_cast<size_t>(n));
    if (rows == 1) {
      const std::vector<float> all = t.to_f32();  // 1-D: norms and biases, small
      std::copy(all.begin(), all.end(), buf.begin());
    } else {
      t.rows_to_f32(r0, r1, buf.data());
    }
    uint8_t* dst = out.data() + r0 * cols * width;
    for (int64_t i = 0; i < n; ++i) {
      if (dtype == DType::kF32) {
        std::memcpy(dst + i * 4, &buf[i], 4);
      } else {
        const uint16_t h = dtype == DType::kF16 ? f32_to_f16(buf[i]) : f32_to_bf16(buf[i]);
        std::memcpy(dst + i * 2, &h, 2);
      }
    }
  }
  DenseEncoding d;
  d.dtype = dtype;
  d.data = Bytes::owned(std::move(out));
  return Tensor{t.name, t.shape, std::make_shared<Encoding>(Encoding{d})};
}

}  // namespace llmc
