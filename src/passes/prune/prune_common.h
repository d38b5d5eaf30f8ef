// Shared parts of the pruning passes: options, keep-mask selection from importance scores, Sparse tensor building.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model.h"
#include "passes/pass.h"
#include "pipeline/calibration.h"

namespace llmc {

enum class PruneGranularity : uint8_t { kRow = 0, kTensor = 1, kGlobal = 2 };

// What to remove. Unstructured: `sparsity` of the entries of each row (kRow: round(sparsity * cols)
// zeros in every row), of each tensor, or of all targets together (kGlobal). n:m: exactly n kept in
// every group of m columns (sparsity is then 1 - n/m and the option is ignored).
struct PruneSpec {
  double sparsity = 0.5;
  bool nm = false;
  int n = 0;
  int m = 0;
  PruneGranularity granularity = PruneGranularity::kRow;
  std::string values = "keep";  // dtype of the stored values: keep (the dense dtype, f32 otherwise) | f32 | f16 | bf16
  bool owl = false;             // per-block sparsity from outlier ratios (owl_sparsity)
  double owl_lambda = 0.08;
  double owl_m = 5.0;
};

// Options every pruning pass declares with the same names: sparsity, pattern (unstructured | N:M),
// granularity (row | tensor | global), values (keep | f32 | f16 | bf16).
struct PruneOptions {
  double sparsity = 0.5;
  std::string pattern = "unstructured";
  std::string granularity = "row";
  std::string values = "keep";
  std::string allocation = "uniform";
  double owl_lambda = 0.08;
  double owl_m = 5.0;
  void visit(OptionVisitor& v);
  // kInvalidArgument: sparsity outside [0, 1), a pattern that is not "unstructured" or N:M with
  // 1 <= N < M <= 16, an unknown granularity, OWL with N:M or global granularity or a lambda that
  // would push a block outside [0, 1).
  Result<PruneSpec> spec() const;
};

// Tensors a pruning pass changes: the selector's targets, or by default every 2-D linear weight of
// the blocks (embeddings and the output head stay dense).
std::vector<std::string> prune_targets(const Model& model, const TargetSelector& selector);

// Keep mask [rows * cols] (1 = kept) from importance scores (larger = more important) under the
// spec's row or n:m rule (kTensor/kGlobal: `threshold` decides: keep score > threshold, and
// kTensor computes its own threshold when `threshold` is NaN). Ties go to the lower column.
// kInvalidArgument when the pattern does not fit the shape.
Result<std::vector<uint8_t>> select_keep(const std::vector<float>& scores, int64_t rows, int64_t cols,
                                         const PruneSpec& spec, double threshold);
// Moves the k lowest-scored indices of `order` to its front (in no particular order): score(i) is
// index i's score, and among equal scores the lower index is the lower (a strict total order, so
// the set is unique: the first k of a stable sort by score, found in O(n) instead of a sort).
template <class Score>
void select_lowest(std::vector<int64_t>& order, size_t k, Score score) {
  if (k == 0 || k >= order.size()) return;
  std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k - 1), order.end(),
                   [&](int64_t a, int64_t b) {
                     const auto sa = score(a), sb = score(b);
                     return sa < sb || (sa == sb && a < b);
                   });
}
// The score below which a `sparsity` fraction of `scores` lies (deterministic).
double sparsity_threshold(std::vector<float> scores, double sparsity);

// Scores (larger = more important) of one target tensor, [rows * cols].
using ScoresOf = std::function<Result<std::vector<float>>(const std::string& name)>;

// Wanda's scores |w_rc| · ‖x_c‖ (‖x_c‖ = sqrt of Σ x_c² over the calibration tokens) from stats.
ScoresOf wanda_scores(const Model& model, const LayerStats& stats);

// OWL, outlier-weighted layerwise sparsity (Yin et al., 2024): the targets of each block (a
// non-block target is its own group) get the sparsity 1 - density_b with
//   D_b = fraction of the block's scores above owl_m x the block's mean score,
//   density_b = (1 - S) + 2 lambda (D_b - min D) / (max D - min D) - mean_w(...),
// the mean weighted by the block's weight count so that the total sparsity stays S. Blocks with
// more outliers keep more weights. Without OWL every target gets spec.sparsity. Result per target.
Result<std::map<std::string, double>> owl_sparsity(const std::vector<std::string>& targets, const ScoresOf& scores,
                                                   const PruneSpec& spec);

// Replaces `name` in the model by a Sparse tensor holding w [rows, cols] at the kept entries; the
// values' dtype follows spec.values, or the values are `quant_values` ([rows, kept_stride], from
// joint quantization) when given. Returns the achieved sparsity.
Result<double> store_sparse(Model& model, const std::string& name, const std::vector<float>& w,
                            const std::vector<uint8_t>& keep, const PruneSpec& spec,
                            const QuantEncoding* quant_values = nullptr);

}  // namespace llmc
