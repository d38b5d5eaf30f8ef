// safetensors container parsing: the u64 header length, the JSON header and the tensor byte ranges.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"

namespace llmc {

// Layout (https://github.com/huggingface/safetensors): u64 little-endian N, then N bytes of UTF-8
// JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {str: str}}, then the data buffer; offsets are relative to byte 8 + N.
constexpr uint64_t kSafetensorsMaxHeader = 100ull << 20;  // 100 MB, as the reference implementation

// One row per safetensors dtype string; code iterates this table.
struct SafetensorsDTypeInfo {
  const char* name;
  int bytes;
};
const SafetensorsDTypeInfo* safetensors_dtype(const std::string& name);  // nullptr when unknown

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // safetensors spelling: "F32", "BF16", ...
  int elem_bytes = 0;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // absolute offsets in the file (data start already added)
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_start = 0;                // 8 + N
  std::vector<SafetensorsEntry> tensors;  // in header order
  std::map<std::string, std::string> metadata;
};

// Parses and validates the header of a file of `size` bytes held at `data` (names the file in
// errors): header length within the file and the cap, valid JSON object, known dtypes, shapes of
// non-negative dims, offsets ordered, inside the data buffer, matching dtype x shape and not
// overlapping, no duplicate names.
Result<SafetensorsHeader> parse_safetensors(const std::string& file, const uint8_t* data, size_t size);

}  // namespace llmc
