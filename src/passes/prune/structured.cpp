// Structured pruning: unit importance, allocation over layers, tensor slicing, least-squares refit and the driver.
#include "passes/prune/structured.h"

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <tuple>

#include "core/log.h"
#include "model/arch.h"
#include "pipeline/calibration.h"

namespace llmc {
namespace {

constexpr const char* kAllocations[] = {"uniform", "global"};
constexpr const char* kImportances[] = {"magnitude", "activation"};

using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;

// Units of a bucket, least important first (ties: lower id first).
std::vector<int64_t> by_importance(const LayerUnits& layer, const std::vector<int64_t>& bucket) {
  std::vector<int64_t> order = bucket;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return std::tie(layer.score[a], a) < std::tie(layer.score[b], b); });
  return order;
}

int64_t max_steps(const LayerUnits& layer) {
  int64_t steps = INT64_MAX;
  for (const auto& b : layer.buckets) steps = std::min(steps, (static_cast<int64_t>(b.size()) - 1) / layer.take);
  return layer.buckets.empty() ? 0 : steps;
}

int64_t units_per_step(const LayerUnits& layer) { return layer.take * static_cast<int64_t>(layer.buckets.size()); }

}  // namespace

void StructuredOptions::visit(OptionVisitor& v) {
  v.option("sparsity", sparsity, "Fraction of the units (heads, FFN channels) removed, in [0, 1)");
  v.option("allocation", allocation,
           "uniform: the same fraction in every layer; global: the least important units over all layers",
           kAllocations);
  v.option("importance", importance,
           "magnitude: sum of squared output-projection columns (data-free); activation: weighted by the unit's "
           "mean squared activation (calibration)",
           kImportances);
  v.option("refit", refit, "Least-squares refit of the output projection on the kept units (activation importance)");
  v.option("damp", damp, "Refit: fraction of mean(diag H) added to H's diagonal");
}

Result<void> StructuredOptions::validate() const {
  if (!(sparsity >= 0.0 && sparsity < 1.0))
    return make_error(ErrorCode::kInvalidArgument, "sparsity ", sparsity, " outside [0, 1)");
  if (std::find(std::begin(kAllocations), std::end(kAllocations), allocation) == std::end(kAllocations))
    return make_error(ErrorCode::kInvalidArgument, "allocation '", allocation, "' is not uniform or global");
  if (std::find(std::begin(kImportances), std::end(kImportances), importance) == std::end(kImportances))
    return make_error(ErrorCode::kInvalidArgument, "importance '", importance, "' is not magnitude or activation");
  if (!(damp > 0.0 && damp < 1.0)) return make_error(ErrorCode::kInvalidArgument, "damp ", damp, " outside (0, 1)");
  return {};
}

void score_units(LayerUnits& layer, const std::vector<float>& w_out, int64_t rows, int64_t cols,
                 const std::vector<double>& sq_mean) {
  std::vector<double> col_energy(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double w = w_out[r * cols + c];
      col_energy[c] += w * w;
    }
  if (!sq_mean.empty())
    for (int64_t c = 0; c < cols; ++c) col_energy[c] *= sq_mean[c];
  layer.score.assign(layer.out_cols.size(), 0.0);
  for (size_t u = 0; u < layer.out_cols.size(); ++u)
    for (int64_t c : layer.out_cols[u]) layer.score[u] += col_energy[c];
}

Result<std::vector<int64_t>> allocate_steps(const std::vector<LayerUnits>& layers, double sparsity,
                                            const std::string& allocation, const char* what) {
  std::vector<int64_t> steps(layers.size(), 0);
  if (allocation == "uniform") {
    for (size_t l = 0; l < layers.size(); ++l) {
      const LayerUnits& L = layers[l];
      steps[l] = std::llround(sparsity * static_cast<double>(L.units()) / static_cast<double>(units_per_step(L)));
      if (steps[l] > max_steps(L))
        return make_error(ErrorCode::kInvalidArgument, "removing ", sparsity * 100, " % of the ", L.units(), " ", what,
                          " of layer ", l, " would remove ", steps[l] * units_per_step(L), " of them",
                          L.buckets.size() > 1 ? ", emptying a KV group" : ", all of them",
                          "; every layer keeps at least one (lower the sparsity)");
    }
    return steps;
  }
  // Global: candidate steps (cost per removed unit relative to the layer's mean, layer, step).
  std::vector<std::tuple<double, size_t, int64_t>> candidates;
  int64_t total = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerUnits& L = layers[l];
    total += L.units();
    const double mean = std::accumulate(L.score.begin(), L.score.end(), 0.0) / std::max<int64_t>(1, L.units());
    std::vector<std::vector<int64_t>> orders;
    for (const auto& b : L.buckets) orders.push_back(by_importance(L, b));
    for (int64_t i = 0; i < max_steps(L); ++i) {
      double cost = 0;
      for (const auto& order : orders)
        for (int64_t j = i * L.take; j < (i + 1) * L.take; ++j) cost += L.score[order[j]];
      cost /= static_cast<double>(units_per_step(L)) * (mean > 0 ? mean : 1.0);
      candidates.emplace_back(cost, l, i);
    }
  }
  std::sort(candidates.begin(), candidates.end());
  const int64_t goal = std::llround(sparsity * static_cast<double>(total));
  int64_t removed = 0, largest_step = 1;
  for (const auto& [cost, l, i] : candidates) {
    const int64_t n = units_per_step(layers[l]);
    largest_step = std::max(largest_step, n);
    if (removed + n > goal || steps[l] != i) continue;  // too many, or an earlier step of this layer was skipped
    steps[l] = i + 1;
    removed += n;
  }
  if (goal - removed >= largest_step)
    return make_error(ErrorCode::kInvalidArgument, "removing ", sparsity * 100, " % of the ", total, " ", what,
                      " would empty a layer", (!layers.empty() && layers[0].buckets.size() > 1) ? " or a KV group" : "",
                      "; every layer keeps at least one (lower the sparsity)");
  return steps;
}

