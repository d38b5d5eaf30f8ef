// Pipeline runner: stage order, calibration built once, override partitioning, timing.
#include "pipeline/pipeline.h"

#include <chrono>
#include <optional>
#include <regex>

#include "core/log.h"
#include "pipeline/calibration.h"

namespace llmc {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Part {
  Pass* pass;
  std::string scope;
  TargetSelector selector;
  int64_t tensors;  // -1: the pass's own default set
};

// Splits a stage into the runs described in pipeline.h.
Result<std::vector<Part>> plan_stage(const Model& model, const RecipeStage& st) {
  TargetSelector stage_sel;
  stage_sel.targets = st.targets;
  stage_sel.ignore = st.ignore;
  LLMC_TRY(stage_sel.compile());
  if (st.overrides.empty()) return std::vector<Part>{{st.pass.get(), "base", stage_sel, -1}};

  std::vector<TargetSelector> matchers(st.overrides.size());
  for (size_t k = 0; k < st.overrides.size(); ++k) {
    matchers[k].targets = {st.overrides[k].match};
    LLMC_TRY(matchers[k].compile());
  }
  std::vector<std::vector<std::string>> names(st.overrides.size() + 1);  // [0] = base
  for (const Tensor& t : model.tensors()) {
    const bool selected = stage_sel.has_targets()
                              ? stage_sel.selects(t.name)
                              : is_default_weight_target(model, t.name) && stage_sel.selects(t.name);
    if (!selected) continue;
    size_t slot = 0;
    for (size_t k = 0; k < matchers.size() && slot == 0; ++k)
      if (matchers[k].selects(t.name)) slot = k + 1;
    names[slot].push_back(regex_escape(t.name));
  }
  std::vector<Part> parts;
  for (size_t k = 0; k < names.size(); ++k) {
    if (names[k].empty()) continue;
    Part p{k == 0 ? st.pass.get() : st.overrides[k - 1].pass.get(),
           k == 0 ? "base" : st.overrides[k - 1].match,
           {},
           static_cast<int64_t>(names[k].size())};
    p.selector.targets = std::move(names[k]);
    LLMC_TRY(p.selector.compile());
    parts.push_back(std::move(p));
  }
  return parts;
}

}  // namespace

