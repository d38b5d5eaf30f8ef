// Pruning passes: exact patterns on stories260K, the magnitude criterion, bad options, quality against the fp32 model.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/sparse.h"
#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/tokenizer.h"
#include "passes/pass.h"
#include "passes/prune/prune_common.h"
#include "passes/quant/quant_math.h"
#include "pipeline/calibration.h"
#include "runtime/runtime.h"
#include "test_util.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

// Sets options by name from strings, as a recipe would.
class SetOptions final : public OptionVisitor {
 public:
  explicit SetOptions(std::map<std::string, std::string> values) : values_(std::move(values)) {}
  void option(const char* name, bool& v, const char*) override {
    if (auto it = values_.find(name); it != values_.end()) v = it->second == "true";
  }
  void option(const char* name, int64_t& v, const char*) override {
    if (auto it = values_.find(name); it != values_.end()) v = std::stoll(it->second);
  }
  void option(const char* name, double& v, const char*) override {
    if (auto it = values_.find(name); it != values_.end()) v = std::stod(it->second);
  }
  void option(const char* name, std::string& v, const char*, std::span<const char* const>) override {
    if (auto it = values_.find(name); it != values_.end()) v = it->second;
  }
  void option(const char*, std::vector<std::string>&, const char*) override {}

 private:
  std::map<std::string, std::string> values_;
};

Result<Model> load_stories() {
  LoadOptions o;
  o.tokenizer_path = test::fixture("models/stories260K/tok512.bin");
  return load_model(test::fixture("models/stories260K/stories260K.bin"), o);
}

std::unique_ptr<Pass> configured(const char* pass, std::map<std::string, std::string> options) {
  auto p = make_pass(pass);
  REQUIRE(p.ok());
  SetOptions set(std::move(options));
  (*p)->visit(set);
  return std::move(*p);
}

Result<PassReport> run_pass(Pass& pass, Model& model, CalibrationSet* calib = nullptr) {
  LLMC_TRY(pass.validate_options());
  PassContext ctx;
  ctx.calib = calib;
  return pass.run(model, ctx);
}

bool is_block_linear(const std::string& name) {
  return name.rfind("blk.", 0) == 0 && name.find("_norm") == std::string::npos && name.size() > 7 &&
         name.compare(name.size() - 7, 7, ".weight") == 0;
}

}  // namespace

TEST_CASE("prune.magnitude 50% per row: exact zeros per row, smallest |w| removed, values kept", "[prune]") {
  auto orig = load_stories();
  if (!orig.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(orig.ok());
  auto model = load_stories();
  REQUIRE(model.ok());
  auto pass = configured("prune.magnitude", {{"sparsity", "0.5"}});
  auto report = run_pass(*pass, *model);
  REQUIRE(report.ok());
  int pruned = 0;
  for (const Tensor& t : model->tensors()) {
    const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
    if (!is_block_linear(t.name)) {
      CHECK(s == nullptr);
      continue;
    }
    REQUIRE(s != nullptr);
    ++pruned;
    const int64_t rows = t.rows(), cols = t.cols();
    const auto want_kept = cols - static_cast<int64_t>(std::llround(0.5 * static_cast<double>(cols)));
    const auto w0 = orig->get(t.name).to_f32();
    const auto w1 = t.to_f32();
    std::vector<int32_t> where(static_cast<size_t>(s->kept_stride));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t k = sparse_row_columns(*s, cols, r, where.data());
      REQUIRE(k == want_kept);
      std::vector<uint8_t> kept(static_cast<size_t>(cols), 0);
      float min_kept = INFINITY;
      for (int64_t i = 0; i < k; ++i) {
        kept[where[i]] = 1;
        min_kept = std::min(min_kept, std::fabs(w0[r * cols + where[i]]));
      }
      for (int64_t c = 0; c < cols; ++c) {
        if (kept[c]) {
          REQUIRE(w1[r * cols + c] == w0[r * cols + c]);
        } else {
          REQUIRE(w1[r * cols + c] == 0.0f);
          REQUIRE(std::fabs(w0[r * cols + c]) <= min_kept);
        }
      }
    }
  }
  CHECK(pruned == 5 * 7);
}

