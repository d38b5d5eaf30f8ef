// quant.gptq: GPTQ (Frantar et al. 2022) — per-layer Hessian-based error compensation — and the
// sequential layer-by-layer quantization driver it shares with quant.awq.
// Eigen's own OpenMP GEMM is off here: its blocking depends on the thread count, and results must
// not. Parallelism comes from fixed row tiles instead.
#define EIGEN_DONT_PARALLELIZE
#include "passes/quant/quant_gptq.h"

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "core/log.h"
#include "core/lowrank.h"
#include "formats/file_io.h"
#include "kernels/cpu/linalg.h"
#include "model/arch.h"
#include "passes/hessian.h"
#include "passes/lowrank/factor_quant.h"

namespace llmc {

namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows per tile: fixed so that the arithmetic of a row never depends on how many threads run.
constexpr int64_t kRowTile = 16;
// Damping multipliers tried in turn when Cholesky fails (H not positive definite).
constexpr double kDampRetry[] = {1, 10, 100, 1000};

}  // namespace

Result<std::shared_ptr<const GptqHessian>> prepare_gptq_hessian(std::span<const double> xtx, int64_t cols,
                                                                int64_t tokens, std::span<const float> col_scale,
                                                                const GptqOptions& options, int threads) {
  if (cols <= 0 || xtx.size() != static_cast<size_t>(cols * cols))
    return make_error(ErrorCode::kInternal, "GPTQ: X^T X has ", xtx.size(), " entries, expected ", cols, "^2");
  if (!col_scale.empty() && col_scale.size() != static_cast<size_t>(cols))
    return make_error(ErrorCode::kInternal, "GPTQ: ", col_scale.size(), " column scales for ", cols, " columns");
  auto h = std::make_shared<GptqHessian>();
  h->cols = cols;
  const double norm = 2.0 / static_cast<double>(std::max<int64_t>(tokens, 1));
  auto scale = [&](int64_t c) { return col_scale.empty() ? 1.0 : 1.0 / static_cast<double>(col_scale[c]); };

  // H = norm · S XᵀX S, with dead columns (H_ii not positive, or NaN) set to e_i: their weights
  // cannot matter, in the processing order.
  h->diag.resize(cols);
  h->dead.assign(cols, 0);
  for (int64_t i = 0; i < cols; ++i) {
    const double d = xtx[i * cols + i] * norm * scale(i) * scale(i);
    h->dead[i] = !(d > 0);
    h->diag[i] = h->dead[i] ? 1.0 : d;
  }
  h->perm.resize(cols);
  std::iota(h->perm.begin(), h->perm.end(), int64_t{0});
  if (options.act_order)
    std::stable_sort(h->perm.begin(), h->perm.end(), [&](int64_t a, int64_t b) { return h->diag[a] > h->diag[b]; });
  // Rebuilt for every damping attempt: the factorization consumes it.
  auto permuted_h = [&] {
    std::vector<double> hp(static_cast<size_t>(cols * cols));
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t pi = h->perm[i];
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t pj = h->perm[j];
        hp[i * cols + j] =
            h->dead[pi] || h->dead[pj] ? (pi == pj ? 1.0 : 0.0) : xtx[pi * cols + pj] * norm * scale(pi) * scale(pj);
      }
    }
    return hp;
  };

  const double mean_diag = std::accumulate(h->diag.begin(), h->diag.end(), 0.0) / static_cast<double>(cols);
  const double base_damp = options.damp > 0 ? options.damp : 1e-4;
  for (size_t attempt = 0; attempt < std::size(kDampRetry); ++attempt) {
    const double damp = attempt == 0 ? options.damp : base_damp * kDampRetry[attempt];
    std::optional<std::vector<double>> u = inverse_cholesky_upper(permuted_h(), cols, damp * mean_diag, threads);
    if (!u) continue;
    h->hinv_u = std::move(*u);
    h->damp_used = damp;
    if (attempt > 0) log_warn("GPTQ: Hessian needed damping ", damp, " (asked ", options.damp, ")");
    return std::shared_ptr<const GptqHessian>(std::move(h));
  }
  return make_error(ErrorCode::kInvalidArgument, "GPTQ: the Hessian (", cols,
                    " columns) is not positive definite even with damping ", base_damp * kDampRetry[3]);
}

