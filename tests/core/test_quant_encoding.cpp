// Quant encoding layouts (encoding.h): hand-packed bytes decode to values worked out by hand from
// the layout's definition, and validation rejects inconsistent combinations.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "core/encoding.h"
#include "test_util.h"

using namespace llmc;

namespace {

Bytes f32s(std::vector<float> v) { return Bytes::from_vector(v); }
Bytes u8s(std::vector<uint8_t> v) { return Bytes::owned(std::move(v)); }

std::vector<float> decode(const QuantEncoding& q, const Shape& shape) {
  Encoding enc{q};
  REQUIRE(validate_encoding(enc, shape).ok());
  std::vector<float> out(static_cast<size_t>(shape.numel()));
  decode_rows_to_f32(enc, shape, 0, shape.rows(), out.data());
  return out;
}

}  // namespace

TEST_CASE("quant sym 3-bit codes straddle bytes, ragged group", "[quant-encoding]") {
  // One row of 5 codes, 3 bits LSB-first: codes 7,0,5,4,1 -> bits 111 000 101 100 001 (LSB first)
  // byte0 = 0b01000111 = 0x47 (c0=7, c1=0, c2 low 2 bits=01), byte1 = 0b00001100|... see below.
  // bit stream: c0 bits0-2, c1 bits3-5, c2 bits6-8, c3 bits9-11, c4 bits12-14.
  // c2=5=0b101: bit6=1, bit7=0, bit8=1; c3=4: bit11=1; c4=1: bit12=1.
  // byte0 = bits0..7 = 1,1,1,0,0,0,1,0 -> 0x47; byte1 = bits8..15 = 1,0,0,1,1,0,0,0 -> 0x19.
  QuantEncoding q;
  q.bits = 3;
  q.scheme = QuantScheme::kSymmetric;
  q.group_size = 3;  // groups: cols 0-2 (scale 1), cols 3-4 (scale 0.5)
  q.scale_dtype = DType::kF32;
  q.codes = u8s({0x47, 0x19});
  q.scales = f32s({1.0f, 0.5f});
  const auto v = decode(q, Shape{{1, 5}});
  CHECK(v == std::vector<float>{3, -4, 1, 0, -1.5f});
}

TEST_CASE("quant binary one- and two-level", "[quant-encoding]") {
  QuantEncoding q;
  q.bits = 1;
  q.scheme = QuantScheme::kBinary;
  q.group_size = 0;
  q.scale_dtype = DType::kF32;
  q.codes = u8s({0b101, 0b10});  // rows of 3: [1,0,1], [0,1,0]
  q.scales = f32s({2.0f, 0.25f});
  CHECK(decode(q, Shape{{2, 3}}) == std::vector<float>{2, -2, 2, -0.25f, 0.25f, -0.25f});
  q.mins = f32s({1.0f, -1.0f});  // two-level: min ± scale
  CHECK(decode(q, Shape{{2, 3}}) == std::vector<float>{3, -1, 3, -1.25f, -0.75f, -1.25f});
}

TEST_CASE("quant ternary bits and trits5", "[quant-encoding]") {
  QuantEncoding q;
  q.bits = 2;
  q.scheme = QuantScheme::kTernary;
  q.scale_dtype = DType::kF32;
  q.scales = f32s({0.5f});
  // 7 codes 2,0,1,2,1,0,2 -> trits5: byte0 = 2 + 0*3 + 1*9 + 2*27 + 1*81 = 146, byte1 = 0 + 2*3 = 6
  q.packing = QuantPacking::kTrits5;
  q.codes = u8s({146, 6});
  const std::vector<float> want{0.5f, -0.5f, 0, 0.5f, 0, -0.5f, 0.5f};
  CHECK(quant_row_stride(q, 7) == 2);
  CHECK(decode(q, Shape{{1, 7}}) == want);
  // 2-bit packing: codes 2,0,1,2 | 1,0,2 -> 0b10010010 = 0x92, 0b100001 = 0x21
  q.packing = QuantPacking::kBits;
  q.codes = u8s({0x92, 0x21});
  CHECK(decode(q, Shape{{1, 7}}) == want);
  // Code 3 is invalid; decoding it must stay finite (documented: 2 * scale).
  q.codes = u8s({0xff, 0x3f});
  for (float x : decode(q, Shape{{1, 7}})) CHECK(std::isfinite(x));
}

