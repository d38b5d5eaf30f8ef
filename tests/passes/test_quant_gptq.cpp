// quant.gptq and quant.awq: the GPTQ core on random problems (output error below RTN's, decode
// exactness for every spec, thread independence) and on real models (KLD below RTN's vs fp32).
#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/tokenizer.h"
#include "passes/quant/quant_gptq.h"
#include "pipeline/calibration.h"
#include "quant_test_util.h"
#include "replay_runtime.h"
#include "runtime/runtime.h"
#include "test_util.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

// A layer's input with correlated, unevenly scaled columns (as real activations): X = Z A D.
struct RandomProblem {
  int64_t rows, cols, n;
  std::vector<float> w;     // [rows, cols]
  std::vector<float> x;     // [n, cols]
  std::vector<double> xtx;  // [cols, cols]
};

RandomProblem random_problem(int64_t rows, int64_t cols, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RandomProblem p{rows, cols, n, {}, {}, {}};
  p.w.resize(rows * cols);
  for (float& v : p.w) v = 0.05f * normal(rng);
  const int64_t k = cols / 2;
  std::vector<float> a(k * cols), z(n * k), d(cols);
  for (float& v : a) v = normal(rng);
  for (float& v : z) v = normal(rng);
  for (int64_t c = 0; c < cols; ++c) d[c] = std::exp(0.8f * normal(rng));
  p.x.assign(n * cols, 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t c = 0; c < cols; ++c)
        p.x[i * cols + c] += z[i * k + j] * a[j * cols + c] * d[c] / std::sqrt(float(k));
  p.xtx.assign(cols * cols, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < cols; ++r)
      for (int64_t c = 0; c < cols; ++c) p.xtx[r * cols + c] += double(p.x[i * cols + r]) * p.x[i * cols + c];
  return p;
}

// ‖(W - Q) Xᵀ‖²
double output_error(const RandomProblem& p, const std::vector<float>& q) {
  double sum = 0;
  for (int64_t i = 0; i < p.n; ++i)
    for (int64_t r = 0; r < p.rows; ++r) {
      double y = 0;
      for (int64_t c = 0; c < p.cols; ++c) y += (double(p.w[r * p.cols + c]) - q[r * p.cols + c]) * p.x[i * p.cols + c];
      sum += y * y;
    }
  return sum;
}

