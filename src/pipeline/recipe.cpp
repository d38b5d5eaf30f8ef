// Recipe parsing (yaml-cpp), validation and the resolved form for provenance.
#include "pipeline/recipe.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>

#include "formats/file_io.h"
#include "pipeline/pass_options.h"

namespace llmc {
namespace {

using OJson = nlohmann::ordered_json;

constexpr size_t kMaxRecipeBytes = size_t(1) << 20;

int line_of(const YAML::Node& node) { return node.Mark().line >= 0 ? node.Mark().line + 1 : 0; }

// Errors of one recipe file: "<source>: line N: <what>".
struct Ctx {
  const std::string& source;
  Error at(const YAML::Node& node, const std::string& what) const {
    const int line = line_of(node);
    return line > 0 ? make_error(ErrorCode::kRecipe, source, ": line ", line, ": ", what)
                    : make_error(ErrorCode::kRecipe, source, ": ", what);
  }
};

// A YAML plain scalar typed by the YAML core schema (quoted scalars are always strings).
OJson scalar_to_json(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;
  static const std::regex kInt("[-+]?[0-9]+");
  static const std::regex kFloat("[-+]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?");
  static const std::set<std::string> kTrue = {"true", "True", "TRUE"}, kFalse = {"false", "False", "FALSE"},
                                     kNull = {"~", "null", "Null", "NULL", ""};
  if (kTrue.count(s)) return true;
  if (kFalse.count(s)) return false;
  if (kNull.count(s)) return nullptr;
  if (std::regex_match(s, kInt)) {
    errno = 0;
    const long long v = std::strtoll(s.c_str(), nullptr, 10);
    if (errno == 0) return static_cast<int64_t>(v);
    return s;  // out of range: left as text, rejected by the typed option
  }
  if (std::regex_match(s, kFloat)) return std::strtod(s.c_str(), nullptr);
  return s;
}

OJson yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar: return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      OJson out = OJson::array();
      for (const auto& e : node) out.push_back(yaml_to_json(e));
      return out;
    }
    case YAML::NodeType::Map: {
      OJson out = OJson::object();
      for (const auto& kv : node) out[kv.first.Scalar()] = yaml_to_json(kv.second);
      return out;
    }
    default: return nullptr;
  }
}

// Iterates a mapping, rejecting keys outside `allowed` and duplicate keys.
Result<void> for_each_key(const Ctx& ctx, const YAML::Node& map, const char* what,
                          std::initializer_list<const char*> allowed,
                          const std::function<Result<void>(const std::string&, const YAML::Node&)>& fn) {
  if (!map.IsMap()) return ctx.at(map, str_cat(what, " must be a mapping"));
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) return ctx.at(kv.first, str_cat(what, ": keys must be plain names"));
    const std::string key = kv.first.Scalar();
    bool known = false;
    std::string list;
    for (const char* a : allowed) {
      known = known || key == a;
      list += list.empty() ? "" : ", ";
      list += a;
    }
    if (!known) return ctx.at(kv.first, str_cat("unknown key '", key, "' in ", what, " (known: ", list, ")"));
    if (!seen.insert(key).second) return ctx.at(kv.first, str_cat("duplicate key '", key, "' in ", what));
    LLMC_TRY(fn(key, kv.second));
  }
  return {};
}

Result<int64_t> get_int(const Ctx& ctx, const YAML::Node& node, const std::string& key, int64_t min) {
  const OJson v = node.IsScalar() ? scalar_to_json(node) : OJson();
  if (!v.is_number_integer()) return ctx.at(node, str_cat("'", key, "' must be an integer"));
  const int64_t x = v.get<int64_t>();
  if (x < min) return ctx.at(node, str_cat("'", key, "' must be >= ", min, " (got ", x, ")"));
  return x;
}

