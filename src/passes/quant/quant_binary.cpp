// quant.binary: sign × per-group scale (optionally two free levels per group), data-free or
// importance-weighted by calibration statistics.
#include "passes/quant/quant_passes.h"

namespace llmc {

namespace {

class QuantBinaryPass : public Pass {
 public:
  QuantBinaryPass() {
    options_.scheme = "binary";
    options_.bits = 1;
  }
  std::string_view name() const override { return "quant.binary"; }
  PassNeeds needs() const override { return PassNeeds{.calibration = options_.importance}; }
  void visit(OptionVisitor& v) override {
    options_.visit_only(v, {"group_size", "scale_dtype", "scale_block", "two_level", "importance"});
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

std::unique_ptr<Pass> make_quant_binary_pass() { return std::make_unique<QuantBinaryPass>(); }

}  // namespace llmc
