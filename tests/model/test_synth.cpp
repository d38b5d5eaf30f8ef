// Synthetic models: shapes against published parameter counts and the stories260K fixture,
// weight statistics, determinism by seed and thread count, and `llmc synth` argument checks.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "formats/llama2c_reader.h"
#include "formats/model_io.h"
#include "kernels/cpu/kernels.h"
#include "model/arch.h"
#include "model/synth.h"
#include "test_util.h"

using namespace llmc;

namespace {

bool same_bytes(const Model& a, const Model& b) {
  if (a.tensors().size() != b.tensors().size()) return false;
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const auto& da = std::get<DenseEncoding>(a.tensors()[i].encoding->node).data;
    const auto& db = std::get<DenseEncoding>(b.tensors()[i].encoding->node).data;
    if (da.size() != db.size() || std::memcmp(da.data(), db.data(), da.size()) != 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("synth shapes have the published parameter counts", "[synth]") {
  // Published totals: TinyLlama-1.1B 1,100,048,384; Llama-2-7b 6,738,415,616; SmolLM2-135M 134,515,008.
  CHECK(count_parameters(find_synth_shape("tinyllama-1.1b")->config) == 1100048384);
  CHECK(count_parameters(find_synth_shape("llama2-7b")->config) == 6738415616);
  CHECK(count_parameters(find_synth_shape("smollm2-135m")->config) == 134515008);
  for (const SynthShape& s : synth_shapes()) {
    INFO(s.name);
    CHECK(validate_config(s.config).ok());
  }
  const ModelConfig& tl = find_synth_shape("tinyllama-1.1b")->config;
  CHECK(tl.dim == 2048);
  CHECK(tl.hidden_dim == 5632);
  CHECK(tl.n_layers == 22);
  CHECK(tl.n_heads == 32);
  CHECK(tl.n_kv_heads == 4);
  CHECK(tl.vocab_size == 32000);
  CHECK(tl.context_length == 2048);
  CHECK_FALSE(tl.tied_embeddings);
  CHECK(find_synth_shape("gpt-5") == nullptr);
  CHECK_FALSE(synth_model("gpt-5", {}).ok());
}

TEST_CASE("synth stories260k has the fixture's config", "[synth]") {
  const std::string path = test::fixture("models/stories260K/stories260K.bin");
  if (path.empty()) return;
  auto real = read_llama2c(path);
  REQUIRE(real.ok());
  auto m = synth_model("stories260k", {});
  REQUIRE(m.ok());
  CHECK(m->config == real->config);
  REQUIRE(m->tensors().size() == real->tensors().size());
  for (size_t i = 0; i < m->tensors().size(); ++i) {
    CHECK(m->tensors()[i].name == real->tensors()[i].name);
    CHECK(m->tensors()[i].shape == real->tensors()[i].shape);
  }
}

TEST_CASE("synth weights are N(0, 0.02), norms 1", "[synth]") {
  SynthOptions options;
  options.seed = 7;
  auto m = synth_model("stories260k", options);
  REQUIRE(m.ok());
  REQUIRE(validate_model(*m).ok());
  double sum = 0, sum2 = 0;
  int64_t n = 0, within1 = 0, within2 = 0;
  for (const auto& t : m->tensors()) {
    const std::vector<float> v = t.to_f32();
    if (tensor_role(t.name) == TensorRole::kNorm) {
      for (float x : v) REQUIRE(x == 1.0f);
      continue;
    }
    for (float x : v) {
      sum += x;
      sum2 += double(x) * x;
      within1 += std::fabs(x) <= 0.02f;
      within2 += std::fabs(x) <= 0.04f;
      ++n;
    }
  }
  const double mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
  // n ~ 260K: standard errors ~4e-5 (mean), ~3e-5 (sd), ~1e-3 (fractions).
  CHECK(std::fabs(mean) < 3e-4);
  CHECK(sd == Approx(0.02).epsilon(0.01));
  CHECK(double(within1) / n == Approx(0.6827).margin(0.005));  // normal: P(|z| <= 1)
  CHECK(double(within2) / n == Approx(0.9545).margin(0.003));  // normal: P(|z| <= 2)
}

TEST_CASE("synth is deterministic by seed and independent of threads", "[synth]") {
  SynthOptions a;
  a.seed = 42;
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = synth_model("stories260k", a);
  omp_set_num_threads(std::max(2, threads));
  auto many = synth_model("stories260k", a);
  omp_set_num_threads(threads);
  REQUIRE(one.ok());
  REQUIRE(many.ok());
  CHECK(same_bytes(*one, *many));
  SynthOptions b = a;
  b.seed = 43;
  auto other = synth_model("stories260k", b);
  REQUIRE(other.ok());
  CHECK_FALSE(same_bytes(*one, *other));
  // Different tensors get different streams.
  CHECK(one->get("blk.0.attn_q.weight").to_f32() != one->get("blk.1.attn_q.weight").to_f32());
}

TEST_CASE("synth gives the same bits on every SIMD target", "[synth]") {
  struct Restore {
    ~Restore() { kernels::force_simd_target(0); }
  } restore;
  std::vector<Model> models;
  for (int64_t target : kernels::simd_targets()) {
    kernels::force_simd_target(target);
    for (DType dtype : {DType::kF32, DType::kF16}) {
      auto m = synth_model("stories260k", {dtype, 9});
      REQUIRE(m.ok());
      models.push_back(std::move(*m));
    }
  }
  for (size_t i = 2; i < models.size(); ++i) {
    INFO("target " << i / 2 << " dtype " << i % 2);
    CHECK(same_bytes(models[i], models[i % 2]));
  }
  // One element computed alone is the element of the filled tensor.
  const Model& f32 = models[0];
  const Tensor& t = f32.get("blk.2.ffn_down.weight");
  const uint64_t key = synth_tensor_key(9, t.name);
  const std::vector<float> v = t.to_f32();
  for (uint64_t i : {uint64_t{0}, uint64_t{15}, uint64_t{16}, uint64_t{1001}, uint64_t{v.size() - 1}})
    CHECK(v[i] == 0.02f * synth_standard_normal(key, i));
}

TEST_CASE("synth f16/bf16 are the rounded f32 values", "[synth]") {
  auto f32 = synth_model("stories260k", {DType::kF32, 3});
  auto f16 = synth_model("stories260k", {DType::kF16, 3});
  auto bf16 = synth_model("stories260k", {DType::kBF16, 3});
  REQUIRE((f32.ok() && f16.ok() && bf16.ok()));
  for (size_t i = 0; i < f32->tensors().size(); ++i) {
    const Tensor& t = f32->tensors()[i];
    CHECK(std::get<DenseEncoding>(f16->tensors()[i].encoding->node).dtype == DType::kF16);
    CHECK(std::get<DenseEncoding>(bf16->tensors()[i].encoding->node).dtype == DType::kBF16);
    const std::vector<float> v = t.to_f32(), h = f16->tensors()[i].to_f32(), b = bf16->tensors()[i].to_f32();
    for (size_t k = 0; k < v.size(); ++k) {
      REQUIRE(h[k] == f16_to_f32(f32_to_f16(v[k])));
      REQUIRE(b[k] == bf16_to_f32(f32_to_bf16(v[k])));
    }
  }
  CHECK_FALSE(synth_model("stories260k", {DType::kI8, 0}).ok());
}

TEST_CASE("synth smollm2-135m bf16 in memory", "[synth][heavy]") {
  auto m = synth_model("smollm2-135m", {DType::kBF16, 1});
  REQUIRE(m.ok());
  CHECK(validate_model(*m).ok());
  int64_t params = 0;
  size_t bytes = 0;
  for (const auto& t : m->tensors()) {
    params += t.numel();
    bytes += t.encoded_bytes();
  }
  CHECK(params == 134515008);
  CHECK(bytes == size_t(134515008) * 2);
}

TEST_CASE("llmc synth argument checks", "[synth][cli]") {
  test::TempDir dir;
  const std::string out = dir.path("m.gguf");
  CHECK(test::run_cli("synth --shape nope -o " + out).exit_code == 2);
  CHECK(test::run_cli("synth -o " + out).exit_code == 2);
  CHECK(test::run_cli("synth --shape stories260k").exit_code == 2);
  CHECK(test::run_cli("synth --shape stories260k --dtype q4 -o " + out).exit_code == 2);
  CHECK(test::run_cli("synth --shape stories260k --format onnx -o " + out).exit_code == 2);
  CHECK(test::run_cli("synth --shape stories260k --seed -1x -o " + out).exit_code == 2);
  CHECK_FALSE(std::filesystem::exists(out));

  // An existing output is kept unless --force.
  test::write_file_bytes(out, {'k', 'e', 'e', 'p'});
  auto r = test::run_cli("synth --shape stories260k -o " + out);
  CHECK(r.exit_code == 4);
  CHECK_THAT(r.output, Catch::Contains("--force"));
  CHECK(test::read_file_bytes(out) == std::vector<unsigned char>{'k', 'e', 'e', 'p'});

  // With --force the writer runs; when GGUF writing is available the file loads back as the
  // same model (same shapes as the stories260K config).
  r = test::run_cli("synth --shape stories260k --dtype f16 --seed 5 --force -o " + out);
  INFO(r.output);
  if (r.exit_code != 0) {
    CHECK(r.exit_code == 1);
    WARN("GGUF writer unavailable on this build: " << r.output);
    return;
  }
  auto back = load_model(out);
  if (!back.ok()) {
    WARN("GGUF reader unavailable on this build: " << back.error().message);
    return;
  }
  auto mem = synth_model("stories260k", {DType::kF16, 5});
  REQUIRE(mem.ok());
  CHECK(back->config.dim == mem->config.dim);
  for (const auto& t : mem->tensors()) {
    const Tensor* u = back->find(t.name);
    REQUIRE(u != nullptr);
    CHECK(u->to_f32() == t.to_f32());
  }
}