GptqTensorResult gptq_quantize(const QuantSpec& spec, std::span<const float> w, int64_t rows, int64_t cols,
                               const GptqHessian& h, const ScaleSearch& search, const GptqOptions& options,
                               int threads) {
  LLMC_CHECK(h.cols == cols && w.size() == static_cast<size_t>(rows * cols));
  QuantRowsBuilder builder(spec, rows, cols);
  const int64_t group = std::clamp<int64_t>(builder.group_size(), 1, cols);
  const bool act_order = options.act_order;

  // Dead input columns are zeroed before anything is fitted.
  std::vector<float> w0(w.begin(), w.end());
  for (int64_t c = 0; c < cols; ++c)
    if (h.dead[c])
      for (int64_t r = 0; r < rows; ++r) w0[r * cols + c] = 0;
  if (spec.scale_dtype == DType::kU8) builder.set_scale_grid(w0);

  std::vector<float> imp;
  if (options.importance) imp.assign(h.diag.begin(), h.diag.end());
  auto imp_at = [&](int64_t c) { return imp.empty() ? nullptr : imp.data() + c; };

  // Static groups (act_order): every group's params come from the original weights.
  if (act_order)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < builder.groups_per_row(); ++g) {
        const int64_t c0 = g * group, n = std::min(group, cols - c0);
        builder.set_params(r, g, fit_group(spec, w0.data() + r * cols + c0, imp_at(c0), n, search));
      }

  // Blocks hold whole groups (in order) so a group starting in a block is fully error-updated.
  int64_t block = std::max<int64_t>(1, options.block_size);
  if (!act_order && group < cols) block = std::max<int64_t>(1, block / group) * group;

  Eigen::Map<const RowMatrix> u(h.hinv_u.data(), cols, cols);
  GptqTensorResult result;
  result.dequant.assign(rows * cols, 0.0f);
  const int64_t tiles = (rows + kRowTile - 1) / kRowTile;
  std::vector<double> tile_loss(tiles, 0.0);

#pragma omp parallel for schedule(dynamic, 1) num_threads(resolve_threads(threads))
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r0 = t * kRowTile, tr = std::min(kRowTile, rows - r0);
    RowMatrix wt(tr, cols);  // working weights, columns in processing order
    for (int64_t r = 0; r < tr; ++r)
      for (int64_t j = 0; j < cols; ++j) wt(r, j) = w0[(r0 + r) * cols + h.perm[j]];
    RowMatrix err(tr, block);
    std::vector<float> vals(static_cast<size_t>(std::max<int64_t>(group, 1)));
    double loss = 0;
    for (int64_t i1 = 0; i1 < cols; i1 += block) {
      const int64_t i2 = std::min(i1 + block, cols);
      for (int64_t j = i1; j < i2; ++j) {
        const int64_t c = h.perm[j], g = c / group;
        const double d = u(j, j);
        for (int64_t r = 0; r < tr; ++r) {
          const int64_t row = r0 + r;
          if (!act_order && c % group == 0) {
            const int64_t n = std::min(group, cols - c);  // columns c..c+n-1 are j..j+n-1 here
            for (int64_t k = 0; k < n; ++k) vals[k] = static_cast<float>(wt(r, j + k));
            builder.set_params(row, g, fit_group(spec, vals.data(), imp_at(c), n, search));
          }
          const GroupParams p = builder.params(row, g);
          const double x = wt(r, j);
          const uint32_t q = quantize_value(spec, p, static_cast<float>(x));
          const float deq = dequantize_code(spec, p, q);
          builder.set_code(row, c, q);
          result.dequant[row * cols + c] = deq;
          const double e = (x - deq) / d;
          loss += 0.5 * e * e;
          err(r, j - i1) = e;
          for (int64_t k = j + 1; k < i2; ++k) wt(r, k) -= e * u(j, k);
        }
      }
      if (i2 < cols)
        kernels::sub_matmul_f64(wt.data() + i2, cols, err.data(), block, h.hinv_u.data() + i1 * cols + i2, cols, tr,
                                cols - i2, i2 - i1);
    }
    tile_loss[t] = loss;
  }
  result.loss = std::accumulate(tile_loss.begin(), tile_loss.end(), 0.0);
  result.encoding = builder.finish();
  return result;
}

