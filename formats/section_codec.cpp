// Section coding (formats/section_codec.h): symbol layouts, block framing, and the choice of coder.
//
// Stored bytes of a Huffman or rANS section:
//   u32 block_symbols   symbols per block (1..2^20; a multiple of row_symbols for kUnpack)
//   u32 block_count     = planes * ceil(symbols per plane / block_symbols) (1 plane unless kBytePlanes)
//   u32 x block_count   byte size of each block
//   the blocks, back to back (formats/huffman.cpp, formats/rans.cpp), filling the section exactly
// Each block has its own static model, so blocks decode independently. A zstd section is one
// zstd frame whose content is the symbol bytes (for kUnpack: one byte per code).
#include "formats/section_codec.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "formats/huffman.h"
#include "formats/little_endian.h"
#include "formats/rans.h"

namespace llmc {
namespace {

// A zstd block holds at most 128 KiB and the smallest block (RLE) takes 4 bytes: no frame of n
// bytes decodes to more than n * 32768 bytes.
constexpr uint64_t kMaxZstdRatio = 32768;
constexpr uint64_t kMaxBlockSymbols = uint64_t{1} << 20;
// A Huffman/rANS block of at most 2^20 symbols takes at least 5 stored bytes (its size entry
// and one table byte), so no coded section expands by more than 2^20 / 5 < 2^18.
constexpr uint64_t kMaxCodedRatio = uint64_t{1} << 18;

struct BlockCoder {
  SectionCoder coder;
  void (*encode)(std::span<const uint8_t>, int, std::vector<uint8_t>&);
  Result<void> (*decode)(std::span<const uint8_t>, int, std::span<uint8_t>);
};
constexpr BlockCoder kBlockCoders[] = {
    {SectionCoder::kHuffman, huffman_encode_block, huffman_decode_block},
    {SectionCoder::kRans, rans_encode_block, rans_decode_block},
};
const BlockCoder* block_coder(SectionCoder c) {
  for (const auto& b : kBlockCoders)
    if (b.coder == c) return &b;
  return nullptr;
}

void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

uint64_t row_bytes(const SectionLayout& l) { return (l.row_symbols * static_cast<uint64_t>(l.symbol_bits) + 7) / 8; }

// The symbol stream of a layout over raw_size bytes: `planes` segments of `per_plane` symbols.
struct Symbols {
  uint64_t planes = 1;
  uint64_t per_plane = 0;
  int bits = 8;
  uint64_t total() const { return planes * per_plane; }
};
Symbols symbols_of(const SectionLayout& l, uint64_t raw_size) {
  switch (l.transform) {
    case SectionTransform::kUnpack: return {1, raw_size / row_bytes(l) * l.row_symbols, l.symbol_bits};
    case SectionTransform::kBytePlanes:
      return {static_cast<uint64_t>(l.plane_width), raw_size / static_cast<uint64_t>(l.plane_width), 8};
    case SectionTransform::kNone: break;
  }
  return {1, raw_size, 8};
}

uint64_t block_symbols_of(const SectionLayout& l) {
  return l.transform == SectionTransform::kUnpack ? kMaxBlockSymbols / l.row_symbols * l.row_symbols : kMaxBlockSymbols;
}

// ---- layouts: raw bytes <-> symbols

void unpack_row(const uint8_t* src, uint64_t codes, int bits, uint8_t* dst) {
  const uint32_t mask = (1u << bits) - 1;
  for (uint64_t i = 0; i < codes; ++i) {
    const uint64_t bit = i * static_cast<uint64_t>(bits);
    uint32_t word = src[bit >> 3];
    if ((bit & 7) + static_cast<uint64_t>(bits) > 8) word |= uint32_t{src[(bit >> 3) + 1]} << 8;
    dst[i] = static_cast<uint8_t>((word >> (bit & 7)) & mask);
  }
}

// Symbols must be < 2^bits. Writes exactly the row's bytes.
void pack_row(const uint8_t* src, uint64_t codes, int bits, uint8_t* dst) {
  if (bits == 4) {
    for (uint64_t i = 0; i + 1 < codes; i += 2) *dst++ = static_cast<uint8_t>(src[i] | src[i + 1] << 4);
    if (codes % 2) *dst = src[codes - 1];
    return;
  }
  uint64_t acc = 0;
  int used = 0;
  for (uint64_t i = 0; i < codes; ++i) {
    acc |= uint64_t{src[i]} << used;
    used += bits;
    if (used >= 32) {
      store_u32(dst, static_cast<uint32_t>(acc));
      dst += 4;
      acc >>= 32;
      used -= 32;
    }
  }
  for (; used > 0; used -= 8, acc >>= 8) *dst++ = static_cast<uint8_t>(acc);
}

bool padding_is_zero(std::span<const uint8_t> raw, const SectionLayout& l) {
  const uint64_t tail_bits = (l.row_symbols * static_cast<uint64_t>(l.symbol_bits)) % 8, stride = row_bytes(l);
  if (tail_bits == 0) return true;
  for (uint64_t r = stride - 1; r < raw.size(); r += stride)
    if (raw[r] >> tail_bits) return false;
  return true;
}

// The symbol stream of `raw` (a copy; the byte layout's stream is `raw` itself).
std::vector<uint8_t> to_symbols(std::span<const uint8_t> raw, const SectionLayout& l) {
  const Symbols s = symbols_of(l, raw.size());
  std::vector<uint8_t> out(s.total());
  switch (l.transform) {
    case SectionTransform::kUnpack: {
      const uint64_t stride = row_bytes(l), rows = raw.size() / stride;
      for (uint64_t r = 0; r < rows; ++r)
        unpack_row(raw.data() + r * stride, l.row_symbols, l.symbol_bits, out.data() + r * l.row_symbols);
      break;
    }
    case SectionTransform::kBytePlanes:
      for (uint64_t e = 0; e < s.per_plane; ++e)
        for (uint64_t p = 0; p < s.planes; ++p) out[p * s.per_plane + e] = raw[e * s.planes + p];
      break;
    case SectionTransform::kNone: std::copy(raw.begin(), raw.end(), out.begin()); break;
  }
  return out;
}

// Writes symbols [first, first + count) of plane `plane` into their raw bytes. For kUnpack,
// `first` and `count` are whole rows.
void from_symbols(const uint8_t* sym, uint64_t plane, uint64_t first, uint64_t count, const SectionLayout& l,
                  uint8_t* raw) {
  switch (l.transform) {
    case SectionTransform::kUnpack: {
      const uint64_t stride = row_bytes(l);
      for (uint64_t r = 0; r < count / l.row_symbols; ++r)
        pack_row(sym + r * l.row_symbols, l.row_symbols, l.symbol_bits, raw + (first / l.row_symbols + r) * stride);
      break;
    }
    case SectionTransform::kBytePlanes: {
      const uint64_t w = static_cast<uint64_t>(l.plane_width);
      uint8_t* dst = raw + first * w + plane;
      for (uint64_t e = 0; e < count; ++e) dst[e * w] = sym[e];
      break;
    }
    case SectionTransform::kNone: std::memcpy(raw + first, sym, count); break;
  }
}

// ---- zstd

Result<std::vector<uint8_t>> zstd_encode(std::span<const uint8_t> symbols, int level) {
  std::vector<uint8_t> out(ZSTD_compressBound(symbols.size()));
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  if (!cctx) return make_error(ErrorCode::kInternal, "zstd: cannot create a compression context");
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);
  const size_t got = ZSTD_compress2(cctx, out.data(), out.size(), symbols.data(), symbols.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(got)) return make_error(ErrorCode::kInternal, "zstd compression: ", ZSTD_getErrorName(got));
  out.resize(got);
  out.shrink_to_fit();
  return out;
}

// Decodes one zstd frame of exactly `symbols` content bytes into `out`.
Result<void> zstd_decode(std::span<const uint8_t> stored, std::span<uint8_t> out) {
  const unsigned long long content = ZSTD_getFrameContentSize(stored.data(), stored.size());
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN)
    return make_error(ErrorCode::kFormat, "not a zstd frame with a recorded content size");
  if (content != out.size())
    return make_error(ErrorCode::kFormat, "zstd frame holds ", content, " bytes, section table says ", out.size());
  const size_t frame = ZSTD_findFrameCompressedSize(stored.data(), stored.size());
  if (ZSTD_isError(frame) || frame != stored.size())
    return make_error(ErrorCode::kFormat, "stored bytes are not exactly one zstd frame");
  const size_t got = ZSTD_decompress(out.data(), out.size(), stored.data(), stored.size());
  if (ZSTD_isError(got)) return make_error(ErrorCode::kFormat, "zstd: ", ZSTD_getErrorName(got));
  if (got != out.size())
    return make_error(ErrorCode::kFormat, "zstd frame decoded to ", got, " bytes, expected ", out.size());
  return {};
}

