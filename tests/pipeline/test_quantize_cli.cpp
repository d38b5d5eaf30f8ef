// `llmc quantize` / `llmc compress` end to end on stories260K: outputs load with the asked
// encodings and the resolved recipe in provenance; bad options fail with clear errors and leave no
// file; same input/recipe/seed give byte-identical files on 1 and 2 threads.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/llmc.h"
#include "formats/model_io.h"
#include "pipeline/cli_test_util.h"
#include "test_util.h"

using namespace llmc;
using llmc::test::run_cli;

namespace {

using Stories = llmc::test::StoriesCli;
using llmc::test::files_in;
Stories stories() { return llmc::test::stories_cli(); }

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Runs a command that must fail: exit code `code`, message fragments, and no file created.
void require_refused(const llmc::test::TempDir& dir, const std::string& args, int code,
                     std::initializer_list<const char*> fragments) {
  INFO(args);
  const size_t before = files_in(dir);
  auto r = run_cli(args);
  INFO(r.output);
  CHECK(r.exit_code == code);
  for (const char* f : fragments) CHECK(r.output.find(f) != std::string::npos);
  CHECK(files_in(dir) == before);
}

}  // namespace

TEST_CASE("quantize: RTN 4-bit output has the asked encodings and the resolved recipe", "[cli][quantize]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  const std::string out = dir.path("q4.llmc");
  auto r = run_cli("quantize " + s.in() + " -o " + out +
                   " --bits 4 --group-size 32 --scheme asym --keep "
                   "'token_embd\\.weight' --threads 1");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("bits per weight") != std::string::npos);
  CHECK(r.output.find("peak RSS") != std::string::npos);

  auto f = open_llmc(out);
  REQUIRE(f.ok());
  for (const Tensor& t : f->model.tensors()) {
    INFO(t.name);
    const bool linear = t.shape.dims.size() == 2 && t.name != "token_embd.weight";
    const auto* q = std::get_if<QuantEncoding>(&t.encoding->node);
    REQUIRE((q != nullptr) == linear);
    if (q) {
      CHECK(q->bits == 4);
      CHECK(q->group_size == 32);
      CHECK(q->scheme == QuantScheme::kAsymmetric);
    }
  }
  auto recipe = nlohmann::json::parse(f->provenance.recipe);
  CHECK(recipe["stages"][0]["pass"] == "quant.rtn");
  CHECK(recipe["stages"][0]["options"]["bits"] == 4);
  CHECK(recipe["stages"][0]["ignore"][0] == "token_embd\\.weight");
  CHECK(f->provenance.input_path.find("stories260K.bin") != std::string::npos);
}

TEST_CASE("quantize --qat-steps: a quant.qat stage after the quantization keeps the encodings", "[cli][quantize]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  const std::string out = dir.path("qat.llmc");
  auto r =
      run_cli("quantize " + s.in() + " -o " + out +
              " --bits 3 --scheme sym --qat-steps 2 --qat-noise 0.2 --qat-mode block --calib-self 2 --calib-ctx 32 "
              "--threads 1");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto f = open_llmc(out);
  REQUIRE(f.ok());
  for (const Tensor& t : f->model.tensors())
    if (const auto* q = std::get_if<QuantEncoding>(&t.encoding->node)) {
      CHECK(q->bits == 3);
      CHECK(q->scheme == QuantScheme::kSymmetric);
    }
  auto recipe = nlohmann::json::parse(f->provenance.recipe);
  REQUIRE(recipe["stages"].size() == 2);
  CHECK(recipe["stages"][1]["pass"] == "quant.qat");
  CHECK(recipe["stages"][1]["options"]["steps"] == 2);
  CHECK(recipe["stages"][1]["options"]["noise"] == 0.2);
  CHECK(recipe["stages"][1]["options"]["mode"] == "block");
}

