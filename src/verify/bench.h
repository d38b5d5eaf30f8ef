// Speed measurement of a runtime: batched prefill and one-token-at-a-time greedy decode.
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "runtime/runtime.h"
#include "verify/machine.h"

namespace llmc {

struct BenchOptions {
  int64_t prompt_tokens = 128;               // N: tokens of one batched prefill forward
  int64_t gen_tokens = 64;                   // M: tokens decoded one at a time after the prefill
  int repeat = 3;                            // R: timed repeats (after one untimed warm-up token)
  int threads = 0;                           // the runtime's thread count, for the report (0 = all cores)
  uint64_t membw_bytes = uint64_t(1) << 30;  // bandwidth probe buffer; 0 skips the probe
  int membw_runs = 5;
};

// Median and spread of repeated measurements.
struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
  std::vector<double> samples;
};
Spread spread_of(std::vector<double> samples);

struct BenchResult {
  int64_t prompt_tokens = 0;
  int64_t gen_tokens = 0;
  int repeat = 0;
  int threads = 0;
  Spread prefill_tps;  // prompt_tokens / seconds of the prefill forward
  Spread decode_tps;   // gen_tokens / seconds of the decode loop (argmax included)
  uint64_t weight_bytes_per_token = 0;
  MemBandwidth membw;
  double decode_gb_per_s = 0;            // median decode tok/s * weight bytes per token / 1e9
  double decode_bandwidth_fraction = 0;  // decode_gb_per_s / membw.gb_per_s (0 when not measured)
  uint64_t peak_rss_bytes = 0;           // after the runs, before the bandwidth probe's buffer
};

// Prompt ids are a fixed pseudo-random sequence over the vocabulary (content does not change the
// work of a dense forward pass). Each repeat prefills from position 0, so the KV cache is reused
// in place; decode starts at position prompt_tokens. Errors when N + M exceeds max_context().
// Reports progress as task "bench", unit "runs".
Result<BenchResult> run_bench(Runtime& runtime, const BenchOptions& options);

}  // namespace llmc
