// quant.mixed: candidate grammar and byte counts, the budget solver against exhaustive search, and
// on stories260K the bpw budget, the impossible-target error and quality against uniform allocations.
#include <catch2/catch.hpp>
#include <random>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/describe.h"
#include "model/tokenizer.h"
#include "passes/quant/quant_methods.h"
#include "passes/quant/quant_mixed.h"
#include "pipeline/calibration.h"
#include "pipeline/pass_options.h"
#include "runtime/runtime.h"
#include "test_util.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

Model load_stories() {
  const std::string bin = llmc::test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = llmc::test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return {};
  LoadOptions opt;
  opt.tokenizer_path = tok;
  auto model = load_model(bin, opt);
  REQUIRE(model.ok());
  return std::move(model).value();
}

std::unique_ptr<Pass> mixed_pass(const nlohmann::ordered_json& options) {
  auto pass = make_pass("quant.mixed");
  REQUIRE(pass.ok());
  const auto err = set_options_from_json(**pass, options);
  INFO((err ? err->key + ": " + err->message : std::string()));
  REQUIRE(!err);
  REQUIRE((*pass)->validate_options().ok());
  return std::move(pass).value();
}

// Self-sampled calibration (never the eval text).
std::unique_ptr<CalibrationSet> self_calibration(const Model& model) {
  CalibOptions opt;
  opt.self_samples = 8;
  opt.samples = 8;
  opt.ctx = 128;
  opt.seed = 1;
  auto calib = CalibrationSet::create(model, opt);
  REQUIRE(calib.ok());
  return std::move(calib).value();
}

struct Quality {
  double bpw = 0;
  double kld = 0;
  double same_top = 0;
};

// Mean KLD / top-1 agreement vs the fp32 model on tinystories-sample.txt, ctx 256, first 10 chunks.
Quality evaluate(const Model& quantized, const Model& reference) {
  auto text = read_text_file(llmc::test::fixture("text/tinystories-sample.txt"));
  REQUIRE(text.ok());
  auto tokenizer = Tokenizer::create(reference.tokenizer);
  REQUIRE(tokenizer.ok());
  RuntimeOptions ropt;
  ropt.max_context = 256;
  auto q = Runtime::create(quantized, ropt);
  auto r = Runtime::create(reference, ropt);
  REQUIRE(q.ok());
  REQUIRE(r.ok());
  EvalOptions opt;
  opt.ctx = 256;
  opt.max_chunks = 10;
  auto e = evaluate_text(**q, r->get(), **tokenizer, *text, opt);
  REQUIRE(e.ok());
  REQUIRE(e->kld.has_value());
  return {summarize_size(quantized).bits_per_weight(), e->kld->kld.mean, e->kld->same_top.mean};
}

}  // namespace

