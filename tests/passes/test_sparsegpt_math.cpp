// SparseGPT on synthetic correlated inputs: exact patterns and lower reconstruction error than magnitude and Wanda.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "passes/prune/prune_common.h"
#include "passes/prune/sparsegpt_math.h"

using namespace llmc;

namespace {

struct Problem {
  int64_t rows = 48, cols = 64, tokens = 512;
  std::vector<float> w, x;  // w [rows, cols], x [tokens, cols]
  std::vector<double> h;    // Σ x xᵀ
};

// Inputs with correlated columns and uneven scales (x = z A, A mixing neighbours), like activations.
Problem make_problem(uint32_t seed) {
  Problem p;
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  p.w.resize(static_cast<size_t>(p.rows * p.cols));
  for (auto& v : p.w) v = g(rng);
  p.x.assign(static_cast<size_t>(p.tokens * p.cols), 0.0f);
  for (int64_t t = 0; t < p.tokens; ++t) {
    std::vector<float> z(static_cast<size_t>(p.cols));
    for (auto& v : z) v = g(rng);
    for (int64_t c = 0; c < p.cols; ++c) {
      const float scale = 0.2f + static_cast<float>(c % 7);
      p.x[t * p.cols + c] = scale * (z[c] + 0.8f * z[(c + 1) % p.cols] + 0.5f * z[(c + 5) % p.cols]);
    }
  }
  p.h.assign(static_cast<size_t>(p.cols * p.cols), 0.0);
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int64_t i = 0; i < p.cols; ++i)
      for (int64_t j = 0; j < p.cols; ++j)
        p.h[i * p.cols + j] += static_cast<double>(p.x[t * p.cols + i]) * p.x[t * p.cols + j];
  return p;
}

// ‖(W - Ŵ) Xᵀ‖²: the layer-output error every method tries to keep small.
double output_error(const Problem& p, const std::vector<float>& wp) {
  double e = 0;
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int64_t r = 0; r < p.rows; ++r) {
      double d = 0;
      for (int64_t c = 0; c < p.cols; ++c)
        d += (static_cast<double>(p.w[r * p.cols + c]) - wp[r * p.cols + c]) * p.x[t * p.cols + c];
      e += d * d;
    }
  return e;
}

// Prunes by a fixed score without reconstruction (magnitude: |w|; Wanda: |w| · ‖x_c‖).
std::vector<float> prune_by_score(const Problem& p, const PruneSpec& spec, bool wanda) {
  std::vector<float> s(p.w.size());
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t c = 0; c < p.cols; ++c)
      s[r * p.cols + c] =
          std::fabs(p.w[r * p.cols + c]) * (wanda ? static_cast<float>(std::sqrt(p.h[c * p.cols + c])) : 1.0f);
  auto keep = select_keep(s, p.rows, p.cols, spec, NAN);
  REQUIRE(keep.ok());
  std::vector<float> out(p.w.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = (*keep)[i] ? p.w[i] : 0.0f;
  return out;
}

}  // namespace

TEST_CASE("sparsegpt: exact patterns and lower output error than magnitude and Wanda", "[prune][sparsegpt]") {
  const Problem p = make_problem(3);
  PruneSpec unstructured;
  unstructured.sparsity = 0.5;
  PruneSpec nm;
  nm.nm = true;
  nm.n = 2;
  nm.m = 4;
  nm.sparsity = 0.5;
  for (const PruneSpec& spec : {unstructured, nm}) {
    INFO((spec.nm ? "2:4" : "50% per row"));
    std::vector<float> w = p.w;
    std::vector<uint8_t> keep;
    SparseGptOptions opt;
    opt.block_size = 16;  // several blocks: exercises the lazy updates
    REQUIRE(sparsegpt_prune(w, p.rows, p.cols, p.h, spec, opt, keep).ok());
    for (int64_t r = 0; r < p.rows; ++r) {
      int64_t kept = 0;
      for (int64_t c = 0; c < p.cols; ++c) {
        kept += keep[r * p.cols + c];
        if (!keep[r * p.cols + c]) REQUIRE(w[r * p.cols + c] == 0.0f);
        if (spec.nm && c % 4 == 3) {
          int64_t g = 0;
          for (int64_t j = c - 3; j <= c; ++j) g += keep[r * p.cols + j];
          REQUIRE(g == 2);
        }
      }
      REQUIRE(kept == p.cols / 2);
    }
    const double e_sgpt = output_error(p, w);
    const double e_mag = output_error(p, prune_by_score(p, spec, false));
    const double e_wanda = output_error(p, prune_by_score(p, spec, true));
    INFO("output error sparsegpt " << e_sgpt << " wanda " << e_wanda << " magnitude " << e_mag);
    CHECK(e_wanda < e_mag);
    CHECK(e_sgpt < e_wanda);
  }
}

TEST_CASE("sparsegpt zeroes never-active input columns and refuses global granularity", "[prune][sparsegpt]") {
  Problem p = make_problem(5);
  for (int64_t i = 0; i < p.cols; ++i) p.h[5 * p.cols + i] = p.h[i * p.cols + 5] = 0.0;
  std::vector<float> w = p.w;
  std::vector<uint8_t> keep;
  PruneSpec spec;
  spec.sparsity = 0.25;
  REQUIRE(sparsegpt_prune(w, p.rows, p.cols, p.h, spec, {}, keep).ok());
  for (int64_t r = 0; r < p.rows; ++r) CHECK(w[r * p.cols + 5] == 0.0f);
  spec.granularity = PruneGranularity::kGlobal;
  auto r = sparsegpt_prune(w, p.rows, p.cols, p.h, spec, {}, keep);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
}