// ---- Huffman / rANS blocks

std::vector<uint8_t> blocks_encode(std::span<const uint8_t> symbols, const Symbols& s, const SectionLayout& l,
                                   const BlockCoder& coder) {
  const uint64_t bs = block_symbols_of(l);
  const uint64_t per_plane_blocks = (s.per_plane + bs - 1) / bs, count = s.planes * per_plane_blocks;
  std::vector<uint8_t> out(8 + 4 * count);
  store_u32(out.data(), static_cast<uint32_t>(bs));
  store_u32(out.data() + 4, static_cast<uint32_t>(count));
  uint64_t k = 0;
  for (uint64_t p = 0; p < s.planes; ++p)
    for (uint64_t first = 0; first < s.per_plane; first += bs, ++k) {
      const size_t before = out.size();
      const uint64_t n = std::min(bs, s.per_plane - first);
      coder.encode(symbols.subspan(p * s.per_plane + first, n), s.bits, out);
      store_u32(out.data() + 8 + 4 * k, static_cast<uint32_t>(out.size() - before));
    }
  return out;
}

// Checks the block header and size table against the symbol stream; returns the symbols per block.
Result<uint64_t> check_blocks(std::span<const uint8_t> stored, const Symbols& s, const SectionLayout& l) {
  auto bad = [](auto&&... what) { return make_error(ErrorCode::kFormat, what...); };
  if (stored.size() < 8) return bad("coded section shorter than its block header");
  const uint64_t bs = load_u32(stored.data()), count = load_u32(stored.data() + 4);
  if (bs == 0 || bs > kMaxBlockSymbols) return bad("block of ", bs, " symbols (1..", kMaxBlockSymbols, " allowed)");
  if (l.transform == SectionTransform::kUnpack && bs % l.row_symbols != 0)
    return bad("block of ", bs, " symbols is not a whole number of ", l.row_symbols, "-code rows");
  const uint64_t want = s.planes * ((s.per_plane + bs - 1) / bs);
  if (count != want) return bad("coded section has ", count, " blocks, its size needs ", want);
  if (count > (stored.size() - 8) / 4) return bad("block size table past the end of the section");
  uint64_t sum = 0;
  for (uint64_t k = 0; k < count; ++k) sum += load_u32(stored.data() + 8 + 4 * k);
  if (sum != stored.size() - 8 - 4 * count)
    return bad("blocks take ", sum, " bytes, the section has ", stored.size() - 8 - 4 * count);
  return bs;
}

