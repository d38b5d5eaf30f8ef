// Benchmark: write and load a synthetic TinyLlama-shaped f16 model as raw and zstd .llmc; prints figures.
// Usage: bench_llmc_load [layers=22] [dir=/tmp] [zstd_level=3]
#include <omp.h>
#include <xxhash.h>
#include <zstd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "formats/llmc.h"
#include "formats/model_io.h"
#include "model/arch.h"

using namespace llmc;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Roughly normal(0, 0.02) f16 weights (sum of four uniforms), like a trained checkpoint's spread.
Tensor synthetic_f16(const TensorSpec& spec, uint64_t seed) {
  const size_t n = static_cast<size_t>(spec.shape.numel());
  std::vector<uint16_t> half(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    float s = 0;
    for (int k = 0; k < 4; ++k) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      s += static_cast<float>(x >> 40) / static_cast<float>(1ull << 24);
    }
    half[i] = f32_to_f16((s - 2.0f) * 0.035f);
  }
  DenseEncoding d{DType::kF16, Bytes::from_vector(half)};
  return Tensor{spec.name, spec.shape, std::make_shared<Encoding>(Encoding{d})};
}

// Reads one byte per 4 KiB page so lazily mapped data is actually faulted in.
uint64_t touch_all(const Model& m) {
  uint64_t sum = 0;
  for (const Tensor& t : m.tensors()) {
    const Bytes& b = std::get<DenseEncoding>(t.encoding->node).data;
    for (size_t i = 0; i < b.size(); i += 4096) sum += b.data()[i];
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  const int layers = argc > 1 ? std::atoi(argv[1]) : 22;
  const std::string dir = argc > 2 ? argv[2] : "/tmp";
  const int level = argc > 3 ? std::atoi(argv[3]) : 3;

  Model model;
  ModelConfig& c = model.config;
  c.dim = 2048, c.hidden_dim = 5632, c.n_layers = layers, c.n_heads = 32, c.n_kv_heads = 4, c.head_dim = 64;
  c.vocab_size = 32000, c.context_length = 2048;
  const auto specs = expected_tensors(c);
  std::vector<Tensor> tensors(specs.size());
  auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < static_cast<int64_t>(specs.size()); ++i) tensors[i] = synthetic_f16(specs[i], i + 1);
  size_t bytes = 0;
  for (auto& t : tensors) {
    bytes += t.encoded_bytes();
    if (!model.add(std::move(t)).ok()) return 1;
  }
  std::printf("model: tinyllama shape, %d layers, %zu tensors, %.1f MB f16, generated in %.2f s, %d threads\n", layers,
              model.tensors().size(), bytes / 1e6, seconds_since(t0), omp_get_max_threads());

  const std::string raw_path = dir + "/bench_llmc_raw.llmc", z_path = dir + "/bench_llmc_zstd.llmc";
  LlmcWriteOptions raw_opts, z_opts;
  z_opts.zstd_level = level;
  for (auto [path, opts] : {std::pair{raw_path, raw_opts}, std::pair{z_path, z_opts}}) {
    t0 = std::chrono::steady_clock::now();
    if (auto r = write_llmc(model, path, opts); !r.ok()) {
      std::fprintf(stderr, "%s\n", r.error().message.c_str());
      return 1;
    }
    std::printf("write zstd_level=%d: %.2f s, file %.1f MB\n", opts.zstd_level, seconds_since(t0),
                std::filesystem::file_size(path) / 1e6);
  }

  struct Run {
    const char* what;
    const std::string* path;
    bool verify;
  };
  const Run kRuns[] = {{"raw, verify checksums", &raw_path, true},
                       {"raw, no verify", &raw_path, false},
                       {"zstd, verify checksums", &z_path, true},
                       {"zstd, no verify", &z_path, false}};
  for (const Run& run : kRuns) {
    double best_open = 1e9, best_touch = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      t0 = std::chrono::steady_clock::now();
      auto f = open_llmc(*run.path, LlmcReadOptions{run.verify});
      if (!f.ok()) {
        std::fprintf(stderr, "%s\n", f.error().message.c_str());
        return 1;
      }
      best_open = std::min(best_open, seconds_since(t0));
      volatile uint64_t sink = touch_all(f->model);
      (void)sink;
      best_touch = std::min(best_touch, seconds_since(t0));
    }
    std::printf("load %-24s open %.3f s, open + touch every page %.3f s (best of 3, warm page cache)\n", run.what,
                best_open, best_touch);
  }

  // Single-core figures: zstd decode of the embedding section, xxHash64 of the same bytes.
  const Bytes& emb = std::get<DenseEncoding>(model.get("token_embd.weight").encoding->node).data;
  std::vector<uint8_t> frame(ZSTD_compressBound(emb.size()));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), emb.data(), emb.size(), level));
  std::vector<uint8_t> out(emb.size());
  t0 = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 3; ++rep) ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  std::printf("zstd level %d decode, 1 core: %.0f MB/s of output (ratio %.3f)\n", level,
              3 * emb.size() / 1e6 / seconds_since(t0), double(frame.size()) / emb.size());
  t0 = std::chrono::steady_clock::now();
  volatile uint64_t h = 0;
  for (int rep = 0; rep < 3; ++rep) h = h + XXH64(emb.data(), emb.size(), 0);
  std::printf("xxHash64, 1 core: %.0f MB/s\n", 3 * emb.size() / 1e6 / seconds_since(t0));
  std::filesystem::remove(raw_path);
  std::filesystem::remove(z_path);
  return 0;
}
