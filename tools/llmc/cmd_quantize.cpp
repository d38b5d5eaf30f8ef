// llmc quantize: sugar for a one-stage quantization recipe (method/scheme/--target-bpw pick the
// pass; every quantization pass's options are flags generated from its declarations).
#include <map>
#include <set>

#include "cli_util.h"
#include "commands.h"
#include "pass_flags.h"
#include "pipeline/pass_options.h"
#include "recipe_run.h"

namespace llmc::cli {
namespace {

using OJson = nlohmann::ordered_json;

// --method -> pass; --scheme binary/ternary pick their own pass; --target-bpw picks quant.mixed,
// which runs the method per tensor.
const std::map<std::string, const char*> kMethodPass = {
    {"rtn", "quant.rtn"}, {"gptq", "quant.gptq"}, {"awq", "quant.awq"}};
const std::map<std::string, const char*> kSchemePass = {{"binary", "quant.binary"}, {"ternary", "quant.ternary"}};
constexpr const char* kMixedPass = "quant.mixed";
constexpr const char* kQatPass = "quant.qat";  // a second stage with --qat-steps

struct QuantizeArgs {
  RecipeJob job;
  std::string method = "rtn";
  std::string group_size;
  CalibFlags calib;
  uint64_t seed = 0;
  double target_bpw = 0;
  std::vector<std::string> keep;
  int64_t qat_steps = 0;
  double qat_noise = -1;  // < 0: the pass's default
  std::string qat_mode;   // empty: the pass's default
  PassFlags flags;
  CLI::Option* target_bpw_opt = nullptr;
};

bool declares(Pass& pass, const std::string& option) {
  for (const OptionInfo& info : list_options(pass))
    if (info.name == option) return true;
  return false;
}

Result<Recipe> build_recipe(const QuantizeArgs& a) {
  auto bad = [](auto&&... parts) { return make_error(ErrorCode::kInvalidArgument, parts...); };
  OJson options = a.flags.given();
  const std::string scheme = options.contains("scheme") ? options["scheme"].get<std::string>() : "";
  const bool mixed = a.target_bpw_opt->count() > 0;
  std::string pass_name;
  if (mixed) {
    pass_name = kMixedPass;
  } else if (kSchemePass.count(scheme)) {
    pass_name = kSchemePass.at(scheme);
  } else {
    pass_name = kMethodPass.at(a.method);
  }
  auto pass = make_pass(pass_name);
  if (!pass.ok()) return pass.error();

  if (!a.group_size.empty()) {
    if (a.group_size == "row") {
      options["group_size"] = 0;
    } else {
      char* end = nullptr;
      const long long g = std::strtoll(a.group_size.c_str(), &end, 10);
      if (end == a.group_size.c_str() || *end != '\0' || g < 1)
        return bad("--group-size ", a.group_size, ": group size must be >= 1, or 'row' for whole rows");
      options["group_size"] = static_cast<int64_t>(g);
    }
  }
  if (kSchemePass.count(scheme) && !declares(**pass, "scheme")) options.erase("scheme");
  if (mixed) {
    options["target_bpw"] = a.target_bpw;
    if (declares(**pass, "method")) {
      options["method"] = a.method;
    } else if (a.method != "rtn") {
      return bad("--method ", a.method, " cannot be combined with --target-bpw (", kMixedPass,
                 " has no method option)");
    }
  } else if (kSchemePass.count(scheme) && a.method != "rtn") {
    if (!declares(**pass, "method"))
      return bad("--method ", a.method, " does not apply to --scheme ", scheme, " (", pass_name, ")");
    options["method"] = a.method;
  }

  Recipe recipe;
  recipe.source = "command line";
  recipe.seed = a.seed;
  LLMC_ASSIGN_OR_RETURN(recipe.calibration, a.calib.options(a.seed));
  LLMC_ASSIGN_OR_RETURN(RecipeStage st, make_stage(pass_name, options, {}, a.keep));
  recipe.stages.push_back(std::move(st));
  if (a.qat_steps > 0) {
    OJson qat = {{"steps", a.qat_steps}};
    if (a.qat_noise >= 0) qat["noise"] = a.qat_noise;
    if (!a.qat_mode.empty()) qat["mode"] = a.qat_mode;
    LLMC_ASSIGN_OR_RETURN(RecipeStage q, make_stage(kQatPass, qat, {}, a.keep));
    recipe.stages.push_back(std::move(q));
  } else if (a.qat_noise >= 0) {
    return bad("--qat-noise needs --qat-steps");
  } else if (!a.qat_mode.empty()) {
    return bad("--qat-mode needs --qat-steps");
  }
  LLMC_TRY(validate_recipe(recipe, ErrorCode::kInvalidArgument));
  return recipe;
}

int run_quantize(QuantizeArgs& a) {
  auto recipe = build_recipe(a);  // every option checked before the model is loaded
  if (!recipe.ok()) return report_error(recipe.error());
  a.job.command = "quantize";
  return run_recipe_job(a.job, *recipe);
}

}  // namespace

RunFn setup_quantize(CLI::App& sub) {
  auto a = std::make_shared<QuantizeArgs>();
  add_job_options(sub, a->job);
  std::vector<std::string> methods;
  for (const auto& [m, p] : kMethodPass) methods.push_back(m);
  sub.add_option("--method", a->method, "Quantization method: rtn, gptq (needs calibration), awq (needs calibration)")
      ->check(CLI::IsMember(methods));
  sub.add_option("--group-size", a->group_size,
                 "Columns per scale: G >= 1, or 'row' for one scale per row (default 32)");
  a->target_bpw_opt =
      sub.add_option("--target-bpw", a->target_bpw,
                     "Mixed precision: choose bits per tensor so the effective bpw is <= X (quant.mixed)");
  sub.add_option("--keep", a->keep, "Leave tensors matching this regular expression unchanged (repeatable)")
      ->allow_extra_args(false);
  a->calib.add(sub);
  sub.add_option("--seed", a->seed, "Seed of calibration sampling and any randomized choice");
  sub.add_option("--qat-steps", a->qat_steps,
                 "Then train the quantized model against the original for N steps (quant.qat: quantization-aware "
                 "distillation on the calibration data; docs/quant_qat.md)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  sub.add_option("--qat-noise", a->qat_noise, "quant.qat: fraction of calibration tokens replaced by random ids")
      ->check(CLI::Range(0.0, 0.999));
  sub.add_option("--qat-mode", a->qat_mode,
                 "quant.qat: model (whole model on the teacher's logits), block (block by block, each as its "
                 "attention and FFN halves, on the hidden states: the memory of one half-block; --qat-steps per "
                 "half) or auto (model up to ~1 GiB of training state)")
      ->check(CLI::IsMember({"auto", "model", "block"}));
  std::vector<std::unique_ptr<Pass>> passes;
  for (const PassInfo& info : pass_registry())
    if (std::string_view(info.name).starts_with("quant.") && info.name != std::string_view(kQatPass))
      passes.push_back(info.make());
  a->flags.add(sub, passes, {"group_size", "method", "target_bpw"});
  return [a] { return run_quantize(*a); };
}

}  // namespace llmc::cli
