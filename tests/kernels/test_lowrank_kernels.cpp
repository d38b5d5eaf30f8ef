// LowRank and Tucker linear kernels (chains of dispatched matmuls over Dense/Quant parts) against the
// decode-based reference on every SIMD target; matvec equals matmul rows; 1 and 2 threads agree.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "core/lowrank.h"
#include "kernels/cpu/kernels.h"
#include "passes/quant/quant_math.h"

using namespace llmc;

namespace {

std::vector<float> normal_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// A part of `shape`: Dense of `dtype`, or 4-bit symmetric g32 Quant when `quant` (no mins, so the
// kernels' rounding scales with Σ|w x| as for Dense).
EncodingPtr part(const Shape& shape, DType dtype, bool quant, uint32_t seed) {
  const auto v = normal_values(static_cast<size_t>(shape.numel()), seed);
  if (!quant) return make_dense("", shape, v, dtype).encoding;
  QuantSpec spec;
  spec.bits = 4;
  spec.scheme = QuantScheme::kSymmetric;
  spec.group_size = 32;
  return std::make_shared<const Encoding>(
      Encoding{quantize_rtn(spec, v, shape.rows(), shape.cols(), {}, ScaleSearch{}, nullptr)});
}

Tensor lowrank_tensor(int64_t rows, int64_t rank, int64_t cols, DType dtype, bool quant, uint32_t seed) {
  LowRankEncoding lr;
  lr.rank = rank;
  lr.u = part(Shape{{rows, rank}}, dtype, quant, seed);
  lr.v = part(Shape{{rank, cols}}, dtype, quant, seed + 1);
  Tensor t{"w", Shape{{rows, cols}}, std::make_shared<const Encoding>(Encoding{lr})};
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  return t;
}

Tensor tucker_tensor(std::vector<int64_t> dims, int64_t row_modes, std::vector<int64_t> ranks, DType dtype, bool quant,
                     uint32_t seed) {
  TuckerEncoding t;
  t.dims = std::move(dims);
  t.row_modes = row_modes;
  t.ranks = std::move(ranks);
  t.core = part(tucker_core_shape(t), dtype, quant, seed);
  for (size_t k = 0; k < t.dims.size(); ++k)
    t.factors.push_back(part(tucker_factor_shape(t, k), dtype, quant, seed + 1 + k));
  const Shape shape{{dims_product(t.dims, 0, t.row_modes), dims_product(t.dims, t.row_modes, t.dims.size())}};
  Tensor out{"w", shape, std::make_shared<const Encoding>(Encoding{t})};
  REQUIRE(validate_encoding(*out.encoding, out.shape).ok());
  return out;
}

// The same tree with every part replaced by the f32 absolute values of its decode: running it on |x|
// gives Σ |products| per output, the scale of the f32 rounding error of the chain.
Tensor abs_tensor(const Tensor& w) {
  std::vector<EncodingPtr> parts;
  for (const DecompositionPart& p : decomposition_parts(*w.encoding, w.shape)) {
    std::vector<float> v = Tensor{"", p.shape, p.encoding}.to_f32();
    for (float& x : v) x = std::fabs(x);
    parts.push_back(make_dense("", p.shape, v, DType::kF32).encoding);
  }
  return Tensor{w.name, w.shape, std::make_shared<const Encoding>(with_decomposition_parts(*w.encoding, parts))};
}

// |kernel − ref| <= 1.01 (terms + terms / 16 + 20) u Σ|products|, where `terms` is the summation
// lengths along the chain (the slack covers Quant kernels' per-group folding, at most one term per
// 32 columns plus 8, and the reference's rounding of W to f32); matvec equals matmul rows.
// Quant parts run on exact f32 activations here: the bound is the chain's f32 rounding, and the
// int8-activation paths of the Quant kernels are checked against their own reference
// (matmul_quant_i8_ref) in test_quant_kernels.cpp.
void check_against_ref(const Tensor& w, int64_t terms, int64_t n, uint32_t seed) {
  const kernels::ScopedQuantActivations exact(kernels::QuantActivations::kF32);
  const int64_t rows = w.rows(), cols = w.cols();
  const auto x = normal_values(static_cast<size_t>(n * cols), seed);
  std::vector<float> y(static_cast<size_t>(n * rows)), ref(y.size()), scale(y.size());
  kernels::matmul_ref(w, x.data(), n, ref.data());
  kernels::matmul(w, x.data(), n, y.data());
  std::vector<float> ax(x.size());
  for (size_t i = 0; i < x.size(); ++i) ax[i] = std::fabs(x[i]);
  kernels::matmul_ref(abs_tensor(w), ax.data(), n, scale.data());
  for (int64_t i = 0; i < n * rows; ++i) {
    const double bound = 1.01 * static_cast<double>(terms + terms / 16 + 20) / 16777216.0 * scale[i] + 1e-30;
    const double err = std::fabs(static_cast<double>(y[i]) - ref[i]);
    if (err > bound) {
      INFO("output " << i << " got " << y[i] << " ref " << ref[i] << " bound " << bound);
      REQUIRE(err <= bound);
    }
  }
  std::vector<float> yv(static_cast<size_t>(rows));
  for (int64_t t = 0; t < n; ++t) {
    kernels::matvec(w, x.data() + t * cols, yv.data());
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
}

struct TuckerCase {
  std::vector<int64_t> dims;
  int64_t row_modes;
  std::vector<int64_t> ranks;
};
const TuckerCase kTuckerCases[] = {
    {{16, 32, 64}, 2, {6, 8, 24}},      // vocabulary fold [v1, v2 | dim]
    {{12, 16, 8, 8}, 2, {5, 6, 4, 3}},  // [v1, v2 | d1, d2]
    {{8, 8, 72}, 2, {4, 8, 20}},        // attention [heads, head_dim | dim]
    {{40, 4, 9}, 1, {17, 3, 5}},        // attn_output [dim | heads, head_dim]
};

int64_t tucker_terms(const TuckerCase& c) {
  int64_t terms = 0, col_rank = 1;
  for (size_t k = 0; k < c.dims.size(); ++k) {
    if (static_cast<int64_t>(k) < c.row_modes) {
      terms += c.ranks[k];
    } else {
      terms += c.dims[k];
      col_rank *= c.ranks[k];
    }
  }
  return terms + col_rank;
}

}  // namespace

TEST_CASE("LowRank kernels match _ref on every target, part dtype and Quant parts", "[lowrank][kernels]") {
  const auto targets = kernels::simd_targets();
  REQUIRE(!targets.empty());
  uint32_t seed = 3;
  for (int64_t target : targets) {
    kernels::force_simd_target(target);
    INFO("SIMD target " << kernels::simd_target_name(target));
    const struct { int64_t rows, rank, cols; } kShapes[] = {{19, 1, 37}, {64, 7, 172}, {172, 33, 64}, {5, 5, 300}};
    for (const auto& s : kShapes)
      for (DType dt : {DType::kF32, DType::kF16, DType::kBF16})
        for (bool quant : {false, true}) {
          if (quant && dt != DType::kF32) continue;
          INFO(s.rows << "x" << s.cols << " rank " << s.rank << " " << dtype_name(dt) << (quant ? " quant" : ""));
          const Tensor w = lowrank_tensor(s.rows, s.rank, s.cols, dt, quant, seed);
          seed += 2;
          CHECK(kernels::has_fast_linear(w));
          for (int64_t n : {1, 5, 70}) check_against_ref(w, s.cols + s.rank, n, seed++);
        }
  }
  kernels::force_simd_target(0);
}

TEST_CASE("Tucker kernels match _ref for vocabulary and per-head folds", "[lowrank][kernels]") {
  uint32_t seed = 50;
  for (const TuckerCase& c : kTuckerCases)
    for (bool quant : {false, true}) {
      INFO(tucker_dims_name(c.dims, c.row_modes) << (quant ? " quant" : ""));
      const Tensor w = tucker_tensor(c.dims, c.row_modes, c.ranks, quant ? DType::kF32 : DType::kF16, quant, seed);
      seed += 8;
      CHECK(kernels::has_fast_linear(w));
      for (int64_t n : {1, 3, 66}) check_against_ref(w, tucker_terms(c), n, seed++);
    }
}

TEST_CASE("LowRank and Tucker kernels give identical results on 1 and 2 threads", "[lowrank][kernels]") {
  const Tensor weights[] = {lowrank_tensor(300, 40, 256, DType::kF16, false, 1),
                            lowrank_tensor(256, 24, 300, DType::kF32, true, 2),
                            tucker_tensor({16, 32, 64}, 2, {6, 8, 24}, DType::kF32, false, 3)};
  for (const Tensor& w : weights) {
    const auto x = normal_values(static_cast<size_t>(9 * w.cols()), 4);
    std::vector<float> one(static_cast<size_t>(9 * w.rows())), two(one.size());
    kernels::set_num_threads(1);
    kernels::matmul(w, x.data(), 9, one.data());
    kernels::set_num_threads(2);
    kernels::matmul(w, x.data(), 9, two.data());
    kernels::set_num_threads(0);
    CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
  }
}
