// share.kmeans: the weighted 1-D k-means (exact codebook size, known clusters, weights, seeds), the
// matrix fit (nearest-centroid indices, outliers, thread independence), the pass through the
// registry (options, errors, Sparse input, round trip, determinism) and, on stories260K, quality
// against plain k-means and RTN (issue 6).
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "core/palette.h"
#include "core/sparse.h"
#include "formats/file_io.h"
#include "formats/model_io.h"
#include "kernels/cpu/kernels.h"
#include "model/arch.h"
#include "model/tokenizer.h"
#include "passes/quant/quant_methods.h"
#include "passes/share/share_math.h"
#include "pipeline/calibration.h"
#include "quant_test_util.h"
#include "runtime/runtime.h"
#include "test_util.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

std::vector<float> normal_values(size_t n, uint32_t seed, float sd = 0.05f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

bool is_f16(float v) { return f16_to_f32(f32_to_f16(v)) == v; }

}  // namespace

TEST_CASE("k-means: exactly k sorted f16 centroids, deterministic per seed", "[share][palette]") {
  const std::vector<float> x = normal_values(5000, 1);
  for (int64_t k : {2, 4, 8, 16, 64, 256}) {
    INFO("k " << k);
    KmeansOptions o;
    o.k = k;
    o.seed = 7;
    const KmeansResult a = weighted_kmeans_1d(x, {}, o);
    REQUIRE(static_cast<int64_t>(a.centroids.size()) == k);
    CHECK(std::is_sorted(a.centroids.begin(), a.centroids.end()));
    for (float c : a.centroids) CHECK(is_f16(c));
    const KmeansResult b = weighted_kmeans_1d(x, {}, o);
    CHECK(a.centroids == b.centroids);
    // The reported error is the weighted SSE of the nearest centroids (computed here directly; the
    // k-means computes it from prefix sums, which lose a few of double's 16 digits).
    double sse = 0;
    for (float v : x) {
      const double d = v - a.centroids[nearest_centroid(a.centroids, v)];
      sse += d * d;
    }
    CHECK(std::fabs(sse - a.error) <= 1e-7 * sse + 1e-12);
  }
}

TEST_CASE("k-means: finds separated clusters and follows the weights", "[share][palette]") {
  // Three tight clusters around -1, 0.25 and 2 (f16-exact centres): with k = 3 every centroid is
  // its cluster's mean, computed here directly.
  std::vector<float> x;
  const float centres[] = {-1.0f, 0.25f, 2.0f};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> jitter(-0.01f, 0.01f);
  for (int i = 0; i < 300; ++i) x.push_back(centres[i % 3] + jitter(rng));
  KmeansOptions o;
  o.k = 3;
  const KmeansResult r = weighted_kmeans_1d(x, {}, o);
  for (int j = 0; j < 3; ++j) {
    double sum = 0;
    int n = 0;
    for (size_t i = j; i < x.size(); i += 3) sum += x[i], ++n;
    CHECK(std::fabs(r.centroids[j] - sum / n) <= 2e-3);  // f16 spacing near 2 is 2^-9
  }
  // Weights: one cluster {0, 1} with weights 3:1 has its centroid at the weighted mean 0.25.
  const std::vector<float> pair = {0.0f, 1.0f, 10.0f};
  const std::vector<float> w = {3.0f, 1.0f, 1.0f};
  o.k = 2;
  const KmeansResult wr = weighted_kmeans_1d(pair, w, o);
  CHECK(wr.centroids[0] == 0.25f);
  CHECK(wr.centroids[1] == 10.0f);
  // All-zero weights count as uniform.
  const KmeansResult zero = weighted_kmeans_1d(pair, std::vector<float>(3, 0.0f), o);
  CHECK(zero.centroids[0] == 0.5f);
  // Fewer distinct values than k: each value is a centroid, spare entries repeat the largest.
  o.k = 8;
  const KmeansResult few = weighted_kmeans_1d(pair, {}, o);
  REQUIRE(few.centroids.size() == 8);
  CHECK(few.centroids[0] == 0.0f);
  CHECK(few.centroids[1] == 1.0f);
  CHECK(few.centroids[2] == 10.0f);
  CHECK(few.centroids[7] == 10.0f);
  CHECK(few.error == 0.0);
  // Ties go to the lower centroid.
  CHECK(nearest_centroid(few.centroids, 0.5f) == 0);
  CHECK(nearest_centroid(few.centroids, 50.0f) == 2);
}

