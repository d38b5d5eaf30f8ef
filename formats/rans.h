// rANS (range asymmetric numeral systems, J. Duda) coding of one block of 1..8-bit symbols with a
// static model: an entropy coder of .llmc sections (formats/README.md, "Section coding", has the
// byte layout of a block).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"

namespace llmc {

// Probabilities are quantized to multiples of 2^-scale_bits; the writer uses this precision.
inline constexpr int kRansScaleBits = 12;
// Largest precision a block may declare (decode table of 2^15 entries).
inline constexpr int kRansMaxScaleBits = 15;

// Appends the coded block of `symbols` (each < 2^symbol_bits, symbol_bits in 1..8) to `out`.
void rans_encode_block(std::span<const uint8_t> symbols, int symbol_bits, std::vector<uint8_t>& out);

// Decodes out.size() symbols from `block`, which must be exactly one coded block. Hostile bytes
// (bad frequency tables, bad states, truncated or overlong streams) give a kFormat error; nothing
// outside `block` is read and nothing outside `out` is written.
Result<void> rans_decode_block(std::span<const uint8_t> block, int symbol_bits, std::span<uint8_t> out);

}  // namespace llmc
