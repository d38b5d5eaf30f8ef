// Calibration data and activation capture: token windows, self-sampling, block-by-block stats vs
// the runtime's logits, brute-force Σ x xᵀ and thread-count independence.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "kernels/cpu/kernels.h"
#include "model/tokenizer.h"
#include "passes/quant/quant_math.h"
#include "pipeline/calibration.h"
#include "runtime/runtime.h"
#include "runtime/sampling.h"
#include "test_util.h"

using namespace llmc;

namespace {

Result<Model> load_stories(bool with_tokenizer = true) {
  LoadOptions o;
  if (with_tokenizer) o.tokenizer_path = test::fixture("models/stories260K/tok512.bin");
  return load_model(test::fixture("models/stories260K/stories260K.bin"), o);
}

std::unique_ptr<CalibrationSet> stories_calib(const Model& m, int64_t samples, int64_t ctx, uint64_t seed = 0,
                                              int64_t ram_bytes = CalibOptions::kDefaultRamBytes) {
  CalibOptions o;
  o.file = test::fixture("text/tinystories-sample.txt");
  o.samples = samples;
  o.ctx = ctx;
  o.seed = seed;
  o.ram_bytes = ram_bytes;
  auto set = CalibrationSet::create(m, o);
  REQUIRE(set.ok());
  return std::move(set).value();
}

std::vector<std::string> linear_names(const Model& m) {
  std::vector<std::string> names;
  for (int64_t l = 0; l < m.config.n_layers; ++l)
    for (const char* s : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})
      names.push_back("blk." + std::to_string(l) + "." + s + ".weight");
  return names;
}

