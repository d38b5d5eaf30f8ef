// prune.channels: remove FFN channels (rows of ffn_gate/ffn_up, columns of ffn_down) and shrink
// the layer's FFN width, so the result is a smaller dense model.
#include "model/arch.h"
#include "passes/pass.h"
#include "passes/prune/prune_passes.h"
#include "passes/prune/structured.h"

namespace llmc {
namespace {

class FfnChannels final : public StructuredUnits {
 public:
  explicit FfnChannels(int64_t multiple_of) : multiple_of_(multiple_of) {}
  const char* what() const override { return "FFN channels"; }
  const char* out_proj() const override { return "ffn_down.weight"; }

  // One bucket of hidden(l) channels; channel j owns column j of ffn_down.
  LayerUnits units(const Model& model, int64_t layer) const override {
    LayerUnits u;
    const int64_t hidden = model.config.hidden(layer);
    u.take = multiple_of_;
    u.buckets.emplace_back(static_cast<size_t>(hidden));
    for (int64_t j = 0; j < hidden; ++j) {
      u.buckets[0][j] = j;
      u.out_cols.push_back({j});
    }
    u.score.assign(static_cast<size_t>(hidden), 0.0);
    return u;
  }

  Result<void> apply(Model& model, int64_t layer, const std::vector<int64_t>& kept,
                     const std::vector<float>* w_out) const override {
    for (const char* s : {"ffn_gate.weight", "ffn_up.weight"})
      replace_and_release(model, slice_tensor(model.get(layer_tensor_name(layer, s)), kept, {}));
    const Tensor& down = model.get(layer_tensor_name(layer, "ffn_down.weight"));
    if (w_out) {
      DType dtype = DType::kF32;
      if (const auto* d = std::get_if<DenseEncoding>(&down.encoding->node)) dtype = d->dtype;
      replace_and_release(
          model, make_dense(down.name, Shape{{down.rows(), static_cast<int64_t>(kept.size())}}, *w_out, dtype));
    } else {
      replace_and_release(model, slice_tensor(down, {}, kept));
    }
    std::vector<int64_t> hidden = model.config.all_hidden();
    hidden[layer] = static_cast<int64_t>(kept.size());
    model.config.set_layer_widths(model.config.all_heads(), model.config.all_kv_heads(), std::move(hidden));
    return {};
  }

 private:
  int64_t multiple_of_;
};

class PruneChannels final : public Pass {
 public:
  std::string_view name() const override { return "prune.channels"; }
  PassNeeds needs() const override { return {.calibration = options_.calibrated()}; }
  void visit(OptionVisitor& v) override {
    options_.visit(v);
    v.option("multiple_of", multiple_of_,
             "Remove channels in steps of this many, so every FFN width stays a multiple of it when it was one");
  }
  Result<void> validate_options() const override {
    LLMC_TRY(options_.validate());
    if (multiple_of_ < 1 || multiple_of_ > 4096)
      return make_error(ErrorCode::kInvalidArgument, "multiple_of ", multiple_of_, " outside [1, 4096]");
    return {};
  }
  Result<PassReport> run(Model& model, PassContext& ctx) override {
    LLMC_TRY(validate_options());
    return run_structured(model, ctx, options_, FfnChannels(multiple_of_), name());
  }

 private:
  StructuredOptions options_;
  int64_t multiple_of_ = 1;
};

}  // namespace

std::unique_ptr<Pass> make_prune_channels() { return std::make_unique<PruneChannels>(); }

}  // namespace llmc
