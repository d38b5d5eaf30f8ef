// Calibration token sequences (a text file or samples from the model) and the capture of every
// linear layer's input statistics, in one forward or block by block (docs/calibration.md).
#include "pipeline/calibration.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/scratch_file.h"
#include "kernels/cpu/kernels.h"
#include "model/tokenizer.h"
#include "pipeline/activation_store.h"
#include "runtime/sampling.h"

namespace llmc {
namespace {

constexpr int64_t kMaxCalibTokens = int64_t{1} << 24;   // samples x ctx; the residual streams scale with it
constexpr int64_t kMaxHiddenFloats = int64_t{1} << 33;  // sequential(): 32 GiB of residual streams
constexpr int64_t kMaxSampleFloats = int64_t{1} << 30;  // max_samples x cols of one input (4 GiB)
// --calib-self: at most this many sequences are decoded together.
constexpr int64_t kSelfSampleMaxBatch = 64;
// Σ x xᵀ: summed in f32 over blocks of kXtxTokens tokens (kernels::gram_upper_accumulate), then
// added to the f64 total. The grouping depends only on the order of tokens, never on the thread count.
constexpr int64_t kXtxTokens = 512;

// Statistics of one linear input, fed chunk by chunk in token order.
class StatsAccumulator {
 public:
  // total_tokens: tokens the input will see (places the evenly spaced samples).
  StatsAccumulator(int64_t cols, const StatsRequest& request, int64_t total_tokens, int threads)
      : want_xtx_(request.xtx), total_tokens_(total_tokens), threads_(threads) {
    s_.cols = cols;
    s_.sq_sum.assign(static_cast<size_t>(cols), 0.0);
    max_samples_ = std::min(request.max_samples, total_tokens);
    if (max_samples_ > 0) s_.samples.resize(static_cast<size_t>(max_samples_ * cols));
    if (want_xtx_) {
      s_.xtx.assign(static_cast<size_t>(cols * cols), 0.0);
      pending_.resize(static_cast<size_t>(kXtxTokens * cols));
    }
  }

  // x: [n, cols]
  void add(const float* x, int64_t n) {
    const int64_t cols = s_.cols;
    for (int64_t t = 0; t < n; ++t) {
      const float* row = x + t * cols;
      for (int64_t c = 0; c < cols; ++c) s_.sq_sum[c] += static_cast<double>(row[c]) * row[c];
      // Sample k is token floor(k * total / max_samples): evenly spaced, k strictly increasing.
      const int64_t g = s_.tokens + t;
      if (s_.n_samples < max_samples_ && s_.n_samples * total_tokens_ / max_samples_ == g) {
        std::memcpy(&s_.samples[s_.n_samples * cols], row, sizeof(float) * cols);
        ++s_.n_samples;
      }
    }
    s_.tokens += n;
    if (!want_xtx_) return;
    for (int64_t t = 0; t < n;) {
      const int64_t m = std::min(n - t, kXtxTokens - n_pending_);
      std::memcpy(&pending_[n_pending_ * cols], x + t * cols, sizeof(float) * m * cols);
      n_pending_ += m;
      t += m;
      if (n_pending_ == kXtxTokens) flush();
    }
  }

  std::shared_ptr<const LinearInputStats> finish() {
    const int64_t cols = s_.cols;
    if (want_xtx_) {
      flush();
      // Only tiles on and above the diagonal are summed; the diagonal is the f64 sum of squares.
      for (int64_t i = 0; i < cols; ++i) {
        for (int64_t j = 0; j < i; ++j) s_.xtx[i * cols + j] = s_.xtx[j * cols + i];
        s_.xtx[i * cols + i] = s_.sq_sum[i];
      }
    }
    s_.samples.resize(static_cast<size_t>(s_.n_samples * cols));
    pending_ = {};
    return std::make_shared<const LinearInputStats>(std::move(s_));
  }

 private:
  // Adds Σ over the pending tokens of x xᵀ (upper triangle) to the f64 total.
  void flush() {
    kernels::set_num_threads(threads_);
    kernels::gram_upper_accumulate(pending_.data(), n_pending_, s_.cols, s_.xtx.data());
    n_pending_ = 0;
  }