TEST_CASE("prune.magnitude N:M keeps exactly N of every M, the largest", "[prune]") {
  for (const char* pattern : {"2:4", "4:8", "1:3"}) {
    auto orig = load_stories();
    if (!orig.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
    auto model = load_stories();
    REQUIRE(model.ok());
    const int n = pattern[0] - '0', m = pattern[2] - '0';
    auto pass = configured("prune.magnitude", {{"pattern", pattern}});
    REQUIRE(run_pass(*pass, *model).ok());
    INFO(pattern);
    for (const Tensor& t : model->tensors()) {
      if (!is_block_linear(t.name)) continue;
      const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
      REQUIRE(s != nullptr);
      CHECK(s->pattern == SparsePattern::kNM);
      const int64_t rows = t.rows(), cols = t.cols();
      const auto w0 = orig->get(t.name).to_f32();
      const auto w1 = t.to_f32();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g0 = 0; g0 < cols; g0 += m) {
          const int64_t width = std::min<int64_t>(m, cols - g0);
          int64_t kept = 0;
          float min_kept = INFINITY, max_pruned = 0;
          for (int64_t j = 0; j < width; ++j) {
            const int64_t i = r * cols + g0 + j;
            if (w1[i] != 0.0f) {
              ++kept;
              REQUIRE(w1[i] == w0[i]);
              min_kept = std::min(min_kept, std::fabs(w0[i]));
            } else {
              max_pruned = std::max(max_pruned, std::fabs(w0[i]));
            }
          }
          REQUIRE(kept == std::min<int64_t>(n, width));
          REQUIRE(max_pruned <= min_kept);
        }
    }
  }
}

// Per row: exactly round(sparsity * cols) zeros, every pruned score <= every kept one, and among
// equal scores the lower column is pruned first (checked against a brute-force rank).
TEST_CASE("select_keep per row: exact count, lowest scores pruned, ties to the lower column", "[prune]") {
  const int64_t rows = 7, cols = 37;
  std::vector<float> scores(static_cast<size_t>(rows * cols));
  uint32_t state = 12345;
  for (float& v : scores) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>((state >> 24) % 9);  // few distinct values: many ties
  }
  for (double sparsity : {0.0, 0.3, 0.5, 0.7, 1.0}) {
    PruneSpec spec;
    spec.sparsity = sparsity;
    auto keep = select_keep(scores, rows, cols, spec, NAN);
    REQUIRE(keep.ok());
    const auto zeros = static_cast<int64_t>(std::llround(sparsity * static_cast<double>(cols)));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float* s = scores.data() + r * cols;
        int64_t rank = 0;  // columns that come before c: lower score, or equal score and lower column
        for (int64_t o = 0; o < cols; ++o) rank += s[o] < s[c] || (s[o] == s[c] && o < c);
        INFO("sparsity " << sparsity << " row " << r << " col " << c);
        CHECK((*keep)[static_cast<size_t>(r * cols + c)] == (rank < zeros ? 0 : 1));
      }
  }
}

