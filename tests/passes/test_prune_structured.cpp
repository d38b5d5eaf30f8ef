// Structured pruning (prune.heads, prune.channels, prune.layers) on stories260K: removed units gone
// from shapes and config, kept weights exact, the runtime's per-layer widths checked against a model
// whose removed units were silenced (zeroed) instead, round trips through .llmc and GGUF, bad options.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <set>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/arch.h"
#include "passes/pass.h"
#include "pipeline/calibration.h"
#include "quant_test_util.h"
#include "runtime/runtime.h"
#include "test_util.h"

using namespace llmc;

namespace {

Result<Model> load_stories() {
  LoadOptions o;
  o.tokenizer_path = test::fixture("models/stories260K/tok512.bin");
  return load_model(test::fixture("models/stories260K/stories260K.bin"), o);
}

bool have_stories() { return !test::fixture("models/stories260K/stories260K.bin").empty(); }

Result<PassReport> run(const char* pass, std::map<std::string, std::string> options, Model& model,
                       CalibrationSet* calib = nullptr) {
  auto p = make_pass(pass);
  REQUIRE(p.ok());
  test::SetOptions set(std::move(options));
  (*p)->visit(set);
  REQUIRE(set.unused().empty());
  LLMC_TRY((*p)->validate_options());
  PassContext ctx;
  ctx.calib = calib;
  ctx.threads = 1;
  return (*p)->run(model, ctx);
}

std::unique_ptr<CalibrationSet> calib_of(const Model& model, int64_t samples, int64_t ctx) {
  CalibOptions c;
  c.file = test::fixture("text/tinyshakespeare.txt");
  c.samples = samples;
  c.ctx = ctx;
  c.seed = 1;
  auto calib = CalibrationSet::create(model, c);
  REQUIRE(calib.ok());
  return std::move(calib).value();
}

// Zeroes columns [c0, c1) of a dense f32 weight.
void zero_cols(Model& m, const std::string& name, int64_t c0, int64_t c1) {
  const Tensor& t = m.get(name);
  std::vector<float> w = t.to_f32();
  for (int64_t r = 0; r < t.rows(); ++r)
    for (int64_t c = c0; c < c1; ++c) w[r * t.cols() + c] = 0.0f;
  m.replace(make_dense_f32(name, t.shape, w));
}

// Logits of every position of a fixed prompt.
std::vector<float> logits_of(const Model& m) {
  auto rt = Runtime::create(m, RuntimeOptions{.threads = 1, .max_context = 64});
  REQUIRE(rt.ok());
  std::vector<int32_t> ids = {1, 403, 261, 35, 287, 77, 400, 300, 12, 99, 450, 7};
  std::vector<float> logits(ids.size() * static_cast<size_t>((*rt)->vocab_size()));
  REQUIRE((*rt)->forward(ids, 0, logits.data(), true).ok());
  return logits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(double(a[i]) - double(b[i])));
  return d;
}

// Rows of `t` as f32, [rows][cols].
std::vector<std::vector<float>> rows_of(const Tensor& t) {
  const auto w = t.to_f32();
  std::vector<std::vector<float>> out;
  for (int64_t r = 0; r < t.rows(); ++r) out.emplace_back(w.begin() + r * t.cols(), w.begin() + (r + 1) * t.cols());
  return out;
}
std::vector<std::vector<float>> cols_of(const Tensor& t) {
  const auto w = t.to_f32();
  std::vector<std::vector<float>> out(static_cast<size_t>(t.cols()));
  for (int64_t r = 0; r < t.rows(); ++r)
    for (int64_t c = 0; c < t.cols(); ++c) out[c].push_back(w[r * t.cols() + c]);
  return out;
}
template <class T>
std::vector<T> pick(const std::vector<T>& v, const std::vector<int64_t>& idx) {
  std::vector<T> out;
  for (int64_t i : idx) out.push_back(v[i]);
  return out;
}
// Entries [u * size, (u + 1) * size) for u in units.
std::vector<int64_t> spans(const std::vector<int64_t>& units, int64_t size) {
  std::vector<int64_t> out;
  for (int64_t u : units)
    for (int64_t i = 0; i < size; ++i) out.push_back(u * size + i);
  return out;
}

void require_round_trips(const Model& m) {
  test::TempDir dir;
  REQUIRE(write_llmc(m, dir.path("p.llmc"), {}).ok());
  auto back = read_llmc(dir.path("p.llmc"));
  REQUIRE(back.ok());
  CHECK(back->config == m.config);
  test::require_same_tensors(m, *back);
  REQUIRE(write_gguf(m, dir.path("p.gguf"), {}).ok());
  auto g = load_model(dir.path("p.gguf"));
  REQUIRE(g.ok());
  CHECK(g->config.all_heads() == m.config.all_heads());
  CHECK(g->config.all_kv_heads() == m.config.all_kv_heads());
  CHECK(g->config.all_hidden() == m.config.all_hidden());
  CHECK(g->config.n_layers == m.config.n_layers);
  test::require_same_tensors(m, *g);
}

}  // namespace