TEST_CASE("fit_palette: codebooks of 2^bits, nearest-centroid indices, outliers, thread independence",
          "[share][palette]") {
  const int64_t rows = 24, cols = 37;
  const std::vector<float> w = normal_values(static_cast<size_t>(rows * cols), 5);
  const std::vector<float> sens = normal_values(static_cast<size_t>(cols), 6, 1.0f);
  std::vector<float> col_weight;
  for (float s : sens) col_weight.push_back(s * s);
  for (int bits : {1, 2, 3, 4, 8})
    for (int64_t group_rows : {int64_t{0}, int64_t{1}, int64_t{5}})
      for (double outliers : {0.0, 0.02}) {
        INFO("bits " << bits << " group_rows " << group_rows << " outliers " << outliers);
        PaletteSpec spec;
        spec.bits = bits;
        spec.group_rows = group_rows;
        spec.outliers = outliers;
        auto fit = fit_palette(w, rows, cols, col_weight, {}, spec, 11, 1);
        REQUIRE(fit.ok());
        const PaletteEncoding& p = fit->encoding;
        const int64_t k = int64_t{1} << bits;
        const int64_t groups = group_rows == 0 ? 1 : (rows + group_rows - 1) / group_rows;
        REQUIRE(p.codebooks.size() == static_cast<size_t>(groups * k * 2));
        const Shape shape{{rows, cols}};
        REQUIRE(validate_encoding(Encoding{p}, shape).ok());
        std::vector<float> decoded(w.size());
        decode_rows_to_f32(Encoding{p}, shape, 0, rows, decoded.data());
        REQUIRE(decoded == fit->dequant);
        // Outliers: per codebook group, round(outliers * size) of the largest |w|.
        std::vector<char> is_outlier(w.size(), 0);
        if (p.outliers) {
          const auto& s = std::get<SparseEncoding>(p.outliers->node);
          for (int64_t e = 0; e < s.nnz; ++e) is_outlier[palette_outlier_position(s, rows * cols, e)] = 1;
        }
        int64_t total = 0;
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t r0 = group_rows == 0 ? 0 : g * group_rows;
          const int64_t r1 = group_rows == 0 ? rows : std::min(rows, r0 + group_rows);
          const int64_t n = (r1 - r0) * cols;
          int64_t count = 0;
          float smallest_kept = INFINITY, largest_clustered = 0;
          for (int64_t e = r0 * cols; e < r1 * cols; ++e) {
            count += is_outlier[e];
            if (is_outlier[e])
              smallest_kept = std::min(smallest_kept, std::fabs(w[e]));
            else
              largest_clustered = std::max(largest_clustered, std::fabs(w[e]));
          }
          CHECK(count == std::llround(outliers * static_cast<double>(n)));
          if (count > 0) CHECK(smallest_kept >= largest_clustered);
          total += count;
        }
        CHECK(fit->outliers == total);
        // Every value is its codebook's entry nearest to the weight (outliers: that entry plus the
        // f16 residual, within f16 rounding of the weight).
        std::vector<float> codebook(static_cast<size_t>(k));
        for (int64_t r = 0; r < rows; ++r) {
          palette_codebook_f32(p, palette_codebook_of_row(p, r), codebook.data());
          for (int64_t c = 0; c < cols; ++c) {
            const int64_t e = r * cols + c;
            const uint32_t idx = palette_index_at(p.indices.data() + r * palette_row_stride(bits, cols), bits, c);
            for (int64_t j = 0; j < k; ++j)
              REQUIRE(std::fabs(static_cast<double>(w[e]) - codebook[idx]) <=
                      std::fabs(static_cast<double>(w[e]) - codebook[j]));
            if (is_outlier[e])
              REQUIRE(std::fabs(decoded[e] - w[e]) <= std::fabs(w[e] - codebook[idx]) * 1e-3 + 1e-7);
            else
              REQUIRE(decoded[e] == codebook[idx]);
          }
        }
        // Same result on 2 threads.
        auto two = fit_palette(w, rows, cols, col_weight, {}, spec, 11, 2);
        REQUIRE(two.ok());
        CHECK(two->dequant == fit->dequant);
        CHECK(std::memcmp(two->encoding.indices.data(), p.indices.data(), p.indices.size()) == 0);
      }
}