// Decodes the blocks of a section that passed check_blocks into `raw`.
Result<void> blocks_decode(std::span<const uint8_t> stored, const Symbols& s, const SectionLayout& l, uint64_t bs,
                           const BlockCoder& coder, std::span<uint8_t> raw) {
  const uint64_t count = load_u32(stored.data() + 4);
  const bool direct = l.transform == SectionTransform::kNone;
  std::vector<uint8_t> tmp(direct ? 0 : std::min(bs, s.per_plane));
  const uint8_t* block = stored.data() + 8 + 4 * count;
  uint64_t k = 0;
  for (uint64_t p = 0; p < s.planes; ++p)
    for (uint64_t first = 0; first < s.per_plane; first += bs, ++k) {
      const uint64_t n = std::min(bs, s.per_plane - first), size = load_u32(stored.data() + 8 + 4 * k);
      std::span<uint8_t> dst = direct ? raw.subspan(first, n) : std::span<uint8_t>(tmp.data(), n);
      if (auto r = coder.decode({block, size}, s.bits, dst); !r.ok())
        return make_error(ErrorCode::kFormat, "block ", k, " (at byte ", block - stored.data(),
                          "): ", r.error().message);
      if (!direct) from_symbols(dst.data(), p, first, n, l, raw.data());
      block += size;
    }
  return {};
}

}  // namespace