  LinearInputStats s_;
  bool want_xtx_;
  int64_t total_tokens_;
  int threads_;
  int64_t max_samples_ = 0;
  std::vector<float> pending_;  // [kXtxTokens, cols] inputs not yet in xtx
  int64_t n_pending_ = 0;
};

// Observer that routes each linear input to the accumulator of its input site (keyed by the first
// tensor reading it), so q/k/v and gate/up share one object.
class StatsCollector {
 public:
  StatsCollector(const StatsRequest& request, int64_t total_tokens, int threads)
      : request_(request), total_tokens_(total_tokens), threads_(threads > 0 ? threads : omp_get_max_threads()) {}

  LinearObserver observer() {
    return [this](const LinearInput& in) { add(in); };
  }
  void add(const LinearInput& in) {
    const Tensor& first = *in.weights.front();
    auto it = sites_.find(first.name);
    if (it == sites_.end()) {
      Site site{std::make_unique<StatsAccumulator>(first.cols(), request_, total_tokens_, threads_), {}};
      for (const Tensor* w : in.weights) site.names.push_back(w->name);
      it = sites_.emplace(first.name, std::move(site)).first;
    }
    it->second.acc->add(in.x, in.n);
  }

  LayerStats finish() {
    LayerStats out;
    for (auto& [key, site] : sites_) {
      auto stats = site.acc->finish();
      for (const std::string& name : site.names) out[name] = stats;
    }
    sites_.clear();
    return out;
  }

 private:
  struct Site {
    std::unique_ptr<StatsAccumulator> acc;
    std::vector<std::string> names;
  };
  StatsRequest request_;
  int64_t total_tokens_;
  int threads_;
  std::map<std::string, Site> sites_;
};

Result<void> check_request(const StatsRequest& request, const Model& model) {
  if (request.max_samples < 0)
    return make_error(ErrorCode::kInvalidArgument, "calibration: max_samples must be >= 0, got ", request.max_samples);
  const int64_t widest =
      std::max({model.config.dim, model.config.hidden_dim, model.config.n_heads * model.config.head_dim});
  if (request.max_samples > kMaxSampleFloats / std::max<int64_t>(1, widest))
    return make_error(ErrorCode::kInvalidArgument, "calibration: max_samples ", request.max_samples, " rows of up to ",
                      widest, " floats is too large");
  return {};
}

int64_t longest(const std::vector<std::vector<int32_t>>& seqs) {
  size_t n = 1;
  for (const auto& s : seqs) n = std::max(n, s.size());
  return static_cast<int64_t>(n);
}

class SequentialImpl final : public CalibrationSet::Sequential {
 public:
  SequentialImpl(const Model& model, const CalibrationSet& set, std::unique_ptr<BlockRunner> runner, int threads,
                 int64_t stage_budget_floats)
      : model_(model),
        set_(set),
        runner_(std::move(runner)),
        threads_(threads),
        stage_budget_floats_(stage_budget_floats) {}

  Result<void> init() {
    const int64_t dim = model_.config.dim;
    LLMC_ASSIGN_OR_RETURN(hidden_, make_store(dim, set_.tokens() * dim * 4 > set_.options().ram_bytes));
    for (size_t i = 0; i < hidden_->size(); ++i) {
      float* h = hidden_->slot(i, hbuf_);
      LLMC_TRY(runner_->embed(set_.sequences()[i], h));
      LLMC_TRY(hidden_->save(i, h));
    }
    runner_->release_embedding_pages();  // mapped weights (input, scratch file) resident one block at a time
    scratch_.resize(static_cast<size_t>(longest(set_.sequences()) * dim));
    return {};
  }

  Result<LayerStats> collect(int64_t layer, const StatsRequest& request) override {
    LLMC_TRY(check_order("collect", layer));
    LLMC_TRY(check_stage("collect", BlockStage::kAttnInput));
    LLMC_TRY(check_request(request, model_));
    StatsCollector collector(request, set_.tokens(), threads_);
    const LinearObserver observer = collector.observer();
    for (size_t i = 0; i < hidden_->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(const float* h, hidden_->load(i, hbuf_));
      std::copy(h, h + hidden_->floats(i), scratch_.begin());
      LLMC_TRY(runner_->forward_layer(layer, scratch_.data(), length(i), &observer, true));
    }
    return collector.finish();
  }

