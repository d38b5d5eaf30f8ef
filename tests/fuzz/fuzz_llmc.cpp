// libFuzzer target for the .llmc parser: arbitrary bytes must give a Model or an error, never a crash.
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "formats/llmc.h"

// The first input byte picks the options; the rest is the file image. When the image has a
// prefix, its header checksum and file size are recomputed so that mutations reach the
// FlatBuffers verifier and the semantic checks instead of stopping at the checksum.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  llmc::LlmcReadOptions options;
  options.verify_checksums = (data[0] & 1) != 0;
  const bool fix_prefix = (data[0] & 2) != 0;
  auto image = std::make_shared<std::vector<uint8_t>>(data + 1, data + size);
  if (fix_prefix && image->size() >= llmc::kLlmcPrefixSize) {
    uint8_t* p = image->data();
    const uint64_t file_size = image->size();
    std::memcpy(p + 32, &file_size, 8);
    uint64_t header_size;
    std::memcpy(&header_size, p + 16, 8);
    if (header_size <= file_size - llmc::kLlmcPrefixSize) {
      const uint64_t h = XXH64(p + llmc::kLlmcPrefixSize, header_size, 0);
      std::memcpy(p + 24, &h, 8);
    }
  }
  auto file = llmc::parse_llmc("fuzz.llmc", image, image->data(), image->size(), options);
  if (file.ok()) {
    for (const llmc::Tensor& t : file->model.tensors()) {
      std::vector<float> row(static_cast<size_t>(t.cols()));
      if (t.rows() > 0 && !row.empty()) t.rows_to_f32(0, 1, row.data());
    }
  }
  return 0;
}
