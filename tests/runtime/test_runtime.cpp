// The runtime against a naive double-precision transformer written here from the Llama/Qwen2
// equations, on small random models (GQA, biases, both RoPE styles, tied/untied, f32/f16/bf16);
// plus prefill/decode/thread-count determinism and error handling.
#include <unistd.h>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "kernels/cpu/kernels.h"
#include "model/arch.h"
#include "model/synth.h"
#include "runtime/runtime.h"
#include "runtime/sampling.h"
#include "test_util.h"

using namespace llmc;

namespace {

struct Variant {
  const char* name;
  ModelFamily family;
  RopeStyle rope;
  RopeScaling scaling;
  bool tied;
  bool bias;
  DType dtype;
};

const Variant kVariants[] = {
    {"llama interleaved tied f32", ModelFamily::kLlama, RopeStyle::kInterleaved, {}, true, false, DType::kF32},
    {"qwen2 neox biases untied f16", ModelFamily::kQwen2, RopeStyle::kNeox, {}, false, true, DType::kF16},
    {"llama3 scaling untied bf16", ModelFamily::kLlama, RopeStyle::kNeox,
     RopeScaling{RopeScalingType::kLlama3, 8.0f, 1.0f, 4.0f, 64}, false, false, DType::kBF16},
    {"linear scaling tied f32", ModelFamily::kLlama, RopeStyle::kInterleaved,
     RopeScaling{RopeScalingType::kLinear, 2.0f}, true, false, DType::kF32},
};

Model random_model(const Variant& v, uint32_t seed) {
  Model m;
  ModelConfig& c = m.config;
  c.family = v.family;
  c.dim = 48;
  c.hidden_dim = 76;
  c.n_layers = 2;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 67;
  c.context_length = 64;
  c.rope_theta = 10000.0f;
  c.rope_style = v.rope;
  c.rope_scaling = v.scaling;
  c.tied_embeddings = v.tied;
  c.attn_qkv_bias = v.bias;
  c.norm_eps = 1e-5f;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& spec : expected_tensors(c)) {
    std::vector<float> vals(static_cast<size_t>(spec.shape.numel()));
    const float scale = spec.role == TensorRole::kNorm ? 0.2f : (spec.role == TensorRole::kBias ? 0.1f : 0.3f);
    for (auto& x : vals) x = (spec.role == TensorRole::kNorm ? 1.0f : 0.0f) + scale * normal(rng);
    const DType dt = spec.role == TensorRole::kLinear || spec.role == TensorRole::kOutput ? v.dtype : DType::kF32;
    REQUIRE(m.add(make_dense(spec.name, spec.shape, vals, dt)).ok());
  }
  return m;
}

// ---- the naive reference: every weight decoded with Tensor::to_f32, all arithmetic in double ----
using Vec = std::vector<double>;

struct Naive {
  const Model& m;
  const ModelConfig& c;
  std::vector<std::vector<Vec>> k, v;  // [layer][pos][kv_dim]

  explicit Naive(const Model& model) : m(model), c(model.config), k(c.n_layers), v(c.n_layers) {}

