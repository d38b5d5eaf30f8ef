// Sampling: greedy, seeded determinism, and empirical frequencies against the distributions that
// temperature, top-k and top-p define for hand-picked probabilities.
#include <catch2/catch.hpp>
#include <cmath>

#include "runtime/sampling.h"

using namespace llmc;

namespace {
// Logits whose softmax is exactly {0.5, 0.3, 0.15, 0.05}.
const std::vector<float> kLogits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};

std::vector<double> frequencies(const SamplingOptions& o, int draws) {
  Sampler s(o);
  std::vector<double> f(kLogits.size(), 0.0);
  for (int i = 0; i < draws; ++i) f[static_cast<size_t>(s.sample(kLogits))] += 1.0 / draws;
  return f;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  // 200k draws: standard error <= 0.0012; 0.006 is five of them.
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).margin(0.006));
}
}  // namespace

TEST_CASE("greedy picks the first maximum", "[sampling]") {
  Sampler s(SamplingOptions{});
  CHECK(s.sample(kLogits) == 0);
  const std::vector<float> tie{1.0f, 3.0f, 3.0f, -2.0f};
  CHECK(s.sample(tie) == 1);
  CHECK(argmax(tie) == 1);
}

TEST_CASE("sampling is deterministic for a seed and differs across seeds", "[sampling]") {
  auto draw = [](uint64_t seed) {
    Sampler s(SamplingOptions{1.0f, 0, 1.0f, seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(kLogits));
    return out;
  };
  CHECK(draw(42) == draw(42));
  CHECK(draw(42) != draw(43));
  CHECK(draw(0) == draw(0));
}

TEST_CASE("temperature, top-k and top-p sample the distributions they define", "[sampling]") {
  const int kDraws = 200000;
  check_close(frequencies({1.0f, 0, 1.0f, 1}, kDraws), {0.5, 0.3, 0.15, 0.05});
  // top-k 2: {0.5, 0.3} renormalised
  check_close(frequencies({1.0f, 2, 1.0f, 2}, kDraws), {0.625, 0.375, 0, 0});
  // top-p 0.6: 0.5 < 0.6, 0.5 + 0.3 >= 0.6 -> keep two
  check_close(frequencies({1.0f, 0, 0.6f, 3}, kDraws), {0.625, 0.375, 0, 0});
  // top-p 0.85: 0.5 + 0.3 + 0.15 >= 0.85 -> keep three
  check_close(frequencies({1.0f, 0, 0.85f, 4}, kDraws), {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
  // temperature 2: p ∝ sqrt(p)
  const double s = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.15) + std::sqrt(0.05);
  check_close(frequencies({2.0f, 0, 1.0f, 5}, kDraws),
              {std::sqrt(0.5) / s, std::sqrt(0.3) / s, std::sqrt(0.15) / s, std::sqrt(0.05) / s});
  // top-k 1 is greedy whatever the temperature
  check_close(frequencies({5.0f, 1, 1.0f, 6}, 1000), {1, 0, 0, 0});
}

TEST_CASE("invalid sampling options are rejected", "[sampling]") {
  CHECK_FALSE(validate_sampling({-1.0f, 0, 1.0f, 0}).ok());
  CHECK_FALSE(validate_sampling({1.0f, -1, 1.0f, 0}).ok());
  CHECK_FALSE(validate_sampling({1.0f, 0, 0.0f, 0}).ok());
  CHECK_FALSE(validate_sampling({1.0f, 0, 1.5f, 0}).ok());
  CHECK_FALSE(validate_sampling({NAN, 0, 1.0f, 0}).ok());
  CHECK(validate_sampling({0.7f, 40, 0.9f, 7}).ok());
}
