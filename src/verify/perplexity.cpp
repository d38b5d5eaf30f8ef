// Perplexity and KL-divergence evaluation over fixed-size chunks, following llama.cpp's llama-perplexity.
#include "verify/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/log.h"
#include "model/tokenizer.h"

namespace llmc {

MeanStderr mean_and_stderr(double sum, double sum_sq, int64_t count) {
  if (count < 1) return {};
  const double n = static_cast<double>(count);
  const double mean = sum / n;
  const double var = sum_sq / n - mean * mean;
  return {mean, var > 0 && count > 1 ? std::sqrt(var / (n - 1)) : 0.0};
}

double percentile_sorted(const std::vector<float>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  if (fraction <= 0) return sorted.front();
  if (fraction >= 1) return sorted.back();
  const double p = fraction * static_cast<double>(sorted.size() - 1);
  const size_t ip = static_cast<size_t>(p);
  const double frac = p - static_cast<double>(ip);
  const size_t next = std::min(ip + 1, sorted.size() - 1);
  return (1 - frac) * sorted[ip] + frac * sorted[next];
}

double median_sorted(const std::vector<float>& sorted) {
  const size_t n = sorted.size();
  if (n == 0) return 0;
  if (n % 2 == 1) return sorted[n / 2];
  return 0.5 * (static_cast<double>(sorted[n / 2 - 1]) + static_cast<double>(sorted[n / 2]));
}

namespace {

// max and log-sum-exp of a logits row, in double; `argmax` is the first index of the maximum.
struct RowStats {
  double max = 0;
  double lse = 0;  // log(sum_i exp(l_i)) = max + log(sum_i exp(l_i - max))
  int64_t argmax = 0;
};

RowStats row_stats(const float* logits, int64_t vocab) {
  RowStats s;
  s.max = logits[0];
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > s.max) {
      s.max = logits[i];
      s.argmax = i;
    }
  }
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - s.max);
  s.lse = s.max + std::log(sum);
  return s;
}

}  // namespace

double token_nll(const float* logits, int64_t vocab, int32_t target) {
  const RowStats s = row_stats(logits, vocab);
  return s.lse - static_cast<double>(logits[target]);
}

TokenCompare compare_token(const float* q, const float* r, int64_t vocab, int32_t target) {
  const RowStats sq = row_stats(q, vocab);
  const RowStats sr = row_stats(r, vocab);
  TokenCompare c;
  c.nll_q = sq.lse - static_cast<double>(q[target]);
  c.nll_ref = sr.lse - static_cast<double>(r[target]);
  c.p_q = std::exp(-c.nll_q);
  c.p_ref = std::exp(-c.nll_ref);
  c.same_top = sq.argmax == sr.argmax;
  double kld = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double log_pr = static_cast<double>(r[i]) - sr.lse;
    const double log_pq = static_cast<double>(q[i]) - sq.lse;
    const double pr = std::exp(log_pr);
    if (pr > 0) kld += pr * (log_pr - log_pq);
  }
  c.kld = kld;
  return c;
}

