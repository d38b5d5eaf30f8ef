// Quant kernel speed on a synthetic model: decode and prefill tok/s and the fraction of measured
// memory bandwidth for every linear weight (and the classifier) stored as random Quant codes (or
// random Palette indices with one f16 codebook per tensor: formats p8..p2; p4g..p2g with the codebook on
// the integer grid, which runs on int8 activations).
// Prints a Markdown table; asserts nothing. Weights are random (speed does not depend on values).
// usage: bench_quant [--shape tinyllama-1.1b] [--threads 2] [--formats q8,q4,q3,q2,binary,ternary,p4]
//                    [--group 32] [--prompt 64] [--gen 16] [--repeat 3] [--membw-mib 1024] [--kernel]
//                    [--kernel-shape ROWSxCOLS]  (--kernel on that weight shape instead of the model's FFN)
//                    [--activations auto|int8x2|int8|f32|f32-decoded]  (kernels::QuantActivations; default auto;
//                                  with --paired a comma list, every mode timed in every slice)
//                    [--paired SLICES]  (decode only: SLICES times a bandwidth probe and then --gen decode
//                                  tokens per activation mode, so each fraction pairs a decode with the
//                                  bandwidth of the same seconds; the VM's bandwidth moves within minutes)
//                    [--simd AVX2|AVX3|...]  (that SIMD target and worse ones only)
//                    [--huge-pages on|off]  (RuntimeOptions::huge_pages; default on)
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/palette.h"
#include "kernels/cpu/kernels.h"
#include "model/arch.h"
#include "model/synth.h"
#include "runtime/runtime.h"
#include "verify/bench.h"

using namespace llmc;

