// Quant linear kernels (every scheme, bit width, packing, group size, scale dtype, SIMD target,
// thread count) against the scalar references: the encoding's row decoder (matmul_ref) and
// quant_value applied per element (matmul_quant_ref).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant_i8.h"
#include "kernels/simd_targets.h"

using namespace llmc;

namespace {

constexpr double kU = 1.0 / 16777216.0;  // f32 unit roundoff 2^-24

struct Format {
  QuantScheme scheme;
  int bits;
  QuantPacking packing;
  bool mins;
};

std::vector<Format> all_formats() {
  std::vector<Format> f;
  for (int b = 2; b <= 8; ++b) {
    f.push_back({QuantScheme::kSymmetric, b, QuantPacking::kBits, false});
    f.push_back({QuantScheme::kAsymmetric, b, QuantPacking::kBits, true});
  }
  f.push_back({QuantScheme::kBinary, 1, QuantPacking::kBits, false});
  f.push_back({QuantScheme::kBinary, 1, QuantPacking::kBits, true});  // two-level
  f.push_back({QuantScheme::kTernary, 2, QuantPacking::kBits, false});
  f.push_back({QuantScheme::kTernary, 2, QuantPacking::kTrits5, false});
  return f;
}

// A Quant test tensor plus the f32 values of its scales and mins (as the format defines them).
struct QuantCase {
  Tensor w;
  std::vector<float> scales, mins;  // [rows * groups]; mins all 0 when absent
};

// `n` parameters in [lo, hi] stored as `dtype`; u8 entries share a (step, base) pair per `block`
// entries (written to `meta`). `values` gets what each stored entry means.
Bytes random_params(size_t n, DType dtype, int64_t block, float lo, float hi, std::mt19937& rng, Bytes* meta,
                    std::vector<float>* values) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  values->resize(n);
  if (dtype == DType::kU8) {
    std::vector<uint8_t> v(n);
    for (auto& e : v) e = static_cast<uint8_t>(rng());
    std::vector<float> pairs;
    for (size_t b = 0; b < (n + block - 1) / block; ++b) {
      pairs.push_back((hi - lo) / 255.0f * (0.5f + 0.5f * u(rng)));  // step
      pairs.push_back(lo);                                           // base
    }
    for (size_t i = 0; i < n; ++i)
      (*values)[i] = static_cast<float>(v[i]) * pairs[2 * (i / block)] + pairs[2 * (i / block) + 1];
    *meta = Bytes::from_vector(pairs);
    return Bytes::owned(v);
  }
  std::vector<float> f(n);
  for (auto& e : f) e = lo + (hi - lo) * u(rng);
  const Tensor t = make_dense("p", Shape{{static_cast<int64_t>(n)}}, f, dtype);
  *values = t.to_f32();
  return std::get<DenseEncoding>(t.encoding->node).data;
}

QuantCase random_quant(const Format& f, int64_t rows, int64_t cols, int64_t group, DType scale_dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  QuantEncoding q;
  q.bits = f.bits;
  q.scheme = f.scheme;
  q.packing = f.packing;
  q.group_size = group;
  q.scale_dtype = scale_dtype;
  q.scale_block = scale_dtype == DType::kU8 ? 3 : 0;
  const int64_t stride = quant_row_stride(q, cols);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * stride));
  const bool ternary_bits = f.scheme == QuantScheme::kTernary && f.packing == QuantPacking::kBits;
  for (auto& c : codes) {
    c = static_cast<uint8_t>(rng());
    if (f.packing == QuantPacking::kTrits5) c = static_cast<uint8_t>(c % 243);
    // ternary 2-bit: code 3 is invalid; turn every 2-bit field 3 into 2.
    if (ternary_bits)
      for (int s = 0; s < 8; s += 2)
        if (((c >> s) & 3) == 3) c = static_cast<uint8_t>(c & ~(1 << s));
  }
  q.codes = Bytes::owned(codes);
  QuantCase out;
  const size_t n = static_cast<size_t>(rows * quant_groups_per_row(q, cols));
  q.scales = random_params(n, scale_dtype, q.scale_block, 0.001f, 0.05f, rng, &q.scale_meta, &out.scales);
  out.mins.assign(n, 0.0f);
  if (f.mins) q.mins = random_params(n, scale_dtype, q.scale_block, -0.5f, 0.2f, rng, &q.min_meta, &out.mins);
  out.w = Tensor{"q", Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{q})};
  return out;
}