  Result<LayerStats> collect_stage(int64_t layer, BlockStage stage, const StatsRequest& request) override {
    LLMC_TRY(check_order("collect_stage", layer));
    if (stage == BlockStage::kFinish)
      return make_error(ErrorCode::kInvalidArgument, "calibration: kFinish is advance()'s stage, not a capture");
    LLMC_TRY(check_stage("collect_stage", stage));
    LLMC_TRY(check_request(request, model_));
    if (!act_) LLMC_TRY(allocate_act());
    StatsCollector collector(request, set_.tokens(), threads_);
    const LinearObserver observer = collector.observer();
    // Which of x and act each stage reads and writes (BlockStage).
    const bool reads_act = stage == BlockStage::kFfnInput;
    const bool writes_act = stage == BlockStage::kOutputInput || (stage == BlockStage::kDownInput && keep_ffn_act_);
    const bool writes_x = stage == BlockStage::kFfnInput;
    for (size_t i = 0; i < hidden_->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(float* h, hidden_->load(i, hbuf_));
      float* act = nullptr;
      if (reads_act) {
        LLMC_ASSIGN_OR_RETURN(act, act_->load(i, abuf_));
      } else if (writes_act) {
        act = act_->slot(i, abuf_);
      }
      LLMC_TRY(runner_->forward_stage(layer, stage, h, act, length(i), &observer));
      if (writes_act) LLMC_TRY(act_->save(i, act));
      if (writes_x) LLMC_TRY(hidden_->save(i, h));
    }
    next_stage_ = static_cast<BlockStage>(static_cast<int>(stage) + 1);
    return collector.finish();
  }

  Result<void> advance(int64_t layer) override {
    LLMC_TRY(check_order("advance", layer));
    if (next_stage_ != BlockStage::kAttnInput && next_stage_ != BlockStage::kFinish)
      return make_error(ErrorCode::kInvalidArgument, "calibration: advance(", layer, ") half-way through its stages");
    for (size_t i = 0; i < hidden_->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(float* h, hidden_->load(i, hbuf_));
      if (next_stage_ == BlockStage::kFinish) {
        float* act = nullptr;
        if (keep_ffn_act_) {
          LLMC_ASSIGN_OR_RETURN(act, act_->load(i, abuf_));
        }
        LLMC_TRY(runner_->forward_stage(layer, BlockStage::kFinish, h, act, length(i), nullptr));
      } else {
        LLMC_TRY(runner_->forward_layer(layer, h, length(i), nullptr));
      }
      LLMC_TRY(hidden_->save(i, h));
    }
    runner_->release_layer_pages(layer);
    next_stage_ = BlockStage::kAttnInput;
    ++next_layer_;
    return {};
  }

  Result<LayerStats> collect_head(const StatsRequest& request) override {
    if (next_layer_ != model_.config.n_layers)
      return make_error(ErrorCode::kInvalidArgument, "calibration: collect_head after advancing ", next_layer_, " of ",
                        model_.config.n_layers, " layers");
    LLMC_TRY(check_request(request, model_));
    StatsCollector collector(request, set_.tokens(), threads_);
    const Tensor* head[] = {&runner_->head_weight()};
    for (size_t i = 0; i < hidden_->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(const float* h, hidden_->load(i, hbuf_));
      runner_->final_norm(h, length(i), scratch_.data());
      collector.add(LinearInput{head, scratch_.data(), length(i)});
    }
    return collector.finish();
  }

 private:
  int64_t length(size_t i) const { return static_cast<int64_t>(set_.sequences()[i].size()); }
  Result<void> check_order(const char* what, int64_t layer) const {
    if (layer != next_layer_)
      return make_error(ErrorCode::kInvalidArgument, "calibration: ", what, "(", layer, ") out of order; the next ",
                        "block to calibrate is ", next_layer_, " of ", model_.config.n_layers);
    return {};
  }

  Result<void> check_stage(const char* what, BlockStage expected) const {
    if (next_stage_ != expected)
      return make_error(ErrorCode::kInvalidArgument, "calibration: ", what, " at stage ", static_cast<int>(expected),
                        " of block ", next_layer_, ", but its next stage is ", static_cast<int>(next_stage_));
    return {};
  }

