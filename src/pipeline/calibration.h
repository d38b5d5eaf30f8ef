// Calibration data shared by every calibration-based pass: token sequences from a text file or
// sampled from the model itself, and block-by-block capture of each linear layer's inputs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model.h"
#include "runtime/runtime.h"

namespace llmc {

struct CalibOptions {
  std::string file;          // text file, tokenized with the model's tokenizer
  int64_t self_samples = 0;  // > 0: sample this many sequences from the model at temperature 1 instead
  int64_t samples = 128;     // sequences
  int64_t ctx = 512;         // tokens per sequence (BOS first when the tokenizer adds one)
  uint64_t seed = 0;
  int threads = 0;  // for --calib-self sampling (0 = all cores); the sequences do not depend on it
  // Sequential capture (not part of the recipe; results do not depend on it): the residual
  // streams and stage activations stay in memory up to ram_bytes, the rest goes to an unlinked
  // temporary file in $TMPDIR, else /tmp.
  static constexpr int64_t kDefaultRamBytes = int64_t{64} << 20;
  int64_t ram_bytes = kDefaultRamBytes;
};

// Statistics of the input x [cols] of one linear layer over all calibration tokens. Layers that
// read the same input (q/k/v, gate/up) share one object.
struct LinearInputStats {
  int64_t cols = 0;
  int64_t tokens = 0;
  std::vector<double> sq_sum;  // [cols] Σ x_c²  (importance / imatrix, Wanda norms)
  std::vector<double> xtx;     // [cols, cols] Σ x xᵀ, row-major; empty unless requested (GPTQ Hessian)
  std::vector<float> samples;  // [n_samples, cols] a deterministic subset of inputs, unless 0 requested
  int64_t n_samples = 0;
};

struct StatsRequest {
  bool xtx = false;
  int64_t max_samples = 0;  // rows of x kept in LinearInputStats::samples (evenly spaced tokens)
};

// Linear input statistics keyed by tensor name ("blk.3.attn_q.weight").
using LayerStats = std::map<std::string, std::shared_ptr<const LinearInputStats>>;

// Token sequences for calibration; deterministic for a given model, options and seed.
class CalibrationSet {
 public:
  // Errors: no tokenizer (kInvalidArgument), file too short for samples x ctx tokens (the error
  // says how many tokens it has and how many are needed; a shorter file is never silently used).
  static Result<std::unique_ptr<CalibrationSet>> create(const Model& model, const CalibOptions& options);

  const CalibOptions& options() const { return options_; }
  const std::vector<std::vector<int32_t>>& sequences() const { return sequences_; }
  int64_t tokens() const;

  // Statistics of every linear input of the model as it is now (one forward over all sequences).
  Result<LayerStats> collect_all(const Model& model, const StatsRequest& request, int threads);

  // Sequential, block-by-block capture for passes that change layer l before layer l+1 is
  // calibrated (GPTQ, AWQ, SparseGPT): keeps every sequence's residual stream [tokens, dim].
  class Sequential {
   public:
    virtual ~Sequential() = default;
    // Statistics of the linear inputs of block `layer` given the current hidden states (which
    // already went through the model's blocks < layer as they were when advanced).
    virtual Result<LayerStats> collect(int64_t layer, const StatsRequest& request) = 0;
    // True-sequential capture (instead of collect): statistics of one group of block `layer`'s
    // linears, stages kAttnInput..kDownInput in order, each computed with the block's tensors as
    // they are when it runs, so the groups of earlier stages may already be replaced. One forward
    // of the block in all (collect + advance: two).
    virtual Result<LayerStats> collect_stage(int64_t layer, BlockStage stage, const StatsRequest& request) = 0;
    // The four collect_stage calls of block `layer` in order; `use` gets each stage's statistics
    // (its own: it may drop parts it is done with) and may replace the tensors they describe
    // before the next stage runs.
    Result<void> collect_stages(int64_t layer, const StatsRequest& request,
                                const std::function<Result<void>(LayerStats&)>& use);
    // Runs block `layer` with its current weights on the hidden states, making them the input of
    // block layer + 1. Call once per layer, in order, after collect(layer) or all four
    // collect_stage(layer, ...) calls (it then only finishes the block) and the pass's edits.
    virtual Result<void> advance(int64_t layer) = 0;
    // Statistics of the output head's input (final norm of the hidden states after all blocks).
    virtual Result<LayerStats> collect_head(const StatsRequest& request) = 0;
  };
  // The model and this set must outlive the returned object; tensors replaced in the model
  // (Model::replace) are seen by later collect/advance calls. Activations: tokens() x dim floats,
  // plus for collect_stage tokens() x max(q_dim, hidden) floats, each in memory while the total
  // in memory stays within options().ram_bytes, else in the spill file. In-memory stage
  // activations above stage_budget_floats are cut to tokens() x q_dim (ffn_down's input is then
  // computed twice).
  static constexpr int64_t kStageBudgetFloats = int64_t{1} << 28;  // 1 GiB
  Result<std::unique_ptr<Sequential>> sequential(const Model& model, int threads,
                                                 int64_t stage_budget_floats = kStageBudgetFloats);

 private:
  CalibrationSet() = default;
  CalibOptions options_;
  std::vector<std::vector<int32_t>> sequences_;
};

}  // namespace llmc
