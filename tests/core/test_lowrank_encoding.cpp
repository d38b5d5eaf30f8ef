// LowRank and Tucker encodings: reference decode against the defining sums written out here, parts,
// sizes, descriptions, and validation of impossible trees (hostile input).
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "core/lowrank.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace llmc;

namespace {

std::vector<float> normal_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

std::vector<float> decode(const Encoding& enc, const Shape& shape, int64_t r0, int64_t r1) {
  std::vector<float> out(static_cast<size_t>((r1 - r0) * shape.cols()));
  decode_rows_to_f32(enc, shape, r0, r1, out.data());
  return out;
}

// T[i_1..i_K] by the Tucker formula: one nested sum per entry, in double.
double tucker_entry(const std::vector<int64_t>& dims, int64_t row_modes, const std::vector<int64_t>& ranks,
                    const std::vector<float>& core, const std::vector<std::vector<float>>& factors,
                    const std::vector<int64_t>& idx) {
  const size_t modes = dims.size();
  int64_t core_size = 1;
  for (int64_t r : ranks) core_size *= r;
  double sum = 0;
  std::vector<int64_t> a(modes);
  for (int64_t flat = 0; flat < core_size; ++flat) {
    int64_t rest = flat;
    for (size_t k = modes; k-- > 0;) {
      a[k] = rest % ranks[k];
      rest /= ranks[k];
    }
    double term = core[flat];
    for (size_t k = 0; k < modes; ++k) {
      const float f = static_cast<int64_t>(k) < row_modes ? factors[k][idx[k] * ranks[k] + a[k]]
                                                          : factors[k][a[k] * dims[k] + idx[k]];
      term *= f;
    }
    sum += term;
  }
  return sum;
}

struct TuckerCase {
  std::vector<int64_t> dims;
  int64_t row_modes;
  std::vector<int64_t> ranks;
};

}  // namespace

TEST_CASE("LowRank decodes to U·V for any row range — parts, bytes, description", "[lowrank-enc]") {
  const int64_t rows = 13, rank = 4, cols = 9;
  const auto u = normal_values(rows * rank, 1), v = normal_values(rank * cols, 2);
  Encoding enc{make_lowrank_dense(u, v, rows, rank, cols, DType::kF32)};
  const Shape shape{{rows, cols}};
  REQUIRE(validate_encoding(enc, shape).ok());
  const auto all = decode(enc, shape, 0, rows);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c) {
      double want = 0;
      for (int64_t a = 0; a < rank; ++a) want += double(u[i * rank + a]) * v[a * cols + c];
      CHECK(all[i * cols + c] == static_cast<float>(want));
    }
  const auto middle = decode(enc, shape, 5, 8);
  CHECK(std::equal(middle.begin(), middle.end(), all.begin() + 5 * cols));
  CHECK(encoded_bytes(enc) == static_cast<size_t>((rows * rank + rank * cols) * 4));
  CHECK(test::visited_buffer_bytes(enc) == encoded_bytes(enc));  // for_each_buffer sees every buffer
  CHECK(describe_encoding(enc) == "lowrank r4 (U f32, V f32)");
  CHECK(describe_decomposition_group(enc) == "lowrank (U f32, V f32)");
  CHECK(std::string(encoding_kind_name(enc)) == "lowrank");
  const auto parts = decomposition_parts(enc, shape);
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].shape == Shape{{rows, rank}});
  CHECK(parts[1].shape == Shape{{rank, cols}});
  // Swapping the parts back in gives the same tree.
  Encoding same = with_decomposition_parts(enc, {parts[0].encoding, parts[1].encoding});
  CHECK(decode(same, shape, 0, rows) == all);
}

TEST_CASE("Tucker decodes to the defining sum, row by row and by slices", "[lowrank-enc]") {
  const TuckerCase cases[] = {
      {{6, 8, 5}, 2, {3, 4, 5}},        // vocabulary fold [v1, v2 | dim]
      {{4, 6, 3, 4}, 2, {2, 3, 3, 2}},  // [v1, v2 | d1, d2]
      {{7, 3, 4}, 1, {4, 2, 3}},        // attn_output [dim | heads, head_dim]
      {{2, 3, 2, 5}, 3, {2, 2, 1, 3}},  // three row modes
  };
  uint32_t seed = 10;
  for (const TuckerCase& tc : cases) {
    INFO(tucker_dims_name(tc.dims, tc.row_modes));
    int64_t core_size = 1, rows = 1, cols = 1;
    for (size_t k = 0; k < tc.dims.size(); ++k) {
      core_size *= tc.ranks[k];
      (static_cast<int64_t>(k) < tc.row_modes ? rows : cols) *= tc.dims[k];
    }
    const auto core = normal_values(core_size, seed++);
    std::vector<std::vector<float>> factors;
    for (size_t k = 0; k < tc.dims.size(); ++k) factors.push_back(normal_values(tc.dims[k] * tc.ranks[k], seed++));
    Encoding enc{make_tucker_dense(tc.dims, tc.row_modes, tc.ranks, core, factors, DType::kF32)};
    const Shape shape{{rows, cols}};
    REQUIRE(validate_encoding(enc, shape).ok());
    const auto all = decode(enc, shape, 0, rows);  // long range: by slices where there are several row modes
    std::vector<int64_t> idx(tc.dims.size());
    for (int64_t r = 0; r < rows; ++r) {
      const auto one = decode(enc, shape, r, r + 1);  // one row: row by row
      for (int64_t c = 0; c < cols; ++c) {
        int64_t rest = r;
        for (int64_t k = tc.row_modes; k-- > 0;) {
          idx[k] = rest % tc.dims[k];
          rest /= tc.dims[k];
        }
        rest = c;
        for (size_t k = tc.dims.size(); k-- > static_cast<size_t>(tc.row_modes);) {
          idx[k] = rest % tc.dims[k];
          rest /= tc.dims[k];
        }
        const double want = tucker_entry(tc.dims, tc.row_modes, tc.ranks, core, factors, idx);
        const double tol = 1e-5 * (1 + std::fabs(want));
        CHECK(std::fabs(all[r * cols + c] - want) <= tol);
        CHECK(std::fabs(one[c] - want) <= tol);
      }
    }
    CHECK(encoded_bytes(enc) == static_cast<size_t>(4 * (core_size + [&] {
                                                      int64_t s = 0;
                                                      for (size_t k = 0; k < tc.dims.size(); ++k)
                                                        s += tc.dims[k] * tc.ranks[k];
                                                      return s;
                                                    }())));
  }
}