// stories260K: 5 layers, 8 heads / 4 KV heads (2 query heads per group), head_dim 8, FFN 172.
TEST_CASE("prune.heads (query, global): silenced heads are removed, the rest exact, logits unchanged",
          "[prune][structured]") {
  if (!have_stories()) return;
  auto base = load_stories();
  REQUIRE(base.ok());
  // Silence one query head of every KV group in layers 0, 2 and 4 (head 2g + (g + l) % 2): their
  // attn_output columns become 0, so removing them cannot change the logits.
  Model silenced = *base;
  const int64_t hd = base->config.head_dim;
  std::map<int64_t, std::vector<int64_t>> kept_heads;
  for (int64_t l = 0; l < 5; ++l) {
    std::vector<int64_t> kept;
    for (int64_t h = 0; h < 8; ++h) {
      const bool off = l % 2 == 0 && h % 2 == (h / 2 + l) % 2;
      if (off)
        zero_cols(silenced, layer_tensor_name(l, "attn_output.weight"), h * hd, (h + 1) * hd);
      else
        kept.push_back(h);
    }
    kept_heads[l] = kept;
  }
  Model pruned = silenced;
  // 12 of the 40 heads have importance 0: global allocation removes exactly those.
  auto r = run("prune.heads", {{"sparsity", "0.3"}, {"allocation", "global"}, {"unit", "query"}}, pruned);
  REQUIRE(r.ok());
  const ModelConfig& c = pruned.config;
  CHECK(c.all_heads() == std::vector<int64_t>{4, 8, 4, 8, 4});
  CHECK(c.all_kv_heads() == std::vector<int64_t>{4, 4, 4, 4, 4});
  CHECK(c.n_heads == 8);
  REQUIRE(validate_model(pruned).ok());
  for (int64_t l = 0; l < 5; ++l) {
    INFO("layer " << l);
    const auto rows = spans(kept_heads[l], hd);
    CHECK(pruned.get(layer_tensor_name(l, "attn_q.weight")).shape == Shape{{c.heads(l) * hd, 64}});
    CHECK(rows_of(pruned.get(layer_tensor_name(l, "attn_q.weight"))) ==
          pick(rows_of(silenced.get(layer_tensor_name(l, "attn_q.weight"))), rows));
    CHECK(cols_of(pruned.get(layer_tensor_name(l, "attn_output.weight"))) ==
          pick(cols_of(silenced.get(layer_tensor_name(l, "attn_output.weight"))), rows));
    for (const char* s : {"attn_k.weight", "attn_v.weight", "ffn_up.weight"})
      CHECK(rows_of(pruned.get(layer_tensor_name(l, s))) == rows_of(silenced.get(layer_tensor_name(l, s))));
  }
  CHECK(max_abs_diff(logits_of(pruned), logits_of(silenced)) < 1e-4);
  require_round_trips(pruned);
}

TEST_CASE("prune.heads (kv_group, uniform): whole KV groups removed from q/k/v/o, logits unchanged",
          "[prune][structured]") {
  if (!have_stories()) return;
  auto base = load_stories();
  REQUIRE(base.ok());
  Model silenced = *base;
  const int64_t hd = base->config.head_dim;
  std::map<int64_t, std::vector<int64_t>> kept_groups;
  for (int64_t l = 0; l < 5; ++l) {
    // Silence KV groups (l % 4) and ((l + 2) % 4): both of their query heads.
    for (int64_t g : {l % 4, (l + 2) % 4})
      zero_cols(silenced, layer_tensor_name(l, "attn_output.weight"), 2 * g * hd, (2 * g + 2) * hd);
    for (int64_t g = 0; g < 4; ++g)
      if (g != l % 4 && g != (l + 2) % 4) kept_groups[l].push_back(g);
  }
  Model pruned = silenced;
  REQUIRE(run("prune.heads", {{"sparsity", "0.5"}, {"unit", "kv_group"}}, pruned).ok());
  CHECK(pruned.config.n_heads == 4);
  CHECK(pruned.config.n_kv_heads == 2);
  CHECK_FALSE(pruned.config.per_layer_widths());  // uniform allocation: a plain smaller model
  for (int64_t l = 0; l < 5; ++l) {
    INFO("layer " << l);
    const auto kv_rows = spans(kept_groups[l], hd);
    std::vector<int64_t> q_heads;
    for (int64_t g : kept_groups[l]) q_heads.insert(q_heads.end(), {2 * g, 2 * g + 1});
    const auto q_rows = spans(q_heads, hd);
    for (const char* s : {"attn_k.weight", "attn_v.weight"})
      CHECK(rows_of(pruned.get(layer_tensor_name(l, s))) ==
            pick(rows_of(silenced.get(layer_tensor_name(l, s))), kv_rows));
    CHECK(rows_of(pruned.get(layer_tensor_name(l, "attn_q.weight"))) ==
          pick(rows_of(silenced.get(layer_tensor_name(l, "attn_q.weight"))), q_rows));
  }
  CHECK(max_abs_diff(logits_of(pruned), logits_of(silenced)) < 1e-4);
  require_round_trips(pruned);
  // Uniform widths: a Hugging Face export works (non-uniform ones are refused, below).
  test::TempDir dir;
  REQUIRE(write_safetensors(pruned, dir.path("hf"), {}).ok());
}