Result<std::string> get_string(const Ctx& ctx, const YAML::Node& node, const std::string& key) {
  if (!node.IsScalar() || node.Scalar().empty()) return ctx.at(node, str_cat("'", key, "' must be a non-empty string"));
  return node.Scalar();
}

Result<std::vector<std::string>> get_string_list(const Ctx& ctx, const YAML::Node& node, const std::string& key) {
  std::vector<std::string> out;
  if (node.IsScalar()) {
    out.push_back(node.Scalar());
    return out;
  }
  if (!node.IsSequence()) return ctx.at(node, str_cat("'", key, "' must be a string or a list of strings"));
  for (const auto& e : node) {
    if (!e.IsScalar()) return ctx.at(e, str_cat("'", key, "' must be a list of strings"));
    out.push_back(e.Scalar());
  }
  return out;
}

Result<CalibOptions> parse_calibration(const Ctx& ctx, const YAML::Node& node) {
  CalibOptions c;
  bool samples_given = false;
  LLMC_TRY(for_each_key(ctx, node, "calibration", {"file", "self", "samples", "ctx"},
                        [&](const std::string& key, const YAML::Node& v) -> Result<void> {
                          if (key == "file") {
                            LLMC_ASSIGN_OR_RETURN(c.file, get_string(ctx, v, key));
                          } else if (key == "self") {
                            LLMC_ASSIGN_OR_RETURN(c.self_samples, get_int(ctx, v, key, 1));
                          } else if (key == "samples") {
                            LLMC_ASSIGN_OR_RETURN(c.samples, get_int(ctx, v, key, 1));
                            samples_given = true;
                          } else {
                            LLMC_ASSIGN_OR_RETURN(c.ctx, get_int(ctx, v, key, 2));
                          }
                          return {};
                        }));
  if (c.file.empty() == (c.self_samples == 0))
    return ctx.at(node, "calibration needs exactly one of 'file' (a text file) or 'self' (N sampled sequences)");
  if (c.self_samples > 0 && !samples_given) c.samples = c.self_samples;
  if (c.self_samples > 0 && c.samples != c.self_samples)
    return ctx.at(node, "calibration: 'samples' and 'self' disagree (self: N already sets the number of sequences)");
  return c;
}

Error option_error(const Ctx& ctx, const YAML::Node& options, const OptionError& e, const std::string& pass) {
  if (!e.key.empty() && options.IsMap())
    for (const auto& kv : options)
      if (kv.first.Scalar() == e.key) return ctx.at(kv.first, str_cat(pass, ": ", e.message));
  return ctx.at(options, str_cat(pass, ": ", e.message));
}

