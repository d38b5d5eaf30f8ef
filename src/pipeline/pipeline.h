// The pipeline runner: runs a recipe's stages in order on a model, building the calibration set
// once when a stage needs it, and collects each pass's report and timing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model.h"
#include "pipeline/calibration.h"
#include "pipeline/recipe.h"

namespace llmc {

class ScratchFile;  // formats/scratch_file.h

struct PipelineOptions {
  int threads = 0;                                           // 0 = all cores; outputs do not depend on it
  int64_t calib_ram_bytes = CalibOptions::kDefaultRamBytes;  // CalibOptions::ram_bytes; outputs do not depend on it
  // Code of recipe mistakes only the model reveals (an expression that matches no tensor):
  // kRecipe for recipe files (exit 1), kInvalidArgument for command-line flags (exit 2).
  ErrorCode recipe_error = ErrorCode::kInvalidArgument;
  // Where passes put the tensors they build (replace_and_release), so that peak RSS follows what is
  // being worked on rather than the whole output; null: the heap. Outputs do not depend on it.
  std::shared_ptr<ScratchFile> scratch;
};

// One run of a pass: a stage's base options, or one of its overrides.
struct PassRun {
  size_t stage = 0;     // 0-based index in the recipe
  std::string scope;    // "base", or the override's match expression
  int64_t tensors = 0;  // tensors selected for this run (-1: the pass's default set)
  PassReport report;    // report.seconds = wall time of run()
};

struct PipelineResult {
  std::vector<PassRun> runs;
  double calibration_seconds = 0;
  int64_t calibration_tokens = 0;
  double seconds = 0;  // everything, calibration included
};

// Every `targets`, `ignore` and override `match` expression of the recipe must fully match at
// least one tensor name of the model: a mistyped expression (`token_embd` for `token_embd.weight`)
// would otherwise silently select a different set. The error (`code`) names the stage, the
// expression and, when it occurs inside names, an example and the full-match rule.
Result<void> check_selectors_match(const Model& model, const Recipe& recipe, ErrorCode code);

// Validates the recipe (again: cheap), checks its selectors against the model
// (check_selectors_match), builds the calibration set when needed and runs the stages.
// Stages without overrides hand the stage's targets/ignore to the pass as they are. Stages with
// overrides are split into explicit tensor lists: the tensors the stage selects (its targets, or
// when it has none every default weight target — is_default_weight_target — minus ignore) go to
// the first override whose `match` they fully match, the rest to the base options; each non-empty
// part is one pass run (base first, then overrides in recipe order).
Result<PipelineResult> run_pipeline(Model& model, const Recipe& recipe, const PipelineOptions& options);

// {"calibration": {...}, "passes": [{"stage", "pass", "scope", "tensors", "seconds", "details"}], "seconds"}
nlohmann::ordered_json pipeline_result_json(const PipelineResult& result);

// Escapes a tensor name for use as a full-match regular expression.
std::string regex_escape(const std::string& text);

}  // namespace llmc
