// GGUF against its reference implementation: the official Python `gguf` package decodes the same
// blocks and tensors as llmc, and reads the files llmc writes (tests/py/gguf_peer_tool.py is its side).
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "formats/gguf_quants.h"
#include "formats/model_io.h"
#include "gguf_test_util.h"
#include "test_util.h"

namespace llmc {
namespace {

std::vector<float> read_f32_file(const std::string& path) {
  const auto bytes = test::read_file_bytes(path);
  std::vector<float> v(bytes.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

void write_f32_file(const std::string& path, const std::vector<float>& v) {
  std::vector<unsigned char> bytes(v.size() * 4);
  if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
  test::write_file_bytes(path, bytes);
}

// Elements that differ: NaN in both counts as equal, and so do zeros of either sign (docs/gguf.md).
size_t count_unequal(const float* a, const float* b, size_t n) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) ++bad;
  return bad;
}

// Largest |a - b| (relative above 1), NaN in both counts as equal, NaN in one as infinite.
double max_diff(const float* a, const float* b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    if (a[i] == b[i]) continue;
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]) / std::max(1.0, std::fabs(static_cast<double>(b[i])));
    worst = std::max(worst, d);
  }
  return worst;
}

TEST_CASE("gguf block decoders match gguf.quants.dequantize on random blocks", "[gguf][peer]") {
  if (!test::have_python_gguf()) return;
  test::TempDir dir;
  const auto [rc, out] = test::run_command(test::peer_tool() + " blocks " + dir.dir().string());
  INFO(out);
  REQUIRE(rc == 0);
  std::ifstream manifest(dir.path("manifest.txt"));
  std::string name;
  uint32_t type_id;
  uint64_t count;
  std::set<std::string> seen, native;
  while (manifest >> name >> type_id >> count) {
    INFO(name);
    const GgmlTypeInfo* info = ggml_type_info(type_id);
    REQUIRE(info != nullptr);
    REQUIRE(info->dequant != nullptr);
    CHECK(std::string(info->name) == name);
    const auto raw = test::read_file_bytes(dir.path(name + ".bin"));
    const auto want = read_f32_file(dir.path(name + ".f32"));
    REQUIRE(raw.size() % info->type_size == 0);
    const int64_t n_blocks = static_cast<int64_t>(raw.size()) / info->type_size;
    REQUIRE(want.size() == static_cast<size_t>(n_blocks * info->block_size));
    std::vector<float> got(want.size());
    info->dequant(raw.data(), n_blocks, got.data());
    const double diff = max_diff(got.data(), want.data(), got.size());
    INFO("max relative difference " << diff);
    CHECK(diff <= 1e-6);
    if (info->quant) {  // the Quant encoding the reader keeps: the same values exactly
      const int64_t rows = n_blocks / 4, cols = 4 * info->block_size;
      auto q = ggml_to_quant(*info, raw.data(), rows, cols);
      REQUIRE(q.has_value());
      const Encoding enc{*q};
      decode_rows_to_f32(enc, Shape{{rows, cols}}, 0, rows, got.data());
      CHECK(count_unequal(got.data(), want.data(), got.size()) == 0);
      native.insert(name);
    }
    seen.insert(name);
  }
  for (const char* t : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16"})
    CHECK(seen.count(t) == 1);
  CHECK(native ==
        std::set<std::string>{"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"});
}

TEST_CASE("gguf SmolLM2 tensors decode like gguf.quants.dequantize", "[gguf][peer][heavy]") {
  const std::string path = test::smollm2_path();
  if (path.empty() || !test::have_python_gguf()) return;
  test::TempDir dir;
  constexpr int kRows = 16;
  const auto [rc, out] =
      test::run_command(test::peer_tool() + " dump " + path + " " + dir.dir().string() + " " + std::to_string(kRows));
  INFO(out);
  REQUIRE(rc == 0);
  auto model = read_gguf(path, true);
  REQUIRE(model.ok());
  std::ifstream manifest(dir.path("manifest.txt"));
  std::string name, type, file;
  int64_t rows, cols;
  std::set<std::string> types;
  size_t compared = 0;
  double worst = 0;
  while (manifest >> name >> type >> rows >> cols >> file) {
    INFO(name << " " << type);
    const Tensor* t = model->find(name);
    REQUIRE(t != nullptr);
    REQUIRE(t->cols() == cols);
    REQUIRE(rows == std::min<int64_t>(kRows, t->rows()));
    // Quantized tensors stay Quant encodings (no f32 copy) and decode to gguf's values exactly.
    CHECK(std::holds_alternative<QuantEncoding>(t->encoding->node) == (type != "F32"));
    std::vector<float> got(static_cast<size_t>(rows * cols));
    t->rows_to_f32(0, rows, got.data());
    const auto want = read_f32_file(dir.path(file));
    REQUIRE(want.size() == got.size());
    const double diff = max_diff(got.data(), want.data(), got.size());
    CHECK(count_unequal(got.data(), want.data(), got.size()) == 0);
    worst = std::max(worst, diff);
    types.insert(type);
    ++compared;
  }
  CHECK(compared == 272);
  CHECK(types == std::set<std::string>{"F32", "Q4_1", "Q8_0"});
  WARN("SmolLM2: " << compared << " tensors (first " << kRows << " rows each) match gguf, max diff " << worst);
}

TEST_CASE("gguf files written by llmc read back identically with gguf.GGUFReader", "[gguf][peer]") {
  if (!test::have_python_gguf()) return;
  test::TempDir dir;
  // hidden 96: every linear weight has whole 32-blocks.
  const Model m = test::make_gguf_test_model(ModelFamily::kLlama, 96, false);
  struct Row {
    ExportDType dtype;
    const char* type;  // GGML name of the 2-D tensors
    int file_type;     // llama_ftype
  };
  const Row rows[] = {{ExportDType::kF32, "F32", 0},
                      {ExportDType::kF16, "F16", 1},
                      {ExportDType::kBF16, "BF16", 32},
                      {ExportDType::kQ8_0, "Q8_0", 7},
                      {ExportDType::kQ4_0, "Q4_0", 2}};
  for (const Row& row : rows) {
    INFO(row.type);
    const std::string stem = dir.path(row.type);
    REQUIRE(write_gguf(m, stem + ".gguf", {row.dtype}).ok());
    auto back = read_gguf(stem + ".gguf", true);
    REQUIRE(back.ok());
    nlohmann::json manifest;
    manifest["tensors"] = nlohmann::json::array();
    for (size_t i = 0; i < m.tensors().size(); ++i) {
      const Tensor& t = m.tensors()[i];
      const std::string src = stem + "." + std::to_string(i) + ".src.f32";
      const std::string ours = stem + "." + std::to_string(i) + ".llmc.f32";
      write_f32_file(src, t.to_f32());
      write_f32_file(ours, back->get(t.name).to_f32());
      const bool plain = t.shape.dims.size() == 1;
      manifest["tensors"].push_back({{"name", t.name},
                                     {"type", plain ? "F32" : row.type},
                                     {"shape", t.shape.dims},
                                     {"source_values", src},
                                     {"llmc_values", ours}});
    }
    const TokenizerData& tok = m.tokenizer;
    manifest["metadata"] = {
        {"general.architecture", "llama"},
        {"general.name", "gguf test model"},
        {"general.file_type", row.file_type},
        {"llama.block_count", 2},
        {"llama.embedding_length", 64},
        {"llama.feed_forward_length", 96},
        {"llama.attention.head_count", 4},
        {"llama.attention.head_count_kv", 2},
        {"llama.context_length", 256},
        {"llama.rope.dimension_count", 16},
        {"llama.vocab_size", 96},
        {"llama.rope.freq_base", 500000.0},
        {"llama.attention.layer_norm_rms_epsilon", 1e-6},
        {"tokenizer.ggml.model", "llama"},
        {"tokenizer.ggml.pre", "default"},
        {"tokenizer.ggml.tokens", tok.tokens},
        {"tokenizer.ggml.token_type", tok.token_types},
        {"tokenizer.ggml.bos_token_id", 1},
        {"tokenizer.ggml.eos_token_id", 2},
        {"tokenizer.ggml.unknown_token_id", 0},
        {"tokenizer.ggml.add_bos_token", true},
    };
    {
      std::ofstream f(stem + ".json");
      f << manifest.dump(1);
    }
    const auto [rc, out] = test::run_command(test::peer_tool() + " check " + stem + ".gguf " + stem + ".json");
    INFO(out);
    CHECK(rc == 0);
  }
}

}  // namespace
}  // namespace llmc