// Code c of a row as the format defines it: kBits LSB-first, kTrits5 base-3 digits of bytes.
uint32_t code_of(const QuantEncoding& q, const uint8_t* row, int64_t c) {
  if (q.packing == QuantPacking::kTrits5) {
    uint32_t b = row[c / 5];
    for (int64_t i = 0; i < c % 5; ++i) b /= 3;
    return b % 3;
  }
  uint32_t code = 0;
  for (int i = 0; i < q.bits; ++i) {
    const int64_t bit = c * q.bits + i;
    code |= static_cast<uint32_t>((row[bit / 8] >> (bit % 8)) & 1) << i;
  }
  return code;
}

std::vector<float> random_x(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& e : v) e = normal(rng);
  return v;
}

// Error bound of the f32-activation kernel against the double references. Weight c of group g is
// v_c·s_g + m_g (v_c = quant_value(code, scale 1, min 0)). The kernel sums A_g = Σ v_c x_c in f32 (≤ cols
// terms), folds s_g·A_g into lane accumulators (≤ groups terms), reduces ≤ 16 lanes and adds
// m_g·Σx_c (Σx_c summed in f32); the references round each weight at most twice (fl(fl(v·s) + m)).
// Every rounding is at most u times a partial sum of B = Σ_g (|s_g| Σ_c |v_c x_c| + |m_g| Σ_c |x_c|):
//   |y - y_ref| ≤ 1.01 · (cols + groups + 8) · u · B.
// The two references sum the same f32 weights in double and differ only where a u8 scale entry
// u8·step + base may be fused by one of them: ≤ 4 · u · B.
double magnitude(const QuantCase& qc, int64_t r, const float* x) {
  const auto& q = std::get<QuantEncoding>(qc.w.encoding->node);
  const int64_t cols = qc.w.cols(), gpr = quant_groups_per_row(q, cols);
  const int64_t glen = gpr == 1 ? cols : q.group_size;
  const uint8_t* row = q.codes.data() + r * quant_row_stride(q, cols);
  double b = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t g = r * gpr + c / glen;
    const double v = quant_value(q.scheme, q.bits, code_of(q, row, c), 1.0f, 0.0f);
    b += (std::fabs(v * qc.scales[g]) + std::fabs(qc.mins[g])) * std::fabs(x[c]);
  }
  return b;
}

