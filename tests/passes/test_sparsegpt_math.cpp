// SparseGPT on synthetic correlated inputs: exact patterns and lower reconstruction error than magnitude and Wanda.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "passes/prune/prune_common.h"
#include "passes/prune/sparsegpt_math.h"
#include "passes/quant/quant_math.h"

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

// Joint quantization: the dequantized values are what the QuantEncoding decodes to, every group of
// kept entries is one 4-bit group, and compensating the rounding inside the sweep beats rounding
// the kept values of the plain SparseGPT result afterwards (the layer-output error).
TEST_CASE("sparsegpt joint 4-bit: values decode exactly, lower output error than prune-then-round",
          "[prune][sparsegpt]") {
  const Problem p = make_problem(5);
  QuantSpec q;
  q.bits = 4;
  q.group_size = 8;
  q.scheme = QuantScheme::kAsymmetric;
  PruneSpec specs[3];
  specs[0].sparsity = 0.5;
  specs[1].sparsity = 0.3;  // kept count per block not a multiple of the group: blocks end on group bounds
  specs[2].nm = true, specs[2].n = 2, specs[2].m = 4, specs[2].sparsity = 0.5;
  for (const PruneSpec& spec : specs) {
    INFO("sparsity " << spec.sparsity << (spec.nm ? " 2:4" : ""));
    SparseGptOptions o;
    o.block_size = 16;
    std::vector<float> joint = p.w, plain = p.w;
    std::vector<uint8_t> keep_joint, keep_plain;
    QuantEncoding values;
    REQUIRE(sparsegpt_prune(joint, p.rows, p.cols, p.h, spec, o, keep_joint, &q, &values).ok());
    REQUIRE(sparsegpt_prune(plain, p.rows, p.cols, p.h, spec, o, keep_plain).ok());
    const int64_t kept = p.cols - (spec.nm ? p.cols / 2 : std::llround(spec.sparsity * double(p.cols)));
    REQUIRE(validate_encoding(Encoding{values}, Shape{{p.rows, kept}}).ok());
    const std::vector<float> decoded =
        Tensor{"v", Shape{{p.rows, kept}}, std::make_shared<Encoding>(Encoding{values})}.to_f32();
    // Round the plain result's kept values to the same groups, without compensation.
    std::vector<float> plain_kept;
    for (size_t i = 0; i < plain.size(); ++i)
      if (keep_plain[i]) plain_kept.push_back(plain[i]);
    std::vector<float> rounded_kept;
    quantize_rtn(q, plain_kept, p.rows, kept, {}, ScaleSearch{}, &rounded_kept);
    std::vector<float> rounded(p.w.size(), 0.0f);
    for (int64_t r = 0, i = 0; r < p.rows; ++r) {
      int64_t k = 0;
      for (int64_t c = 0; c < p.cols; ++c) {
        const size_t at = static_cast<size_t>(r * p.cols + c);
        if (keep_joint[at]) {
          REQUIRE(joint[at] == decoded[r * kept + k]);
          ++k;
        } else {
          REQUIRE(joint[at] == 0.0f);
        }
        if (keep_plain[at]) rounded[at] = rounded_kept[i++];
      }
      REQUIRE(k == kept);
    }
    const double e_joint = output_error(p, joint), e_rounded = output_error(p, rounded),
                 e_plain = output_error(p, plain);
    INFO("output error: joint " << e_joint << ", prune then round " << e_rounded << ", prune only " << e_plain);
    CHECK(e_joint < e_rounded);
    CHECK(e_plain < e_joint);
  }
  // Tensor granularity keeps different counts per row: joint quantization refuses it.
  PruneSpec tensor;
  tensor.granularity = PruneGranularity::kTensor;
  std::vector<float> w = p.w;
  std::vector<uint8_t> keep;
  QuantEncoding values;
  auto r = sparsegpt_prune(w, p.rows, p.cols, p.h, tensor, SparseGptOptions{}, keep, &q, &values);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
}
