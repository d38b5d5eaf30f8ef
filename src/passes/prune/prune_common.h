// Shared parts of the pruning passes: options, keep-mask selection from importance scores, Sparse tensor building.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model.h"
#include "passes/pass.h"

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
};

// Options every pruning pass declares with the same names: sparsity, pattern (unstructured | N:M),
// granularity (row | tensor | global), values (keep | f32 | f16 | bf16).
struct PruneOptions {
  double sparsity = 0.5;
  std::string pattern = "unstructured";
  std::string granularity = "row";
  std::string values = "keep";
  void visit(OptionVisitor& v);
  // kInvalidArgument: sparsity outside [0, 1), a pattern that is not "unstructured" or N:M with
  // 1 <= N < M <= 16, an unknown granularity.
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
// The score below which a `sparsity` fraction of `scores` lies (deterministic).
double sparsity_threshold(std::vector<float> scores, double sparsity);

// Replaces `name` in the model by a Sparse tensor holding w [rows, cols] at the kept entries; the
// values' dtype follows spec.values. Returns the achieved sparsity.
Result<double> store_sparse(Model& model, const std::string& name, const std::vector<float>& w,
                            const std::vector<uint8_t>& keep, const PruneSpec& spec);

}  // namespace llmc