TEST_CASE("fit_palette int_grid: every codebook on the integer grid, nearest indices, exact decode",
          "[share][palette]") {
  const int64_t rows = 24, cols = 37;
  const std::vector<float> w = normal_values(static_cast<size_t>(rows * cols), 7);
  for (int bits : {1, 2, 4, 8})
    for (int64_t group_rows : {int64_t{0}, int64_t{5}})
      for (double outliers : {0.0, 0.02}) {
        INFO("bits " << bits << " group_rows " << group_rows << " outliers " << outliers);
        PaletteSpec spec;
        spec.bits = bits;
        spec.group_rows = group_rows;
        spec.outliers = outliers;
        spec.int_grid = true;
        auto fit = fit_palette(w, rows, cols, {}, {}, spec, 3, 1);
        REQUIRE(fit.ok());
        const PaletteEncoding& p = fit->encoding;
        const Shape shape{{rows, cols}};
        std::vector<float> decoded(w.size());
        decode_rows_to_f32(Encoding{p}, shape, 0, rows, decoded.data());
        REQUIRE(decoded == fit->dequant);
        const int64_t k = int64_t{1} << bits;
        std::vector<float> codebook(static_cast<size_t>(k));
        for (int64_t g = 0; g < palette_codebook_count(group_rows, rows); ++g) {
          palette_codebook_f32(p, g, codebook.data());
          const int e = palette_grid_exponent(codebook.data(), k);
          REQUIRE(e != kPaletteOffGrid);
          for (float v : codebook) REQUIRE(std::ldexp(v, -e) == std::nearbyint(std::ldexp(v, -e)));
        }
        for (int64_t r = 0; r < rows; ++r) {
          palette_codebook_f32(p, palette_codebook_of_row(p, r), codebook.data());
          for (int64_t c = 0; c < cols; ++c) {
            const float x = w[r * cols + c];
            const uint32_t idx = palette_index_at(p.indices.data() + r * palette_row_stride(bits, cols), bits, c);
            for (int64_t j = 0; j < k; ++j) REQUIRE(std::fabs(x - codebook[idx]) <= std::fabs(x - codebook[j]));
          }
        }
        // Cost of the grid: the grid fit runs the same seedings and keeps the one with the lowest error after
        // snapping, with nearest indices, so per codebook group of n weights ||w - grid|| <= ||w - free|| + √n · d,
        // d the largest distance between the free fit's f16 centroids and its seeding's snapped unrounded ones:
        // <= half a step of the finest grid holding them (its exponent is <= k + 1, k the finest for the free codebook)
        // plus the f16 rounding (<= 2^-11 · 256 · 2^k): d <= 1.125 · 2^k, k that of the free codebook.
        if (outliers > 0) continue;
        spec.int_grid = false;
        auto free = fit_palette(w, rows, cols, {}, {}, spec, 3, 1);
        REQUIRE(free.ok());
        const int64_t gr = group_rows == 0 ? rows : group_rows;
        for (int64_t g = 0; g < palette_codebook_count(group_rows, rows); ++g) {
          palette_codebook_f32(free->encoding, g, codebook.data());
          const auto [lo, hi] = std::minmax_element(codebook.begin(), codebook.end());
          int ke = kPaletteGridMinExp;  // the smallest grid holding the free codebook
          while (*lo < -128 * std::ldexp(1.0, ke) || *hi > 127 * std::ldexp(1.0, ke)) ++ke;
          const double step = std::ldexp(1.0, ke);
          double eg = 0, ef = 0, n = 0;
          for (int64_t e = g * gr * cols; e < std::min(rows, (g + 1) * gr) * cols; ++e, ++n) {
            eg += (double(w[e]) - fit->dequant[e]) * (double(w[e]) - fit->dequant[e]);
            ef += (double(w[e]) - free->dequant[e]) * (double(w[e]) - free->dequant[e]);
          }
          CHECK(std::sqrt(eg) <= std::sqrt(ef) + std::sqrt(n) * 1.125 * step);
        }
      }
}

