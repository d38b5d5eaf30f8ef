// Raw runtime speed figures: decode and prefill tokens/s for a model at given thread counts,
// optionally with linear weights converted to f16 in memory. Prints figures; asserts nothing.
// usage: bench_runtime MODEL|synth:smollm2 [--threads 1,2] [--f16] [--decode N] [--prefill 64,512] [--tokenizer FILE]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "formats/model_io.h"
#include "kernels/cpu/kernels.h"
#include "model/arch.h"
#include "runtime/runtime.h"

using namespace llmc;

namespace {

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Re-encodes every linear/output weight (and the embedding) as Dense f16.
void convert_to_f16(Model& m) {
  std::vector<Tensor> converted;
  for (const auto& t : m.tensors()) {
    const TensorRole role = tensor_role(t.name);
    if (role == TensorRole::kLinear || role == TensorRole::kOutput || role == TensorRole::kEmbedding)
      converted.push_back(make_dense(t.name, t.shape, t.to_f32(), DType::kF16));
  }
  for (auto& t : converted) m.replace(std::move(t));
}

// A random-weight model with SmolLM2-135M's shape (speed only; weights are meaningless).
Model synth_smollm2() {
  Model m;
  ModelConfig& c = m.config;
  c.dim = 576;
  c.hidden_dim = 1536;
  c.n_layers = 30;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  c.vocab_size = 49152;
  c.context_length = 8192;
  c.rope_theta = 100000.0f;
  c.rope_style = RopeStyle::kNeox;
  c.tied_embeddings = true;
  uint32_t state = 12345;
  for (const auto& spec : expected_tensors(c)) {
    std::vector<float> v(static_cast<size_t>(spec.shape.numel()));
    for (auto& x : v) {
      state = state * 1664525u + 1013904223u;
      x = (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 0.1f + (spec.role == TensorRole::kNorm ? 1.0f : 0.0f);
    }
    (void)m.add(make_dense_f32(spec.name, spec.shape, v));
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [--threads 1,2] [--f16] [--decode N] [--prefill 64,512]\n", argv[0]);
    return 2;
  }
  std::string path = argv[1], tokenizer;
  std::vector<int64_t> threads{1, 2}, prefill{64, 512};
  int64_t decode = 64;
  bool f16 = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--threads")
      threads = parse_list(next());
    else if (a == "--prefill")
      prefill = parse_list(next());
    else if (a == "--decode")
      decode = std::stoll(next());
    else if (a == "--f16")
      f16 = true;
    else if (a == "--tokenizer")
      tokenizer = next();
  }
  LoadOptions lo;
  lo.tokenizer_path = tokenizer;
  const auto t_load = std::chrono::steady_clock::now();
  // "synth:smollm2" benchmarks a random model of SmolLM2-135M's shape without any file.
  Result<Model> model = path == "synth:smollm2" ? Result<Model>(synth_smollm2()) : load_model(path, lo);
  if (!model) {
    std::fprintf(stderr, "error: %s\n", model.error().message.c_str());
    return 1;
  }
  if (f16) convert_to_f16(*model);
  std::printf("model %s%s: load %.2f s, SIMD target %s\n", path.c_str(), f16 ? " (weights f16)" : "",
              seconds_since(t_load), kernels::active_simd_target().c_str());
  const int64_t vocab = model->config.vocab_size;
  for (int64_t th : threads) {
    RuntimeOptions ro;
    ro.threads = static_cast<int>(th);
    int64_t max_prefill = 0;
    for (int64_t p : prefill) max_prefill = std::max(max_prefill, p);
    ro.max_context = std::max<int64_t>(max_prefill, decode + 1);
    auto rt = Runtime::create(*model, ro);
    if (!rt) {
      std::fprintf(stderr, "error: %s\n", rt.error().message.c_str());
      return 1;
    }
    std::vector<float> logits(static_cast<size_t>(vocab));
    for (int64_t p : prefill) {
      std::vector<int32_t> toks(static_cast<size_t>(p));
      for (int64_t i = 0; i < p; ++i) toks[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 13) % vocab);
      const auto t0 = std::chrono::steady_clock::now();
      if (!(*rt)->forward(toks, 0, logits.data(), false).ok()) return 1;
      const double s = seconds_since(t0);
      std::printf("threads %lld  prefill %4lld tokens: %8.1f tok/s (%.3f s)\n", static_cast<long long>(th),
                  static_cast<long long>(p), static_cast<double>(p) / s, s);
    }
    int32_t tok = 1;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t pos = 0; pos < decode; ++pos) {
      if (!(*rt)->forward({&tok, 1}, pos, logits.data(), false).ok()) return 1;
      tok = static_cast<int32_t>((pos * 31 + 7) % vocab);
    }
    const double s = seconds_since(t0);
    const double tps = static_cast<double>(decode) / s;
    std::printf("threads %lld  decode  %4lld tokens: %8.1f tok/s  (%.1f MB weights/token -> %.2f GB/s)\n",
                static_cast<long long>(th), static_cast<long long>(decode), tps,
                static_cast<double>((*rt)->weight_bytes_per_token()) / 1e6,
                static_cast<double>((*rt)->weight_bytes_per_token()) * tps / 1e9);
  }
  return 0;
}