TEST_CASE("prune.magnitude per tensor and global reach the asked sparsity", "[prune]") {
  for (const char* g : {"tensor", "global"}) {
    auto model = load_stories();
    if (!model.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
    REQUIRE(model.ok());
    auto pass = configured("prune.magnitude", {{"sparsity", "0.7"}, {"granularity", g}});
    REQUIRE(run_pass(*pass, *model).ok());
    int64_t total = 0, nnz = 0;
    for (const Tensor& t : model->tensors()) {
      const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
      if (!s) continue;
      total += t.numel();
      nnz += s->nnz;
      if (std::string(g) == "tensor") CHECK(std::fabs(1.0 - double(s->nnz) / double(t.numel()) - 0.7) < 1e-3);
    }
    INFO(g);
    CHECK(std::fabs(1.0 - double(nnz) / double(total) - 0.7) < 1e-3);
  }
}

TEST_CASE("pruning passes refuse bad options and impossible patterns", "[prune]") {
  struct Case {
    std::map<std::string, std::string> options;
    const char* message;
  };
  const Case kCases[] = {
      {{{"sparsity", "1"}}, "sparsity"},
      {{{"sparsity", "-0.1"}}, "sparsity"},
      {{{"sparsity", "1.5"}}, "sparsity"},
      {{{"pattern", "5:4"}}, "N < M"},
      {{{"pattern", "4:4"}}, "N < M"},
      {{{"pattern", "2:32"}}, "M <= 16"},
      {{{"pattern", "2:x"}}, "neither"},
      {{{"pattern", "dense"}}, "neither"},
      {{{"granularity", "block"}}, "granularity"},
  };
  for (const Case& c : kCases) {
    auto pass = configured("prune.magnitude", c.options);
    auto r = pass->validate_options();
    INFO(c.options.begin()->second);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
  }
  // A pattern the shape cannot hold: 2:8 on rows of 6 columns.
  Model m;
  REQUIRE(m.add(make_dense_f32("blk.0.ffn_up.weight", Shape{{4, 6}}, std::vector<float>(24, 1.0f))).ok());
  auto pass = configured("prune.magnitude", {{"pattern", "2:8"}});
  REQUIRE(pass->validate_options().ok());
  auto r = run_pass(*pass, m);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK_THAT(r.error().message, Catch::Contains("blk.0.ffn_up.weight"));
}

TEST_CASE("pruned stories260K round trips through .llmc and runs", "[prune][llmc]") {
  auto model = load_stories();
  if (!model.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(model.ok());
  auto pass = configured("prune.magnitude", {{"pattern", "2:4"}, {"values", "f16"}});
  REQUIRE(run_pass(*pass, *model).ok());
  test::TempDir dir;
  REQUIRE(write_llmc(*model, dir.path("p.llmc"), {}).ok());
  auto back = read_llmc(dir.path("p.llmc"));
  REQUIRE(back.ok());
  test::require_same_tensors(*model, *back);
  auto rt = Runtime::create(*back, {});
  REQUIRE(rt.ok());
  std::vector<float> logits(static_cast<size_t>((*rt)->vocab_size()));
  const int32_t ids[] = {1, 400, 300};
  REQUIRE((*rt)->forward(ids, 0, logits.data(), false).ok());
  for (float v : logits) REQUIRE(std::isfinite(v));
}

namespace {

// KLD and PPL ratio of `model` against the fp32 stories260K on tinystories-sample (ctx 256, 8 chunks).
std::pair<double, double> stories_kld(const Model& model, const Model& ref) {
  auto tokenizer = Tokenizer::create(ref.tokenizer);
  REQUIRE(tokenizer.ok());
  auto text = read_text_file(test::fixture("text/tinystories-sample.txt"));
  REQUIRE(text.ok());
  RuntimeOptions ro;
  ro.max_context = 256;
  ro.threads = 1;
  auto q = Runtime::create(model, ro);
  auto r = Runtime::create(ref, ro);
  REQUIRE(q.ok());
  REQUIRE(r.ok());
  EvalOptions eo;
  eo.ctx = 256;
  eo.max_chunks = 8;
  auto e = evaluate_text(**q, r->get(), **tokenizer, *text, eo);
  REQUIRE(e.ok());
  return {e->kld->kld.mean, e->kld->ppl_ratio};
}

}  // namespace

TEST_CASE("stories260K at 50% and 2:4: Wanda and SparseGPT beat magnitude (KLD and PPL ratio)", "[prune][heavy]") {
  auto base = load_stories();
  if (!base.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(base.ok());
  // Calibration from another text than the evaluation's.
  CalibOptions co;
  co.file = test::fixture("text/tinyshakespeare.txt");
  co.samples = 32;
  co.ctx = 256;
  for (const char* pattern : {"0.5", "2:4"}) {
    std::map<std::string, std::pair<double, double>> result;
    for (const char* method : {"prune.magnitude", "prune.wanda", "prune.sparsegpt"}) {
      Model m = *base;
      std::map<std::string, std::string> opts;
      opts[std::string(pattern).find(':') != std::string::npos ? "pattern" : "sparsity"] = pattern;
      auto pass = configured(method, opts);
      auto calib = CalibrationSet::create(m, co);
      REQUIRE(calib.ok());
      PassContext ctx;
      ctx.calib = calib->get();
      ctx.threads = 1;
      REQUIRE(pass->validate_options().ok());
      auto report = pass->run(m, ctx);
      REQUIRE(report.ok());
      result[method] = stories_kld(m, *base);
      WARN(pattern << " " << method << ": KLD " << result[method].first << ", PPL ratio " << result[method].second);
    }
    for (const char* method : {"prune.wanda", "prune.sparsegpt"}) {
      INFO(pattern << " " << method);
      CHECK(result[method].first < result["prune.magnitude"].first);
      CHECK(result[method].second < result["prune.magnitude"].second);
    }
  }
}

TEST_CASE("llmc prune writes an exact N:M file and refuses bad options without output", "[prune][cli]") {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return;
  test::TempDir dir;
  const std::string in = bin + " --tokenizer " + tok + " -o ";
  for (const char* bad : {"--sparsity 1", "--sparsity -0.5", "--pattern 5:4", "--pattern 2:32", "--method wanda"}) {
    auto r = test::run_cli("prune " + in + dir.path("bad.llmc") + " " + bad);
    INFO(bad << ": " << r.output);
    CHECK(r.exit_code != 0);
    CHECK_FALSE(std::filesystem::exists(dir.path("bad.llmc")));
  }
  auto r = test::run_cli("prune " + in + dir.path("p.llmc") + " --pattern 4:8 --threads 1");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto m = read_llmc(dir.path("p.llmc"));
  REQUIRE(m.ok());
  int sparse = 0;
  for (const Tensor& t : m->tensors())
    if (const auto* s = std::get_if<SparseEncoding>(&t.encoding->node)) {
      ++sparse;
      CHECK(s->pattern == SparsePattern::kNM);
      CHECK(s->n == 4);
      CHECK(s->m == 8);
    }
  CHECK(sparse == 35);
  CHECK(test::run_cli("prune " + in + dir.path("p.llmc")).exit_code != 0);  // exists, no --force
}

TEST_CASE("OWL allocation: per-block sparsity follows the outlier ratio, the total stays at the target", "[prune]") {
  auto base = load_stories();
  if (!base.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(base.ok());
  Model m = *base;
  auto pass = configured("prune.magnitude", {{"sparsity", "0.5"}, {"allocation", "owl"}, {"owl_lambda", "0.08"}});
  REQUIRE(run_pass(*pass, m).ok());
  // Per block: achieved sparsity, and the outlier ratio of |w| (above 5x the block's mean |w|).
  std::vector<double> sparsity, outliers;
  int64_t total = 0, nnz = 0;
  for (int64_t l = 0; l < 5; ++l) {
    int64_t n = 0, kept = 0, out = 0;
    double sum = 0;
    std::vector<float> all;
    for (const Tensor& t : m.tensors()) {
      if (t.name.rfind(str_cat("blk.", l, "."), 0) != 0 || !is_block_linear(t.name)) continue;
      const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
      REQUIRE(s != nullptr);
      n += t.numel();
      kept += s->nnz;
      for (float v : base->get(t.name).to_f32()) all.push_back(std::fabs(v)), sum += std::fabs(v);
    }
    for (float v : all) out += v > 5.0 * sum / double(all.size());
    sparsity.push_back(1.0 - double(kept) / double(n));
    outliers.push_back(double(out) / double(all.size()));
    total += n;
    nnz += kept;
  }
  INFO("sparsity per block " << sparsity[0] << " " << sparsity[1] << " " << sparsity[2] << " " << sparsity[3] << " "
                             << sparsity[4]);
  // Each row rounds its zero count: at most half a weight per row of 64 (the narrowest) columns off.
  CHECK(std::fabs(1.0 - double(nnz) / double(total) - 0.5) <= 0.5 / 64);
  const auto [lo, hi] = std::minmax_element(sparsity.begin(), sparsity.end());
  CHECK(*hi - *lo > 0.05);
  CHECK(*hi - *lo <= 2 * 0.08 + 2e-3);
  // The block with the most outliers is pruned least, the one with the fewest most.
  const auto most = std::max_element(outliers.begin(), outliers.end()) - outliers.begin();
  const auto fewest = std::min_element(outliers.begin(), outliers.end()) - outliers.begin();
  CHECK(sparsity[most] == *lo);
  CHECK(sparsity[fewest] == *hi);
  // OWL with N:M or global granularity, or a lambda the target cannot hold, is refused.
  for (auto opts : std::vector<std::map<std::string, std::string>>{
           {{"allocation", "owl"}, {"pattern", "2:4"}},
           {{"allocation", "owl"}, {"granularity", "global"}},
           {{"allocation", "owl"}, {"sparsity", "0.05"}, {"owl_lambda", "0.08"}}}) {
    auto p = configured("prune.wanda", opts);
    auto v = p->validate_options();
    REQUIRE_FALSE(v.ok());
    CHECK(v.error().code == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("SparseGPT joint with 4-bit: Sparse{Quant} values, file smaller than 4-bit dense — quality reported",
          "[prune][heavy]") {
  auto base = load_stories();
  if (!base.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(base.ok());
  CalibOptions co;
  co.file = test::fixture("text/tinyshakespeare.txt");
  co.samples = 32;
  co.ctx = 256;
  auto calib = CalibrationSet::create(*base, co);
  REQUIRE(calib.ok());
  auto sparsegpt = [&](std::map<std::string, std::string> opts) {
    Model m = *base;
    auto pass = configured("prune.sparsegpt", std::move(opts));
    PassContext ctx;
    ctx.calib = calib->get();
    ctx.threads = 1;
    REQUIRE(pass->validate_options().ok());
    REQUIRE(pass->run(m, ctx).ok());
    return m;
  };
  const Model joint = sparsegpt({{"sparsity", "0.5"}, {"bits", "4"}, {"group_size", "32"}});
  // Prune, then round the kept values to the same 4-bit groups (no compensation of rounding).
  Model separate = sparsegpt({{"sparsity", "0.5"}});
  QuantSpec q4;
  q4.bits = 4;
  q4.group_size = 32;
  for (const Tensor& t : separate.tensors()) {
    const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
    if (!s) continue;
    const int64_t stride = s->kept_stride;
    const std::vector<float> kept = Tensor{"values", Shape{{t.rows(), stride}}, s->values}.to_f32();
    SparseEncoding rounded = *s;
    rounded.values =
        std::make_shared<Encoding>(Encoding{quantize_rtn(q4, kept, t.rows(), stride, {}, ScaleSearch{}, nullptr)});
    separate.replace(Tensor{t.name, t.shape, std::make_shared<Encoding>(Encoding{std::move(rounded)})});
  }
  // 4-bit dense of the same tensors (the embedding stays f32 in all three files).
  Model dense4 = *base;
  {
    auto pass = configured("quant.rtn", {{"bits", "4"}, {"group_size", "32"}});
    PassContext ctx;
    ctx.selector.ignore = {"token_embd\\.weight"};
    REQUIRE(ctx.selector.compile().ok());
    REQUIRE(pass->run(dense4, ctx).ok());
  }
  int joint_tensors = 0;
  for (const Tensor& t : joint.tensors()) {
    const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
    if (!s) continue;
    ++joint_tensors;
    const auto* qv = std::get_if<QuantEncoding>(&s->values->node);
    REQUIRE(qv != nullptr);
    CHECK(qv->bits == 4);
    CHECK(1.0 - double(s->nnz) / double(t.numel()) == Approx(0.5).margin(0.01));
  }
  CHECK(joint_tensors == 35);
  test::TempDir dir;
  REQUIRE(write_llmc(joint, dir.path("joint.llmc"), {}).ok());
  REQUIRE(write_llmc(dense4, dir.path("dense4.llmc"), {}).ok());
  auto back = read_llmc(dir.path("joint.llmc"));
  REQUIRE(back.ok());
  test::require_same_tensors(joint, *back);
  const auto joint_bytes = std::filesystem::file_size(dir.path("joint.llmc"));
  const auto dense_bytes = std::filesystem::file_size(dir.path("dense4.llmc"));
  const auto [kld_joint, ratio_joint] = stories_kld(joint, *base);
  const auto [kld_separate, ratio_separate] = stories_kld(separate, *base);
  const auto [kld_dense4, ratio_dense4] = stories_kld(dense4, *base);
  WARN("SparseGPT 50% + 4-bit joint: KLD "
       << kld_joint << ", PPL ratio " << ratio_joint << ", " << joint_bytes << " bytes; prune then round: KLD "
       << kld_separate << ", PPL ratio " << ratio_separate << "; 4-bit dense RTN: KLD " << kld_dense4 << ", PPL ratio "
       << ratio_dense4 << ", " << dense_bytes << " bytes");
  CHECK(joint_bytes < dense_bytes);
  // On stories260K the pruning error dominates: joint and prune-then-round differ by less than the
  // evaluation noise (KLD 1.916 vs 1.911), so only reported here; the joint sweep's lower layer
  // output error is asserted in test_sparsegpt_math.cpp.
}