namespace {

struct BenchFormat {
  const char* name;
  QuantScheme scheme;
  int bits;
  QuantPacking packing;
  bool mins;
  bool palette = false;  // Palette with `bits`-bit indices instead of Quant codes
  bool grid = false;     // palette codebook on the integer grid (core/palette.h)
};

// The formats the table can show; --formats picks by name.
const BenchFormat kBenchFormats[] = {
    {"q8", QuantScheme::kSymmetric, 8, QuantPacking::kBits, false},
    {"q8a", QuantScheme::kAsymmetric, 8, QuantPacking::kBits, true},
    {"q4", QuantScheme::kSymmetric, 4, QuantPacking::kBits, false},
    {"q4a", QuantScheme::kAsymmetric, 4, QuantPacking::kBits, true},
    {"q3", QuantScheme::kSymmetric, 3, QuantPacking::kBits, false},
    {"q2", QuantScheme::kSymmetric, 2, QuantPacking::kBits, false},
    {"binary", QuantScheme::kBinary, 1, QuantPacking::kBits, false},
    {"ternary", QuantScheme::kTernary, 2, QuantPacking::kBits, false},
    {"ternary5", QuantScheme::kTernary, 2, QuantPacking::kTrits5, false},
    {"p8", QuantScheme::kSymmetric, 8, QuantPacking::kBits, false, true},
    {"p4", QuantScheme::kSymmetric, 4, QuantPacking::kBits, false, true},
    {"p3", QuantScheme::kSymmetric, 3, QuantPacking::kBits, false, true},
    {"p2", QuantScheme::kSymmetric, 2, QuantPacking::kBits, false, true},
    {"p4g", QuantScheme::kSymmetric, 4, QuantPacking::kBits, false, true, true},
    {"p3g", QuantScheme::kSymmetric, 3, QuantPacking::kBits, false, true, true},
    {"p2g", QuantScheme::kSymmetric, 2, QuantPacking::kBits, false, true, true},
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

uint64_t g_state = 0x9e3779b97f4a7c15ull;
uint8_t next_byte() {
  g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<uint8_t>(g_state >> 56);
}

// Random indices and one codebook of f16 entries around ±0.01 for the whole tensor (grid: v · 2^-13, v int8).
Tensor random_palette(const std::string& name, const Shape& shape, int bits, bool grid) {
  PaletteEncoding p;
  p.bits = bits;
  std::vector<uint8_t> indices(static_cast<size_t>(shape.rows() * palette_row_stride(bits, shape.cols())));
  for (auto& c : indices) c = next_byte();
  p.indices = Bytes::owned(std::move(indices));
  std::vector<uint16_t> codebook(static_cast<size_t>(palette_entries(bits)));
  for (auto& e : codebook)
    e = grid ? f32_to_f16(std::ldexp(static_cast<float>(static_cast<int8_t>(next_byte())), -13))
             : static_cast<uint16_t>(0x2000 | (next_byte() & 0x83));
  p.codebooks = Bytes::from_vector(codebook);
  return Tensor{name, shape, std::make_shared<Encoding>(Encoding{p})};
}

// Random codes (valid for the format) with f16 scales (and mins) around 0.01.
Tensor random_quant(const std::string& name, const Shape& shape, const BenchFormat& f, int64_t group) {
  if (f.palette) return random_palette(name, shape, f.bits, f.grid);
  QuantEncoding q;
  q.bits = f.bits;
  q.scheme = f.scheme;
  q.packing = f.packing;
  q.group_size = group;
  q.scale_dtype = DType::kF16;
  std::vector<uint8_t> codes(static_cast<size_t>(shape.rows() * quant_row_stride(q, shape.cols())));
  for (auto& c : codes) c = f.packing == QuantPacking::kTrits5 ? next_byte() % 243 : next_byte();
  if (f.scheme == QuantScheme::kTernary && f.packing == QuantPacking::kBits)
    for (auto& c : codes) c &= 0x55;  // 2-bit codes 0/1 only (3 is invalid)
  q.codes = Bytes::owned(std::move(codes));
  const size_t n = static_cast<size_t>(shape.rows() * quant_groups_per_row(q, shape.cols()));
  std::vector<uint16_t> scales(n, 0x2000);  // f16 ~0.0078
  q.scales = Bytes::from_vector(scales);
  if (f.mins) q.mins = Bytes::from_vector(std::vector<uint16_t>(n, 0xA000));  // f16 ~-0.0078
  return Tensor{name, shape, std::make_shared<Encoding>(Encoding{q})};
}

Model make_model(const ModelConfig& c, const BenchFormat& f, int64_t group) {
  Model m;
  m.config = c;
  for (const auto& spec : expected_tensors(c)) {
    if (spec.role == TensorRole::kLinear || spec.role == TensorRole::kOutput) {
      (void)m.add(random_quant(spec.name, spec.shape, f, group));
    } else if (spec.role == TensorRole::kEmbedding) {
      std::vector<uint16_t> v(static_cast<size_t>(spec.shape.numel()));
      for (auto& e : v) e = static_cast<uint16_t>(0x2000 | next_byte());
      DenseEncoding d{DType::kF16, Bytes::from_vector(v)};
      (void)m.add(Tensor{spec.name, spec.shape, std::make_shared<Encoding>(Encoding{d})});
    } else {
      (void)m.add(make_dense_f32(
          spec.name, spec.shape,
          std::vector<float>(static_cast<size_t>(spec.shape.numel()), spec.role == TensorRole::kNorm ? 1.0f : 0.0f)));
    }
  }
  return m;
}

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Kernel-only figures for one [rows, cols] weight: matvec (decode) and matmul of `n` tokens
// (prefill), wall and process-CPU time; on a busy machine CPU time shows what the kernel needs.
// f == nullptr: a Dense f16 weight, the baseline whose kernel reaches ~80 % of bandwidth.
void kernel_bench(const BenchFormat* f, int64_t group, int threads, int64_t rows, int64_t cols, int64_t n) {
  Tensor w;
  if (f != nullptr) {
    w = random_quant("w", Shape{{rows, cols}}, *f, group);
  } else {
    std::vector<uint16_t> v(static_cast<size_t>(rows * cols));
    for (auto& e : v) e = static_cast<uint16_t>(0x2000 | next_byte());
    w = Tensor{"w", Shape{{rows, cols}},
               std::make_shared<Encoding>(Encoding{DenseEncoding{DType::kF16, Bytes::from_vector(v)}})};
  }
  std::vector<float> x(static_cast<size_t>(n * cols), 0.5f), y(static_cast<size_t>(n * rows));
  kernels::set_num_threads(threads);
  kernels::matvec(w, x.data(), y.data());
  // Best of several rounds (the machine is shared): wall and process-CPU time of one call.
  struct Best {
    double wall = 1e30, cpu = 1e30;
  };
  auto best_of = [](int rounds, int reps, auto&& call) {
    Best b;
    for (int r = 0; r < rounds; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = cpu_seconds();
      for (int i = 0; i < reps; ++i) call();
      b.wall = std::min(b.wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
      b.cpu = std::min(b.cpu, (cpu_seconds() - c0) / reps);
    }
    return b;
  };
  const Best dec = best_of(8, 5, [&] { kernels::matvec(w, x.data(), y.data()); });
  const Best pre = best_of(3, 1, [&] { kernels::matmul(w, x.data(), n, y.data()); });
  const double wall = dec.wall, cpu = dec.cpu, pwall = pre.wall, pcpu = pre.cpu;
  const double bytes = static_cast<double>(w.encoded_bytes());
  const double flop = 2.0 * static_cast<double>(rows * cols);
  std::printf("| %s | %lldx%lld | %.2f | %.2f | %.1f | %.1f |\n", f != nullptr ? f->name : "f16 dense",
              static_cast<long long>(rows), static_cast<long long>(cols), bytes / wall / 1e9, bytes / cpu / 1e9,
              flop * n / pwall / 1e9, flop * n / pcpu / 1e9);
  std::fflush(stdout);
}

// --paired: decode speed against the bandwidth of the same seconds. Each slice is a probe
// (best of 5 reads of the buffer, as the plain run's probes) followed, for every activation mode, by one untimed token
// and `gen` timed ones at positions 1..gen (the KV cache is rewritten; attention stays short). The table splits the
// slices by their probe: within 15 % of the run's best probe (the VM's fast minutes, when the run saw any) or not, and
// gives each part's median fraction and range (per-slice figures go to stderr).
void paired_bench(Runtime& rt, const BenchFormat& f, const std::vector<kernels::QuantActivations>& modes, int slices,
                  int64_t gen, uint64_t membw_bytes, int threads) {
  struct Sample {
    double probe, gbs;
  };
  std::vector<std::vector<Sample>> samples(modes.size());
  std::vector<float> logits(static_cast<size_t>(rt.vocab_size()));
  const double bytes = static_cast<double>(rt.weight_bytes_per_token());
  int32_t token = 1;
  double best_probe = 0;
  for (int k = 0; k < slices; ++k) {
    const double probe = measure_memory_bandwidth(membw_bytes, 5, threads).gb_per_s;
    best_probe = std::max(best_probe, probe);
    std::fprintf(stderr, "slice %d probe %.1f GB/s:", k, probe);
    for (size_t m = 0; m < modes.size(); ++m) {
      kernels::set_quant_activations(modes[m]);
      const auto step = [&](int64_t pos) {
        const auto r = rt.forward(std::span<const int32_t>(&token, 1), pos, logits.data(), false);
        if (!r) std::fprintf(stderr, "\ndecode failed: %s\n", r.error().message.c_str());
        return r.ok();
      };
      bool ok = step(0);
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 1; ok && i <= gen; ++i) ok = step(i);
      if (!ok) return;
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      samples[m].push_back({probe, bytes * static_cast<double>(gen) / seconds / 1e9});
      std::fprintf(stderr, " %s %.1f GB/s", kernels::quant_activations_name(modes[m]), samples[m].back().gbs);
    }
    std::fprintf(stderr, "\n");
  }
  for (size_t m = 0; m < modes.size(); ++m) {
    std::vector<double> fast, slow;
    for (const Sample& x : samples[m]) (x.probe >= 0.85 * best_probe ? fast : slow).push_back(x.gbs / x.probe);
    const auto cells = [](const std::vector<double>& v) {
      if (v.empty()) return std::string("0 | - | -");
      const Spread x = spread_of(v);
      char buf[64];
      std::snprintf(buf, sizeof buf, "%zu | %.0f %% | %.0f–%.0f %%", v.size(), 100 * x.median, 100 * x.min,
                    100 * x.max);
      return std::string(buf);
    };
    std::printf("| %s | %s | %.1f | %s | %s |\n", f.name, kernels::quant_activations_name(modes[m]), best_probe,
                cells(fast).c_str(), cells(slow).c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "tinyllama-1.1b", formats = "q8,q4,q3,q2,binary,ternary";
  int threads = 2;
  int64_t group = 32, membw_mib = 1024;
  bool kernel_only = false, huge_pages = true;
  int64_t kernel_rows = 0, kernel_cols = 0;
  int paired = 0;
  std::vector<kernels::QuantActivations> modes{kernels::quant_activations()};
  BenchOptions bo;
  bo.prompt_tokens = 64;
  bo.gen_tokens = 16;
  bo.repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string("0"); };
    if (a == "--shape")
      shape = next();
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--formats")
      formats = next();
    else if (a == "--group")
      group = std::stoll(next());
    else if (a == "--prompt")
      bo.prompt_tokens = std::stoll(next());
    else if (a == "--gen")
      bo.gen_tokens = std::stoll(next());
    else if (a == "--repeat")
      bo.repeat = std::stoi(next());
    else if (a == "--kernel")
      kernel_only = true;
    else if (a == "--kernel-shape") {
      const std::string v = next();
      const size_t x = v.find('x');
      kernel_only = true;
      kernel_rows = std::stoll(v.substr(0, x));
      kernel_cols = x == std::string::npos ? 0 : std::stoll(v.substr(x + 1));
      if (kernel_rows <= 0 || kernel_cols <= 0) {
        std::fprintf(stderr, "--kernel-shape wants ROWSxCOLS, not %s\n", v.c_str());
        return 2;
      }
    } else if (a == "--membw-mib")
      membw_mib = std::stoll(next());
    else if (a == "--huge-pages")
      huge_pages = next() != "off";
    else if (a == "--simd") {
      const std::string name = next();
      bool found = false;
      for (int64_t t : kernels::simd_targets())
        if (kernels::simd_target_name(t) == name) kernels::force_simd_target(t), found = true;
      if (!found) {
        std::fprintf(stderr, "unknown or unsupported simd target '%s'\n", name.c_str());
        return 2;
      }
    } else if (a == "--activations") {
      modes.clear();
      for (const std::string& m : split(next())) {
        const auto mode = kernels::parse_quant_activations(m);
        if (!mode) {
          std::fprintf(stderr, "unknown activation mode '%s' (auto, int8x2, int8, f32, f32-decoded)\n", m.c_str());
          return 2;
        }
        modes.push_back(*mode);
      }
      if (modes.empty()) modes.push_back(kernels::quant_activations());
      kernels::set_quant_activations(modes.front());
    } else if (a == "--paired") {
      paired = std::stoi(next());
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  const SynthShape* s = find_synth_shape(shape);
  if (s == nullptr) {
    std::fprintf(stderr, "unknown shape %s\n", shape.c_str());
    return 2;
  }
  if (kernel_only) {
    std::printf(
        "kernel only, %d threads, SIMD %s, group %lld, f16 scales, activations %s; prefill = matmul of %lld "
        "tokens\n\n",
        threads, kernels::active_simd_target().c_str(), static_cast<long long>(group),
        kernels::quant_activations_name(kernels::quant_activations()), static_cast<long long>(bo.prompt_tokens));
    std::printf(
        "| format | weight | decode GB/s (wall) | decode GB/s (CPU time) | prefill GFLOP/s (wall) | prefill "
        "GFLOP/s (CPU time) |\n| --- | --- | --- | --- | --- | --- |\n");
    for (const std::string& name : split(formats)) {
      const BenchFormat* f = nullptr;
      for (const auto& row : kBenchFormats)
        if (name == row.name) f = &row;
      if (f == nullptr && name != "f16") continue;
      if (kernel_rows > 0) {
        kernel_bench(f, group, threads, kernel_rows, kernel_cols, bo.prompt_tokens);
        continue;
      }
      kernel_bench(f, group, threads, s->config.hidden_dim, s->config.dim, bo.prompt_tokens);
      kernel_bench(f, group, threads, s->config.dim, s->config.hidden_dim, bo.prompt_tokens);
    }
    return 0;
  }
  if (paired > 0) {
    std::printf(
        "shape %s, %d threads, SIMD %s, group %lld, f16 scales; %d slices, each a bandwidth probe (best of 5 reads "
        "of %lld MiB) and then %lld decode tokens per activation mode\n\n",
        shape.c_str(), threads, kernels::active_simd_target().c_str(), static_cast<long long>(group), paired,
        static_cast<long long>(membw_mib), static_cast<long long>(bo.gen_tokens));
    std::printf(
        "| format | activations | best probe GB/s | slices, probe ≥ 85 %% of best | decode of bandwidth (median) "
        "| range | other slices | decode of bandwidth (median) | range |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    std::fflush(stdout);
  }
  MemBandwidth bw;
  if (paired == 0) {
    bw = measure_memory_bandwidth(static_cast<uint64_t>(membw_mib) << 20, 5, threads);
    std::printf(
        "shape %s, %d threads, SIMD %s, group %lld, f16 scales, activations %s, memory read "
        "bandwidth %.2f GB/s\n\n",
        shape.c_str(), threads, kernels::active_simd_target().c_str(), static_cast<long long>(group),
        kernels::quant_activations_name(kernels::quant_activations()), bw.gb_per_s);
    // The machine's bandwidth moves by tens of percent within minutes (VM neighbours): every row's
    // fraction is against the best of the probe above and a probe right after the row's runs.
    std::printf(
        "| format | bpw | weights MB/token | prefill %lld tok/s | decode tok/s | decode GB/s | probe GB/s | of "
        "bandwidth |\n",
        static_cast<long long>(bo.prompt_tokens));
    std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  }
  bo.threads = threads;
  bo.membw_bytes = static_cast<uint64_t>(membw_mib) << 20;
  bo.membw_runs = 5;
  for (const std::string& name : split(formats)) {
    const BenchFormat* f = nullptr;
    for (const auto& row : kBenchFormats)
      if (name == row.name) f = &row;
    if (f == nullptr) {
      std::fprintf(stderr, "unknown format %s\n", name.c_str());
      return 2;
    }
    Model m = make_model(s->config, *f, group);
    uint64_t bytes = 0, weights = 0;
    for (const auto& t : m.tensors())
      if (tensor_role(t.name) == TensorRole::kLinear || tensor_role(t.name) == TensorRole::kOutput) {
        bytes += t.encoded_bytes();
        weights += static_cast<uint64_t>(t.numel());
      }
    RuntimeOptions ro;
    ro.threads = threads;
    ro.max_context = std::max(bo.prompt_tokens, int64_t{0}) + bo.gen_tokens + 1;
    ro.huge_pages = huge_pages;
    auto rt = Runtime::create(m, ro);
    if (!rt) {
      std::printf("| %s | - | - | error: %s | | | | |\n", f->name, rt.error().message.c_str());
      continue;
    }
    if (paired > 0) {
      paired_bench(**rt, *f, modes, paired, bo.gen_tokens, bo.membw_bytes, threads);
      continue;
    }
    auto r = run_bench(**rt, bo);
    if (!r) {
      std::printf("| %s | - | - | error: %s | | | | |\n", f->name, r.error().message.c_str());
      continue;
    }
    const double gbs = r->decode_tps.median * static_cast<double>(r->weight_bytes_per_token) / 1e9;
    const double limit = std::max(bw.gb_per_s, r->membw.gb_per_s);
    std::printf("| %s | %.3f | %.1f | %.1f | %.2f | %.2f | %.2f | %.0f %% |\n", f->name,
                8.0 * static_cast<double>(bytes) / static_cast<double>(weights),
                static_cast<double>(r->weight_bytes_per_token) / 1e6, r->prefill_tps.median, r->decode_tps.median, gbs,
                limit, 100.0 * gbs / limit);
    std::fflush(stdout);
  }
  return 0;
}
