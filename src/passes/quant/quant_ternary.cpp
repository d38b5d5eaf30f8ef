// quant.ternary: {-1, 0, +1} × per-group scale, packed 2 bits or 5 trits per byte, data-free or
// importance-weighted by calibration statistics.
#include "passes/quant/quant_passes.h"

namespace llmc {

namespace {

class QuantTernaryPass : public Pass {
 public:
  QuantTernaryPass() {
    options_.scheme = "ternary";
    options_.bits = 2;
  }
  std::string_view name() const override { return "quant.binary"; }
  PassNeeds needs() const override { return PassNeeds{.calibration = options_.importance}; }
  void visit(OptionVisitor& v) override {
    options_.visit_only(v, {"group_size", "scale_dtype", "scale_block", "trits5", "importance"});
  }
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

std::unique_ptr<Pass> make_quant_ternary_pass() { return std::make_unique<QuantTernaryPass>(); }

}  // namespace llmc
