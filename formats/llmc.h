// The .llmc container (formats/README.md): prefix constants, read options, and the in-memory parser shared
// by read_llmc, the fuzz target and tools that want the provenance or the mapping.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/model.h"
#include "formats/section_codec.h"

namespace llmc {

class ScratchFile;  // formats/scratch_file.h

// Fixed 64-byte prefix at offset 0 (little-endian):
//   0  u8[8] magic "LLMC\r\n\x1a\n"
//   8  u32   format version (kLlmcFormatVersion)
//  12  u32   flags: bits 0..15 optional (ignored when unknown), bits 16..31 required (unknown => refuse)
//  16  u64   header size in bytes (the FlatBuffers header starts at offset 64)
//  24  u64   xxHash64 (seed 0) of the header bytes
//  32  u64   total file size
//  40  u8[24] reserved, written as zero, ignored by readers
inline constexpr char kLlmcMagic[8] = {'L', 'L', 'M', 'C', '\r', '\n', '\x1a', '\n'};
inline constexpr uint32_t kLlmcFormatVersion = 1;
inline constexpr uint64_t kLlmcPrefixSize = 64;
inline constexpr uint64_t kLlmcSectionAlignment = 64;
inline constexpr uint32_t kLlmcRequiredFlagsMask = 0xFFFF0000u;
// Required flag bit 16: some section has a symbol layout (transform) or a Huffman/rANS coder;
// a reader that ignored those fields would hand out wrong bytes (formats/README.md).
inline constexpr uint32_t kLlmcFlagSectionCoding = 1u << 16;
inline constexpr uint32_t kLlmcKnownRequiredFlags = kLlmcFlagSectionCoding;

struct LlmcReadOptions {
  // Verify the xxHash64 of every section at load (the header's checksum is always verified).
  bool verify_checksums = true;
  // false: read the header only (config, tokenizer, the section table and which tensor uses which
  // section, all checked); no section byte is read and the model has no tensors (llmc inspect).
  bool load_tensors = true;
  // true: a raw section's mapped pages are given back (release_file_pages) once its checksum is
  // verified, so a model that is transformed once (llmc quantize, prune, convert...) does not keep
  // the whole input resident: its pages fault in again from the page cache as each tensor is read.
  // Coded sections always give their pages back once decoded (their bytes live on the heap).
  bool release_verified = false;
  // Where decoded coded sections go instead of the heap (LoadOptions::scratch); null: the heap.
  ScratchFile* scratch = nullptr;
};

// Who made the file: the Provenance table of the header.
struct LlmcProvenance {
  std::string llmc_version;
  uint64_t input_xxh64 = 0;
  std::string input_path;
  std::string recipe;
  std::string command_line;
  int64_t created_unix = 0;
};

// One entry of the section table.
struct LlmcSectionInfo {
  uint64_t offset = 0;
  uint64_t stored_size = 0;  // bytes in the file
  uint64_t raw_size = 0;     // bytes after decoding
  SectionCoder coder = SectionCoder::kNone;
  SectionLayout layout;
};

// A section referenced by a tensor's encoding tree, with its role ("codes", "scales", "data",
// "sparse mask", ...). A section referenced by several tensors (deduplicated) appears in each.
struct LlmcSectionRef {
  std::string role;
  uint32_t section = 0;
};
struct LlmcTensorSections {
  std::string tensor;
  std::vector<LlmcSectionRef> refs;  // in the order the encoding tree lists them
};

// A parsed .llmc file: the model (raw sections are zero-copy views of `data`), and what the
// header holds besides the model.
struct LlmcFile {
  Model model;
  LlmcProvenance provenance;
  std::string report_json;
  uint32_t version = 0;
  uint64_t header_size = 0;
  uint32_t flags = 0;
  size_t raw_sections = 0;
  size_t zstd_sections = 0;
  size_t entropy_sections = 0;  // Huffman or rANS
  std::vector<LlmcSectionInfo> sections;
  std::vector<LlmcTensorSections> tensor_sections;  // per tensor, in file order
  std::shared_ptr<const void> owner;                // keeps `data` alive (the mapping, or the caller's buffer)
  const uint8_t* data = nullptr;                    // the whole file image
  size_t size = 0;
};

// Maps `path` and parses it.
Result<LlmcFile> open_llmc(const std::string& path, const LlmcReadOptions& options = {});
Result<Model> read_llmc(const std::string& path, const LlmcReadOptions& options);

// Parses a whole .llmc image in memory. `name` is used in error messages; raw sections become
// views of `data` that share ownership with `owner`.
Result<LlmcFile> parse_llmc(const std::string& name, std::shared_ptr<const void> owner, const uint8_t* data,
                            size_t size, const LlmcReadOptions& options = {});

}  // namespace llmc