// Bounds of the int8-activation path, derived here from the definition in kernels/cpu/quant_i8.h
// (blocks: each group cut into runs of 32 columns; dx_b = max|x| / 127, |x_c - dx_b·xq_c| ≤
// dx_b · (1/2 + 381u), or dx_b · (1/256 + 381u) with two parts xq = hi + lo/256; asymmetric values
// centred: v_c = q_c - 2^(bits-1), m'_g = m_g + 2^(bits-1)·s_g).
struct I8Bounds {
  double rounding = 0;    // kernel vs matmul_quant_i8_ref (both from the same int8 activations)
  double activation = 0;  // matmul_quant_i8_ref vs matmul_quant_ref (f32 activations)
};
I8Bounds i8_bounds(const QuantCase& qc, int64_t r, const float* x) {
  const auto& q = std::get<QuantEncoding>(qc.w.encoding->node);
  const int64_t cols = qc.w.cols(), gpr = quant_groups_per_row(q, cols);
  const int64_t glen = gpr == 1 ? cols : q.group_size;
  const uint8_t* row = q.codes.data() + r * quant_row_stride(q, cols);
  const double centre = q.scheme == QuantScheme::kAsymmetric ? std::ldexp(1.0, q.bits - 1) : 0.0;
  // The kernel multiplies unsigned codes u (≤ 2^bits - 1, binary 2) and subtracts an offset
  // ≤ 2^(bits-1) times Σxq: |terms| ≤ (3·2^(bits-1) + 1) · dx·|xq| per column.
  const double u_off = 3.0 * std::ldexp(1.0, q.bits - 1) + 1.0;
  // Largest |x/dx - xq|: 1/2 for one int8 part; with two (hi + lo/256), 1/256 (lo is clamped at ±127).
  const double half_step = kernels::quant_int8_two_parts(kernels::quant_activations(), q.bits) ? 1.0 / 256 : 0.5;
  double main = 0, mins = 0, act = 0;
  for (int64_t g = 0; g < gpr; ++g) {
    const double s = qc.scales[r * gpr + g];
    const double mc = std::fabs(qc.mins[r * gpr + g]) + centre * std::fabs(s);
    for (int64_t b0 = g * glen; b0 < std::min(cols, (g + 1) * glen); b0 += 32) {
      const int64_t b1 = std::min({cols, (g + 1) * glen, b0 + 32});
      double amax = 0;
      for (int64_t c = b0; c < b1; ++c) amax = std::max(amax, std::fabs(double(x[c])));
      // A block whose 127 / max overflows f32 is quantized to zero: its error is all of x.
      const bool flushed = amax > 0 && 127.0f / static_cast<float>(amax) > 3.4e38f;
      const double dx = flushed ? 2 * amax : amax / 127.0 * (1 + kU);
      for (int64_t c = b0; c < b1; ++c) {
        const double v = quant_value(q.scheme, q.bits, code_of(q, row, c), 1.0f, 0.0f) - centre;
        main += std::fabs(s) * u_off * (std::fabs(x[c]) + dx);
        mins += mc * std::fabs(x[c]);
        act += std::fabs(v * s) * dx * (half_step + 381 * kU);
      }
    }
  }
  const double blocks = double(cols) / 8 + 2 * double(gpr) + 2;  // ≥ pairs of blocks
  I8Bounds out;
  // (plus an underflow slack for scale · dx products below the normal range)
  out.rounding = 1.01 * (blocks + double(gpr) + 12) * kU * (main + mins) + double(cols) * 1e-37;
  // The references' own roundings: weights rounded twice, m' once.
  out.activation = act + 4 * kU * magnitude(qc, r, x) + 2 * kU * mins;
  return out;
}

std::string describe(const Format& f, int64_t group, DType sd) {
  return std::string(quant_scheme_name(f.scheme)) + " bits " + std::to_string(f.bits) +
         (f.packing == QuantPacking::kTrits5 ? " trits5" : "") + (f.mins ? " mins" : "") + " group " +
         std::to_string(group) + " scales " + std::string(dtype_name(sd));
}

// The fast kernel (matmul, and matvec per token) against the references, on one case: on the f32
// path against both double references; on the int8 path against its scalar model
// (matmul_quant_i8_ref), which in turn must stay within the activation-quantization bound of the
// f32-activation reference.
void check_case(const QuantCase& qc, const std::vector<float>& x, int64_t n) {
  const Tensor& w = qc.w;
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t groups = quant_groups_per_row(std::get<QuantEncoding>(w.encoding->node), cols);
  const bool i8 = kernels::quant_int8_activations(w);
  std::vector<float> y(static_cast<size_t>(n * rows)), ref(y.size()), qref(y.size()), iref(y.size());
  kernels::matmul_quant_ref(w, x.data(), n, qref.data());
  kernels::matmul(w, x.data(), n, y.data());
  REQUIRE(validate_encoding(*w.encoding, w.shape).ok());
  kernels::matmul_ref(w, x.data(), n, ref.data());
  if (i8) kernels::matmul_quant_i8_ref(w, x.data(), n, iref.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      const size_t i = static_cast<size_t>(t * rows + r);
      const double b = magnitude(qc, r, x.data() + t * cols);
      REQUIRE(std::fabs(static_cast<double>(ref[i]) - qref[i]) <= 4 * kU * b);
      if (i8) {
        const I8Bounds ib = i8_bounds(qc, r, x.data() + t * cols);
        INFO("int8 path: token " << t << " row " << r << " got " << y[i] << " i8_ref " << iref[i] << " quant_ref "
                                 << qref[i] << " bounds " << ib.rounding << " " << ib.activation);
        REQUIRE(std::fabs(static_cast<double>(y[i]) - iref[i]) <= ib.rounding);
        REQUIRE(std::fabs(static_cast<double>(iref[i]) - qref[i]) <= ib.activation);
      } else {
        const double bound = 1.01 * static_cast<double>(cols + groups + 8) * kU * b;
        INFO("token " << t << " row " << r << " got " << y[i] << " quant_ref " << qref[i] << " bound " << bound);
        REQUIRE(std::fabs(static_cast<double>(y[i]) - qref[i]) <= bound);
      }
    }
  std::vector<float> yv(static_cast<size_t>(rows));
  for (int64_t t = 0; t < n; ++t) {
    kernels::matvec(w, x.data() + t * cols, yv.data());
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
}

// The activation mode of the Quant kernels for a scope (restored even when a REQUIRE throws).
using ActivationMode = kernels::ScopedQuantActivations;
using QA = kernels::QuantActivations;

}  // namespace

