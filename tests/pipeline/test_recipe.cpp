// Recipes and the pipeline runner with a test-only pass: YAML schema errors (key and line),
// typed options, resolved form round trip, override partitioning and stage order on stories260K.
#include <catch2/catch.hpp>
#include <cmath>

#include "formats/model_io.h"
#include "pipeline/pass_options.h"
#include "pipeline/pipeline.h"
#include "pipeline/recipe.h"
#include "test_util.h"

using namespace llmc;

namespace {

// Multiplies every selected weight by `factor` (stored as f32); records what it touched.
class ScalePass : public Pass {
 public:
  double factor = 1.0;
  int64_t steps = 1;
  std::string tag = "a";
  bool calib = false;
  std::vector<std::string> names;

  std::string_view name() const override { return "test.scale"; }
  PassNeeds needs() const override { return {calib, false, false}; }
  void visit(OptionVisitor& v) override {
    static const char* const kTags[] = {"a", "b"};
    v.option("factor", factor, "multiplier");
    v.option("steps", steps, "unused count");
    v.option("tag", tag, "a label", kTags);
    v.option("calib", calib, "pretend to need calibration");
    v.option("names", names, "free list");
  }
  Result<void> validate_options() const override {
    if (factor < 0) return make_error(ErrorCode::kInvalidArgument, "factor must be >= 0");
    return {};
  }
  Result<PassReport> run(Model& model, PassContext& ctx) override {
    PassReport r;
    r.pass = "test.scale";
    std::vector<std::string> todo;
    for (const Tensor& t : model.tensors())
      if (ctx.selector.has_targets() ? ctx.selector.selects(t.name)
                                     : is_default_weight_target(model, t.name) && ctx.selector.selects(t.name))
        todo.push_back(t.name);
    for (const std::string& n : todo) {
      const Tensor& t = model.get(n);
      std::vector<float> v = t.to_f32();
      for (float& x : v) x = static_cast<float>(x * factor);
      model.replace(make_dense_f32(n, t.shape, v));
      r.details[n] = factor;
    }
    return r;
  }
};

Result<std::unique_ptr<Pass>> make_test_pass(std::string_view name) {
  if (name == "test.scale") return std::unique_ptr<Pass>(new ScalePass);
  return make_error(ErrorCode::kInvalidArgument, "unknown pass '", name, "' (known: test.scale)");
}

Result<Recipe> parse(const std::string& text) { return parse_recipe(text, "r.yaml", make_test_pass); }

// The error must be kRecipe and mention every fragment.
void require_recipe_error(const std::string& text, std::initializer_list<const char*> fragments) {
  INFO(text);
  auto r = parse(text);
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message);
  CHECK(r.error().code == ErrorCode::kRecipe);
  for (const char* f : fragments) CHECK(r.error().message.find(f) != std::string::npos);
}

}  // namespace

TEST_CASE("recipe: full schema parses, options typed, resolved form round-trips", "[recipe]") {
  const std::string text = R"(seed: 7
calibration: {self: 16, ctx: 64}
stages:
  - pass: test.scale
    options: {factor: 2, tag: b, names: [x, "y"]}
    targets: ['blk\..*']
    ignore: 'blk\.0\..*'
    overrides:
      - match: 'blk\.1\..*'
        options: {factor: 0.5}
)";
  auto r = parse(text);
  REQUIRE(r.ok());
  CHECK(r->seed == 7);
  REQUIRE(r->calibration);
  CHECK(r->calibration->self_samples == 16);
  CHECK(r->calibration->samples == 16);
  CHECK(r->calibration->ctx == 64);
  CHECK(r->calibration->seed == 7);
  REQUIRE(r->stages.size() == 1);
  const auto& st = r->stages[0];
  CHECK(st.line == 4);
  auto* p = dynamic_cast<ScalePass*>(st.pass.get());
  REQUIRE(p);
  CHECK(p->factor == 2.0);  // an integer literal is fine for a number option
  CHECK(p->tag == "b");
  CHECK(p->names == std::vector<std::string>{"x", "y"});
  CHECK(st.ignore == std::vector<std::string>{"blk\\.0\\..*"});
  REQUIRE(st.overrides.size() == 1);
  auto* o = dynamic_cast<ScalePass*>(st.overrides[0].pass.get());
  CHECK(o->factor == 0.5);
  CHECK(o->tag == "b");  // inherits the stage's options

  const auto resolved = resolved_recipe_json(*r);
  CHECK(resolved["stages"][0]["options"]["steps"] == 1);      // default filled in
  CHECK(resolved["stages"][0]["options"]["calib"] == false);  // default filled in
  auto again = parse(resolved.dump());
  REQUIRE(again.ok());
  CHECK(resolved_recipe_json(*again) == resolved);
}

