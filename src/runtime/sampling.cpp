// Token sampling (greedy, temperature, top-k, top-p) and beam search.
#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace llmc {

Result<void> validate_sampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature))
    return make_error(ErrorCode::kInvalidArgument, "temperature must be a finite number >= 0");
  if (o.top_k < 0) return make_error(ErrorCode::kInvalidArgument, "top-k must be >= 0");
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) return make_error(ErrorCode::kInvalidArgument, "top-p must be in (0, 1]");
  return {};
}

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  return best;
}

void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  out.resize(logits.size());
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - lse;
}

Rng::Rng(uint64_t seed) {
  // splitmix64 of the seed: any seed (including 0) gives a non-zero xorshift state.
  uint64_t z = seed + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  state_ = (z ^ (z >> 31)) | 1;
}

uint32_t Rng::next_u32() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return static_cast<uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
}

float Rng::next_f32() { return static_cast<float>(next_u32() >> 8) / 16777216.0f; }

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) return 0;
  if (options_.temperature == 0.0f) return argmax(logits);
  // candidates: (probability, id), sorted by probability descending then id ascending.
  candidates_.resize(logits.size());
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp((static_cast<double>(logits[i]) - mx) / options_.temperature);
    candidates_[i] = {static_cast<float>(p), static_cast<int32_t>(i)};
    sum += p;
  }
  auto order = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
    keep = static_cast<size_t>(options_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(keep), candidates_.end(),
                      order);
  } else if (options_.top_p < 1.0f) {
    std::sort(candidates_.begin(), candidates_.end(), order);
  }
  candidates_.resize(keep);
  double mass = 0.0;
  for (const auto& c : candidates_) mass += c.first;
  if (options_.top_p < 1.0f) {
    if (options_.top_k > 0) std::sort(candidates_.begin(), candidates_.end(), order);
    double cum = 0.0;
    size_t n = 0;
    while (n < candidates_.size()) {
      cum += candidates_[n++].first;
      if (cum >= options_.top_p * mass) break;
    }
    candidates_.resize(n);
    mass = cum;
  }
  (void)sum;
  const double r = static_cast<double>(rng_.next_f32()) * mass;
  double cum = 0.0;
  for (const auto& c : candidates_) {
    cum += c.first;
    if (r < cum) return c.second;
  }
  return candidates_.back().second;  // rounding: r landed on the total mass
}

namespace {
struct Hypothesis {
  std::vector<int32_t> tokens;  // generated so far
  double logprob = 0.0;
  size_t slot = 0;  // runtime holding its cache
};
double mean_logprob(const Hypothesis& h) {
  return h.tokens.empty() ? h.logprob : h.logprob / static_cast<double>(h.tokens.size());
}
}  // namespace

Result<BeamResult> beam_search(std::span<Runtime* const> runtimes, std::span<const int32_t> prompt,
                               const BeamOptions& options) {
  const auto beams = static_cast<size_t>(std::max(1, options.beams));
  if (runtimes.size() != beams)
    return make_error(ErrorCode::kInvalidArgument, "beam search needs one runtime per beam");
  if (prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "beam search needs a non-empty prompt");
  const int64_t vocab = runtimes[0]->vocab_size();
  const auto n_prompt = static_cast<int64_t>(prompt.size());
  const int64_t max_pos = std::min(options.max_positions, runtimes[0]->max_context());
  std::vector<std::vector<float>> logits(beams, std::vector<float>(static_cast<size_t>(vocab)));
  LLMC_TRY(runtimes[0]->forward(prompt, 0, logits[0].data(), false));

  std::vector<Hypothesis> active{{{}, 0.0, 0}};
  std::vector<Hypothesis> finished;
  std::vector<double> lp;
  struct Candidate {
    double score;
    size_t parent;  // index in active
    int32_t token;
  };
  auto is_stop = [&](int32_t t) {
    return std::find(options.stop_tokens.begin(), options.stop_tokens.end(), t) != options.stop_tokens.end();
  };
  for (int64_t pos = n_prompt; pos < max_pos && !active.empty() && finished.size() < beams; ++pos) {
    std::vector<Candidate> cands;
    for (size_t b = 0; b < active.size(); ++b) {
      log_softmax(logits[active[b].slot], lp);
      std::vector<int32_t> ids(static_cast<size_t>(vocab));
      for (int64_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      const size_t k = std::min(beams, ids.size());
      std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                        [&](int32_t a, int32_t c) { return lp[a] > lp[c] || (lp[a] == lp[c] && a < c); });
      for (size_t i = 0; i < k; ++i) cands.push_back({active[b].logprob + lp[ids[i]], b, ids[i]});
    }
    std::stable_sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
      return a.score > b.score || (a.score == b.score && a.token < b.token);
    });
    std::vector<Hypothesis> next;
    std::vector<bool> slot_taken(beams, false);
    for (const auto& c : cands) {
      if (next.size() == beams) break;
      Hypothesis h{active[c.parent].tokens, c.score, active[c.parent].slot};
      if (is_stop(c.token)) {
        finished.push_back(std::move(h));
        continue;
      }
      h.tokens.push_back(c.token);
      next.push_back(std::move(h));
    }
    // The first child of a parent keeps the parent's runtime; other children copy its cache into
    // a runtime no surviving hypothesis uses. Copies happen before any runtime writes `pos`.
    std::vector<size_t> slot_of(next.size());
    std::vector<bool> needs_copy(next.size(), false);
    for (size_t i = 0; i < next.size(); ++i) {
      if (!slot_taken[next[i].slot]) {
        slot_taken[next[i].slot] = true;
        slot_of[i] = next[i].slot;
      } else {
        needs_copy[i] = true;
      }
    }
    for (size_t i = 0; i < next.size(); ++i) {
      if (!needs_copy[i]) continue;
      size_t free_slot = 0;
      while (slot_taken[free_slot]) ++free_slot;
      slot_taken[free_slot] = true;
      LLMC_TRY(runtimes[free_slot]->copy_cache_from(*runtimes[next[i].slot], pos));
      slot_of[i] = free_slot;
    }
    for (size_t i = 0; i < next.size(); ++i) {
      next[i].slot = slot_of[i];
      const int32_t tok = next[i].tokens.back();
      if (pos + 1 < max_pos) LLMC_TRY(runtimes[slot_of[i]]->forward({&tok, 1}, pos, logits[slot_of[i]].data(), false));
    }
    active = std::move(next);
  }
  for (auto& h : active) finished.push_back(std::move(h));
  if (finished.empty()) return BeamResult{};
  const auto best = std::max_element(finished.begin(), finished.end(), [](const Hypothesis& a, const Hypothesis& b) {
    return mean_logprob(a) < mean_logprob(b);
  });
  return BeamResult{best->tokens, best->logprob};
}

}  // namespace llmc