TEST_CASE("Quant kernels match the references for every scheme, width, packing, group and scale dtype",
          "[kernels][quant]") {
  struct ShapeCase {
    int64_t rows, cols;
  };
  // 640 columns: 2 (group 64) and 4 (group 128) whole blocks per group, an odd number of pairs.
  const ShapeCase kShapes[] = {{13, 172}, {3, 67}, {5, 18}, {6, 640}};
  // Whole row, multiples of 32, multiples of 8 (int8 blocks cut at group ends), 5 (f32 path).
  const int64_t kGroups[] = {0, 32, 64, 128, 24, 40, 5};
  const DType kScaleDtypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kU8};
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8, QA::kF32);
  ActivationMode scope(mode);
  INFO("activation mode " << static_cast<int>(mode));
  uint32_t seed = 100;
  test::for_each_target([&] {
    for (const Format& f : all_formats())
      for (DType sd : kScaleDtypes)
        for (int64_t group : kGroups)
          for (const ShapeCase& s : kShapes) {
            INFO(describe(f, group, sd) << " shape " << s.rows << "x" << s.cols);
            const QuantCase qc = random_quant(f, s.rows, s.cols, group, sd, seed++);
            check_case(qc, random_x(static_cast<size_t>(6 * s.cols), seed++), 6);
          }
  });
}

TEST_CASE("Quant kernels: large activations, long rows, every row/token blocking path", "[kernels][quant]") {
  uint32_t seed = 7;
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8);
  ActivationMode scope(mode);
  test::for_each_target([&] {
    for (const Format& f : {Format{QuantScheme::kSymmetric, 4, QuantPacking::kBits, false},
                            Format{QuantScheme::kAsymmetric, 4, QuantPacking::kBits, true},
                            Format{QuantScheme::kAsymmetric, 3, QuantPacking::kBits, true},
                            Format{QuantScheme::kAsymmetric, 8, QuantPacking::kBits, true},
                            Format{QuantScheme::kTernary, 2, QuantPacking::kTrits5, false}}) {
      INFO(describe(f, 32, DType::kF16));
      const QuantCase qc = random_quant(f, 37, 1031, 32, DType::kF16, seed++);
      check_case(qc, random_x(static_cast<size_t>(70 * 1031), seed++, 1e4f), 70);
    }
  });
}

TEST_CASE("Quant kernels, decoded mode: each element is the dense f32 kernel on the decoded weights",
          "[kernels][quant]") {
  // kF32Decoded (calibration) decodes row blocks to f32 itself; the tensor decoder
  // (decode_rows_to_f32, independent code in core) and the Dense f32 kernel must give the same bits.
  ActivationMode scope(QA::kF32Decoded);
  const DType kScaleDtypes[] = {DType::kF32, DType::kF16, DType::kU8};
  uint32_t seed = 500;
  test::for_each_target([&] {
    for (const Format& f : all_formats())
      for (DType sd : kScaleDtypes)
        for (int64_t group : {int64_t{0}, int64_t{32}, int64_t{24}, int64_t{5}}) {
          INFO(describe(f, group, sd));
          const QuantCase qc = random_quant(f, 37, 172, group, sd, seed++);
          const Tensor dense = make_dense_f32("d", qc.w.shape, qc.w.to_f32());
          for (int64_t n : {int64_t{1}, int64_t{70}}) {
            const auto x = random_x(static_cast<size_t>(n * 172), seed++);
            std::vector<float> y(static_cast<size_t>(n * 37)), yd(y.size());
            kernels::matmul(qc.w, x.data(), n, y.data());
            kernels::matmul(dense, x.data(), n, yd.data());
            REQUIRE(std::memcmp(y.data(), yd.data(), y.size() * sizeof(float)) == 0);
          }
          CHECK_FALSE(kernels::quant_int8_activations(qc.w));
        }
  });
}