TEST_CASE("recipe: unknown keys anywhere are errors naming the key and its line", "[recipe]") {
  require_recipe_error("seed: 1\nstages:\n  - pass: test.scale\nsed: 2\n", {"'sed'", "line 4"});
  require_recipe_error("calibration:\n  file: a.txt\n  sample: 3\nstages: [{pass: test.scale}]\n",
                       {"'sample'", "line 3", "calibration"});
  require_recipe_error("stages:\n  - pass: test.scale\n    option: {factor: 2}\n", {"'option'", "line 3", "stage"});
  require_recipe_error("stages:\n  - pass: test.scale\n    options:\n      factr: 2\n", {"factr", "line 4", "factor"});
  require_recipe_error("stages:\n  - pass: test.scale\n    overrides:\n      - match: x\n        opts: {}\n",
                       {"'opts'", "line 5"});
  require_recipe_error(
      "stages:\n  - pass: test.scale\n    overrides:\n      - match: x\n        options: {factor: 1, bad: 2}\n",
      {"'bad'", "line 5"});
  require_recipe_error("stages:\n  - pass: test.scale\n    pass: test.scale\n", {"duplicate", "'pass'", "line 3"});
}

TEST_CASE("recipe: option values are type-checked by the pass's declarations", "[recipe]") {
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {factor: abc}\n", {"factor", "number", "line 3"});
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {steps: 1.5}\n", {"steps", "integer"});
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {steps: '3'}\n", {"steps", "integer"});
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {tag: c}\n", {"tag", "one of a, b"});
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {calib: 1}\n", {"calib", "true or false"});
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {names: [1, [2]]}\n", {"names", "strings"});
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {factor: -1}\n", {"line 2", "factor must be >= 0"});
  require_recipe_error("stages:\n  - pass: test.nope\n", {"unknown pass", "test.nope", "line 2"});
  require_recipe_error("stages:\n  - pass: test.scale\n    targets: ['blk[']\n", {"regular expression", "blk["});
  require_recipe_error("stages:\n  - pass: test.scale\n    options: {calib: true}\n", {"calibration", "--calib"});
  require_recipe_error("calibration: {file: a.txt, self: 3}\nstages: [{pass: test.scale}]\n", {"exactly one"});
  require_recipe_error("seed: -1\nstages: [{pass: test.scale}]\n", {"seed", ">= 0"});
  require_recipe_error("stages: []\n", {"non-empty"});
  require_recipe_error("seed: 3\n", {"no 'stages'"});
  require_recipe_error("stages: [{pass: test.scale\n", {"YAML"});
  CHECK(parse("calibration: {file: a.txt, samples: 4, ctx: 32}\nstages:\n  - pass: test.scale\n"
              "    options: {calib: true}\n")
            .ok());
}

TEST_CASE("pipeline: stages in order, overrides take their tensors, the rest gets the base options",
          "[recipe][pipeline]") {
  const std::string bin = llmc::test::fixture("models/stories260K/stories260K.bin");
  if (bin.empty()) return;
  auto orig = load_model(bin);
  REQUIRE(orig.ok());
  auto model = load_model(bin);
  REQUIRE(model.ok());
  auto recipe = parse(R"(stages:
  - pass: test.scale
    options: {factor: 2}
    ignore: ['blk\.4\..*']
    overrides:
      - match: 'blk\.0\..*'
        options: {factor: 3}
      - match: 'blk\.[01]\.ffn_.*'
        options: {factor: 5}
  - pass: test.scale
    options: {factor: 0.5}
    targets: ['blk\.2\.attn_q\.weight']
)");
  REQUIRE(recipe.ok());
  auto result = run_pipeline(*model, *recipe, PipelineOptions{});
  REQUIRE(result.ok());
  REQUIRE(result->runs.size() == 4);  // base, two overrides, stage 2
  CHECK(result->runs[0].scope == "base");
  // blocks 1..3 have 7 linear weights each, minus blk.1's 3 FFN weights; plus token_embd (tied).
  CHECK(result->runs[0].tensors == 3 * 7 - 3 + 1);
  CHECK(result->runs[1].tensors == 7);  // all of blk.0: the first match wins over the second
  CHECK(result->runs[2].tensors == 3);  // blk.1.ffn_{gate,up,down}
  CHECK(result->runs[3].tensors == -1);

  auto factor_of = [](const std::string& name) -> double {
    if (name.find("_norm") != std::string::npos) return 1;
    if (name.rfind("blk.4.", 0) == 0) return 1;
    if (name.rfind("blk.0.", 0) == 0) return 3;
    if (name.rfind("blk.1.ffn_", 0) == 0) return 5;
    if (name == "blk.2.attn_q.weight") return 1;  // 2 then 0.5
    return 2;
  };
  for (const Tensor& t : orig->tensors()) {
    INFO(t.name);
    const auto a = t.to_f32(), b = model->get(t.name).to_f32();
    REQUIRE(a.size() == b.size());
    const double f = factor_of(t.name);
    for (size_t i = 0; i < a.size(); ++i) REQUIRE(b[i] == static_cast<float>(a[i] * f));
  }
  const auto j = pipeline_result_json(*result);
  CHECK(j["passes"].size() == 4);
  CHECK(j["passes"][1]["scope"] == "blk\\.0\\..*");
}

TEST_CASE("regex_escape makes names literal", "[recipe]") {
  TargetSelector s;
  s.targets = {regex_escape("blk.1.attn_q.weight")};
  REQUIRE(s.compile().ok());
  CHECK(s.selects("blk.1.attn_q.weight"));
  CHECK_FALSE(s.selects("blk.1xattn_q.weight"));
  CHECK_FALSE(s.selects("blk.11.attn_q.weight"));
}
