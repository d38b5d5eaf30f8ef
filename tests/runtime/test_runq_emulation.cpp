// runq.c emulation primitives against llama2.c runq.c's published definitions (quantize(): scale =
// max|x| / 127, C round() with halves away from zero; rmsnorm with eps 1e-5).
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "runtime/runq_emulation.h"

using namespace llmc;

TEST_CASE("runq quantize: max|x| / 127 scales, halves rounded away from zero", "[runtime][runq]") {
  // Group 1: max 127 -> scale 1, so codes are round(x): 62.5 -> 63 and -62.5 -> -63 (C round(),
  // not round-half-to-even's 62 / -62). Group 2: all zero -> scale 0, codes 0.
  const std::vector<float> x{127.0f, 62.5f, -62.5f, 0.4f, 0.0f, 0.0f, 0.0f, 0.0f};
  std::vector<int8_t> q(8, 99);
  std::vector<float> s(2, 99.0f);
  runq::quantize(x.data(), 8, 4, q.data(), s.data());
  CHECK(s[0] == 1.0f);
  CHECK(s[1] == 0.0f);
  CHECK(q == std::vector<int8_t>{127, 63, -63, 0, 0, 0, 0, 0});
  // A negative maximum sets the scale too: -2.54 -> -127.
  const std::vector<float> y{-2.54f, 0.0f, 0.0f, 0.0f};
  runq::quantize(y.data(), 4, 4, q.data(), s.data());
  CHECK(s[0] == 2.54f / 127.0f);
  CHECK(q[0] == -127);
}

TEST_CASE("runq rmsnorm and SwiGLU follow llama2.c's formulas", "[runtime][runq]") {
  // x = (3, 4): mean square 12.5, 1 / sqrt(12.5 + 1e-5) = 0.28284258...
  const std::vector<float> x{3.0f, 4.0f}, w{1.0f, 2.0f};
  std::vector<float> o(2);
  runq::rmsnorm(x.data(), w.data(), 2, 1e-5f, o.data());
  CHECK(o[0] == Approx(3.0 / std::sqrt(12.50001)).epsilon(1e-6));
  CHECK(o[1] == Approx(8.0 / std::sqrt(12.50001)).epsilon(1e-6));
  // silu(0) * up = 0; silu(2) = 2 / (1 + e^-2) = 1.7615942
  std::vector<float> gate{0.0f, 2.0f};
  const std::vector<float> up{5.0f, 3.0f};
  runq::silu_mul(gate.data(), up.data(), 2);
  CHECK(gate[0] == 0.0f);
  CHECK(gate[1] == Approx(3 * 1.7615942).epsilon(1e-6));
}
