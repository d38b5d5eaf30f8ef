// The coder layer between the .llmc writer/reader and the file: how a section's raw bytes become
// its stored bytes (a symbol layout, then zstd, Huffman or rANS) and back. formats/README.md,
// "Section coding", has the byte layouts; docs/storage.md the choices and measurements.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace llmc {

// How a section's stored bytes are compressed (values = fb::Compression).
enum class SectionCoder : uint8_t { kNone = 0, kZstd = 1, kHuffman = 2, kRans = 3 };
// How the raw bytes are rearranged into the symbols that are compressed (values = fb::SectionTransform).
enum class SectionTransform : uint8_t {
  kNone = 0,        // the raw bytes themselves (8-bit symbols)
  kUnpack = 1,      // rows of packed b-bit codes -> one b-bit symbol per code
  kBytePlanes = 2,  // w-byte elements -> byte 0 of every element, then byte 1, ... (w planes)
};

const char* section_coder_name(SectionCoder coder);  // "raw", "zstd", "huffman", "rans"

struct SectionLayout {
  SectionTransform transform = SectionTransform::kNone;
  int symbol_bits = 8;       // kUnpack: bits per code, 1..8
  uint64_t row_symbols = 0;  // kUnpack: codes per row; a row is ceil(row_symbols * symbol_bits / 8) raw bytes
  int plane_width = 0;       // kBytePlanes: bytes per element, 2..8
  // "bytes", "unpack4x172" (bits x codes per row), "planes2".
  std::string str() const;
  bool operator==(const SectionLayout&) const = default;
};

// What the writer knows of a buffer's structure: which layouts are worth trying.
struct SectionHint {
  int code_bits = 0;      // > 0: rows of packed codes of this many bits (LSB-first, each row byte-aligned)...
  int64_t row_codes = 0;  // ...with this many codes per row
  int element_bytes = 0;  // > 1: little-endian numbers of this width (f16/bf16, f32, u32 indices)
};

// What the writer is asked to do (--entropy, --zstd).
enum class SectionCoding : uint8_t {
  kNone,       // raw sections only (mmap-able)
  kZstdBytes,  // zstd of the raw bytes where smaller: what `--zstd N` alone writes, readable by llmc 0.1
  kZstd,       // zstd, also over unpacked codes and byte planes
  kHuffman,    // Huffman over the best symbol layout, where smaller than raw
  kRans,       // rANS over the best symbol layout, where smaller than raw
  kAuto,       // per section the smallest of raw, zstd, Huffman and rANS over every layout
};
// none | zstd | huffman | rans | auto.
Result<SectionCoding> parse_section_coding(std::string_view name);
const char* section_coding_name(SectionCoding coding);

struct CodedSection {
  SectionCoder coder = SectionCoder::kNone;
  SectionLayout layout;
  std::vector<uint8_t> stored;  // empty for kNone: the raw bytes are stored as they are
};

// The smallest candidate `coding` allows; the raw bytes win unless a candidate is strictly
// smaller, so a coded section is never larger than raw. Depends only on the arguments.
Result<CodedSection> encode_section(std::span<const uint8_t> raw, const SectionHint& hint, SectionCoding coding,
                                    int zstd_level);

// Layouts worth trying for `raw` with this hint, the plain byte layout first. Unpack needs every
// row's padding bits to be zero (else repacking would not give the same bytes back).
std::vector<SectionLayout> candidate_layouts(std::span<const uint8_t> raw, const SectionHint& hint);

// One given coder (not kNone) and layout (one of candidate_layouts), for benchmarks and tests.
Result<std::vector<uint8_t>> encode_section_as(std::span<const uint8_t> raw, SectionCoder coder,
                                               const SectionLayout& layout, int zstd_level);

// Checks a section record before any of its bytes are read or anything is allocated: known coder
// and layout, layout consistent with raw_size, raw_size possible for stored_size. Messages name
// the problem, not the file (the reader adds that).
Result<void> check_section_record(SectionCoder coder, const SectionLayout& layout, uint64_t raw_size,
                                  uint64_t stored_size);

// Decodes the stored bytes of a checked record into exactly raw_size bytes. Hostile stored bytes
// give a kFormat error, never a crash or an allocation beyond raw_size plus one block.
Result<std::vector<uint8_t>> decode_section(std::span<const uint8_t> stored, SectionCoder coder,
                                            const SectionLayout& layout, uint64_t raw_size);

}  // namespace llmc
