// Internal: software prefetch for the decode kernels' weight streams.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define LLMC_PREFETCH_ATTR __attribute__((always_inline, target("sse2")))
#else
#define LLMC_PREFETCH_ATTR __attribute__((always_inline))
#endif

namespace llmc::kernels {

// Prefetch the cache line at p into L2, not L1 (x86: prefetcht1). A decode call streams several
// rows of weights at once; prefetches into L1 (prefetcht0) hold one of the core's few L1 miss
// buffers until the line arrives, which capped one core's q4 matvec from DRAM at ~13 GB/s on
// Zen 4, while L2 prefetches leave those buffers to the loads (docs/runtime.md). The loads then
// hit L2. A prefetch never faults. Always inlined, with the SIMD files' target attributes (a call
// that is not inlined has no effect GCC must keep and is dropped).
inline LLMC_PREFETCH_ATTR void prefetch_l2(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

}  // namespace llmc::kernels

#undef LLMC_PREFETCH_ATTR
