// Shared parts of structured pruning (prune.heads, prune.channels): options, unit importance,
// allocation of removals over the layers, slicing tensors and the least-squares refit.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/model.h"
#include "passes/pass.h"

namespace llmc {

class CalibrationSet;

// Options every structured pass declares with the same names.
struct StructuredOptions {
  double sparsity = 0.25;              // fraction of the units (heads / channels) removed
  std::string allocation = "uniform";  // uniform: the same fraction in every layer; global: ranked over layers
  std::string importance = "magnitude";
  bool refit = true;   // activation importance: least-squares refit of the output projection
  double damp = 0.01;  // refit: fraction of mean(diag H) added to H's diagonal
  void visit(OptionVisitor& v);
  Result<void> validate() const;  // kInvalidArgument for values outside their range or unknown names
  bool calibrated() const { return importance == "activation"; }
};

// The removable units of one layer. A unit owns some columns of the layer's output projection
// (attn_output / ffn_down); its importance is Σ_c s_c · ‖W_out[:, c]‖² over those columns, with
// s_c = E[x_c²] of the projection's input (activation) or 1 (magnitude, data-free): the expected
// squared norm the unit writes into the residual stream (diagonal approximation).
// Units sit in buckets; one removal step takes the `take` least important remaining units of
// every bucket (prune.heads' query mode: a bucket is a KV group, so every group keeps the same
// number of query heads), and every bucket keeps at least one unit.
struct LayerUnits {
  std::vector<std::vector<int64_t>> buckets;   // unit ids per bucket
  int64_t take = 1;                            // units per bucket and step
  std::vector<double> score;                   // [units] importance
  std::vector<std::vector<int64_t>> out_cols;  // [units] columns of the output projection the unit owns
  int64_t units() const { return static_cast<int64_t>(score.size()); }
};

// Importance of every unit: Σ_c s_c ‖W_out[:, c]‖² (sq_mean empty = magnitude: s_c = 1).
void score_units(LayerUnits& layer, const std::vector<float>& w_out, int64_t rows, int64_t cols,
                 const std::vector<double>& sq_mean);

// Removal steps per layer for `sparsity` of all units: uniform = round(sparsity · steps that would
// empty a bucket) in every layer; global = the globally least important steps, a layer's scores
// divided by its mean unit score so that layers of different activation scale compare. Errors
// (kInvalidArgument, naming `what` and the layer) when a layer would lose every unit of a bucket or
// the total cannot be reached.
Result<std::vector<int64_t>> allocate_steps(const std::vector<LayerUnits>& layers, double sparsity,
                                            const std::string& allocation, const char* what);

// The kept units of a layer after `steps` removal steps (ascending unit ids).
std::vector<int64_t> kept_units(const LayerUnits& layer, int64_t steps);

// The tensor restricted to the given rows and columns (empty = all), in order. Dense tensors keep
// their dtype (exact); other encodings are decoded and stored as f32.
Tensor slice_tensor(const Tensor& t, std::span<const int64_t> rows, std::span<const int64_t> cols);

// Least-squares refit of W [rows, cols] restricted to the columns `kept`: the W' [rows, |kept|]
// minimizing Σ_t ‖W x_t − W' x_t[kept]‖² over the calibration inputs, given H = Σ x xᵀ
// [cols, cols]: W' = W H[:, K] (H[K, K] + λI)⁻¹, λ = damp · mean(diag H[K, K]).
Result<std::vector<float>> refit_columns(const std::vector<float>& w, int64_t rows, int64_t cols,
                                         const std::vector<double>& h, std::span<const int64_t> kept, double damp);

// One kind of structured unit (heads, FFN channels): what run_structured needs to know.
class StructuredUnits {
 public:
  virtual ~StructuredUnits() = default;
  virtual const char* what() const = 0;  // "heads", "FFN channels" (error messages)
  // The output projection whose columns the units own ("attn_output.weight" / "ffn_down.weight").
  virtual const char* out_proj() const = 0;
  // Buckets, take and out_cols of layer `layer` (scores are filled by run_structured).
  virtual LayerUnits units(const Model& model, int64_t layer) const = 0;
  // Shrinks layer `layer` to the kept units (ascending ids), its tensors and the config widths;
  // w_out: the refit output projection [dim, kept columns in order], or null to slice the current.
  virtual Result<void> apply(Model& model, int64_t layer, const std::vector<int64_t>& kept,
                             const std::vector<float>* w_out) const = 0;
};

// The driver of a structured pass: importance (magnitude, or activation statistics of the model
// with the earlier layers already pruned, block by block through CalibrationSet::sequential),
// allocation (global allocation ranks the unpruned model's activation statistics first), the
// optional refit and apply(), layer by layer with progress. Report details per layer: units
// before and after.
Result<PassReport> run_structured(Model& model, PassContext& ctx, const StructuredOptions& options,
                                  const StructuredUnits& kind, std::string_view pass_name);

}  // namespace llmc