TEST_CASE("quant u8 double-quantized scales and mins", "[quant-encoding]") {
  QuantEncoding q;
  q.bits = 2;
  q.scheme = QuantScheme::kAsymmetric;
  q.group_size = 2;
  q.scale_dtype = DType::kU8;
  q.scale_block = 2;            // 3 groups -> blocks {g0, g1}, {g2}
  q.codes = u8s({0b11100100});  // codes 0,1,2,3
  // one row of 4 cols -> 2 groups; shape [1, 4]; add a second row to get 4 groups -> 2 blocks
  q.codes = u8s({0b11100100, 0b00011011});  // row1 codes 3,2,1,0
  q.scales = u8s({1, 2, 3, 0});
  q.scale_meta = f32s({0.5f, 0.0f, 1.0f, 0.25f});  // block0 step .5 base 0; block1 step 1 base .25
  q.mins = u8s({0, 1, 2, 4});
  q.min_meta = f32s({1.0f, -1.0f, 0.5f, 0.0f});
  // scales: .5, 1, 3.25, .25; mins: -1, 0, 1, 2
  // row0: g0 codes 0,1 -> -1, -0.5 ; g1 codes 2,3 -> 2, 3
  // row1: g2 codes 3,2 -> 10.75, 7.5 ; g3 codes 1,0 -> 2.25, 2
  CHECK(decode(q, Shape{{2, 4}}) == std::vector<float>{-1, -0.5f, 2, 3, 10.75f, 7.5f, 2.25f, 2});
  CHECK(encoded_bytes(Encoding{q}) == 2 + 4 + 4 + 16 + 16);
  CHECK(test::visited_buffer_bytes(Encoding{q}) == encoded_bytes(Encoding{q}));  // for_each_buffer sees every buffer
  CHECK(describe_encoding(Encoding{q}) == "q2 asym g2 (scale u8/2)");
}

TEST_CASE("quant validation rejects inconsistent layouts", "[quant-encoding]") {
  auto base = [] {
    QuantEncoding q;
    q.bits = 4;
    q.scheme = QuantScheme::kSymmetric;
    q.group_size = 0;
    q.scale_dtype = DType::kF32;
    q.codes = u8s({0, 0});
    q.scales = f32s({1.0f});
    return q;
  };
  const Shape shape{{1, 4}};
  auto bad = [&](auto edit) {
    QuantEncoding q = base();
    edit(q);
    auto r = validate_encoding(Encoding{q}, shape);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::kFormat);
  };
  REQUIRE(validate_encoding(Encoding{base()}, shape).ok());
  bad([](QuantEncoding& q) { q.bits = 1; });
  bad([](QuantEncoding& q) { q.bits = 9; });
  bad([](QuantEncoding& q) { q.mins = f32s({0.0f}); });                     // sym has no mins
  bad([](QuantEncoding& q) { q.scheme = QuantScheme::kAsymmetric; });       // asym needs mins
  bad([](QuantEncoding& q) { q.scheme = QuantScheme::kTernary; });          // ternary is 2 bits
  bad([](QuantEncoding& q) { q.packing = QuantPacking::kTrits5; });         // trits5 only ternary
  bad([](QuantEncoding& q) { q.scheme = QuantScheme::kBinary; });           // binary is 1 bit
  bad([](QuantEncoding& q) { q.codes = u8s({0}); });                        // short codes
  bad([](QuantEncoding& q) { q.scale_block = 4; });                         // meta only for u8
  bad([](QuantEncoding& q) { q.scale_meta = f32s({1.0f, 0.0f}); });         // meta only for u8
  bad([](QuantEncoding& q) { q.scheme = static_cast<QuantScheme>(7); });    // unknown scheme
  bad([](QuantEncoding& q) { q.packing = static_cast<QuantPacking>(9); });  // unknown packing
  bad([](QuantEncoding& q) {                                                // u8 without scale_block
    q.scale_dtype = DType::kU8;
    q.scales = u8s({1});
    q.scale_meta = f32s({1.0f, 0.0f});
  });
  bad([](QuantEncoding& q) {  // u8 with short meta
    q.scale_dtype = DType::kU8;
    q.scale_block = 1;
    q.scales = u8s({1});
    q.scale_meta = f32s({1.0f});
  });
  bad([](QuantEncoding& q) { q.scale_dtype = DType::kI32; });
}
