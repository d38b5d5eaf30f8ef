// Element types of stored tensors and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace llmc {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI8 = 3, kU8 = 4, kI32 = 5 };

// One row per dtype; code iterates this table instead of switching.
struct DTypeInfo {
  DType dtype;
  std::string_view name;
  int bytes;
};
const DTypeInfo& dtype_info(DType dtype);
inline int dtype_bytes(DType dtype) { return dtype_info(dtype).bytes; }
inline std::string_view dtype_name(DType dtype) { return dtype_info(dtype).name; }
std::optional<DType> dtype_from_name(std::string_view name);

inline float bits_to_f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// IEEE binary16 <-> binary32, round-to-nearest-even, NaN/Inf/subnormals preserved.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }
uint16_t f32_to_bf16(float f);  // round-to-nearest-even; NaN stays NaN

}  // namespace llmc
