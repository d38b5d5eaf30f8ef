// Huffman and rANS block coders and the section coder layer: exact round trips over random and
// degenerate symbol distributions, sizes against the entropy bound, hostile blocks and sections.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "formats/huffman.h"
#include "formats/rans.h"
#include "formats/section_codec.h"

using namespace llmc;

namespace {

using ByteVec = std::vector<uint8_t>;

struct BlockCoder {
  const char* name;
  void (*encode)(std::span<const uint8_t>, int, std::vector<uint8_t>&);
  Result<void> (*decode)(std::span<const uint8_t>, int, std::span<uint8_t>);
};
const BlockCoder kCoders[] = {{"huffman", huffman_encode_block, huffman_decode_block},
                              {"rans", rans_encode_block, rans_decode_block}};

// Symbols of `bits` bits drawn from a discretized Laplace distribution centred on the middle
// code (how quantization codes of normal-ish weights are distributed); `spread` in codes.
ByteVec laplace_symbols(size_t n, int bits, double spread, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> e(1.0 / spread);
  std::bernoulli_distribution sign(0.5);
  const int top = (1 << bits) - 1, mid = 1 << (bits - 1);
  ByteVec out(n);
  for (auto& s : out) {
    const long v = mid + std::lround((sign(rng) ? 1 : -1) * e(rng));
    s = static_cast<uint8_t>(std::clamp<long>(v, 0, top));
  }
  return out;
}

ByteVec uniform_symbols(size_t n, int bits, uint64_t seed) {
  std::mt19937_64 rng(seed);
  ByteVec out(n);
  for (auto& s : out) s = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
  return out;
}

// Every symbol of the alphabet exactly `k` times, shuffled.
ByteVec equal_frequency_symbols(size_t k, int bits, uint64_t seed) {
  ByteVec out;
  for (size_t s = 0; s < (size_t{1} << bits); ++s) out.insert(out.end(), k, static_cast<uint8_t>(s));
  std::shuffle(out.begin(), out.end(), std::mt19937_64(seed));
  return out;
}

// Order-0 entropy of the symbols, in bytes.
double entropy_bytes(const ByteVec& v) {
  std::map<uint8_t, size_t> counts;
  for (uint8_t s : v) ++counts[s];
  double bits = 0;
  for (const auto& [s, c] : counts) bits -= static_cast<double>(c) * std::log2(static_cast<double>(c) / v.size());
  return bits / 8;
}

ByteVec encode(const BlockCoder& c, const ByteVec& symbols, int bits) {
  ByteVec out;
  c.encode(symbols, bits, out);
  return out;
}

void check_round_trip(const BlockCoder& c, const ByteVec& symbols, int bits) {
  const ByteVec block = encode(c, symbols, bits);
  ByteVec back(symbols.size(), 0xAA);
  auto r = c.decode(block, bits, back);
  INFO(c.name << " bits " << bits << " n " << symbols.size());
  REQUIRE(r.ok());
  CHECK(back == symbols);
}

}  // namespace

TEST_CASE("entropy coders round-trip random and degenerate distributions exactly", "[entropy]") {
  for (const BlockCoder& c : kCoders) {
    for (int bits = 1; bits <= 8; ++bits) {
      for (size_t n : {size_t{1}, size_t{2}, size_t{3}, size_t{4}, size_t{5}, size_t{7}, size_t{17}, size_t{4099},
                       size_t{65536 + 3}}) {
        check_round_trip(c, uniform_symbols(n, bits, n * 31 + static_cast<size_t>(bits)), bits);
        check_round_trip(c, laplace_symbols(n, bits, 1.3, n + 7), bits);
        check_round_trip(c, laplace_symbols(n, bits, 0.05, n + 9), bits);  // one dominant symbol
      }
      check_round_trip(c, equal_frequency_symbols(37, bits, 5), bits);                  // all symbols equally frequent
      check_round_trip(c, ByteVec{}, bits);                                             // empty block
      check_round_trip(c, ByteVec(1000, static_cast<uint8_t>((1 << bits) - 1)), bits);  // a single symbol
      ByteVec two(999, 0);                                                              // two symbols, one of them once
      two[500] = 1;
      check_round_trip(c, two, bits);
    }
    // A skewed byte alphabet whose Huffman code would exceed 12 bits (Fibonacci counts force
    // depth ~ alphabet size): the length limit must keep it decodable.
    ByteVec fib;
    uint64_t a = 1, b = 1;
    for (int s = 0; s < 24; ++s) {
      fib.insert(fib.end(), a, static_cast<uint8_t>(s));
      const uint64_t next = a + b;
      a = b;
      b = next;
    }
    std::shuffle(fib.begin(), fib.end(), std::mt19937_64(3));
    check_round_trip(c, fib, 8);
  }
}

