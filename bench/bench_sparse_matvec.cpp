// Sparse vs dense linear-kernel speed on one matrix shape (default tinyllama's FFN down, 2048 x 5632): time per
// call and GB/s of weight bytes, per pattern and value encoding. Prints figures; asserts nothing.
//
// usage: bench_sparse_matvec [ROWS COLS] [--threads 1,2] [--reps N] [--tokens 1,64] [--values f16,bf16,f32,q4]
//                            [--patterns dense,0.5,0.7,2:4,...] [--working-set MB] [--cpu-time]
//                            [--simd AVX2|AVX3|...]
// Each timed call runs the kernel over a rotation of copies of the weight whose bytes exceed
// --working-set (default 256 MB, far above the last-level cache), so weights stream from DRAM as
// in decode. The figure is the fastest of --reps calls (the one a shared machine disturbed least); --cpu-time
// times the calling thread's CPU time instead of wall time (meaningful with --threads 1 only: it leaves out the
// time a loaded machine schedules other processes).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/sparse.h"
#include "kernels/cpu/kernels.h"
#include "passes/quant/quant_math.h"

using namespace llmc;

namespace {

struct Pattern {
  std::string name;
  double density = 1;  // unstructured kept fraction (1 = dense)
  int n = 0, m = 0;    // n:m
  bool dense() const { return n == 0 && density >= 1; }
};

Pattern parse_pattern(const std::string& s) {
  Pattern p;
  p.name = s;
  if (s == "dense") return p;
  if (auto colon = s.find(':'); colon != std::string::npos) {
    p.n = std::stoi(s.substr(0, colon));
    p.m = std::stoi(s.substr(colon + 1));
    return p;
  }
  p.density = 1.0 - std::stod(s);
  p.name = std::to_string(static_cast<int>(std::stod(s) * 100 + 0.5)) + "%";
  return p;
}

// Values of a Sparse tensor (kept [rows, kept_stride]) or of a Dense one: f16/bf16/f32, or q4
// asymmetric g32 with f16 scales (what `llmc quantize` writes by default).
EncodingPtr encode_values(const std::string& values, const std::vector<float>& w, int64_t rows, int64_t cols) {
  if (values == "q4") {
    QuantSpec spec;
    return std::make_shared<Encoding>(Encoding{quantize_rtn(spec, w, rows, cols, {}, ScaleSearch{}, nullptr)});
  }
  const DType dt = values == "f16" ? DType::kF16 : values == "bf16" ? DType::kBF16 : DType::kF32;
  return make_dense("w", Shape{{rows, cols}}, w, dt).encoding;
}

Tensor build(const Pattern& p, const std::string& values, int64_t rows, int64_t cols, const std::vector<float>& w,
             uint32_t seed) {
  if (p.dense()) return Tensor{"w", Shape{{rows, cols}}, encode_values(values, w, rows, cols)};
  std::mt19937 rng(seed);
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  std::vector<float> kept;
  SparseEncoding s;
  if (p.n == 0) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (auto& k : keep) k = u(rng) < p.density;
    s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
  } else {
    std::vector<int> idx(static_cast<size_t>(p.m));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g0 = 0; g0 < cols; g0 += p.m) {
        const int width = static_cast<int>(std::min<int64_t>(p.m, cols - g0));
        idx.resize(static_cast<size_t>(width));
        for (int j = 0; j < width; ++j) idx[j] = j;
        std::shuffle(idx.begin(), idx.end(), rng);
        for (int j = 0; j < std::min(p.n, width); ++j) keep[r * cols + g0 + idx[j]] = 1;
      }
    s = *sparse_nm_pattern(keep.data(), w.data(), rows, cols, p.n, p.m, kept);
  }
  s.values = encode_values(values, kept, rows, s.kept_stride);
  return Tensor{"w", Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{std::move(s)})};
}

// A copy of the tensor in fresh memory (every buffer of the tree duplicated).
Bytes clone(const Bytes& b) { return Bytes::owned(std::vector<uint8_t>(b.data(), b.data() + b.size())); }
EncodingPtr clone(const EncodingPtr& e) {
  if (const auto* d = std::get_if<DenseEncoding>(&e->node)) {
    DenseEncoding c = *d;
    c.data = clone(d->data);
    return std::make_shared<Encoding>(Encoding{c});
  }
  if (const auto* q = std::get_if<QuantEncoding>(&e->node)) {
    QuantEncoding c = *q;
    c.codes = clone(q->codes);
    c.scales = clone(q->scales);
    c.mins = clone(q->mins);
    c.scale_meta = clone(q->scale_meta);
    c.min_meta = clone(q->min_meta);
    return std::make_shared<Encoding>(Encoding{c});
  }
  SparseEncoding c = std::get<SparseEncoding>(e->node);
  c.index = clone(c.index);
  c.row_ptr = clone(c.row_ptr);
  c.values = clone(c.values);
  return std::make_shared<Encoding>(Encoding{c});
}