const char* section_coder_name(SectionCoder coder) {
  switch (coder) {
    case SectionCoder::kNone: return "raw";
    case SectionCoder::kZstd: return "zstd";
    case SectionCoder::kHuffman: return "huffman";
    case SectionCoder::kRans: return "rans";
  }
  return "unknown";
}

std::string SectionLayout::str() const {
  switch (transform) {
    case SectionTransform::kUnpack: return str_cat("unpack", symbol_bits, "x", row_symbols);
    case SectionTransform::kBytePlanes: return str_cat("planes", plane_width);
    case SectionTransform::kNone: break;
  }
  return "bytes";
}

namespace {
struct CodingName {
  SectionCoding coding;
  const char* name;
};
constexpr CodingName kCodingNames[] = {
    {SectionCoding::kNone, "none"},
    {SectionCoding::kZstd, "zstd"},
    {SectionCoding::kHuffman, "huffman"},
    {SectionCoding::kRans, "rans"},
    {SectionCoding::kAuto, "auto"},
    {SectionCoding::kZstdBytes, "zstd-bytes"},  // internal: what --zstd N alone means
};
}  // namespace

Result<SectionCoding> parse_section_coding(std::string_view name) {
  for (const auto& c : kCodingNames)
    if (name == c.name && c.coding != SectionCoding::kZstdBytes) return c.coding;
  return make_error(ErrorCode::kInvalidArgument, "unknown entropy coding '", name,
                    "' (expected none, zstd, huffman, rans or auto)");
}

const char* section_coding_name(SectionCoding coding) {
  for (const auto& c : kCodingNames)
    if (c.coding == coding) return c.name;
  return "unknown";
}

std::vector<SectionLayout> candidate_layouts(std::span<const uint8_t> raw, const SectionHint& hint) {
  std::vector<SectionLayout> out = {SectionLayout{}};
  if (hint.code_bits >= 1 && hint.code_bits <= 7 && hint.row_codes >= 1 &&
      static_cast<uint64_t>(hint.row_codes) <= kMaxBlockSymbols) {
    SectionLayout l;
    l.transform = SectionTransform::kUnpack;
    l.symbol_bits = hint.code_bits;
    l.row_symbols = static_cast<uint64_t>(hint.row_codes);
    if (raw.size() % row_bytes(l) == 0 && padding_is_zero(raw, l)) out.push_back(l);
  }
  if (hint.element_bytes >= 2 && hint.element_bytes <= 8 && raw.size() % static_cast<size_t>(hint.element_bytes) == 0) {
    SectionLayout l;
    l.transform = SectionTransform::kBytePlanes;
    l.plane_width = hint.element_bytes;
    out.push_back(l);
  }
  return out;
}

