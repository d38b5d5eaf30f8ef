// `llmc lowrank` end to end on stories260K: the output holds LowRank/Tucker tensors with the resolved
// recipe; bad options fail with clear errors and leave no file; same seed gives identical files on 1
// and 2 threads; a following quantization recipe gives LowRank{Quant, Quant}.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "core/lowrank.h"
#include "formats/llmc.h"
#include "formats/model_io.h"
#include "test_util.h"

using namespace llmc;
using llmc::test::run_cli;

namespace {

std::string stories_args() {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return "";
  return bin + " --tokenizer " + tok;
}

const char* kFfn = "--targets 'blk\\..*\\.ffn_.*\\.weight'";

}  // namespace

TEST_CASE("lowrank: svd of the FFN weights, summary, provenance, inspect", "[cli][lowrank]") {
  const std::string in = stories_args();
  if (in.empty()) return;
  test::TempDir dir;
  auto r = run_cli("lowrank " + in + " -o " + dir.path("svd.llmc") + " --rank-ratio 0.8 " + kFfn + " --threads 1");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("lowrank.svd") != std::string::npos);
  CHECK(r.output.find("15 of 15 tensors replaced") != std::string::npos);
  CHECK(r.output.find("ranks 37..37") != std::string::npos);
  auto f = open_llmc(dir.path("svd.llmc"));
  REQUIRE(f.ok());
  int lowrank = 0;
  for (const Tensor& t : f->model.tensors()) lowrank += std::holds_alternative<LowRankEncoding>(t.encoding->node);
  CHECK(lowrank == 15);
  CHECK(f->provenance.recipe.find("\"rank_ratio\":0.8") != std::string::npos);
  auto ins = run_cli("inspect " + dir.path("svd.llmc"));
  INFO(ins.output);
  REQUIRE(ins.exit_code == 0);
  CHECK(ins.output.find("lowrank r37 (U f32, V f32)") != std::string::npos);
  // Quantizing the result keeps the factorisation: LowRank{Quant, Quant}.
  auto q = run_cli("quantize " + dir.path("svd.llmc") + " -o " + dir.path("q.llmc") + " --bits 4 --threads 1");
  INFO(q.output);
  REQUIRE(q.exit_code == 0);
  auto fq = open_llmc(dir.path("q.llmc"));
  REQUIRE(fq.ok());
  const auto& lr = std::get<LowRankEncoding>(fq->model.get("blk.0.ffn_up.weight").encoding->node);
  CHECK(std::holds_alternative<QuantEncoding>(lr.u->node));
  CHECK(std::holds_alternative<QuantEncoding>(lr.v->node));
  // Tucker of the embedding.
  auto t = run_cli("lowrank " + in + " -o " + dir.path("t.llmc") + " --method tucker --rank-ratio 0.5 --threads 1");
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  auto ft = open_llmc(dir.path("t.llmc"));
  REQUIRE(ft.ok());
  CHECK(std::holds_alternative<TuckerEncoding>(ft->model.get("token_embd.weight").encoding->node));
}

TEST_CASE("lowrank: bad options give clear errors and no output", "[cli][lowrank]") {
  const std::string in = stories_args();
  if (in.empty()) return;
  test::TempDir dir;
  const std::string out = dir.path("bad.llmc");
  const struct {
    std::string args;
    const char* message;
  } kCases[] = {
      {"", "exactly one"},
      {"--rank-ratio 1", "rank_ratio 1 outside (0, 1)"},
      {"--rank-ratio 0.5 --energy 0.9", "several"},
      {"--energy 1.5", "energy 1.5 outside (0, 1]"},
      {"--energy -0.1", "outside (0, 1]"},
      {"--target-params 2", "target_params 2 outside"},
      {"--rank 64 " + std::string(kFfn), "rank 64 is not below the smaller dimension"},
      {"--rank-ratio 0.5 --method asvd", "calibration"},
      {"--rank 3 --method tucker", "rank"},
      {"--rank-ratio 0.5 --method tucker --targets 'blk\\.0\\.ffn_up\\.weight'", "no higher-order view"},
  };
  for (const auto& c : kCases) {
    INFO(c.args);
    auto r = run_cli("lowrank " + in + " -o " + out + " " + c.args);
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.output.find(c.message) != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(out));
  }
}

TEST_CASE("lowrank: asvd with the same seed gives identical files on 1 and 2 threads", "[cli][lowrank]") {
  const std::string in = stories_args();
  const std::string calib = test::fixture("text/tinyshakespeare.txt");
  if (in.empty() || calib.empty()) return;
  test::TempDir dir;
  for (int threads : {1, 2}) {
    auto r = run_cli("lowrank " + in + " -o " + dir.path(str_cat("a", threads, ".llmc")) +
                     " --method asvd --target-params 0.7 --calib " + calib +
                     " --calib-samples 8 --calib-ctx 128 --seed 4 --threads " + std::to_string(threads));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  CHECK(test::read_file_bytes(dir.path("a1.llmc")) == test::read_file_bytes(dir.path("a2.llmc")));
}