void require_identical(const LinearInputStats& a, const LinearInputStats& b) {
  REQUIRE(a.cols == b.cols);
  REQUIRE(a.tokens == b.tokens);
  REQUIRE(a.n_samples == b.n_samples);
  REQUIRE(a.sq_sum.size() == b.sq_sum.size());
  REQUIRE(a.xtx.size() == b.xtx.size());
  REQUIRE(a.samples.size() == b.samples.size());
  CHECK(std::memcmp(a.sq_sum.data(), b.sq_sum.data(), a.sq_sum.size() * sizeof(double)) == 0);
  CHECK(std::memcmp(a.xtx.data(), b.xtx.data(), a.xtx.size() * sizeof(double)) == 0);
  if (!a.samples.empty())  // memcmp of two null pointers is undefined even for 0 bytes (UBSan)
    CHECK(std::memcmp(a.samples.data(), b.samples.data(), a.samples.size() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("calibration: text windows are seeded, non-overlapping pieces of the tokenized file", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  auto text = read_text_file(test::fixture("text/tinystories-sample.txt"));
  REQUIRE(text.ok());
  auto tok = Tokenizer::create(m->tokenizer);
  REQUIRE(tok.ok());
  const std::vector<int32_t> all = (*tok)->encode(*text, false);
  REQUIRE(m->tokenizer.add_bos);

  auto a = stories_calib(*m, 16, 128, 7);
  auto b = stories_calib(*m, 16, 128, 7);
  auto c = stories_calib(*m, 16, 128, 8);
  CHECK(a->sequences() == b->sequences());
  CHECK(a->sequences() != c->sequences());
  REQUIRE(a->sequences().size() == 16);
  CHECK(a->tokens() == 16 * 128);
  int64_t prev_end = 0;
  for (const auto& seq : a->sequences()) {
    REQUIRE(seq.size() == 128);
    CHECK(seq[0] == (*tok)->bos());
    // The rest is a contiguous window of the file's tokens, after the previous window.
    auto it = std::search(all.begin() + prev_end, all.end(), seq.begin() + 1, seq.end());
    REQUIRE(it != all.end());
    prev_end = (it - all.begin()) + 127;
  }
}

TEST_CASE("calibration: a short file and a model without tokenizer are clear errors", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  CalibOptions o;
  o.file = test::fixture("text/tinystories-sample.txt");
  o.samples = 1000;
  o.ctx = 256;
  auto r = CalibrationSet::create(*m, o);
  REQUIRE(!r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  INFO(r.error().message);
  CHECK(r.error().message.find("too short") != std::string::npos);
  CHECK(r.error().message.find("255000") != std::string::npos);  // 1000 windows of 255 tokens after BOS

  auto bare = load_stories(false);
  REQUIRE(bare.ok());
  REQUIRE(bare->tokenizer.empty());
  o.samples = 2;
  auto r2 = CalibrationSet::create(*bare, o);
  REQUIRE(!r2.ok());
  CHECK(r2.error().code == ErrorCode::kInvalidArgument);
  CHECK(r2.error().message.find("no tokenizer") != std::string::npos);
  CalibOptions self;
  self.self_samples = 2;
  self.ctx = 16;
  auto r3 = CalibrationSet::create(*bare, self);
  REQUIRE(!r3.ok());
  CHECK(r3.error().code == ErrorCode::kInvalidArgument);

  o.ctx = 1;
  CHECK(!CalibrationSet::create(*m, o).ok());
  o.ctx = 100000;  // beyond the model's 512 positions
  CHECK(!CalibrationSet::create(*m, o).ok());
  o.ctx = 64;
  o.self_samples = 2;  // both sources
  CHECK(!CalibrationSet::create(*m, o).ok());
}

TEST_CASE("calibration: --calib-self is deterministic per seed, thread-independent, and differs across seeds",
          "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  auto sample = [&](uint64_t seed, int threads) {
    CalibOptions o;
    o.self_samples = 2;
    o.ctx = 48;
    o.seed = seed;
    o.threads = threads;
    auto set = CalibrationSet::create(*m, o);
    REQUIRE(set.ok());
    return (*set)->sequences();
  };
  const auto a = sample(1, 1), b = sample(1, 2), c = sample(2, 1);
  CHECK(a == b);
  CHECK(a != c);
  REQUIRE(a.size() == 2);
  CHECK(a[0] != a[1]);
  for (const auto& seq : a) {
    REQUIRE(seq.size() == 48);
    CHECK(seq[0] == m->tokenizer.bos_id);
    for (int32_t t : seq) CHECK((t >= 0 && t < m->config.vocab_size));
  }
  // Temperature-1 samples of a TinyStories model decode to story-like text.
  auto tok = Tokenizer::create(m->tokenizer);
  REQUIRE(tok.ok());
  const std::string text = (*tok)->decode(a[0]);
  INFO(text);
  CHECK(text.find(' ') != std::string::npos);
}

TEST_CASE("calibration: --calib-self decodes sequences in batches of any size — each equals sampling it alone",
          "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  CalibOptions o;
  o.self_samples = 5;
  o.ctx = 40;
  o.seed = 11;
  // The batch is as many sequences as --calib-ram holds KV caches for (51,200 bytes each here):
  // all five, two, one.
  std::vector<std::vector<std::vector<int32_t>>> by_batch;
  for (int64_t ram : {CalibOptions::kDefaultRamBytes, int64_t{110000}, int64_t{0}}) {
    o.ram_bytes = ram;
    auto set = CalibrationSet::create(*m, o);
    REQUIRE(set.ok());
    by_batch.push_back((*set)->sequences());
  }
  const auto& seqs = by_batch[0];
  REQUIRE(seqs.size() == 5);
  CHECK(by_batch[1] == seqs);
  CHECK(by_batch[2] == seqs);
  // docs/calibration.md: sequence i is sampled from BOS with its own generator, seeded with
  // seed + 0x9e3779b97f4a7c15 * (i + 1); after an EOS comes BOS. Here with one-token decode.
  const int32_t bos = m->tokenizer.bos_id, eos = m->tokenizer.eos_id;
  for (int64_t i = 0; i < 5; ++i) {
    auto rt = Runtime::create(*m, RuntimeOptions{});
    REQUIRE(rt.ok());
    SamplingOptions so;
    so.temperature = 1.0f;
    so.seed = o.seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1);
    Sampler sampler(so);
    std::vector<int32_t> expect{bos};
    std::vector<float> logits(static_cast<size_t>(m->config.vocab_size));
    while (static_cast<int64_t>(expect.size()) < o.ctx) {
      const int32_t last = expect.back();
      REQUIRE((*rt)->forward({&last, 1}, static_cast<int64_t>(expect.size()) - 1, logits.data(), false).ok());
      const int32_t next = sampler.sample(logits);
      expect.push_back(last == eos && eos >= 0 ? bos : next);
    }
    INFO("sequence " << i);
    CHECK(seqs[i] == expect);
  }
}

TEST_CASE("calibration: block runner and sequential capture reproduce Runtime::forward logits", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  // 300 tokens: more than one 256-token chunk of the block forward.
  auto set = stories_calib(*m, 3, 300);
  const int64_t vocab = m->config.vocab_size, dim = m->config.dim;
  RuntimeOptions ro;
  ro.max_context = 300;
  ro.threads = 1;
  auto rt = Runtime::create(*m, ro);
  REQUIRE(rt.ok());
  std::vector<std::vector<float>> ref;
  for (const auto& seq : set->sequences()) {
    std::vector<float> logits(seq.size() * vocab);
    REQUIRE((*rt)->forward(seq, 0, logits.data(), true).ok());
    ref.push_back(std::move(logits));
  }

  SECTION("BlockRunner") {
    auto br = BlockRunner::create(*m, 300, 1);
    REQUIRE(br.ok());
    const auto& seq = set->sequences()[1];
    const auto n = static_cast<int64_t>(seq.size());
    std::vector<float> x(n * dim), normed(n * dim), logits(n * vocab);
    REQUIRE((*br)->embed(seq, x.data()).ok());
    for (int64_t l = 0; l < m->config.n_layers; ++l) REQUIRE((*br)->forward_layer(l, x.data(), n, nullptr).ok());
    (*br)->final_norm(x.data(), n, normed.data());
    (*br)->head(normed.data(), n, logits.data());
    double max_diff = 0;
    for (size_t i = 0; i < logits.size(); ++i) max_diff = std::max(max_diff, std::fabs(double(logits[i]) - ref[1][i]));
    CHECK(max_diff <= 1e-5);
    CHECK(!(*br)->forward_layer(m->config.n_layers, x.data(), n, nullptr).ok());
    CHECK(!(*br)->forward_layer(0, x.data(), 301, nullptr).ok());
  }

  SECTION("Sequential: advancing every block then the head's inputs") {
    auto seq = set->sequential(*m, 1);
    REQUIRE(seq.ok());
    CHECK(!(*seq)->collect(1, {}).ok());  // out of order
    CHECK(!(*seq)->collect_head({}).ok());
    for (int64_t l = 0; l < m->config.n_layers; ++l) {
      auto stats = (*seq)->collect(l, {});
      REQUIRE(stats.ok());
      CHECK(stats->size() == 7);
      REQUIRE((*seq)->advance(l).ok());
    }
    // Every token's head input: all of them as evenly spaced samples.
    StatsRequest req;
    req.max_samples = set->tokens();
    auto head = (*seq)->collect_head(req);
    REQUIRE(head.ok());
    REQUIRE(head->count("token_embd.weight") == 1);  // tied classifier
    const LinearInputStats& h = *head->at("token_embd.weight");
    REQUIRE(h.n_samples == set->tokens());
    std::vector<float> logits(h.n_samples * vocab);
    kernels::matmul(m->get("token_embd.weight"), h.samples.data(), h.n_samples, logits.data());
    double max_diff = 0;
    for (int64_t s = 0, row = 0; s < 3; ++s)
      for (int64_t t = 0; t < 300; ++t, ++row)
        for (int64_t v = 0; v < vocab; ++v)
          max_diff = std::max(max_diff, std::fabs(double(logits[row * vocab + v]) - ref[s][t * vocab + v]));
    CHECK(max_diff <= 1e-5);
  }
}

TEST_CASE("calibration: Σ x xᵀ equals a brute-force double sum of the captured inputs", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  auto set = stories_calib(*m, 5, 200);  // 1000 tokens: two f32 partial sums and a tail
  StatsRequest req;
  req.xtx = true;
  req.max_samples = set->tokens();
  auto all = set->collect_all(*m, req, 1);
  REQUIRE(all.ok());
  for (const std::string& name : linear_names(*m)) CHECK(all->count(name) == 1);
  CHECK(all->count("token_embd.weight") == 1);
  CHECK(all->at("blk.2.attn_q.weight") == all->at("blk.2.attn_v.weight"));
  CHECK(all->at("blk.2.ffn_gate.weight") == all->at("blk.2.ffn_up.weight"));
  CHECK(all->at("blk.2.ffn_gate.weight") != all->at("blk.2.ffn_down.weight"));

  // The layer-1 FFN-down input captured independently through the block runner's observer.
  std::vector<float> captured;
  {
    auto br = BlockRunner::create(*m, 200, 1);
    REQUIRE(br.ok());
    LinearObserver obs = [&](const LinearInput& in) {
      if (in.weights[0]->name == "blk.1.ffn_down.weight")
        captured.insert(captured.end(), in.x, in.x + in.n * in.weights[0]->cols());
    };
    std::vector<float> x(200 * m->config.dim);
    for (const auto& seq : set->sequences()) {
      REQUIRE((*br)->embed(seq, x.data()).ok());
      for (int64_t l = 0; l < 2; ++l) REQUIRE((*br)->forward_layer(l, x.data(), 200, &obs).ok());
    }
  }
  const LinearInputStats& down = *all->at("blk.1.ffn_down.weight");
  REQUIRE(down.cols == 172);
  REQUIRE(down.tokens == 1000);
  REQUIRE(captured.size() == size_t(1000 * 172));
  CHECK(std::memcmp(down.samples.data(), captured.data(), captured.size() * sizeof(float)) == 0);

  for (const char* name :
       {"blk.1.ffn_down.weight", "blk.3.attn_k.weight", "blk.0.attn_output.weight", "token_embd.weight"}) {
    INFO(name);
    const LinearInputStats& s = *all->at(name);
    const int64_t cols = s.cols;
    REQUIRE(s.n_samples == s.tokens);
    REQUIRE(s.xtx.size() == size_t(cols * cols));
    double worst = 0;
    int64_t asymmetric = 0, diag_mismatch = 0;
    for (int64_t i = 0; i < cols; ++i) {
      diag_mismatch += s.sq_sum[i] != s.xtx[i * cols + i];
      for (int64_t j = 0; j < cols; ++j) {
        double ref = 0;
        for (int64_t t = 0; t < s.n_samples; ++t)
          ref += double(s.samples[t * cols + i]) * double(s.samples[t * cols + j]);
        // f32 partial sums over 512 tokens: relative to the Cauchy-Schwarz bound of the element.
        const double bound = std::sqrt(s.sq_sum[i] * s.sq_sum[j]) + 1e-30;
        worst = std::max(worst, std::fabs(s.xtx[i * cols + j] - ref) / bound);
        asymmetric += s.xtx[i * cols + j] != s.xtx[j * cols + i];
      }
    }
    CHECK(worst < 1e-5);
    CHECK(asymmetric == 0);
    CHECK(diag_mismatch == 0);
  }
}

TEST_CASE("calibration: stats are identical on 1 and 2 threads and sequential equals one forward", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  auto set = stories_calib(*m, 2, 300);  // 600 tokens: chunks of 256 and 44, f32 sums of 512 and 88
  StatsRequest req;
  req.xtx = true;
  req.max_samples = 100;  // evenly spaced subset
  auto one = set->collect_all(*m, req, 1);
  auto two = set->collect_all(*m, req, 2);
  REQUIRE(one.ok());
  REQUIRE(two.ok());
  REQUIRE(one->size() == two->size());
  for (const auto& [name, s] : *one) {
    INFO(name);
    CHECK(s->n_samples == 100);
    require_identical(*s, *two->at(name));
  }
  auto seq = set->sequential(*m, 1);
  REQUIRE(seq.ok());
  for (int64_t l = 0; l < m->config.n_layers; ++l) {
    auto stats = (*seq)->collect(l, req);
    REQUIRE(stats.ok());
    for (const auto& [name, s] : *stats) {
      INFO(name);
      require_identical(*s, *one->at(name));
    }
    REQUIRE((*seq)->advance(l).ok());
  }
  auto head = (*seq)->collect_head(req);
  REQUIRE(head.ok());
  require_identical(*head->at("token_embd.weight"), *one->at("token_embd.weight"));
}

TEST_CASE("calibration: Quant weights are captured with exact activations in every kernel activation mode", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  QuantSpec spec;
  spec.bits = 4;
  for (const std::string& name : linear_names(*m)) {
    const Tensor& t = m->get(name);
    const std::vector<float> w = t.to_f32();
    m->replace(Tensor{name, t.shape,
                      std::make_shared<const Encoding>(
                          Encoding{quantize_rtn(spec, w, t.rows(), t.cols(), {}, ScaleSearch{}, nullptr)})});
  }
  auto set = stories_calib(*m, 1, 64);
  StatsRequest req;
  req.xtx = true;
  const auto collect = [&](kernels::QuantActivations mode) {
    const kernels::ScopedQuantActivations scope(mode);
    auto stats = set->collect_all(*m, req, 1);
    REQUIRE(stats.ok());
    CHECK(kernels::quant_activations() == mode);  // the runner restores the caller's mode
    return std::move(stats).value();
  };
  const auto exact = collect(kernels::QuantActivations::kF32);
  for (const auto mode : {kernels::QuantActivations::kInt8x2, kernels::QuantActivations::kInt8}) {
    INFO("mode " << static_cast<int>(mode));
    const auto stats = collect(mode);
    REQUIRE(stats.size() == exact.size());
    for (const auto& [name, s] : exact) {
      INFO(name);
      require_identical(*s, *stats.at(name));
    }
  }
}

TEST_CASE("calibration: tensors replaced between collect and advance are used by advance", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  auto set = stories_calib(*m, 2, 64);
  auto seq = set->sequential(*m, 1);
  REQUIRE(seq.ok());
  REQUIRE((*seq)->collect(0, {}).ok());
  // With both output projections of block 0 zero, the block is the identity: block 1's q input
  // is RMSNorm(embedding) * attn_norm of block 1, computed here in double from the weights.
  for (const char* name : {"blk.0.attn_output.weight", "blk.0.ffn_down.weight"}) {
    const Tensor& t = m->get(name);
    m->replace(make_dense_f32(name, t.shape, std::vector<float>(t.numel(), 0.0f)));
  }
  REQUIRE((*seq)->advance(0).ok());
  auto stats = (*seq)->collect(1, {});
  REQUIRE(stats.ok());
  const LinearInputStats& q = *stats->at("blk.1.attn_q.weight");
  const int64_t dim = m->config.dim;
  const std::vector<float> emb = m->get("token_embd.weight").to_f32();
  const std::vector<float> norm = m->get("blk.1.attn_norm.weight").to_f32();
  std::vector<double> ref(dim, 0.0);
  for (const auto& s : set->sequences())
    for (int32_t id : s) {
      const float* e = &emb[size_t(id) * dim];
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(e[i]) * e[i];
      const double inv = 1.0 / std::sqrt(ss / dim + m->config.norm_eps);
      for (int64_t i = 0; i < dim; ++i) ref[i] += std::pow(e[i] * inv * norm[i], 2);
    }
  for (int64_t i = 0; i < dim; ++i) CHECK(q.sq_sum[i] == Approx(ref[i]).epsilon(1e-4));
}

constexpr BlockStage kCaptureStages[] = {BlockStage::kAttnInput, BlockStage::kOutputInput, BlockStage::kFfnInput,
                                         BlockStage::kDownInput};

TEST_CASE("calibration: staged capture equals collect + advance, with or without the FFN activations kept", "[calib]") {
  auto m = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  auto set = stories_calib(*m, 2, 300);  // chunks of 256 and 44 tokens: attention reads the first chunk's K/V
  StatsRequest req;
  req.xtx = true;
  req.max_samples = 50;
  auto plain = set->sequential(*m, 1);
  REQUIRE(plain.ok());
  std::vector<LayerStats> expected;
  for (int64_t l = 0; l < m->config.n_layers; ++l) {
    auto stats = (*plain)->collect(l, req);
    REQUIRE(stats.ok());
    expected.push_back(*stats);
    REQUIRE((*plain)->advance(l).ok());
  }
  auto head = (*plain)->collect_head(req);
  REQUIRE(head.ok());

  // The activations in memory with and without the FFN's kept, then in the spill file
  // (--calib-ram 0; the budget of in-memory stage activations does not apply there).
  auto spilled = stories_calib(*m, 2, 300, 0, 0);
  REQUIRE(spilled->sequences() == set->sequences());
  for (int variant = 0; variant < 3; ++variant) {
    const int64_t budget = variant == 0 ? CalibrationSet::kStageBudgetFloats : 0;
    INFO("stage budget " << budget << (variant == 2 ? ", spilled" : ""));
    auto seq = (variant == 2 ? spilled : set)->sequential(*m, 2, budget);
    REQUIRE(seq.ok());
    CHECK(!(*seq)->collect_stage(0, BlockStage::kOutputInput, req).ok());  // stages run in order
    CHECK(!(*seq)->collect_stage(0, BlockStage::kFinish, req).ok());
    for (int64_t l = 0; l < m->config.n_layers; ++l) {
      size_t seen = 0;
      for (BlockStage stage : kCaptureStages) {
        auto stats = (*seq)->collect_stage(l, stage, req);
        REQUIRE(stats.ok());
        CHECK(stats->size() == (stage == BlockStage::kAttnInput ? 3u : stage == BlockStage::kFfnInput ? 2u : 1u));
        for (const auto& [name, s] : *stats) {
          INFO(name);
          require_identical(*s, *expected[l].at(name));
          ++seen;
        }
        if (stage == BlockStage::kFfnInput) {
          CHECK(!(*seq)->advance(l).ok());  // a block half through its stages
          CHECK(!(*seq)->collect(l, req).ok());
        }
      }
      CHECK(seen == 7);
      REQUIRE((*seq)->advance(l).ok());
    }
    auto staged_head = (*seq)->collect_head(req);
    REQUIRE(staged_head.ok());
    require_identical(*staged_head->at("token_embd.weight"), *head->at("token_embd.weight"));
  }
}

TEST_CASE("calibration: tensors replaced between stages are used by the later stages", "[calib]") {
  auto m = load_stories();
  auto zeroed = load_stories();
  if (!m.ok() && test::fixture("models/stories260K/stories260K.bin").empty()) return;
  REQUIRE(m.ok());
  REQUIRE(zeroed.ok());
  const auto zero = [](Model& model, const char* name) {
    const Tensor& t = model.get(name);
    model.replace(make_dense_f32(name, t.shape, std::vector<float>(t.numel(), 0.0f)));
  };
  auto set = stories_calib(*m, 2, 64);
  StatsRequest req;
  req.max_samples = 20;
  // Reference: block 0's output projections zero from the start (block 0 is then the identity).
  zero(*zeroed, "blk.0.attn_output.weight");
  zero(*zeroed, "blk.0.ffn_down.weight");
  auto ref = set->sequential(*zeroed, 1);
  REQUIRE(ref.ok());
  auto ref0 = (*ref)->collect(0, req);
  REQUIRE(ref0.ok());
  REQUIRE((*ref)->advance(0).ok());
  auto ref1 = (*ref)->collect(1, req);
  REQUIRE(ref1.ok());
  // Staged: each is replaced only after its own input was captured.
  auto seq = set->sequential(*m, 1);
  REQUIRE(seq.ok());
  for (BlockStage stage : kCaptureStages) {
    auto stats = (*seq)->collect_stage(0, stage, req);
    REQUIRE(stats.ok());
    for (const auto& [name, s] : *stats) {
      INFO(name);
      require_identical(*s, *ref0->at(name));
    }
    if (stage == BlockStage::kOutputInput) zero(*m, "blk.0.attn_output.weight");
    if (stage == BlockStage::kDownInput) zero(*m, "blk.0.ffn_down.weight");
  }
  REQUIRE((*seq)->advance(0).ok());
  auto next = (*seq)->collect(1, req);
  REQUIRE(next.ok());
  REQUIRE(next->size() == 7);
  for (const auto& [name, s] : *next) {
    INFO(name);
    require_identical(*s, *ref1->at(name));
  }
  // Without the replacement the FFN input differs (the test can tell the two apart).
  auto untouched = load_stories();
  REQUIRE(untouched.ok());
  auto plain = set->sequential(*untouched, 1);
  REQUIRE(plain.ok());
  auto plain0 = (*plain)->collect(0, req);
  REQUIRE(plain0.ok());
  CHECK(plain0->at("blk.0.ffn_up.weight")->sq_sum != ref0->at("blk.0.ffn_up.weight")->sq_sum);
}

TEST_CASE("calibration: SmolLM2 sequential capture is thread-independent and matches one forward", "[calib][heavy]") {
  const std::string path = test::smollm2_path();
  if (path.empty()) return;
  auto m = load_model(path);
  REQUIRE(m.ok());
  CalibOptions o;
  o.file = test::fixture("text/tinyshakespeare.txt");
  o.samples = 2;
  o.ctx = 512;
  auto set = CalibrationSet::create(*m, o);
  REQUIRE(set.ok());
  StatsRequest req;
  req.xtx = true;
  req.max_samples = 64;
  std::vector<LayerStats> runs;
  for (int threads : {1, 2}) {
    auto seq = (*set)->sequential(*m, threads);
    REQUIRE(seq.ok());
    LayerStats layer2;
    for (int64_t l = 0; l < 3; ++l) {
      auto stats = (*seq)->collect(l, req);
      REQUIRE(stats.ok());
      if (l == 2) layer2 = *stats;
      REQUIRE((*seq)->advance(l).ok());
    }
    runs.push_back(layer2);
  }
  REQUIRE(runs[0].size() == 7);
  for (const auto& [name, s] : runs[0]) {
    INFO(name);
    require_identical(*s, *runs[1].at(name));
    CHECK(s->tokens == 1024);
    for (double v : s->sq_sum) CHECK((std::isfinite(v) && v > 0));
  }
  CHECK(runs[0].at("blk.2.ffn_down.weight")->cols == 1536);
}
