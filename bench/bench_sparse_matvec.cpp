// Sparse vs dense matvec speed on one matrix (default tinyllama's FFN down, 2048 x 5632). Prints figures; asserts
// nothing. usage: bench_sparse_matvec [ROWS COLS] [--threads 1,2] [--reps N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/sparse.h"
#include "kernels/cpu/kernels.h"

using namespace llmc;

namespace {

struct Config {
  const char* name;
  double density;  // unstructured kept fraction; 0 = n:m
  int n, m;
  bool dense;
};

Tensor build(const Config& c, int64_t rows, int64_t cols, DType dtype, const std::vector<float>& w, uint32_t seed) {
  if (c.dense) return make_dense("w", Shape{{rows, cols}}, w, dtype);
  std::mt19937 rng(seed);
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  std::vector<float> kept;
  SparseEncoding s;
  if (c.n == 0) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (auto& k : keep) k = u(rng) < c.density;
    s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
  } else {
    std::vector<int> idx(static_cast<size_t>(c.m));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g0 = 0; g0 + c.m <= cols; g0 += c.m) {
        for (int j = 0; j < c.m; ++j) idx[j] = j;
        std::shuffle(idx.begin(), idx.end(), rng);
        for (int j = 0; j < c.n; ++j) keep[r * cols + g0 + idx[j]] = 1;
      }
    s = *sparse_nm_pattern(keep.data(), w.data(), rows, cols, c.n, c.m, kept);
  }
  sparse_set_dense_values(s, kept, rows, dtype);
  return Tensor{"w", Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{std::move(s)})};
}

double best_us(const Tensor& t, const std::vector<float>& x, std::vector<float>& y, int reps) {
  std::vector<double> times;
  for (int i = 0; i < 3; ++i) kernels::matvec(t, x.data(), y.data());
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    kernels::matvec(t, x.data(), y.data());
    times.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  // The fastest run: on a shared machine, the one no other process interrupted.
  return *std::min_element(times.begin(), times.end());
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 2048, cols = 5632;
  std::vector<int> threads = {1, 2};
  int reps = 30;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads.clear();
      std::stringstream ss(argv[++i]);
      std::string item;
      while (std::getline(ss, item, ',')) threads.push_back(std::stoi(item));
    } else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::stoi(argv[++i]);
    } else {
      pos.emplace_back(argv[i]);
    }
  }
  if (pos.size() == 2) rows = std::stoll(pos[0]), cols = std::stoll(pos[1]);
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
  for (auto& v : w) v = g(rng);
  for (auto& v : x) v = g(rng);
  const Config kConfigs[] = {
      {"dense", 1, 0, 0, true},          {"30% bitmask", 0.7, 0, 0, false}, {"50% bitmask", 0.5, 0, 0, false},
      {"70% bitmask", 0.3, 0, 0, false}, {"90% bitmask", 0.1, 0, 0, false}, {"97% csr", 0.03, 0, 0, false},
      {"2:4", 0, 2, 4, false},           {"4:8", 0, 4, 8, false},           {"1:4", 0, 1, 4, false}};
  std::printf("matrix %lld x %lld, simd %s, fastest of %d matvecs\n", (long long)rows, (long long)cols,
              kernels::active_simd_target().c_str(), reps);
  std::printf("%-8s %-14s %12s", "values", "pattern", "bytes");
  for (int t : threads) std::printf("   %3d thr us  speedup", t);
  std::printf("\n");
  for (DType dt : {DType::kF16, DType::kF32}) {
    std::vector<double> dense_us;
    for (const Config& c : kConfigs) {
      const Tensor t = build(c, rows, cols, dt, w, 7);
      std::printf("%-8s %-14s %12zu", std::string(dtype_name(dt)).c_str(), c.name, t.encoded_bytes());
      for (size_t i = 0; i < threads.size(); ++i) {
        kernels::set_num_threads(threads[i]);
        const double us = best_us(t, x, y, reps);
        if (c.dense) dense_us.push_back(us);
        std::printf("   %10.1f  %6.2fx", us, dense_us[i] / us);
      }
      std::printf("\n");
    }
  }
  return 0;
}