TEST_CASE("entropy coders come close to the order-0 entropy", "[entropy]") {
  // 4-bit codes of Laplace(1.5) weights: entropy ~ 2.9 bits, so packed 4-bit codes waste ~27 %.
  const ByteVec sym = laplace_symbols(1 << 20, 4, 1.5, 11);
  const double h = entropy_bytes(sym);
  const size_t rans = encode(kCoders[1], sym, 4).size(), huff = encode(kCoders[0], sym, 4).size();
  INFO("entropy " << h << " rans " << rans << " huffman " << huff);
  CHECK(static_cast<double>(rans) < h * 1.002 + 64);  // 12-bit frequencies, 16-byte states
  CHECK(static_cast<double>(huff) < h * 1.03 + 64);   // whole-bit codes
  CHECK(rans < sym.size() / 2);                       // better than packing two codes per byte
  // A dominant symbol (p ~ 0.96): rANS codes it in a fraction of a bit, Huffman needs 1 bit.
  const ByteVec peaked = laplace_symbols(1 << 16, 2, 0.15, 12);
  const double hp = entropy_bytes(peaked);
  CHECK(static_cast<double>(encode(kCoders[1], peaked, 2).size()) < hp * 1.1 + 64);
  CHECK(encode(kCoders[0], peaked, 2).size() >= peaked.size() / 8);
}

TEST_CASE("entropy coders are deterministic", "[entropy]") {
  const ByteVec sym = laplace_symbols(100000, 3, 0.9, 4);
  for (const BlockCoder& c : kCoders) CHECK(encode(c, sym, 3) == encode(c, sym, 3));
}

TEST_CASE("huffman decoder rejects hostile blocks", "[entropy]") {
  const BlockCoder& h = kCoders[0];
  const ByteVec sym = laplace_symbols(5000, 4, 1.0, 8);
  const ByteVec good = encode(h, sym, 4);
  ByteVec out(sym.size());
  REQUIRE(h.decode(good, 4, out).ok());
  auto expect_error = [&](ByteVec block, const char* message, size_t n = 5000) {
    ByteVec o(n);
    auto r = h.decode(block, 4, o);
    INFO(message);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kFormat);
    CHECK_THAT(r.error().message, Catch::Contains(message));
  };
  {
    ByteVec b = good;
    b[0] = 0xDD;  // lengths 13
    expect_error(b, "over 12");
  }
  {
    ByteVec b = good;
    for (int i = 0; i < 8; ++i) b[i] = 0x11;  // sixteen 1-bit codes
    expect_error(b, "over-subscribed");
  }
  {
    ByteVec b(8, 0);  // no code at all
    expect_error(b, "no symbol");
  }
  {
    ByteVec b(8, 0);
    b[0] = 0x01;
    b.push_back(0);  // single-symbol block with extra bytes
    expect_error(b, "single-symbol");
  }
  {
    ByteVec b = good;
    b[8] = 0xFF, b[9] = 0xFF, b[10] = 0xFF, b[11] = 0x7F;  // stream 0 larger than the block
    expect_error(b, "exceed");
  }
  {
    ByteVec b = good;
    b.push_back(0);  // a byte after the last stream
    expect_error(b, "after its last symbol");
  }
  expect_error(good, "truncated", 9000);  // more symbols than the streams hold
  expect_error(ByteVec(good.begin(), good.begin() + 5), "shorter than its code-length table");
  // Every truncation and many bit flips: an error or some output, never a crash or overread
  // (ASan builds check the latter).
  for (size_t cut = 0; cut < good.size(); cut += 7) {
    ByteVec b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    CHECK_FALSE(h.decode(b, 4, out).ok());
  }
  for (size_t i = 0; i < good.size(); i += 3) {
    ByteVec b = good;
    b[i] ^= static_cast<uint8_t>(1u << (i % 8));
    (void)h.decode(b, 4, out);
  }
}

