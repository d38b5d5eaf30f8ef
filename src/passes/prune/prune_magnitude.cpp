// prune.magnitude: zero the smallest |w| per row, per tensor, globally or per N:M group (data-free).
#include <chrono>
#include <cmath>

#include "passes/prune/prune_common.h"
#include "passes/prune/prune_passes.h"

namespace llmc {
namespace {

class PruneMagnitude final : public Pass {
 public:
  std::string_view name() const override { return "prune.magnitude"; }
  PassNeeds needs() const override { return {}; }
  void visit(OptionVisitor& v) override { options_.visit(v); }
  Result<void> validate_options() const override {
    auto s = options_.spec();
    if (!s.ok()) return s.error();
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_ASSIGN_OR_RETURN(const PruneSpec spec, options_.spec());
    LLMC_TRY(ctx.selector.compile());
    const std::vector<std::string> targets = prune_targets(model, ctx.selector);
    auto scores_of = [&](const std::string& name) {
      std::vector<float> s = model.get(name).to_f32();
      for (float& v : s) v = std::fabs(v);
      return s;
    };
    double threshold = NAN;
    if (!spec.nm && spec.granularity == PruneGranularity::kGlobal) {
      std::vector<float> all;
      for (const std::string& name : targets) {
        auto s = scores_of(name);
        all.insert(all.end(), s.begin(), s.end());
      }
      threshold = sparsity_threshold(std::move(all), spec.sparsity);
    }
    // OWL on magnitudes: the data-free variant of outlier-weighted allocation.
    LLMC_ASSIGN_OR_RETURN(
        const auto sparsity,
        owl_sparsity(
            targets, [&](const std::string& n) -> Result<std::vector<float>> { return scores_of(n); }, spec));
    PassReport report;
    report.pass = std::string(name());
    for (const std::string& name : targets) {
      const Tensor& t = model.get(name);
      const int64_t rows = t.rows(), cols = t.cols();
      std::vector<float> w = t.to_f32();
      std::vector<float> scores = scores_of(name);
      PruneSpec here = spec;
      here.sparsity = sparsity.at(name);
      auto keep = select_keep(scores, rows, cols, here, threshold);
      if (!keep.ok()) return with_context(keep.error(), str_cat("prune.magnitude: tensor '", name, "'"));
      LLMC_ASSIGN_OR_RETURN(const double achieved, store_sparse(model, name, w, *keep, here));
      report.details[name] = {{"sparsity", achieved}};
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  PruneOptions options_;
};

}  // namespace

std::unique_ptr<Pass> make_prune_magnitude() { return std::make_unique<PruneMagnitude>(); }

}  // namespace llmc
