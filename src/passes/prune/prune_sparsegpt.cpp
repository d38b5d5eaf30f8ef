// prune.sparsegpt: Hessian-based pruning with reconstruction, block by block over the layers
// (calibration-based), optionally joint with quantization of the kept values.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "model/arch.h"
#include "passes/prune/prune_common.h"
#include "passes/prune/prune_passes.h"
#include "passes/prune/sparsegpt_math.h"
#include "pipeline/calibration.h"

namespace llmc {
namespace {

constexpr const char* kJointSchemes[] = {"asym", "sym"};

class PruneSparseGpt final : public Pass {
 public:
  std::string_view name() const override { return "prune.sparsegpt"; }
  PassNeeds needs() const override { return {.calibration = true}; }
  void visit(OptionVisitor& v) override {
    options_.visit(v);
    v.option("damp", sgpt_.damp, "Fraction of mean(diag H) added to the Hessian's diagonal");
    v.option("block_size", sgpt_.block_size, "Columns per lazy-batch update");
    v.option("true_sequential", true_sequential_,
             "Calibrate each group of a block's linears with the block's earlier groups already pruned");
    v.option("bits", bits_, "Joint quantization of the kept values in the same sweep: bits 2..8 (0 = off)");
    v.option("group_size", group_size_, "Joint quantization: kept values per scale (0 = whole row)");
    v.option("scheme", scheme_, "Joint quantization: asym (scale and min) or sym", kJointSchemes);
  }
  Result<void> validate_options() const override {
    auto s = options_.spec();
    if (!s.ok()) return s.error();
    if (!s->nm && s->granularity == PruneGranularity::kGlobal)
      return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt supports row and tensor granularity, not global");
    if (!(sgpt_.damp > 0.0) || sgpt_.block_size < 1)
      return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt: damp must be > 0 and block_size >= 1");
    if (bits_ != 0) {
      if (std::find(std::begin(kJointSchemes), std::end(kJointSchemes), scheme_) == std::end(kJointSchemes))
        return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt: scheme '", scheme_, "' is not asym or sym");
      if (auto r = check_joint_quant(*s, joint_spec()); !r.ok())
        return with_context(r.error(), "prune.sparsegpt bits/group_size");
    }
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_TRY(validate_options());
    const PruneSpec spec = *options_.spec();
    if (!ctx.calib) return make_error(ErrorCode::kInvalidArgument, "prune.sparsegpt needs calibration data");
    LLMC_TRY(ctx.selector.compile());
    const std::vector<std::string> targets = prune_targets(model, ctx.selector);
    // OWL ranks blocks by the outliers of the Wanda scores |w| ‖x‖ of the unpruned model.
    std::map<std::string, double> sparsity;
    if (spec.owl) {
      LLMC_ASSIGN_OR_RETURN(const LayerStats all, ctx.calib->collect_all(model, StatsRequest{}, ctx.threads));
      LLMC_ASSIGN_OR_RETURN(sparsity, owl_sparsity(targets, wanda_scores(model, all), spec));
    } else {
      for (const std::string& n : targets) sparsity[n] = spec.sparsity;
    }
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
      PruneSpec here = spec;
      here.sparsity = sparsity.at(name);
      const QuantSpec quant = joint_spec();
      QuantEncoding values;
      SparseGptOptions options = sgpt_;
      options.threads = ctx.threads;
      if (auto r = sparsegpt_prune(w, t.rows(), t.cols(), it->second->xtx, here, options, keep,
                                   bits_ ? &quant : nullptr, &values);
          !r.ok())
        return with_context(r.error(), str_cat("prune.sparsegpt: tensor '", name, "'"));
      LLMC_ASSIGN_OR_RETURN(const double achieved, store_sparse(model, name, w, keep, here, bits_ ? &values : nullptr));
      report.details[name] = {{"sparsity", achieved}};
      return {};
    };
    // Layer l is calibrated on the outputs of the already-pruned layers before it; with
    // true_sequential each group of its linears also on its already-pruned earlier groups
    // (docs/quant_gptq_awq.md, "Sequential driver").
    LLMC_ASSIGN_OR_RETURN(auto seq, ctx.calib->sequential(model, ctx.threads));
    StatsRequest request;
    request.xtx = true;
    for (int64_t l = 0; l < model.config.n_layers; ++l) {
      const std::string prefix = str_cat("blk.", l, ".");
      std::vector<std::string> here;
      for (const std::string& n : targets)
        if (n.rfind(prefix, 0) == 0) here.push_back(n);
      if (!here.empty() && true_sequential_) {
        size_t done = 0;
        LLMC_TRY(seq->collect_stages(l, request, [&](LayerStats& stats) -> Result<void> {
          for (const std::string& n : here)
            if (stats.count(n)) {
              LLMC_TRY(prune_one(n, stats));
              ++done;
            }
          return {};
        }));
        if (done != here.size())
          return make_error(ErrorCode::kInternal, "prune.sparsegpt: block ", l, " has targets outside its stages");
      } else if (!here.empty()) {
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
  QuantSpec joint_spec() const {
    QuantSpec q;
    q.bits = static_cast<int>(bits_);
    q.group_size = group_size_;
    q.scheme = scheme_ == "sym" ? QuantScheme::kSymmetric : QuantScheme::kAsymmetric;
    return q;
  }

  PruneOptions options_;
  SparseGptOptions sgpt_;
  int64_t bits_ = 0;
  int64_t group_size_ = 32;
  std::string scheme_ = "asym";
  bool true_sequential_ = true;
};

}  // namespace

std::unique_ptr<Pass> make_prune_sparsegpt() { return std::make_unique<PruneSparseGpt>(); }

}  // namespace llmc
