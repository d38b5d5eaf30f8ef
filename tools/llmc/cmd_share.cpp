// llmc share: sugar for a one-stage share.kmeans recipe (weight sharing into Palette codebooks); the
// pass's options are flags generated from its declarations.
#include "cli_util.h"
#include "commands.h"
#include "pass_flags.h"
#include "recipe_run.h"

namespace llmc::cli {
namespace {

constexpr const char* kSharePass = "share.kmeans";

struct ShareArgs {
  RecipeJob job;
  CalibFlags calib;
  uint64_t seed = 0;
  std::vector<std::string> keep;
  PassFlags flags;
};

Result<Recipe> build_recipe(const ShareArgs& a) {
  Recipe recipe;
  recipe.source = "command line";
  recipe.seed = a.seed;
  LLMC_ASSIGN_OR_RETURN(recipe.calibration, a.calib.options(a.seed));
  LLMC_ASSIGN_OR_RETURN(RecipeStage st, make_stage(kSharePass, a.flags.given(), {}, a.keep));
  recipe.stages.push_back(std::move(st));
  LLMC_TRY(validate_recipe(recipe, ErrorCode::kInvalidArgument));
  return recipe;
}

int run_share(ShareArgs& a) {
  auto recipe = build_recipe(a);  // every option checked before the model is loaded
  if (!recipe.ok()) return report_error(recipe.error());
  a.job.command = "share";
  return run_recipe_job(a.job, *recipe);
}

}  // namespace

RunFn setup_share(CLI::App& sub) {
  auto a = std::make_shared<ShareArgs>();
  add_job_options(sub, a->job);
  sub.add_option("--keep", a->keep, "Leave tensors matching this regular expression unchanged (repeatable)")
      ->allow_extra_args(false);
  a->calib.add(sub);
  sub.add_option("--seed", a->seed, "Seed of the k-means++ seedings and of calibration sampling");
  std::vector<std::unique_ptr<Pass>> passes;
  auto pass = make_pass(kSharePass);
  if (pass.ok()) passes.push_back(std::move(pass).value());
  a->flags.add(sub, passes, {});
  return [a] { return run_share(*a); };
}

}  // namespace llmc::cli