std::vector<int64_t> kept_units(const LayerUnits& layer, int64_t steps) {
  std::vector<int64_t> kept;
  for (const auto& b : layer.buckets) {
    const auto order = by_importance(layer, b);
    kept.insert(kept.end(), order.begin() + std::min<int64_t>(steps * layer.take, static_cast<int64_t>(order.size())),
                order.end());
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

Tensor slice_tensor(const Tensor& t, std::span<const int64_t> rows, std::span<const int64_t> cols) {
  DType dtype = DType::kF32;
  if (const auto* d = std::get_if<DenseEncoding>(&t.encoding->node))
    dtype = d->dtype;
  else
    log_info("structured pruning: ", t.name, " is not dense; it is decoded and stored as f32");
  const std::vector<float> w = t.to_f32();
  if (t.shape.dims.size() == 1) {  // a bias or norm: `rows` selects its entries
    std::vector<float> out;
    for (int64_t i : rows) out.push_back(w[i]);
    if (rows.empty()) out = w;
    return make_dense(t.name, Shape{{static_cast<int64_t>(out.size())}}, out, dtype);
  }
  const int64_t n_cols = t.cols();
  std::vector<int64_t> all_rows, all_cols;
  if (rows.empty()) {
    all_rows.resize(static_cast<size_t>(t.rows()));
    std::iota(all_rows.begin(), all_rows.end(), 0);
    rows = all_rows;
  }
  if (cols.empty()) {
    all_cols.resize(static_cast<size_t>(n_cols));
    std::iota(all_cols.begin(), all_cols.end(), 0);
    cols = all_cols;
  }
  std::vector<float> out;
  out.reserve(rows.size() * cols.size());
  for (int64_t r : rows)
    for (int64_t c : cols) out.push_back(w[r * n_cols + c]);
  return make_dense(t.name, Shape{{static_cast<int64_t>(rows.size()), static_cast<int64_t>(cols.size())}}, out, dtype);
}

Result<std::vector<float>> refit_columns(const std::vector<float>& w, int64_t rows, int64_t cols,
                                         const std::vector<double>& h, std::span<const int64_t> kept, double damp) {
  LLMC_CHECK(static_cast<int64_t>(h.size()) == cols * cols && static_cast<int64_t>(w.size()) == rows * cols);
  const auto k = static_cast<int64_t>(kept.size());
  MatrixD hkk(k, k), wh = MatrixD::Zero(rows, k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) hkk(i, j) = h[kept[i] * cols + kept[j]];
  // wh = W H[:, K]: [rows, k]
  MatrixD hk(cols, k);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t j = 0; j < k; ++j) hk(c, j) = h[c * cols + kept[j]];
  const MatrixD wd =
      Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(w.data(), rows, cols)
          .cast<double>();
  wh.noalias() = wd * hk;
  const double mean_diag = k > 0 ? hkk.diagonal().mean() : 0.0;
  double lambda = damp * (mean_diag > 0 ? mean_diag : 1.0);
  for (int attempt = 0; attempt < 4; ++attempt, lambda *= 10.0) {
    MatrixD hd = hkk;
    hd.diagonal().array() += lambda;
    Eigen::LLT<MatrixD> llt(hd);
    if (llt.info() != Eigen::Success) continue;
    // W' = wh · hd⁻¹  ⇔  hd · W'ᵀ = whᵀ (hd symmetric)
    const MatrixD wt = llt.solve(wh.transpose());
    std::vector<float> out(static_cast<size_t>(rows * k));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < k; ++j) out[r * k + j] = static_cast<float>(wt(j, r));
    return out;
  }
  return make_error(ErrorCode::kInternal, "refit: the input covariance is not positive definite even with damping");
}