TEST_CASE("quantize --true-sequential=false: recorded in the recipe, another calibration than the default",
          "[cli][quantize]") {
  const Stories s = stories();
  const std::string text = llmc::test::fixture("text/tinyshakespeare.txt");
  if (!s.ok() || text.empty()) return;
  llmc::test::TempDir dir;
  const std::string common =
      " --method gptq --bits 3 --calib " + text + " --calib-samples 4 --calib-ctx 64 --threads 1";
  const std::string staged = dir.path("staged.llmc"), blockwise = dir.path("blockwise.llmc");
  auto r1 = run_cli("quantize " + s.in() + " -o " + staged + common);
  INFO(r1.output);
  REQUIRE(r1.exit_code == 0);
  auto r2 = run_cli("quantize " + s.in() + " -o " + blockwise + common + " --true-sequential=false");
  INFO(r2.output);
  REQUIRE(r2.exit_code == 0);
  auto a = open_llmc(staged);
  auto b = open_llmc(blockwise);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(nlohmann::json::parse(a->provenance.recipe)["stages"][0]["options"]["true_sequential"] == true);
  CHECK(nlohmann::json::parse(b->provenance.recipe)["stages"][0]["options"]["true_sequential"] == false);
  // q/k/v see the block input either way; o, gate/up and down are calibrated on different inputs.
  CHECK(a->model.get("blk.0.attn_q.weight").to_f32() == b->model.get("blk.0.attn_q.weight").to_f32());
  CHECK(a->model.get("blk.0.ffn_down.weight").to_f32() != b->model.get("blk.0.ffn_down.weight").to_f32());
}

TEST_CASE("quantize --calib-ram 0: activations spilled to TMPDIR, the same output file", "[cli][quantize]") {
  const Stories s = stories();
  const std::string text = llmc::test::fixture("text/tinyshakespeare.txt");
  if (!s.ok() || text.empty()) return;
  llmc::test::TempDir dir;
  const std::string spill = dir.path("spill");
  std::filesystem::create_directory(spill);
  const std::string common = " --method gptq --bits 3 --calib " + text + " --calib-samples 4 --calib-ctx 64";
  const std::string in_memory = dir.path("memory.llmc"), spilled = dir.path("spilled.llmc");
  auto r1 = run_cli("quantize " + s.in() + " -o " + in_memory + common);
  INFO(r1.output);
  REQUIRE(r1.exit_code == 0);
  CHECK(r1.output.find("temporary file") == std::string::npos);
  auto r2 = run_cli("quantize " + s.in() + " -o " + spilled + common + " --calib-ram 0");
  INFO(r2.output);
  REQUIRE(r2.exit_code == 0);
  CHECK(r2.output.find("go to a temporary file in ") != std::string::npos);
  CHECK(llmc::test::read_file_bytes(in_memory) == llmc::test::read_file_bytes(spilled));
  // TMPDIR chooses the directory; one that does not exist is a clear error, and nothing is written.
  const std::string missing = dir.path("missing.llmc");
  auto r3 =
      run_cli("quantize " + s.in() + " -o " + missing + common + " --calib-ram 0", "TMPDIR=" + dir.path("no-such-dir"));
  CHECK(r3.exit_code != 0);
  CHECK(r3.output.find("calibration spill file: cannot create a temporary file in " + dir.path("no-such-dir")) !=
        std::string::npos);
  CHECK(!std::filesystem::exists(missing));
  auto r4 = run_cli("quantize " + s.in() + " -o " + missing + common + " --calib-ram 0", "TMPDIR=" + spill);
  INFO(r4.output);
  CHECK(r4.exit_code == 0);
  CHECK(std::filesystem::is_empty(spill));  // the spill file had no name
}

