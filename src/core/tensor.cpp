// Tensor helpers: whole-tensor decode and dense construction.
#include "core/tensor.h"

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

}  // namespace llmc