TEST_CASE("rans decoder rejects hostile blocks", "[entropy]") {
  const BlockCoder& r = kCoders[1];
  const ByteVec sym = laplace_symbols(5000, 2, 1.0, 8);
  const ByteVec good = encode(r, sym, 2);
  ByteVec out(sym.size());
  REQUIRE(r.decode(good, 2, out).ok());
  REQUIRE(good[0] == kRansScaleBits);
  auto expect_error = [&](const ByteVec& block, const char* message, size_t n = 5000) {
    ByteVec o(n);
    auto res = r.decode(block, 2, o);
    INFO(message);
    REQUIRE_FALSE(res.ok());
    CHECK(res.error().code == ErrorCode::kFormat);
    CHECK_THAT(res.error().message, Catch::Contains(message));
  };
  expect_error({}, "empty");
  expect_error({0}, "scale_bits");
  expect_error({16}, "scale_bits");
  expect_error({4, 0x80, 0x80, 0x80, 0x01}, "longer than 3 bytes");
  expect_error({4, 17, 0, 0, 0}, "larger than the total");
  expect_error({4, 8, 4, 3, 0}, "do not sum");
  expect_error({4, 8, 4}, "truncated frequency table");
  expect_error({4, 16, 0, 0, 0, 9}, "single-symbol block with stream bytes");
  {
    // States below L = 2^16.
    ByteVec b = {4, 8, 4, 4, 0};
    b.insert(b.end(), 16, 0);
    expect_error(b, "initial state");
  }
  {
    ByteVec b = good;
    b.push_back(0);  // odd stream
    expect_error(b, "odd word stream");
    b.push_back(0);  // an extra word
    expect_error(b, "words after its last symbol");
  }
  expect_error(good, "truncated", 20000);  // more symbols than the words hold
  {
    ByteVec b = good;
    b[good.size() - 3] ^= 0x40;  // a damaged word: the final states do not come back to L
    ByteVec o(sym.size());
    auto res = r.decode(b, 2, o);
    if (res.ok()) CHECK(o != sym);
  }
  for (size_t cut = 0; cut < good.size(); cut += 5) {
    ByteVec b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    CHECK_FALSE(r.decode(b, 2, out).ok());
  }
  for (size_t i = 0; i < good.size(); i += 3) {
    ByteVec b = good;
    b[i] ^= static_cast<uint8_t>(1u << (i % 8));
    (void)r.decode(b, 2, out);
  }
}