TEST_CASE("quantize: built tensors wait in a scratch file in TMPDIR, or in memory without one: the same file",
          "[cli][quantize]") {
  const Stories s = stories();
  const std::string text = llmc::test::fixture("text/tinyshakespeare.txt");
  if (!s.ok() || text.empty()) return;
  llmc::test::TempDir dir;
  const std::string tmp = dir.path("tmp");
  std::filesystem::create_directory(tmp);
  for (const std::string& method :
       {std::string("rtn --bits 4"), "gptq --bits 3 --calib " + text + " --calib-samples 4 --calib-ctx 64"}) {
    INFO(method);
    const std::string scratch = dir.path("scratch.llmc"), memory = dir.path("memory.llmc");
    auto r1 = run_cli("quantize " + s.in() + " -o " + scratch + " --force --method " + method, "TMPDIR=" + tmp);
    INFO(r1.output);
    REQUIRE(r1.exit_code == 0);
    CHECK(r1.output.find("stay in memory") == std::string::npos);
    CHECK(std::filesystem::is_empty(tmp));  // the scratch file had no name
    auto r2 = run_cli("quantize " + s.in() + " -o " + memory + " --force --method " + method,
                      "TMPDIR=" + dir.path("no-such-dir"));
    INFO(r2.output);
    REQUIRE(r2.exit_code == 0);
    CHECK(r2.output.find("scratch file: cannot create a temporary file in " + dir.path("no-such-dir") +
                         ": No such file or directory; tensors stay in memory") != std::string::npos);
    CHECK(llmc::test::read_file_bytes(scratch) == llmc::test::read_file_bytes(memory));
  }
}

// QAT in block mode: one step per half-block on 256-token sequences (the training state and the
// activations at their full size; more steps or sequences add time, not memory, as the hidden
// states go to a file).
TEST_CASE("quantize: peak RSS stays below the size of SmolLM2's 4-bit GGUF with RTN or GPTQ or QAT",
          "[cli][quantize][heavy]") {
  const std::string path = llmc::test::smollm2_path();
  const std::string text = llmc::test::fixture("text/tinyshakespeare.txt");
  if (path.empty() || text.empty()) return;
  llmc::test::TempDir dir;
  const double input_mib = static_cast<double>(std::filesystem::file_size(path)) / (1 << 20);
  for (const std::string& method :
       {std::string("rtn --bits 4"),
        "gptq --bits 4 --group-size 128 --calib " + text + " --calib-samples 4 --calib-ctx 128",
        "rtn --bits 4 --group-size 128 --calib " + text + " --calib-samples 4 --calib-ctx 256 --qat-steps 1"}) {
    INFO(method);
    auto r = run_cli("quantize " + path + " -o " + dir.path("out.llmc") + " --force --json - --method " + method);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    const auto json = nlohmann::json::parse(r.output.substr(r.output.find("{\n")));
    const double rss = json.at("peak_rss_mib").get<double>();
    INFO("peak RSS " << rss << " MiB, input " << input_mib << " MiB");
    CHECK(rss < input_mib);
  }
}

// Quantization-aware distillation of SmolLM2 widened to f16 (258 MiB) picks block mode and stays
// far below the input's size (model mode would hold gigabytes of f32 copies and gradients).
TEST_CASE("quantize --qat-steps: SmolLM2 in f16 trains block by block below the input's size",
          "[cli][quantize][heavy]") {
  const std::string path = llmc::test::smollm2_path();
  const std::string text = llmc::test::fixture("text/tinyshakespeare.txt");
  if (path.empty() || text.empty()) return;
  llmc::test::TempDir dir;
  const std::string f16 = dir.path("smol-f16.gguf");
  auto c = run_cli("convert " + path + " -o " + f16 + " --dtype f16");
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  const double input_mib = static_cast<double>(std::filesystem::file_size(f16)) / (1 << 20);
  auto r = run_cli("quantize " + f16 + " -o " + dir.path("out.llmc") + " --json - --bits 4 --group-size 128 --calib " +
                   text + " --calib-samples 2 --calib-ctx 64 --qat-steps 1");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const auto json = nlohmann::json::parse(r.output.substr(r.output.find("{\n")));
  const auto& qat = json.at("pipeline").at("passes").at(1);
  CHECK(qat.at("pass") == "quant.qat");
  CHECK(qat.at("details").at("mode") == "block");
  CHECK(qat.at("details").at("blocks").size() == 30);
  const double rss = json.at("peak_rss_mib").get<double>();
  INFO("peak RSS " << rss << " MiB, input " << input_mib << " MiB");
  CHECK(rss < 0.5 * input_mib);
}

