// Quantization math (quant_math.h): every scheme/bits/group/scale-dtype combination packs codes whose
// decode equals the values the math dequantized, sizes match quant_encoded_bytes, and the fits
// reproduce hand-worked optima.
#include <omp.h>

#include <algorithm>
#include <atomic>
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

TEST_CASE("quantize_value equals clamp(ceil(x - 0.5)) for every kind of value", "[quant-math]") {
  // The reference rule written out: x = (v - min) * mul + add in code units, NaN as x = add.
  struct Case {
    QuantSpec spec;
    GroupParams p;
    float mul, add, max_code;
  };
  const Case cases[] = {
      {QuantSpec{.bits = 4, .scheme = QuantScheme::kAsymmetric}, {0.25f, -1.0f}, 4.0f, 0.0f, 15.0f},
      {QuantSpec{.bits = 3, .scheme = QuantScheme::kSymmetric}, {0.5f, 0.0f}, 2.0f, 4.0f, 7.0f},
      {QuantSpec{.bits = 8, .scheme = QuantScheme::kSymmetric}, {0.0f, 0.0f}, 0.0f, 128.0f, 255.0f},
  };
  std::vector<float> values = {0.0f, -0.0f, 1e-30f, -1e-30f, INFINITY, -INFINITY, NAN, 1e30f, -1e30f};
  for (int i = -400; i <= 400; ++i) values.push_back(static_cast<float>(i) * 0.0625f);  // ties included
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int i = 0; i < 2000; ++i) values.push_back(normal(rng));
  for (const Case& c : cases)
    for (float v : values) {
      INFO(v);
      float x = (v - c.p.min) * c.mul + c.add;
      if (std::isnan(x)) x = c.add;
      const auto want = static_cast<uint32_t>(std::clamp(std::ceil(x - 0.5f), 0.0f, c.max_code));
      CHECK(quantize_value(c.spec, c.p, v) == want);
    }
}

TEST_CASE("quantize_rtn_rows streams rows and matches quantize_rtn on any thread count", "[quant-math]") {
  const int64_t rows = 37, cols = 300;  // ragged groups, several row blocks of the driver
  const auto w = random_weights(rows * cols, 11);
  const QuantSpec specs[] = {
      QuantSpec{.bits = 4, .scheme = QuantScheme::kAsymmetric, .group_size = 32},
      QuantSpec{.bits = 5, .scheme = QuantScheme::kSymmetric, .group_size = 64},
      QuantSpec{
          .bits = 3, .scheme = QuantScheme::kAsymmetric, .group_size = 32, .scale_dtype = DType::kU8, .scale_block = 7},
      QuantSpec{.bits = 8, .scheme = QuantScheme::kSymmetric, .group_size = 0},
      QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary, .group_size = 32, .trits5 = true},
  };
  for (const QuantSpec& spec : specs) {
    INFO(describe_quant_spec(spec));
    std::vector<float> dq;
    const QuantEncoding ref = quantize_rtn(spec, w, rows, cols, {}, ScaleSearch{}, &dq);
    double err = 0, norm = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      err += (static_cast<double>(w[i]) - dq[i]) * (static_cast<double>(w[i]) - dq[i]);
      norm += static_cast<double>(w[i]) * w[i];
    }
    for (int threads : {1, 2}) {
      INFO(threads << " threads");
      omp_set_num_threads(threads);
      std::atomic<int64_t> loaded{0};
      const RowLoader load = [&](int64_t r0, int64_t r1, float* out) {
        std::copy(w.begin() + r0 * cols, w.begin() + r1 * cols, out);
        loaded += r1 - r0;
      };
      QuantError e;
      const QuantEncoding got = quantize_rtn_rows(spec, rows, cols, load, {}, ScaleSearch{}, nullptr, &e);
      CHECK(loaded == (spec.scale_dtype == DType::kU8 ? 2 : 1) * rows);  // u8: one pass for the grids
      for (auto [a, b] : {std::pair{&ref.codes, &got.codes},
                          {&ref.scales, &got.scales},
                          {&ref.mins, &got.mins},
                          {&ref.scale_meta, &got.scale_meta},
                          {&ref.min_meta, &got.min_meta}}) {
        REQUIRE(a->size() == b->size());
        CHECK(std::equal(a->data(), a->data() + a->size(), b->data()));
      }
      CHECK(e.err == Approx(err).epsilon(1e-5));  // f32 lanes per group
      CHECK(e.norm == Approx(norm).epsilon(1e-5));
    }
    omp_set_num_threads(omp_get_num_procs());
  }
}

TEST_CASE("tensor_rows_to_f32 decodes every f16 bit pattern like the reference decoder (NaN as NaN)", "[quant-math]") {
  std::vector<uint8_t> raw(65536 * 2);
  for (uint32_t h = 0; h < 65536; ++h) {
    raw[2 * h] = static_cast<uint8_t>(h);
    raw[2 * h + 1] = static_cast<uint8_t>(h >> 8);
  }
  const Tensor t{"all_f16", Shape{{256, 256}},
                 std::make_shared<Encoding>(Encoding{DenseEncoding{DType::kF16, Bytes::owned(raw)}})};
  std::vector<float> fast(65536), ref(65536);
  tensor_rows_to_f32(t, 0, 256, fast.data());
  t.rows_to_f32(0, 256, ref.data());
  // NaN stays NaN (the SIMD conversion may quiet a signaling payload); every other value is exact.
  const auto same = [](float a, float b) { return std::isnan(b) ? std::isnan(a) : f32_to_bits(a) == f32_to_bits(b); };
  size_t differ = 0;
  for (size_t i = 0; i < fast.size(); ++i) differ += !same(fast[i], ref[i]);
  CHECK(differ == 0);
  tensor_rows_to_f32(t, 100, 101, fast.data());  // a row range
  CHECK(std::equal(fast.begin(), fast.begin() + 256, ref.begin() + 100 * 256, same));
}
