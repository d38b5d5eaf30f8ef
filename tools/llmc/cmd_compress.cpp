// llmc compress: run a YAML recipe (docs/recipes.md) on a model and write the result.
#include "cli_util.h"
#include "commands.h"
#include "pipeline/pass_options.h"
#include "recipe_run.h"

namespace llmc::cli {
namespace {

struct CompressArgs {
  RecipeJob job;
  std::string recipe;
};

int run_compress(CompressArgs& a) {
  auto recipe = load_recipe(a.recipe);  // validated before the model is loaded
  if (!recipe.ok()) return report_error(recipe.error());
  a.job.command = "compress";
  a.job.recipe_error = ErrorCode::kRecipe;
  a.job.extra_inputs = {a.recipe};
  return run_recipe_job(a.job, *recipe);
}

}  // namespace

RunFn setup_compress(CLI::App& sub) {
  auto a = std::make_shared<CompressArgs>();
  add_job_options(sub, a->job);
  sub.add_option("--recipe", a->recipe, "Recipe file (YAML: seed, calibration, stages; see docs/recipes.md)")
      ->required();
  // The help lists every pass of the registry with its options (names = recipe keys).
  std::string footer = "Passes (recipe 'pass:' names) and their options (recipe 'options:' keys, defaults):";
  for (const PassInfo& info : pass_registry()) {
    footer += str_cat("\n  ", info.name, ": ", info.summary, "\n   ");
    for (const OptionInfo& o : list_options(*info.make())) footer += str_cat(" ", o.name, "=", o.value.dump());
  }
  if (pass_registry().empty()) footer += "\n  (none built)";
  sub.footer(footer + "\nRecipe schema: docs/recipes.md; examples: samples/*.yaml");
  return [a] { return run_compress(*a); };
}

}  // namespace llmc::cli
