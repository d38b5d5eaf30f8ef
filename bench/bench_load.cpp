// Benchmark: time load_model() of each file given (best of N, page cache warm), and for .llmc files
// also without section checksum verification. Prints one line per file; asserts nothing.
// Usage: bench_load [--repeat N] FILE...
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "formats/file_io.h"
#include "formats/llmc.h"
#include "formats/model_io.h"

using namespace llmc;

namespace {

template <class F>
double best_seconds(int repeat, F&& fn) {
  double best = 1e30;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!fn()) return -1;
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 3;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
      repeat = std::atoi(argv[++i]);
    else
      files.push_back(argv[i]);
  }
  std::printf("%-48s %10s %12s %14s\n", "file", "MB", "load ms", "no-verify ms");
  for (const auto& f : files) {
    const double mb = static_cast<double>(path_size(f)) / 1e6;
    const double t = best_seconds(repeat, [&] {
      auto m = load_model(f);
      if (!m.ok()) std::fprintf(stderr, "%s\n", m.error().message.c_str());
      return m.ok();
    });
    double t_nv = -1;
    auto fmt = detect_format(f);
    if (fmt.ok() && *fmt == FileFormat::kLlmc) {
      LlmcReadOptions o;
      o.verify_checksums = false;
      t_nv = best_seconds(repeat, [&] { return read_llmc(f, o).ok(); });
    }
    std::printf("%-48s %10.1f %12.1f %14.1f\n", f.c_str(), mb, t * 1e3, t_nv * 1e3);
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("peak RSS %.1f MiB\n", static_cast<double>(ru.ru_maxrss) / 1024.0);
  return 0;
}