Result<RecipeStage> parse_stage(const Ctx& ctx, const YAML::Node& node, const PassFactory& make) {
  RecipeStage st;
  st.line = line_of(node);
  YAML::Node options_node;
  std::vector<YAML::Node> override_nodes;
  LLMC_TRY(for_each_key(ctx, node, "stage", {"pass", "options", "targets", "ignore", "overrides"},
                        [&](const std::string& key, const YAML::Node& v) -> Result<void> {
                          if (key == "pass") {
                            LLMC_ASSIGN_OR_RETURN(st.pass_name, get_string(ctx, v, key));
                          } else if (key == "options") {
                            if (!v.IsMap() && !v.IsNull()) return ctx.at(v, "'options' must be a mapping");
                            options_node = v;
                          } else if (key == "targets") {
                            LLMC_ASSIGN_OR_RETURN(st.targets, get_string_list(ctx, v, key));
                          } else if (key == "ignore") {
                            LLMC_ASSIGN_OR_RETURN(st.ignore, get_string_list(ctx, v, key));
                          } else {
                            if (!v.IsSequence()) return ctx.at(v, "'overrides' must be a list");
                            for (const auto& o : v) override_nodes.push_back(o);
                          }
                          return {};
                        }));
  if (st.pass_name.empty()) return ctx.at(node, "stage without 'pass'");
  auto pass = make(st.pass_name);
  if (!pass.ok()) return ctx.at(node["pass"], pass.error().message);
  st.pass = std::move(pass).value();
  if (options_node.IsMap()) st.options = yaml_to_json(options_node);
  if (auto e = set_options_from_json(*st.pass, st.options)) return option_error(ctx, options_node, *e, st.pass_name);

  for (const YAML::Node& o : override_nodes) {
    RecipeOverride ov;
    ov.line = line_of(o);
    YAML::Node ov_options;
    bool has_options = false;
    LLMC_TRY(for_each_key(ctx, o, "override", {"match", "options"},
                          [&](const std::string& key, const YAML::Node& v) -> Result<void> {
                            if (key == "match") {
                              LLMC_ASSIGN_OR_RETURN(ov.match, get_string(ctx, v, key));
                            } else {
                              if (!v.IsMap()) return ctx.at(v, "override 'options' must be a mapping");
                              ov_options = v;
                              has_options = true;
                            }
                            return {};
                          }));
    if (ov.match.empty()) return ctx.at(o, "override without 'match'");
    if (!has_options) return ctx.at(o, "override without 'options'");
    ov.options = yaml_to_json(ov_options);
    LLMC_ASSIGN_OR_RETURN(ov.pass, make(st.pass_name));
    if (auto e = set_options_from_json(*ov.pass, st.options)) return option_error(ctx, options_node, *e, st.pass_name);
    if (auto e = set_options_from_json(*ov.pass, ov.options)) return option_error(ctx, ov_options, *e, st.pass_name);
    st.overrides.push_back(std::move(ov));
  }
  return st;
}

Result<void> check_regexes(const std::vector<std::string>& exprs) {
  TargetSelector sel;
  sel.targets = exprs;
  return sel.compile();
}

}  // namespace

Result<Recipe> parse_recipe(std::string_view yaml, const std::string& source, const PassFactory& make) {
  Recipe recipe;
  recipe.source = source;
  const Ctx ctx{recipe.source};
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return make_error(ErrorCode::kRecipe, source, ": line ", e.mark.line + 1, ": not valid YAML: ", e.msg);
  }
  if (!root.IsMap()) return make_error(ErrorCode::kRecipe, source, ": a recipe is a mapping with 'stages'");
  bool has_stages = false;
  try {
    LLMC_TRY(for_each_key(ctx, root, "recipe", {"seed", "calibration", "stages"},
                          [&](const std::string& key, const YAML::Node& v) -> Result<void> {
                            if (key == "seed") {
                              LLMC_ASSIGN_OR_RETURN(const int64_t seed, get_int(ctx, v, key, 0));
                              recipe.seed = static_cast<uint64_t>(seed);
                            } else if (key == "calibration") {
                              LLMC_ASSIGN_OR_RETURN(recipe.calibration, parse_calibration(ctx, v));
                            } else {
                              if (!v.IsSequence() || v.size() == 0)
                                return ctx.at(v, "'stages' must be a non-empty list");
                              has_stages = true;
                              for (const auto& s : v) {
                                LLMC_ASSIGN_OR_RETURN(RecipeStage st, parse_stage(ctx, s, make));
                                recipe.stages.push_back(std::move(st));
                              }
                            }
                            return {};
                          }));
  } catch (const YAML::Exception& e) {
    return make_error(ErrorCode::kRecipe, source, ": line ", e.mark.line + 1, ": ", e.msg);
  }
  if (!has_stages) return make_error(ErrorCode::kRecipe, source, ": recipe has no 'stages'");
  if (recipe.calibration) recipe.calibration->seed = recipe.seed;
  LLMC_TRY(validate_recipe(recipe, ErrorCode::kRecipe));
  return recipe;
}

Result<Recipe> load_recipe(const std::string& path, const PassFactory& make) {
  LLMC_ASSIGN_OR_RETURN(const std::string text, read_text_file(path, kMaxRecipeBytes));
  return parse_recipe(text, path, make);
}

