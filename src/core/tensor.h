// A named tensor: logical shape plus the encoding tree that stores its values.
#pragma once

#include <string>
#include <vector>

#include "core/encoding.h"

namespace llmc {

struct Tensor {
  std::string name;
  Shape shape;
  EncodingPtr encoding;

  int64_t numel() const { return shape.numel(); }
  int64_t rows() const { return shape.rows(); }
  int64_t cols() const { return shape.cols(); }
  size_t encoded_bytes() const { return llmc::encoded_bytes(*encoding); }
  std::vector<float> to_f32() const;  // reference decode of the whole tensor
  void rows_to_f32(int64_t row_begin, int64_t row_end, float* out) const {
    decode_rows_to_f32(*encoding, shape, row_begin, row_end, out);
  }
};

// Builds a Dense tensor owning its bytes; `values` must hold shape.numel() elements.
Tensor make_dense_f32(std::string name, Shape shape, const std::vector<float>& values);
// Converts f32 values to a Dense tensor of `dtype` (f32, f16 or bf16), rounding to nearest even.
Tensor make_dense(std::string name, Shape shape, const std::vector<float>& values, DType dtype);
// t as a Dense tensor of `dtype` (f32, f16 or bf16; the same values as make_dense of t.to_f32()),
// decoded and converted a block of rows at a time: no f32 copy of the whole tensor.
Tensor to_dense(const Tensor& t, DType dtype);

}  // namespace llmc