  Vec weight(const std::string& name) const {
    const auto f = m.get(name).to_f32();
    return Vec(f.begin(), f.end());
  }
  Vec lin(const std::string& name, const Vec& x) const {
    const Tensor& t = m.get(name);
    const Vec w = weight(name);
    Vec y(static_cast<size_t>(t.rows()), 0.0);
    for (int64_t r = 0; r < t.rows(); ++r)
      for (int64_t i = 0; i < t.cols(); ++i) y[r] += w[r * t.cols() + i] * x[i];
    return y;
  }
  Vec rms(const Vec& x, const std::string& name) const {
    const Vec w = weight(name);
    double ss = 0;
    for (double a : x) ss += a * a;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c.norm_eps);
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  }
  // Inverse frequency of pair i, written from the published formulas (HF rope utils).
  double freq(int64_t i) const {
    double f = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / static_cast<double>(c.head_dim));
    const RopeScaling& s = c.rope_scaling;
    if (s.type == RopeScalingType::kLinear) return f / s.factor;
    if (s.type == RopeScalingType::kLlama3) {
      const double wavelen = 2 * M_PI / f;
      const double lo = s.original_context / s.low_freq_factor, hi = s.original_context / s.high_freq_factor;
      if (wavelen < hi) return f;
      if (wavelen > lo) return f / s.factor;
      const double smooth =
          (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      return (1 - smooth) * f / s.factor + smooth * f;
    }
    return f;
  }
  void rope(Vec& x, int64_t heads, int64_t pos) const {
    const int64_t hd = c.head_dim;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const int64_t a = c.rope_style == RopeStyle::kInterleaved ? h * hd + 2 * i : h * hd + i;
        const int64_t b = c.rope_style == RopeStyle::kInterleaved ? a + 1 : a + hd / 2;
        const double ang = pos * freq(i), x0 = x[a], x1 = x[b];
        x[a] = x0 * std::cos(ang) - x1 * std::sin(ang);
        x[b] = x0 * std::sin(ang) + x1 * std::cos(ang);
      }
  }
  std::vector<float> step(int32_t token, int64_t pos) {
    const Vec emb = weight("token_embd.weight");
    Vec x(emb.begin() + token * c.dim, emb.begin() + (token + 1) * c.dim);
    const int64_t hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
    for (int64_t l = 0; l < c.n_layers; ++l) {
      auto nm = [&](const char* s) { return layer_tensor_name(l, s); };
      const Vec xb = rms(x, nm("attn_norm.weight"));
      Vec q = lin(nm("attn_q.weight"), xb), kk = lin(nm("attn_k.weight"), xb), vv = lin(nm("attn_v.weight"), xb);
      if (c.attn_qkv_bias) {
        const Vec bq = weight(nm("attn_q.bias")), bk = weight(nm("attn_k.bias")), bv = weight(nm("attn_v.bias"));
        for (size_t i = 0; i < q.size(); ++i) q[i] += bq[i];
        for (size_t i = 0; i < kk.size(); ++i) kk[i] += bk[i], vv[i] += bv[i];
      }
      rope(q, c.n_heads, pos);
      rope(kk, c.n_kv_heads, pos);
      k[l].push_back(kk);
      v[l].push_back(vv);
      Vec att(q.size(), 0.0);
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const int64_t kvh = h / group;
        Vec sc(static_cast<size_t>(pos + 1));
        double mx = -1e300;
        for (int64_t p = 0; p <= pos; ++p) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[h * hd + i] * k[l][p][kvh * hd + i];
          sc[p] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, sc[p]);
        }
        double sum = 0;
        for (auto& s : sc) sum += s = std::exp(s - mx);
        for (int64_t p = 0; p <= pos; ++p)
          for (int64_t i = 0; i < hd; ++i) att[h * hd + i] += sc[p] / sum * v[l][p][kvh * hd + i];
      }
      const Vec o = lin(nm("attn_output.weight"), att);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      const Vec xf = rms(x, nm("ffn_norm.weight"));
      Vec g = lin(nm("ffn_gate.weight"), xf);
      const Vec u = lin(nm("ffn_up.weight"), xf);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const Vec d = lin(nm("ffn_down.weight"), g);
      for (size_t i = 0; i < x.size(); ++i) x[i] += d[i];
    }
    const Vec logits = lin(c.tied_embeddings ? "token_embd.weight" : "output.weight", rms(x, "output_norm.weight"));
    return std::vector<float>(logits.begin(), logits.end());
  }
};

std::vector<int32_t> random_tokens(size_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

// A published shape (synth_shapes) cut to `layers` blocks and a 4096-token vocabulary, random f16
// weights on the heap.
Result<Model> small_synth_f16(const char* shape, int64_t layers) {
  ModelConfig config = find_synth_shape(shape)->config;
  config.n_layers = layers;
  config.vocab_size = 4096;
  SynthOptions so;
  so.dtype = DType::kF16;
  auto m = synth_model(config, so);
  REQUIRE(m.ok());
  return m;
}

}  // namespace

