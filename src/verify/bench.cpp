// Speed measurement of a runtime: batched prefill and one-token-at-a-time greedy decode.
#include "verify/bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>

#include "core/log.h"

namespace llmc {

Spread spread_of(std::vector<double> samples) {
  Spread s;
  if (samples.empty()) return s;
  s.samples = samples;
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  s.min = samples.front();
  s.max = samples.back();
  s.median = n % 2 == 1 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
  return s;
}

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace

Result<BenchResult> run_bench(Runtime& runtime, const BenchOptions& options) {
  const int64_t n = options.prompt_tokens;
  const int64_t m = options.gen_tokens;
  if (n < 1) return make_error(ErrorCode::kInvalidArgument, "--prompt-tokens must be at least 1, got ", n);
  if (m < 1) return make_error(ErrorCode::kInvalidArgument, "--gen-tokens must be at least 1, got ", m);
  if (options.repeat < 1) return make_error(ErrorCode::kInvalidArgument, "--repeat must be at least 1");
  if (n + m > runtime.max_context())
    return make_error(ErrorCode::kInvalidArgument, "--prompt-tokens + --gen-tokens = ", n + m,
                      " exceeds the runtime's context of ", runtime.max_context(), " tokens");
  const int64_t vocab = runtime.vocab_size();
  std::vector<int32_t> prompt(static_cast<size_t>(n));
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (auto& id : prompt) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(vocab));
  }
  std::vector<float> logits(static_cast<size_t>(vocab));

  // Warm-up: one token touches every weight once (pages in a mapped file).
  LLMC_TRY(runtime.forward(std::span<const int32_t>(prompt.data(), 1), 0, logits.data(), false));

  std::vector<double> prefill, decode;
  report_progress("bench", 0, options.repeat, "runs");
  for (int r = 0; r < options.repeat; ++r) {
    const double t0 = now_seconds();
    LLMC_TRY(runtime.forward(prompt, 0, logits.data(), false));
    const double t1 = now_seconds();
    int32_t next = argmax(logits);
    for (int64_t i = 0; i < m; ++i) {
      LLMC_TRY(runtime.forward(std::span<const int32_t>(&next, 1), n + i, logits.data(), false));
      next = argmax(logits);
    }
    const double t2 = now_seconds();
    prefill.push_back(t1 > t0 ? static_cast<double>(n) / (t1 - t0) : 0);
    decode.push_back(t2 > t1 ? static_cast<double>(m) / (t2 - t1) : 0);
    report_progress("bench", r + 1, options.repeat, "runs");
  }

  BenchResult b;
  b.prompt_tokens = n;
  b.gen_tokens = m;
  b.repeat = options.repeat;
  b.threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  b.prefill_tps = spread_of(std::move(prefill));
  b.decode_tps = spread_of(std::move(decode));
  b.weight_bytes_per_token = runtime.weight_bytes_per_token();
  b.decode_gb_per_s = b.decode_tps.median * static_cast<double>(b.weight_bytes_per_token) / 1e9;
  b.peak_rss_bytes = peak_rss_bytes();
  if (options.membw_bytes > 0) {
    b.membw = measure_memory_bandwidth(options.membw_bytes, options.membw_runs, options.threads);
    if (b.membw.gb_per_s > 0) b.decode_bandwidth_fraction = b.decode_gb_per_s / b.membw.gb_per_s;
  }
  return b;
}

}  // namespace llmc
