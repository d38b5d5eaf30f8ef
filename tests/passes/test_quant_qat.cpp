// quant.qat: quantization-aware distillation keeps every tensor's encoding and size, is
// thread-count independent, refuses what it cannot train, and brings stories260K at 4.6 bits per
// weight to issue 4's quality target on the evaluation text (which it never sees: it trains on
// sequences sampled from the model).
#include <catch2/catch.hpp>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/describe.h"
#include "model/tokenizer.h"
#include "passes/pass.h"
#include "passes/quant/quant_qat_train.h"
#include "pipeline/calibration.h"
#include "pipeline/pass_options.h"
#include "quant_test_util.h"
#include "runtime/runtime.h"
#include "test_util.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

using test::load_stories;
using test::Stories;

std::unique_ptr<CalibrationSet> self_calib(const Model& model, int64_t samples, int64_t ctx) {
  CalibOptions c;
  c.self_samples = samples;
  c.samples = samples;
  c.ctx = ctx;
  c.seed = 5;
  auto calib = CalibrationSet::create(model, c);
  REQUIRE(calib.ok());
  return std::move(calib).value();
}

// Runs pass `name` with options on `model` in place; the teacher is `teacher`.
Result<PassReport> run_pass(const std::string& name, std::map<std::string, std::string> options, Model& model,
                            const Model* teacher, CalibrationSet* calib, int threads) {
  auto pass = make_pass(name);
  REQUIRE(pass.ok());
  test::SetOptions set(std::move(options));
  (*pass)->visit(set);
  REQUIRE(set.unused().empty());
  LLMC_TRY((*pass)->validate_options());
  PassContext ctx;
  REQUIRE(ctx.selector.compile().ok());
  ctx.teacher = teacher;
  ctx.calib = calib;
  ctx.threads = threads;
  ctx.seed = 9;
  return (*pass)->run(model, ctx);
}

// All of issue 4's protocol.
KldResult eval_kld(const Model& q, const Model& ref, const Tokenizer& tokenizer) {
  return test::stories_kld(q, ref, tokenizer, 0, 0);
}

const std::map<std::string, std::string> kRtn4{{"bits", "4"}, {"scheme", "asym"}, {"group_size", "32"}};

// `model` quantized with 4-bit RTN (asymmetric, group 32).
Model rtn4(const Model& model, int threads) {
  Model m = model;
  REQUIRE(run_pass("quant.rtn", kRtn4, m, nullptr, nullptr, threads).ok());
  return m;
}

}  // namespace

TEST_CASE("quant.qat: every tensor keeps its encoding and size, and 1 and 2 threads give the same model", "[qat]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  auto calib = self_calib(s.model, 6, 48);
  Model base = rtn4(s.model, 1);
  // Two specs in one model: 3-bit symmetric with u8 scales for the FFN.
  std::map<std::string, std::string> ffn{{"bits", "3"}, {"scheme", "sym"}, {"scale_dtype", "u8"}, {"group_size", "64"}};
  {
    auto pass = make_pass("quant.rtn");
    REQUIRE(pass.ok());
    test::SetOptions set(ffn);
    (*pass)->visit(set);
    PassContext ctx;
    ctx.selector.targets = {"blk\\..*\\.ffn_.*"};
    REQUIRE(ctx.selector.compile().ok());
    Model src = s.model;
    REQUIRE((*pass)->run(src, ctx).ok());
    for (const Tensor& t : src.tensors())
      if (t.name.find("ffn_") != std::string::npos && t.shape.dims.size() == 2) base.replace(t);
  }
  for (const std::string mode : {"model", "block"}) {
    INFO("mode " << mode);
    const std::map<std::string, std::string> qat{{"steps", "20"}, {"batch", "3"}, {"noise", "0.1"}, {"mode", mode}};
    Model one = base, two = base;
    auto r1 = run_pass("quant.qat", qat, one, &s.model, calib.get(), 1);
    INFO((r1.ok() ? "" : r1.error().message));
    REQUIRE(r1.ok());
    CHECK(r1->details["mode"] == mode);
    REQUIRE(run_pass("quant.qat", qat, two, &s.model, calib.get(), 2).ok());
    test::require_same_tensors(one, two);
    int64_t changed = 0;
    for (const Tensor& t : base.tensors()) {
      const Tensor& after = one.get(t.name);
      CHECK(describe_encoding(*after.encoding) == describe_encoding(*t.encoding));
      CHECK(encoded_bytes(*after.encoding) == encoded_bytes(*t.encoding));
      changed += after.to_f32() != t.to_f32();
    }
    if (mode == "model") {
      CHECK(changed == std::ssize(base.tensors()));  // every weight and norm gain trained
      CHECK(r1->details["train_kld_after"].get<double>() < r1->details["train_kld_before"].get<double>());
    } else {
      // The blocks' tensors train, each block towards the teacher's hidden states; the embedding
      // (outside the blocks) is listed as not trained and stays as it was.
      CHECK(changed == std::ssize(base.tensors()) - 2);  // all but token_embd and output_norm
      CHECK(one.get("token_embd.weight").to_f32() == base.get("token_embd.weight").to_f32());
      CHECK(r1->details["not_trained_outside_blocks"] == nlohmann::json::array({"token_embd.weight"}));
      REQUIRE(r1->details["blocks"].size() == static_cast<size_t>(s.model.config.n_layers));
      for (const auto& b : r1->details["blocks"])
        for (const char* half : {"attention", "ffn"}) {
          INFO(b.dump());
          CHECK(b[half]["rel_error_after"].get<double>() < b[half]["rel_error_before"].get<double>());
        }
    }

    // With every step size 0 the re-encoding gives back the input exactly (negative symmetric
    // scales, u8 grids and f16 params included).
    Model still = base;
    REQUIRE(run_pass("quant.qat", {{"steps", "2"}, {"lr", "0"}, {"lr_scales", "0"}, {"lr_norms", "0"}, {"mode", mode}},
                     still, &s.model, calib.get(), 1)
                .ok());
    test::require_same_tensors(still, base);
  }
  // auto: the whole model trains when that takes little memory, as stories260K's does.
  Model auto_mode = base;
  auto r = run_pass("quant.qat", {{"steps", "1"}}, auto_mode, &s.model, calib.get(), 1);
  REQUIRE(r.ok());
  CHECK(r->details["mode"] == "model");
}

