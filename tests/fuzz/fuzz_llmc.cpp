// libFuzzer target for the .llmc parser: arbitrary bytes must give a Model or an error, never a crash.
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "formats/llmc.h"
#include "formats/section_codec.h"

namespace {

// Bit 2 of the first byte: the rest drives the section decoders directly (Huffman, rANS, zstd
// under every symbol layout), which reach hostile stored bytes without a valid header around them:
//   [0] coder (low 2 bits) and transform (bits 2..3)   [1] symbol_bits   [2..3] row_symbols (u16)
//   [4] plane_width   [5..7] raw_size (u24)   [8..] the stored bytes
void fuzz_section(const uint8_t* data, size_t size) {
  if (size < 8) return;
  llmc::SectionLayout layout;
  const auto coder = static_cast<llmc::SectionCoder>(data[0] & 3);
  layout.transform = static_cast<llmc::SectionTransform>((data[0] >> 2) & 3);
  layout.symbol_bits = data[1];
  layout.row_symbols = uint64_t{data[2]} | uint64_t{data[3]} << 8;
  layout.plane_width = data[4];
  const uint64_t raw_size = uint64_t{data[5]} | uint64_t{data[6]} << 8 | uint64_t{data[7]} << 16;
  const std::vector<uint8_t> stored(data + 8, data + size);  // exact bounds for ASan
  if (!llmc::check_section_record(coder, layout, raw_size, stored.size()).ok()) return;
  auto out = llmc::decode_section(stored, coder, layout, raw_size);
  if (out.ok() && out->size() != raw_size) __builtin_trap();
}

}  // namespace

// The first input byte picks the options; the rest is the file image. When the image has a
// prefix, its header checksum and file size are recomputed so that mutations reach the
// FlatBuffers verifier and the semantic checks instead of stopping at the checksum. Without
// checksum verification, mutated section bytes reach the section decoders.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  if (data[0] & 4) {
    fuzz_section(data + 1, size - 1);
    return 0;
  }
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