std::vector<float> decode(const QuantEncoding& q, int64_t rows, int64_t cols) {
  Encoding enc{q};
  std::vector<float> out(rows * cols);
  decode_rows_to_f32(enc, Shape{{rows, cols}}, 0, rows, out.data());
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool same_bytes(const Bytes& a, const Bytes& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

QuantSpec spec_of(int bits, QuantScheme scheme, int64_t group) {
  QuantSpec s;
  s.bits = bits;
  s.scheme = scheme;
  s.group_size = group;
  return s;
}

}  // namespace

TEST_CASE("GPTQ core: output error below RTN's at 2..4 bits, with and without act_order", "[gptq]") {
  const RandomProblem p = random_problem(40, 96, 384, 11);
  for (bool act_order : {false, true})
    for (int bits : {2, 3, 4})
      for (QuantScheme scheme : {QuantScheme::kSymmetric, QuantScheme::kAsymmetric})
        for (int64_t group : {int64_t{32}, int64_t{0}}) {
          const QuantSpec spec = spec_of(bits, scheme, group);
          GptqOptions opt;
          opt.act_order = act_order;
          opt.block_size = 40;  // not a multiple of the group: blocks are rounded to whole groups
          auto h = prepare_gptq_hessian(p.xtx, p.cols, p.n, {}, opt);
          REQUIRE(h.ok());
          const GptqTensorResult g = gptq_quantize(spec, p.w, p.rows, p.cols, **h, {}, opt, 2);
          std::vector<float> rtn;
          quantize_rtn(spec, p.w, p.rows, p.cols, {}, {}, &rtn);
          INFO(describe_quant_spec(spec) << " act_order " << act_order);
          CHECK(output_error(p, g.dequant) < 0.9 * output_error(p, rtn));
          CHECK(same_bits(decode(g.encoding, p.rows, p.cols), g.dequant));
        }
}

TEST_CASE("GPTQ core: decode equals the pass's values for every scheme, width and group", "[gptq]") {
  const RandomProblem p = random_problem(9, 172, 200, 5);  // 172: ragged groups
  std::vector<QuantSpec> specs;
  for (int bits = 2; bits <= 8; ++bits)
    for (QuantScheme scheme : {QuantScheme::kSymmetric, QuantScheme::kAsymmetric})
      for (int64_t group : {int64_t{32}, int64_t{64}, int64_t{128}, int64_t{0}})
        specs.push_back(spec_of(bits, scheme, group));
  specs.push_back(spec_of(1, QuantScheme::kBinary, 32));
  QuantSpec two_level = spec_of(1, QuantScheme::kBinary, 64);
  two_level.binary_two_level = true;
  specs.push_back(two_level);
  specs.push_back(spec_of(2, QuantScheme::kTernary, 32));
  QuantSpec trits = spec_of(2, QuantScheme::kTernary, 0);
  trits.trits5 = true;
  specs.push_back(trits);
  QuantSpec u8 = spec_of(4, QuantScheme::kAsymmetric, 32);
  u8.scale_dtype = DType::kU8;
  u8.scale_block = 16;
  specs.push_back(u8);
  for (const QuantSpec& spec : specs)
    for (bool act_order : {false, true}) {
      INFO(describe_quant_spec(spec) << " act_order " << act_order);
      REQUIRE(validate_quant_spec(spec).ok());
      GptqOptions opt;
      opt.act_order = act_order;
      opt.importance = true;
      auto h = prepare_gptq_hessian(p.xtx, p.cols, p.n, {}, opt);
      REQUIRE(h.ok());
      const GptqTensorResult g = gptq_quantize(spec, p.w, p.rows, p.cols, **h, {}, opt, 1);
      REQUIRE(validate_encoding(Encoding{g.encoding}, Shape{{p.rows, p.cols}}).ok());
      CHECK(same_bits(decode(g.encoding, p.rows, p.cols), g.dequant));
      CHECK(std::isfinite(g.loss));
    }
}

TEST_CASE("GPTQ core: same result on 1 and 2 threads — dead inputs zero their weights", "[gptq]") {
  RandomProblem p = random_problem(50, 64, 128, 3);
  for (int64_t c = 0; c < p.cols; ++c) p.xtx[7 * p.cols + c] = p.xtx[c * p.cols + 7] = 0;  // input 7 never fires
  const QuantSpec spec = spec_of(3, QuantScheme::kSymmetric, 32);
  GptqOptions opt;
  auto h = prepare_gptq_hessian(p.xtx, p.cols, p.n, {}, opt);
  REQUIRE(h.ok());
  CHECK((*h)->dead[7] == 1);
  const GptqTensorResult one = gptq_quantize(spec, p.w, p.rows, p.cols, **h, {}, opt, 1);
  const GptqTensorResult two = gptq_quantize(spec, p.w, p.rows, p.cols, **h, {}, opt, 2);
  CHECK(same_bits(one.dequant, two.dequant));
  CHECK(same_bytes(one.encoding.codes, two.encoding.codes));
  CHECK(same_bytes(one.encoding.scales, two.encoding.scales));
  for (int64_t r = 0; r < p.rows; ++r) CHECK(one.dequant[r * p.cols + 7] == 0.0f);  // symmetric: 0 is a level
}

TEST_CASE("GPTQ core: a singular Hessian is damped, an impossible one is an error", "[gptq]") {
  const int64_t cols = 8;
  std::vector<double> rank_one(cols * cols, 1.0);  // x = (1, ..., 1) only: singular without damping
  GptqOptions opt;
  opt.damp = 0;
  auto h = prepare_gptq_hessian(rank_one, cols, 1, {}, opt);
  REQUIRE(h.ok());
  CHECK((*h)->damp_used > 0);
  std::vector<double> indefinite(cols * cols, 0.0);
  for (int64_t i = 0; i < cols; ++i) indefinite[i * cols + i] = 1;
  indefinite[1] = indefinite[cols] = 1e6;  // |H_01| far above H_00, H_11
  CHECK_FALSE(prepare_gptq_hessian(indefinite, cols, 1, {}, opt).ok());
  CHECK_FALSE(prepare_gptq_hessian(std::vector<double>(5), cols, 1, {}, opt).ok());
}

// ---- stories260K ----

namespace {

using test::load_stories;
using test::Stories;

// KLD on the first 20 chunks of issue 4's protocol, one thread.
KldResult eval_kld(const Model& q, const Model& ref, const Tokenizer& tokenizer) {
  return test::stories_kld(q, ref, tokenizer, 20, 1);
}

// Calibration from Tiny Shakespeare (never the evaluation text).
std::unique_ptr<CalibrationSet> shakespeare_calib(const Model& model, int64_t samples, int64_t ctx) {
  CalibOptions c;
  c.file = llmc::test::fixture("text/tinyshakespeare.txt");
  c.samples = samples;
  c.ctx = ctx;
  c.seed = 1;
  auto calib = CalibrationSet::create(model, c);
  REQUIRE(calib.ok());
  return std::move(calib).value();
}

// kGptqBlockwise: GptqOptions::true_sequential off (the whole block calibrated before any change).
enum class Method { kRtn, kGptq, kGptqBlockwise, kAwq };

Model quantize_copy(const Model& base, CalibrationSet& calib, Method method, const QuantSpec& spec, int threads) {
  Model m = base;
  PassContext ctx;
  ctx.calib = &calib;
  ctx.threads = threads;
  REQUIRE(ctx.selector.compile().ok());
  const SpecFor spec_for = [spec](const std::string&) { return std::optional<QuantSpec>(spec); };
  Result<nlohmann::json> r = nlohmann::json();
  switch (method) {
    case Method::kRtn: r = quantize_model_rtn(m, ctx, spec_for, {}, false); break;
    case Method::kGptq: r = quantize_model_gptq(m, ctx, spec_for, {}, GptqOptions{}); break;
    case Method::kGptqBlockwise:
      r = quantize_model_gptq(m, ctx, spec_for, {}, GptqOptions{.true_sequential = false});
      break;
    case Method::kAwq: r = quantize_model_awq(m, ctx, spec_for, {}, AwqOptions{}, GptqOptions{}); break;
  }
  INFO((r.ok() ? "" : r.error().message));
  REQUIRE(r.ok());
  return m;
}

}  // namespace

// [heavy]: real-model quality through the runtime; 37 s optimized but 18-24 min in the ASan Debug build,
// whose unit phase waited on it alone (sanitizer coverage of GPTQ/AWQ stays in the thread-independence tests).
TEST_CASE("stories260K: GPTQ has lower KLD than RTN at 3 and 4 bits — AWQ is not worse", "[gptq][awq][heavy]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  auto calib = shakespeare_calib(s.model, 32, 256);
  for (int bits : {4, 3}) {
    const QuantSpec spec = spec_of(bits, QuantScheme::kAsymmetric, 32);
    const KldResult rtn = eval_kld(quantize_copy(s.model, *calib, Method::kRtn, spec, 1), s.model, *s.tokenizer);
    const KldResult gptq = eval_kld(quantize_copy(s.model, *calib, Method::kGptq, spec, 1), s.model, *s.tokenizer);
    const KldResult blockwise =
        eval_kld(quantize_copy(s.model, *calib, Method::kGptqBlockwise, spec, 1), s.model, *s.tokenizer);
    const KldResult awq = eval_kld(quantize_copy(s.model, *calib, Method::kAwq, spec, 1), s.model, *s.tokenizer);
    INFO(bits << "-bit: KLD rtn " << rtn.kld.mean << " gptq " << gptq.kld.mean << " gptq blockwise "
              << blockwise.kld.mean << " awq " << awq.kld.mean);
    CHECK(gptq.kld.mean < rtn.kld.mean);
    CHECK(gptq.same_top.mean > rtn.same_top.mean);
    CHECK(blockwise.kld.mean < rtn.kld.mean);
    CHECK(blockwise.kld.mean != gptq.kld.mean);  // the two calibrations differ
    CHECK(awq.kld.mean <= rtn.kld.mean);
  }
}

TEST_CASE("stories260K: GPTQ and AWQ give identical tensors on 1 and 2 threads", "[gptq][awq]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  CalibOptions c;
  c.self_samples = 8;  // --calib-self: sequences sampled from the model
  c.samples = 8;
  c.ctx = 128;
  c.seed = 3;
  auto calib = CalibrationSet::create(s.model, c);
  REQUIRE(calib.ok());
  const QuantSpec spec = spec_of(3, QuantScheme::kAsymmetric, 32);
  for (Method method : {Method::kGptq, Method::kGptqBlockwise, Method::kAwq}) {
    const Model one = quantize_copy(s.model, **calib, method, spec, 1);
    const Model two = quantize_copy(s.model, **calib, method, spec, 2);
    llmc::test::require_same_tensors(one, two);
    for (const Tensor& t : one.tensors())
      if (t.shape.dims.size() == 2) CHECK(std::holds_alternative<QuantEncoding>(t.encoding->node));
  }
}

TEST_CASE("quant.gptq/quant.awq: without calibration data they refuse", "[gptq][awq]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  PassContext ctx;
  const SpecFor spec_for = [](const std::string&) { return std::optional<QuantSpec>(QuantSpec{}); };
  auto g = quantize_model_gptq(s.model, ctx, spec_for, {}, GptqOptions{});
  REQUIRE_FALSE(g.ok());
  CHECK(g.error().code == ErrorCode::kInvalidArgument);
  AwqOptions bad;
  bad.then = "magic";
  CHECK_FALSE(quantize_model_awq(s.model, ctx, spec_for, {}, bad, GptqOptions{}).ok());
}

// ---- SmolLM2-135M (heavy) ----

// The GGUF is Q4_1 (asymmetric 4-bit, groups of 32): its weights already lie on that grid, so 4-bit
// g32 RTN reproduces them exactly and GPTQ has nothing to compensate. Groups of 128 are a real test.
// CI uses 4 chunks and 8 x 256 calibration tokens. At 3 bits g128 with this calibration GPTQ is
// worse than RTN on SmolLM2 (KLD 3.62 vs 3.43, both unusable): not asserted, an open problem.
TEST_CASE("SmolLM2: GPTQ has lower KLD than RTN at 4 bits g128 on wikitext2", "[gptq][heavy]") {
  const std::string path = llmc::test::smollm2_path();
  if (path.empty()) return;
  auto base = load_model(path);
  REQUIRE(base.ok());
  auto tokenizer = Tokenizer::create(base->tokenizer);
  REQUIRE(tokenizer.ok());
  auto calib = shakespeare_calib(*base, 8, 256);
  auto text = read_text_file(llmc::test::fixture("text/wikitext2-test.txt"));
  REQUIRE(text.ok());
  RuntimeOptions ropt;
  ropt.max_context = 512;
  auto rr = Runtime::create(*base, ropt);
  REQUIRE(rr.ok());
  llmc::test::ReplayRuntime ref(std::move(rr).value());  // the reference's logits computed once
  auto kld = [&](const Model& q) {
    auto rq = Runtime::create(q, ropt);
    REQUIRE(rq.ok());
    EvalOptions opt;
    opt.ctx = 512;
    opt.max_chunks = 4;
    auto r = evaluate_text(**rq, ref.pass(), **tokenizer, *text, opt);
    REQUIRE(r.ok());
    return r->kld->kld.mean;
  };
  for (int bits : {4}) {
    const QuantSpec spec = spec_of(bits, QuantScheme::kAsymmetric, 128);
    const double rtn = kld(quantize_copy(*base, *calib, Method::kRtn, spec, 0));
    const double gptq = kld(quantize_copy(*base, *calib, Method::kGptq, spec, 0));
    INFO(bits << "-bit g128: KLD rtn " << rtn << " gptq " << gptq);
    CHECK(gptq < rtn);
  }
}

TEST_CASE("quant.gptq/quant.awq passes: registered, options declared once, bad values refused", "[gptq][awq]") {
  struct Case {
    const char* pass;
    std::map<std::string, std::string> options;
    bool ok;
  };
  const Case cases[] = {
      {"quant.gptq", {{"bits", "3"}, {"group_size", "64"}, {"damp", "0.05"}, {"act_order", "true"}}, true},
      {"quant.gptq", {{"bits", "9"}}, false},
      {"quant.gptq", {{"damp", "1.5"}}, false},
      {"quant.gptq", {{"block_size", "0"}}, false},
      {"quant.awq", {{"then", "gptq"}, {"grid", "10"}, {"max_samples", "512"}}, true},
      {"quant.awq", {{"then", "magic"}}, false},
      {"quant.awq", {{"grid", "0"}}, false},
      {"quant.awq", {{"group_size", "-1"}}, false},
  };
  for (const Case& c : cases) {
    INFO(c.pass);
    auto pass = make_pass(c.pass);
    REQUIRE(pass.ok());
    CHECK((*pass)->needs().calibration);
    llmc::test::SetOptions set(c.options);
    (*pass)->visit(set);
    CHECK(set.unused().empty());
    CHECK((*pass)->validate_options().ok() == c.ok);
  }
}