Result<RecipeStage> make_stage(std::string_view pass, const nlohmann::ordered_json& options,
                               std::vector<std::string> targets, std::vector<std::string> ignore,
                               const PassFactory& make) {
  RecipeStage st;
  st.pass_name = std::string(pass);
  LLMC_ASSIGN_OR_RETURN(st.pass, make(pass));
  st.options = options;
  if (auto e = set_options_from_json(*st.pass, options)) {
    if (e->key.empty()) return make_error(ErrorCode::kInvalidArgument, pass, ": ", e->message);
    return make_error(ErrorCode::kInvalidArgument, option_flag_name(e->key), ": ", e->message);
  }
  st.targets = std::move(targets);
  st.ignore = std::move(ignore);
  return st;
}

Result<void> validate_recipe(const Recipe& recipe, ErrorCode code) {
  auto fail = [&](const RecipeStage& st, size_t i, int line, const std::string& what) {
    std::string where = str_cat("stage ", i + 1, " (", st.pass_name, ")");
    if (line > 0) where = str_cat("line ", line, ": ", where);
    if (recipe.source != "command line") where = recipe.source + ": " + where;
    return make_error(code, where, ": ", what);
  };
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    const RecipeStage& st = recipe.stages[i];
    if (auto ok = st.pass->validate_options(); !ok.ok()) return fail(st, i, st.line, ok.error().message);
    if (auto ok = check_regexes(st.targets); !ok.ok()) return fail(st, i, st.line, "targets: " + ok.error().message);
    if (auto ok = check_regexes(st.ignore); !ok.ok()) return fail(st, i, st.line, "ignore: " + ok.error().message);
    for (const RecipeOverride& ov : st.overrides) {
      if (auto ok = ov.pass->validate_options(); !ok.ok())
        return fail(st, i, ov.line, str_cat("override '", ov.match, "': ", ok.error().message));
      if (auto ok = check_regexes({ov.match}); !ok.ok()) return fail(st, i, ov.line, ok.error().message);
    }
    const bool needs = st.pass->needs().calibration;
    if (needs && !recipe.calibration)
      return fail(
          st, i, st.line,
          "this pass needs calibration data: add 'calibration: {file: TEXT}' or 'calibration: {self: N}' to the "
          "recipe (llmc quantize: --calib FILE or --calib-self N)");
    if (st.pass->needs().gradients)
      return fail(st, i, st.line, "passes that need gradients from the pipeline are not supported yet");
  }
  return {};
}

bool recipe_needs_calibration(const Recipe& recipe) {
  for (const RecipeStage& st : recipe.stages) {
    if (st.pass->needs().calibration) return true;
    for (const RecipeOverride& ov : st.overrides)
      if (ov.pass->needs().calibration) return true;
  }
  return false;
}

nlohmann::ordered_json resolved_recipe_json(const Recipe& recipe) {
  OJson out = OJson::object();
  out["seed"] = recipe.seed;
  if (recipe.calibration) {
    const CalibOptions& c = *recipe.calibration;
    OJson cal = OJson::object();
    if (c.self_samples > 0) {
      cal["self"] = c.self_samples;
    } else {
      cal["file"] = c.file;
      cal["samples"] = c.samples;
    }
    cal["ctx"] = c.ctx;
    out["calibration"] = cal;
  }
  OJson stages = OJson::array();
  for (const RecipeStage& st : recipe.stages) {
    OJson s = OJson::object();
    s["pass"] = st.pass_name;
    s["options"] = options_to_json(*st.pass);
    s["targets"] = st.targets;
    s["ignore"] = st.ignore;
    OJson ovs = OJson::array();
    for (const RecipeOverride& ov : st.overrides) ovs.push_back(OJson{{"match", ov.match}, {"options", ov.options}});
    s["overrides"] = ovs;
    stages.push_back(s);
  }
  out["stages"] = stages;
  return out;
}

}  // namespace llmc
