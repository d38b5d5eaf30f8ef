// Perplexity chunking/scoring and KLD statistics against hand-computed values, using a fake bigram runtime.
#include <catch2/catch.hpp>
#include <cmath>

#include "verify/fake_runtime.h"
#include "verify/perplexity.h"

using namespace llmc;
using llmc::test::BigramRuntime;

namespace {

// p(next | current) for a 4-token vocabulary; rows sum to 1.
const std::vector<std::vector<double>> kQ = {
    {0.1, 0.6, 0.2, 0.1},
    {0.25, 0.25, 0.25, 0.25},
    {0.7, 0.1, 0.1, 0.1},
    {0.4, 0.1, 0.1, 0.4},
};
// A second model for KLD: different rows 0 and 3, identical rows 1 and 2.
const std::vector<std::vector<double>> kR = {
    {0.5, 0.25, 0.125, 0.125},
    {0.25, 0.25, 0.25, 0.25},
    {0.7, 0.1, 0.1, 0.1},
    {0.1, 0.2, 0.3, 0.4},
};

// 15 tokens, ctx 6 -> 2 whole chunks (3 tokens left over), first = 3; scored positions 3 and 4 of
// each chunk predict positions 4 and 5:
//   chunk 0 = [0 1 2 | 3 0 1]: pairs (3->0), (0->1)
//   chunk 1 = [2 2 1 | 0 3 3]: pairs (0->3), (3->3)
const std::vector<int32_t> kTokens = {0, 1, 2, 3, 0, 1, 2, 2, 1, 0, 3, 3, 1, 1, 1};

double kl(const std::vector<double>& p, const std::vector<double>& q) {
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += p[i] * std::log(p[i] / q[i]);
  return s;
}

}  // namespace

TEST_CASE("mean/stderr, median and percentiles follow llama.cpp's definitions", "[verify]") {
  // values 1, 2, 3, 4: mean 2.5, E[x^2] = 7.5, var = 7.5 - 6.25 = 1.25, se = sqrt(1.25 / 3)
  const MeanStderr m = mean_and_stderr(10, 30, 4);
  CHECK(m.mean == Approx(2.5));
  CHECK(m.se == Approx(std::sqrt(1.25 / 3)));
  CHECK(mean_and_stderr(5, 25, 1).se == 0);
  const std::vector<float> v = {1, 2, 3, 4, 5};
  CHECK(median_sorted(v) == Approx(3));
  CHECK(median_sorted({1, 2, 3, 4}) == Approx(2.5));
  CHECK(percentile_sorted(v, 0.9) == Approx(4.6));  // 0.9 * 4 = 3.6 -> 4 + 0.6 * (5 - 4)
  CHECK(percentile_sorted(v, 0.0) == 1);
  CHECK(percentile_sorted(v, 1.0) == 5);
}

TEST_CASE("token NLL and KLD of two small distributions", "[verify]") {
  // q = (1/2, 1/4, 1/4), r = (1/4, 1/4, 1/2): KL(r||q) = 1/4 ln(1/2) + 1/2 ln 2 = ln(2)/4
  const float q[] = {std::log(0.5f) + 3, std::log(0.25f) + 3, std::log(0.25f) + 3};
  const float r[] = {std::log(0.25f), std::log(0.25f), std::log(0.5f)};
  CHECK(token_nll(q, 3, 0) == Approx(std::log(2.0)).epsilon(1e-6));
  const TokenCompare c = compare_token(q, r, 3, 0);
  CHECK(c.kld == Approx(std::log(2.0) / 4).epsilon(1e-6));
  CHECK(c.nll_q == Approx(std::log(2.0)).epsilon(1e-6));
  CHECK(c.nll_ref == Approx(std::log(4.0)).epsilon(1e-6));
  CHECK(c.p_q - c.p_ref == Approx(0.25).epsilon(1e-6));
  CHECK_FALSE(c.same_top);
  const TokenCompare same = compare_token(q, q, 3, 1);
  CHECK(same.kld == 0);
  CHECK(same.same_top);
}

