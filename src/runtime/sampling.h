// Choosing the next token from logits: greedy, temperature, top-k, top-p with a seeded RNG, and
// beam search over several runtimes.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/error.h"
#include "runtime/runtime.h"

namespace llmc {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy argmax
  int64_t top_k = 0;         // 0 = no limit
  float top_p = 1.0f;        // 1 = no nucleus cut
  uint64_t seed = 0;
};

Result<void> validate_sampling(const SamplingOptions& options);

// Index of the largest logit (the lowest index among equal maxima).
int32_t argmax(std::span<const float> logits);

// log softmax in double: out[i] = logits[i] - logsumexp(logits).
void log_softmax(std::span<const float> logits, std::vector<double>& out);

// Deterministic xorshift64* generator (the same stream on every platform for a seed).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint32_t next_u32();
  float next_f32();  // uniform in [0, 1)

 private:
  uint64_t state_;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}
  // Picks a token: argmax at temperature 0, else samples softmax(logits / T) restricted to the
  // top-k tokens and then to the smallest prefix (by probability) whose mass reaches top-p.
  int32_t sample(std::span<const float> logits);

 private:
  SamplingOptions options_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

struct BeamOptions {
  int beams = 1;
  int64_t max_positions = 0;         // stop when a hypothesis reaches this many positions (prompt included)
  std::vector<int32_t> stop_tokens;  // a hypothesis ends when it picks one (not included)
};

struct BeamResult {
  std::vector<int32_t> tokens;  // generated tokens (prompt excluded)
  double logprob = 0.0;         // sum of natural-log probabilities of the generated tokens
};

// Beam search from `prompt` (non-empty) with one runtime per beam (runtimes.size() == beams, each
// of the same model): keeps the `beams` best partial hypotheses by summed log-probability; a
// hypothesis that picks a stop token is finished. Returns the best finished or surviving
// hypothesis by mean log-probability per generated token (length penalty 1). Ties break by
// lower token id, so the result is deterministic; beams = 1 equals greedy decoding.
Result<BeamResult> beam_search(std::span<Runtime* const> runtimes, std::span<const int32_t> prompt,
                               const BeamOptions& options);

}  // namespace llmc