// ---- Sequential driver ----

std::vector<QuantTarget> select_quant_targets(const Model& model, const PassContext& ctx, const SpecFor& spec_for) {
  std::vector<QuantTarget> out;
  for (const Tensor& t : model.tensors()) {
    if (!is_default_weight_target(model, t.name) || !ctx.selector.selects(t.name)) continue;
    if (std::optional<QuantSpec> spec = spec_for(t.name)) out.push_back({t.name, *spec});
  }
  return out;
}

int64_t tensor_layer(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  int64_t layer = 0;
  size_t i = 4;
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i)
    layer = layer * 10 + (name[i] - '0');
  return i < name.size() && name[i] == '.' ? layer : -1;
}

namespace {

// Hessians prepared once per (shared input statistics, column scales) within a layer.
using HessianCache = std::map<std::pair<const void*, const void*>, std::shared_ptr<const GptqHessian>>;

double relative_error(std::span<const float> w, std::span<const float> q) {
  double num = 0, den = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    num += (static_cast<double>(w[i]) - q[i]) * (static_cast<double>(w[i]) - q[i]);
    den += static_cast<double>(w[i]) * w[i];
  }
  return den > 0 ? num / den : 0.0;
}

// Quantizes one tensor in place by GPTQ (when `gptq` and statistics with X^T X are given) or RTN
// (importance from the statistics when asked); returns its report entry.
Result<nlohmann::json> quantize_one(Model& model, const QuantTarget& target, const LinearInputStats* stats,
                                    std::span<const float> col_scale, bool gptq, const ScaleSearch& search,
                                    const GptqOptions& options, int threads, HessianCache& cache) {
  const Tensor& tensor = model.get(target.name);
  if (is_decomposition(*tensor.encoding)) {
    // LowRank/Tucker: each part by GPTQ with its own input's Hessian (V: the layer input; U: V̂ x),
    // or RTN where none is known; the tree is kept.
    if (!col_scale.empty())
      return make_error(ErrorCode::kInvalidArgument, "'", target.name,
                        "' is a decomposition: AWQ channel scaling does not apply (quantize it with rtn or gptq)");
    const PartQuantizer part = [&](std::span<const float> w, int64_t rows, int64_t cols, const PartInput& in,
                                   std::vector<float>& dequant) -> Result<QuantEncoding> {
      if (gptq && !in.xtx.empty()) {
        auto h = prepare_gptq_hessian(in.xtx, cols, in.tokens, {}, options, threads);
        if (h.ok()) {
          GptqTensorResult r = gptq_quantize(target.spec, w, rows, cols, **h, search, options, threads);
          dequant = std::move(r.dequant);
          return std::move(r.encoding);
        }
        log_warn(target.name, ": ", h.error().message, "; part quantized by RTN");
      }
      std::vector<float> imp;
      if (options.importance) imp.assign(in.sq_sum.begin(), in.sq_sum.end());
      return quantize_rtn(target.spec, w, rows, cols, imp, search, &dequant);
    };
    LLMC_ASSIGN_OR_RETURN(nlohmann::json entry, quantize_decomposition(model, target.name, stats, part));
    entry["spec"] = describe_quant_spec(target.spec);
    entry["method"] = gptq ? "gptq (parts)" : "rtn (parts)";
    return entry;
  }
  const int64_t rows = tensor.rows(), cols = tensor.cols();
  nlohmann::json entry = {{"spec", describe_quant_spec(target.spec)}};
  if (stats && stats->cols != cols)
    return make_error(ErrorCode::kInternal, "calibration statistics of ", target.name, " have ", stats->cols,
                      " columns, the weight ", cols);
  auto scaled = [&](int64_t c) { return col_scale.empty() ? 1.0 : static_cast<double>(col_scale[c]); };

  std::shared_ptr<const GptqHessian> hessian;
  std::string method = "rtn";
  const auto cached = stats ? cache.find({stats, col_scale.data()}) : cache.end();
  if (gptq && (cached != cache.end() || (stats && !stats->xtx.empty()))) {
    if (cached != cache.end()) {
      hessian = cached->second;  // null: its Cholesky failed (prepare_hessians warned)
    } else {
      auto prepared = prepare_gptq_hessian(stats->xtx, cols, stats->tokens, col_scale, options, threads);
      if (prepared.ok())
        hessian = *prepared;
      else
        log_warn(target.name, ": ", prepared.error().message, "; falling back to RTN");
      cache[{stats, col_scale.data()}] = hessian;
    }
    if (!hessian) method = "rtn (Cholesky failed)";
  } else if (gptq) {
    log_warn(target.name, ": no X^T X statistics; quantized by RTN");
  }
  QuantEncoding enc;
  if (hessian) {
    const std::vector<float> w = tensor.to_f32();
    GptqTensorResult r = gptq_quantize(target.spec, w, rows, cols, *hessian, search, options, threads);
    enc = std::move(r.encoding);
    entry["loss"] = r.loss;
    entry["damp"] = hessian->damp_used;
    entry["rel_err"] = relative_error(w, r.dequant);
    method = "gptq";
  } else {
    // RTN streams the rows: no f32 copy of the weight (a token embedding is the largest tensor).
    std::vector<float> col_imp;
    if (options.importance && stats && !stats->sq_sum.empty()) {
      col_imp.resize(cols);
      for (int64_t c = 0; c < cols; ++c)
        col_imp[c] =
            static_cast<float>(stats->sq_sum[c] / std::max<int64_t>(stats->tokens, 1) / (scaled(c) * scaled(c)));
    }
    const RowLoader load = [&tensor](int64_t r0, int64_t r1, float* out) {
      tensor_rows_to_f32(tensor, r0, r1, out);
      release_row_pages(tensor, r0, r1);
    };
    QuantError error;
    enc = quantize_rtn_rows(target.spec, rows, cols, load, col_imp, search, nullptr, &error);
    entry["rel_err"] = error.norm > 0 ? error.err / error.norm : 0.0;
  }
  entry["method"] = method;
  replace_and_release(model,
                      Tensor{tensor.name, tensor.shape, std::make_shared<const Encoding>(Encoding{std::move(enc)})});
  return entry;
}

