// Evaluation on real models: stories260K against golden.json and TinyStories, SmolLM2 KLD/PPL, the CLI reports.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/tokenizer.h"
#include "runtime/runtime.h"
#include "stories.h"
#include "test_util.h"
#include "verify/perplexity.h"
#include "verify/report.h"

using namespace llmc;

using test::load_stories;
using test::Stories;

TEST_CASE("stories260K: NLL of the golden sentence matches llama2.c's", "[verify]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  const std::string golden_path = llmc::test::fixture("models/stories260K/golden.json");
  auto golden_text = read_text_file(golden_path);
  REQUIRE(golden_text.ok());
  const auto golden = nlohmann::json::parse(*golden_text)["nll"];
  const std::vector<int32_t> ids = s.tokenizer->encode(golden["sentence"].get<std::string>(), true);
  REQUIRE(static_cast<int64_t>(ids.size()) == golden["n_tokens"].get<int64_t>());
  RuntimeOptions one_thread;
  one_thread.threads = 1;  // tiny model: waking threads costs more than it saves
  auto rt = Runtime::create(s.model, one_thread);
  REQUIRE(rt.ok());
  const int64_t vocab = (*rt)->vocab_size();
  std::vector<float> logits(ids.size() * static_cast<size_t>(vocab));
  REQUIRE((*rt)->forward(ids, 0, logits.data(), true).ok());
  double nll = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) nll += token_nll(logits.data() + i * vocab, vocab, ids[i + 1]);
  CHECK(nll ==
        Approx(golden["fp32_model"]["nll"].get<double>()).margin(golden["fp32_model"]["tolerance"].get<double>()));
}

TEST_CASE("stories260K: perplexity on TinyStories and KLD against itself", "[verify]") {
  Stories s = load_stories();
  if (!s.tokenizer) return;
  auto text = read_text_file(llmc::test::fixture("text/tinystories-sample.txt"));
  REQUIRE(text.ok());
  RuntimeOptions ropt;
  ropt.max_context = 256;
  ropt.threads = 1;
  auto model = Runtime::create(s.model, ropt);
  auto ref = Runtime::create(s.model, ropt);
  REQUIRE(model.ok());
  REQUIRE(ref.ok());
  EvalOptions opt;
  opt.ctx = 256;
  opt.max_chunks = 8;
  auto r = evaluate_text(**model, ref->get(), *s.tokenizer, *text, opt);
  REQUIRE(r.ok());
  CHECK(r->add_bos);
  CHECK(r->chunks == 8);
  CHECK(r->scored_tokens == 8 * 127);
  // Plausible: far below the uniform 512 of an untrained model, above the golden sentence's 4.95.
  CHECK(r->ppl.ppl > 4);
  CHECK(r->ppl.ppl < 40);
  REQUIRE(r->kld.has_value());
  CHECK(r->kld->kld.mean == Approx(0).margin(1e-9));
  CHECK(r->kld->same_top.mean == 1.0);
  CHECK(r->kld->ppl_ratio == Approx(1.0).epsilon(1e-9));
}

TEST_CASE("llmc eval and bench write valid reports", "[verify]") {
  const std::string bin = llmc::test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = llmc::test::fixture("models/stories260K/tok512.bin");
  const std::string text = llmc::test::fixture("text/tinystories-sample.txt");
  if (bin.empty() || tok.empty() || text.empty()) return;
  llmc::test::TempDir dir;
  const std::string json = dir.path("eval.json"), md = dir.path("eval.md");
  auto r = llmc::test::run_cli("eval " + bin + " --tokenizer " + tok + " --data " + text +
                               " --ctx 64 --max-chunks 4 --threads 1 --ref " + bin + " --json " + json + " --md " + md);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("perplexity:") != std::string::npos);
  auto report = Json::parse(llmc::test::read_file_bytes(json));
  CHECK(validate_report(report).ok());
  CHECK(report["metrics"]["chunks"] == 4);
  CHECK(report["metrics"]["vs_reference"]["kld"]["mean"].get<double>() == Approx(0).margin(1e-9));
  CHECK(report["model"]["file_bytes"] == llmc::test::read_file_bytes(bin).size());
  CHECK(!llmc::test::read_file_bytes(md).empty());
  // An existing report is not replaced without --force; a bad option is a usage error.
  auto again = llmc::test::run_cli("eval " + bin + " --tokenizer " + tok + " --data " + text + " --json " + json);
  CHECK(again.exit_code == 4);
  CHECK(llmc::test::run_cli("eval " + bin + " --data " + text + " --ctx 1").exit_code == 2);
  // Quality gates: PPL of a 260K-parameter model is far above 1.5; a model agrees with itself.
  const std::string quick =
      "eval " + bin + " --tokenizer " + tok + " --data " + text + " --ctx 64 --max-chunks 2 --threads 1";
  CHECK(llmc::test::run_cli(quick + " --max-ppl 1.5").exit_code == 3);
  CHECK(llmc::test::run_cli(quick + " --max-ppl 1000").exit_code == 0);
  CHECK(llmc::test::run_cli(quick + " --ref " + bin + " --min-same-top 0.999 --max-kld 1e-6").exit_code == 0);
  CHECK(llmc::test::run_cli(quick + " --max-kld 0.1").exit_code == 3);  // needs --ref

  // --activations: a 4-bit RTN file against the f32 model, with two int8 activation parts, one, or
  // the default (auto: one part for 4-bit codes); the mode is in the report; an unknown mode is a
  // usage error.
  const std::string q4 = dir.path("q4.llmc");
  auto q = llmc::test::run_cli("quantize " + bin + " --tokenizer " + tok + " -o " + q4 +
                               " --bits 4 --group-size 32 --method rtn --threads 1");
  INFO(q.output);
  REQUIRE(q.exit_code == 0);
  double kld[3] = {0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    const std::string mode = i == 0 ? "int8x2" : i == 1 ? "int8" : "auto", path = dir.path("q4-" + mode + ".json");
    auto e = llmc::test::run_cli("eval " + q4 + " --data " + text + " --ctx 64 --max-chunks 4 --threads 1 --ref " +
                                 bin + " --tokenizer " + tok + " --activations " + mode + " --json " + path);
    INFO(e.output);
    REQUIRE(e.exit_code == 0);
    auto j = Json::parse(llmc::test::read_file_bytes(path));
    CHECK(validate_report(j).ok());
    CHECK(j["metrics"]["activations"] == mode);
    kld[i] = j["metrics"]["vs_reference"]["kld"]["mean"].get<double>();
  }
  INFO("mean KLD int8x2 " << kld[0] << ", int8 " << kld[1] << ", auto " << kld[2]);
  // One part rounds activations ~128x coarser than two, but with a scale per 8 columns it costs a
  // fraction of the 4-bit weights' own error (either way on 4 short chunks).
  CHECK(kld[1] != kld[0]);
  CHECK(std::fabs(kld[1] - kld[0]) < 0.02 * kld[0]);
  CHECK(kld[2] == kld[1]);  // auto: one part for 4-bit codes
  CHECK(llmc::test::run_cli(quick + " --activations int4").exit_code == 2);

  const std::string bjson = dir.path("bench.json");
  auto b = llmc::test::run_cli("bench " + bin +
                               " --threads 1 --prompt-tokens 16 --gen-tokens 8 --repeat 2 --membw-mib 64 --json " +
                               bjson + " --md -");
  INFO(b.output);
  REQUIRE(b.exit_code == 0);
  CHECK(b.output.find("# llmc bench report") != std::string::npos);
  auto bench = Json::parse(llmc::test::read_file_bytes(bjson));
  CHECK(validate_report(bench).ok());
  CHECK(bench["metrics"]["decode_tokens_per_second"]["median"].get<double>() > 0);
  CHECK(bench["machine"]["memory_bandwidth"]["gb_per_s"].get<double>() > 0);
  CHECK(bench["metrics"]["bandwidth_fraction"].get<double>() > 0);
}

