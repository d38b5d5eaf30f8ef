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

namespace {

// Σ (block(x) - target)² of block `layer`.
double block_loss(BlockGrad& g, const LlamaParams& p, int64_t layer, const std::vector<float>& x, int64_t n,
                  const std::vector<float>& target) {
  std::vector<float> y = x;
  g.forward(p, layer, y, n);
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += (static_cast<double>(y[i]) - target[i]) * (y[i] - target[i]);
  return s;
}

}  // namespace

TEST_CASE("block backward pass matches finite differences, for its weights and its input", "[train]") {
  for (int variant = 0; variant < 2; ++variant) {
    const bool bias = variant == 1;
    SynthOptions so;
    so.seed = 11 + variant;
    so.stddev = 0.3f;
    auto model = synth_model(small_config(bias, true, bias ? RopeStyle::kNeox : RopeStyle::kInterleaved), so);
    REQUIRE(model.ok());
    auto params = LlamaParams::block_of(model.value(), 1);
    REQUIRE(params.ok());
    LlamaParams& p = params.value();
    CHECK(p.count() == (bias ? 12u : 9u));  // 7 linears, 2 norms (+ 3 biases)
    CHECK(p.index("token_embd.weight") < 0);
    const int64_t n = 7, d = p.config().dim;
    std::mt19937 rng(variant);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(n * d), target(n * d);
    for (float& v : x) v = nd(rng);
    for (float& v : target) v = nd(rng);
    BlockGrad g(p.config(), 1);
    std::vector<float> y = x;
    g.forward(p, 1, y, n);
    std::vector<float> dx(n * d);
    for (size_t i = 0; i < y.size(); ++i) dx[i] = 2.0f * (y[i] - target[i]);
    LlamaParams grad = p.zeros_like();
    g.backward(p, dx, grad);
    const float h = 1e-2f;
    auto check = [&](std::vector<float>& w, size_t j, double analytic, const std::string& what) {
      const float saved = w[j];
      w[j] = saved + h;
      const double up = block_loss(g, p, 1, x, n, target);
      w[j] = saved - h;
      const double down = block_loss(g, p, 1, x, n, target);
      w[j] = saved;
      const double numeric = (up - down) / (2.0 * h);
      INFO("variant " << variant << " " << what << "[" << j << "] numeric " << numeric << " analytic " << analytic);
      CHECK(std::abs(numeric - analytic) <= 2e-3 + 2e-2 * std::abs(numeric));
    };
    for (size_t i = 0; i < p.count(); ++i) {
      std::uniform_int_distribution<size_t> pick(0, p.values(i).size() - 1);
      for (int k = 0; k < 4; ++k) {
        const size_t j = pick(rng);
        check(p.values(i), j, grad.values(i)[j], p.name(i));
      }
    }
    std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
    for (int k = 0; k < 8; ++k) {
      const size_t j = pick(rng);
      check(x, j, dx[j], "input");
    }
  }
}

namespace {

// A 2-block model of small_config's kind with wider blocks (weights N(0, 0.1²)), and a block
// input x0 and output gradient dy [n, dim] of N(0, 1) values.
struct BlockCase {
  ModelConfig c;
  Model model;
  std::vector<float> x0, dy;
};

BlockCase block_case(bool bias, int64_t dim, int64_t hidden, int64_t head_dim, uint64_t seed, int64_t n) {
  BlockCase b;
  b.c = small_config(bias, true, RopeStyle::kNeox);
  b.c.dim = dim;
  b.c.hidden_dim = hidden;
  b.c.head_dim = head_dim;
  SynthOptions so;
  so.seed = seed;
  so.stddev = 0.1f;
  auto model = synth_model(b.c, so);
  REQUIRE(model.ok());
  b.model = std::move(model).value();
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  b.x0.resize(static_cast<size_t>(n * dim));
  b.dy.resize(b.x0.size());
  for (float& v : b.x0) v = nd(rng);
  for (float& v : b.dy) v = nd(rng);
  return b;
}

}  // namespace

