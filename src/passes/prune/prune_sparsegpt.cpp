// prune.sparsegpt: Hessian-based pruning with reconstruction, block by block
// over the layers (calibration-based).
#include <chrono>
#include <cmath>

#include "model/arch.h"
#include "passes/prune/prune_common.h"
#include "passes/prune/prune_passes.h"
#include "passes/prune/sparsegpt_math.h"
#include "pipeline/calibration.h"

namespace llmc {
namespace {

class PruneSparseGpt final : public Pass {
 public:
  std::string_view name() const override { return "prune.sparsegpt"; }
  PassNeeds needs() const override { return {.calibration = true}; }
  void visit(OptionVisitor& v) override {
    options_.visit(v);
    v.option("damp", sgpt_.damp, "Fraction of mean(diag H) added to the Hessian's diagonal");
    v.option("block_size", sgpt_.block_size, "Columns per lazy-batch update");
  }
  Result<void> validate_options() const override {
    auto s = options_.spec();
    if (!s.ok()) return s.error();
    if (!s->nm && s->granularity == PruneGranularity::kGlobal)
      return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt supports row and tensor granularity, not global");
    if (!(sgpt_.damp > 0.0) || sgpt_.block_size < 1)
      return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt: damp must be > 0 and block_size >= 1");
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_TRY(validate_options());
    const PruneSpec spec = *options_.spec();
    if (!ctx.calib) return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt needs calibration data");
    LLMC_TRY(ctx.selector.compile());
    const std::vector<std::string> targets = prune_targets(model, ctx.selector);
    PassReport report;
    report.pass = std::string(name());
    auto prune_one = [&](const std::string& name, const LayerStats& stats) -> Result<void> {
      const Tensor& t = model.get(name);
      const auto it = stats.find(name);
      if (it == stats.end() || !it->second || it->second->cols != t.cols() ||
          it->second->xtx.size() != static_cast<size_t>(t.cols() * t.cols()))
        return make_error(ErrorCode::kInternal, "prune.sparsegpt: no input Hessian for '", name, "'");
      std::vector<float> w = t.to_f32();
      std::vector<uint8_t> keep;
      if (auto r = sparsegpt_prune(w, t.rows(), t.cols(), it->second->xtx, spec, sgpt_, keep); !r.ok())
        return with_context(r.error(), str_cat("prune.sparsegpt: tensor '", name, "'"));
      LLMC_ASSIGN_OR_RETURN(const double achieved, store_sparse(model, name, w, keep, spec));
      report.details[name] = {{"sparsity", achieved}};
      return {};
    };
    // Layer l is calibrated on the outputs of the already-pruned layers before
    // it.
    LLMC_ASSIGN_OR_RETURN(auto seq, ctx.calib->sequential(model, ctx.threads));
    StatsRequest request;
    request.xtx = true;
    for (int64_t l = 0; l < model.config.n_layers; ++l) {
      const std::string prefix = str_cat("blk.", l, ".");
      std::vector<std::string> here;
      for (const std::string& n : targets)
        if (n.rfind(prefix, 0) == 0) here.push_back(n);
      if (!here.empty()) {
        LLMC_ASSIGN_OR_RETURN(const LayerStats stats, seq->collect(l, request));
        for (const std::string& n : here) LLMC_TRY(prune_one(n, stats));
      }
      LLMC_TRY(seq->advance(l));
    }
    for (const std::string& n : targets)
      if (n == "output.weight") {
        LLMC_ASSIGN_OR_RETURN(const LayerStats stats, seq->collect_head(request));
        LLMC_TRY(prune_one(n, stats));
      }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  PruneOptions options_;
  SparseGptOptions sgpt_;
};

}  // namespace

std::unique_ptr<Pass> make_prune_sparsegpt() { return std::make_unique<PruneSparseGpt>(); }

}  // namespace llmc
