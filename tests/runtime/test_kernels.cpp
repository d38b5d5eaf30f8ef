// Every kernel variant (each SIMD target this CPU supports, each dtype) against its scalar _ref on
// random and adversarial inputs, with error bounds derived from the accumulation length.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "kernels/cpu/kernels.h"

using namespace llmc;

namespace {

constexpr double kU = 1.0 / 16777216.0;  // f32 unit roundoff 2^-24
constexpr double kTinyAbs = 1e-37;       // slack for products that underflow into denormals

enum class Fill { kNormal, kLarge, kDenormal, kMixed };
const Fill kFills[] = {Fill::kNormal, Fill::kLarge, Fill::kDenormal, Fill::kMixed};

std::vector<float> random_values(size_t n, Fill fill, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const float g = normal(rng);
    switch (fill) {
      case Fill::kNormal: v[i] = g; break;
      case Fill::kLarge: v[i] = g * 1e4f; break;
      case Fill::kDenormal: v[i] = g * 1e-39f; break;  // below FLT_MIN: subnormal f32
      case Fill::kMixed: v[i] = (i % 3 == 0) ? g * 1e4f : (i % 3 == 1 ? g * 1e-39f : g); break;
    }
  }
  return v;
}

// Runs `body` once per SIMD target the CPU supports (forcing dispatch to it), then restores.
template <class F>
void for_each_target(F&& body) {
  const auto targets = kernels::simd_targets();
  REQUIRE(!targets.empty());
  for (int64_t t : targets) {
    kernels::force_simd_target(t);
    INFO("SIMD target " << kernels::simd_target_name(t));
    REQUIRE(kernels::active_simd_target() == kernels::simd_target_name(t));
    body();
  }
  kernels::force_simd_target(0);
}

// A symmetric 8-bit Quant tensor (whole-row groups, f32 scales) with random codes.
Tensor make_quant(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  QuantEncoding q;
  q.bits = 8;
  q.group_size = 0;
  q.scale_dtype = DType::kF32;
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for (auto& c : codes) c = static_cast<uint8_t>(rng());
  std::vector<float> scales(static_cast<size_t>(rows));
  for (auto& s : scales) s = 0.01f * static_cast<float>(rng() % 100 + 1);
  q.codes = Bytes::owned(codes);
  q.scales = Bytes::from_vector(scales);
  return Tensor{"q", Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{q})};
}

// |y - y_ref| <= 1.01 · (cols + 2) · u · Σ|w x| (+ underflow slack): f32 accumulation of `cols`
// products with FMA has relative error at most γ_cols against Σ|w x|; the reference is double.
void check_linear(const Tensor& w, const std::vector<float>& x, int64_t n) {
  const int64_t rows = w.rows(), cols = w.cols();
  std::vector<float> y(static_cast<size_t>(n * rows)), ref(y.size());
  kernels::matmul_ref(w, x.data(), n, ref.data());
  const std::vector<float> wf = w.to_f32();
  auto bound = [&](int64_t t, int64_t r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += std::fabs(static_cast<double>(wf[r * cols + c]) * x[t * cols + c]);
    return 1.01 * static_cast<double>(cols + 2) * kU * s + static_cast<double>(cols) * kTinyAbs;
  };
  kernels::matmul(w, x.data(), n, y.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      const double err = std::fabs(static_cast<double>(y[t * rows + r]) - ref[t * rows + r]);
      if (err > bound(t, r)) {
        INFO("matmul token " << t << " row " << r << " got " << y[t * rows + r] << " ref " << ref[t * rows + r]);
        REQUIRE(err <= bound(t, r));
      }
    }
  // matvec on each token gives the matmul row bit for bit (decode == prefill).
  std::vector<float> yv(static_cast<size_t>(rows));
  for (int64_t t = 0; t < n; ++t) {
    kernels::matvec(w, x.data() + t * cols, yv.data());
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
}

}  // namespace

TEST_CASE("SIMD targets include a portable fallback and the best one", "[kernels]") {
  const auto targets = kernels::simd_targets();
  REQUIRE(targets.size() >= 1);
  bool has_fallback = false;
  for (int64_t t : targets) {
    const std::string name = kernels::simd_target_name(t);
    has_fallback |= name == "EMU128" || name == "SCALAR";
  }
  CHECK(has_fallback);
  CHECK(kernels::active_simd_target() == kernels::simd_target_name(targets.front()));
}