TEST_CASE("mixed candidates: grammar, defaults, errors", "[mixed]") {
  QuantSpec defaults;  // q4 asym g32 f16
  auto c = parse_mixed_candidate("q3g64-u8", defaults);
  REQUIRE(c.ok());
  CHECK_FALSE(c->keep);
  CHECK(c->spec.bits == 3);
  CHECK(c->spec.group_size == 64);
  CHECK(c->spec.scheme == QuantScheme::kAsymmetric);
  CHECK(c->spec.scale_dtype == DType::kU8);
  c = parse_mixed_candidate("q8row-sym", defaults);
  REQUIRE(c.ok());
  CHECK(c->spec.bits == 8);
  CHECK(c->spec.group_size == 0);
  CHECK(c->spec.scheme == QuantScheme::kSymmetric);
  c = parse_mixed_candidate("q2-ternary-t5", defaults);
  REQUIRE(c.ok());
  CHECK(c->spec.scheme == QuantScheme::kTernary);
  CHECK(c->spec.trits5);
  CHECK(c->spec.group_size == 32);
  c = parse_mixed_candidate("f16", defaults);
  REQUIRE(c.ok());
  CHECK(c->keep);
  CHECK(c->keep_dtype == DType::kF16);
  for (const char* bad : {"", "x4", "q", "q9g32", "q4g0", "q4g", "q4g32-foo", "q4gx", "q3-ternary"}) {
    INFO(bad);
    auto r = parse_mixed_candidate(bad, defaults);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("mixed candidates: bytes follow the Quant layout of encoding.h", "[mixed]") {
  QuantSpec defaults;
  // [64, 172] q4 asym g32 f16: per row ceil(172*4/8) = 86 code bytes + 6 groups x (2 + 2) bytes.
  auto c = parse_mixed_candidate("q4g32", defaults);
  REQUIRE(c.ok());
  CHECK(mixed_candidate_bytes(*c, 64, 172) == 64 * (86 + 6 * 4));
  // q3 sym row f32: ceil(172*3/8) = 65 code bytes + one f32 scale, no mins.
  c = parse_mixed_candidate("q3row-sym-f32", defaults);
  REQUIRE(c.ok());
  CHECK(mixed_candidate_bytes(*c, 64, 172) == 64 * (65 + 4));
  c = parse_mixed_candidate("bf16", defaults);
  REQUIRE(c.ok());
  CHECK(mixed_candidate_bytes(*c, 64, 172) == 64 * 172 * 2);
}

TEST_CASE("mixed allocation equals exhaustive search", "[mixed]") {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> bytes_dist(10, 400);
  std::uniform_real_distribution<double> loss_dist(0.0, 1.0);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 5, k = 4;
    std::vector<AllocationItem> items(n);
    for (auto& it : items)
      for (int j = 0; j < k; ++j) {
        it.bytes.push_back(static_cast<uint64_t>(bytes_dist(rng)));
        it.loss.push_back(loss_dist(rng));
      }
    const uint64_t budget = 200 + static_cast<uint64_t>(trial) * 30;
    // Exhaustive: all k^n choices.
    double best = std::numeric_limits<double>::infinity();
    for (int code = 0; code < 1024; ++code) {
      uint64_t b = 0;
      double l = 0;
      for (int i = 0, x = code; i < n; ++i, x /= k) {
        b += items[i].bytes[x % k];
        l += items[i].loss[x % k];
      }
      if (b <= budget) best = std::min(best, l);
    }
    auto got = allocate_budget(items, budget, 1 << 20);  // unit = 1 byte: exact
    if (!std::isfinite(best)) {
      CHECK_FALSE(got.ok());
      continue;
    }
    REQUIRE(got.ok());
    uint64_t b = 0;
    double l = 0;
    for (int i = 0; i < n; ++i) {
      b += items[i].bytes[(*got)[i]];
      l += items[i].loss[(*got)[i]];
    }
    CHECK(b <= budget);
    CHECK(l == Approx(best).epsilon(1e-12));
    // Coarse units stay within budget (never better than the optimum).
    auto coarse = allocate_budget(items, budget, 16);
    if (coarse.ok()) {
      uint64_t cb = 0;
      double cl = 0;
      for (int i = 0; i < n; ++i) {
        cb += items[i].bytes[(*coarse)[i]];
        cl += items[i].loss[(*coarse)[i]];
      }
      CHECK(cb <= budget);
      CHECK(cl >= best - 1e-12);
    }
  }
}

TEST_CASE("quant.mixed: bad options and an unreachable target", "[mixed]") {
  auto pass = make_pass("quant.mixed");
  REQUIRE(pass.ok());
  CHECK_FALSE((*pass)->validate_options().ok());  // target_bpw is required
  CHECK_FALSE(set_options_from_json(**pass, {{"target_bpw", 4.0}, {"candidates", {"q9g32"}}}));
  CHECK((*pass)->validate_options().error().code == ErrorCode::kInvalidArgument);

  Model model = load_stories();
  if (model.tensors().empty()) return;
  // q2 asym g32 f16 on widths 64/172 needs more than 2 bits: 1.5 is unreachable.
  auto p = mixed_pass({{"target_bpw", 1.5}, {"candidates", {"q2g32", "q4g32"}}, {"probe", "none"}});
  PassContext ctx;
  const Model before = model;
  auto r = p->run(model, ctx);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK_THAT(r.error().message, Catch::Contains("minimum reachable"));
  llmc::test::require_same_tensors(before, model);  // nothing changed
}

TEST_CASE("quant.mixed: effective bpw stays at or below the target — allocation in the report", "[mixed]") {
  Model model = load_stories();
  if (model.tensors().empty()) return;
  for (double target : {3.0, 3.5, 4.6}) {
    Model m = model;
    auto p = mixed_pass({{"target_bpw", target}, {"probe", "none"}});
    PassContext ctx;
    auto r = p->run(m, ctx);
    REQUIRE(r.ok());
    const double bpw = summarize_size(m).bits_per_weight();
    CHECK(bpw <= target);
    CHECK(bpw > target - 0.5);  // the budget is used, not wasted
    const auto& alloc = r->details["allocation"];
    CHECK(alloc.size() == 5 * 7 + 1);  // 7 linears per block + the tied embedding/classifier
    for (const Tensor& t : m.tensors())
      if (alloc.contains(t.name))
        CHECK(alloc[t.name]["bytes"].get<uint64_t>() == t.encoded_bytes());  // reported = stored
  }
}

TEST_CASE("quant.mixed: target 3.5 beats uniform 3- and 4-bit on the quality-size line (stories260K)",
          "[mixed][heavy]") {
  const Model model = load_stories();
  if (model.tensors().empty()) return;
  auto calib = self_calibration(model);
  auto run = [&](const nlohmann::ordered_json& options) {
    Model m = model;
    auto p = mixed_pass(options);
    PassContext ctx;
    ctx.calib = calib.get();
    auto r = p->run(m, ctx);
    REQUIRE(r.ok());
    return evaluate(m, model);
  };
  // Uniform allocations: one candidate each, so the pass reduces to plain RTN at that spec.
  const Quality q3 = run({{"target_bpw", 8.0}, {"candidates", {"q3g32"}}, {"probe", "none"}});
  const Quality q4 = run({{"target_bpw", 8.0}, {"candidates", {"q4g32"}}, {"probe", "none"}});
  const Quality mixed = run({{"target_bpw", 3.5}, {"probe_tokens", 256}});
  INFO("q3 " << q3.bpw << " bpw KLD " << q3.kld << "; q4 " << q4.bpw << " bpw KLD " << q4.kld << "; mixed " << mixed.bpw
             << " bpw KLD " << mixed.kld);
  CHECK(mixed.bpw <= 3.5);
  CHECK(mixed.bpw <= q3.bpw);
  // Measured (bench_quant_quality, same settings): q3g32 4.03 bpw KLD 1.05, q4g32 5.03 bpw 0.23,
  // mixed 3.50 bpw 1.27 — below the line (1.49 there) but not below uniform 3-bit's KLD itself.
  // Below the straight line through (bpw, KLD) of uniform 3 and 4 bits.
  const double line = q3.kld + (q4.kld - q3.kld) * (mixed.bpw - q3.bpw) / (q4.bpw - q3.bpw);
  CHECK(mixed.kld < line);
}
