// Quality-size table of quantization settings: each JSON argument is one setting (a pass and its
// options, or a list of such stages applied in order); prints bpw, mean KLD, top-1 agreement and
// PPL against the unquantized model. Not a test: it prints figures and asserts nothing.
// Usage: bench_quant_quality MODEL [--tokenizer FILE] --text FILE [--ctx 256] [--chunks 0]
//          [--calib-self N | --calib FILE] [--calib-samples N] [--calib-ctx L] [--threads N] SETTING...
//   SETTING e.g. '{"pass":"quant.mixed","target_bpw":4.6,"method":"gptq"}'
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/describe.h"
#include "model/tokenizer.h"
#include "pipeline/calibration.h"
#include "pipeline/pass_options.h"
#include "runtime/runtime.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "bench_quant_quality: %s\n", what.c_str());
  return 1;
}

Result<nlohmann::json> apply_stage(Model& model, const nlohmann::ordered_json& stage, CalibrationSet* calib,
                                   int threads) {
  if (!stage.is_object() || !stage.contains("pass") || !stage["pass"].is_string())
    return make_error(ErrorCode::kInvalidArgument, "a stage is an object with \"pass\"");
  LLMC_ASSIGN_OR_RETURN(auto pass, make_pass(stage["pass"].get<std::string>()));
  nlohmann::ordered_json options = stage;
  options.erase("pass");
  if (auto err = set_options_from_json(*pass, options))
    return make_error(ErrorCode::kInvalidArgument, err->key, ": ", err->message);
  LLMC_TRY(pass->validate_options());
  PassContext ctx;
  ctx.threads = threads;
  if (pass->needs().calibration) {
    if (!calib) return make_error(ErrorCode::kInvalidArgument, stage["pass"], " needs --calib-self or --calib");
    ctx.calib = calib;
  }
  LLMC_ASSIGN_OR_RETURN(PassReport report, pass->run(model, ctx));
  return report.details;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, tokenizer, text_path;
  CalibOptions copt;
  copt.samples = 32;
  copt.ctx = 256;
  int64_t ctx = 256, chunks = 0;
  int threads = 0;
  std::vector<std::string> settings;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--tokenizer")
      tokenizer = next();
    else if (a == "--text")
      text_path = next();
    else if (a == "--ctx")
      ctx = std::atoll(next().c_str());
    else if (a == "--chunks")
      chunks = std::atoll(next().c_str());
    else if (a == "--calib-self")
      copt.self_samples = std::atoll(next().c_str());
    else if (a == "--calib")
      copt.file = next();
    else if (a == "--calib-samples")
      copt.samples = std::atoll(next().c_str());
    else if (a == "--calib-ctx")
      copt.ctx = std::atoll(next().c_str());
    else if (a == "--threads")
      threads = std::atoi(next().c_str());
    else if (model_path.empty())
      model_path = a;
    else
      settings.push_back(a);
  }
  if (model_path.empty() || text_path.empty() || settings.empty())
    return fail("usage: bench_quant_quality MODEL [--tokenizer FILE] --text FILE SETTING...");
  LoadOptions lopt;
  lopt.tokenizer_path = tokenizer;
  auto base = load_model(model_path, lopt);
  if (!base.ok()) return fail(base.error().message);
  auto tok = Tokenizer::create(base->tokenizer);
  if (!tok.ok()) return fail(tok.error().message);
  auto text = read_text_file(text_path);
  if (!text.ok()) return fail(text.error().message);
  std::unique_ptr<CalibrationSet> calib;
  if (copt.self_samples > 0 || !copt.file.empty()) {
    if (copt.self_samples > 0) copt.samples = copt.self_samples;
    auto c = CalibrationSet::create(*base, copt);
    if (!c.ok()) return fail(c.error().message);
    calib = std::move(c).value();
  }
  RuntimeOptions ropt;
  ropt.max_context = ctx;
  ropt.threads = threads;
  EvalOptions eopt;
  eopt.ctx = ctx;
  eopt.max_chunks = chunks;
  std::printf("| setting | bpw | mean KLD | top-1 %% | PPL | quant s |\n| --- | --- | --- | --- | --- | --- |\n");
  for (const std::string& s : settings) {
    nlohmann::ordered_json setting;
    try {
      setting = nlohmann::ordered_json::parse(s);
    } catch (const std::exception& e) {
      return fail(std::string("bad JSON setting: ") + e.what());
    }
    const nlohmann::ordered_json stages = setting.is_array() ? setting : nlohmann::ordered_json::array({setting});
    Model m = *base;
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& stage : stages) {
      auto r = apply_stage(m, stage, calib.get(), threads);
      if (!r.ok()) return fail(s + ": " + r.error().message);
      if (std::getenv("BENCH_DETAILS")) std::fprintf(stderr, "%s\n", r->dump(1).c_str());
    }
    const double qs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto q = Runtime::create(m, ropt);
    auto ref = Runtime::create(*base, ropt);
    if (!q.ok() || !ref.ok()) return fail("runtime");
    auto e = evaluate_text(**q, ref->get(), **tok, *text, eopt);
    if (!e.ok()) return fail(e.error().message);
    std::printf("| `%s` | %.3f | %.4f | %.2f | %.3f | %.1f |\n", s.c_str(), summarize_size(m).bits_per_weight(),
                e->kld->kld.mean, 100.0 * e->kld->same_top.mean, e->ppl.ppl, qs);
    std::fflush(stdout);
  }
  return 0;
}