namespace {

// Rows of packed `bits`-bit codes, LSB-first, each row starting on a byte boundary.
ByteVec pack_rows(const ByteVec& codes, int64_t rows, int64_t cols, int bits) {
  const int64_t stride = (cols * bits + 7) / 8;
  ByteVec out(static_cast<size_t>(rows * stride), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      for (int b = 0; b < bits; ++b)
        if (codes[static_cast<size_t>(r * cols + c)] >> b & 1) {
          const int64_t bit = c * bits + b;
          out[static_cast<size_t>(r * stride + bit / 8)] |= static_cast<uint8_t>(1u << (bit % 8));
        }
  return out;
}

// f16 bit patterns of N(0, 0.02) weights.
ByteVec f16_weights(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  ByteVec out(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const float v = d(rng);
    uint32_t f;
    std::memcpy(&f, &v, 4);
    // Round-to-nearest f32 -> f16 for normal values in range (enough for test data).
    const uint32_t sign = (f >> 16) & 0x8000u;
    const int exp = static_cast<int>((f >> 23) & 0xff) - 127 + 15;
    const uint16_t h =
        exp <= 0 ? static_cast<uint16_t>(sign) : static_cast<uint16_t>(sign | (exp << 10) | ((f >> 13) & 0x3ff));
    out[2 * i] = static_cast<uint8_t>(h);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return out;
}

ByteVec decode_ok(const ByteVec& stored, SectionCoder coder, const SectionLayout& layout, uint64_t raw_size) {
  auto r = decode_section(stored, coder, layout, raw_size);
  REQUIRE(r.ok());
  return *r;
}

}  // namespace

TEST_CASE("section coding round-trips every coder and layout, and auto never loses to raw", "[entropy]") {
  struct Case {
    const char* what;
    ByteVec raw;
    SectionHint hint;
  };
  std::vector<Case> cases;
  for (int bits : {1, 2, 3, 4, 5, 7}) {
    const int64_t rows = 37, cols = 83;  // 83 codes: rows end mid-byte for most widths
    const ByteVec codes = laplace_symbols(static_cast<size_t>(rows * cols), bits, 0.8, static_cast<uint64_t>(bits));
    cases.push_back({"packed codes", pack_rows(codes, rows, cols, bits), SectionHint{bits, cols, 0}});
  }
  {
    // More codes than one block holds (2^20 symbols): several blocks, each a whole number of rows.
    const int64_t rows = 300, cols = 4000;
    cases.push_back(
        {"large 4-bit", pack_rows(laplace_symbols(rows * cols, 4, 1.2, 99), rows, cols, 4), SectionHint{4, cols, 0}});
  }
  cases.push_back({"f16 weights", f16_weights(300000, 5), SectionHint{0, 0, 2}});
  cases.push_back({"random bytes", uniform_symbols(70000, 8, 6), SectionHint{0, 0, 4}});
  cases.push_back({"one byte", ByteVec{42}, SectionHint{}});
  cases.push_back({"zeros", ByteVec(100000, 0), SectionHint{0, 0, 2}});
  cases.push_back({"empty", ByteVec{}, SectionHint{3, 10, 0}});

  for (const Case& c : cases) {
    INFO(c.what << " (" << c.raw.size() << " bytes)");
    const auto layouts = candidate_layouts(c.raw, c.hint);
    REQUIRE(layouts[0].transform == SectionTransform::kNone);
    for (const SectionLayout& layout : layouts)
      for (SectionCoder coder : {SectionCoder::kZstd, SectionCoder::kHuffman, SectionCoder::kRans}) {
        INFO(section_coder_name(coder) << " " << layout.str());
        auto stored = encode_section_as(c.raw, coder, layout, 3);
        REQUIRE(stored.ok());
        CHECK(decode_ok(*stored, coder, layout, c.raw.size()) == c.raw);
      }
    uint64_t smallest_single = c.raw.size();
    for (SectionCoding coding : {SectionCoding::kNone, SectionCoding::kZstdBytes, SectionCoding::kZstd,
                                 SectionCoding::kHuffman, SectionCoding::kRans, SectionCoding::kAuto}) {
      INFO(section_coding_name(coding));
      auto coded = encode_section(c.raw, c.hint, coding, 3);
      REQUIRE(coded.ok());
      if (coded->coder == SectionCoder::kNone) {
        CHECK(coded->stored.empty());
        CHECK(coded->layout.transform == SectionTransform::kNone);
        continue;
      }
      CHECK(coded->stored.size() < c.raw.size());
      CHECK(decode_ok(coded->stored, coded->coder, coded->layout, c.raw.size()) == c.raw);
      if (coding == SectionCoding::kAuto) CHECK(coded->stored.size() <= smallest_single);
      smallest_single = std::min<uint64_t>(smallest_single, coded->stored.size());
      if (coding == SectionCoding::kZstdBytes) CHECK(coded->layout.transform == SectionTransform::kNone);
    }
    if (c.raw.empty()) CHECK(encode_section(c.raw, c.hint, SectionCoding::kAuto, 3)->coder == SectionCoder::kNone);
  }
}

TEST_CASE("section coding pays on packed low-bit codes", "[entropy]") {
  // 4-bit codes of Laplace weights (entropy ~ 2.9 bits): rANS over unpacked 4-bit symbols is the
  // choice of auto and saves > 20 % of the packed bytes; zstd over the packed bytes saves less.
  const int64_t rows = 256, cols = 1024;
  const ByteVec raw = pack_rows(laplace_symbols(rows * cols, 4, 1.5, 21), rows, cols, 4);
  auto zstd = encode_section(raw, SectionHint{4, cols, 0}, SectionCoding::kZstdBytes, 3);
  auto best = encode_section(raw, SectionHint{4, cols, 0}, SectionCoding::kAuto, 3);
  REQUIRE(zstd.ok());
  REQUIRE(best.ok());
  INFO("zstd " << zstd->stored.size() << " auto " << best->stored.size() << " of " << raw.size());
  CHECK(best->coder == SectionCoder::kRans);
  CHECK(best->layout.transform == SectionTransform::kUnpack);
  CHECK(best->stored.size() < raw.size() * 8 / 10);
  CHECK(best->stored.size() < zstd->stored.size());
}

TEST_CASE("unpack is only offered when repacking gives the same bytes", "[entropy]") {
  const int64_t rows = 4, cols = 3;  // 3 x 3 bits = 9 bits: 7 padding bits per 2-byte row
  ByteVec raw = pack_rows(ByteVec(12, 5), rows, cols, 3);
  REQUIRE(candidate_layouts(raw, SectionHint{3, cols, 0}).size() == 2);
  raw[3] |= 0x80;  // a padding bit
  CHECK(candidate_layouts(raw, SectionHint{3, cols, 0}).size() == 1);
  CHECK_FALSE(encode_section_as(raw, SectionCoder::kRans, {SectionTransform::kUnpack, 3, 3, 0}, 3).ok());
  auto coded = encode_section(raw, SectionHint{3, cols, 0}, SectionCoding::kAuto, 3);
  REQUIRE(coded.ok());
  if (coded->coder != SectionCoder::kNone)
    CHECK(decode_ok(coded->stored, coded->coder, coded->layout, raw.size()) == raw);
}

TEST_CASE("section records and framing are checked before decoding", "[entropy]") {
  const SectionLayout bytes{}, unpack4{SectionTransform::kUnpack, 4, 8, 0},
      planes2{SectionTransform::kBytePlanes, 8, 0, 2};
  struct RecordCase {
    SectionCoder coder;
    SectionLayout layout;
    uint64_t raw, stored;
    ErrorCode code;
    const char* message;
  };
  const RecordCase kRecords[] = {
      {SectionCoder::kNone, unpack4, 8, 8, ErrorCode::kFormat, "raw section with a symbol layout"},
      {SectionCoder::kNone, bytes, 8, 9, ErrorCode::kFormat, "stored size"},
      {SectionCoder::kHuffman, bytes, uint64_t{1} << 40, 100, ErrorCode::kFormat, "impossible"},
      {SectionCoder::kZstd, bytes, uint64_t{1} << 40, 100, ErrorCode::kFormat, "impossible"},
      {static_cast<SectionCoder>(9), bytes, 8, 8, ErrorCode::kUnsupported, "newer llmc"},
      {SectionCoder::kRans, {SectionTransform::kUnpack, 9, 8, 0}, 8, 8, ErrorCode::kFormat, "9-bit"},
      {SectionCoder::kRans, {SectionTransform::kUnpack, 4, 0, 0}, 8, 8, ErrorCode::kFormat, "codes per row"},
      {SectionCoder::kRans, unpack4, 10, 8, ErrorCode::kFormat, "whole number of 4-byte rows"},
      {SectionCoder::kRans, {SectionTransform::kBytePlanes, 8, 0, 1}, 8, 8, ErrorCode::kFormat, "byte planes"},
      {SectionCoder::kRans, planes2, 9, 8, ErrorCode::kFormat, "2-byte elements"},
      {SectionCoder::kRans, {static_cast<SectionTransform>(7), 8, 0, 0}, 8, 8, ErrorCode::kUnsupported, "layout 7"},
  };
  for (const auto& c : kRecords) {
    INFO(c.message);
    auto r = check_section_record(c.coder, c.layout, c.raw, c.stored);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == c.code);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
  }

  // Block framing of a valid 3-block section, then damaged.
  const int64_t rows = 1100, cols = 1024;
  const ByteVec raw = pack_rows(laplace_symbols(rows * cols, 4, 1.5, 2), rows, cols, 4);
  const SectionLayout layout{SectionTransform::kUnpack, 4, static_cast<uint64_t>(cols), 0};
  auto stored = encode_section_as(raw, SectionCoder::kHuffman, layout, 3);
  REQUIRE(stored.ok());
  REQUIRE(decode_ok(*stored, SectionCoder::kHuffman, layout, raw.size()) == raw);
  auto expect_error = [&](const ByteVec& s, const char* message) {
    auto r = decode_section(s, SectionCoder::kHuffman, layout, raw.size());
    INFO(message);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains(message));
  };
  auto patch = [&](size_t at, uint32_t v) {
    ByteVec s = *stored;
    std::memcpy(s.data() + at, &v, 4);
    return s;
  };
  expect_error(ByteVec(stored->begin(), stored->begin() + 6), "block header");
  expect_error(patch(0, 0), "block of 0 symbols");
  expect_error(patch(0, (1u << 20) + 1024), "allowed");
  expect_error(patch(0, 1000), "whole number of 1024-code rows");
  expect_error(patch(4, 7), "blocks, its size needs");
  expect_error(patch(8, 5), "blocks take");
  ByteVec longer = *stored;
  longer.push_back(0);
  expect_error(longer, "blocks take");
  // The zstd path: a frame over unpacked codes must hold codes of the declared width.
  const ByteVec wide(static_cast<size_t>(rows * cols), 0x10);
  auto z = encode_section_as(wide, SectionCoder::kZstd, bytes, 3);
  REQUIRE(z.ok());
  auto r = decode_section(*z, SectionCoder::kZstd, layout, raw.size());
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("wider than 4 bits"));
}

TEST_CASE("section coding names parse", "[entropy]") {
  for (const char* name : {"none", "zstd", "huffman", "rans", "auto"}) {
    auto c = parse_section_coding(name);
    REQUIRE(c.ok());
    CHECK(std::string(section_coding_name(*c)) == name);
  }
  CHECK(parse_section_coding("lzma").error().code == ErrorCode::kInvalidArgument);
  CHECK_FALSE(parse_section_coding("zstd-bytes").ok());
}