TEST_CASE("runtime logits match a naive double-precision transformer", "[runtime]") {
  for (const auto& variant : kVariants) {
    INFO(variant.name);
    const Model m = random_model(variant, 5);
    auto rt = Runtime::create(m, RuntimeOptions{});
    REQUIRE(rt.ok());
    const int64_t vocab = m.config.vocab_size;
    const auto tokens = random_tokens(21, vocab, 6);
    std::vector<float> logits(tokens.size() * static_cast<size_t>(vocab));
    REQUIRE((*rt)->forward(tokens, 0, logits.data(), true).ok());
    Naive ref(m);
    for (size_t t = 0; t < tokens.size(); ++t) {
      const auto expect = ref.step(tokens[t], static_cast<int64_t>(t));
      double scale = 1.0;
      for (float f : expect) scale = std::max(scale, static_cast<double>(std::fabs(f)));
      for (int64_t i = 0; i < vocab; ++i) {
        INFO("position " << t << " logit " << i);
        REQUIRE(std::fabs(logits[t * vocab + i] - expect[i]) <= 2e-4 * scale);
      }
    }
  }
}

TEST_CASE("runtime: prefill, chunked prefill and token-by-token decode agree bit for bit", "[runtime]") {
  const Model m = random_model(kVariants[1], 9);
  const int64_t vocab = m.config.vocab_size;
  const auto tokens = random_tokens(30, vocab, 10);
  auto a = Runtime::create(m, RuntimeOptions{});
  auto b = Runtime::create(m, RuntimeOptions{});
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  std::vector<float> all(tokens.size() * static_cast<size_t>(vocab));
  REQUIRE((*a)->forward(tokens, 0, all.data(), true).ok());
  // b: 11 tokens in one batch, then one at a time
  std::vector<float> part(11 * static_cast<size_t>(vocab)), one(static_cast<size_t>(vocab));
  REQUIRE((*b)->forward(std::span(tokens).first(11), 0, part.data(), true).ok());
  CHECK(std::memcmp(part.data(), all.data(), part.size() * sizeof(float)) == 0);
  for (size_t t = 11; t < tokens.size(); ++t) {
    REQUIRE((*b)->forward({&tokens[t], 1}, static_cast<int64_t>(t), one.data(), false).ok());
    REQUIRE(std::memcmp(one.data(), all.data() + t * vocab, one.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("runtime: results do not depend on the thread count", "[runtime]") {
  const Model m = random_model(kVariants[0], 12);
  const int64_t vocab = m.config.vocab_size;
  const auto tokens = random_tokens(40, vocab, 13);
  std::vector<std::vector<float>> out;
  for (int threads : {1, 2, 3}) {
    RuntimeOptions o;
    o.threads = threads;
    auto rt = Runtime::create(m, o);
    REQUIRE(rt.ok());
    out.emplace_back(tokens.size() * static_cast<size_t>(vocab));
    REQUIRE((*rt)->forward(tokens, 0, out.back().data(), true).ok());
  }
  CHECK(out[0] == out[1]);
  CHECK(out[0] == out[2]);
}

// RuntimeOptions::quant_activations: a runtime's forward calls run its Quant weights in that mode
// (the logits of the process-wide mode set to it), and the process-wide mode is back afterwards.
TEST_CASE("runtime: its own activation mode applies to its forward calls only", "[runtime]") {
  using QA = kernels::QuantActivations;
  Model m = random_model(kVariants[0], 31);
  std::mt19937 rng(32);
  for (const auto& spec : expected_tensors(m.config)) {
    if (spec.role != TensorRole::kLinear) continue;
    QuantEncoding q;  // 4-bit symmetric in groups of 16, f16 scales
    q.bits = 4;
    q.group_size = 16;
    q.scale_dtype = DType::kF16;
    std::vector<uint8_t> codes(static_cast<size_t>(spec.shape.rows() * quant_row_stride(q, spec.shape.cols())));
    for (auto& c : codes) c = static_cast<uint8_t>(rng());
    q.codes = Bytes::owned(std::move(codes));
    q.scales = Bytes::from_vector(std::vector<uint16_t>(
        static_cast<size_t>(spec.shape.rows() * quant_groups_per_row(q, spec.shape.cols())), 0x2E66));  // ~0.1
    m.replace(Tensor{spec.name, spec.shape, std::make_shared<Encoding>(Encoding{q})});
  }
  const int64_t vocab = m.config.vocab_size;
  const auto tokens = random_tokens(6, vocab, 33);
  auto logits = [&](std::optional<QA> mode) {
    RuntimeOptions o;
    o.quant_activations = mode;
    auto rt = Runtime::create(m, o);
    REQUIRE(rt.ok());
    std::vector<float> out(tokens.size() * static_cast<size_t>(vocab));
    REQUIRE((*rt)->forward(tokens, 0, out.data(), true).ok());
    return out;
  };
  REQUIRE(kernels::quant_activations() == QA::kAuto);
  const auto by_default = logits(std::nullopt);
  const auto two_parts = logits(QA::kInt8x2);
  CHECK(kernels::quant_activations() == QA::kAuto);
  CHECK(by_default != two_parts);
  CHECK(logits(QA::kInt8) == by_default);  // auto: 4-bit codes take one part
  const kernels::ScopedQuantActivations process(QA::kInt8x2);
  CHECK(logits(std::nullopt) == two_parts);
  CHECK(logits(QA::kAuto) == by_default);
  CHECK(kernels::quant_activations() == QA::kInt8x2);
}

TEST_CASE("runtime: weights collapsed into huge pages give the same logits", "[runtime]") {
  // A one-layer tinyllama-1.1b with a 4096-token vocabulary: 122 MB of f16 weights on the heap
  // (random: only the bits of the two runs are compared).
  auto m = small_synth_f16("tinyllama-1.1b", 1);
  const ModelConfig& config = m->config;
  const Tensor& up = m->get("blk.0.ffn_up.weight");
  const uint8_t* up_bytes = std::get<DenseEncoding>(up.encoding->node).data.data();
  const auto tokens = random_tokens(5, config.vocab_size, 21);
  std::vector<std::vector<float>> out;
  for (bool huge : {false, true}) {
    RuntimeOptions o;
    o.threads = 2;
    o.max_context = 16;
    o.huge_pages = huge;
    const int64_t before = test::anon_huge_kb(up_bytes);
    auto rt = Runtime::create(*m, o);
    REQUIRE(rt.ok());
    if (!huge) CHECK(test::anon_huge_kb(up_bytes) == before);
    out.emplace_back(tokens.size() * static_cast<size_t>(config.vocab_size));
    REQUIRE((*rt)->forward(tokens, 0, out.back().data(), true).ok());
  }
  CHECK(out[0] == out[1]);
  std::vector<uint8_t> scratch(size_t{8} << 20, 1);  // does this machine give huge pages at all?
  if (collapse_huge_pages(scratch.data(), scratch.size()) > 0)
    CHECK(test::anon_huge_kb(up_bytes) > 0);
  else
    WARN("no transparent huge pages here (THP off or no free huge page): only the logits were compared");
}

TEST_CASE("block runner and runtime: released weight pages keep one block of a mapped model resident, same results",
          "[runtime]") {
  // Eight smollm2-135m blocks with a 4096-token vocabulary, f16 in a GGUF (54 MiB of block
  // weights; random: only bits and resident pages are compared).
  auto heap = small_synth_f16("smollm2-135m", 8);
  const ModelConfig& config = heap->config;
  test::TempDir tmp;
  REQUIRE(write_gguf(*heap, tmp.path("m.gguf"), {}).ok());
  uint64_t block_bytes = 0;
  for (const Tensor& t : heap->tensors())
    if (t.name.rfind("blk.", 0) == 0) block_bytes += t.encoded_bytes();
  const auto block_pages = static_cast<int64_t>(block_bytes / static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));
  const auto tokens = random_tokens(40, config.vocab_size, 5);
  const auto n = static_cast<int64_t>(tokens.size());
  auto run = [&](const Model& m, bool release, int64_t* grown) {
    auto runner = BlockRunner::create(m, n, 2);
    REQUIRE(runner.ok());
    std::vector<float> x(static_cast<size_t>(n * config.dim)), logits(static_cast<size_t>(n * config.vocab_size));
    const int64_t before = test::resident_pages();
    REQUIRE((*runner)->embed(tokens, x.data()).ok());
    for (int64_t l = 0; l < config.n_layers; ++l) {
      REQUIRE((*runner)->forward_layer(l, x.data(), n, nullptr).ok());
      if (release) (*runner)->release_layer_pages(l);
    }
    if (grown) *grown = test::resident_pages() - before;
    (*runner)->final_norm(x.data(), n, x.data());
    (*runner)->head(x.data(), n, logits.data());
    if (release) (*runner)->release_embedding_pages();
    return logits;
  };
  const std::vector<float> expected = run(*heap, false, nullptr);
  int64_t grown[2] = {};
  for (bool release : {false, true}) {
    auto mapped = load_model(tmp.path("m.gguf"));  // a fresh mapping: none of its pages resident
    REQUIRE(mapped.ok());
    CHECK(run(*mapped, release, &grown[release]) == expected);
  }
  INFO("block pages " << block_pages << ", grown: kept " << grown[0] << ", released " << grown[1]);
  CHECK(grown[0] > block_pages * 3 / 4);
  CHECK(grown[1] < block_pages / 4);  // about one block of eight, plus the runner's scratch

  // The runtime with RuntimeOptions::release_weight_pages (calibration sampling): the same.
  auto forward = [&](const Model& m, bool release, int64_t* grown) {
    RuntimeOptions o;
    o.threads = 2;
    o.max_context = n;
    o.release_weight_pages = release;
    auto rt = Runtime::create(m, o);
    REQUIRE(rt.ok());
    std::vector<float> logits(static_cast<size_t>(n * config.vocab_size));
    const int64_t before = test::resident_pages();
    REQUIRE((*rt)->forward(tokens, 0, logits.data(), true).ok());
    if (grown) *grown = test::resident_pages() - before;
    return logits;
  };
  const std::vector<float> expected_rt = forward(*heap, false, nullptr);
  int64_t rt_grown[2] = {};
  for (bool release : {false, true}) {
    auto mapped = load_model(tmp.path("m.gguf"));
    REQUIRE(mapped.ok());
    CHECK(forward(*mapped, release, &rt_grown[release]) == expected_rt);
  }
  INFO("runtime grown: kept " << rt_grown[0] << ", released " << rt_grown[1]);
  CHECK(rt_grown[0] > block_pages * 3 / 4);
  CHECK(rt_grown[1] < block_pages / 4);
}

TEST_CASE("runtime: batched decode of several sequences equals decoding each alone, bit for bit", "[runtime]") {
  for (const auto& variant : {kVariants[1], kVariants[2]}) {
    INFO(variant.name);
    const Model m = random_model(variant, 17);
    const int64_t vocab = m.config.vocab_size, sequences = 5, steps = 9;
    std::vector<std::vector<int32_t>> tokens;
    for (int64_t s = 0; s < sequences; ++s)
      tokens.push_back(random_tokens(static_cast<size_t>(steps), vocab, static_cast<uint32_t>(30 + s)));
    for (int threads : {1, 2}) {
      RuntimeOptions o;
      o.threads = threads;
      o.sequences = sequences;
      auto batch = Runtime::create(m, o);
      REQUIRE(batch.ok());
      std::vector<float> logits(static_cast<size_t>(sequences * vocab)), one(static_cast<size_t>(vocab));
      std::vector<std::unique_ptr<Runtime>> alone;
      for (int64_t s = 0; s < sequences; ++s) alone.push_back(std::move(Runtime::create(m, RuntimeOptions{}).value()));
      for (int64_t pos = 0; pos < steps; ++pos) {
        std::vector<int32_t> step;
        for (const auto& seq : tokens) step.push_back(seq[pos]);
        REQUIRE((*batch)->forward_batch(step, pos, logits.data()).ok());
        for (int64_t s = 0; s < sequences; ++s) {
          REQUIRE(alone[s]->forward({&tokens[s][pos], 1}, pos, one.data(), false).ok());
          INFO("threads " << threads << " position " << pos << " sequence " << s);
          REQUIRE(std::memcmp(one.data(), logits.data() + s * vocab, sizeof(float) * vocab) == 0);
        }
      }
      // Wrong token count and positions past the context are errors.
      CHECK_FALSE((*batch)->forward_batch(std::span(tokens[0]).first(2), steps, logits.data()).ok());
      std::vector<int32_t> step(static_cast<size_t>(sequences), 1);
      CHECK_FALSE((*batch)->forward_batch(step, m.config.context_length, logits.data()).ok());
    }
  }
  RuntimeOptions bad;
  bad.sequences = 0;
  CHECK_FALSE(Runtime::create(random_model(kVariants[0], 18), bad).ok());
}

TEST_CASE("runtime: bad positions, token ids and configs are errors, not crashes", "[runtime]") {
  Model m = random_model(kVariants[0], 14);
  RuntimeOptions o;
  o.max_context = 8;
  auto rt = Runtime::create(m, o);
  REQUIRE(rt.ok());
  CHECK((*rt)->max_context() == 8);
  std::vector<float> logits(static_cast<size_t>(m.config.vocab_size));
  const std::vector<int32_t> bad_id{5, 67};
  CHECK_FALSE((*rt)->forward(bad_id, 0, logits.data(), false).ok());
  const std::vector<int32_t> neg{-1};
  CHECK_FALSE((*rt)->forward(neg, 0, logits.data(), false).ok());
  const std::vector<int32_t> ok{1, 2, 3};
  CHECK_FALSE((*rt)->forward(ok, 6, logits.data(), false).ok());
  CHECK((*rt)->forward(ok, 5, logits.data(), false).ok());
  o.threads = -1;
  CHECK_FALSE(Runtime::create(m, o).ok());
  Model missing;
  missing.config = m.config;
  CHECK_FALSE(Runtime::create(missing, RuntimeOptions{}).ok());
}

TEST_CASE("runtime: weight bytes per token count linear weights, output and one embedding row", "[runtime]") {
  for (const auto& variant : kVariants) {
    const Model m = random_model(variant, 15);
    auto rt = Runtime::create(m, RuntimeOptions{});
    REQUIRE(rt.ok());
    uint64_t expect = 0;
    for (const auto& t : m.tensors())
      if (tensor_role(t.name) == TensorRole::kLinear || tensor_role(t.name) == TensorRole::kOutput)
        expect += t.encoded_bytes();
    const Tensor& emb = m.get("token_embd.weight");
    if (m.config.tied_embeddings) expect += emb.encoded_bytes();
    expect += emb.encoded_bytes() / static_cast<uint64_t>(m.config.vocab_size);
    CHECK((*rt)->weight_bytes_per_token() == expect);
  }
}

TEST_CASE("beam search: one beam is greedy — reported log-prob matches rescoring", "[runtime][sampling]") {
  const Model m = random_model(kVariants[1], 16);
  const int64_t vocab = m.config.vocab_size;
  const std::vector<int32_t> prompt{3, 1, 4};
  const int64_t steps = 20;
  // greedy
  auto g = Runtime::create(m, RuntimeOptions{});
  REQUIRE(g.ok());
  std::vector<float> logits(static_cast<size_t>(vocab));
  REQUIRE((*g)->forward(prompt, 0, logits.data(), false).ok());
  std::vector<int32_t> greedy;
  for (int64_t pos = 3; pos < steps; ++pos) {
    const int32_t t = argmax(logits);
    greedy.push_back(t);
    if (pos + 1 < steps) REQUIRE((*g)->forward({&t, 1}, pos, logits.data(), false).ok());
  }
  for (int beams : {1, 3}) {
    std::vector<std::unique_ptr<Runtime>> owned;
    std::vector<Runtime*> rts;
    for (int b = 0; b < beams; ++b) {
      auto r = Runtime::create(m, RuntimeOptions{});
      REQUIRE(r.ok());
      rts.push_back(r->get());
      owned.push_back(std::move(*r));
    }
    auto res = beam_search(rts, prompt, BeamOptions{beams, steps, {}});
    REQUIRE(res.ok());
    REQUIRE(res->tokens.size() == greedy.size());
    if (beams == 1) CHECK(res->tokens == greedy);
    // Rescore prompt + hypothesis in one prefill and sum the log-probs of the generated tokens.
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), res->tokens.begin(), res->tokens.end());
    auto s = Runtime::create(m, RuntimeOptions{});
    REQUIRE(s.ok());
    std::vector<float> all(seq.size() * static_cast<size_t>(vocab));
    REQUIRE((*s)->forward(seq, 0, all.data(), true).ok());
    double lp_sum = 0;
    std::vector<double> lp;
    for (size_t i = prompt.size(); i < seq.size(); ++i) {
      log_softmax(std::span<const float>(all.data() + (i - 1) * vocab, static_cast<size_t>(vocab)), lp);
      lp_sum += lp[seq[i]];
    }
    CHECK(res->logprob == Approx(lp_sum).epsilon(1e-9));
  }
}