TEST_CASE("fit_palette: weighting lowers the weighted error — padding is never clustered", "[share][palette]") {
  // Every 8th input column is very sensitive and holds 10x larger weights: plain k-means spends
  // most entries on the many small weights, weighted k-means on the sensitive ones.
  const int64_t rows = 16, cols = 64;
  std::vector<float> w = normal_values(static_cast<size_t>(rows * cols), 8);
  std::vector<float> col_weight(static_cast<size_t>(cols), 1e-3f);
  for (int64_t c = 0; c < cols; c += 8) col_weight[c] = 100.0f;
  for (int64_t e = 0; e < rows * cols; e += 8) w[e] *= 10.0f;
  PaletteSpec spec;
  spec.bits = 3;
  auto weighted = fit_palette(w, rows, cols, col_weight, {}, spec, 1, 1);
  auto plain = fit_palette(w, rows, cols, {}, {}, spec, 1, 1);
  REQUIRE(weighted.ok());
  REQUIRE(plain.ok());
  double plain_weighted_error = 0;
  for (int64_t e = 0; e < rows * cols; ++e) {
    const double d = static_cast<double>(w[e]) - plain->dequant[e];
    plain_weighted_error += col_weight[e % cols] * d * d;
  }
  CHECK(weighted->weighted_error < 0.75 * plain_weighted_error);  // measured 0.59x
  // Column -1 marks padding: a huge padded value must not move the codebook.
  std::vector<float> padded = w;
  std::vector<int32_t> columns(w.size());
  for (int64_t e = 0; e < rows * cols; ++e) columns[e] = static_cast<int32_t>(e % cols);
  padded[5] = 1000.0f;
  columns[5] = -1;
  spec.outliers = 0.01;
  auto with_pad = fit_palette(padded, rows, cols, {}, columns, spec, 1, 1);
  REQUIRE(with_pad.ok());
  std::vector<float> codebook(8);
  palette_codebook_f32(with_pad->encoding, 0, codebook.data());
  for (float c : codebook) CHECK(std::fabs(c) < 1.0f);
}

TEST_CASE("fit_palette refuses non-finite weights and impossible specs", "[share][palette]") {
  std::vector<float> w = normal_values(40, 2);
  PaletteSpec spec;
  w[7] = NAN;
  auto r = fit_palette(w, 4, 10, {}, {}, spec, 0, 1);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("row 0, column 7"));
  w[7] = 0;
  for (auto edit : {+[](PaletteSpec& s) { s.bits = 0; }, +[](PaletteSpec& s) { s.bits = 9; },
                    +[](PaletteSpec& s) { s.outliers = 1.0; }, +[](PaletteSpec& s) { s.outliers = -0.1; },
                    +[](PaletteSpec& s) { s.group_rows = -1; }}) {
    PaletteSpec bad;
    edit(bad);
    auto f = fit_palette(w, 4, 10, {}, {}, bad, 0, 1);
    REQUIRE_FALSE(f.ok());
    CHECK(f.error().code == ErrorCode::kInvalidArgument);
  }
  CHECK(parse_palette_granularity("tensor").value() == 0);
  CHECK(parse_palette_granularity("row").value() == 1);
  CHECK(parse_palette_granularity("rows:16").value() == 16);
  for (const char* bad : {"rows:0", "rows:", "rows:x", "rows:-2", "column", "", "rows:99999999999999999"})
    CHECK_FALSE(parse_palette_granularity(bad).ok());
}

namespace {

Model load_stories() {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return {};
  LoadOptions opt;
  opt.tokenizer_path = tok;
  auto model = load_model(bin, opt);
  REQUIRE(model.ok());
  return std::move(model).value();
}

Result<PassReport> run_pass(const std::string& name, Model& model, std::map<std::string, std::string> options,
                            CalibrationSet* calib = nullptr, int threads = 0) {
  auto pass = make_pass(name);
  REQUIRE(pass.ok());
  test::SetOptions set(std::move(options));
  (*pass)->visit(set);
  REQUIRE(set.unused().empty());
  LLMC_TRY((*pass)->validate_options());
  PassContext ctx;
  ctx.calib = calib;
  ctx.threads = threads;
  ctx.seed = 3;
  REQUIRE(ctx.selector.compile().ok());
  return (*pass)->run(model, ctx);
}

}  // namespace

