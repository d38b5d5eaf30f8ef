// Quant encodings in storage: every combination round-trips through .llmc with identical bytes and
// decode; GGUF export writes Q8_0/Q4_0/Q4_1-compatible tensors natively and the official Python
// `gguf` package decodes them to exactly llmc's values.
#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <sstream>

#include "formats/model_io.h"
#include "gguf_test_util.h"
#include "passes/quant/quant_math.h"
#include "test_util.h"

namespace llmc {
namespace {

std::vector<QuantSpec> storage_specs() {
  std::vector<QuantSpec> out;
  for (int64_t g : {32, 64, 128, 0})
    for (DType sd : {DType::kF16, DType::kBF16, DType::kF32, DType::kU8}) {
      auto add = [&](QuantSpec s) {
        s.group_size = g;
        s.scale_dtype = sd;
        s.scale_block = 3;
        out.push_back(s);
      };
      for (int bits = 2; bits <= 8; ++bits) {
        add(QuantSpec{.bits = bits, .scheme = QuantScheme::kSymmetric});
        add(QuantSpec{.bits = bits, .scheme = QuantScheme::kAsymmetric});
      }
      add(QuantSpec{.bits = 1, .scheme = QuantScheme::kBinary});
      add(QuantSpec{.bits = 1, .scheme = QuantScheme::kBinary, .binary_two_level = true});
      add(QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary});
      add(QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary, .trits5 = true});
    }
  return out;
}

Model quant_model(const std::vector<QuantSpec>& specs, int64_t rows, int64_t cols, uint32_t seed) {
  Model m;
  m.config.family = ModelFamily::kLlama;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (size_t i = 0; i < specs.size(); ++i) {
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (float& x : w) x = normal(rng);
    QuantEncoding q = quantize_rtn(specs[i], w, rows, cols, {}, ScaleSearch{}, nullptr);
    REQUIRE(m.add(Tensor{"t" + std::to_string(i), Shape{{rows, cols}}, std::make_shared<const Encoding>(Encoding{q})})
                .ok());
  }
  return m;
}

bool same_bytes(const Bytes& a, const Bytes& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

}  // namespace

TEST_CASE("every quant encoding round-trips through .llmc", "[quant-storage][llmc]") {
  const std::vector<QuantSpec> specs = storage_specs();
  const Model m = quant_model(specs, 7, 172, 3);
  test::TempDir dir;
  for (int zstd : {0, 3}) {
    const std::string path = dir.path("q" + std::to_string(zstd) + ".llmc");
    LlmcWriteOptions options;
    options.zstd_level = zstd;
    REQUIRE(write_llmc(m, path, options).ok());
    auto loaded = read_llmc(path);
    REQUIRE(loaded.ok());
    test::require_same_tensors(m, *loaded);
    for (size_t i = 0; i < specs.size(); ++i) {
      INFO(describe_quant_spec(specs[i]));
      const auto& a = std::get<QuantEncoding>(m.tensors()[i].encoding->node);
      const auto& b = std::get<QuantEncoding>(loaded->tensors()[i].encoding->node);
      CHECK(describe_encoding(*m.tensors()[i].encoding) == describe_encoding(*loaded->tensors()[i].encoding));
      CHECK(a.packing == b.packing);
      CHECK(a.scale_block == b.scale_block);
      CHECK(same_bytes(a.codes, b.codes));
      CHECK(same_bytes(a.scales, b.scales));
      CHECK(same_bytes(a.mins, b.mins));
      CHECK(same_bytes(a.scale_meta, b.scale_meta));
      CHECK(same_bytes(a.min_meta, b.min_meta));
    }
  }
}

TEST_CASE("GGUF export writes Q8_0/Q4_0/Q4_1-compatible quant tensors natively", "[quant-storage][gguf][peer]") {
  Model m = test::make_gguf_test_model(ModelFamily::kLlama, 160, false);
  // Linear weights: 64 columns (a multiple of 32). Three native layouts and one that is not.
  const QuantSpec q8{.bits = 8, .scheme = QuantScheme::kSymmetric, .group_size = 32};
  const QuantSpec q4_0{.bits = 4, .scheme = QuantScheme::kSymmetric, .group_size = 32};
  const QuantSpec q4_1{.bits = 4, .scheme = QuantScheme::kAsymmetric, .group_size = 32};
  const QuantSpec q3{.bits = 3, .scheme = QuantScheme::kAsymmetric, .group_size = 32};
  const std::vector<std::pair<std::string, QuantSpec>> plan = {{"blk.0.attn_q.weight", q8},
                                                               {"blk.0.attn_k.weight", q4_0},
                                                               {"blk.0.attn_v.weight", q4_1},
                                                               {"blk.0.attn_output.weight", q3}};
  for (const auto& [name, spec] : plan) {
    const Tensor& t = m.get(name);
    const auto w = t.to_f32();
    QuantEncoding q = quantize_rtn(spec, w, t.rows(), t.cols(), {}, ScaleSearch{}, nullptr);
    m.replace(Tensor{name, t.shape, std::make_shared<const Encoding>(Encoding{q})});
  }
  test::TempDir dir;
  const std::string path = dir.path("native.gguf");
  REQUIRE(write_gguf(m, path, GgufWriteOptions{}).ok());
  if (!test::have_python_gguf()) return;
  const auto [rc, out] = test::run_command(test::peer_tool() + " dump " + path + " " + dir.dir().string() + " 1000000");
  INFO(out);
  REQUIRE(rc == 0);
  std::ifstream manifest(dir.path("manifest.txt"));
  std::map<std::string, std::pair<std::string, std::string>> dumped;  // name -> (type, file)
  std::string name, type, file;
  int64_t rows, cols;
  while (manifest >> name >> type >> rows >> cols >> file) dumped[name] = {type, file};
  const std::pair<std::string, const char*> want_types[] = {{"blk.0.attn_q.weight", "Q8_0"},
                                                            {"blk.0.attn_k.weight", "Q4_0"},
                                                            {"blk.0.attn_v.weight", "Q4_1"},
                                                            {"blk.0.attn_output.weight", "F32"}};
  for (const auto& [tname, want] : want_types) {
    INFO(tname);
    REQUIRE(dumped.count(tname));
    CHECK(dumped[tname].first == want);
    const auto bytes = test::read_file_bytes(dir.path(dumped[tname].second));
    const auto ours = m.get(tname).to_f32();
    REQUIRE(bytes.size() == ours.size() * 4);
    CHECK(std::memcmp(bytes.data(), ours.data(), bytes.size()) == 0);  // python's decode == ours, bit for bit
  }
  // llmc's own GGUF reader gives the same values back.
  auto back = read_gguf(path, true);
  REQUIRE(back.ok());
  for (const auto& [tname, want] : want_types) CHECK(back->get(tname).to_f32() == m.get(tname).to_f32());
}

}  // namespace llmc
