// Report JSON: required fields, bits per weight from its definition, file identity, Markdown rendering.
#include <catch2/catch.hpp>
#include <fstream>

#include "core/model.h"
#include "test_util.h"
#include "verify/fake_runtime.h"
#include "verify/report.h"

using namespace llmc;

namespace {

// token_embd f32 [8, 4] (128 B), blk.0.attn_q f16 [4, 4] (32 B), blk.0.attn_norm f32 [4] (not
// counted): bpw = (128 + 32) * 8 / (32 + 16) = 80 / 3.
Model small_model() {
  Model m;
  m.config.dim = 4;
  m.config.n_layers = 1;
  m.config.vocab_size = 8;
  REQUIRE(m.add(make_dense_f32("token_embd.weight", Shape{{8, 4}}, std::vector<float>(32, 0.5f))).ok());
  REQUIRE(m.add(make_dense("blk.0.attn_q.weight", Shape{{4, 4}}, std::vector<float>(16, 1.0f), DType::kF16)).ok());
  REQUIRE(m.add(make_dense_f32("blk.0.attn_norm.weight", Shape{{4}}, std::vector<float>(4, 1.0f))).ok());
  return m;
}

Json eval_report(const std::string& model_path, bool with_ref) {
  const std::vector<std::vector<double>> table = {{0.5, 0.5}, {0.9, 0.1}};
  llmc::test::BigramRuntime model(table, 64), ref(table, 64);
  std::vector<int32_t> tokens(40);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i % 3 == 0);
  EvalOptions opt;
  opt.ctx = 8;
  auto eval = evaluate_tokens(model, with_ref ? &ref : nullptr, tokens, opt);
  REQUIRE(eval.ok());
  const Model m = small_model();
  auto identity = model_identity_json(m, model_path);
  REQUIRE(identity.ok());
  ReportParts parts;
  parts.kind = "eval";
  parts.model = *identity;
  parts.reference = with_ref ? *identity : Json(nullptr);
  parts.metrics = eval_metrics_json(*eval);
  parts.machine = machine_json(detect_machine(), nullptr);
  parts.command_line = "llmc eval model --data text";
  return make_report(parts);
}

}  // namespace

TEST_CASE("bits per weight counts linear and embedding weights only", "[verify]") {
  const WeightSize w = weight_size(small_model());
  CHECK(w.encoded_bytes == 160);
  CHECK(w.elements == 48);
  CHECK(w.bits_per_weight == Approx(80.0 / 3));
  const Json s = model_summary_json(small_model());
  REQUIRE(s["encodings"].size() == 2);  // f32 (two tensors) and f16
  CHECK(s["encodings"][0]["tensors"] == 2);
  CHECK(s["encodings"][0]["bytes"] == 144);
  CHECK(s["encodings"][1]["bytes"] == 32);
  CHECK(s["weights"]["all_tensor_bytes"] == 176);
}

TEST_CASE("file identity: size and xxHash64", "[verify]") {
  llmc::test::TempDir dir;
  const std::string empty = dir.path("empty.bin");
  llmc::test::write_file_bytes(empty, {});
  auto id = identify_file(empty);
  REQUIRE(id.ok());
  CHECK(id->bytes == 0);
  CHECK(id->xxh64 == 0xEF46DB3751D8E999ull);  // XXH64 of no bytes, seed 0 (xxHash's published value)
  // A folder hashes its files' bytes in name order, as if concatenated.
  std::filesystem::create_directory(dir.path("folder"));
  llmc::test::write_file_bytes(dir.path("folder/b.json"), {'c', 'd'});
  llmc::test::write_file_bytes(dir.path("folder/a.bin"), {'a', 'b'});
  llmc::test::write_file_bytes(dir.path("joined"), {'a', 'b', 'c', 'd'});
  auto folder = identify_file(dir.path("folder"));
  auto joined = identify_file(dir.path("joined"));
  REQUIRE(folder.ok());
  REQUIRE(joined.ok());
  CHECK(folder->bytes == 4);
  CHECK(folder->xxh64 == joined->xxh64);
  CHECK(folder->xxh64 != id->xxh64);
  CHECK(!identify_file(dir.path("missing")).ok());
}

TEST_CASE("eval report JSON validates and round-trips", "[verify]") {
  llmc::test::TempDir dir;
  const std::string path = dir.path("model.bin");
  llmc::test::write_file_bytes(path, {1, 2, 3});
  for (bool with_ref : {false, true}) {
    const Json report = eval_report(path, with_ref);
    const Json parsed = Json::parse(report.dump(2));
    REQUIRE(validate_report(parsed).ok());
    CHECK(parsed["schema"] == "llmc.report/1");
    CHECK(parsed["model"]["file_bytes"] == 3);
    CHECK(parsed["model"]["xxh64"].get<std::string>().size() == 16);
    CHECK(parsed["metrics"]["chunks"] == 5);
    CHECK(parsed["metrics"]["vs_reference"].is_object() == with_ref);
    CHECK(std::string(parsed["timestamp"]).back() == 'Z');
    const std::string md = render_markdown(parsed);
    CHECK(md.find("| PPL |") != std::string::npos);
    CHECK((md.find("KLD mean") != std::string::npos) == with_ref);
    CHECK(!render_summary(parsed).empty());
  }
  Json report = eval_report(path, true);
  report["metrics"]["vs_reference"]["kld"].erase("p99");
  auto bad = validate_report(report);
  REQUIRE(!bad.ok());
  CHECK(bad.error().message.find("/metrics/vs_reference/kld/p99") != std::string::npos);
  report = eval_report(path, false);
  report["schema"] = "llmc.report/2";
  CHECK(!validate_report(report).ok());
  report = eval_report(path, false);
  report["model"]["file_bytes"] = "3";
  CHECK(!validate_report(report).ok());
}

TEST_CASE("report files are written atomically and not overwritten without force", "[verify]") {
  llmc::test::TempDir dir;
  const std::string out = dir.path("r.json");
  REQUIRE(write_report_file(out, "{}\n", {}, false).ok());
  CHECK(llmc::test::read_file_bytes(out).size() == 3);
  CHECK(write_report_file(out, "{}", {}, false).error().code == ErrorCode::kExists);
  CHECK(write_report_file(out, "{}", {}, true).ok());
  CHECK(!write_report_file(out, "{}", {out}, true).ok());  // never over an input
}