namespace {

// Running sums over scored tokens (the fields of llama.cpp's kl_divergence_result).
struct Sums {
  double nll = 0, nll2 = 0;
  double nll_ref = 0, nll_ref2 = 0, nll_nll_ref = 0;
  double kld = 0, kld2 = 0;
  double dp = 0, dp2 = 0, dp4 = 0;
  int64_t same_top = 0;
  int64_t count = 0;
};

PerplexityResult ppl_from(double sum, double sum_sq, int64_t count) {
  const MeanStderr m = mean_and_stderr(sum, sum_sq, count);
  PerplexityResult r;
  r.mean_nll = m.mean;
  r.nll_stderr = m.se;
  r.ppl = std::exp(m.mean);
  r.ppl_stderr = r.ppl * m.se;
  return r;
}

// Covariance of the two means, as llama.cpp's covariance() (0 below 10 samples).
double mean_covariance(double sum_a, double sum_b, double sum_ab, int64_t count) {
  if (count < 10) return 0;
  const double n = static_cast<double>(count);
  return (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1);
}

KldResult finish_kld(const Sums& s, PerplexityResult q, std::vector<float>& kld_values, std::vector<float>& dp_values) {
  KldResult k;
  k.ref = ppl_from(s.nll_ref, s.nll_ref2, s.count);
  const double cov = mean_covariance(s.nll, s.nll_ref, s.nll_nll_ref, s.count);
  const double denom = q.nll_stderr * k.ref.nll_stderr;
  k.nll_correlation = denom > 0 ? cov / denom : 0;
  k.ln_ppl_ratio = q.mean_nll - k.ref.mean_nll;
  const double var_ratio = q.nll_stderr * q.nll_stderr + k.ref.nll_stderr * k.ref.nll_stderr - 2 * cov;
  k.ln_ppl_ratio_stderr = var_ratio > 0 ? std::sqrt(var_ratio) : 0;
  k.ppl_ratio = std::exp(k.ln_ppl_ratio);
  k.ppl_ratio_stderr = k.ppl_ratio * k.ln_ppl_ratio_stderr;
  k.kld = mean_and_stderr(s.kld, s.kld2, s.count);
  const double n = static_cast<double>(s.count);
  k.same_top.mean = s.count > 0 ? static_cast<double>(s.same_top) / n : 0;
  k.same_top.se = s.count > 1 ? std::sqrt(k.same_top.mean * (1 - k.same_top.mean) / (n - 1)) : 0;
  k.delta_p = mean_and_stderr(s.dp, s.dp2, s.count);
  const MeanStderr mse = mean_and_stderr(s.dp2, s.dp4, s.count);
  k.delta_p_rms = std::sqrt(mse.mean);
  k.delta_p_rms_stderr = k.delta_p_rms > 0 ? 0.5 / k.delta_p_rms * mse.se : 0;
  std::sort(kld_values.begin(), kld_values.end());
  std::sort(dp_values.begin(), dp_values.end());
  if (!kld_values.empty()) {
    k.kld_median = median_sorted(kld_values);
    k.kld_p90 = percentile_sorted(kld_values, 0.90);
    k.kld_p99 = percentile_sorted(kld_values, 0.99);
    k.kld_p999 = percentile_sorted(kld_values, 0.999);
    k.kld_min = kld_values.front();
    k.kld_max = kld_values.back();
    k.delta_p_median = median_sorted(dp_values);
    k.delta_p_p01 = percentile_sorted(dp_values, 0.01);
    k.delta_p_p99 = percentile_sorted(dp_values, 0.99);
    k.delta_p_min = dp_values.front();
    k.delta_p_max = dp_values.back();
  }
  return k;
}

// Names the chunk in a runtime error.
Result<void> with_ctx(Result<void> r, int64_t chunk) {
  if (r.ok()) return r;
  return with_context(r.error(), str_cat("evaluating chunk ", chunk + 1));
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Result<EvalResult> evaluate_tokens(Runtime& model, Runtime* ref, std::span<const int32_t> tokens,
                                   const EvalOptions& options) {
  const int64_t ctx = options.ctx;
  const int64_t vocab = model.vocab_size();
  if (ctx < 3) return make_error(ErrorCode::kInvalidArgument, "--ctx must be at least 3, got ", ctx);
  if (options.score_batch < 1) return make_error(ErrorCode::kInvalidArgument, "score batch must be positive");
  if (options.max_chunks < 0) return make_error(ErrorCode::kInvalidArgument, "--max-chunks must not be negative");
  if (ctx > model.max_context())
    return make_error(ErrorCode::kInvalidArgument, "--ctx ", ctx, " exceeds the runtime's context of ",
                      model.max_context(), " tokens");
  if (ref != nullptr) {
    if (ref->vocab_size() != vocab)
      return make_error(ErrorCode::kInvalidArgument, "the reference model's vocabulary (", ref->vocab_size(),
                        " tokens) differs from the model's (", vocab, ")");
    if (ctx > ref->max_context())
      return make_error(ErrorCode::kInvalidArgument, "--ctx ", ctx, " exceeds the reference runtime's context of ",
                        ref->max_context(), " tokens");
  }
  if (options.add_bos && (options.bos_id < 0 || options.bos_id >= vocab))
    return make_error(ErrorCode::kInvalidArgument, "BOS id ", options.bos_id, " is outside the vocabulary of ", vocab);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return make_error(ErrorCode::kInvalidArgument, "token id ", tokens[i], " at index ", i,
                        " is outside the vocabulary of ", vocab);
  }
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  int64_t n_chunks = n_tokens / ctx;
  if (n_chunks < 1)
    return make_error(ErrorCode::kInvalidArgument, "the text has ", n_tokens, " tokens, fewer than one chunk of --ctx ",
                      ctx);
  if (options.max_chunks > 0) n_chunks = std::min(n_chunks, options.max_chunks);

  const int64_t first = ctx / 2;
  const int64_t scored_per_chunk = ctx - 1 - first;
  const int64_t batch = std::min(options.score_batch, scored_per_chunk);
  // logits: [batch, vocab] per model, reused for every batch of every chunk.
  std::vector<float> logits_q(static_cast<size_t>(batch * vocab));
  std::vector<float> logits_r(ref != nullptr ? logits_q.size() : 0);
  std::vector<TokenCompare> scores(static_cast<size_t>(batch));
  std::vector<float> kld_values, dp_values;
  if (ref != nullptr) {
    kld_values.reserve(static_cast<size_t>(n_chunks * scored_per_chunk));
    dp_values.reserve(kld_values.capacity());
  }

  EvalResult result;
  result.ctx = ctx;
  result.text_tokens = n_tokens;
  result.chunks = n_chunks;
  result.scored_tokens = n_chunks * scored_per_chunk;
  result.add_bos = options.add_bos;
  Sums sums;
  std::vector<int32_t> chunk(static_cast<size_t>(ctx));
  const double t0 = now_seconds();
  report_progress("eval", 0, n_chunks * ctx, "tokens");
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::copy_n(tokens.begin() + c * ctx, ctx, chunk.begin());
    if (options.add_bos) chunk[0] = options.bos_id;
    // Context half: fed from position 0 (a fresh sequence), no logits needed. The last token of
    // the chunk is never fed: its logits would predict a token outside the chunk.
    const std::span<const int32_t> context(chunk.data(), static_cast<size_t>(first));
    LLMC_TRY(with_ctx(model.forward(context, 0, nullptr, false), c));
    if (ref != nullptr) LLMC_TRY(with_ctx(ref->forward(context, 0, nullptr, false), c));
    for (int64_t b0 = first; b0 < ctx - 1; b0 += batch) {
      const int64_t nb = std::min(batch, ctx - 1 - b0);
      const std::span<const int32_t> part(chunk.data() + b0, static_cast<size_t>(nb));
      LLMC_TRY(with_ctx(model.forward(part, b0, logits_q.data(), true), c));
      if (ref != nullptr) LLMC_TRY(with_ctx(ref->forward(part, b0, logits_r.data(), true), c));
      // Per-row scores in parallel (when there is enough work to pay for waking threads), sums in
      // row order so results do not depend on the thread count.
      const bool parallel = nb * vocab * (ref != nullptr ? 2 : 1) >= (int64_t{1} << 18);
#pragma omp parallel for schedule(dynamic, 4) if (parallel)
      for (int64_t i = 0; i < nb; ++i) {
        const float* q = logits_q.data() + i * vocab;
        const int32_t target = chunk[static_cast<size_t>(b0 + i + 1)];
        if (ref != nullptr) {
          scores[static_cast<size_t>(i)] = compare_token(q, logits_r.data() + i * vocab, vocab, target);
        } else {
          scores[static_cast<size_t>(i)].nll_q = token_nll(q, vocab, target);
        }
      }
      for (int64_t i = 0; i < nb; ++i) {
        const TokenCompare& s = scores[static_cast<size_t>(i)];
        sums.nll += s.nll_q;
        sums.nll2 += s.nll_q * s.nll_q;
        ++sums.count;
        if (ref == nullptr) continue;
        sums.nll_ref += s.nll_ref;
        sums.nll_ref2 += s.nll_ref * s.nll_ref;
        sums.nll_nll_ref += s.nll_q * s.nll_ref;
        sums.kld += s.kld;
        sums.kld2 += s.kld * s.kld;
        const double dp = s.p_q - s.p_ref;
        sums.dp += dp;
        sums.dp2 += dp * dp;
        sums.dp4 += dp * dp * dp * dp;
        sums.same_top += s.same_top ? 1 : 0;
        kld_values.push_back(static_cast<float>(s.kld));
        dp_values.push_back(static_cast<float>(dp));
      }
    }
    result.ppl.chunk_ppl.push_back(std::exp(sums.nll / static_cast<double>(sums.count)));
    report_progress("eval", (c + 1) * ctx, n_chunks * ctx, "tokens");
  }
  result.seconds = now_seconds() - t0;
  const double fed = static_cast<double>(n_chunks * (ctx - 1)) * (ref != nullptr ? 2 : 1);
  result.tokens_per_second = result.seconds > 0 ? fed / result.seconds : 0;
  std::vector<double> chunk_ppl = std::move(result.ppl.chunk_ppl);
  result.ppl = ppl_from(sums.nll, sums.nll2, sums.count);
  result.ppl.chunk_ppl = std::move(chunk_ppl);
  if (ref != nullptr) result.kld = finish_kld(sums, result.ppl, kld_values, dp_values);
  return result;
}

Result<EvalResult> evaluate_text(Runtime& model, Runtime* ref, const Tokenizer& tokenizer, std::string_view text,
                                 EvalOptions options) {
  options.add_bos = tokenizer.data().add_bos && tokenizer.bos() >= 0;
  options.bos_id = tokenizer.bos();
  const std::vector<int32_t> tokens = tokenizer.encode(text, options.add_bos);
  return evaluate_tokens(model, ref, tokens, options);
}

}  // namespace llmc