TEST_CASE("Quant kernels give identical results on 1 and 2 threads", "[kernels][quant]") {
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8, QA::kF32, QA::kF32Decoded);
  ActivationMode scope(mode);
  for (const Format& f : all_formats()) {
    INFO(describe(f, 64, DType::kBF16));
    const QuantCase qc = random_quant(f, 300, 515, 64, DType::kBF16, 3);
    const auto x = random_x(40 * 515, 4);
    for (int64_t n : {int64_t{1}, int64_t{40}}) {
      std::vector<float> y1(static_cast<size_t>(n * 300)), y2(y1.size());
      kernels::set_num_threads(1);
      kernels::matmul(qc.w, x.data(), n, y1.data());
      kernels::set_num_threads(2);
      kernels::matmul(qc.w, x.data(), n, y2.data());
      kernels::set_num_threads(0);
      REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
    }
    CHECK(kernels::has_fast_linear(qc.w));
  }
}

TEST_CASE("Quant kernels: which weights run on int8 activations", "[kernels][quant]") {
  auto make = [](int bits, QuantScheme scheme, int64_t group, int64_t cols) {
    return random_quant({scheme, bits, QuantPacking::kBits, scheme == QuantScheme::kAsymmetric}, 3, cols, group,
                        DType::kF16, 1)
        .w;
  };
  CHECK(kernels::quant_activations() == QA::kAuto);
  for (int bits = 2; bits <= 8; ++bits) {
    INFO("bits " << bits);
    CHECK(kernels::quant_int8_activations(make(bits, QuantScheme::kAsymmetric, 32, 172)));
    CHECK(kernels::quant_int8_activations(make(bits, QuantScheme::kSymmetric, 0, 172)));
  }
  CHECK(kernels::quant_int8_activations(make(1, QuantScheme::kBinary, 32, 172)));
  CHECK(kernels::quant_int8_activations(make(2, QuantScheme::kTernary, 48, 172)));
  CHECK_FALSE(kernels::quant_int8_activations(make(4, QuantScheme::kSymmetric, 5, 172)));  // blocks off bytes
  CHECK(kernels::quant_int8_activations(make(4, QuantScheme::kSymmetric, 500, 172)));      // whole row
  CHECK_FALSE(kernels::quant_int8_activations(make_dense_f32("d", Shape{{2, 2}}, {1, 2, 3, 4})));
  {
    ActivationMode f32(QA::kF32);
    CHECK_FALSE(kernels::quant_int8_activations(make(1, QuantScheme::kBinary, 32, 172)));
  }
  CHECK(kernels::quant_activations() == QA::kAuto);
  // Two parts: always in kInt8x2, never in kInt8, in kAuto above 4 bits.
  for (int bits = 1; bits <= 8; ++bits) {
    INFO("bits " << bits);
    CHECK(kernels::quant_int8_two_parts(QA::kInt8x2, bits));
    CHECK_FALSE(kernels::quant_int8_two_parts(QA::kInt8, bits));
    CHECK(kernels::quant_int8_two_parts(QA::kAuto, bits) == (bits > 4));
  }
}

TEST_CASE("Quant kernels: auto mode gives one part's results up to 4 bits and two parts' above", "[kernels][quant]") {
  uint32_t seed = 60;
  for (const Format& f : all_formats()) {
    INFO(describe(f, 32, DType::kF16));
    const QuantCase qc = random_quant(f, 9, 172, 32, DType::kF16, seed++);
    const auto x = random_x(3 * 172, seed++);
    auto run = [&](QA mode) {
      const ActivationMode scope(mode);
      std::vector<float> y(static_cast<size_t>(3 * 9));
      kernels::matmul(qc.w, x.data(), 3, y.data());
      return y;
    };
    const auto one = run(QA::kInt8), two = run(QA::kInt8x2), autom = run(QA::kAuto);
    REQUIRE(one != two);
    CHECK(autom == (f.bits <= 4 ? one : two));
  }
}