TEST_CASE("perplexity scores the second half of each chunk from an empty cache", "[verify]") {
  BigramRuntime model(kQ, 64);
  model.offset = 5.0;
  EvalOptions opt;
  opt.ctx = 6;
  opt.add_bos = true;
  opt.bos_id = 1;
  auto r = evaluate_tokens(model, nullptr, kTokens, opt);
  REQUIRE(r.ok());
  const std::vector<double> nll = {-std::log(0.4), -std::log(0.6), -std::log(0.1), -std::log(0.4)};
  const double mean = (nll[0] + nll[1] + nll[2] + nll[3]) / 4;
  const double mean_sq = (nll[0] * nll[0] + nll[1] * nll[1] + nll[2] * nll[2] + nll[3] * nll[3]) / 4;
  const double se = std::sqrt((mean_sq - mean * mean) / 3);
  CHECK(r->chunks == 2);
  CHECK(r->scored_tokens == 4);
  CHECK(r->text_tokens == 15);
  CHECK(r->ppl.mean_nll == Approx(mean).epsilon(1e-6));
  CHECK(r->ppl.ppl == Approx(std::exp(mean)).epsilon(1e-6));
  CHECK(r->ppl.nll_stderr == Approx(se).epsilon(1e-5));
  CHECK(r->ppl.ppl_stderr == Approx(std::exp(mean) * se).epsilon(1e-5));
  REQUIRE(r->ppl.chunk_ppl.size() == 2);
  CHECK(r->ppl.chunk_ppl[0] == Approx(std::exp((nll[0] + nll[1]) / 2)).epsilon(1e-6));
  CHECK(!r->kld.has_value());

  // Every chunk restarts at position 0 with BOS in place of its first token, and positions are
  // contiguous inside a chunk; chunk 1 starts at text token 6.
  REQUIRE(!model.calls.empty());
  std::vector<std::vector<int32_t>> fed(2);
  int chunk = -1;
  for (const auto& call : model.calls) {
    if (call.pos == 0) ++chunk;
    REQUIRE(chunk >= 0);
    REQUIRE(chunk < 2);
    CHECK(call.pos == static_cast<int64_t>(fed[chunk].size()));
    fed[chunk].insert(fed[chunk].end(), call.tokens.begin(), call.tokens.end());
  }
  REQUIRE(fed[0].size() >= 5);
  REQUIRE(fed[1].size() >= 5);
  CHECK(std::vector<int32_t>(fed[0].begin(), fed[0].begin() + 5) == std::vector<int32_t>{1, 1, 2, 3, 0});
  CHECK(std::vector<int32_t>(fed[1].begin(), fed[1].begin() + 5) == std::vector<int32_t>{1, 2, 1, 0, 3});
}

TEST_CASE("perplexity without BOS, max-chunks and small score batches", "[verify]") {
  BigramRuntime model(kQ, 64);
  EvalOptions opt;
  opt.ctx = 6;
  opt.max_chunks = 1;
  opt.score_batch = 1;
  auto r = evaluate_tokens(model, nullptr, kTokens, opt);
  REQUIRE(r.ok());
  CHECK(r->chunks == 1);
  CHECK(r->ppl.mean_nll == Approx((-std::log(0.4) - std::log(0.6)) / 2).epsilon(1e-6));
  CHECK(model.calls.front().tokens.front() == 0);  // first text token kept when add_bos is off

  // ctx 7 (odd): first = 3, scored positions 3..5 predict 4..6: (3->0), (0->1), (1->2)
  BigramRuntime model7(kQ, 64);
  opt.ctx = 7;
  opt.score_batch = 256;
  auto r7 = evaluate_tokens(model7, nullptr, kTokens, opt);
  REQUIRE(r7.ok());
  CHECK(r7->scored_tokens == 3);
  CHECK(r7->ppl.mean_nll == Approx((-std::log(0.4) - std::log(0.6) - std::log(0.25)) / 3).epsilon(1e-6));
}

