// Host description for reports: CPU model and SIMD features, OS, peak RSS.
#include <omp.h>
#include <sys/resource.h>
#include <sys/utsname.h>

#include <hwy/targets.h>
#include <fstream>
#include <string>
#include <thread>

#include "verify/machine.h"

namespace llmc {
namespace {

// First value of "key : value" lines in a /proc file, or "".
std::string proc_field(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const size_t begin = line.find_first_not_of(" \t", colon + 1);
    return begin == std::string::npos ? std::string() : line.substr(begin);
  }
  return {};
}

std::vector<std::string> cpu_features() {
  std::vector<std::string> out;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // The x86 features the kernels may dispatch on, as GCC/clang name them.
  struct Row {
    const char* name;
    bool present;
  };
  const Row rows[] = {
      {"sse4.2", __builtin_cpu_supports("sse4.2") != 0},
      {"avx", __builtin_cpu_supports("avx") != 0},
      {"avx2", __builtin_cpu_supports("avx2") != 0},
      {"fma", __builtin_cpu_supports("fma") != 0},
      {"f16c", proc_field("/proc/cpuinfo", "flags").find(" f16c") != std::string::npos},
      {"avx512f", __builtin_cpu_supports("avx512f") != 0},
      {"avx512bw", __builtin_cpu_supports("avx512bw") != 0},
      {"avx512vnni", __builtin_cpu_supports("avx512vnni") != 0},
      {"avx512bf16", proc_field("/proc/cpuinfo", "flags").find(" avx512_bf16") != std::string::npos},
      {"avxvnni", proc_field("/proc/cpuinfo", "flags").find(" avx_vnni") != std::string::npos},
  };
  for (const Row& r : rows) {
    if (r.present) out.emplace_back(r.name);
  }
#elif defined(__aarch64__)
  out.emplace_back("neon");
  const std::string flags = proc_field("/proc/cpuinfo", "Features");
  if (flags.find(" asimddp") != std::string::npos) out.emplace_back("dotprod");
  if (flags.find(" fphp") != std::string::npos) out.emplace_back("fp16");
  if (flags.find(" sve") != std::string::npos) out.emplace_back("sve");
#endif
  return out;
}

}  // namespace

MachineInfo detect_machine() {
  MachineInfo m;
  m.cpu_model = proc_field("/proc/cpuinfo", "model name");
  if (m.cpu_model.empty()) m.cpu_model = "unknown";
  m.logical_cores = static_cast<int>(std::thread::hardware_concurrency());
  m.omp_threads = omp_get_max_threads();
  m.features = cpu_features();
  // SupportedTargets() is a bit set; the lowest set bit is the best target.
  const int64_t targets = hwy::SupportedTargets();
  m.simd_target = targets != 0 ? hwy::TargetName(targets & -targets) : "none";
  utsname u{};
  if (uname(&u) == 0) m.os = std::string(u.sysname) + " " + u.release;
  return m;
}

uint64_t peak_rss_bytes() {
  const std::string hwm = proc_field("/proc/self/status", "VmHWM");  // "123456 kB"
  if (!hwm.empty()) {
    try {
      return static_cast<uint64_t>(std::stoull(hwm)) * 1024;
    } catch (...) {
    }
  }
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
  return 0;
}

}  // namespace llmc
