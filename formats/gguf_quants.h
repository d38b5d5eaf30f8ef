// ggml tensor types as GGUF numbers them, their block geometry, and the block codecs llmc supports.
#pragma once

#include <cstdint>
#include <optional>

#include "core/encoding.h"

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

// One block's share of a Quant encoding (see GgmlQuantLayout), as mutable or read-only pointers.
struct QuantBlockOut {
  uint8_t* codes;
  uint8_t* scales;
  uint8_t* mins;      // null when the layout has none
  float* scale_meta;  // u8 layouts: the block's (step, base)
  float* min_meta;
};
struct QuantBlockIn {
  const uint8_t* codes;
  const uint8_t* scales;
  const uint8_t* mins;
  const float* scale_meta;
  const float* min_meta;
};

// A ggml block type whose values a Quant encoding holds exactly (same f32 value for every element,
// see docs/gguf.md). One block of `block_size` elements becomes block_size * bits / 8 bytes of
// LSB-first codes, block_size / group_size scale (and min) entries and, for u8 scales, one (step,
// base) pair per block (scale_block = block_size / group_size). Rows are whole blocks, so a tensor's
// blocks in file order are exactly its Quant rows, groups and scale blocks in order.
struct GgmlQuantLayout {
  int bits;
  QuantScheme scheme;
  int64_t group_size;
  DType scale_dtype;  // f16 (raw copies of the block's d/m) or u8 (double-quantized sub-block scales)
  bool mins;
  // Repacks n_blocks blocks; false when one cannot be held exactly (a non-finite super-scale
  // where the u8 base would turn it into NaN), then the caller decodes to f32 instead.
  bool (*to_quant)(const uint8_t* src, int64_t n_blocks, const QuantBlockOut& dst);
  // Whether n_blocks blocks of a Quant encoding with this layout fit the type (u8 entries within
  // the type's sub-scale range, meta of the type's form); null = always.
  bool (*fits)(const QuantBlockIn& src, int64_t n_blocks);
  // The inverse of to_quant for blocks that fit: byte-identical to the blocks to_quant read.
  void (*from_quant)(const QuantBlockIn& src, int64_t n_blocks, uint8_t* dst);
};

// One row per type: `block_size` elements are stored in `type_size` bytes. `dequant` is null for
// types llmc recognises but cannot decode (they load as an unsupported-type error); `quant` is
// null for types that load as f32 (and, for F32/F16/BF16, stay Dense).
struct GgmlTypeInfo {
  GgmlType type;
  const char* name;
  int64_t block_size;
  int64_t type_size;
  GgmlDequantFn dequant;
  const GgmlQuantLayout* quant;
};

// Row of a raw GGUF type number, or nullptr when the number is not in the table.
const GgmlTypeInfo* ggml_type_info(uint32_t type);
inline const GgmlTypeInfo& ggml_type_info(GgmlType type) { return *ggml_type_info(static_cast<uint32_t>(type)); }

// The Quant encoding of a [rows, cols] tensor stored as `type` blocks at src (cols a multiple of the
// block size), repacked without going through f32 (threads share chunks of blocks); nullopt when the
// type has no layout or a block is not representable. Its decode equals `type->dequant` exactly
// (up to the sign of zero values, see docs/gguf.md).
std::optional<QuantEncoding> ggml_to_quant(const GgmlTypeInfo& type, const uint8_t* src, int64_t rows, int64_t cols);

// The ggml type whose blocks hold exactly the values of Quant encoding q of a [rows, cols] tensor:
// same layout, cols a multiple of the block size, every block fits. Scans the scales of u8 layouts.
std::optional<GgmlType> ggml_type_of_quant(const QuantEncoding& q, int64_t rows, int64_t cols);

// Writes blocks [block_begin, block_end) (in file order) of q, whose ggml_type_of_quant is `type`.
void quant_to_ggml(const QuantEncoding& q, GgmlType type, int64_t block_begin, int64_t block_end, uint8_t* dst);

// ggml reference quantizers (ggml-quants.c quantize_row_*_ref); n is a multiple of 32.
// Q8_0 block (34 bytes): f16 d = amax/127, then 32 x int8 q = round(x/d) (half away from zero).
void quantize_q8_0(const float* src, int64_t n, uint8_t* dst);
// Q4_0 block (18 bytes): f16 d = max/-8 (max = signed value of largest magnitude), then 16 bytes:
// byte j holds q[j] in its low nibble and q[j+16] in its high nibble, q = min(15, trunc(x/d + 8.5)).
void quantize_q4_0(const float* src, int64_t n, uint8_t* dst);

}  // namespace llmc