// Block mode on its own: stories260K 4-bit RTN (asymmetric, group 32) trained block by block on
// sequences sampled from the model comes much closer to the original on the evaluation text.
TEST_CASE("quant.qat block mode: stories260K 4-bit RTN gets closer to the original on tinystories-sample.txt",
          "[qat]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  auto calib = self_calib(s.model, 32, 128);
  const Model rtn = rtn4(s.model, 2);
  Model qat = rtn;
  auto r = run_pass("quant.qat", {{"steps", "100"}, {"mode", "block"}}, qat, &s.model, calib.get(), 2);
  REQUIRE(r.ok());
  const KldResult before = test::stories_kld(rtn, s.model, *s.tokenizer, 40, 2);
  const KldResult after = test::stories_kld(qat, s.model, *s.tokenizer, 40, 2);
  INFO("mean KLD " << before.kld.mean << " -> " << after.kld.mean << ", top-1 " << before.same_top.mean << " -> "
                   << after.same_top.mean);
  CHECK(after.kld.mean < 0.7 * before.kld.mean);
  CHECK(after.same_top.mean > before.same_top.mean);
}

// A half-block that training made worse on the calibration sequences keeps its input tensors:
// with absurd step sizes every half diverges, and the model comes out as it went in.
TEST_CASE("quant.qat block mode: a half-block that training made worse keeps its input", "[qat]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  auto calib = self_calib(s.model, 4, 32);
  Model base = rtn4(s.model, 1);
  Model m = base;
  auto r =
      run_pass("quant.qat", {{"steps", "3"}, {"mode", "block"}, {"lr", "40"}, {"lr_scales", "20"}, {"lr_norms", "5"}},
               m, &s.model, calib.get(), 2);
  REQUIRE(r.ok());
  for (const auto& b : r->details["blocks"])
    for (const char* half : {"attention", "ffn"}) {
      INFO(b.dump());
      CHECK(b[half]["kept_input"] == true);
      CHECK(b[half]["rel_error_trained"].get<double>() > b[half]["rel_error_before"].get<double>());
      CHECK(b[half]["rel_error_after"].get<double>() == b[half]["rel_error_before"].get<double>());
    }
  test::require_same_tensors(m, base);
}

// Before any step the fake-quantized weights are the stored ones exactly, made by rows (the
// forward products) or by columns (the backward ones), for symmetric and asymmetric codes, u8
// scale grids, ragged groups (stories260K's FFN width 172), binary and ternary.
TEST_CASE("quant.qat: fake quantization by rows and by columns gives the stored weights", "[qat]") {
  Stories s = load_stories();
  const std::vector<std::map<std::string, std::string>> specs = {
      kRtn4,
      {{"bits", "3"}, {"scheme", "sym"}, {"scale_dtype", "u8"}, {"group_size", "64"}},
      {{"bits", "2"}, {"scheme", "asym"}, {"group_size", "32"}},
      {{"scheme", "binary"}, {"group_size", "32"}},
      {{"scheme", "ternary"}, {"group_size", "32"}}};
  for (const auto& spec : specs) {
    Model m = s.model;
    REQUIRE(run_pass("quant.rtn", spec, m, nullptr, nullptr, 1).ok());
    for (const char* name : {"blk.0.ffn_down.weight", "blk.1.attn_q.weight", "blk.2.ffn_up.weight"}) {
      const Tensor& t = m.get(name);
      INFO(name << " " << describe_encoding(*t.encoding));
      const std::vector<float> stored = t.to_f32();
      const QatTensor q = make_qat_tensor(t, stored, 0);
      std::vector<float> rows(stored.size()), cols(stored.size()), by_rows(stored.size());
      fake_quant(q, rows.data());
      CHECK(rows == stored);
      fake_quant_rows(q, 1, q.rows, by_rows.data() + q.cols);  // from row 1 on
      std::copy_n(rows.begin(), q.cols, by_rows.begin());
      CHECK(by_rows == stored);
      for (int64_t c0 = 0; c0 < q.cols; c0 += 7) {  // column blocks across group boundaries
        const int64_t c1 = std::min(q.cols, c0 + 7);
        std::vector<float> block(static_cast<size_t>((c1 - c0) * q.rows));
        fake_quant_cols(q, c0, c1, block.data());
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t r = 0; r < q.rows; ++r) cols[r * q.cols + c] = block[(c - c0) * q.rows + r];
      }
      CHECK(cols == stored);
    }
  }
}