// The Hessian factors of a stage's inputs (no column scales), prepared before its weights are
// quantized; each input's X^T X then goes (the entries that shared its statistics get one copy
// without it), so the [cols, cols] doubles are not held next to the factor while the weights are
// quantized. quantize_one finds the factors in `cache` under the copies. Statistics that a
// decomposition's input shares keep their X^T X (its parts derive their Hessians from it), and
// so do those of inputs no target reads.
void prepare_hessians(const Model& model, const std::vector<QuantTarget>& targets, LayerStats& stats,
                      const GptqOptions& options, int threads, HessianCache& cache) {
  std::set<const LinearInputStats*> keep, wanted;
  for (const auto& [name, st] : stats) {
    if (const Tensor* t = model.find(name); t && is_decomposition(*t->encoding)) keep.insert(st.get());
    if (std::any_of(targets.begin(), targets.end(), [&](const QuantTarget& q) { return q.name == name; }))
      wanted.insert(st.get());
  }
  std::map<const LinearInputStats*, std::shared_ptr<const LinearInputStats>> lean;
  for (const auto& [name, st] : stats) {
    if (!st || st->xtx.empty() || lean.count(st.get()) || keep.count(st.get()) || !wanted.count(st.get())) continue;
    auto copy = std::make_shared<LinearInputStats>();
    copy->cols = st->cols;
    copy->tokens = st->tokens;
    copy->sq_sum = st->sq_sum;
    copy->samples = st->samples;
    copy->n_samples = st->n_samples;
    auto prepared = prepare_gptq_hessian(st->xtx, st->cols, st->tokens, {}, options, threads);
    if (!prepared.ok()) log_warn(name, ": ", prepared.error().message, "; falling back to RTN");
    cache[{copy.get(), nullptr}] = prepared.ok() ? *prepared : nullptr;
    lean[st.get()] = std::move(copy);
  }
  for (auto& [name, st] : stats)
    if (auto it = lean.find(st.get()); it != lean.end()) st = it->second;
}

