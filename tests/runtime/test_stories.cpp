// The runtime on the real stories260K model against golden.json (llama2.c's own greedy story and
// sentence NLLs under the fp32 and int8 checkpoints), in process and through `llmc generate`.
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/model_io.h"
#include "model/tokenizer.h"
#include "runtime/runtime.h"
#include "runtime/sampling.h"
#include "test_util.h"

using namespace llmc;

namespace {

nlohmann::json golden() {
  const std::string path = test::fixture("models/stories260K/golden.json");
  if (path.empty()) return {};
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

Result<Model> load_stories(const char* file) {
  LoadOptions o;
  o.tokenizer_path = test::fixture("models/stories260K/tok512.bin");
  return load_model(test::fixture(std::string("models/stories260K/") + file), o);
}

// llama2.c run.c's decode(): the token's text, a leading space dropped after BOS, <0xHH> as a byte.
// (The IR stores SentencePiece's U+2581 for spaces.)
std::string run_c_piece(const TokenizerData& tok, int32_t prev, int32_t id) {
  std::string piece;
  const std::string& raw = tok.tokens[static_cast<size_t>(id)];
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw.compare(i, 3, "\xe2\x96\x81") == 0) {
      piece += ' ';
      i += 2;
    } else {
      piece += raw[i];
    }
  }
  if (prev == 1 && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  unsigned byte = 0;
  if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1)
    piece = std::string(1, static_cast<char>(byte));
  return piece;
}

double sentence_nll(const Model& m, const std::vector<int32_t>& ids, int64_t activation_q8_group = 0) {
  RuntimeOptions o;
  o.activation_q8_group = activation_q8_group;
  auto rt = Runtime::create(m, o);
  REQUIRE(rt.ok());
  const int64_t vocab = m.config.vocab_size;
  std::vector<float> logits(ids.size() * static_cast<size_t>(vocab));
  REQUIRE((*rt)->forward(ids, 0, logits.data(), true).ok());
  double nll = 0;
  std::vector<double> lp;
  for (size_t i = 1; i < ids.size(); ++i) {
    log_softmax(std::span<const float>(logits.data() + (i - 1) * vocab, static_cast<size_t>(vocab)), lp);
    nll -= lp[static_cast<size_t>(ids[i])];
  }
  return nll;
}

}  // namespace

TEST_CASE("stories260K greedy story from BOS reproduces llama2.c's golden text", "[runtime][stories]") {
  const auto g = golden();
  if (g.is_null()) return;
  auto m = load_stories("stories260K.bin");
  REQUIRE(m.ok());
  const int64_t steps = g["greedy"]["steps"].get<int64_t>();
  auto rt = Runtime::create(*m, RuntimeOptions{});
  REQUIRE(rt.ok());
  std::vector<float> logits(static_cast<size_t>(m->config.vocab_size));
  int32_t token = 1;  // BOS
  std::string text;
  for (int64_t pos = 0; pos < steps; ++pos) {  // as run.c: forward positions 0..steps-1, print each pick
    REQUIRE((*rt)->forward({&token, 1}, pos, logits.data(), false).ok());
    const int32_t next = argmax(logits);
    if (next == 1) break;
    text += run_c_piece(m->tokenizer, token, next);
    token = next;
  }
  CHECK(text == g["greedy"]["text"].get<std::string>());
}

TEST_CASE("stories260K sentence NLL matches golden.json (fp32)", "[runtime][stories]") {
  const auto g = golden();
  if (g.is_null()) return;
  auto m = load_stories("stories260K.bin");
  REQUIRE(m.ok());
  auto tok = Tokenizer::create(m->tokenizer);
  REQUIRE(tok.ok());
  const auto ids = (*tok)->encode(g["nll"]["sentence"].get<std::string>(), true);
  REQUIRE(static_cast<int64_t>(ids.size()) == g["nll"]["n_tokens"].get<int64_t>());
  const double nll_fp32 = sentence_nll(*m, ids);
  CAPTURE(nll_fp32);
  CHECK(std::fabs(nll_fp32 - g["nll"]["fp32_model"]["nll"].get<double>()) <=
        g["nll"]["fp32_model"]["tolerance"].get<double>());
}