TEST_CASE("prune.channels (global): silenced FFN channels removed, per-layer widths, logits unchanged",
          "[prune][structured]") {
  if (!have_stories()) return;
  auto base = load_stories();
  REQUIRE(base.ok());
  Model silenced = *base;
  std::map<int64_t, std::vector<int64_t>> kept;
  int64_t silent = 0;
  for (int64_t l = 0; l < 5; ++l) {
    // Layer l silences channels j with j % 5 == l (ffn_down column 0) in layers 1..4 only.
    for (int64_t j = 0; j < 172; ++j) {
      if (l > 0 && j % 5 == l) {
        zero_cols(silenced, layer_tensor_name(l, "ffn_down.weight"), j, j + 1);
        ++silent;
      } else {
        kept[l].push_back(j);
      }
    }
  }
  Model pruned = silenced;
  const double sparsity = static_cast<double>(silent) / (5 * 172);
  REQUIRE(run("prune.channels", {{"sparsity", std::to_string(sparsity)}, {"allocation", "global"}}, pruned).ok());
  std::vector<int64_t> widths;
  for (int64_t l = 0; l < 5; ++l) widths.push_back(static_cast<int64_t>(kept[l].size()));
  CHECK(pruned.config.all_hidden() == widths);
  CHECK(pruned.config.hidden_dim == 172);
  for (int64_t l = 0; l < 5; ++l) {
    INFO("layer " << l);
    for (const char* s : {"ffn_gate.weight", "ffn_up.weight"})
      CHECK(rows_of(pruned.get(layer_tensor_name(l, s))) ==
            pick(rows_of(silenced.get(layer_tensor_name(l, s))), kept[l]));
    CHECK(cols_of(pruned.get(layer_tensor_name(l, "ffn_down.weight"))) ==
          pick(cols_of(silenced.get(layer_tensor_name(l, "ffn_down.weight"))), kept[l]));
  }
  CHECK(max_abs_diff(logits_of(pruned), logits_of(silenced)) < 1e-4);
  require_round_trips(pruned);
  // Hugging Face's LlamaConfig has one intermediate_size: a clear error, and no folder left.
  test::TempDir dir;
  auto hf = write_safetensors(pruned, dir.path("hf"), {});
  REQUIRE_FALSE(hf.ok());
  CHECK(hf.error().code == ErrorCode::kUnsupported);
  CHECK_THAT(hf.error().message, Catch::Contains("differ"));
  CHECK_FALSE(std::filesystem::exists(dir.path("hf")));
}

TEST_CASE("prune.layers: an identity block is the one removed — blocks renumbered, logits unchanged",
          "[prune][structured]") {
  if (!have_stories()) return;
  auto base = load_stories();
  REQUIRE(base.ok());
  Model silenced = *base;
  // Block 2 with zero attn_output and ffn_down adds nothing to the residual stream: angular distance 0.
  zero_cols(silenced, "blk.2.attn_output.weight", 0, 64);
  zero_cols(silenced, "blk.2.ffn_down.weight", 0, 172);
  for (const char* mode : {"individual", "contiguous"}) {
    INFO(mode);
    Model pruned = silenced;
    auto calib = calib_of(pruned, 4, 64);
    auto r = run("prune.layers", {{"count", "1"}, {"mode", mode}}, pruned, calib.get());
    REQUIRE(r.ok());
    CHECK(r->details["removed"] == nlohmann::json::array({2}));
    CHECK(pruned.config.n_layers == 4);
    CHECK(pruned.find("blk.4.attn_q.weight") == nullptr);
    const std::vector<std::pair<int, int>> renumbered = {{0, 0}, {1, 1}, {2, 3}, {3, 4}};
    for (auto [to, from] : renumbered)
      for (const char* s : {"attn_q.weight", "ffn_down.weight", "attn_norm.weight"})
        CHECK(pruned.get(layer_tensor_name(to, s)).to_f32() == silenced.get(layer_tensor_name(from, s)).to_f32());
    CHECK(max_abs_diff(logits_of(pruned), logits_of(silenced)) < 1e-4);
    require_round_trips(pruned);
  }
}

