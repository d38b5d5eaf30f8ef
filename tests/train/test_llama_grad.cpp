// The training forward/backward pass: logits equal the runtime's on a real model; gradients equal
// central finite differences of the KD loss on small random models (GQA, biases, tied/untied).
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "formats/model_io.h"
#include "model/synth.h"
#include "runtime/runtime.h"
#include "test_util.h"
#include "train/llama_grad.h"

using namespace llmc;

namespace {

ModelConfig small_config(bool bias, bool tied, RopeStyle style) {
  ModelConfig c;
  c.family = bias ? ModelFamily::kQwen2 : ModelFamily::kLlama;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 20;
  c.context_length = 32;
  c.rope_style = style;
  c.tied_embeddings = tied;
  c.attn_qkv_bias = bias;
  return c;
}

double loss_of(LlamaGrad& g, const LlamaParams& p, const std::vector<int32_t>& tokens,
               const std::vector<float>& teacher) {
  const int64_t V = p.config().vocab_size, n = static_cast<int64_t>(tokens.size());
  std::vector<float> logits(n * V);
  REQUIRE(g.forward(p, tokens, logits.data(), false).ok());
  return kl_loss(teacher.data(), logits.data(), n, V, 1.0f, nullptr);
}

}  // namespace

TEST_CASE("training backward pass matches finite differences", "[train]") {
  for (int variant = 0; variant < 3; ++variant) {
    const bool bias = variant == 1, tied = variant != 2;
    const RopeStyle style = variant == 1 ? RopeStyle::kNeox : RopeStyle::kInterleaved;
    SynthOptions so;
    so.seed = 7 + variant;
    so.stddev = 0.3f;
    auto model = synth_model(small_config(bias, tied, style), so);
    REQUIRE(model.ok());
    auto params = LlamaParams::from_model(model.value());
    REQUIRE(params.ok());
    LlamaParams& p = params.value();
    // Norm gains away from 1 so that their gradients are not special.
    std::mt19937 rng(variant);
    std::normal_distribution<float> nd(0.0f, 0.2f);
    for (size_t i = 0; i < p.count(); ++i)
      if (p.name(i).find("norm") != std::string::npos)
        for (float& v : p.values(i)) v += nd(rng);
    const std::vector<int32_t> tokens{3, 17, 5, 5, 0, 11, 19, 2, 8};
    const int64_t n = static_cast<int64_t>(tokens.size()), V = p.config().vocab_size;
    std::vector<float> teacher(n * V);
    std::normal_distribution<float> tz(0.0f, 2.0f);
    for (float& v : teacher) v = tz(rng);

    LlamaGrad g(p.config());
    std::vector<float> logits(n * V), dlogits(n * V);
    REQUIRE(g.forward(p, tokens, logits.data(), true).ok());
    kl_loss(teacher.data(), logits.data(), n, V, 1.0f, dlogits.data());
    LlamaParams grad = p.zeros_like();
    g.backward(p, dlogits.data(), grad);

    // Every tensor: a few entries, central differences in double around the f32 loss.
    int checked = 0;
    for (size_t i = 0; i < p.count(); ++i) {
      std::vector<float>& w = p.values(i);
      std::uniform_int_distribution<size_t> pick(0, w.size() - 1);
      for (int k = 0; k < 4; ++k) {
        const size_t j = pick(rng);
        const float saved = w[j], h = 1e-2f;
        w[j] = saved + h;
        const double up = loss_of(g, p, tokens, teacher);
        w[j] = saved - h;
        const double down = loss_of(g, p, tokens, teacher);
        w[j] = saved;
        const double numeric = (up - down) / (2.0 * h);
        const double analytic = grad.values(i)[j];
        INFO("variant " << variant << " " << p.name(i) << "[" << j << "] numeric " << numeric << " analytic "
                        << analytic);
        CHECK(std::abs(numeric - analytic) <= 2e-3 + 2e-2 * std::abs(numeric));
        ++checked;
      }
    }
    CHECK(checked == static_cast<int>(4 * p.count()));
  }
}

TEST_CASE("training forward pass equals the runtime on stories260K", "[train]") {
  const std::string path = test::fixture("models/stories260K/stories260K.bin");
  if (path.empty()) return;
  auto model = load_model(path);
  REQUIRE(model.ok());
  auto params = LlamaParams::from_model(model.value());
  REQUIRE(params.ok());
  const std::vector<int32_t> tokens{1, 403, 407, 261, 378, 296, 363, 353, 286, 365, 418, 264, 267, 326, 9, 288};
  const int64_t n = static_cast<int64_t>(tokens.size()), V = model.value().config.vocab_size;
  LlamaGrad g(params.value().config());
  std::vector<float> logits(n * V), ref(n * V);
  REQUIRE(g.forward(params.value(), tokens, logits.data(), false).ok());
  auto rt = Runtime::create(model.value(), RuntimeOptions{.threads = 1});
  REQUIRE(rt.ok());
  REQUIRE(rt.value()->forward(tokens, 0, ref.data(), true).ok());
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < n * V; ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::abs(logits[i] - ref[i])));
    max_ref = std::max(max_ref, static_cast<double>(std::abs(ref[i])));
  }
  INFO("max |diff| " << max_diff << " of max |logit| " << max_ref);
  CHECK(max_ref > 1.0);
  CHECK(max_diff < 1e-3 * max_ref);
}