TEST_CASE("quant.qat: refuses bad options, a model with nothing quantized, and a missing teacher", "[qat]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  auto calib = self_calib(s.model, 2, 16);
  Model m = s.model;
  for (const auto& bad : std::vector<std::map<std::string, std::string>>{
           {{"steps", "0"}}, {{"batch", "0"}}, {{"noise", "1"}}, {{"lr", "-1"}}, {{"mode", "layer"}}}) {
    auto r = run_pass("quant.qat", bad, m, &s.model, calib.get(), 1);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
  }
  auto none = run_pass("quant.qat", {}, m, &s.model, calib.get(), 1);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().message.find("quantized") != std::string::npos);
  auto no_teacher = run_pass("quant.qat", {}, m, nullptr, calib.get(), 1);
  REQUIRE_FALSE(no_teacher.ok());
  CHECK(no_teacher.error().code == ErrorCode::kInvalidArgument);
}

// [heavy]: ~2 min. Issue 4's headline on its protocol (all of tinystories-sample.txt, ctx 256, KLD
// vs the f32 model): at most 4.6 bits per weight (scales counted), mean KLD <= 0.058 and top-1
// agreement >= 86.4 %. Mixed precision (symmetric 3..8-bit candidates with f16 or u8 scales,
// importance-weighted RTN with clip search) under a 4.6 budget, then quant.qat; the calibration is
// sampled from the model, never the evaluation text. The recipe is samples/qat-4.6bpw.yaml.
TEST_CASE("stories260K at 4.6 bpw: mixed precision + quant.qat reach KLD 0.058 and 86.4 % top-1", "[qat][heavy]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  CalibOptions c;
  c.self_samples = 256;
  c.samples = 256;
  c.ctx = 256;
  c.seed = 0;
  auto calib = CalibrationSet::create(s.model, c);
  REQUIRE(calib.ok());
  PassContext ctx;
  REQUIRE(ctx.selector.compile().ok());
  ctx.calib = calib->get();
  ctx.teacher = &s.model;
  auto run = [&](const char* name, const nlohmann::ordered_json& options, Model& m) {
    auto pass = make_pass(name);
    REQUIRE(pass.ok());
    const auto bad = set_options_from_json(**pass, options);
    REQUIRE_FALSE(bad.has_value());
    REQUIRE((*pass)->validate_options().ok());
    auto r = (*pass)->run(m, ctx);
    INFO((r.ok() ? "" : r.error().message));
    REQUIRE(r.ok());
    return std::move(r).value();
  };
  Model mixed = s.model;
  run("quant.mixed",
      {{"target_bpw", 4.6},
       {"method", "rtn"},
       {"scheme", "sym"},
       {"clip_search", 10},
       {"importance", true},
       {"candidates",
        {"q3g32-u8", "q4g32-u8", "q4g16-u8", "q4g32", "q4g64-u8", "q5g32-u8", "q5g64-u8", "q6g32-u8", "q8g64-u8",
         "f16"}}},
      mixed);
  Model qat = mixed;
  const PassReport r = run("quant.qat", {{"steps", 400}, {"batch", 4}, {"noise", 0.05}}, qat);
  const double bpw = summarize_size(qat).bits_per_weight();
  CHECK(bpw <= 4.6);
  CHECK(bpw == summarize_size(mixed).bits_per_weight());
  const KldResult before = eval_kld(mixed, s.model, *s.tokenizer);
  const KldResult after = eval_kld(qat, s.model, *s.tokenizer);
  INFO("bpw " << bpw << "; KLD mixed " << before.kld.mean << " -> qat " << after.kld.mean << "; top-1 "
              << before.same_top.mean << " -> " << after.same_top.mean);
  CHECK(after.kld.mean <= 0.058);
  CHECK(after.same_top.mean >= 0.864);
  CHECK(after.kld.mean < 0.6 * before.kld.mean);
  double changed = 0;
  for (const auto& [name, t] : r.details["tensors"].items()) changed += t["codes_changed"].get<double>();
  CHECK(changed > 0);  // the latent weights crossed rounding boundaries, not only scales moved
}
