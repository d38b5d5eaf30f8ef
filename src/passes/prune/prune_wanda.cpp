// prune.wanda: zero the entries of smallest |W_rc| · ‖X_c‖ per output row (Sun
// et al., 2023), from calibration activations.
#include <chrono>
#include <cmath>

#include "passes/prune/prune_common.h"
#include "passes/prune/prune_passes.h"
#include "pipeline/calibration.h"

namespace llmc {
namespace {

class PruneWanda final : public Pass {
 public:
  std::string_view name() const override { return "prune.wanda"; }
  PassNeeds needs() const override { return {.calibration = true}; }
  void visit(OptionVisitor& v) override { options_.visit(v); }
  Result<void> validate_options() const override {
    auto s = options_.spec();
    if (!s.ok()) return s.error();
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_ASSIGN_OR_RETURN(const PruneSpec spec, options_.spec());
    if (!ctx.calib) return make_error(ErrorCode::kInvalidArgument, "prune.wanda needs calibration data");
    LLMC_TRY(ctx.selector.compile());
    const std::vector<std::string> targets = prune_targets(model, ctx.selector);
    LLMC_ASSIGN_OR_RETURN(const LayerStats stats, ctx.calib->collect_all(model, StatsRequest{}, ctx.threads));
    const ScoresOf scores_of = wanda_scores(model, stats);
    double threshold = NAN;
    if (!spec.nm && spec.granularity == PruneGranularity::kGlobal) {
      std::vector<float> all;
      for (const std::string& name : targets) {
        LLMC_ASSIGN_OR_RETURN(auto s, scores_of(name));
        all.insert(all.end(), s.begin(), s.end());
      }
      threshold = sparsity_threshold(std::move(all), spec.sparsity);
    }
    LLMC_ASSIGN_OR_RETURN(const auto sparsity, owl_sparsity(targets, scores_of, spec));
    PassReport report;
    report.pass = std::string(name());
    for (const std::string& name : targets) {
      const Tensor& t = model.get(name);
      LLMC_ASSIGN_OR_RETURN(auto scores, scores_of(name));
      PruneSpec here = spec;
      here.sparsity = sparsity.at(name);
      auto keep = select_keep(scores, t.rows(), t.cols(), here, threshold);
      if (!keep.ok()) return with_context(keep.error(), str_cat("prune.wanda: tensor '", name, "'"));
      LLMC_ASSIGN_OR_RETURN(const double achieved, store_sparse(model, name, t.to_f32(), *keep, here));
      report.details[name] = {{"sparsity", achieved}};
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  PruneOptions options_;
};

}  // namespace

std::unique_ptr<Pass> make_prune_wanda() { return std::make_unique<PruneWanda>(); }

}  // namespace llmc