TEST_CASE("structured pruning: per-layer widths survive a later layer removal and quantization",
          "[prune][structured]") {
  if (!have_stories()) return;
  auto base = load_stories();
  REQUIRE(base.ok());
  Model m = *base;
  REQUIRE(run("prune.channels", {{"sparsity", "0.25"}, {"allocation", "global"}}, m).ok());
  REQUIRE(m.config.per_layer_widths());
  const auto hidden = m.config.all_hidden();
  auto calib = calib_of(m, 2, 64);
  auto r = run("prune.layers", {{"count", "2"}}, m, calib.get());
  REQUIRE(r.ok());
  std::vector<int64_t> expect;
  std::set<int64_t> removed;
  for (const auto& l : r->details["removed"]) removed.insert(l.get<int64_t>());
  for (int64_t l = 0; l < 5; ++l)
    if (!removed.count(l)) expect.push_back(hidden[l]);
  CHECK(m.config.all_hidden() == expect);
  REQUIRE(run("quant.rtn", {{"bits", "8"}}, m).ok());
  REQUIRE(validate_model(m).ok());
  for (float v : logits_of(m)) REQUIRE(std::isfinite(v));
  require_round_trips(m);
}

TEST_CASE("structured pruning refuses impossible requests without changing the model", "[prune][structured]") {
  if (!have_stories()) return;
  auto base = load_stories();
  REQUIRE(base.ok());
  struct Case {
    const char* pass;
    std::map<std::string, std::string> options;
    const char* message;
  };
  const Case cases[] = {
      {"prune.heads", {{"sparsity", "1"}}, "sparsity"},
      {"prune.heads", {{"sparsity", "-0.2"}}, "sparsity"},
      {"prune.heads", {{"sparsity", "0.9"}}, "at least one"},  // 1 of 2 query heads per group is the most
      {"prune.heads", {{"sparsity", "0.9"}, {"unit", "kv_group"}}, "at least one"},
      {"prune.heads", {{"sparsity", "0.95"}, {"allocation", "global"}}, "at least one"},
      {"prune.heads", {{"unit", "group"}}, "unit"},
      {"prune.channels", {{"sparsity", "0.999"}}, "at least one"},
      {"prune.channels", {{"allocation", "owl"}}, "allocation"},
      {"prune.channels", {{"multiple_of", "0"}}, "multiple_of"},
      {"prune.layers", {{"count", "5"}}, "leave none"},
      {"prune.layers", {{"sparsity", "1.0"}}, "sparsity"},
      {"prune.layers", {{"mode", "random"}}, "mode"},
  };
  for (const Case& c : cases) {
    INFO(c.pass << " " << c.options.begin()->first << "=" << c.options.begin()->second);
    Model m = *base;
    auto calib = calib_of(m, 1, 32);
    auto r = run(c.pass, c.options, m, calib.get());
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
    CHECK(m.config == base->config);
  }
}

TEST_CASE("llmc prune --pattern heads|channels|layers writes smaller dense models — bad requests leave no output",
          "[prune][structured][cli]") {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  const std::string calib = test::fixture("text/tinyshakespeare.txt");
  if (bin.empty() || tok.empty()) return;
  test::TempDir dir;
  const std::string in = bin + " --tokenizer " + tok + " --threads 1 -o ";
  for (const char* bad :
       {"--pattern heads --sparsity 0.9", "--pattern channels --sparsity 1", "--pattern channels --sparsity 0.9999",
        "--pattern heads --granularity row", "--pattern layers --sparsity 0.2",
        "--pattern layers --method wanda --count 5 --calib ", "--pattern channels --method wanda"}) {
    std::string args = "prune " + in + dir.path("bad.gguf") + " " + bad;
    if (args.back() == ' ') args += calib;
    auto r = test::run_cli(args);
    INFO(bad << ": " << r.output);
    CHECK(r.exit_code != 0);
    CHECK_FALSE(std::filesystem::exists(dir.path("bad.gguf")));
  }
  auto r =
      test::run_cli("prune " + in + dir.path("c.gguf") + " --pattern channels --sparsity 0.25 --allocation global");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("parameters"));
  auto m = load_model(dir.path("c.gguf"));
  REQUIRE(m.ok());
  int64_t hidden = 0;
  for (int64_t h : m->config.all_hidden()) hidden += h;
  CHECK(hidden == 5 * 172 - std::llround(0.25 * 5 * 172));
  r = test::run_cli("prune " + in + dir.path("l.llmc") + " --pattern layers --count 1 --method wanda --calib " + calib +
                    " --calib-samples 2 --calib-ctx 64");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto l = read_llmc(dir.path("l.llmc"));
  REQUIRE(l.ok());
  CHECK(l->config.n_layers == 4);
}