  // Per sequence `width` floats per token, in memory or in the spill file.
  Result<std::unique_ptr<ActivationStore>> make_store(int64_t width, bool spill) {
    std::vector<int64_t> floats;
    for (size_t i = 0; i < set_.sequences().size(); ++i) floats.push_back(length(i) * width);
    if (!spill) return ActivationStore::create(floats, "");
    const CalibOptions& o = set_.options();
    const std::string dir = temp_dir();
    LLMC_ASSIGN_OR_RETURN(auto store, ActivationStore::create(floats, dir));
    log_info("calibration: ", static_cast<double>(set_.tokens() * width * 4) / (1 << 20),
             " MiB of activations beyond --calib-ram ", o.ram_bytes >> 20, " MiB go to a temporary file in ", dir);
    return store;
  }

  // act_: per sequence, the widest activations kept between stages (see sequential()); in the
  // spill file the FFN activations are always kept.
  Result<void> allocate_act() {
    const ModelConfig& c = model_.config;
    int64_t q_dim = 0, hidden = 0;
    for (int64_t l = 0; l < c.n_layers; ++l) {
      q_dim = std::max(q_dim, c.heads(l) * c.head_dim);
      hidden = std::max(hidden, c.hidden(l));
    }
    const int64_t widest = std::max(q_dim, hidden);
    const int64_t hidden_bytes = hidden_->spilled() ? 0 : set_.tokens() * c.dim * 4;
    const bool spill = hidden_bytes + set_.tokens() * widest * 4 > set_.options().ram_bytes;
    keep_ffn_act_ = spill || set_.tokens() * widest <= stage_budget_floats_;
    LLMC_ASSIGN_OR_RETURN(act_, make_store(keep_ffn_act_ ? widest : q_dim, spill));
    return {};
  }

  const Model& model_;
  const CalibrationSet& set_;
  std::unique_ptr<BlockRunner> runner_;
  int threads_;
  int64_t stage_budget_floats_;
  int64_t next_layer_ = 0;
  BlockStage next_stage_ = BlockStage::kAttnInput;
  bool keep_ffn_act_ = false;
  std::unique_ptr<ActivationStore> act_;     // per sequence, collect_stage's activations
  std::unique_ptr<ActivationStore> hidden_;  // per sequence [length, dim]: input of block next_layer_
  std::vector<float> hbuf_, abuf_;           // one sequence's hidden / act when spilled
  std::vector<float> scratch_;               // [longest, dim]
};

// The sampler seed of self-sampled sequence i: each sequence has its own generator, so a sequence
// depends only on the seed and its index, never on how many are decoded together.
uint64_t sequence_seed(uint64_t seed, int64_t i) { return seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1); }

// N sequences of ctx tokens sampled at temperature 1 from BOS; after an EOS the next token is BOS
// (a new document in the same window). Sequences are decoded in lockstep batches (one matmul per
// linear layer per step) sized so that their KV caches stay within --calib-ram (at least one
// sequence); the sequences do not depend on the batch (forward_batch is bit-exact per sequence).
Result<std::vector<std::vector<int32_t>>> sample_from_model(const Model& model, const CalibOptions& o, int32_t bos,
                                                            int32_t eos) {
  const ModelConfig& c = model.config;
  const double cache_bytes_per_sequence =
      2.0 * 4.0 * static_cast<double>(c.n_layers * o.ctx * c.n_kv_heads * c.head_dim);
  const int64_t batch =
      std::clamp<int64_t>(static_cast<int64_t>(static_cast<double>(o.ram_bytes) / cache_bytes_per_sequence), 1,
                          std::min(o.self_samples, kSelfSampleMaxBatch));
  std::vector<std::vector<int32_t>> out;
  std::vector<float> logits;
  for (int64_t first = 0; first < o.self_samples; first += batch) {
    const int64_t b = std::min(batch, o.self_samples - first);
    RuntimeOptions ro;
    ro.threads = o.threads;
    ro.max_context = o.ctx;
    ro.sequences = b;
    ro.release_weight_pages = true;  // one block of a mapped input resident, not the file
    LLMC_ASSIGN_OR_RETURN(auto runtime, Runtime::create(model, ro));
    std::vector<Sampler> samplers;
    std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(b), std::vector<int32_t>{bos});
    for (int64_t s = 0; s < b; ++s) {
      SamplingOptions so;
      so.temperature = 1.0f;
      so.seed = sequence_seed(o.seed, first + s);
      samplers.emplace_back(so);
    }
    logits.resize(static_cast<size_t>(b * c.vocab_size));
    std::vector<int32_t> last(static_cast<size_t>(b));
    for (int64_t pos = 0; pos + 1 < o.ctx; ++pos) {
      for (int64_t s = 0; s < b; ++s) last[s] = seqs[s].back();
      LLMC_TRY(runtime->forward_batch(last, pos, logits.data()));
      for (int64_t s = 0; s < b; ++s) {
        const int32_t next = samplers[s].sample({logits.data() + s * c.vocab_size, static_cast<size_t>(c.vocab_size)});
        seqs[s].push_back(last[s] == eos && eos >= 0 ? bos : next);
      }
    }
    for (auto& seq : seqs) out.push_back(std::move(seq));
    report_progress("calibration sampling", first + b, o.self_samples, "sequences");
  }
  return out;
}

