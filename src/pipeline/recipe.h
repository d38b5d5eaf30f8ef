// Recipes (DESIGN.md §3, docs/recipes.md): an ordered list of pass stages with options, tensor
// targets and per-target overrides, parsed from YAML with every key and value checked; and the
// resolved form (all options with defaults) stored in an output's provenance.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "passes/pass.h"
#include "pipeline/calibration.h"

namespace llmc {

// Makes a pass by name (the registry's make_pass; tests substitute their own).
using PassFactory = std::function<Result<std::unique_ptr<Pass>>(std::string_view)>;

// Tensors of the stage that match `match` run through `pass`, configured with the stage's options
// and then these (first matching override wins); the stage's other tensors run with its base pass.
struct RecipeOverride {
  std::string match;               // regular expression, full match over canonical names
  nlohmann::ordered_json options;  // only the keys the override sets
  std::unique_ptr<Pass> pass;
  int line = 0;
};

struct RecipeStage {
  std::string pass_name;
  nlohmann::ordered_json options = nlohmann::ordered_json::object();  // keys as given
  std::vector<std::string> targets;
  std::vector<std::string> ignore;
  std::vector<RecipeOverride> overrides;
  std::unique_ptr<Pass> pass;  // configured with `options`
  int line = 0;                // 1-based line in the recipe file (0 = built in code)
};

struct Recipe {
  std::string source;  // recipe file, or "command line"
  uint64_t seed = 0;
  std::optional<CalibOptions> calibration;  // seed is copied from `seed`
  std::vector<RecipeStage> stages;
};

// Parses YAML text. Errors (kRecipe) name the source, the key or value, and its line: unknown
// keys anywhere, wrong types, unknown passes or options, bad regular expressions, option values
// the pass rejects (validate_options), calibration-needing stages without `calibration`.
Result<Recipe> parse_recipe(std::string_view yaml, const std::string& source, const PassFactory& make = make_pass);
Result<Recipe> load_recipe(const std::string& path, const PassFactory& make = make_pass);

// A stage built in code (CLI sugar): kInvalidArgument for unknown passes/options or bad values.
Result<RecipeStage> make_stage(std::string_view pass, const nlohmann::ordered_json& options,
                               std::vector<std::string> targets, std::vector<std::string> ignore,
                               const PassFactory& make = make_pass);

// Checks every pass's options (validate_options), the regular expressions and that calibration is
// configured when a stage needs it. `code` is the error code for failures.
Result<void> validate_recipe(const Recipe& recipe, ErrorCode code);

bool recipe_needs_calibration(const Recipe& recipe);

// The resolved recipe: seed, calibration (all fields) and every stage with all its options
// (defaults included); override options stay as given (they apply over the stage's). It is JSON,
// which is also YAML: parse_recipe(resolved.dump()) gives the same recipe back.
nlohmann::ordered_json resolved_recipe_json(const Recipe& recipe);

}  // namespace llmc