const LinearInputStats* find_stats(const LayerStats& stats, const std::string& name) {
  auto it = stats.find(name);
  return it == stats.end() ? nullptr : it->second.get();
}

}  // namespace

Result<nlohmann::json> run_sequential_quant(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                            const ScaleSearch& search, const GptqOptions& options,
                                            const SequentialQuantPlan& plan) {
  if (!ctx.calib)
    return make_error(ErrorCode::kInvalidArgument, plan.task,
                      " needs calibration data (--calib FILE or --calib-self N)");
  const std::vector<QuantTarget> targets = select_quant_targets(model, ctx, spec_for);
  nlohmann::json details = nlohmann::json::object();
  if (targets.empty()) return details;
  const int threads = resolve_threads(ctx.threads);
  // A tied token_embd is RTN-quantized first like an untied one (measured on stories260K: GPTQ of
  // it as the head gave 3-bit KLD 1.097 against 0.981 with RTN; docs/quant_gptq_awq.md).
  const std::string head_name = "output.weight";
  HessianCache cache;

  const QuantTarget* head = nullptr;
  int64_t last_layer = -1;
  for (const QuantTarget& t : targets) {
    if (t.name == head_name)
      head = &t;
    else if (tensor_role(t.name) == TensorRole::kEmbedding) {  // a lookup table, not a linear
      LLMC_ASSIGN_OR_RETURN(details[t.name],
                            quantize_one(model, t, nullptr, {}, false, search, options, threads, cache));
    }
    last_layer = std::max(last_layer, tensor_layer(t.name));
  }
  const int64_t layers = head ? model.config.n_layers : last_layer + 1;
  if (layers == 0 && !head) return details;

  LLMC_ASSIGN_OR_RETURN(auto seq, ctx.calib->sequential(model, threads));
  const bool staged = plan.gptq && options.true_sequential && !plan.edit;
  for (int64_t l = 0; l < layers; ++l) {
    std::vector<QuantTarget> layer_targets;
    for (const QuantTarget& t : targets)
      if (tensor_layer(t.name) == l) layer_targets.push_back(t);
    if (!layer_targets.empty() && staged) {
      LLMC_TRY(seq->collect_stages(l, plan.request, [&](LayerStats& stats) -> Result<void> {
        cache.clear();
        prepare_hessians(model, layer_targets, stats, options, threads, cache);
        for (const QuantTarget& t : layer_targets) {
          const LinearInputStats* st = find_stats(stats, t.name);
          if (!st) continue;  // another stage's group
          LLMC_ASSIGN_OR_RETURN(nlohmann::json entry,
                                quantize_one(model, t, st, {}, plan.gptq, search, options, threads, cache));
          details[t.name].update(entry);
        }
        return {};
      }));
      for (const QuantTarget& t : layer_targets)
        if (!details.contains(t.name))
          return make_error(ErrorCode::kInternal, "no calibration statistics for ", t.name);
    } else if (!layer_targets.empty()) {
      LLMC_ASSIGN_OR_RETURN(LayerStats stats, seq->collect(l, plan.request));
      ColumnScales scales;
      if (plan.edit) {
        LLMC_ASSIGN_OR_RETURN(scales, plan.edit(model, l, stats, layer_targets, details));
      }
      cache.clear();
      for (const QuantTarget& t : layer_targets) {
        const LinearInputStats* st = find_stats(stats, t.name);
        if (!st) return make_error(ErrorCode::kInternal, "no calibration statistics for ", t.name);
        auto sc = scales.find(t.name);
        std::span<const float> col_scale = sc == scales.end() ? std::span<const float>() : sc->second;
        LLMC_ASSIGN_OR_RETURN(nlohmann::json entry,
                              quantize_one(model, t, st, col_scale, plan.gptq, search, options, threads, cache));
        details[t.name].update(entry);
      }
    }
    LLMC_TRY(seq->advance(l));
    report_progress(plan.task, l + 1, layers, "layers");
  }
  if (head) {
    const bool need_stats = plan.gptq || options.importance;
    LayerStats stats;
    if (need_stats) {
      LLMC_ASSIGN_OR_RETURN(stats, seq->collect_head(plan.request));
    }
    const LinearInputStats* st = find_stats(stats, head->name);
    if (!st) st = find_stats(stats, "output.weight");
    if (!st && stats.size() == 1) st = stats.begin()->second.get();
    cache.clear();
    LLMC_ASSIGN_OR_RETURN(details[head->name],
                          quantize_one(model, *head, st, {}, plan.gptq, search, options, threads, cache));
  }
  return details;
}

