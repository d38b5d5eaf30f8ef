// ggml tensor types as GGUF numbers them, their block geometry, and the block codecs llmc supports.
#pragma once

#include <cstdint>
#include <optional>

namespace llmc {

// ggml_type values stored in GGUF tensor infos (only the ones llmc knows by name).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

// Decodes `n_blocks` consecutive blocks at `src` into n_blocks * block_size floats.
using GgmlDequantFn = void (*)(const uint8_t* src, int64_t n_blocks, float* dst);

// One row per type: `block_size` elements are stored in `type_size` bytes. `dequant` is null for
// types llmc recognises but cannot decode (they load as an unsupported-type error).
struct GgmlTypeInfo {
  GgmlType type;
  const char* name;
  int64_t block_size;
  int64_t type_size;
  GgmlDequantFn dequant;
};

// Row of a raw GGUF type number, or nullptr when the number is not in the table.
const GgmlTypeInfo* ggml_type_info(uint32_t type);
inline const GgmlTypeInfo& ggml_type_info(GgmlType type) { return *ggml_type_info(static_cast<uint32_t>(type)); }

// ggml reference quantizers (ggml-quants.c quantize_row_*_ref); n is a multiple of 32.
// Q8_0 block (34 bytes): f16 d = amax/127, then 32 x int8 q = round(x/d) (half away from zero).
void quantize_q8_0(const float* src, int64_t n, uint8_t* dst);
// Q4_0 block (18 bytes): f16 d = max/-8 (max = signed value of largest magnitude), then 16 bytes:
// byte j holds q[j] in its low nibble and q[j+16] in its high nibble, q = min(15, trunc(x/d + 8.5)).
void quantize_q4_0(const float* src, int64_t n, uint8_t* dst);

}  // namespace llmc