Result<PassReport> run_structured(Model& model, PassContext& ctx, const StructuredOptions& options,
                                  const StructuredUnits& kind, std::string_view pass_name) {
  const auto start = std::chrono::steady_clock::now();
  LLMC_TRY(options.validate());
  if (options.calibrated() && !ctx.calib)
    return make_error(ErrorCode::kInvalidArgument, pass_name, " with activation importance needs calibration data");
  const int64_t n_layers = model.config.n_layers;
  std::vector<LayerUnits> layers;
  for (int64_t l = 0; l < n_layers; ++l) layers.push_back(kind.units(model, l));
  auto out_proj = [&](int64_t l) -> const Tensor& { return model.get(layer_tensor_name(l, kind.out_proj())); };
  auto sq_mean_of = [&](const LayerStats& stats, int64_t l) -> Result<std::vector<double>> {
    const auto it = stats.find(layer_tensor_name(l, kind.out_proj()));
    if (it == stats.end() || !it->second || it->second->cols != out_proj(l).cols())
      return make_error(ErrorCode::kInternal, pass_name, ": no input statistics for layer ", l);
    std::vector<double> m = it->second->sq_sum;
    for (double& v : m) v /= static_cast<double>(std::max<int64_t>(1, it->second->tokens));
    return m;
  };
  auto score = [&](int64_t l, const std::vector<double>& sq_mean) {
    const Tensor& w = out_proj(l);
    score_units(layers[l], w.to_f32(), w.rows(), w.cols(), sq_mean);
  };

  // Scores that decide the allocation: magnitude, or (global) the unpruned model's activations.
  if (!options.calibrated()) {
    for (int64_t l = 0; l < n_layers; ++l) score(l, {});
  } else if (options.allocation == "global") {
    LLMC_ASSIGN_OR_RETURN(const LayerStats stats, ctx.calib->collect_all(model, StatsRequest{}, ctx.threads));
    for (int64_t l = 0; l < n_layers; ++l) {
      LLMC_ASSIGN_OR_RETURN(const auto m, sq_mean_of(stats, l));
      score(l, m);
    }
  }
  LLMC_ASSIGN_OR_RETURN(const std::vector<int64_t> steps,
                        allocate_steps(layers, options.sparsity, options.allocation, kind.what()));

  PassReport report;
  report.pass = std::string(pass_name);
  std::unique_ptr<CalibrationSet::Sequential> seq;
  if (options.calibrated()) {
    LLMC_ASSIGN_OR_RETURN(seq, ctx.calib->sequential(model, ctx.threads));
  }
  int64_t before = 0, after = 0;
  for (int64_t l = 0; l < n_layers; ++l) {
    LayerStats stats;
    if (seq) {
      // Selection (and refit) on the activations of the model with layers < l already pruned.
      StatsRequest request;
      request.xtx = options.refit;
      LLMC_ASSIGN_OR_RETURN(stats, seq->collect(l, request));
      LLMC_ASSIGN_OR_RETURN(const auto m, sq_mean_of(stats, l));
      score(l, m);
    }
    const std::vector<int64_t> kept = kept_units(layers[l], steps[l]);
    std::vector<float> refit;
    if (seq && options.refit) {
      std::vector<int64_t> cols;
      for (int64_t u : kept) cols.insert(cols.end(), layers[l].out_cols[u].begin(), layers[l].out_cols[u].end());
      const Tensor& w = out_proj(l);
      LLMC_ASSIGN_OR_RETURN(refit,
                            refit_columns(w.to_f32(), w.rows(), w.cols(), stats.at(w.name)->xtx, cols, options.damp));
    }
    if (auto r = kind.apply(model, l, kept, refit.empty() ? nullptr : &refit); !r.ok())
      return with_context(r.error(), str_cat(pass_name, ": layer ", l));
    if (seq) LLMC_TRY(seq->advance(l));
    report.details[str_cat("blk.", l)] = {{"units", layers[l].units()}, {"kept", static_cast<int64_t>(kept.size())}};
    before += layers[l].units();
    after += static_cast<int64_t>(kept.size());
    report_progress(pass_name, l + 1, n_layers, "layers");
  }
  if (auto v = validate_model(model); !v.ok()) return with_context(v.error(), str_cat(pass_name, " (internal)"));
  report.details["units"] = {{"before", before}, {"after", after}, {"what", kind.what()}};
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace llmc
