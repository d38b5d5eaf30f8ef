// Perplexity and KL-divergence evaluation over fixed-size chunks, following llama.cpp's llama-perplexity.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "runtime/runtime.h"

namespace llmc {

class Tokenizer;

// How the text is cut and fed (llama-perplexity conventions, docs/verify.md):
// the whole text is tokenized once; chunk c holds tokens [c*ctx, (c+1)*ctx); its first token is
// replaced by BOS when the tokenizer adds one; each chunk starts from an empty KV cache
// (position 0); logits at positions first..ctx-2 (first = ctx/2) score tokens first+1..ctx-1.
struct EvalOptions {
  int64_t ctx = 512;
  int64_t max_chunks = 0;     // 0 = all whole chunks of the text
  int64_t score_batch = 256;  // tokens per forward call in the scored half (bounds logits memory)
  bool add_bos = false;       // replace each chunk's first token by bos_id
  int32_t bos_id = -1;
};

// Mean and standard error of the mean over per-token values, as llama.cpp computes them:
// var = E[x^2] - E[x]^2, stderr = sqrt(var / (n - 1)) (0 when var <= 0 or n < 2).
struct MeanStderr {
  double mean = 0;
  double se = 0;  // standard error of the mean
};
MeanStderr mean_and_stderr(double sum, double sum_sq, int64_t count);

// Linear interpolation at fraction * (n - 1) of sorted values (llama.cpp's percentile()).
double percentile_sorted(const std::vector<float>& sorted, double fraction);
// Middle value, or the mean of the two middle values (llama.cpp's median).
double median_sorted(const std::vector<float>& sorted);

// One scored position: logits q (evaluated model) and r (reference) over `vocab` entries, and
// the observed next token. All in double from log-softmax.
struct TokenCompare {
  double nll_q = 0;       // -log p_q(target)
  double nll_ref = 0;     // -log p_ref(target)
  double kld = 0;         // sum_i p_ref(i) * (log p_ref(i) - log p_q(i))
  double p_q = 0;         // p_q(target)
  double p_ref = 0;       // p_ref(target)
  bool same_top = false;  // first argmax of q == first argmax of r
};
double token_nll(const float* logits, int64_t vocab, int32_t target);
TokenCompare compare_token(const float* q, const float* r, int64_t vocab, int32_t target);

struct PerplexityResult {
  double mean_nll = 0;
  double nll_stderr = 0;
  double ppl = 0;                 // exp(mean_nll)
  double ppl_stderr = 0;          // ppl * nll_stderr (first-order propagation, as llama.cpp)
  std::vector<double> chunk_ppl;  // running PPL after each chunk (llama.cpp's "[i]ppl," line)
};

// Statistics of the evaluated model Q against a reference (base) model, per scored token
// (definitions of llama.cpp's --kl-divergence mode, computed here in double from both logits).
struct KldResult {
  PerplexityResult ref;            // PPL of the reference on the same tokens
  double ln_ppl_ratio = 0;         // mean ln(PPL(Q)/PPL(ref))
  double ln_ppl_ratio_stderr = 0;  // with the covariance of the two NLL series
  double ppl_ratio = 0;            // PPL(Q)/PPL(ref)
  double ppl_ratio_stderr = 0;
  double nll_correlation = 0;  // Cor(ln PPL(Q), ln PPL(ref))
  MeanStderr kld;              // KL(p_ref || p_q) in nats
  double kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_p999 = 0, kld_max = 0, kld_min = 0;
  MeanStderr same_top;  // fraction of tokens where both argmaxes agree
  MeanStderr delta_p;   // Δp = p_q(next) - p_ref(next), the observed next token
  double delta_p_rms = 0, delta_p_rms_stderr = 0;
  double delta_p_median = 0, delta_p_p01 = 0, delta_p_p99 = 0, delta_p_min = 0, delta_p_max = 0;
};

struct EvalResult {
  int64_t ctx = 0;
  int64_t text_tokens = 0;  // tokens of the whole text (incl. a leading BOS when added)
  int64_t chunks = 0;
  int64_t scored_tokens = 0;  // chunks * (ctx - 1 - ctx/2)
  bool add_bos = false;
  PerplexityResult ppl;  // of the evaluated model
  std::optional<KldResult> kld;
  double seconds = 0;            // wall time of the evaluation loop
  double tokens_per_second = 0;  // evaluated (fed) tokens per second, all models together
};

// Scores `tokens` with `model` (and `ref` when non-null: same chunks, same tokens). Only
// score_batch rows of logits per model are held at a time; per-token KLD/Δp are kept (one
// float each) for the percentiles. Reports progress as task "eval" in text tokens (whole chunks).
Result<EvalResult> evaluate_tokens(Runtime& model, Runtime* ref, std::span<const int32_t> tokens,
                                   const EvalOptions& options);

// Tokenizes `text` once with the model's BOS policy (tokenizer data add_bos/bos_id override
// options.add_bos/bos_id), then evaluate_tokens().
Result<EvalResult> evaluate_text(Runtime& model, Runtime* ref, const Tokenizer& tokenizer, std::string_view text,
                                 EvalOptions options);

}  // namespace llmc