namespace {
Result<std::vector<uint8_t>> encode_symbols(std::span<const uint8_t> symbols, const Symbols& s, SectionCoder coder,
                                            const SectionLayout& layout, int zstd_level) {
  if (coder == SectionCoder::kZstd) return zstd_encode(symbols, zstd_level);
  const BlockCoder* bc = block_coder(coder);
  if (!bc) return make_error(ErrorCode::kInvalidArgument, "no encoder for coder ", section_coder_name(coder));
  return blocks_encode(symbols, s, layout, *bc);
}
}  // namespace

Result<std::vector<uint8_t>> encode_section_as(std::span<const uint8_t> raw, SectionCoder coder,
                                               const SectionLayout& layout, int zstd_level) {
  LLMC_TRY(check_section_record(coder, layout, raw.size(), raw.size()));
  if (layout.transform == SectionTransform::kUnpack && !padding_is_zero(raw, layout))
    return make_error(ErrorCode::kInvalidArgument, "unpack layout over rows with non-zero padding bits");
  const Symbols s = symbols_of(layout, raw.size());
  if (layout.transform == SectionTransform::kNone) return encode_symbols(raw, s, coder, layout, zstd_level);
  const std::vector<uint8_t> symbols = to_symbols(raw, layout);
  return encode_symbols(symbols, s, coder, layout, zstd_level);
}

Result<CodedSection> encode_section(std::span<const uint8_t> raw, const SectionHint& hint, SectionCoding coding,
                                    int zstd_level) {
  CodedSection best;
  if (raw.empty() || coding == SectionCoding::kNone) return best;
  std::vector<SectionCoder> coders;
  switch (coding) {
    case SectionCoding::kZstdBytes:
    case SectionCoding::kZstd: coders = {SectionCoder::kZstd}; break;
    case SectionCoding::kHuffman: coders = {SectionCoder::kHuffman}; break;
    case SectionCoding::kRans: coders = {SectionCoder::kRans}; break;
    case SectionCoding::kAuto: coders = {SectionCoder::kZstd, SectionCoder::kHuffman, SectionCoder::kRans}; break;
    case SectionCoding::kNone: break;
  }
  const std::vector<SectionLayout> layouts =
      coding == SectionCoding::kZstdBytes ? std::vector<SectionLayout>{SectionLayout{}} : candidate_layouts(raw, hint);
  uint64_t best_size = raw.size();
  for (const SectionLayout& layout : layouts) {
    const Symbols s = symbols_of(layout, raw.size());
    std::vector<uint8_t> copy;
    if (layout.transform != SectionTransform::kNone) copy = to_symbols(raw, layout);
    const std::span<const uint8_t> symbols = layout.transform == SectionTransform::kNone ? raw : copy;
    for (SectionCoder coder : coders) {
      LLMC_ASSIGN_OR_RETURN(std::vector<uint8_t> stored, encode_symbols(symbols, s, coder, layout, zstd_level));
      if (stored.size() < best_size) {
        best_size = stored.size();
        best.coder = coder;
        best.layout = layout;
        best.stored = std::move(stored);
      }
    }
  }
  return best;
}