TEST_CASE("Quant activation modes: each name parses back to its mode and nothing else parses", "[kernels][quant]") {
  using QA = kernels::QuantActivations;
  for (const QA mode : {QA::kF32, QA::kInt8x2, QA::kInt8, QA::kF32Decoded, QA::kAuto}) {
    const std::string name = kernels::quant_activations_name(mode);
    INFO(name);
    REQUIRE(kernels::parse_quant_activations(name) == mode);
  }
  CHECK(std::string(kernels::quant_activations_name(QA::kInt8x2)) == "int8x2");
  CHECK(std::string(kernels::quant_activations_name(QA::kAuto)) == "auto");
  for (const char* bad : {"", "int4", "INT8", "int8 ", "f16"}) CHECK_FALSE(kernels::parse_quant_activations(bad));
}

TEST_CASE("Quant kernels, int8 path: zero, tiny, subnormal and huge activation blocks", "[kernels][quant]") {
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8);
  ActivationMode scope(mode);
  const int64_t cols = 172;
  std::vector<float> x = random_x(static_cast<size_t>(5 * cols), 11);
  for (int64_t c = 0; c < 32; ++c) x[c] = 0.0f;                                        // token 0, block 0: zero
  for (int64_t c = 32; c < 64; ++c) x[c] *= 1e-39f;                                    // subnormal: flushed block
  for (int64_t c = 64; c < 96; ++c) x[c] *= 1e-36f;                                    // tiny but quantized
  for (int64_t c = cols; c < 2 * cols; ++c) x[c] *= (c % 7 == 0) ? 3e4f : 1;           // token 1: outliers
  for (int64_t c = 2 * cols; c < 3 * cols; ++c) x[c] = (c % 2 ? 1.0f : -1.0f) * 0.5f;  // exact halves
  uint32_t seed = 40;
  test::for_each_target([&] {
    for (const Format& f : all_formats())
      for (int64_t group : {int64_t{0}, int64_t{32}, int64_t{40}}) {
        INFO(describe(f, group, DType::kF32));
        check_case(random_quant(f, 9, cols, group, DType::kF32, seed++), x, 5);
      }
  });
}

TEST_CASE("Quant kernels, int8 path: activations on the int8 grid are exact up to f32 rounding", "[kernels][quant]") {
  // x_c = k_c / 128 with |k_c| ≤ 127 and ±127 in every lane of 8 columns (columns c % 4 ∈ {0, 1} of
  // a block reach every lane of every slot order: quant_i8.h): dx = 1/128 and xq_c = k_c exactly,
  // so the int8 path must agree with the f32-activation reference to rounding error only.
  const int64_t cols = 172;
  std::mt19937 rng(5);
  std::vector<float> x(static_cast<size_t>(2 * cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(rng() % 255) - 127) / 128.0f;
  for (size_t i = 0; i < x.size(); ++i)
    if ((i % cols) % 4 < 2) x[i] = (i % 8 < 4 ? -127.0f : 127.0f) / 128.0f;
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8);
  ActivationMode scope(mode);
  for (const Format& f : all_formats()) {
    INFO(describe(f, 32, DType::kF16));
    const QuantCase qc = random_quant(f, 11, cols, 32, DType::kF16, 9);
    REQUIRE(kernels::quant_int8_activations(qc.w));
    std::vector<float> y(static_cast<size_t>(2 * 11)), qref(y.size());
    kernels::matmul(qc.w, x.data(), 2, y.data());
    kernels::matmul_quant_ref(qc.w, x.data(), 2, qref.data());
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t r = 0; r < 11; ++r) {
        const I8Bounds ib = i8_bounds(qc, r, x.data() + t * cols);
        const double b = magnitude(qc, r, x.data() + t * cols);
        const size_t i = static_cast<size_t>(t * 11 + r);
        REQUIRE(std::fabs(static_cast<double>(y[i]) - qref[i]) <= ib.rounding + 4 * kU * b);
      }
  }
}