TEST_CASE("dense matvec/matmul match _ref on every target and dtype", "[kernels]") {
  const int64_t kCols[] = {1, 7, 172, 4097};
  const int64_t kRows[] = {1, 7, 13};
  const DType kDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};
  uint32_t seed = 1;
  for_each_target([&] {
    for (DType dt : kDtypes)
      for (Fill fill : kFills)
        for (int64_t cols : kCols)
          for (int64_t rows : kRows) {
            // f16 cannot hold 1e4-scaled normal values past 65504 or 1e-39: adversarial fills stay f32/bf16.
            const Fill wfill = dt == DType::kF16 && fill != Fill::kNormal ? Fill::kNormal : fill;
            const Tensor w = make_dense("w", Shape{{rows, cols}},
                                        random_values(static_cast<size_t>(rows * cols), wfill, seed++), dt);
            const int64_t n = cols > 200 ? 2 : 5;
            INFO("dtype " << dtype_name(dt) << " rows " << rows << " cols " << cols << " fill "
                          << static_cast<int>(fill));
            check_linear(w, random_values(static_cast<size_t>(n * cols), fill, seed++), n);
          }
  });
}

TEST_CASE("matmul with many tokens and rows (all blocking paths) matches _ref", "[kernels]") {
  for_each_target([&] {
    for (DType dt : {DType::kF32, DType::kF16}) {
      const Tensor w = make_dense("w", Shape{{172, 96}}, random_values(172 * 96, Fill::kNormal, 7), dt);
      check_linear(w, random_values(70 * 96, Fill::kNormal, 8), 70);
    }
  });
}

TEST_CASE("linear kernels: Quant has a packed-code kernel", "[kernels]") {
  const Tensor w = make_quant(37, 172, 3);
  CHECK(kernels::has_fast_linear(w));
  CHECK(kernels::has_fast_linear(make_dense("w", Shape{{2, 2}}, {1, 2, 3, 4}, DType::kBF16)));
  for_each_target([&] { check_linear(w, random_values(9 * 172, Fill::kNormal, 4), 9); });
}

TEST_CASE("linear kernels give identical results for 1 and 2 threads", "[kernels]") {
  const Tensor w = make_dense("w", Shape{{300, 515}}, random_values(300 * 515, Fill::kNormal, 11), DType::kF16);
  const auto x = random_values(40 * 515, Fill::kNormal, 12);
  std::vector<float> y1(40 * 300), y2(40 * 300);
  kernels::set_num_threads(1);
  kernels::matmul(w, x.data(), 40, y1.data());
  kernels::set_num_threads(2);
  kernels::matmul(w, x.data(), 40, y2.data());
  kernels::set_num_threads(0);
  CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
}

// The row blocks of a parallel linear call are shared out per thread and taken over by threads that
// finish early (kernels/cpu/linear.cpp): with more threads than cores, shares of unequal length,
// row counts that are not a multiple of the block and several token blocks (130 tokens), every row
// must still be computed exactly once (outputs start as NaN) and give the 1-thread bits.
TEST_CASE("linear kernels: every row is computed once whatever the thread count", "[kernels]") {
  for (int64_t rows : {1, 5, 37, 300, 1029}) {
    const Tensor w = make_quant(rows, 256, static_cast<uint32_t>(rows));
    for (int64_t n : {int64_t{1}, int64_t{3}, rows <= 300 ? int64_t{130} : int64_t{1}}) {
      const auto x = random_values(n * 256, Fill::kNormal, 41);
      std::vector<float> ref(static_cast<size_t>(n * rows));
      kernels::set_num_threads(1);
      kernels::matmul(w, x.data(), n, ref.data());
      for (int threads : {2, 3, 7}) {
        std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
        kernels::set_num_threads(threads);
        kernels::matmul(w, x.data(), n, y.data());
        INFO("rows " << rows << " tokens " << n << " threads " << threads);
        CHECK(std::memcmp(y.data(), ref.data(), ref.size() * sizeof(float)) == 0);
      }
    }
  }
  kernels::set_num_threads(0);
}

