// Pruning options, keep-mask selection (row / tensor / global / n:m) and storing pruned weights as Sparse tensors.
#include "passes/prune/prune_common.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "core/sparse.h"
#include "model/arch.h"

namespace llmc {
namespace {

constexpr const char* kGranularities[] = {"row", "tensor", "global"};
constexpr const char* kValueTypes[] = {"keep", "f32", "f16", "bf16"};
constexpr const char* kAllocations[] = {"uniform", "owl"};

// The OWL group of a target: "blk.N" for block tensors, the name itself otherwise.
std::string owl_group(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return name;
  return name.substr(0, name.find('.', 4));
}

}  // namespace

void PruneOptions::visit(OptionVisitor& v) {
  v.option("sparsity", sparsity, "Fraction of entries set to zero, in [0, 1) (ignored for N:M patterns)");
  v.option("pattern", pattern, "unstructured, or N:M (N kept in every group of M columns, e.g. 2:4)", {});
  v.option("granularity", granularity, "Unstructured: the same sparsity in every row, per tensor, or global",
           kGranularities);
  v.option("values", values, "Stored values: keep (the tensor's dense dtype), f32, f16 or bf16", kValueTypes);
  v.option("allocation", allocation,
           "Unstructured: uniform (the same sparsity in every block) or owl (outlier-weighted per-block sparsity)",
           kAllocations);
  v.option("owl_lambda", owl_lambda, "OWL: largest deviation of a block's sparsity from the target");
  v.option("owl_m", owl_m, "OWL: a score is an outlier above this multiple of its block's mean score");
}

Result<PruneSpec> PruneOptions::spec() const {
  PruneSpec s;
  if (!(sparsity >= 0.0 && sparsity < 1.0))
    return make_error(ErrorCode::kInvalidArgument, "sparsity ", sparsity, " outside [0, 1)");
  s.sparsity = sparsity;
  if (pattern != "unstructured") {
    const auto colon = pattern.find(':');
    int n = 0, m = 0;
    try {
      size_t used_n = 0, used_m = 0;
      if (colon == std::string::npos) throw std::invalid_argument("no colon");
      n = std::stoi(pattern.substr(0, colon), &used_n);
      m = std::stoi(pattern.substr(colon + 1), &used_m);
      if (used_n != colon || used_m != pattern.size() - colon - 1) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      return make_error(ErrorCode::kInvalidArgument, "pattern '", pattern, "' is neither 'unstructured' nor N:M");
    }
    if (m < 2 || m > 16 || n < 1 || n >= m)
      return make_error(ErrorCode::kInvalidArgument, "pattern ", pattern, ": need 1 <= N < M <= 16");
    s.nm = true;
    s.n = n;
    s.m = m;
    s.sparsity = 1.0 - static_cast<double>(n) / m;
  }
  const auto g = std::find(std::begin(kGranularities), std::end(kGranularities), granularity);
  if (g == std::end(kGranularities))
    return make_error(ErrorCode::kInvalidArgument, "granularity '", granularity, "' is not row, tensor or global");
  s.granularity = static_cast<PruneGranularity>(g - std::begin(kGranularities));
  if (std::find(std::begin(kValueTypes), std::end(kValueTypes), values) == std::end(kValueTypes))
    return make_error(ErrorCode::kInvalidArgument, "values '", values, "' is not keep, f32, f16 or bf16");
  s.values = values;
  const auto a = std::find(std::begin(kAllocations), std::end(kAllocations), allocation);
  if (a == std::end(kAllocations))
    return make_error(ErrorCode::kInvalidArgument, "allocation '", allocation, "' is not uniform or owl");
  s.owl = allocation == "owl";
  if (s.owl) {
    if (s.nm)
      return make_error(ErrorCode::kInvalidArgument, "allocation owl applies to unstructured sparsity, not N:M");
    if (s.granularity == PruneGranularity::kGlobal)
      return make_error(ErrorCode::kInvalidArgument,
                        "allocation owl sets per-block sparsity; use row or tensor granularity");
    if (!(owl_lambda >= 0.0 && owl_lambda <= std::min(s.sparsity, 1.0 - s.sparsity) && owl_lambda < 0.5))
      return make_error(ErrorCode::kInvalidArgument, "owl_lambda ", owl_lambda,
                        " must lie in [0, min(sparsity, 1 - sparsity)] so every block's sparsity stays in [0, 1)");
    if (!(owl_m > 0.0)) return make_error(ErrorCode::kInvalidArgument, "owl_m ", owl_m, " must be positive");
  }
  s.owl_lambda = owl_lambda;
  s.owl_m = owl_m;
  return s;
}

std::vector<std::string> prune_targets(const Model& model, const TargetSelector& selector) {
  std::vector<std::string> out;
  for (const Tensor& t : model.tensors()) {
    const bool wanted = selector.has_targets() ? t.shape.dims.size() == 2
                                               : t.shape.dims.size() == 2 && tensor_role(t.name) == TensorRole::kLinear;
    if (wanted && selector.selects(t.name)) out.push_back(t.name);
  }
  return out;
}

ScoresOf wanda_scores(const Model& model, const LayerStats& stats) {
  return [&model, &stats](const std::string& name) -> Result<std::vector<float>> {
    const Tensor& t = model.get(name);
    const auto it = stats.find(name);
    if (it == stats.end() || !it->second || it->second->cols != t.cols())
      return make_error(ErrorCode::kInternal, "no input statistics for '", name, "'");
    std::vector<float> s = t.to_f32();
    const auto cols = static_cast<size_t>(t.cols());
    for (size_t i = 0; i < s.size(); ++i)
      s[i] = static_cast<float>(std::fabs(s[i]) * std::sqrt(it->second->sq_sum[i % cols]));
    return s;
  };
}

Result<std::map<std::string, double>> owl_sparsity(const std::vector<std::string>& targets, const ScoresOf& scores,
                                                   const PruneSpec& spec) {
  std::map<std::string, double> out;
  for (const std::string& t : targets) out[t] = spec.sparsity;
  if (!spec.owl || targets.empty()) return out;
  struct Group {
    double sum = 0;
    int64_t count = 0;
    std::vector<std::string> names;
    double ratio = 0;
  };
  std::map<std::string, Group> groups;  // ordered: deterministic
  for (const std::string& t : targets) groups[owl_group(t)].names.push_back(t);
  for (auto& [key, g] : groups) {
    std::vector<std::vector<float>> s;
    for (const std::string& t : g.names) {
      LLMC_ASSIGN_OR_RETURN(auto v, scores(t));
      for (float x : v) g.sum += x;
      g.count += static_cast<int64_t>(v.size());
      s.push_back(std::move(v));
    }
    const double threshold = spec.owl_m * g.sum / static_cast<double>(std::max<int64_t>(1, g.count));
    int64_t outliers = 0;
    for (const auto& v : s)
      for (float x : v) outliers += x > threshold;
    g.ratio = static_cast<double>(outliers) / static_cast<double>(std::max<int64_t>(1, g.count));
  }
  double lo = INFINITY, hi = -INFINITY, weighted = 0, total = 0;
  for (const auto& [key, g] : groups) lo = std::min(lo, g.ratio), hi = std::max(hi, g.ratio);
  auto spread = [&](const Group& g) { return hi > lo ? 2.0 * spec.owl_lambda * (g.ratio - lo) / (hi - lo) : 0.0; };
  for (const auto& [key, g] : groups) {
    weighted += spread(g) * static_cast<double>(g.count);
    total += static_cast<double>(g.count);
  }
  const double mean = total > 0 ? weighted / total : 0.0;
  for (const auto& [key, g] : groups) {
    const double sparsity = spec.sparsity - (spread(g) - mean);
    if (!(sparsity >= 0.0 && sparsity < 1.0))
      return make_error(ErrorCode::kInvalidArgument, "OWL gives ", key, " the sparsity ", sparsity,
                        " outside [0, 1); lower owl_lambda");
    for (const std::string& t : g.names) out[t] = sparsity;
  }
  return out;
}

double sparsity_threshold(std::vector<float> scores, double sparsity) {
  if (scores.empty()) return 0.0;
  const auto k = static_cast<size_t>(std::llround(sparsity * static_cast<double>(scores.size())));
  if (k == 0) return -INFINITY;
  std::nth_element(scores.begin(), scores.begin() + static_cast<std::ptrdiff_t>(k - 1), scores.end());
  return scores[k - 1];  // keep score > threshold
}

Result<std::vector<uint8_t>> select_keep(const std::vector<float>& scores, int64_t rows, int64_t cols,
                                         const PruneSpec& spec, double threshold) {
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 1);
  if (spec.nm) {
    LLMC_TRY(check_nm_pattern(spec.n, spec.m, cols));
    std::vector<int64_t> order(static_cast<size_t>(spec.m));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g0 = 0; g0 < cols; g0 += spec.m) {
        const int64_t width = std::min<int64_t>(spec.m, cols - g0);
        const float* s = scores.data() + r * cols + g0;
        order.resize(static_cast<size_t>(width));
        std::iota(order.begin(), order.end(), 0);
        // Most important first; among equal scores the lower column.
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
        for (int64_t j = std::min<int64_t>(spec.n, width); j < width; ++j) keep[r * cols + g0 + order[j]] = 0;
      }
    return keep;
  }
  if (spec.granularity == PruneGranularity::kRow) {
    const auto zeros = static_cast<int64_t>(std::llround(spec.sparsity * static_cast<double>(cols)));
    std::vector<int64_t> order(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = scores.data() + r * cols;
      std::iota(order.begin(), order.end(), 0);
      // The `zeros` least important columns (ties: the lower column).
      select_lowest(order, static_cast<size_t>(zeros), [&](int64_t c) { return s[c]; });
      for (int64_t j = 0; j < zeros; ++j) keep[r * cols + order[j]] = 0;
    }
    return keep;
  }
  if (std::isnan(threshold)) threshold = sparsity_threshold(scores, spec.sparsity);
  for (size_t i = 0; i < keep.size(); ++i) keep[i] = scores[i] > threshold;
  return keep;
}

