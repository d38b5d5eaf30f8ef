// Quantization math (quant_math.h): every scheme/bits/group/scale-dtype combination packs codes whose
// decode equals the values the math dequantized, sizes match quant_encoded_bytes, and the fits
// reproduce hand-worked optima.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "passes/quant/quant_math.h"

using namespace llmc;

namespace {

std::vector<float> random_weights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> dist(4.0f);  // heavy-ish tails like real weights
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) x = 0.02f * dist(rng);
  return w;
}

// Every spec the encoding supports, for the [7, 172] exactness test.
std::vector<QuantSpec> all_specs() {
  std::vector<QuantSpec> out;
  const int64_t groups[] = {32, 64, 128, 0};
  const DType scale_dtypes[] = {DType::kF16, DType::kBF16, DType::kF32, DType::kU8};
  for (int64_t g : groups)
    for (DType sd : scale_dtypes) {
      auto add = [&](QuantSpec s) {
        s.group_size = g;
        s.scale_dtype = sd;
        s.scale_block = 5;  // several blocks per tensor, the last one partial
        out.push_back(s);
      };
      for (int bits = 2; bits <= 8; ++bits)
        for (QuantScheme scheme : {QuantScheme::kSymmetric, QuantScheme::kAsymmetric})
          add(QuantSpec{.bits = bits, .scheme = scheme});
      add(QuantSpec{.bits = 1, .scheme = QuantScheme::kBinary});
      add(QuantSpec{.bits = 1, .scheme = QuantScheme::kBinary, .binary_two_level = true});
      add(QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary});
      add(QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary, .trits5 = true});
    }
  return out;
}

}  // namespace

TEST_CASE("quantize -> decode equals the math's dequantized values", "[quant-math]") {
  const int64_t rows = 7, cols = 172;  // 172 = stories260K's FFN width: ragged for 32/64/128
  const std::vector<float> w = random_weights(rows * cols, 1);
  std::vector<float> imp(cols);
  for (int64_t c = 0; c < cols; ++c) imp[static_cast<size_t>(c)] = 0.1f + static_cast<float>(c % 7);
  for (const QuantSpec& spec : all_specs()) {
    for (int steps : {0, 6}) {
      for (bool use_imp : {false, true}) {
        INFO(describe_quant_spec(spec) << " clip steps " << steps << " importance " << use_imp);
        REQUIRE(validate_quant_spec(spec).ok());
        std::vector<float> dequant;
        const QuantEncoding q =
            quantize_rtn(spec, w, rows, cols, use_imp ? std::span<const float>(imp) : std::span<const float>(),
                         ScaleSearch{steps, 0.7}, &dequant);
        const Encoding enc{q};
        const Shape shape{{rows, cols}};
        REQUIRE(validate_encoding(enc, shape).ok());
        CHECK(encoded_bytes(enc) == quant_encoded_bytes(spec, rows, cols));
        std::vector<float> decoded(static_cast<size_t>(rows * cols));
        decode_rows_to_f32(enc, shape, 0, rows, decoded.data());
        REQUIRE(decoded == dequant);
        // Quantization actually approximates w: relative error well below 1 (binary/ternary are coarse).
        double err = 0, norm = 0;
        for (size_t i = 0; i < w.size(); ++i) {
          err += (w[i] - decoded[i]) * (w[i] - decoded[i]);
          norm += w[i] * w[i];
        }
        const double limit = spec.bits >= 4 ? 0.2 : 0.8;
        CHECK(std::sqrt(err / norm) < limit);
      }
    }
  }
}

TEST_CASE("higher bits and clipping search lower the error", "[quant-math]") {
  const int64_t rows = 16, cols = 256;
  const std::vector<float> w = random_weights(rows * cols, 2);
  auto rel_err = [&](QuantSpec s, int steps) {
    std::vector<float> d;
    quantize_rtn(s, w, rows, cols, {}, ScaleSearch{steps, 0.7}, &d);
    double err = 0;
    for (size_t i = 0; i < w.size(); ++i) err += (w[i] - d[i]) * (w[i] - d[i]);
    return err;
  };
  double prev = 1e30;
  for (int bits = 2; bits <= 8; ++bits) {
    const double e = rel_err(QuantSpec{.bits = bits, .scheme = QuantScheme::kAsymmetric}, 0);
    CHECK(e < prev);
    prev = e;
    // The search includes ratio 1 with the same candidate, so it can only be as good or better.
    CHECK(rel_err(QuantSpec{.bits = bits, .scheme = QuantScheme::kAsymmetric}, 10) <= e);
    CHECK(rel_err(QuantSpec{.bits = bits, .scheme = QuantScheme::kSymmetric}, 10) <=
          rel_err(QuantSpec{.bits = bits, .scheme = QuantScheme::kSymmetric}, 0));
  }
}