std::string regex_escape(const std::string& text) {
  static const std::string kSpecial = "\\^$.|?*+()[]{}";
  std::string out;
  for (char c : text) {
    if (kSpecial.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

Result<void> check_selectors_match(const Model& model, const Recipe& recipe, ErrorCode code) {
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    const RecipeStage& st = recipe.stages[i];
    auto check = [&](const std::string& expr, const char* role) -> Result<void> {
      std::regex re;
      try {
        re = std::regex(expr, std::regex::ECMAScript);
      } catch (const std::regex_error& err) {
        return make_error(code, "bad tensor-name regular expression '", expr, "': ", err.what());
      }
      const Tensor* partial = nullptr;
      for (const Tensor& t : model.tensors()) {
        if (std::regex_match(t.name, re)) return {};
        if (!partial && std::regex_search(t.name, re)) partial = &t;
      }
      std::string hint;
      if (partial)
        hint = str_cat(" (it occurs inside names such as '", partial->name,
                       "', but expressions must match the whole name: e.g. '", expr, ".*' or '.*", expr, ".*')");
      return make_error(code, "stage ", i + 1, " (", st.pass_name, "): ", role, " expression '", expr,
                        "' matches no tensor of the model", hint);
    };
    for (const std::string& e : st.targets) LLMC_TRY(check(e, "targets"));
    for (const std::string& e : st.ignore) LLMC_TRY(check(e, "ignore (--keep)"));
    for (const RecipeOverride& ov : st.overrides) LLMC_TRY(check(ov.match, "override match"));
  }
  return {};
}

Result<PipelineResult> run_pipeline(Model& model, const Recipe& recipe, const PipelineOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  LLMC_TRY(validate_recipe(recipe, ErrorCode::kInvalidArgument));
  LLMC_TRY(check_selectors_match(model, recipe, options.recipe_error));
  PipelineResult result;
  struct ScratchScope {  // replace_and_release stores into options.scratch while the passes run
    std::shared_ptr<ScratchFile> previous;
    ~ScratchScope() { set_replacement_scratch(std::move(previous)); }
  } scratch_scope{set_replacement_scratch(options.scratch)};

  std::unique_ptr<CalibrationSet> calib;
  if (recipe_needs_calibration(recipe)) {
    const auto tc = std::chrono::steady_clock::now();
    CalibOptions copt = *recipe.calibration;
    copt.seed = recipe.seed;
    copt.threads = options.threads;
    copt.ram_bytes = options.calib_ram_bytes;
    if (!copt.file.empty() && model.tokenizer.empty())
      return make_error(ErrorCode::kInvalidArgument, "calibration text ", copt.file,
                        " needs the model's tokenizer, and this model has none (llama2.c checkpoints: --tokenizer "
                        "tokenizer.bin)");
    log_info("calibration: ",
             copt.self_samples > 0 ? str_cat(copt.self_samples, " sequences sampled from the model")
                                   : str_cat(copt.samples, " sequences from ", copt.file),
             ", ", copt.ctx, " tokens each");
    LLMC_ASSIGN_OR_RETURN(calib, CalibrationSet::create(model, copt));
    result.calibration_seconds = seconds_since(tc);
    result.calibration_tokens = calib->tokens();
  }

  // Passes that learn from the original model (quant.qat) see it as it was before the first stage:
  // a copy of the tensor table, sharing the (immutable) encodings.
  std::optional<Model> teacher;
  for (const RecipeStage& st : recipe.stages) {
    bool needs = st.pass->needs().teacher;
    for (const RecipeOverride& ov : st.overrides) needs = needs || ov.pass->needs().teacher;
    if (needs && !teacher) teacher.emplace(model);
  }

  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    const RecipeStage& st = recipe.stages[i];
    LLMC_ASSIGN_OR_RETURN(std::vector<Part> parts, plan_stage(model, st));
    for (Part& part : parts) {
      log_info("stage ", i + 1, "/", recipe.stages.size(), ": ", st.pass_name,
               part.scope == "base" ? std::string() : str_cat(" (override '", part.scope, "')"),
               part.tensors >= 0 ? str_cat(" on ", part.tensors, " tensors") : std::string());
      PassContext ctx;
      ctx.selector = part.selector;
      ctx.calib = part.pass->needs().calibration ? calib.get() : nullptr;
      ctx.teacher = part.pass->needs().teacher && teacher ? &*teacher : nullptr;
      ctx.seed = recipe.seed;
      ctx.threads = options.threads;
      const auto ts = std::chrono::steady_clock::now();
      auto report = part.pass->run(model, ctx);
      if (!report.ok()) {
        Error e = report.error();
        e.message = str_cat("stage ", i + 1, " (", st.pass_name, "): ", e.message);
        return e;
      }
      PassRun run{i, part.scope, part.tensors, std::move(report).value()};
      run.report.seconds = seconds_since(ts);
      if (run.report.pass.empty()) run.report.pass = st.pass_name;
      result.runs.push_back(std::move(run));
    }
  }
  result.seconds = seconds_since(t0);
  return result;
}

nlohmann::ordered_json pipeline_result_json(const PipelineResult& result) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  out["calibration"] = {{"tokens", result.calibration_tokens}, {"seconds", result.calibration_seconds}};
  nlohmann::ordered_json passes = nlohmann::ordered_json::array();
  for (const PassRun& r : result.runs)
    passes.push_back({{"stage", r.stage + 1},
                      {"pass", r.report.pass},
                      {"scope", r.scope},
                      {"tensors", r.tensors},
                      {"seconds", r.report.seconds},
                      {"details", r.report.details}});
  out["passes"] = passes;
  out["seconds"] = result.seconds;
  return out;
}

}  // namespace llmc