TEST_CASE("LowRank/Tucker validation refuses impossible trees", "[lowrank-enc]") {
  const Shape shape{{6, 4}};
  const auto u = normal_values(6 * 2, 3), v = normal_values(2 * 4, 4);
  auto lowrank = [&](int64_t rank, Shape us, Shape vs) {
    LowRankEncoding lr;
    lr.rank = rank;
    lr.u = make_dense("", us, std::vector<float>(us.numel(), 1.0f), DType::kF32).encoding;
    lr.v = make_dense("", vs, std::vector<float>(vs.numel(), 1.0f), DType::kF32).encoding;
    return Encoding{lr};
  };
  CHECK(validate_encoding(lowrank(2, Shape{{6, 2}}, Shape{{2, 4}}), shape).ok());
  CHECK_FALSE(validate_encoding(lowrank(0, Shape{{6, 0}}, Shape{{0, 4}}), shape).ok());  // rank 0
  CHECK_FALSE(validate_encoding(lowrank(5, Shape{{6, 5}}, Shape{{5, 4}}), shape).ok());  // rank > min dim
  CHECK_FALSE(validate_encoding(lowrank(2, Shape{{6, 3}}, Shape{{2, 4}}), shape).ok());  // U shape
  CHECK_FALSE(validate_encoding(lowrank(2, Shape{{6, 2}}, Shape{{2, 5}}), shape).ok());  // V shape
  // A part that is itself a decomposition.
  LowRankEncoding nested;
  nested.rank = 2;
  nested.u = std::make_shared<Encoding>(lowrank(2, Shape{{6, 2}}, Shape{{2, 2}}));
  nested.v = make_dense("", Shape{{2, 4}}, v, DType::kF32).encoding;
  auto r = validate_encoding(Encoding{nested}, shape);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("dense or quant"));

  auto tucker = [&](std::vector<int64_t> dims, int64_t row_modes, std::vector<int64_t> ranks) {
    TuckerEncoding t;
    t.dims = dims;
    t.row_modes = row_modes;
    t.ranks = ranks;
    if (check_tucker_layout(dims, row_modes, ranks, dims.size(), shape).ok()) {
      t.core = make_dense("", tucker_core_shape(t), std::vector<float>(tucker_core_shape(t).numel(), 1.0f), DType::kF32)
                   .encoding;
      for (size_t k = 0; k < dims.size(); ++k)
        t.factors.push_back(make_dense("", tucker_factor_shape(t, k),
                                       std::vector<float>(tucker_factor_shape(t, k).numel(), 1.0f), DType::kF32)
                                .encoding);
    } else {
      t.factors.resize(dims.size());
    }
    return Encoding{t};
  };
  CHECK(validate_encoding(tucker({2, 3, 4}, 2, {2, 2, 3}), shape).ok());
  CHECK_FALSE(validate_encoding(tucker({2, 3, 4}, 1, {2, 2, 3}), shape).ok());  // rows 2 != 6
  CHECK_FALSE(validate_encoding(tucker({2, 3, 4}, 3, {2, 2, 3}), shape).ok());  // no column mode
  CHECK_FALSE(validate_encoding(tucker({2, 3, 4}, 2, {3, 2, 3}), shape).ok());  // rank > dim
  CHECK_FALSE(validate_encoding(tucker({2, 3, 4}, 2, {0, 2, 3}), shape).ok());  // rank 0
  CHECK_FALSE(validate_encoding(tucker({6, 4}, 1, {2, 2, 2}), shape).ok());     // ranks vs modes
  CHECK_FALSE(validate_encoding(tucker({int64_t{1} << 40, 4}, 1, {1, 1}), shape).ok());
  // A missing part.
  Encoding missing = tucker({2, 3, 4}, 2, {2, 2, 3});
  std::get<TuckerEncoding>(missing.node).factors[1] = nullptr;
  CHECK_FALSE(validate_encoding(missing, shape).ok());
}