TEST_CASE("share.kmeans is in the registry and refuses bad options", "[share][palette]") {
  REQUIRE(make_pass("share.kmeans").ok());
  const std::vector<std::pair<std::map<std::string, std::string>, const char*>> bad = {
      {{{"bits", "0"}}, "bits must be 1..8"},
      {{{"bits", "9"}}, "bits must be 1..8"},
      {{{"granularity", "rows:0"}}, "granularity"},
      {{{"granularity", "column"}}, "granularity"},
      {{{"outliers", "1"}}, "outliers"},
      {{{"outliers", "-0.5"}}, "outliers"},
      {{{"iterations", "0"}}, "iterations"},
      {{{"inits", "0"}}, "inits"},
  };
  for (const auto& [opts, message] : bad) {
    INFO(opts.begin()->first << "=" << opts.begin()->second);
    auto pass = make_pass("share.kmeans");
    test::SetOptions set(opts);
    (*pass)->visit(set);
    auto r = (*pass)->validate_options();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Contains(message));
  }
  auto pass = make_pass("share.kmeans");
  test::SetOptions weighted(std::map<std::string, std::string>{{"weighted", "true"}});
  (*pass)->visit(weighted);
  CHECK((*pass)->needs().calibration);
  Model m = load_stories();
  if (m.tensors().empty()) return;
  PassContext ctx;
  auto r = (*pass)->run(m, ctx);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("calibration"));
}

TEST_CASE("share.kmeans on stories260K: Palette targets, exact round trip, same file on 1 and 2 threads",
          "[share][palette]") {
  const Model base = load_stories();
  if (base.tensors().empty()) return;
  Model one = base, two = base;
  const std::map<std::string, std::string> options = {{"bits", "3"}, {"granularity", "rows:16"}, {"outliers", "0.005"}};
  auto r1 = run_pass("share.kmeans", one, options, nullptr, 1);
  REQUIRE(r1.ok());
  REQUIRE(run_pass("share.kmeans", two, options, nullptr, 2).ok());
  test::require_same_tensors(one, two);
  for (const Tensor& t : one.tensors()) {
    INFO(t.name);
    const bool target = t.shape.dims.size() == 2;
    const auto* p = std::get_if<PaletteEncoding>(&t.encoding->node);
    REQUIRE((p != nullptr) == target);
    if (!p) continue;
    CHECK(p->bits == 3);
    CHECK(p->group_rows == 16);
    CHECK(p->codebooks.size() == static_cast<size_t>((t.rows() + 15) / 16 * 8 * 2));
    CHECK(palette_outlier_count(*p) == r1->details[t.name]["outliers"].get<int64_t>());
    CHECK(r1->details[t.name]["rel_err"].get<double>() < 0.5);
  }
  test::TempDir dir;
  LlmcWriteOptions wo;
  REQUIRE(write_llmc(one, dir.path("a.llmc"), wo).ok());
  REQUIRE(write_llmc(two, dir.path("b.llmc"), wo).ok());
  CHECK(test::read_file_bytes(dir.path("a.llmc")) == test::read_file_bytes(dir.path("b.llmc")));
  auto loaded = read_llmc(dir.path("a.llmc"));
  REQUIRE(loaded.ok());
  test::require_same_tensors(one, *loaded);
  // The runtime runs the shared model (embedding lookups and the tied head decode Palette rows).
  RuntimeOptions ro;
  ro.max_context = 16;
  auto rt = Runtime::create(*loaded, ro);
  REQUIRE(rt.ok());
}