// golden.json's int8 figure is llama2.c runq.c's: int8 activations in groups of 4 (the checkpoint's
// group size) and float32 arithmetic in runq.c's order. One activation sits within a float ulp of a
// rounding tie (docs/runtime.md), so only the exact emulation lands inside the tolerance; the
// weights-only dequantized forward pass gives 54.412, outside it.
TEST_CASE("stories260K_q8 sentence NLL matches golden.json (runq.c emulation)", "[runtime][stories]") {
  const auto g = golden();
  if (g.is_null()) return;
  auto m = load_stories("stories260K.bin");
  REQUIRE(m.ok());
  auto tok = Tokenizer::create(m->tokenizer);
  REQUIRE(tok.ok());
  const auto ids = (*tok)->encode(g["nll"]["sentence"].get<std::string>(), true);
  auto q8 = load_stories("stories260K_q8.bin");
  REQUIRE(q8.ok());
  const double golden_nll = g["nll"]["q8_model"]["nll"].get<double>();
  const double tolerance = g["nll"]["q8_model"]["tolerance"].get<double>();
  const double nll_q8 = sentence_nll(*q8, ids, 4);
  CAPTURE(nll_q8);
  CHECK(std::fabs(nll_q8 - golden_nll) <= tolerance);
  // Prefill and token-by-token decode (runq.c's only mode) give the same figure.
  RuntimeOptions o;
  o.activation_q8_group = 4;
  auto rt = Runtime::create(*q8, o);
  REQUIRE(rt.ok());
  std::vector<float> logits(static_cast<size_t>(q8->config.vocab_size));
  std::vector<double> lp;
  double nll_decode = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    REQUIRE((*rt)->forward({&ids[i], 1}, static_cast<int64_t>(i), logits.data(), false).ok());
    log_softmax(logits, lp);
    nll_decode -= lp[static_cast<size_t>(ids[i + 1])];
  }
  CHECK(nll_decode == nll_q8);
  // Without the int8 activations the figure is the weights-only one, not golden's.
  CHECK(std::fabs(sentence_nll(*q8, ids) - golden_nll) > tolerance);
}

TEST_CASE("runq.c emulation refuses weights runq.c cannot run", "[runtime][stories]") {
  if (golden().is_null()) return;
  auto fp32 = load_stories("stories260K.bin");
  REQUIRE(fp32.ok());
  RuntimeOptions o;
  o.activation_q8_group = 4;
  auto rt = Runtime::create(*fp32, o);  // f32 matrices
  REQUIRE_FALSE(rt.ok());
  CHECK(rt.error().code == ErrorCode::kUnsupported);
  auto q8 = load_stories("stories260K_q8.bin");
  REQUIRE(q8.ok());
  o.activation_q8_group = 8;  // the file's groups are 4
  auto rt8 = Runtime::create(*q8, o);
  REQUIRE_FALSE(rt8.ok());
  CHECK(rt8.error().code == ErrorCode::kUnsupported);
}

TEST_CASE("llmc generate --temp 0 -n 200 prints llama2.c's golden story", "[runtime][stories][cli]") {
  const auto g = golden();
  if (g.is_null()) return;
  const std::string dir = test::fixtures_dir() + "/models/stories260K/";
  const auto r = test::run_cli("generate '" + dir + "stories260K.bin' --tokenizer '" + dir +
                               "tok512.bin' --temp 0 -n 200 --threads 2 2>/dev/null");
  REQUIRE(r.exit_code == 0);
  // run_cli merges stderr: drop llmc's closing speed line.
  CHECK(r.output.substr(0, r.output.rfind("llmc: ")) == g["greedy"]["text"].get<std::string>() + "\n");
  // the same with beam search of one hypothesis, and a seeded sample is reproducible
  const auto b = test::run_cli("generate '" + dir + "stories260K.bin' --tokenizer '" + dir +
                               "tok512.bin' --beam 1 -n 200 2>/dev/null");
  CHECK(b.output.substr(0, b.output.rfind("llmc: ")) == r.output.substr(0, r.output.rfind("llmc: ")));
  const std::string sample = "generate '" + dir + "stories260K.bin' --tokenizer '" + dir +
                             "tok512.bin' --temp 0.8 --top-p 0.9 --seed 7 -n 60 2>/dev/null";
  const auto s1 = test::run_cli(sample).output, s2 = test::run_cli(sample).output;
  CHECK(s1.substr(0, s1.rfind("llmc: ")) == s2.substr(0, s2.rfind("llmc: ")));
}

TEST_CASE("SmolLM2-135M greedy continuation is fluent-looking and thread-count independent", "[runtime][heavy]") {
  const std::string path = test::smollm2_path();
  if (path.empty()) return;
  auto m = load_model(path);
  REQUIRE(m.ok());
  auto tok = Tokenizer::create(m->tokenizer);
  REQUIRE(tok.ok());
  const auto prompt = (*tok)->encode("Once upon a time", false);
  std::vector<std::vector<int32_t>> outs;
  for (int threads : {1, 2}) {
    RuntimeOptions o;
    o.threads = threads;
    o.max_context = 64;
    auto rt = Runtime::create(*m, o);
    REQUIRE(rt.ok());
    std::vector<float> logits(static_cast<size_t>(m->config.vocab_size));
    REQUIRE((*rt)->forward(prompt, 0, logits.data(), false).ok());
    std::vector<int32_t> out;
    for (int64_t pos = static_cast<int64_t>(prompt.size()); pos < 24; ++pos) {
      const int32_t t = argmax(logits);
      out.push_back(t);
      REQUIRE((*rt)->forward({&t, 1}, pos, logits.data(), false).ok());
    }
    outs.push_back(out);
  }
  CHECK(outs[0] == outs[1]);
  const std::string text = (*tok)->decode(outs[0]);
  INFO(text);
  // A working forward pass continues the phrase with a comma and common English words.
  CHECK(text.rfind(",", 0) == 0);
  CHECK(text.find(" the ") != std::string::npos);
}
