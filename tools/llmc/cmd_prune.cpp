// llmc prune: sugar for a one-stage pruning recipe (--pattern and --method pick the pass; every
// pruning pass's options are flags generated from its declarations).
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

// --pattern heads|channels|layers: structured passes (smaller dense models); unstructured and N:M:
// prune.<method> (the Sparse encoding).
const std::map<std::string, const char*> kStructuredPass = {
    {"heads", "prune.heads"}, {"channels", "prune.channels"}, {"layers", "prune.layers"}};
// --method of a structured pattern: how units are ranked (importance) and whether the output
// projection is refit on the kept units; --importance / --refit override.
struct StructuredMethod {
  const char* importance;
  bool refit;
};
const std::map<std::string, StructuredMethod> kStructuredMethod = {
    {"magnitude", {"magnitude", false}}, {"wanda", {"activation", false}}, {"sparsegpt", {"activation", true}}};

struct PruneArgs {
  RecipeJob job;
  std::string method = "magnitude";
  std::string pattern = "unstructured";
  double sparsity = 0.5;
  std::string calib;
  int64_t calib_self = 0;
  int64_t calib_samples = 0;
  int64_t calib_ctx = 0;
  uint64_t seed = 0;
  std::vector<std::string> keep;
  PassFlags flags;
};

Result<Recipe> build_recipe(const PruneArgs& a) {
  auto bad = [](auto&&... parts) { return make_error(ErrorCode::kInvalidArgument, parts...); };
  OJson options = a.flags.given();
  std::string pass_name;
  if (const auto it = kStructuredPass.find(a.pattern); it != kStructuredPass.end()) {
    pass_name = it->second;
    if (a.pattern == "layers") {
      if (a.method == "magnitude")
        return bad(
            "--pattern layers ranks blocks by their input/output angular distance on calibration text: use "
            "--method wanda or sparsegpt with --calib FILE or --calib-self N");
    } else {
      const StructuredMethod& m = kStructuredMethod.at(a.method);
      if (!options.contains("importance")) options["importance"] = m.importance;
      if (!options.contains("refit")) options["refit"] = m.refit;
    }
  } else {
    pass_name = "prune." + a.method;
    options["pattern"] = a.pattern;
  }
  options["sparsity"] = a.sparsity;

  Recipe recipe;
  recipe.source = "command line";
  recipe.seed = a.seed;
  const bool any_calib = !a.calib.empty() || a.calib_self > 0 || a.calib_samples > 0 || a.calib_ctx > 0;
  if (!a.calib.empty() && a.calib_self > 0) return bad("--calib and --calib-self exclude each other");
  if (any_calib) {
    if (a.calib.empty() && a.calib_self == 0)
      return bad("--calib-samples/--calib-ctx need --calib FILE or --calib-self N");
    CalibOptions c;
    c.file = a.calib;
    c.self_samples = a.calib_self;
    if (a.calib_self > 0) c.samples = a.calib_self;
    if (a.calib_samples > 0) c.samples = a.calib_samples;
    if (a.calib_ctx > 0) c.ctx = a.calib_ctx;
    c.seed = a.seed;
    recipe.calibration = c;
  }
  LLMC_ASSIGN_OR_RETURN(RecipeStage st, make_stage(pass_name, options, {}, a.keep));
  recipe.stages.push_back(std::move(st));
  if (recipe.stages[0].pass->needs().calibration && !recipe.calibration)
    return bad(pass_name, " needs calibration: --calib FILE or --calib-self N");
  LLMC_TRY(validate_recipe(recipe, ErrorCode::kInvalidArgument));
  return recipe;
}

int run_prune(PruneArgs& a) {
  auto recipe = build_recipe(a);  // every option checked before the model is loaded
  if (!recipe.ok()) return report_error(recipe.error());
  a.job.command = "prune";
  return run_recipe_job(a.job, *recipe);
}

}  // namespace

RunFn setup_prune(CLI::App& sub) {
  auto a = std::make_shared<PruneArgs>();
  add_job_options(sub, a->job);
  std::vector<std::string> methods;
  for (const auto& [m, s] : kStructuredMethod) methods.push_back(m);
  sub.add_option("--method", a->method,
                 "magnitude (data-free), wanda or sparsegpt (calibration). Structured patterns: magnitude ranks by "
                 "weights, wanda by activations, sparsegpt by activations and refits the output projection")
      ->check(CLI::IsMember(methods));
  sub.add_option("--pattern", a->pattern,
                 "unstructured or N:M (e.g. 2:4): Sparse weights; heads, channels (FFN) or layers: a smaller dense "
                 "model");
  sub.add_option("--sparsity", a->sparsity,
                 "Fraction removed, in [0, 1): of the weights (unstructured), of the heads, FFN channels or layers "
                 "(structured)");
  sub.add_option("--keep", a->keep, "Leave tensors matching this regular expression unchanged (repeatable)")
      ->allow_extra_args(false);
  sub.add_option("--calib", a->calib, "Calibration text file (tokenized with the model's tokenizer)");
  sub.add_option("--calib-self", a->calib_self, "Calibrate on N sequences sampled from the model itself")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--calib-samples", a->calib_samples, "Calibration sequences (default 128)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--calib-ctx", a->calib_ctx, "Tokens per calibration sequence (default 512)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  sub.add_option("--seed", a->seed, "Seed of calibration sampling");
  std::vector<std::unique_ptr<Pass>> passes;
  for (const PassInfo& info : pass_registry())
    if (std::string_view(info.name).starts_with("prune.")) passes.push_back(info.make());
  a->flags.add(sub, passes, {"sparsity", "pattern"});
  return [a] { return run_prune(*a); };
}

}  // namespace llmc::cli
