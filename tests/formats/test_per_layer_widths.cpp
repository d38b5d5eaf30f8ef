// Per-layer head counts and FFN widths (after structured pruning) in the config: validation, .llmc and
// GGUF round trips (llama.cpp's "deci" per-layer arrays, read back and checked by the gguf package),
// and the clear refusal of a Hugging Face export.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "gguf_test_util.h"
#include "model/arch.h"
#include "runtime/runtime.h"
#include "test_util.h"

namespace llmc {
namespace {

// A 3-layer model with random weights whose layers differ: heads 4/2/4 over KV heads 2/1/1, FFN 96/64/80.
Model make_uneven_model(ModelFamily family) {
  Model base = test::make_gguf_test_model(family, 96, true);
  Model m;
  m.tokenizer = base.tokenizer;
  m.metadata = base.metadata;
  m.config = base.config;
  m.config.n_layers = 3;
  m.config.set_layer_widths({4, 2, 4}, {2, 1, 1}, {96, 64, 80});
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (const TensorSpec& spec : expected_tensors(m.config)) {
    std::vector<float> v(static_cast<size_t>(spec.shape.numel()));
    for (float& x : v) x = spec.role == TensorRole::kNorm ? 1.0f + 0.1f * normal(rng) : normal(rng);
    REQUIRE(m.add(make_dense_f32(spec.name, spec.shape, v)).ok());
  }
  REQUIRE(validate_model(m).ok());
  return m;
}

void write_f32_file(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
}

}  // namespace

TEST_CASE("config with per-layer widths: set_layer_widths keeps uniform vectors as scalars", "[per-layer][model]") {
  ModelConfig c = test::make_gguf_test_model(ModelFamily::kLlama, 96, true).config;
  c.set_layer_widths({4, 4}, {2, 2}, {96, 96});
  CHECK_FALSE(c.per_layer_widths());
  c.set_layer_widths({4, 2}, {2, 2}, {96, 40});
  CHECK(c.layer_n_heads == std::vector<int64_t>{4, 2});
  CHECK(c.layer_n_kv_heads.empty());
  CHECK(c.n_heads == 4);
  CHECK(c.hidden_dim == 96);
  CHECK(c.heads(1) == 2);
  CHECK(c.hidden(1) == 40);
  CHECK(c.all_kv_heads() == std::vector<int64_t>{2, 2});
  REQUIRE(validate_config(c).ok());
  struct Case {
    const char* what;
    void (*edit)(ModelConfig&);
  };
  const Case bad[] = {
      {"wrong length",
       [](ModelConfig& x) {
         x.layer_hidden_dim = {96, 40, 40};
       }},
      {"zero width",
       [](ModelConfig& x) {
         x.layer_hidden_dim = {96, 0};
       }},
      {"scalar not the largest", [](ModelConfig& x) { x.hidden_dim = 100; }},
      {"heads not a multiple of kv heads",
       [](ModelConfig& x) {
         x.layer_n_heads = {4, 3};
       }},
      {"more kv heads than heads",
       [](ModelConfig& x) {
         x.layer_n_kv_heads = {2, 4}, x.n_kv_heads = 4;
       }},
  };
  for (const Case& b : bad) {
    INFO(b.what);
    ModelConfig x = c;
    b.edit(x);
    auto r = validate_config(x);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kFormat);
  }
}

TEST_CASE("per-layer widths: .llmc round trip exact, runtime runs, Hugging Face export refused", "[per-layer][llmc]") {
  for (ModelFamily family : {ModelFamily::kLlama, ModelFamily::kQwen2}) {
    INFO(family_name(family));
    const Model m = make_uneven_model(family);
    test::TempDir dir;
    REQUIRE(write_llmc(m, dir.path("m.llmc"), {}).ok());
    auto back = load_model(dir.path("m.llmc"));
    REQUIRE(back.ok());
    CHECK(back->config == m.config);
    test::require_same_tensors(m, *back);
    auto rt = Runtime::create(*back, RuntimeOptions{.threads = 1, .max_context = 16});
    REQUIRE(rt.ok());
    std::vector<float> logits(static_cast<size_t>(4 * (*rt)->vocab_size()));
    const int32_t ids[] = {1, 5, 9, 40};
    REQUIRE((*rt)->forward(ids, 0, logits.data(), true).ok());
    for (float v : logits) REQUIRE(std::isfinite(v));
    auto hf = write_safetensors(m, dir.path("hf"), {});
    REQUIRE_FALSE(hf.ok());
    CHECK(hf.error().code == ErrorCode::kUnsupported);
    CHECK_FALSE(std::filesystem::exists(dir.path("hf")));
  }
}

