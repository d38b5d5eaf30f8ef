// f16/bf16 conversions against exact known values and exhaustive round trips.
#include <catch2/catch.hpp>
#include <cmath>

#include "core/dtype.h"

using namespace llmc;

TEST_CASE("f16 known values", "[core]") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);  // rounds to inf
  CHECK(f32_to_f16(65519.0f) == 0x7bff);
  CHECK(f32_to_f16(5.9604645e-8f) == 0x0001);       // smallest subnormal
  CHECK(f32_to_f16(2.9802322e-8f) == 0x0000);       // exactly half of it: ties to even (0)
  CHECK(f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);  // tie -> even
  CHECK(f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);  // tie -> even (up)
  CHECK(f16_to_f32(0x3555) == Approx(0.33325195f).epsilon(0));
  CHECK(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  CHECK(std::isinf(f16_to_f32(f32_to_f16(INFINITY))));
}

TEST_CASE("every finite f16 round-trips through f32", "[core]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // inf/nan
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    REQUIRE(f32_to_f16(f) == h);
  }
}

TEST_CASE("bf16 rounding", "[core]") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(bits_to_f32(0x3f808000)) == 0x3f80);  // tie -> even
  CHECK(f32_to_bf16(bits_to_f32(0x3f818000)) == 0x3f82);  // tie -> even (up)
  CHECK(f32_to_bf16(bits_to_f32(0x3f808001)) == 0x3f81);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}
