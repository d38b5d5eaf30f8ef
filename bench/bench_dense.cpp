// Dense linear-kernel speed: GFLOP/s of kernels::matmul (f32/f16/bf16 weights) on the shapes of a
// model's prefill, per thread count, best of several repetitions. Prints figures; asserts nothing.
// usage: bench_dense [--shapes 576x576,192x576,1536x576,576x1536] [--tokens 256] [--threads 1,2]
//                    [--dtypes f32,f16,bf16] [--repeat 5]
#include <time.h>
#include <algorithm>

#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/kernels.h"

using namespace llmc;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU seconds of the whole process (all threads): on a loaded machine, GFLOP per CPU-second is
// the steadier figure (wall time includes time other processes held the cores).
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  // SmolLM2-135M's linear shapes (rows x cols = out x in): q/o, k/v, gate/up, down.
  std::string shapes = "576x576,192x576,1536x576,576x1536", dtypes = "f32,f16,bf16", threads = "1,2";
  int64_t tokens = 256;
  int repeat = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string v = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--shapes")
      shapes = v;
    else if (a == "--tokens")
      tokens = std::stoll(v);
    else if (a == "--threads")
      threads = v;
    else if (a == "--dtypes")
      dtypes = v;
    else if (a == "--repeat")
      repeat = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
    ++i;
  }
  std::printf("SIMD target %s, %lld tokens, best of %d\n", kernels::active_simd_target().c_str(),
              static_cast<long long>(tokens), repeat);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const std::string& dt_name : split(dtypes, ',')) {
    const DType dt = dt_name == "f16" ? DType::kF16 : dt_name == "bf16" ? DType::kBF16 : DType::kF32;
    for (const std::string& th : split(threads, ',')) {
      kernels::set_num_threads(std::stoi(th));
      double flops_total = 0, secs_total = 0, cpu_total = 0;
      for (const std::string& shape : split(shapes, ',')) {
        const auto rc = split(shape, 'x');
        const int64_t rows = std::stoll(rc[0]), cols = std::stoll(rc[1]);
        std::vector<float> wf(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(tokens * cols));
        for (auto& f : wf) f = normal(rng);
        for (auto& f : x) f = normal(rng);
        const Tensor w = make_dense("w", Shape{{rows, cols}}, wf, dt);
        std::vector<float> y(static_cast<size_t>(tokens * rows));
        double best = 1e30, best_cpu = 1e30;
        for (int r = 0; r < repeat; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          const double c0 = process_cpu_seconds();
          kernels::matmul(w, x.data(), tokens, y.data());
          best = std::min(best, seconds_since(t0));
          best_cpu = std::min(best_cpu, process_cpu_seconds() - c0);
        }
        const double flops = 2.0 * static_cast<double>(rows * cols * tokens);
        flops_total += flops;
        secs_total += best;
        cpu_total += best_cpu;
        std::printf("%-4s threads %s  %5lldx%-5lld  %7.1f GFLOP/s wall (%.3f ms)  %7.1f GFLOP per CPU-s\n",
                    dt_name.c_str(), th.c_str(), static_cast<long long>(rows), static_cast<long long>(cols),
                    flops / best / 1e9, best * 1e3, flops / best_cpu / 1e9);
      }
      std::printf("%-4s threads %s  all shapes  %7.1f GFLOP/s wall  %7.1f GFLOP per CPU-s\n", dt_name.c_str(),
                  th.c_str(), flops_total / secs_total / 1e9, flops_total / cpu_total / 1e9);
    }
  }
  kernels::set_num_threads(0);
  return 0;
}
