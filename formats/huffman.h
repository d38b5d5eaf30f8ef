// Canonical Huffman coding of one block of 1..8-bit symbols: an entropy coder of .llmc sections
// (formats/README.md, "Section coding", has the byte layout of a block).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"

namespace llmc {

// Longest code: decoding looks codes up in one table of 2^12 entries.
inline constexpr int kHuffmanMaxCodeLength = 12;

// Appends the coded block of `symbols` (each < 2^symbol_bits, symbol_bits in 1..8) to `out`.
void huffman_encode_block(std::span<const uint8_t> symbols, int symbol_bits, std::vector<uint8_t>& out);

// Decodes out.size() symbols from `block`, which must be exactly one coded block. Hostile bytes
// (bad code lengths, truncated or overlong streams) give a kFormat error; nothing outside `block`
// is read and nothing outside `out` is written.
Result<void> huffman_decode_block(std::span<const uint8_t> block, int symbol_bits, std::span<uint8_t> out);

}  // namespace llmc
