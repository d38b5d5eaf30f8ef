// The SIMD loops of round-to-nearest quantization (kernels/cpu/quant_fit.h) against their scalar
// references, bit for bit, on every SIMD target: random groups of every length class (shorter than
// the 8 lanes, ragged tails, whole rows) and the values where lane order could show (±0 ties, NaN
// first or later, ±inf), and the code formula against ceil(x - 0.5) computed in double.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/quant_fit.h"
#include "kernels/simd_targets.h"

using namespace llmc;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

bool same_bits(float a, float b) { return f32_to_bits(a) == f32_to_bits(b); }

// Rows of n values: normal noise, with the special values sprinkled by kind.
std::vector<float> row_of(int64_t n, int kind, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = normal(rng);
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = static_cast<size_t>(i);
    switch (kind) {
      case 1: v[k] = (i % 3 == 0) ? -0.0f : (i % 3 == 1 ? 0.0f : v[k]); break;  // signed zeros among values
      case 2: v[k] = (i % 2) ? -0.0f : 0.0f; break;                             // only signed zeros
      case 3:
        if (i % 5 == 0) v[k] = kNaN;
        break;  // NaN, first too
      case 4:
        if (i % 7 == 3) v[k] = kNaN;
        break;  // NaN, not first
      case 5:
        if (i % 9 == 4) v[k] = (i % 2) ? kInf : -kInf;
        break;
      case 6: v[k] = (i % 4 == 1) ? 0.5f : (i % 4 == 3 ? -0.5f : v[k]); break;  // |x| ties
      default: break;
    }
  }
  return v;
}

constexpr int kKinds = 7;
constexpr int64_t kLengths[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 64, 172, 1000};
constexpr int64_t kGroups[] = {8, 16, 32, 64, 128, 1 << 20};

}  // namespace

TEST_CASE("group min/max and abs max equal their scalar references bit for bit", "[quant-fit][kernels]") {
  test::for_each_target([] {
    uint32_t seed = 1;
    for (int kind = 0; kind < kKinds; ++kind)
      for (int64_t n : kLengths)
        for (int64_t group : kGroups) {
          INFO("kind " << kind << " n " << n << " group " << group);
          const std::vector<float> x = row_of(n, kind, seed++);
          const size_t groups = static_cast<size_t>((n + group - 1) / group);
          std::vector<float> lo(groups), hi(groups), lo_ref(groups), hi_ref(groups), am(groups), am_ref(groups);
          kernels::group_min_max(x.data(), n, group, lo.data(), hi.data());
          kernels::group_min_max_ref(x.data(), n, group, lo_ref.data(), hi_ref.data());
          kernels::group_abs_max(x.data(), n, group, am.data());
          kernels::group_abs_max_ref(x.data(), n, group, am_ref.data());
          for (size_t g = 0; g < groups; ++g) {
            INFO("group " << g << ": " << lo[g] << " " << lo_ref[g] << " / " << hi[g] << " " << hi_ref[g]);
            REQUIRE(same_bits(lo[g], lo_ref[g]));
            REQUIRE(same_bits(hi[g], hi_ref[g]));
            REQUIRE(same_bits(am[g], am_ref[g]));
          }
        }
  });
}

TEST_CASE("group min/max reference: order rules of the plain fit", "[quant-fit][kernels]") {
  float lo, hi;
  const float zeros[2] = {-0.0f, 0.0f};  // equal values: the first one stays
  kernels::min_max_ref(zeros, 2, lo, hi);
  CHECK(std::signbit(lo));
  CHECK(std::signbit(hi));
  const float later_nan[3] = {1.0f, kNaN, -2.0f};  // a NaN after the first value is skipped
  kernels::min_max_ref(later_nan, 3, lo, hi);
  CHECK(lo == -2.0f);
  CHECK(hi == 1.0f);
  float am = -1;
  const float abs_tie[3] = {0.25f, -0.5f, 0.5f};
  kernels::group_abs_max_ref(abs_tie, 3, 3, &am);
  CHECK(am == 0.5f);
}