TEST_CASE("Quant kernels, int8 path: the SIMD activation quantizer writes the reference's bytes", "[kernels][quant]") {
  // Normal, huge, tiny, subnormal, zero, infinite and NaN activations; rows of every block shape.
  std::vector<float> x = random_x(4 * 300, 21);
  for (size_t i = 0; i < x.size(); ++i) {
    if (i % 97 == 3) x[i] *= 1e30f;
    if (i % 89 == 5) x[i] = 1e-40f;
    if (i % 131 == 7) x[i] = 0.0f;
  }
  for (size_t i = 600; i < 632; ++i) x[i] *= 1e-39f;  // a block of subnormals (flushed)
  x[700] = std::numeric_limits<float>::infinity();
  x[800] = std::numeric_limits<float>::quiet_NaN();
  x[900] = -std::numeric_limits<float>::infinity();
  x[901] = std::numeric_limits<float>::quiet_NaN();
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8);
  ActivationMode scope(mode);
  test::for_each_target([&] {
    for (const Format& f : all_formats())
      for (int64_t cols : {int64_t{300}, int64_t{172}, int64_t{18}})
        for (int64_t group : {int64_t{0}, int64_t{32}, int64_t{40}, int64_t{128}}) {
          INFO(describe(f, group, DType::kF16) << " cols " << cols);
          const QuantCase qc = random_quant(f, 2, cols, group, DType::kF16, 3);
          const auto& q = std::get<QuantEncoding>(qc.w.encoding->node);
          REQUIRE(kernels::i8_format(q, cols) != nullptr);
          const kernels::QuantI8Plan plan = kernels::i8_plan(q, cols);
          std::vector<float> fast(static_cast<size_t>(plan.record_floats)), ref(fast.size());
          for (int64_t t = 0; t + cols <= static_cast<int64_t>(x.size()); t += cols) {
            kernels::i8_quantize_token(plan, f.mins, x.data() + t, fast.data(), false);
            kernels::i8_quantize_token(plan, f.mins, x.data() + t, ref.data(), true);
            REQUIRE(std::memcmp(fast.data(), ref.data(), fast.size() * sizeof(float)) == 0);
          }
        }
  });
}

TEST_CASE("Quant kernels, int8 path: every lane of 8 columns has its own scale", "[kernels][quant]") {
  // One outlier per block (1000x): with one scale per block it would coarsen all 32 columns; per lane
  // (quant_i8.h) dx_l = max|x| / 127 over the lane's own columns and |x - dx_l · xq| ≤ dx_l / 2 (one
  // part) or dx_l / 256 (two parts), for every slot order.
  std::vector<float> x = random_x(300, 31);
  for (size_t i = 5; i < x.size(); i += 32) x[i] *= 1000.0f;
  const QA mode = GENERATE(QA::kInt8x2, QA::kInt8);
  ActivationMode scope(mode);
  for (const Format& f : all_formats()) {
    INFO(describe(f, 32, DType::kF16));
    const QuantCase qc = random_quant(f, 2, 300, 32, DType::kF16, 3);
    const auto& q = std::get<QuantEncoding>(qc.w.encoding->node);
    const kernels::QuantI8Plan plan = kernels::i8_plan(q, 300);
    std::vector<float> record(static_cast<size_t>(plan.record_floats));
    kernels::i8_quantize_token(plan, f.mins, x.data(), record.data(), false);
    const float* pairs = record.data() + plan.x_floats;
    const double step = plan.split ? 1.0 / 256 : 0.5;
    for (int64_t k = 0; k < plan.blocks; ++k)
      for (int l = 0; l < 4; ++l) {
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i)
          if (kernels::i8_slot_lane(i) == l && plan.slot_col[i] < plan.len[k])
            amax = std::max(amax, std::fabs(x[static_cast<size_t>(plan.start[k] + plan.slot_col[i])]));
        const double dx = kernels::i8_lane_dx(plan, pairs, k, l) * (plan.split ? 256.0 : 1.0);
        INFO("block " << k << " lane " << l);
        REQUIRE(static_cast<float>(dx) == amax / 127.0f);
        for (int i = 0; i < 32; ++i)
          if (kernels::i8_slot_lane(i) == l && plan.slot_col[i] < plan.len[k]) {
            const double xc = x[static_cast<size_t>(plan.start[k] + plan.slot_col[i])];
            const double xq =
                static_cast<double>(kernels::i8_slot_activation(plan, pairs, k, i)) / (plan.split ? 256.0 : 1.0);
            REQUIRE(std::fabs(xc - dx * xq) <= dx * (step + 1e-5));
          }
      }
  }
}