TEST_CASE("group fits match hand-worked optima", "[quant-math]") {
  const ScaleSearch none{};
  const QuantSpec f32{.bits = 4, .scheme = QuantScheme::kAsymmetric, .scale_dtype = DType::kF32};
  {  // asym minmax: range [-1, 2] over 15 steps
    const float w[] = {-1.0f, 0.5f, 2.0f};
    const GroupParams p = fit_group(f32, w, nullptr, 3, none);
    CHECK(p.min == -1.0f);
    CHECK(p.scale == 0.2f);
  }
  {  // binary: scale = mean |w| = (1 + 3 + 2 + 2) / 4
    QuantSpec s{.bits = 1, .scheme = QuantScheme::kBinary, .scale_dtype = DType::kF32};
    const float w[] = {1.0f, -3.0f, 2.0f, -2.0f};
    CHECK(fit_group(s, w, nullptr, 4, none).scale == 2.0f);
    // weighted: (1*1 + 3*3) / (1 + 3) with importance 1 and 3 on the first two, 0 elsewhere
    const float imp[] = {1.0f, 3.0f, 0.0f, 0.0f};
    CHECK(fit_group(s, w, imp, 4, none).scale == 2.5f);
    // two-level on {1, 2, 10, 11}: clusters {1, 2} and {10, 11} -> levels 1.5, 10.5 = 6 ± 4.5
    s.binary_two_level = true;
    const float w2[] = {1.0f, 10.0f, 2.0f, 11.0f};
    const GroupParams p = fit_group(s, w2, nullptr, 4, none);
    CHECK(p.min == 6.0f);
    CHECK(p.scale == 4.5f);
  }
  {  // ternary on {4, -4, 2.5, 0}: gain (Σ|w|)²/k of the top-k support: k=1 16, k=2 32, k=3 36.75,
     // k=4 27.56 -> k = 3, scale 10.5 / 3 = 3.5
    const QuantSpec s{.bits = 2, .scheme = QuantScheme::kTernary, .scale_dtype = DType::kF32};
    const float w[] = {4.0f, -4.0f, 2.5f, 0.0f};
    CHECK(fit_group(s, w, nullptr, 4, none).scale == 3.5f);
  }
  {  // sym 4 bits with f32 scales: the Q4_0 candidate -(-8)/8 = 1 maps -8 onto code 0 exactly
    const QuantSpec s{.bits = 4, .scheme = QuantScheme::kSymmetric, .scale_dtype = DType::kF32};
    const float w[] = {-8.0f, 3.0f, 7.0f};
    const GroupParams p = fit_group(s, w, nullptr, 3, none);
    CHECK(p.scale == 1.0f);
    CHECK(quantize_value(s, p, -8.0f) == 0);
    CHECK(quantize_value(s, p, 7.0f) == 15);
  }
}

TEST_CASE("quantize_value rounds ties to the lower code and clamps", "[quant-math]") {
  const QuantSpec asym{.bits = 2, .scheme = QuantScheme::kAsymmetric, .scale_dtype = DType::kF32};
  const GroupParams p{1.0f, 0.0f};
  CHECK(quantize_value(asym, p, 0.5f) == 0);
  CHECK(quantize_value(asym, p, 0.51f) == 1);
  CHECK(quantize_value(asym, p, 1.5f) == 1);
  CHECK(quantize_value(asym, p, 100.0f) == 3);
  CHECK(quantize_value(asym, p, -100.0f) == 0);
  CHECK(quantize_value(asym, p, NAN) == 0);
  const QuantSpec ter{.bits = 2, .scheme = QuantScheme::kTernary, .scale_dtype = DType::kF32};
  CHECK(quantize_value(ter, p, 0.5f) == 1);   // tie between 0 and +1: lower code (value 0)
  CHECK(quantize_value(ter, p, -0.5f) == 0);  // tie between -1 and 0: lower code (value -1)
  CHECK(quantize_value(ter, p, 0.49f) == 1);
  const QuantSpec bin{.bits = 1, .scheme = QuantScheme::kBinary, .scale_dtype = DType::kF32};
  CHECK(quantize_value(bin, p, 0.0f) == 0);
  CHECK(quantize_value(bin, p, 1e-6f) == 1);
  CHECK(quantize_value(bin, GroupParams{0.0f, 0.0f}, 5.0f) == 0);  // zero scale: any code, no crash
}

TEST_CASE("quant spec validation and sizes", "[quant-math]") {
  auto bad = [](QuantSpec s) {
    auto r = validate_quant_spec(s);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
  };
  bad(QuantSpec{.bits = 9});
  bad(QuantSpec{.bits = 1, .scheme = QuantScheme::kSymmetric});
  bad(QuantSpec{.bits = 3, .scheme = QuantScheme::kTernary});
  bad(QuantSpec{.bits = 2, .scheme = QuantScheme::kBinary});
  bad(QuantSpec{.group_size = -1});
  bad(QuantSpec{.scale_dtype = DType::kI32});
  bad(QuantSpec{.scale_dtype = DType::kU8, .scale_block = 0});
  bad(QuantSpec{.trits5 = true});
  bad(QuantSpec{.binary_two_level = true});
  // 4-bit asym g32 f16 on [64, 172]: codes 86 B/row, 6 groups/row x (scale + min) x 2 B = 24 B/row.
  CHECK(quant_encoded_bytes(QuantSpec{}, 64, 172) == 64 * (86 + 24));
  // trits5 on 172 cols: 35 B/row; one f16 scale per row.
  CHECK(quant_encoded_bytes(QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary, .group_size = 0, .trits5 = true}, 3,
                            172) == 3 * (35 + 2));
  CHECK(describe_quant_spec(QuantSpec{}) == "q4 asym g32 f16");
}