TEST_CASE("block forward and backward give the same bits on 1 and 3 threads", "[train]") {
  const int64_t n = 45;
  const BlockCase b = block_case(false, 64, 160, 16, 3, n);
  const ModelConfig& c = b.c;
  const std::vector<float>&x0 = b.x0, &dy = b.dy;
  auto params = LlamaParams::block_of(b.model, 0);
  REQUIRE(params.ok());
  std::vector<std::vector<float>> outs, dxs;
  std::vector<LlamaParams> grads;
  for (int threads : {1, 3}) {
    BlockGrad g(c, threads);
    std::vector<float> x = x0, dx = dy;
    g.forward(params.value(), 0, x, n);
    LlamaParams grad = params.value().zeros_like();
    g.backward(params.value(), dx, grad);
    outs.push_back(x);
    dxs.push_back(dx);
    grads.push_back(std::move(grad));
  }
  CHECK(outs[0] != x0);
  CHECK(outs[0] == outs[1]);
  CHECK(dxs[0] == dxs[1]);
  for (size_t i = 0; i < grads[0].count(); ++i) {
    INFO(grads[0].name(i));
    CHECK(grads[0].values(i) == grads[1].values(i));
  }
}

namespace {

// Rows of a stored copy, as a RowSource.
class CopyRows : public RowSource {
 public:
  CopyRows(std::vector<float> v, int64_t cols) : v_(std::move(v)), cols_(cols) {}
  void rows(int64_t r0, int64_t r1, float* out) const override {
    std::copy(v_.begin() + r0 * cols_, v_.begin() + r1 * cols_, out);
  }
  void cols(int64_t c0, int64_t c1, float* out) const override {
    const int64_t rows = std::ssize(v_) / cols_;
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t r = 0; r < rows; ++r) out[(c - c0) * rows + r] = v_[r * cols_ + c];
  }

 private:
  std::vector<float> v_;
  int64_t cols_;
};

}  // namespace

// Block-by-block training runs a block as its two halves (attention, then FFN), with the
// quantized weights made on demand by a RowSource: both give the bits of the whole block on
// stored weights, forward and backward, on 1 and 2 threads.
TEST_CASE("block halves and weights from a RowSource give the bits of the whole block", "[train]") {
  const int64_t n = 21;
  const BlockCase b = block_case(true, 48, 136, 12, 5, n);  // FFN width: not a multiple of 16 rows
  const ModelConfig& c = b.c;
  const std::vector<float>&x0 = b.x0, &dy = b.dy;
  auto whole = LlamaParams::block_of(b.model, 1);
  auto attn = LlamaParams::block_of(b.model, 1, BlockPart::kAttention);
  auto ffn = LlamaParams::block_of(b.model, 1, BlockPart::kFfn);
  REQUIRE((whole.ok() && attn.ok() && ffn.ok()));
  CHECK(attn->count() == 8u);  // norm, q, k, v, output, 3 biases
  CHECK(ffn->count() == 4u);   // norm, gate, up, down
  CHECK(attn->index("blk.1.ffn_up.weight") < 0);
  CHECK(ffn->index("blk.1.attn_q.weight") < 0);
  // Every linear weight of the halves from a source; their stored values are gone.
  std::vector<std::unique_ptr<CopyRows>> sources;
  for (LlamaParams* p : {&attn.value(), &ffn.value()})
    for (size_t i = 0; i < p->count(); ++i) {
      const Tensor& t = b.model.get(p->name(i));
      if (t.shape.dims.size() != 2) continue;
      sources.push_back(std::make_unique<CopyRows>(p->values(i), t.cols()));
      p->set_source(i, sources.back().get());
      CHECK(p->values(i).empty());
    }
  CHECK(sources.size() == 7u);
  for (int threads : {1, 2}) {
    INFO(threads << " threads");
    BlockGrad g(c, threads);
    std::vector<float> x = x0, dx = dy;
    g.forward(whole.value(), 1, x, n);
    LlamaParams grad = whole->zeros_like();
    g.backward(whole.value(), dx, grad);

    std::vector<float> xh = x0;
    g.forward(attn.value(), 1, xh, n, BlockPart::kAttention);
    const std::vector<float> mid = xh;
    g.forward(ffn.value(), 1, xh, n, BlockPart::kFfn);
    CHECK(xh == x);
    LlamaParams gffn = ffn->zeros_like(), gattn = attn->zeros_like();
    std::vector<float> dxh = dy;
    g.backward(ffn.value(), dxh, gffn);
    std::vector<float> again = x0;  // the attention half's tape again (the FFN half's replaced it)
    g.forward(attn.value(), 1, again, n, BlockPart::kAttention);
    CHECK(again == mid);
    g.backward(attn.value(), dxh, gattn);
    CHECK(dxh == dx);
    for (const LlamaParams* half : {&gffn, &gattn})
      for (size_t i = 0; i < half->count(); ++i) {
        INFO(half->name(i));
        CHECK(half->values(i) == grad.get(half->name(i)));
      }
  }
}