TEST_CASE("per-layer widths: GGUF holds per-layer arrays (llama as 'deci'), read back exactly", "[per-layer][gguf]") {
  struct Row {
    ModelFamily family;
    const char* arch;
  };
  for (const Row& row : {Row{ModelFamily::kLlama, "deci"}, Row{ModelFamily::kQwen2, "qwen2"}}) {
    INFO(row.arch);
    const Model m = make_uneven_model(row.family);
    test::TempDir dir;
    const std::string path = dir.path("m.gguf");
    REQUIRE(write_gguf(m, path, {}).ok());
    auto back = load_model(path);
    REQUIRE(back.ok());
    CHECK(back->config.family == row.family);
    CHECK(back->config.layer_n_heads == m.config.layer_n_heads);
    CHECK(back->config.layer_n_kv_heads == m.config.layer_n_kv_heads);
    CHECK(back->config.layer_hidden_dim == m.config.layer_hidden_dim);
    CHECK(back->config.head_dim == 16);
    test::require_same_tensors(m, *back);
    // The gguf package reads the same arrays and tensors.
    if (!test::have_python_gguf()) continue;
    const std::string p = std::string(row.arch) + ".";
    nlohmann::json manifest;
    manifest["tensors"] = nlohmann::json::array();
    for (size_t i = 0; i < m.tensors().size(); ++i) {
      const Tensor& t = m.tensors()[i];
      const std::string f = dir.path(std::to_string(i) + ".f32");
      write_f32_file(f, t.to_f32());
      manifest["tensors"].push_back(
          {{"name", t.name}, {"type", "F32"}, {"shape", t.shape.dims}, {"source_values", f}, {"llmc_values", f}});
    }
    manifest["metadata"] = {{"general.architecture", row.arch},        {p + "block_count", 3},
                            {p + "attention.head_count", {4, 2, 4}},   {p + "attention.head_count_kv", {2, 1, 1}},
                            {p + "feed_forward_length", {96, 64, 80}}, {p + "attention.key_length", 16},
                            {p + "rope.dimension_count", 16}};
    {
      std::ofstream f(dir.path("m.json"));
      f << manifest.dump(1);
    }
    const auto [rc, out] = test::run_command(test::peer_tool() + " check " + path + " " + dir.path("m.json"));
    INFO(out);
    CHECK(rc == 0);
  }
}

TEST_CASE("GGUF per-layer arrays whose length is not the block count are refused", "[per-layer][gguf]") {
  const Model m = make_uneven_model(ModelFamily::kLlama);
  test::TempDir dir;
  REQUIRE(write_gguf(m, dir.path("m.gguf"), {}).ok());
  auto bytes = test::read_file_bytes(dir.path("m.gguf"));
  // deci.block_count: key, u32 type (4), u32 value 3 -> 4.
  const std::string key = "deci.block_count";
  auto at = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  REQUIRE(at != bytes.end());
  const size_t value = static_cast<size_t>(at - bytes.begin()) + key.size() + 4;
  uint32_t v = 0;
  std::memcpy(&v, &bytes[value], 4);
  REQUIRE(v == 3);
  v = 4;
  std::memcpy(&bytes[value], &v, 4);
  test::write_file_bytes(dir.path("bad.gguf"), bytes);
  auto r = load_model(dir.path("bad.gguf"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kFormat);
  CHECK_THAT(r.error().message, Catch::Contains("3 entries for 4 layers"));
}

}  // namespace llmc