TEST_CASE("rmsnorm, softmax, silu_mul match _ref", "[kernels]") {
  for (int64_t n : {1, 7, 172, 4097})
    for (Fill fill : kFills) {
      INFO("n " << n << " fill " << static_cast<int>(fill));
      const auto x = random_values(static_cast<size_t>(n), fill, 21);
      const auto w = random_values(static_cast<size_t>(n), Fill::kNormal, 22);
      std::vector<float> a(x.size()), b(x.size());
      kernels::rmsnorm(x.data(), w.data(), n, 1e-5f, a.data());
      kernels::rmsnorm_ref(x.data(), w.data(), n, 1e-5f, b.data());
      // double sum of squares, then two f32 multiplies: 4 roundings.
      for (int64_t i = 0; i < n; ++i) REQUIRE(std::fabs(a[i] - b[i]) <= 4 * kU * std::fabs(b[i]) + kTinyAbs);

      // softmax: exp of (x - max) rounded once in f32; the error grows with |x - max|.
      a = x;
      b = x;
      kernels::softmax(a.data(), n);
      kernels::softmax_ref(b.data(), n);
      const float mx = *std::max_element(x.begin(), x.end());
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        total += a[i];
        REQUIRE(std::fabs(a[i] - b[i]) <= (std::fabs(x[i] - mx) + 8) * 4 * kU * b[i] + kTinyAbs);
      }
      CHECK(total == Approx(1.0).epsilon(n * kU * 4));

      a = x;
      b = x;
      kernels::silu_mul(a.data(), w.data(), n);
      kernels::silu_mul_ref(b.data(), w.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        // silu(g) = g / (1 + e^-g): f32 exp (≤ 2 ulp) plus 3 roundings; relative to |g·up|.
        const double scale = std::fabs(static_cast<double>(x[i]) * w[i]);
        REQUIRE(std::fabs(a[i] - b[i]) <= 8 * kU * scale + kTinyAbs);
      }
    }
}

TEST_CASE("rope: both pair styles match _ref, preserve pair norms, identity at position 0", "[kernels]") {
  for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kNeox})
    for (int64_t hd : {2, 8, 64}) {
      const auto inv = kernels::rope_inv_freq(hd, 10000.0f, RopeScaling{});
      for (int64_t pos : {0, 1, 7, 172, 4097}) {
        auto x = random_values(static_cast<size_t>(3 * hd), Fill::kNormal, 31);
        auto a = x, b = x;
        kernels::rope(a.data(), 3, hd, pos, inv.data(), style);
        kernels::rope_ref(b.data(), 3, hd, pos, inv.data(), style);
        for (size_t i = 0; i < x.size(); ++i) {
          if (pos == 0) REQUIRE(a[i] == x[i]);
          // cos/sin rounded to f32, then 2 products and a sum: ≤ 6u of the pair's magnitude.
          REQUIRE(std::fabs(a[i] - b[i]) <= 6 * kU * (std::fabs(x[i]) + 4.0) * 2);
        }
        const int64_t off = style == RopeStyle::kInterleaved ? 1 : hd / 2;
        const int64_t step = style == RopeStyle::kInterleaved ? 2 : 1;
        for (int64_t i = 0; i < hd / 2; ++i) {
          const int64_t p = i * step;
          const double before = std::hypot(x[p], x[p + off]), after = std::hypot(a[p], a[p + off]);
          REQUIRE(after == Approx(before).epsilon(1e-6));
        }
      }
    }
}

TEST_CASE("rope_inv_freq: theta formula and linear / Llama-3 scaling", "[kernels]") {
  const auto base = kernels::rope_inv_freq(64, 500000.0f, RopeScaling{});
  REQUIRE(base.size() == 32);
  for (int i = 0; i < 32; ++i) CHECK(base[i] == Approx(std::pow(500000.0, -2.0 * i / 64)).epsilon(1e-6));
  RopeScaling lin{RopeScalingType::kLinear, 4.0f};
  const auto l = kernels::rope_inv_freq(64, 500000.0f, lin);
  for (int i = 0; i < 32; ++i) CHECK(l[i] == Approx(base[i] / 4).epsilon(1e-6));
  // Llama 3.1 (factor 8, low 1, high 4, original 8192): wavelengths below 8192/4 = 2048 keep
  // their frequency, above 8192 are divided by 8, and in between interpolate.
  RopeScaling l3{RopeScalingType::kLlama3, 8.0f, 1.0f, 4.0f, 8192};
  const auto s = kernels::rope_inv_freq(64, 500000.0f, l3);
  for (int i = 0; i < 32; ++i) {
    const double wavelen = 2 * M_PI / base[i];
    if (wavelen < 2048) CHECK(s[i] == Approx(base[i]).epsilon(1e-6));
    if (wavelen > 8192) CHECK(s[i] == Approx(base[i] / 8).epsilon(1e-6));
    if (wavelen > 2048 && wavelen < 8192) {
      CHECK(s[i] < base[i]);
      CHECK(s[i] > base[i] / 8);
    }
  }
}