TEST_CASE("compress: a recipe with overrides, GGUF output chosen by extension", "[cli][compress]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  const std::string recipe = dir.path("r.yaml");
  write_text(recipe, R"(seed: 3
stages:
  - pass: quant.rtn
    options: {bits: 4, scheme: sym, group_size: 32}
    overrides:
      - match: 'blk\.0\..*'
        options: {bits: 8}
)");
  const std::string out = dir.path("r.llmc");
  auto r = run_cli("compress " + s.in() + " -o " + out + " --recipe " + recipe);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto m = load_model(out);
  REQUIRE(m.ok());
  for (const char* name :
       {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.3.attn_q.weight", "token_embd.weight"}) {
    INFO(name);
    const auto* q = std::get_if<QuantEncoding>(&m->get(name).encoding->node);
    REQUIRE(q);
    CHECK(q->bits == (std::string(name).rfind("blk.0.", 0) == 0 ? 8 : 4));
    CHECK(q->scheme == QuantScheme::kSymmetric);
  }
  // Reusing the provenance's resolved recipe as a recipe gives the same file.
  auto f = open_llmc(out);
  REQUIRE(f.ok());
  const std::string resolved = dir.path("resolved.yaml");
  write_text(resolved, f->provenance.recipe);
  const std::string out2 = dir.path("r2.llmc");
  REQUIRE(run_cli("compress " + s.in() + " -o " + out2 + " --recipe " + resolved).exit_code == 0);
  auto f2 = open_llmc(out2);
  REQUIRE(f2.ok());
  CHECK(f2->provenance.recipe == f->provenance.recipe);
  for (const Tensor& t : f->model.tensors()) {
    INFO(t.name);
    CHECK(t.to_f32() == f2->model.get(t.name).to_f32());
  }

  const std::string gguf = dir.path("q8.gguf");
  REQUIRE(run_cli("quantize " + s.in() + " -o " + gguf + " --bits 8 --scheme sym --group-size 32").exit_code == 0);
  auto g = load_model(gguf);
  REQUIRE(g.ok());
  CHECK(g->tensors().size() == m->tensors().size());
}

TEST_CASE("quantize/compress: bad options give clear errors and no output", "[cli][quantize]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  const std::string out = dir.path("o.llmc");
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --bits 9", 2, {"bits"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --group-size 0", 2, {"group size must be >= 1"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --keep 'blk['", 2, {"blk["});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --calib a.txt --calib-self 4", 2, {"exclude"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --method frob", 2, {"method"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --target-bpw 1 --probe none", 2, {"target"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --method gptq", 2, {"calibration", "--calib"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --damp 0.1", 2, {"damp", "quant.rtn"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --qat-steps 5", 2, {"calibration", "quant.qat"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --qat-noise 0.1", 2, {"--qat-steps"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --qat-mode block", 2, {"--qat-steps"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --qat-steps 2 --calib-self 2 --qat-mode layer", 2,
                  {"--qat-mode", "layer"});
  const std::string text = llmc::test::fixture("text/tinyshakespeare.txt");
  if (!text.empty())  // stories260K.bin alone has no tokenizer (llama2.c keeps it in tok512.bin)
    require_refused(dir, "quantize " + s.bin + " -o " + out + " --method gptq --calib " + text, 2, {"tokenizer"});
  const std::string short_text = dir.path("short.txt");
  write_text(short_text, "Once upon a time there was a cat.\n");
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --method gptq --calib " + short_text, 2,
                  {"short.txt", "too short"});
  const std::string recipe = dir.path("bad.yaml");
  write_text(recipe, "stages:\n  - pass: quant.rtn\n    options: {bits: 4}\n    tragets: ['x']\n");
  require_refused(dir, "compress " + s.in() + " -o " + out + " --recipe " + recipe, 1, {"tragets", "line 4"});
  write_text(recipe, "stages:\n  - pass: quant.rtn\n    options: {bitz: 4}\n");
  require_refused(dir, "compress " + s.in() + " -o " + out + " --recipe " + recipe, 1, {"bitz", "line 3"});
  write_text(recipe, "stages:\n  - pass: quant.rtn\n    options: {bits: 4}\n");
  REQUIRE(run_cli("compress " + s.in() + " -o " + out + " --recipe " + recipe).exit_code == 0);
  require_refused(dir, "compress " + s.in() + " -o " + out + " --recipe " + recipe, 4, {"--force"});
}

TEST_CASE("quantize/compress: a selector that matches no tensor is an error naming it", "[cli][quantize]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  const std::string out = dir.path("o.llmc");
  // Full match: 'token_embd' is not 'token_embd.weight'; the hint shows a name it occurs in.
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --keep token_embd", 2,
                  {"'token_embd'", "matches no tensor", "token_embd.weight", "whole name"});
  require_refused(dir, "quantize " + s.in() + " -o " + out + " --keep 'token_embd\\.weight' --keep 'blk\\.9\\..*'", 2,
                  {"blk\\.9\\..*", "matches no tensor"});
  const std::string recipe = dir.path("r.yaml");
  struct Case {
    const char* yaml;
    const char* expr;
  };
  const Case cases[] = {
      {"    targets: ['blk\\.0\\.attn_q']\n", "blk\\.0\\.attn_q"},
      {"    ignore: ['output\\.weight']\n", "output\\.weight"},  // stories260K's head is tied
      {"    overrides:\n      - match: 'blk\\.7\\..*'\n        options: {bits: 8}\n", "blk\\.7\\..*"},
  };
  for (const Case& c : cases) {
    write_text(recipe, std::string("stages:\n  - pass: quant.rtn\n    options: {bits: 4}\n") + c.yaml);
    require_refused(dir, "compress " + s.in() + " -o " + out + " --recipe " + recipe, 1,
                    {c.expr, "matches no tensor", "stage 1 (quant.rtn)"});
  }
  // The same expressions, matching: accepted.
  write_text(recipe,
             "stages:\n  - pass: quant.rtn\n    options: {bits: 4}\n    targets: ['blk\\..*']\n"
             "    ignore: ['blk\\.0\\.attn_q\\.weight']\n    overrides:\n      - match: 'blk\\.4\\..*'\n"
             "        options: {bits: 8}\n");
  auto r = run_cli("compress " + s.in() + " -o " + out + " --recipe " + recipe);
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("quantize: same input, recipe and seed give byte-identical files on 1 and 2 threads",
          "[cli][quantize][determinism][heavy]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  struct Case {
    const char* name;
    std::string args;
  };
  std::vector<Case> cases = {
      {"rtn", "--bits 4 --group-size 32 --clip-search 10"},
      {"rtn3-sym", "--bits 3 --scheme sym --group-size row"},
  };
  const std::string text = llmc::test::fixture("text/tinyshakespeare.txt");
  if (!text.empty()) {
    cases.push_back({"gptq", "--method gptq --bits 4 --calib " + text + " --calib-samples 8 --calib-ctx 64"});
    cases.push_back({"gptq-blockwise", "--method gptq --bits 4 --true-sequential=false --calib " + text +
                                           " --calib-samples 8 --calib-ctx 64"});
  }
  for (const Case& c : cases) {
    INFO(c.name);
    const std::string a = dir.path(std::string(c.name) + "-t1.llmc"), b = dir.path(std::string(c.name) + "-t2.llmc");
    auto r1 = run_cli("quantize " + s.in() + " -o " + a + " --seed 5 --threads 1 " + c.args);
    INFO(r1.output);
    REQUIRE(r1.exit_code == 0);
    auto r2 = run_cli("quantize " + s.in() + " -o " + b + " --seed 5 --threads 2 " + c.args);
    INFO(r2.output);
    REQUIRE(r2.exit_code == 0);
    CHECK(llmc::test::read_file_bytes(a) == llmc::test::read_file_bytes(b));
  }
}
