// `llmc convert` / `llmc inspect` end to end on the real stories260K fixture: exact round trips,
// zstd size, refusal to overwrite, no partial outputs on bad input.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "formats/model_io.h"
#include "test_util.h"

using namespace llmc;
using llmc::test::run_cli;

TEST_CASE("convert stories260K: llmc raw, llmc zstd, GGUF F32 round trips are bit-identical", "[cli][convert]") {
  const std::string bin = llmc::test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = llmc::test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return;
  llmc::test::TempDir dir;
  const std::string raw = dir.path("s.llmc"), z = dir.path("sz.llmc"), gguf = dir.path("s.gguf"),
                    back = dir.path("back.llmc");
  REQUIRE(run_cli("convert " + bin + " --tokenizer " + tok + " -o " + raw).exit_code == 0);
  REQUIRE(run_cli("convert " + bin + " --tokenizer " + tok + " -o " + z + " --zstd 19").exit_code == 0);
  REQUIRE(run_cli("convert " + raw + " -o " + gguf + " --dtype f32").exit_code == 0);
  REQUIRE(run_cli("convert " + gguf + " -o " + back).exit_code == 0);
  CHECK(std::filesystem::file_size(z) < std::filesystem::file_size(raw));

  LoadOptions with_tok;
  with_tok.tokenizer_path = tok;
  auto orig = load_model(bin, with_tok);
  REQUIRE(orig.ok());
  for (const auto& path : {raw, z, gguf, back}) {
    INFO(path);
    auto m = load_model(path);
    REQUIRE(m.ok());
    REQUIRE(m->config == orig->config);
    llmc::test::require_same_tensors(*orig, *m);
    CHECK(m->tokenizer.tokens == orig->tokenizer.tokens);
    CHECK(m->tokenizer.scores == orig->tokenizer.scores);
  }
}

TEST_CASE("inspect reports the stories260K architecture and q8 encodings", "[cli][inspect]") {
  const std::string bin = llmc::test::fixture("models/stories260K/stories260K.bin");
  const std::string q8 = llmc::test::fixture("models/stories260K/stories260K_q8.bin");
  const std::string tok = llmc::test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || q8.empty() || tok.empty()) return;
  for (const auto& path : {bin, q8}) {
    auto r = run_cli("inspect " + path + " --tokenizer " + tok + " --json -");
    REQUIRE(r.exit_code == 0);
    auto j = nlohmann::json::parse(r.output);
    CHECK(j["config"]["dim"] == 64);
    CHECK(j["config"]["hidden_dim"] == 172);
    CHECK(j["config"]["n_layers"] == 5);
    CHECK(j["config"]["n_heads"] == 8);
    CHECK(j["config"]["n_kv_heads"] == 4);
    CHECK(j["config"]["vocab_size"] == 512);
    CHECK(j["config"]["tied_embeddings"] == true);
    CHECK(j["tokenizer"]["vocab_size"] == 512);
    const bool quantized = path == q8;
    CHECK(j["tensors"][1]["kind"] == "dense");  // blk.0.attn_norm.weight stays f32
    CHECK(j["tensors"][2]["kind"] == (quantized ? "quant" : "dense"));
    // 8-bit codes plus one f32 scale per 4 weights = 16 bits per weight; f32 = 32.
    CHECK(j["size"]["bits_per_weight"].get<double>() == Approx(quantized ? 16.0 : 32.0));
  }
  for (const char* vocab : {"tokenizers/ggml-vocab-llama-spm.gguf", "tokenizers/ggml-vocab-gpt-2.gguf"}) {
    const std::string path = llmc::test::fixture(vocab);
    if (path.empty()) continue;
    auto r = run_cli("inspect " + path + " --json -");
    REQUIRE(r.exit_code == 0);
    auto j = nlohmann::json::parse(r.output);
    const bool spm = std::string(vocab).find("spm") != std::string::npos;
    CHECK(j["tokenizer"]["vocab_size"] == (spm ? 32000 : 50257));
    CHECK(j["tokenizer"]["kind"] == (spm ? "sentencepiece" : "gpt2-bpe"));
  }
}

TEST_CASE("convert refuses to overwrite inputs and existing files, leaves nothing on bad input", "[cli][convert]") {
  const std::string bin = llmc::test::fixture("models/stories260K/stories260K.bin");
  if (bin.empty()) return;
  llmc::test::TempDir dir;
  const std::string copy = dir.path("in.bin");
  std::filesystem::copy_file(bin, copy);
  const auto before = llmc::test::read_file_bytes(copy);
  CHECK(run_cli("convert " + copy + " -o " + copy + " --to llmc --force").exit_code == 4);
  CHECK(llmc::test::read_file_bytes(copy) == before);

  const std::string out = dir.path("o.llmc");
  REQUIRE(run_cli("convert " + copy + " -o " + out).exit_code == 0);
  auto again = run_cli("convert " + copy + " -o " + out);
  CHECK(again.exit_code == 4);
  CHECK(again.output.find("--force") != std::string::npos);
  CHECK(run_cli("convert " + copy + " -o " + out + " --force").exit_code == 0);

  // A truncated checkpoint: clear error, non-zero exit, no output and no temp file left behind.
  auto bytes = before;
  bytes.resize(bytes.size() / 2);
  const std::string bad = dir.path("bad.bin");
  llmc::test::write_file_bytes(bad, bytes);
  auto r = run_cli("convert " + bad + " -o " + dir.path("bad.llmc"));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("bad.bin") != std::string::npos);
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.dir())) files += e.is_regular_file();
  CHECK(files == 3);  // in.bin, o.llmc, bad.bin

  CHECK(run_cli("convert " + copy + " -o " + dir.path("x.llmc") + " --zstd 99").exit_code == 2);
  CHECK(run_cli("convert " + copy + " -o " + dir.path("x.gguf") + " --dtype q3").exit_code == 2);
  CHECK(run_cli("convert " + copy + " -o " + dir.path("x.gguf") + " --zstd 3").exit_code == 2);
}