// `samples` non-overlapping windows of `window` tokens from `tokens`: window i starts at
// i * window + r_i with r sorted uniform draws in [0, slack], so every arrangement is possible and
// the choice depends only on the seed.
std::vector<std::vector<int32_t>> pick_windows(const std::vector<int32_t>& tokens, int64_t samples, int64_t window,
                                               int32_t bos, uint64_t seed) {
  const uint64_t slack = tokens.size() - static_cast<uint64_t>(samples * window);
  Rng rng(seed);
  std::vector<uint64_t> r(static_cast<size_t>(samples));
  for (auto& v : r) {
    const uint64_t draw = (static_cast<uint64_t>(rng.next_u32()) << 32) | rng.next_u32();
    v = draw % (slack + 1);
  }
  std::sort(r.begin(), r.end());
  std::vector<std::vector<int32_t>> out;
  for (int64_t i = 0; i < samples; ++i) {
    std::vector<int32_t> seq;
    if (bos >= 0) seq.push_back(bos);
    const auto begin = tokens.begin() + static_cast<std::ptrdiff_t>(static_cast<uint64_t>(i * window) + r[i]);
    seq.insert(seq.end(), begin, begin + window);
    out.push_back(std::move(seq));
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<CalibrationSet>> CalibrationSet::create(const Model& model, const CalibOptions& options) {
  const CalibOptions& o = options;
  const bool self = o.self_samples > 0;
  if (o.self_samples < 0)
    return make_error(ErrorCode::kInvalidArgument, "calibration: --calib-self must be >= 1, got ", o.self_samples);
  if (self && !o.file.empty())
    return make_error(ErrorCode::kInvalidArgument, "calibration: --calib and --calib-self are exclusive");
  if (!self && o.file.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "calibration: this needs calibration data (--calib FILE or --calib-self N)");
  const int64_t samples = self ? o.self_samples : o.samples;
  if (samples < 1)
    return make_error(ErrorCode::kInvalidArgument, "calibration: --calib-samples must be >= 1, got ", samples);
  if (o.ctx < 2) return make_error(ErrorCode::kInvalidArgument, "calibration: --calib-ctx must be >= 2, got ", o.ctx);
  if (o.threads < 0) return make_error(ErrorCode::kInvalidArgument, "calibration: threads must be >= 0");
  if (o.ram_bytes < 0)
    return make_error(ErrorCode::kInvalidArgument, "calibration: --calib-ram must be >= 0, got ", o.ram_bytes);
  if (samples > kMaxCalibTokens / o.ctx)
    return make_error(ErrorCode::kInvalidArgument, "calibration: ", samples, " x ", o.ctx,
                      " tokens exceed the limit of ", kMaxCalibTokens);
  if (model.config.context_length > 0 && o.ctx > model.config.context_length)
    return make_error(ErrorCode::kInvalidArgument, "calibration: --calib-ctx ", o.ctx,
                      " exceeds the model's context length ", model.config.context_length);
  if (model.tokenizer.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "calibration: the model has no tokenizer (give one with --tokenizer) to ",
                      self ? "start sampled sequences" : str_cat("tokenize ", o.file));
  LLMC_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::create(model.tokenizer));
  const bool add_bos = model.tokenizer.add_bos && tokenizer->bos() >= 0;

  std::unique_ptr<CalibrationSet> set(new CalibrationSet());
  set->options_ = o;
  if (self) {
    if (tokenizer->bos() < 0 || tokenizer->bos() >= model.config.vocab_size)
      return make_error(ErrorCode::kInvalidArgument, "calibration: --calib-self starts from BOS, which the model's ",
                        "tokenizer does not define");
    LLMC_ASSIGN_OR_RETURN(set->sequences_, sample_from_model(model, o, tokenizer->bos(), tokenizer->eos()));
  } else {
    LLMC_ASSIGN_OR_RETURN(const std::string text, read_text_file(o.file));
    const std::vector<int32_t> tokens = tokenizer->encode(text, false);
    const int64_t window = o.ctx - (add_bos ? 1 : 0);
    const int64_t need = samples * window;
    if (static_cast<int64_t>(tokens.size()) < need)
      return make_error(ErrorCode::kInvalidArgument, "calibration file ", o.file, " is too short: it has ",
                        tokens.size(), " tokens, and ", samples, " samples x ", o.ctx, " ctx need ", need,
                        add_bos ? " (plus a BOS each)" : "",
                        "; lower --calib-samples or --calib-ctx, or give a longer file");
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] < 0 || tokens[i] >= model.config.vocab_size)
        return make_error(ErrorCode::kInvalidArgument, "calibration: ", o.file, " token ", i, " has id ", tokens[i],
                          ", outside the model's vocabulary of ", model.config.vocab_size);
    set->sequences_ = pick_windows(tokens, samples, window, add_bos ? tokenizer->bos() : -1, o.seed);
    log_info("calibration: ", samples, " x ", o.ctx, " tokens from ", o.file, " (", tokens.size(), " tokens)");
  }
  return set;
}

