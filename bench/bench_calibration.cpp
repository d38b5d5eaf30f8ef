// Benchmark: tokenize a calibration text, then time block-by-block capture (collect with X^T X +
// advance, every block, then the head) as GPTQ drives it; prints figures, asserts nothing.
// Usage: bench_calibration MODEL TEXT [samples=128] [ctx=512] [threads=0] [max_samples=0] [tokenizer]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "formats/model_io.h"
#include "pipeline/calibration.h"

using namespace llmc;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL TEXT [samples=128] [ctx=512] [threads=0] [max_samples=0] [tokenizer]\n",
                 argv[0]);
    return 2;
  }
  CalibOptions o;
  o.file = argv[2];
  o.samples = argc > 3 ? std::atoll(argv[3]) : 128;
  o.ctx = argc > 4 ? std::atoll(argv[4]) : 512;
  const int threads = argc > 5 ? std::atoi(argv[5]) : 0;
  StatsRequest req;
  req.xtx = true;
  req.max_samples = argc > 6 ? std::atoll(argv[6]) : 0;
  LoadOptions lo;
  if (argc > 7) lo.tokenizer_path = argv[7];

  auto t0 = std::chrono::steady_clock::now();
  auto model = load_model(argv[1], lo);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.error().message.c_str());
    return 1;
  }
  std::printf("load: %.2f s\n", seconds_since(t0));
  t0 = std::chrono::steady_clock::now();
  auto set = CalibrationSet::create(*model, o);
  if (!set.ok()) {
    std::fprintf(stderr, "%s\n", set.error().message.c_str());
    return 1;
  }
  std::printf("calibration set: %lld x %lld tokens in %.2f s\n", static_cast<long long>(o.samples),
              static_cast<long long>(o.ctx), seconds_since(t0));

  t0 = std::chrono::steady_clock::now();
  auto seq = (*set)->sequential(*model, threads);
  if (!seq.ok()) {
    std::fprintf(stderr, "%s\n", seq.error().message.c_str());
    return 1;
  }
  std::printf("embed: %.2f s\n", seconds_since(t0));
  double collect_s = 0, advance_s = 0;
  for (int64_t l = 0; l < model->config.n_layers; ++l) {
    t0 = std::chrono::steady_clock::now();
    auto stats = (*seq)->collect(l, req);
    if (!stats.ok()) {
      std::fprintf(stderr, "%s\n", stats.error().message.c_str());
      return 1;
    }
    const double c = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    if (auto r = (*seq)->advance(l); !r.ok()) {
      std::fprintf(stderr, "%s\n", r.error().message.c_str());
      return 1;
    }
    const double a = seconds_since(t0);
    collect_s += c;
    advance_s += a;
    std::printf("layer %lld: collect %.2f s, advance %.2f s\n", static_cast<long long>(l), c, a);
    std::fflush(stdout);
  }
  t0 = std::chrono::steady_clock::now();
  auto head = (*seq)->collect_head(req);
  if (!head.ok()) {
    std::fprintf(stderr, "%s\n", head.error().message.c_str());
    return 1;
  }
  const double h = seconds_since(t0);
  std::printf("total: collect %.1f s + advance %.1f s + head %.1f s = %.1f s (threads %d)\n", collect_s, advance_s, h,
              collect_s + advance_s + h, threads);
  return 0;
}
