// Memory read bandwidth: every thread streams its slice of a large buffer with SIMD loads.
#include "kernels/cpu/prefetch.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "verify/membw.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of n uint64 values at p (p aligned to the vector size, n a multiple of 4 vectors);
// four independent accumulators keep several loads in flight. With `prefetch`, every load's line
// kPrefetchBytes ahead is also prefetched into L2, as the decode kernels do (kernels/cpu/prefetch.h):
// on the Zen 4 VM that read ~5 % more than the hardware prefetchers alone in slow minutes, less in
// fast ones, so the probe takes the best of both.
constexpr size_t kPrefetchBytes = 4096;
uint64_t sum_u64(const uint64_t* HWY_RESTRICT p, size_t n, bool prefetch) {
  const hn::ScalableTag<uint64_t> d;
  const size_t lanes = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (size_t i = 0; i + 4 * lanes <= n; i += 4 * lanes) {
    if (prefetch)
      for (size_t j = 0; j < 4; ++j)
        kernels::prefetch_l2(reinterpret_cast<const char*>(p + i + j * lanes) + kPrefetchBytes);
    a0 = hn::Add(a0, hn::Load(d, p + i));
    a1 = hn::Add(a1, hn::Load(d, p + i + lanes));
    a2 = hn::Add(a2, hn::Load(d, p + i + 2 * lanes));
    a3 = hn::Add(a3, hn::Load(d, p + i + 3 * lanes));
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include <hwy/aligned_allocator.h>
#include <algorithm>
#include <atomic>
#include <chrono>

#include "formats/file_io.h"
#include "verify/machine.h"

namespace llmc {
HWY_EXPORT(sum_u64);

MemBandwidth measure_memory_bandwidth(uint64_t buffer_bytes, int runs, int threads) {
  MemBandwidth result;
  const int nthreads = threads > 0 ? threads : omp_get_max_threads();
  // Each thread's slice is a multiple of 1 KiB (4 vectors of up to 2048 bits; also keeps
  // slices vector-aligned) so the SIMD loop covers it exactly.
  constexpr size_t kBlock = 128;  // uint64 values per KiB
  const size_t per_thread =
      std::max<size_t>(kBlock, (buffer_bytes / 8 / static_cast<size_t>(nthreads)) / kBlock * kBlock);
  const size_t n = per_thread * static_cast<size_t>(nthreads);
  auto buffer = hwy::AllocateAligned<uint64_t>(n);
  if (!buffer) return result;
  uint64_t* data = buffer.get();
  // First touch from the thread that will read the slice (page placement on NUMA machines).
#pragma omp parallel num_threads(nthreads)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    for (size_t i = t * per_thread; i < (t + 1) * per_thread; ++i) data[i] = i;
  }
  // In huge pages like the weights the runtime streams (RuntimeOptions::huge_pages): the probe
  // measures DRAM, not the page walks of 4 KiB pages (two-level in a virtual machine).
  collapse_huge_pages(data, n * sizeof(uint64_t));
  std::atomic<uint64_t> sink{0};
  double best = 0;
  for (int r = 0; r < std::max(1, runs); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nthreads)
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num());
      const uint64_t s = HWY_DYNAMIC_DISPATCH(sum_u64)(data + t * per_thread, per_thread, r % 2 == 1);
      sink.fetch_add(s, std::memory_order_relaxed);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (seconds > 0) best = std::max(best, static_cast<double>(n * 8) / seconds / 1e9);
  }
  // The sums are checked against the closed form so the loads cannot be optimised away.
  const uint64_t expected = static_cast<uint64_t>(std::max(1, runs)) * (static_cast<uint64_t>(n) * (n - 1) / 2);
  if (sink.load() != expected) return result;
  result.gb_per_s = best;
  result.buffer_bytes = n * 8;
  result.runs = std::max(1, runs);
  result.threads = nthreads;
  return result;
}

}  // namespace llmc
#endif  // HWY_ONCE