TEST_CASE("attention over a KV cache (GQA) matches _ref on every target", "[kernels]") {
  struct Case {
    int64_t heads, kv_heads, head_dim;
  };
  for_each_target([&] {
    for (Case c : {Case{8, 4, 8}, Case{9, 3, 64}, Case{4, 4, 7}, Case{2, 1, 1}})
      for (int64_t n_pos : {1, 7, 172})
        for (Fill fill : {Fill::kNormal, Fill::kDenormal}) {
          const kernels::AttentionShape s{c.heads, c.kv_heads, c.head_dim, c.kv_heads * c.head_dim + 3};
          const auto q = random_values(static_cast<size_t>(c.heads * c.head_dim), fill, 41);
          const auto k = random_values(static_cast<size_t>(n_pos * s.kv_stride), Fill::kNormal, 42);
          const auto v = random_values(static_cast<size_t>(n_pos * s.kv_stride), Fill::kNormal, 43);
          std::vector<float> out(q.size()), ref(q.size()), scratch(static_cast<size_t>(c.heads * n_pos));
          kernels::attention(q.data(), k.data(), v.data(), n_pos, s, scratch.data(), out.data());
          kernels::attention_ref(q.data(), k.data(), v.data(), n_pos, s, ref.data());
          // Scores: f32 dot of head_dim terms (γ_hd Σ|qk|/√hd); probabilities inherit twice the
          // largest score error plus the softmax's; outputs sum n_pos terms Σ p|v| (γ_npos).
          double max_qk = 0, max_v = 0;
          for (float f : v) max_v = std::max(max_v, static_cast<double>(std::fabs(f)));
          for (int64_t h = 0; h < c.heads; ++h)
            for (int64_t p = 0; p < n_pos; ++p) {
              double sqk = 0;
              for (int64_t i = 0; i < c.head_dim; ++i)
                sqk += std::fabs(q[h * c.head_dim + i] *
                                 k[p * s.kv_stride + (h / (c.heads / c.kv_heads)) * c.head_dim + i]);
              max_qk = std::max(max_qk, sqk / std::sqrt(static_cast<double>(c.head_dim)));
            }
          const double score_err = (c.head_dim + 2) * kU * max_qk;
          const double bound = (2 * score_err + 40 * kU + (n_pos + 2) * kU) * max_v * 2 + kTinyAbs;
          for (size_t i = 0; i < out.size(); ++i) REQUIRE(std::fabs(out[i] - ref[i]) <= bound);
        }
  });
}

TEST_CASE("attention_chunk: every token equals one-token attention bit for bit, on every target", "[kernels]") {
  struct Case {
    int64_t heads, kv_heads, head_dim;
  };
  for_each_target([&] {
    for (Case c : {Case{9, 3, 64}, Case{4, 4, 7}, Case{2, 1, 1}, Case{6, 2, 20}})
      for (int64_t pos : {0, 5})
        for (int64_t n : {1, 2, 3, 4, 17, 40}) {
          INFO("heads " << c.heads << "/" << c.kv_heads << " head_dim " << c.head_dim << " pos " << pos << " n " << n);
          const kernels::AttentionShape s{c.heads, c.kv_heads, c.head_dim, c.kv_heads * c.head_dim + 3};
          const int64_t q_dim = c.heads * c.head_dim;
          const auto q = random_values(static_cast<size_t>(n * q_dim), Fill::kNormal, 51);
          const auto k = random_values(static_cast<size_t>((pos + n) * s.kv_stride), Fill::kNormal, 52);
          const auto v = random_values(static_cast<size_t>((pos + n) * s.kv_stride), Fill::kNormal, 53);
          std::vector<float> chunk(q.size()), one(static_cast<size_t>(q_dim));
          kernels::attention_chunk(q.data(), k.data(), v.data(), n, pos, s, chunk.data());
          for (int64_t t = 0; t < n; ++t) {
            std::vector<float> scratch(static_cast<size_t>(c.heads * (pos + t + 1)));
            kernels::attention(q.data() + t * q_dim, k.data(), v.data(), pos + t + 1, s, scratch.data(), one.data());
            INFO("token " << t);
            REQUIRE(std::memcmp(one.data(), chunk.data() + t * q_dim, sizeof(float) * q_dim) == 0);
          }
        }
  });
}

TEST_CASE("attention_chunk gives identical results for 1 and 2 threads", "[kernels]") {
  const kernels::AttentionShape s{9, 3, 64, 192};
  const int64_t n = 70, pos = 9;
  const auto q = random_values(static_cast<size_t>(n * 9 * 64), Fill::kNormal, 61);
  const auto k = random_values(static_cast<size_t>((pos + n) * 192), Fill::kNormal, 62);
  const auto v = random_values(static_cast<size_t>((pos + n) * 192), Fill::kNormal, 63);
  std::vector<float> y1(q.size()), y2(q.size());
  kernels::set_num_threads(1);
  kernels::attention_chunk(q.data(), k.data(), v.data(), n, pos, s, y1.data());
  kernels::set_num_threads(2);
  kernels::attention_chunk(q.data(), k.data(), v.data(), n, pos, s, y2.data());
  kernels::set_num_threads(0);
  CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
}