TEST_CASE("KLD against itself is zero with full agreement", "[verify]") {
  BigramRuntime model(kQ, 64), ref(kQ, 64);
  EvalOptions opt;
  opt.ctx = 6;
  auto r = evaluate_tokens(model, &ref, kTokens, opt);
  REQUIRE(r.ok());
  REQUIRE(r->kld.has_value());
  CHECK(r->kld->kld.mean == 0);
  CHECK(r->kld->kld_max == 0);
  CHECK(r->kld->same_top.mean == 1.0);
  CHECK(r->kld->delta_p_rms == 0);
  CHECK(r->kld->ppl_ratio == 1.0);
  CHECK(r->kld->ref.ppl == r->ppl.ppl);
}

TEST_CASE("KLD, agreement and Δp against a different reference", "[verify]") {
  BigramRuntime model(kQ, 64), ref(kR, 64);
  EvalOptions opt;
  opt.ctx = 6;
  auto r = evaluate_tokens(model, &ref, kTokens, opt);
  REQUIRE(r.ok());
  REQUIRE(r->kld.has_value());
  const KldResult& k = *r->kld;
  // Scored (current -> next): (3->0), (0->1), (0->3), (3->3).
  const double kl3 = kl(kR[3], kQ[3]);
  const double kl0 = kl(kR[0], kQ[0]);
  CHECK(k.kld.mean == Approx((2 * kl3 + 2 * kl0) / 4).epsilon(1e-5));
  // sorted values kl_a, kl_a, kl_b, kl_b: median = mean of the middle two
  CHECK(k.kld_median == Approx((kl0 + kl3) / 2).epsilon(1e-5));
  CHECK(k.kld_max == Approx(std::max(kl0, kl3)).epsilon(1e-5));
  // argmax: Q row 0 -> 1, R row 0 -> 0 (differ); Q row 3 -> 0 (first max), R row 3 -> 3 (differ)
  CHECK(k.same_top.mean == 0.0);
  // Δp of the observed next token: Q - R
  const std::vector<double> dp = {0.4 - 0.1, 0.6 - 0.25, 0.1 - 0.125, 0.4 - 0.4};
  double dp2 = 0;
  for (double d : dp) dp2 += d * d;
  CHECK(k.delta_p_rms == Approx(std::sqrt(dp2 / 4)).epsilon(1e-5));
  CHECK(k.delta_p.mean == Approx((dp[0] + dp[1] + dp[2] + dp[3]) / 4).epsilon(1e-5));
  const double nll_ref = (-std::log(0.1) - std::log(0.25) - std::log(0.125) - std::log(0.4)) / 4;
  CHECK(k.ref.mean_nll == Approx(nll_ref).epsilon(1e-6));
  CHECK(k.ln_ppl_ratio == Approx(r->ppl.mean_nll - nll_ref).epsilon(1e-6));
  CHECK(k.ppl_ratio == Approx(std::exp(r->ppl.mean_nll - nll_ref)).epsilon(1e-6));
}

TEST_CASE("evaluation rejects bad inputs", "[verify]") {
  BigramRuntime model(kQ, 8);
  EvalOptions opt;
  opt.ctx = 16;  // longer than the text and the runtime's context
  CHECK(evaluate_tokens(model, nullptr, kTokens, opt).error().code == ErrorCode::kInvalidArgument);
  opt.ctx = 6;
  const std::vector<int32_t> bad = {0, 1, 2, 9, 0, 1};
  auto r = evaluate_tokens(model, nullptr, bad, opt);
  REQUIRE(!r.ok());
  CHECK(r.error().message.find("index 3") != std::string::npos);
  const std::vector<int32_t> short_text = {0, 1, 2};
  CHECK(!evaluate_tokens(model, nullptr, short_text, opt).ok());
  opt.ctx = 2;
  CHECK(!evaluate_tokens(model, nullptr, kTokens, opt).ok());
  BigramRuntime other({{0.5, 0.5}, {0.5, 0.5}}, 64);
  opt.ctx = 6;
  CHECK(!evaluate_tokens(model, &other, kTokens, opt).ok());  // vocabularies differ
}
