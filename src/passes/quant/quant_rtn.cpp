// quant.rtn: round-to-nearest quantization with optional clipping search and importance weighting;
// also quantize_model_rtn, the per-tensor driver that quant.binary, quant.ternary and quant.mixed share.
#include <chrono>
#include <cmath>

#include "core/lowrank.h"
#include "formats/file_io.h"
#include "passes/lowrank/factor_quant.h"
#include "passes/quant/quant_methods.h"
#include "passes/quant/quant_passes.h"
#include "pipeline/calibration.h"

namespace llmc {

Result<nlohmann::json> quantize_model_rtn(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                          const ScaleSearch& search, bool importance) {
  LayerStats stats;
  if (importance) {
    if (!ctx.calib)
      return make_error(ErrorCode::kInvalidArgument,
                        "importance weighting needs calibration data (--calib or --calib-self)");
    LLMC_ASSIGN_OR_RETURN(stats, ctx.calib->collect_all(model, StatsRequest{}, ctx.threads));
  }
  std::vector<std::string> names;
  for (const Tensor& t : model.tensors())
    if (ctx.selector.selects(t.name) && is_default_weight_target(model, t.name)) names.push_back(t.name);

  nlohmann::json details = nlohmann::json::object();
  for (const std::string& name : names) {
    const std::optional<QuantSpec> spec = spec_for(name);
    if (!spec) continue;
    LLMC_TRY(validate_quant_spec(*spec));
    const Tensor t = model.get(name);     // a copy: keeps the source encoding alive after replace()
    if (is_decomposition(*t.encoding)) {  // LowRank/Tucker: quantize the parts, keep the tree
      const auto it = stats.find(name);
      const PartQuantizer rtn = [&](std::span<const float> w, int64_t rows, int64_t cols, const PartInput& in,
                                    std::vector<float>& dequant) -> Result<QuantEncoding> {
        std::vector<float> imp(in.sq_sum.begin(), in.sq_sum.end());
        return quantize_rtn(*spec, w, rows, cols, imp, search, &dequant);
      };
      LLMC_ASSIGN_OR_RETURN(details[name],
                            quantize_decomposition(model, name, it == stats.end() ? nullptr : it->second.get(), rtn));
      details[name]["spec"] = describe_quant_spec(*spec);
      continue;
    }
    const int64_t rows = t.rows(), cols = t.cols();
    // Per-column importance Σ x_c² of this linear's input (a tied embedding gets the output head's);
    // tensors without statistics (an untied token embedding is only a lookup) are fitted unweighted.
    std::vector<float> col_imp;
    if (auto it = stats.find(name); it != stats.end() && it->second && it->second->cols == cols) {
      col_imp.assign(it->second->sq_sum.begin(), it->second->sq_sum.end());
    }
    // Rows are decoded block by block as the threads need them: the tensor is never whole in f32.
    const RowLoader load = [&t](int64_t r0, int64_t r1, float* out) {
      tensor_rows_to_f32(t, r0, r1, out);
      release_row_pages(t, r0, r1);
    };
    QuantError error;
    QuantEncoding enc = quantize_rtn_rows(*spec, rows, cols, load, col_imp, search, nullptr, &error);
    const size_t bytes =
        enc.codes.size() + enc.scales.size() + enc.mins.size() + enc.scale_meta.size() + enc.min_meta.size();
    details[name] = {{"spec", describe_quant_spec(*spec)},
                     {"bpw", t.numel() ? 8.0 * static_cast<double>(bytes) / static_cast<double>(t.numel()) : 0.0},
                     {"rel_err", error.norm > 0 ? std::sqrt(error.err / error.norm) : 0.0},
                     {"importance", !col_imp.empty()}};
    replace_and_release(model, Tensor{name, t.shape, std::make_shared<const Encoding>(Encoding{std::move(enc)})});
  }
  return details;
}

namespace {

class QuantRtnPass : public Pass {
 public:
  std::string_view name() const override { return "quant.rtn"; }
  PassNeeds needs() const override { return PassNeeds{.calibration = options_.importance}; }
  void visit(OptionVisitor& v) override { options_.visit(v); }
  Result<void> validate_options() const override {
    LLMC_TRY(options_.spec());
    return {};
  }
  Result<PassReport> run(Model& model, PassContext& ctx) override {
    return run_quant_pass(name(), options_, model, ctx);
  }

 private:
  QuantOptions options_;
};

}  // namespace

Result<PassReport> run_quant_pass(std::string_view pass, const QuantOptions& options, Model& model, PassContext& ctx) {
  const auto start = std::chrono::steady_clock::now();
  LLMC_ASSIGN_OR_RETURN(const QuantSpec spec, options.spec());
  PassReport report;
  report.pass = std::string(pass);
  LLMC_ASSIGN_OR_RETURN(report.details,
                        quantize_model_rtn(
                            model, ctx, [&](const std::string&) { return std::optional<QuantSpec>(spec); },
                            options.search(), options.importance));
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::unique_ptr<Pass> make_quant_rtn_pass() { return std::make_unique<QuantRtnPass>(); }

}  // namespace llmc
