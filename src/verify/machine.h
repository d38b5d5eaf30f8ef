// What the host machine is and can do: CPU model and features, memory read bandwidth, peak RSS.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llmc {

struct MachineInfo {
  std::string cpu_model;              // /proc/cpuinfo "model name" (or "unknown")
  int logical_cores = 0;              // std::thread::hardware_concurrency()
  int omp_threads = 0;                // omp_get_max_threads() (what "all cores" means to the runtime)
  std::vector<std::string> features;  // of avx2, avx512f, avx512vnni, avxvnni, f16c, fma, neon...
  std::string simd_target;            // best Highway target the CPU supports, e.g. "AVX2"
  std::string os;                     // uname sysname + release
};

MachineInfo detect_machine();

// Peak resident set size of this process in bytes (VmHWM, else getrusage's ru_maxrss).
uint64_t peak_rss_bytes();

struct MemBandwidth {
  double gb_per_s = 0;  // best of `runs`, 1 GB = 1e9 bytes
  uint64_t buffer_bytes = 0;
  int runs = 0;
  int threads = 0;
};

// Stream-reads a buffer of `buffer_bytes` (should be >> last-level cache) with `threads` OpenMP
// threads (0 = all) using the widest SIMD loads the CPU has; returns the best of `runs` passes.
// The buffer is written once first so its pages are resident.
MemBandwidth measure_memory_bandwidth(uint64_t buffer_bytes, int runs, int threads);

}  // namespace llmc