TEST_CASE("share.kmeans gptq (compensated indices, refit codebooks): same tensors on 1 and 2 threads",
          "[share][palette]") {
  const Model base = load_stories();
  if (base.tensors().empty()) return;
  CalibOptions c;
  c.self_samples = 4;
  c.samples = 4;
  c.ctx = 64;
  c.seed = 1;
  auto calib = CalibrationSet::create(base, c);
  REQUIRE(calib.ok());
  const std::map<std::string, std::string> options = {
      {"bits", "3"}, {"weighted", "true"}, {"gptq", "true"}, {"outliers", "0.01"}, {"granularity", "rows:32"}};
  Model one = base, two = base;
  auto r1 = run_pass("share.kmeans", one, options, calib->get(), 1);
  INFO((r1.ok() ? "" : r1.error().message));
  REQUIRE(r1.ok());
  REQUIRE(run_pass("share.kmeans", two, options, calib->get(), 2).ok());
  test::require_same_tensors(one, two);
  CHECK(r1->details["blk.0.attn_q.weight"]["gptq"] == true);
  for (const Tensor& t : one.tensors()) {
    const auto* p = std::get_if<PaletteEncoding>(&t.encoding->node);
    if (!p) continue;
    INFO(t.name);
    CHECK(p->codebooks.size() == static_cast<size_t>((t.rows() + 31) / 32 * 8 * 2));
    CHECK(r1->details[t.name]["rel_err"].get<double>() < 0.6);
  }
  // With int_grid the refitted codebooks stay on the integer grid, so every shared linear runs on
  // int8 activations.
  std::map<std::string, std::string> grid_options = options;
  grid_options["int_grid"] = "true";
  Model grid = base;
  REQUIRE(run_pass("share.kmeans", grid, grid_options, calib->get(), 2).ok());
  int64_t shared = 0;
  for (const Tensor& t : grid.tensors()) {
    const auto* p = std::get_if<PaletteEncoding>(&t.encoding->node);
    if (!p) continue;
    INFO(t.name);
    ++shared;
    std::vector<float> codebook(8);
    for (int64_t g = 0; g < palette_codebook_count(p->group_rows, t.rows()); ++g) {
      palette_codebook_f32(*p, g, codebook.data());
      REQUIRE(palette_grid_exponent(codebook.data(), 8) != kPaletteOffGrid);
    }
    CHECK(kernels::palette_int8_activations(t));
  }
  CHECK(shared > 0);
}

TEST_CASE("share.kmeans after pruning keeps the pattern and shares the kept values", "[share][palette][sparse]") {
  Model m = load_stories();
  if (m.tensors().empty()) return;
  REQUIRE(run_pass("prune.magnitude", m, {{"sparsity", "0.5"}}).ok());
  const Model pruned = m;
  auto r = run_pass("share.kmeans", m, {{"bits", "4"}, {"granularity", "rows:8"}});
  REQUIRE(r.ok());
  int sparse = 0;
  for (const Tensor& t : m.tensors()) {
    const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
    if (!s) continue;
    ++sparse;
    INFO(t.name);
    REQUIRE(std::holds_alternative<PaletteEncoding>(s->values->node));
    CHECK(r->details[t.name]["under"] == "sparse");
    const auto& before = std::get<SparseEncoding>(pruned.get(t.name).encoding->node);
    CHECK(s->nnz == before.nnz);
    CHECK(std::memcmp(s->index.data(), before.index.data(), s->index.size()) == 0);
    // Pruned entries stay exactly zero; kept ones are close to what they were.
    const std::vector<float> a = pruned.get(t.name).to_f32(), b = t.to_f32();
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i] == 0) CHECK(b[i] == 0);
      num += (a[i] - b[i]) * (a[i] - b[i]);
      den += a[i] * a[i];
    }
    CHECK(std::sqrt(num / den) < 0.2);
  }
  CHECK(sparse > 0);
}

// ---- Quality on real models (issue 6; figures and commands in docs/weight_sharing.md) ----

namespace {

struct RealModel {
  Model model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<CalibrationSet> calib;
};

double weight_bpw(const Model& m) {
  double bytes = 0, n = 0;
  for (const Tensor& t : m.tensors())
    if (counts_for_bpw(tensor_role(t.name))) {
      bytes += static_cast<double>(t.encoded_bytes());
      n += static_cast<double>(t.numel());
    }
  return 8 * bytes / n;
}

// Mean KLD of `q` against the model on `text_fixture` (first `chunks` chunks of `ctx` tokens).
double mean_kld(const RealModel& base, const Model& q, const char* text_fixture, int64_t ctx, int64_t chunks) {
  auto text = read_text_file(test::fixture(text_fixture));
  REQUIRE(text.ok());
  RuntimeOptions ro;
  ro.max_context = ctx;
  ro.threads = 1;
  auto rq = Runtime::create(q, ro);
  auto rr = Runtime::create(base.model, ro);
  REQUIRE(rq.ok());
  REQUIRE(rr.ok());
  EvalOptions eo;
  eo.ctx = ctx;
  eo.max_chunks = chunks;
  auto r = evaluate_text(**rq, rr->get(), *base.tokenizer, *text, eo);
  REQUIRE(r.ok());
  return r->kld->kld.mean;
}

Model rtn_or_gptq(const RealModel& base, bool gptq, int bits, int64_t group) {
  Model m = base.model;
  PassContext ctx;
  ctx.calib = base.calib.get();
  ctx.threads = 1;
  REQUIRE(ctx.selector.compile().ok());
  QuantSpec spec;
  spec.bits = bits;
  spec.group_size = group;
  const SpecFor spec_for = [spec](const std::string&) { return std::optional<QuantSpec>(spec); };
  auto r =
      gptq ? quantize_model_gptq(m, ctx, spec_for, {}, GptqOptions{}) : quantize_model_rtn(m, ctx, spec_for, {}, false);
  REQUIRE(r.ok());
  return m;
}

Model shared(const RealModel& base, std::map<std::string, std::string> options) {
  Model m = base.model;
  auto r = run_pass("share.kmeans", m, std::move(options), base.calib.get(), 1);
  INFO((r.ok() ? "" : r.error().message));
  REQUIRE(r.ok());
  return m;
}

}  // namespace