Result<nlohmann::json> quantize_model_gptq(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                           const ScaleSearch& search, const GptqOptions& options) {
  SequentialQuantPlan plan;
  plan.task = "quant.gptq";
  plan.gptq = true;
  plan.request.xtx = true;
  return run_sequential_quant(model, ctx, spec_for, search, options, plan);
}

// ---- The pass ----

namespace {

class GptqPass final : public Pass {
 public:
  std::string_view name() const override { return "quant.gptq"; }
  PassNeeds needs() const override { return {.calibration = true}; }
  void visit(OptionVisitor& v) override {
    quant_.visit(v);
    v.option("damp", gptq_.damp, "GPTQ damping: fraction of mean(diag H) added to the Hessian diagonal");
    v.option("block_size", gptq_.block_size, "GPTQ columns per lazy-batch update");
    v.option("act_order", gptq_.act_order, "GPTQ: process columns by decreasing activation energy (static groups)");
    v.option("true_sequential", gptq_.true_sequential,
             "GPTQ: calibrate each group of a block's linears with the block's earlier groups already quantized");
  }
  Result<void> validate_options() const override {
    LLMC_TRY(quant_.spec());
    if (!(gptq_.damp >= 0 && gptq_.damp < 1))
      return make_error(ErrorCode::kInvalidArgument, "quant.gptq: damp must be in [0, 1), got ", gptq_.damp);
    if (gptq_.block_size < 1 || gptq_.block_size > 65536)
      return make_error(ErrorCode::kInvalidArgument, "quant.gptq: block_size must be in 1..65536, got ",
                        gptq_.block_size);
    return {};
  }
  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_TRY(validate_options());
    LLMC_ASSIGN_OR_RETURN(QuantSpec spec, quant_.spec());
    GptqOptions options = gptq_;
    options.importance = quant_.importance;
    ScaleSearch search;
    search.steps = static_cast<int>(quant_.clip_search);
    PassReport report;
    report.pass = "quant.gptq";
    LLMC_ASSIGN_OR_RETURN(
        report.details,
        quantize_model_gptq(
            model, ctx, [spec](const std::string&) { return std::optional<QuantSpec>(spec); }, search, options));
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  QuantOptions quant_;
  GptqOptions gptq_;
};

}  // namespace

std::unique_ptr<Pass> make_quant_gptq_pass() { return std::make_unique<GptqPass>(); }

}  // namespace llmc