Result<void> check_section_record(SectionCoder coder, const SectionLayout& layout, uint64_t raw_size,
                                  uint64_t stored_size) {
  switch (coder) {
    case SectionCoder::kNone:
      if (layout.transform != SectionTransform::kNone)
        return make_error(ErrorCode::kFormat, "raw section with a symbol layout (", int(layout.transform), ")");
      if (raw_size != stored_size)
        return make_error(ErrorCode::kFormat, "raw section with stored size ", stored_size, " != raw size ", raw_size);
      return {};
    case SectionCoder::kZstd:
      if (raw_size / kMaxZstdRatio > stored_size)
        return make_error(ErrorCode::kFormat, "raw size ", raw_size, " is impossible for a zstd frame of ", stored_size,
                          " bytes");
      break;
    case SectionCoder::kHuffman:
    case SectionCoder::kRans:
      if (raw_size / kMaxCodedRatio > stored_size)
        return make_error(ErrorCode::kFormat, "raw size ", raw_size, " is impossible for a ", section_coder_name(coder),
                          " section of ", stored_size, " bytes");
      break;
    default:
      return make_error(ErrorCode::kUnsupported, "compression ", int(coder), " unknown (file from a newer llmc?)");
  }
  switch (layout.transform) {
    case SectionTransform::kNone: return {};
    case SectionTransform::kUnpack:
      if (layout.symbol_bits < 1 || layout.symbol_bits > 8)
        return make_error(ErrorCode::kFormat, "unpack layout with ", layout.symbol_bits, "-bit codes (1..8 allowed)");
      if (layout.row_symbols < 1 || layout.row_symbols > kMaxBlockSymbols)
        return make_error(ErrorCode::kFormat, "unpack layout with ", layout.row_symbols, " codes per row (1..",
                          kMaxBlockSymbols, " allowed)");
      if (raw_size % row_bytes(layout) != 0)
        return make_error(ErrorCode::kFormat, "raw size ", raw_size, " is not a whole number of ", row_bytes(layout),
                          "-byte rows");
      return {};
    case SectionTransform::kBytePlanes:
      if (layout.plane_width < 2 || layout.plane_width > 8)
        return make_error(ErrorCode::kFormat, "byte planes of ", layout.plane_width, "-byte elements (2..8 allowed)");
      if (raw_size % static_cast<uint64_t>(layout.plane_width) != 0)
        return make_error(ErrorCode::kFormat, "raw size ", raw_size, " is not a whole number of ", layout.plane_width,
                          "-byte elements");
      return {};
  }
  return make_error(ErrorCode::kUnsupported, "symbol layout ", int(layout.transform),
                    " unknown (file from a newer llmc?)");
}

Result<std::vector<uint8_t>> decode_section(std::span<const uint8_t> stored, SectionCoder coder,
                                            const SectionLayout& layout, uint64_t raw_size) {
  LLMC_TRY(check_section_record(coder, layout, raw_size, stored.size()));
  const Symbols s = symbols_of(layout, raw_size);
  const BlockCoder* bc = block_coder(coder);
  uint64_t block_symbols = 0;
  if (bc) {
    LLMC_ASSIGN_OR_RETURN(block_symbols, check_blocks(stored, s, layout));
  }
  std::vector<uint8_t> out, symbols;
  try {
    out.resize(static_cast<size_t>(raw_size));
    if (coder == SectionCoder::kZstd && layout.transform != SectionTransform::kNone)
      symbols.resize(static_cast<size_t>(s.total()));
  } catch (const std::bad_alloc&) {
    return make_error(ErrorCode::kIo, "cannot allocate ", raw_size, " bytes");
  }
  if (coder == SectionCoder::kNone) {
    std::copy(stored.begin(), stored.end(), out.begin());
    return out;
  }
  if (coder == SectionCoder::kZstd) {
    if (layout.transform == SectionTransform::kNone) {
      LLMC_TRY(zstd_decode(stored, out));
      return out;
    }
    LLMC_TRY(zstd_decode(stored, symbols));
    if (layout.transform == SectionTransform::kUnpack) {
      uint8_t high = 0;
      for (uint8_t v : symbols) high |= static_cast<uint8_t>(v >> layout.symbol_bits);
      if (high)
        return make_error(ErrorCode::kFormat, "zstd frame holds codes wider than ", layout.symbol_bits, " bits");
    }
    for (uint64_t p = 0; p < s.planes; ++p)
      from_symbols(symbols.data() + p * s.per_plane, p, 0, s.per_plane, layout, out.data());
    return out;
  }
  LLMC_TRY(blocks_decode(stored, s, layout, block_symbols, *bc, out));
  return out;
}

}  // namespace llmc