int64_t CalibrationSet::tokens() const {
  int64_t n = 0;
  for (const auto& s : sequences_) n += static_cast<int64_t>(s.size());
  return n;
}

Result<LayerStats> CalibrationSet::collect_all(const Model& model, const StatsRequest& request, int threads) {
  LLMC_TRY(check_request(request, model));
  LLMC_ASSIGN_OR_RETURN(auto runner, BlockRunner::create(model, longest(sequences_), threads));
  StatsCollector collector(request, tokens(), threads);
  const LinearObserver observer = collector.observer();
  const int64_t dim = model.config.dim;
  std::vector<float> x(static_cast<size_t>(longest(sequences_) * dim)), normed(x.size());
  const Tensor* head[] = {&runner->head_weight()};
  for (size_t i = 0; i < sequences_.size(); ++i) {
    const auto n = static_cast<int64_t>(sequences_[i].size());
    LLMC_TRY(runner->embed(sequences_[i], x.data()));
    // One block's mapped weights resident at a time (the model may be a mapped file).
    for (int64_t l = 0; l < model.config.n_layers; ++l) {
      LLMC_TRY(runner->forward_layer(l, x.data(), n, &observer));
      runner->release_layer_pages(l);
    }
    runner->final_norm(x.data(), n, normed.data());
    collector.add(LinearInput{head, normed.data(), n});
    runner->release_embedding_pages();
    report_progress("calibration forward", static_cast<int64_t>(i) + 1, static_cast<int64_t>(sequences_.size()),
                    "sequences");
  }
  return collector.finish();
}

Result<void> CalibrationSet::Sequential::collect_stages(int64_t layer, const StatsRequest& request,
                                                        const std::function<Result<void>(LayerStats&)>& use) {
  for (BlockStage stage :
       {BlockStage::kAttnInput, BlockStage::kOutputInput, BlockStage::kFfnInput, BlockStage::kDownInput}) {
    LLMC_ASSIGN_OR_RETURN(LayerStats stats, collect_stage(layer, stage, request));
    LLMC_TRY(use(stats));
  }
  return {};
}

Result<std::unique_ptr<CalibrationSet::Sequential>> CalibrationSet::sequential(const Model& model, int threads,
                                                                               int64_t stage_budget_floats) {
  if (tokens() > kMaxHiddenFloats / std::max<int64_t>(1, model.config.dim))
    return make_error(ErrorCode::kInvalidArgument, "calibration: the residual streams of ", tokens(), " tokens x ",
                      model.config.dim, " floats exceed ", kMaxHiddenFloats * 4 >> 30,
                      " GiB; lower --calib-samples or --calib-ctx");
  LLMC_ASSIGN_OR_RETURN(auto runner, BlockRunner::create(model, longest(sequences_), threads));
  auto seq = std::make_unique<SequentialImpl>(model, *this, std::move(runner), threads, stage_budget_floats);
  LLMC_TRY(seq->init());
  return std::unique_ptr<Sequential>(std::move(seq));
}

}  // namespace llmc