bool g_cpu_time = false;

double now_us() {
  if (!g_cpu_time)
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

// Fastest of `reps` timed calls; each call runs every copy once (x: [tokens, cols]).
double best_us_per_copy(const std::vector<Tensor>& copies, const std::vector<float>& x, int64_t tokens,
                        std::vector<float>& y, int reps) {
  for (const Tensor& t : copies) kernels::linear(t, x.data(), tokens, y.data());
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_us();
    for (const Tensor& t : copies) kernels::linear(t, x.data(), tokens, y.data());
    best = std::min(best, (now_us() - t0) / static_cast<double>(copies.size()));
  }
  return best;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 2048, cols = 5632;
  std::vector<int> threads = {1, 2};
  std::vector<int64_t> token_counts = {1};
  std::vector<std::string> values = {"f16", "q4"};
  std::vector<std::string> patterns = {"dense", "0.3", "0.5", "0.7", "0.8", "0.9", "0.97", "2:4", "4:8", "1:4", "3:8"};
  int reps = 10;
  double working_set_mb = 256;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--threads" && has_value) {
      threads.clear();
      for (const auto& s : split(argv[++i])) threads.push_back(std::stoi(s));
    } else if (arg == "--tokens" && has_value) {
      token_counts.clear();
      for (const auto& s : split(argv[++i])) token_counts.push_back(std::stoll(s));
    } else if (arg == "--values" && has_value) {
      values = split(argv[++i]);
    } else if (arg == "--patterns" && has_value) {
      patterns = split(argv[++i]);
    } else if (arg == "--reps" && has_value) {
      reps = std::stoi(argv[++i]);
    } else if (arg == "--cpu-time") {
      g_cpu_time = true;
    } else if (arg == "--simd" && has_value) {
      const std::string name = argv[++i];
      bool found = false;
      for (int64_t t : kernels::simd_targets())
        if (kernels::simd_target_name(t) == name) kernels::force_simd_target(t), found = true;
      if (!found) {
        std::fprintf(stderr, "unknown or unsupported simd target '%s'\n", name.c_str());
        return 1;
      }
    } else if (arg == "--working-set" && has_value) {
      working_set_mb = std::stod(argv[++i]);
    } else {
      pos.push_back(arg);
    }
  }
  if (pos.size() == 2) rows = std::stoll(pos[0]), cols = std::stoll(pos[1]);
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = g(rng);
  const int64_t max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
  std::vector<float> x(static_cast<size_t>(max_tokens * cols)), y(static_cast<size_t>(max_tokens * rows));
  for (auto& v : x) v = g(rng);
  std::printf("matrix %lld x %lld, simd %s, fastest of %d calls (%s), working set >= %.0f MB\n", (long long)rows,
              (long long)cols, kernels::active_simd_target().c_str(), reps, g_cpu_time ? "thread CPU time" : "wall",
              working_set_mb);
  std::printf("%-6s %-6s %-8s %10s", "values", "tokens", "pattern", "MB");
  for (int t : threads) std::printf(" | %2d thr: us/call   GB/s  x dense", t);
  std::printf("\n");
  for (const std::string& v : values)
    for (int64_t tokens : token_counts) {
      std::vector<double> dense_us(threads.size(), 0.0);
      for (const std::string& ps : patterns) {
        const Pattern p = parse_pattern(ps);
        const Tensor t = build(p, v, rows, cols, w, 7);
        // One token: the bytes a decode call reads (a window-indexed bitmask weight: the index, not the mask).
        const double mb = static_cast<double>(tokens == 1 ? kernels::decode_read_bytes(t) : t.encoded_bytes()) / 1e6;
        std::vector<Tensor> copies{t};
        while (mb * static_cast<double>(copies.size()) < working_set_mb)
          copies.push_back(Tensor{t.name, t.shape, clone(t.encoding)});
        std::printf("%-6s %-6lld %-8s %10.2f", v.c_str(), (long long)tokens, p.name.c_str(), mb);
        for (size_t i = 0; i < threads.size(); ++i) {
          kernels::set_num_threads(threads[i]);
          const double us = best_us_per_copy(copies, x, tokens, y, reps);
          if (p.dense()) dense_us[i] = us;
          std::printf(" |          %8.1f %6.2f  %6.2fx", us, mb * 1e6 / (us * 1e3),
                      dense_us[i] > 0 ? dense_us[i] / us : 0);
        }
        std::printf("\n");
        std::fflush(stdout);
      }
    }
  return 0;
}