TEST_CASE("SmolLM2: KLD against itself is zero with full agreement", "[verify][heavy]") {
  // The reference always runs with two int8 activation parts (cmd_eval.cpp): with the same mode
  // the model matches it exactly; under the default (auto: one part for the GGUF's 4-bit weights)
  // the KLD is the small cost of that mode.
  const std::string path = llmc::test::smollm2_path();
  const std::string text = llmc::test::fixture("text/wikitext2-test.txt");
  if (path.empty() || text.empty()) return;
  llmc::test::TempDir dir;
  const auto vs_reference = [&](const std::string& mode) {
    const std::string json = dir.path("kld-" + mode + ".json");
    auto r = llmc::test::run_cli("eval " + path + " --ref " + path + " --data " + text +
                                 " --ctx 128 --max-chunks 2 --activations " + mode + " --json " + json);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto report = Json::parse(llmc::test::read_file_bytes(json));
    REQUIRE(validate_report(report).ok());
    return report["metrics"]["vs_reference"];
  };
  const auto k = vs_reference("int8x2");
  CHECK(k["kld"]["mean"].get<double>() == Approx(0).margin(1e-9));
  CHECK(k["kld"]["max"].get<double>() == Approx(0).margin(1e-9));
  CHECK(k["same_top"]["mean"].get<double>() == 1.0);
  CHECK(k["delta_p"]["rms"].get<double>() == Approx(0).margin(1e-9));
  const auto a = vs_reference("auto");
  CHECK(a["kld"]["mean"].get<double>() > 0);
  CHECK(a["kld"]["mean"].get<double>() < 0.01);
  CHECK(a["same_top"]["mean"].get<double>() > 0.95);
}

TEST_CASE("SmolLM2: wikitext-2 perplexity, ctx 512, first 20 chunks", "[verify][heavy]") {
  const std::string path = llmc::test::smollm2_path();
  const std::string text = llmc::test::fixture("text/wikitext2-test.txt");
  if (path.empty() || text.empty()) return;
  llmc::test::TempDir dir;
  const std::string json = dir.path("ppl.json");
  auto r = llmc::test::run_cli("eval " + path + " --data " + text + " --ctx 512 --max-chunks 20 --json " + json);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto report = Json::parse(llmc::test::read_file_bytes(json));
  REQUIRE(validate_report(report).ok());
  const double ppl = report["metrics"]["perplexity"]["ppl"].get<double>();
  WARN("SmolLM2-135M-Instruct Q4_1, wikitext2-test, ctx 512, 20 chunks: PPL "
       << ppl << " ± " << report["metrics"]["perplexity"]["ppl_stderr"]);
  // Published WikiText-2 figures for SmolLM2-135M are ~25 (fp16 base, apple/coreai-models PR #197)
  // and ~31 (Instruct Q4_K_M, huggingface.co/Orivael-SRD-Lab/smollm2-135m-srd4); the tokenized
  // (<unk>, @-@) split and 20 chunks shift this, so only a factor-of-two band is asserted.
  CHECK(ppl > 12);
  CHECK(ppl < 65);
}