TEST_CASE("rtn codes equal the scalar formula and ceil(x - 0.5) clamped", "[quant-fit][kernels]") {
  // Maps of every scheme's shape: asym 4/8-bit, sym 4-bit (add 8), binary (mul/2, add 0.5), ternary,
  // a zero scale (mul 0), and per group different ones.
  const std::vector<kernels::RtnCodeMap> kinds = {{-0.05f, 150.0f, 0.0f, 15.0f}, {-0.05f, 2550.0f, 0.0f, 255.0f},
                                                  {0.0f, 400.0f, 8.0f, 15.0f},   {0.01f, 25.0f, 0.5f, 1.0f},
                                                  {0.0f, 60.0f, 1.0f, 2.0f},     {0.0f, 0.0f, 8.0f, 15.0f}};
  test::for_each_target([&] {
    uint32_t seed = 100;
    for (int kind = 0; kind < kKinds; ++kind)
      for (int64_t n : kLengths)
        for (int64_t group : kGroups) {
          const std::vector<float> x = row_of(n, kind, seed++);
          const size_t groups = static_cast<size_t>((n + group - 1) / group);
          std::vector<kernels::RtnCodeMap> maps(groups);
          for (size_t g = 0; g < groups; ++g) maps[g] = kinds[(g + static_cast<size_t>(seed)) % kinds.size()];
          std::vector<uint8_t> q(static_cast<size_t>(n)), ref(q.size());
          kernels::rtn_codes(x.data(), n, group, maps.data(), q.data());
          kernels::rtn_codes_ref(x.data(), n, group, maps.data(), ref.data());
          INFO("kind " << kind << " n " << n << " group " << group);
          REQUIRE(q == ref);
          for (int64_t i = 0; i < n; ++i) {  // the formula itself, in double, for finite inputs
            const kernels::RtnCodeMap& m = maps[static_cast<size_t>(i / group)];
            const float v = x[static_cast<size_t>(i)];
            const float xc = (v - m.min) * m.mul + m.add;  // the map's f32 rounding steps
            if (!std::isfinite(v) || !std::isfinite(xc)) continue;
            const double want =
                std::clamp(std::ceil(static_cast<double>(xc) - 0.5), 0.0, static_cast<double>(m.max_code));
            REQUIRE(static_cast<double>(ref[static_cast<size_t>(i)]) == want);
          }
        }
  });
  // Ties go to the lower code; NaN maps like x = add.
  const kernels::RtnCodeMap m{0.0f, 1.0f, 0.0f, 15.0f};
  CHECK(kernels::rtn_code(m, 2.5f) == 2);
  CHECK(kernels::rtn_code(m, 2.5001f) == 3);
  CHECK(kernels::rtn_code(m, -kInf) == 0);
  CHECK(kernels::rtn_code(m, kInf) == 15);
  CHECK(kernels::rtn_code({0.0f, 1.0f, 8.0f, 15.0f}, kNaN) == 8);
}

TEST_CASE("rtn error sums equal the scalar reference and the double sums", "[quant-fit][kernels]") {
  test::for_each_target([] {
    uint32_t seed = 300;
    for (int64_t n : kLengths)
      for (int64_t group : kGroups)
        for (const auto& [k, z] : {std::pair{1.0f, 0.0f}, std::pair{1.0f, 8.0f}, std::pair{2.0f, 1.0f}}) {
          const std::vector<float> x = row_of(n, 0, seed++);
          std::mt19937 rng(seed);
          std::vector<uint8_t> q(static_cast<size_t>(n));
          for (auto& c : q) c = static_cast<uint8_t>(rng() % 16);
          const size_t groups = static_cast<size_t>((n + group - 1) / group);
          std::vector<kernels::RtnDequantMap> maps(groups);
          for (size_t g = 0; g < groups; ++g) maps[g] = {0.004f + 0.001f * static_cast<float>(g % 3), -0.03f};
          double err = 0.5, norm = 0.25, err_ref = 0.5, norm_ref = 0.25, err_d = 0.5, norm_d = 0.25;
          kernels::rtn_error(x.data(), q.data(), n, group, maps.data(), k, z, err, norm);
          kernels::rtn_error_ref(x.data(), q.data(), n, group, maps.data(), k, z, err_ref, norm_ref);
          for (int64_t i = 0; i < n; ++i) {
            const auto& m = maps[static_cast<size_t>(i / group)];
            const double w = x[static_cast<size_t>(i)];
            const double d = w - ((k * q[static_cast<size_t>(i)] - z) * static_cast<double>(m.scale) + m.min);
            err_d += d * d;
            norm_d += w * w;
          }
          INFO("n " << n << " group " << group << " k " << k << " z " << z);
          REQUIRE(err == err_ref);  // same lanes, same order
          REQUIRE(norm == norm_ref);
          // f32 lanes of at most group / 8 terms each: a few units of 2^-24 relative.
          CHECK(err == Approx(err_d).epsilon(1e-5));
          CHECK(norm == Approx(norm_d).epsilon(1e-5));
        }
  });
}

TEST_CASE("widen_half is exact for every f16 and bf16 pattern", "[quant-fit][kernels]") {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  test::for_each_target([&] {
    for (bool bf16 : {false, true}) {
      std::vector<float> out(all.size());
      kernels::widen_half(all.data(), static_cast<int64_t>(all.size()), bf16, out.data());
      size_t differ = 0;
      for (uint32_t h = 0; h < 65536; ++h) {
        const float want = bf16 ? bf16_to_f32(all[h]) : f16_to_f32(all[h]);
        // NaN stays NaN (a conversion may quiet a signaling payload); every other value is exact.
        differ += std::isnan(want) ? !std::isnan(out[h]) : !same_bits(out[h], want);
      }
      INFO((bf16 ? "bf16" : "f16"));
      CHECK(differ == 0);
    }
  });
}
