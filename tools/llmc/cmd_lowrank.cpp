// llmc lowrank: sugar for a one-stage low-rank recipe — lowrank.svd (--method svd|asvd) or lowrank.tucker
// (--method tucker); every option of the two passes is a flag generated from its declaration.
#include <cstdio>

#include "cli_util.h"
#include "commands.h"
#include "pass_flags.h"
#include "recipe_run.h"

namespace llmc::cli {
namespace {

using OJson = nlohmann::ordered_json;

struct LowRankArgs {
  RecipeJob job;
  std::string method = "svd";
  CalibFlags calib;
  uint64_t seed = 0;
  std::vector<std::string> targets, keep;
  PassFlags flags;
};

Result<Recipe> build_recipe(const LowRankArgs& a) {
  OJson options = a.flags.given();
  const bool tucker = a.method == "tucker";
  if (!tucker) options["method"] = a.method;
  Recipe recipe;
  recipe.source = "command line";
  recipe.seed = a.seed;
  LLMC_ASSIGN_OR_RETURN(recipe.calibration, a.calib.options(a.seed));
  LLMC_ASSIGN_OR_RETURN(RecipeStage st,
                        make_stage(tucker ? "lowrank.tucker" : "lowrank.svd", options, a.targets, a.keep));
  recipe.stages.push_back(std::move(st));
  LLMC_TRY(validate_recipe(recipe, ErrorCode::kInvalidArgument));
  return recipe;
}

// "lowrank     12 of 15 tensors replaced, 80.0 % of their parameters kept; ranks 24..40"
void print_ranks(const PipelineResult& result) {
  int64_t replaced = 0, total = 0, rank_lo = -1, rank_hi = -1;
  double before = 0, after = 0;
  for (const PassRun& run : result.runs)
    for (const auto& [name, d] : run.report.details.items()) {
      if (!d.contains("replaced")) continue;
      ++total;
      if (!d["replaced"].get<bool>()) continue;
      ++replaced;
      before += d["bytes_before"].get<double>();
      after += d["bytes_after"].get<double>();
      if (d.contains("rank")) {
        const int64_t r = d["rank"].get<int64_t>();
        rank_lo = rank_lo < 0 ? r : std::min(rank_lo, r);
        rank_hi = std::max(rank_hi, r);
      }
    }
  std::printf("  lowrank     %lld of %lld tensors replaced; their bytes %.3f MB -> %.3f MB (%.1f%%)",
              static_cast<long long>(replaced), static_cast<long long>(total), before / 1e6, after / 1e6,
              before > 0 ? 100.0 * after / before : 0.0);
  if (rank_lo > 0) std::printf("; ranks %lld..%lld", static_cast<long long>(rank_lo), static_cast<long long>(rank_hi));
  std::printf("\n");
}

int run_lowrank(LowRankArgs& a) {
  auto recipe = build_recipe(a);  // every option checked before the model is loaded
  if (!recipe.ok()) return report_error(recipe.error());
  a.job.command = "lowrank";
  a.job.print_details = print_ranks;
  return run_recipe_job(a.job, *recipe);
}

}  // namespace

RunFn setup_lowrank(CLI::App& sub) {
  auto a = std::make_shared<LowRankArgs>();
  add_job_options(sub, a->job);
  sub.add_option("--method", a->method,
                 "svd (weight error), asvd (activation-aware: needs calibration), tucker (embedding/output and "
                 "per-head attention as higher-order tensors)")
      ->check(CLI::IsMember({"svd", "asvd", "tucker"}));
  sub.add_option("--targets", a->targets,
                 "Decompose only tensors matching this regular expression (repeatable; default: every linear weight "
                 "for svd/asvd, the embedding and output for tucker)")
      ->allow_extra_args(false);
  sub.add_option("--keep", a->keep, "Leave tensors matching this regular expression unchanged (repeatable)")
      ->allow_extra_args(false);
  a->calib.add(sub);
  sub.add_option("--seed", a->seed, "Seed of calibration sampling");
  std::vector<std::unique_ptr<Pass>> passes;
  for (const PassInfo& info : pass_registry())
    if (std::string_view(info.name).starts_with("lowrank.")) passes.push_back(info.make());
  a->flags.add(sub, passes, {"method"});
  return [a] { return run_lowrank(*a); };
}

}  // namespace llmc::cli