Result<double> store_sparse(Model& model, const std::string& name, const std::vector<float>& w,
                            const std::vector<uint8_t>& keep, const PruneSpec& spec,
                            const QuantEncoding* quant_values) {
  const Tensor& t = model.get(name);
  const int64_t rows = t.rows(), cols = t.cols();
  DType dtype = DType::kF32;
  if (spec.values == "keep") {
    if (const auto* d = std::get_if<DenseEncoding>(&t.encoding->node)) dtype = d->dtype;
  } else {
    dtype = spec.values == "f16" ? DType::kF16 : spec.values == "bf16" ? DType::kBF16 : DType::kF32;
  }
  std::vector<float> kept;
  SparseEncoding s;
  if (spec.nm) {
    auto r = sparse_nm_pattern(keep.data(), w.data(), rows, cols, spec.n, spec.m, kept);
    if (!r.ok()) return with_context(r.error(), str_cat("tensor '", name, "'"));
    s = std::move(r).value();
  } else {
    s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
  }
  if (quant_values) {
    LLMC_TRY(validate_encoding(Encoding{*quant_values}, sparse_values_shape(s, rows)));
    s.values = std::make_shared<Encoding>(Encoding{*quant_values});
  } else {
    sparse_set_dense_values(s, kept, rows, dtype);
  }
  const double sparsity = t.numel() == 0 ? 0.0 : 1.0 - static_cast<double>(s.nnz) / static_cast<double>(t.numel());
  replace_and_release(model, Tensor{name, t.shape, std::make_shared<Encoding>(Encoding{std::move(s)})});
  return sparsity;
}

}  // namespace llmc
