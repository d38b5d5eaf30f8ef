// GGUF container constants shared by the reader and writer, and the in-memory parser (fuzzing, tests).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/model.h"

namespace llmc {

class ScratchFile;  // formats/scratch_file.h

// File layout (little-endian, v2 and v3; v1 used 32-bit counts and is not supported):
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count,
//   kv_count x { string key, u32 value_type, value },
//   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset },
//   zero padding to `general.alignment` (default 32), then the data section; tensor offsets are
//   relative to its start and aligned. string = u64 length + bytes (no terminator);
//   array = u32 element type, u64 count, elements. ne[0] is the fastest-varying dimension.
inline constexpr char kGgufMagic[4] = {'G', 'G', 'U', 'F'};
inline constexpr uint32_t kGgufVersion = 3;
inline constexpr uint64_t kGgufDefaultAlignment = 32;
// llama.cpp's architecture for Llama models with per-layer head counts and FFN widths (DeciLM,
// Nemotron-NAS): llama's tensors, RoPE layout and keys, read as the Llama family.
inline constexpr const char* kGgufDeciArchitecture = "deci";

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// Parses a GGUF image held in memory. `name` is used in error messages; `owner` keeps `data`
// alive for the zero-copy tensor views of the result (may be null when the caller guarantees it).
// load_tensors = false: the tensor table is still checked, but no tensor is created (config and
// vocabulary only). scratch non-null: tensors built on the heap (repacked blocks, f32 decodes) are
// moved there (LoadOptions::scratch).
Result<Model> read_gguf_memory(const std::string& name, std::shared_ptr<const void> owner, const uint8_t* data,
                               size_t size, bool require_tensors, bool load_tensors = true,
                               ScratchFile* scratch = nullptr);

}  // namespace llmc
