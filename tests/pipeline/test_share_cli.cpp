// `llmc share` end to end on stories260K: the output holds Palette tensors with the asked bits,
// granularity and outliers and the resolved recipe; inspect shows them; GGUF export dequantizes;
// bad options fail with clear errors and leave no file; 1 and 2 threads give identical files; the
// Deep Compression path (prune -> share -> entropy) shrinks at every stage and codes losslessly.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/palette.h"
#include "core/sparse.h"
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

TEST_CASE("share: weighted 3-bit with outliers, inspect, GGUF export", "[cli][share][palette]") {
  const Stories s = stories();
  const std::string calib = llmc::test::fixture("text/tinyshakespeare.txt");
  if (!s.ok() || calib.empty()) return;
  llmc::test::TempDir dir;
  const std::string out = dir.path("p3.llmc");
  auto r = run_cli("share " + s.in() + " -o " + out + " --bits 3 --granularity rows:16 --weighted --calib " + calib +
                   " --calib-samples 8 --calib-ctx 128 --outliers 0.005 --keep 'token_embd\\.weight' --threads 1");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("llmc share") != std::string::npos);
  CHECK(r.output.find("bits per weight") != std::string::npos);
  CHECK(r.output.find("p3 rows:16 +outliers f16") != std::string::npos);

  auto f = open_llmc(out);
  REQUIRE(f.ok());
  for (const Tensor& t : f->model.tensors()) {
    INFO(t.name);
    const bool target = t.shape.dims.size() == 2 && t.name != "token_embd.weight";
    const auto* p = std::get_if<PaletteEncoding>(&t.encoding->node);
    REQUIRE((p != nullptr) == target);
    if (!p) continue;
    CHECK(p->bits == 3);
    CHECK(p->group_rows == 16);
    CHECK(palette_outlier_count(*p) > 0);
  }
  auto recipe = nlohmann::json::parse(f->provenance.recipe);
  CHECK(recipe["stages"][0]["pass"] == "share.kmeans");
  CHECK(recipe["stages"][0]["options"]["bits"] == 3);
  CHECK(recipe["stages"][0]["options"]["weighted"] == true);
  CHECK(recipe["calibration"]["samples"] == 8);

  auto inspect = run_cli("inspect " + out + " --json -");
  REQUIRE(inspect.exit_code == 0);
  const auto j = nlohmann::json::parse(inspect.output);
  bool seen = false;
  for (const auto& t : j["tensors"])
    if (t["name"] == "blk.0.attn_q.weight") {
      seen = true;
      CHECK(t["kind"] == "palette");
      CHECK(t["palette_bits"] == 3);
      CHECK(t["granularity"] == "rows:16");
      CHECK(t["codebook_bytes"] == 4 * 8 * 2);  // 64 rows: 4 codebooks of 8 f16
      CHECK(t["index_bytes"] == 64 * 24);       // 64 columns x 3 bits
    }
  CHECK(seen);
  auto human = run_cli("inspect " + out);
  CHECK(human.output.find("palette tensor") != std::string::npos);

  // GGUF has no palette type: written dequantized (F32), with a log line, and the values survive.
  const std::string gguf = dir.path("p3.gguf");
  auto c = run_cli("convert " + out + " -o " + gguf);
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  CHECK(c.output.find("written dequantized") != std::string::npos);
  auto g = load_model(gguf);
  REQUIRE(g.ok());
  CHECK(g->get("blk.0.attn_q.weight").to_f32() == f->model.get("blk.0.attn_q.weight").to_f32());
}

TEST_CASE("share: bad options give clear errors and no output", "[cli][share][palette]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  const std::string out = dir.path("o.llmc");
  require_refused(dir, "share " + s.in() + " -o " + out + " --bits 0", 2, {"bits must be 1..8"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --bits 9", 2, {"bits must be 1..8"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --granularity rows:0", 2, {"granularity 'rows:0'"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --granularity cols", 2, {"granularity 'cols'"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --outliers 1", 2, {"outliers", "[0, 1)"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --outliers -0.1", 2, {"outliers", "[0, 1)"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --weighted", 2, {"calibration"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --calib a.txt --calib-self 4", 2, {"exclude"});
  require_refused(dir, "share " + s.in() + " -o " + out + " --group-size 32", 2, {"group-size"});
}

TEST_CASE("share: same input, options and seed give byte-identical files on 1 and 2 threads",
          "[cli][share][palette][determinism]") {
  const Stories s = stories();
  if (!s.ok()) return;
  llmc::test::TempDir dir;
  for (const char* args : {"--bits 4", "--bits 2 --granularity row --outliers 0.01"}) {
    INFO(args);
    const std::string a = dir.path("t1.llmc"), b = dir.path("t2.llmc");
    auto r1 = run_cli("share " + s.in() + " -o " + a + " --seed 5 --threads 1 --force " + args);
    INFO(r1.output);
    REQUIRE(r1.exit_code == 0);
    auto r2 = run_cli("share " + s.in() + " -o " + b + " --seed 5 --threads 2 --force " + args);
    INFO(r2.output);
    REQUIRE(r2.exit_code == 0);
    CHECK(llmc::test::read_file_bytes(a) == llmc::test::read_file_bytes(b));
  }
}

TEST_CASE("share: Deep Compression path (prune 50 % sparsegpt -> share 4-bit -> entropy) shrinks at every stage",
          "[cli][share][palette][sparse][entropy]") {
  const Stories s = stories();
  const std::string calib = llmc::test::fixture("text/tinyshakespeare.txt");
  if (!s.ok() || calib.empty()) return;
  llmc::test::TempDir dir;
  const std::string f32 = dir.path("f32.llmc"), pruned = dir.path("pruned.llmc"), shared = dir.path("shared.llmc"),
                    coded = dir.path("coded.llmc");
  for (const std::string& args : {"convert " + s.in() + " -o " + f32 + " --dtype f32 --entropy none",
                                  "prune " + f32 + " -o " + pruned + " --sparsity 0.5 --method sparsegpt --calib " +
                                      calib + " --calib-samples 8 --calib-ctx 128 --entropy none",
                                  "share " + pruned + " -o " + shared + " --bits 4 --entropy none",
                                  "convert " + shared + " -o " + coded + " --entropy auto"}) {
    INFO(args);
    auto r = run_cli(args);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  const auto size = [](const std::string& p) { return std::filesystem::file_size(p); };
  CHECK(size(pruned) < size(f32));
  CHECK(size(shared) < size(pruned));
  CHECK(size(coded) <= size(shared));  // auto keeps a section raw when coding does not pay

  // The shared model is pruned-then-shared: Sparse tensors with Palette values; the entropy stage
  // is lossless (every tensor decodes to the same floats).
  auto a = open_llmc(shared);
  auto b = open_llmc(coded);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  int sparse_palette = 0;
  for (const Tensor& t : a->model.tensors()) {
    INFO(t.name);
    if (const auto* sp = std::get_if<SparseEncoding>(&t.encoding->node))
      sparse_palette += std::holds_alternative<PaletteEncoding>(sp->values->node);
    const std::vector<float> x = t.to_f32(), y = b->model.get(t.name).to_f32();
    REQUIRE(x.size() == y.size());
    CHECK(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  }
  CHECK(sparse_palette > 0);
}