// Calibration: 32 x 256 tokens sampled from the model itself (in-domain, never the evaluation text).
// KLD on the first 40 chunks of 256 tokens of TinyStories; one thread (the machine is shared).
// Plain vs weighted k-means is reported, not asserted: with column weights E[x²] the order depends
// on the calibration sample (weighted 0.564 vs plain 0.573 with the self-sampled sequences of the
// palette branch's runtime, 0.593 vs 0.573 with those of the merged runtime; docs/weight_sharing.md).
TEST_CASE(
    "stories260K 4-bit: k-means with GPTQ assignment and 1% outliers beats RTN g128, on the integer grid too (plain "
    "and weighted reported)",
    "[share][palette][heavy]") {
  Model m = load_stories();
  if (m.tensors().empty()) return;
  RealModel base;
  base.model = m;
  auto tok = Tokenizer::create(m.tokenizer);
  REQUIRE(tok.ok());
  base.tokenizer = std::move(tok).value();
  CalibOptions c;
  c.self_samples = 32;
  c.samples = 32;
  c.ctx = 256;
  c.seed = 1;
  auto calib = CalibrationSet::create(m, c);
  REQUIRE(calib.ok());
  base.calib = std::move(calib).value();
  const char* text = "text/tinystories-sample.txt";

  const Model plain = shared(base, {{"bits", "4"}});
  const Model weighted = shared(base, {{"bits", "4"}, {"weighted", "true"}});
  const double plain_kld = mean_kld(base, plain, text, 256, 40), weighted_kld = mean_kld(base, weighted, text, 256, 40);
  INFO("plain k-means " << weight_bpw(plain) << " bpw, KLD " << plain_kld << "; weighted " << weight_bpw(weighted)
                        << " bpw, KLD " << weighted_kld);
  CHECK(weight_bpw(weighted) == weight_bpw(plain));

  const Model rtn = rtn_or_gptq(base, false, 4, 128);
  const Model best = shared(
      base, {{"bits", "4"}, {"weighted", "true"}, {"gptq", "true"}, {"outliers", "0.01"}, {"granularity", "rows:32"}});
  const double rtn_kld = mean_kld(base, rtn, text, 256, 40), best_kld = mean_kld(base, best, text, 256, 40);
  INFO("RTN g128 " << weight_bpw(rtn) << " bpw, KLD " << rtn_kld << "; weighted+gptq+1% outliers rows:32 "
                   << weight_bpw(best) << " bpw, KLD " << best_kld);
  CHECK(weight_bpw(best) <= weight_bpw(rtn));
  CHECK(best_kld < rtn_kld);
  // The same on the integer grid (the int8-activation kernel runs it): measured 0.326 vs 0.342 here.
  const Model grid = shared(base, {{"bits", "4"},
                                   {"weighted", "true"},
                                   {"gptq", "true"},
                                   {"outliers", "0.01"},
                                   {"granularity", "rows:32"},
                                   {"int_grid", "true"}});
  for (const Tensor& t : grid.tensors())
    if (std::holds_alternative<PaletteEncoding>(t.encoding->node)) REQUIRE(kernels::palette_int8_activations(t));
  const double grid_kld = mean_kld(base, grid, text, 256, 40);
  INFO("the same on the integer grid: KLD " << grid_kld);
  CHECK(weight_bpw(grid) == weight_bpw(best));
  CHECK(grid_kld < rtn_kld);
}
