// quant.awq: activation-aware weight quantization (Lin et al. 2023) — per input channel scales s
// searched on calibration inputs, folded exactly into the preceding norm or linear, then RTN or GPTQ.
// Eigen's own OpenMP GEMM is off (thread-count-independent results); the α grid runs in parallel.
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/log.h"
#include "core/lowrank.h"
#include "model/arch.h"
#include "passes/quant/quant_gptq.h"

namespace llmc {

namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Linears reading one input, and the tensor whose output that input is (scaled by 1/s there).
struct AwqGroup {
  const char* prev;       // a norm weight [cols] or a linear whose rows produce the input
  const char* prev_bias;  // bias of `prev` (rows scaled too), or nullptr
  const char* linears[3];
  bool gqa;  // v → o: one scale per v row, applied to every o column that row feeds
};
const AwqGroup kAwqGroups[] = {
    {"attn_norm.weight", nullptr, {"attn_q.weight", "attn_k.weight", "attn_v.weight"}, false},
    {"attn_v.weight", "attn_v.bias", {"attn_output.weight", nullptr, nullptr}, true},
    {"ffn_norm.weight", nullptr, {"ffn_gate.weight", "ffn_up.weight", nullptr}, false},
    {"ffn_up.weight", nullptr, {"ffn_down.weight", nullptr, nullptr}, false},
};

// Mean |x| below this fraction of the largest channel's is raised to it: a channel that never
// fired in calibration must not get a tiny scale (its norm weight would be divided by it).
constexpr double kMinChannelFraction = 1e-3;
constexpr double kMinScale = 1e-4;  // AWQ's clamp of s before normalization

// Σ over rows of ΔW G ΔWᵀ with ΔW = W - Q(W·diag(s))·diag(s)⁻¹: the output error on the samples.
// RTN treats rows independently, so the rows go a block at a time (the working copies of a
// [1536, 576] weight were 21 MB per grid thread); u8 scales fit their grids over the whole tensor,
// so they take it at once.
double scaled_quant_error(const QuantSpec& spec, const std::vector<float>& w, int64_t rows, int64_t cols,
                          const std::vector<float>& s, const RowMatrix& gram, const ScaleSearch& search) {
  const int64_t block = spec.scale_dtype == DType::kU8 ? rows : std::max<int64_t>(1, (int64_t{1} << 16) / cols);
  double sum = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t n = std::min(block, rows - r0);
    std::vector<float> ws(static_cast<size_t>(n * cols));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < cols; ++c) ws[r * cols + c] = w[(r0 + r) * cols + c] * s[c];
    std::vector<float> dq;
    quantize_rtn(spec, ws, n, cols, {}, search, &dq);
    RowMatrix delta(n, cols);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < cols; ++c)
        delta(r, c) = static_cast<double>(w[(r0 + r) * cols + c]) - static_cast<double>(dq[r * cols + c]) / s[c];
    sum += (delta * gram).cwiseProduct(delta).sum();
  }
  return sum;
}

struct GroupTensors {
  std::vector<const QuantTarget*> linears;
  std::vector<std::vector<float>> weights;
};

// Searches and folds one group's scales; returns the column scale of its linears (empty = skipped).
Result<std::vector<float>> scale_group(Model& model, int64_t layer, const AwqGroup& group, const LayerStats& stats,
                                       const std::vector<QuantTarget>& targets, const ScaleSearch& search,
                                       const AwqOptions& awq, int threads, nlohmann::json& details) {
  const ModelConfig& cfg = model.config;
  auto selected = [&](const std::string& name) -> const QuantTarget* {
    for (const QuantTarget& t : targets)
      if (t.name == name) return &t;
    return nullptr;
  };
  GroupTensors g;
  for (const char* suffix : group.linears) {
    if (!suffix) continue;
    const QuantTarget* t = selected(layer_tensor_name(layer, suffix));
    if (!t) return std::vector<float>();  // part of the group stays as it is: scaling would change it
    g.linears.push_back(t);
  }
  const std::string prev_name = layer_tensor_name(layer, group.prev);
  const Tensor* prev = model.find(prev_name);
  if (!prev) return std::vector<float>();
  const bool prev_is_norm = tensor_role(prev_name) == TensorRole::kNorm;
  if (!prev_is_norm && !selected(prev_name)) return std::vector<float>();

  const Tensor& first = model.get(g.linears[0]->name);
  const int64_t cols = first.cols();
  const int64_t prev_len = prev_is_norm ? prev->numel() : prev->rows();
  // Map from linear column to the prev channel producing it.
  std::vector<int64_t> chan(cols);
  if (group.gqa) {
    const int64_t heads = cfg.heads(layer), kv_heads = cfg.kv_heads(layer);  // per layer after structured pruning
    const int64_t rep = kv_heads > 0 ? heads / kv_heads : 0;
    if (rep <= 0 || cols != heads * cfg.head_dim || prev_len != kv_heads * cfg.head_dim) return std::vector<float>();
    for (int64_t c = 0; c < cols; ++c) chan[c] = (c / cfg.head_dim / rep) * cfg.head_dim + c % cfg.head_dim;
  } else {
    if (prev_len != cols) return std::vector<float>();
    for (int64_t c = 0; c < cols; ++c) chan[c] = c;
  }
  for (const QuantTarget* t : g.linears)
    if (model.get(t->name).cols() != cols)
      return make_error(ErrorCode::kShape, "AWQ: ", t->name, " and ", g.linears[0]->name, " differ in columns");

  auto it = stats.find(g.linears[0]->name);
  if (it == stats.end() || it->second->n_samples <= 0 || it->second->cols != cols) {
    log_warn("AWQ: no calibration samples for ", g.linears[0]->name, "; its group is not scaled");
    return std::vector<float>();
  }
  const LinearInputStats& st = *it->second;
  const int64_t n = st.n_samples;
  if (st.samples.size() != static_cast<size_t>(n * cols))
    return make_error(ErrorCode::kInternal, "AWQ: ", g.linears[0]->name, " has ", st.samples.size(),
                      " sample values, expected ", n, " x ", cols);

  // Mean |x| per prev channel, and the Gram matrix of the samples.
  std::vector<double> mean_abs(prev_len, 0.0), count(prev_len, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) {
      mean_abs[chan[c]] += std::fabs(st.samples[i * cols + c]);
      count[chan[c]] += 1;
    }
  double top = 0;
  for (int64_t p = 0; p < prev_len; ++p) {
    mean_abs[p] = count[p] > 0 ? mean_abs[p] / count[p] : 0.0;
    top = std::max(top, mean_abs[p]);
  }
  if (!(top > 0)) return std::vector<float>();
  for (double& m : mean_abs) m = std::max(m, top * kMinChannelFraction);
  // Gram in double over chunks of samples (a double copy of all 4096 x 1536 samples was 50 MB).
  RowMatrix gram = RowMatrix::Zero(cols, cols);
  {
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> x(st.samples.data(), n,
                                                                                              cols);
    constexpr int64_t kChunk = 256;
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const RowMatrix xd = x.middleRows(i0, std::min(kChunk, n - i0)).cast<double>();
      gram.noalias() += xd.transpose() * xd;
    }
  }
  for (const QuantTarget* t : g.linears) g.weights.push_back(model.get(t->name).to_f32());

  auto scales_for = [&](double alpha) {
    std::vector<float> s(prev_len);
    double lo = INFINITY, hi = 0;
    std::vector<double> raw(prev_len);
    for (int64_t p = 0; p < prev_len; ++p) {
      raw[p] = std::max(std::pow(mean_abs[p], alpha), kMinScale);
      lo = std::min(lo, raw[p]);
      hi = std::max(hi, raw[p]);
    }
    const double norm = std::sqrt(lo * hi);
    for (int64_t p = 0; p < prev_len; ++p) s[p] = static_cast<float>(raw[p] / norm);
    return s;
  };
  auto column_scales = [&](const std::vector<float>& s) {
    std::vector<float> sc(cols);
    for (int64_t c = 0; c < cols; ++c) sc[c] = s[chan[c]];
    return sc;
  };

  const int64_t steps = std::max<int64_t>(1, awq.grid);
  std::vector<double> loss(steps + 1, 0.0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(resolve_threads(threads))
  for (int64_t i = 0; i <= steps; ++i) {
    const std::vector<float> sc = column_scales(scales_for(static_cast<double>(i) / steps));
    double sum = 0;
    for (size_t k = 0; k < g.linears.size(); ++k) {
      const Tensor& t = model.get(g.linears[k]->name);
      sum += scaled_quant_error(g.linears[k]->spec, g.weights[k], t.rows(), cols, sc, gram, search);
    }
    loss[i] = sum;
  }
  int64_t best = 0;  // α = 0 (no scaling, plain RTN) unless something is strictly better
  for (int64_t i = 1; i <= steps; ++i)
    if (loss[i] < loss[best]) best = i;
  const double alpha = static_cast<double>(best) / steps;
  const std::vector<float> s = scales_for(alpha);
  const std::vector<float> sc = column_scales(s);

  // Fold: linears W·diag(s); prev output / s. Folded tensors are f32 Dense (norms stay so).
  for (size_t k = 0; k < g.linears.size(); ++k) {
    const Tensor& t = model.get(g.linears[k]->name);
    std::vector<float>& w = g.weights[k];
    for (int64_t r = 0; r < t.rows(); ++r)
      for (int64_t c = 0; c < cols; ++c) w[r * cols + c] *= sc[c];
    replace_and_release(model, make_dense_f32(t.name, t.shape, w));
    details[t.name]["awq_alpha"] = alpha;
    details[t.name]["awq_loss"] = {{"rtn", loss[0]}, {"scaled", loss[best]}};
  }
  auto fold_rows = [&](const std::string& name) {
    const Tensor* t = model.find(name);
    if (!t) return;
    std::vector<float> v = t->to_f32();
    const int64_t tc = t->cols();
    for (int64_t p = 0; p < t->rows(); ++p)
      for (int64_t c = 0; c < tc; ++c) v[p * tc + c] /= s[p];
    replace_and_release(model, make_dense_f32(t->name, t->shape, v));
  };
  if (prev_is_norm) {
    std::vector<float> v = prev->to_f32();
    for (int64_t p = 0; p < prev_len; ++p) v[p] /= s[p];
    replace_and_release(model, make_dense_f32(prev_name, prev->shape, v));
  } else {
    fold_rows(prev_name);
    if (group.prev_bias) {
      const std::string bias = layer_tensor_name(layer, group.prev_bias);
      if (const Tensor* b = model.find(bias)) {
        std::vector<float> v = b->to_f32();
        for (int64_t p = 0; p < prev_len && p < static_cast<int64_t>(v.size()); ++p) v[p] /= s[p];
        replace_and_release(model, make_dense_f32(bias, b->shape, v));
      }
    }
  }
  details[prev_name]["awq_folded_into"] = true;
  return sc;
}

}  // namespace

Result<nlohmann::json> quantize_model_awq(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                          const ScaleSearch& search, const AwqOptions& awq, const GptqOptions& gptq) {
  if (awq.then != "rtn" && awq.then != "gptq")
    return make_error(ErrorCode::kInvalidArgument, "quant.awq: then must be rtn or gptq, got '", awq.then, "'");
  if (awq.max_samples < 1 || awq.grid < 1)
    return make_error(ErrorCode::kInvalidArgument, "quant.awq: grid and max_samples must be at least 1");
  // AWQ folds channel scales into neighbouring weights as dense tensors: it would expand decompositions.
  for (const Tensor& t : model.tensors())
    if (is_decomposition(*t.encoding))
      return make_error(
          ErrorCode::kInvalidArgument, "quant.awq: '", t.name, "' is a ", encoding_kind_name(*t.encoding),
          " decomposition, which AWQ's scale folding would expand; quantize with quant.rtn or quant.gptq");
  const int threads = ctx.threads;
  SequentialQuantPlan plan;
  plan.task = "quant.awq";
  plan.gptq = awq.then == "gptq";
  plan.request.xtx = plan.gptq;
  plan.request.max_samples = awq.max_samples;
  plan.edit = [&](Model& m, int64_t layer, const LayerStats& stats, const std::vector<QuantTarget>& targets,
                  nlohmann::json& details) -> Result<ColumnScales> {
    ColumnScales scales;
    for (const AwqGroup& group : kAwqGroups) {
      LLMC_ASSIGN_OR_RETURN(std::vector<float> sc,
                            scale_group(m, layer, group, stats, targets, search, awq, threads, details));
      if (sc.empty()) continue;
      for (const char* suffix : group.linears)
        if (suffix) scales[layer_tensor_name(layer, suffix)] = sc;
    }
    return scales;
  };
  return run_sequential_quant(model, ctx, spec_for, search, gptq, plan);
}

// ---- The pass ----

namespace {

const char* const kThenChoices[] = {"rtn", "gptq"};

class AwqPass final : public Pass {
 public:
  std::string_view name() const override { return "quant.awq"; }
  PassNeeds needs() const override { return {.calibration = true}; }
  void visit(OptionVisitor& v) override {
    quant_.visit(v);
    v.option("grid", awq_.grid, "AWQ: steps of the scale exponent alpha over [0, 1]");
    v.option("then", awq_.then, "AWQ: how the scaled weights are quantized", kThenChoices);
    v.option("max_samples", awq_.max_samples, "AWQ: calibration inputs kept per linear for the scale search");
    v.option("damp", gptq_.damp, "then=gptq: fraction of mean(diag H) added to the Hessian diagonal");
    v.option("block_size", gptq_.block_size, "then=gptq: columns per lazy-batch update");
    v.option("act_order", gptq_.act_order, "then=gptq: process columns by decreasing activation energy");
  }
  Result<void> validate_options() const override {
    LLMC_TRY(quant_.spec());
    if (awq_.grid < 1 || awq_.grid > 1000)
      return make_error(ErrorCode::kInvalidArgument, "quant.awq: grid must be in 1..1000, got ", awq_.grid);
    if (awq_.then != "rtn" && awq_.then != "gptq")
      return make_error(ErrorCode::kInvalidArgument, "quant.awq: then must be rtn or gptq, got '", awq_.then, "'");
    if (awq_.max_samples < 1 || awq_.max_samples > (int64_t{1} << 20))
      return make_error(ErrorCode::kInvalidArgument, "quant.awq: max_samples must be in 1..1048576, got ",
                        awq_.max_samples);
    if (!(gptq_.damp >= 0 && gptq_.damp < 1))
      return make_error(ErrorCode::kInvalidArgument, "quant.awq: damp must be in [0, 1), got ", gptq_.damp);
    if (gptq_.block_size < 1 || gptq_.block_size > 65536)
      return make_error(ErrorCode::kInvalidArgument, "quant.awq: block_size must be in 1..65536, got ",
                        gptq_.block_size);
    return {};
  }
  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_TRY(validate_options());
    LLMC_ASSIGN_OR_RETURN(QuantSpec spec, quant_.spec());
    GptqOptions gptq = gptq_;
    gptq.importance = quant_.importance;
    ScaleSearch search;
    search.steps = static_cast<int>(quant_.clip_search);
    PassReport report;
    report.pass = "quant.awq";
    LLMC_ASSIGN_OR_RETURN(
        report.details,
        quantize_model_awq(
            model, ctx, [spec](const std::string&) { return std::optional<QuantSpec>(spec); }, search, awq_, gptq));
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  QuantOptions quant_;
  AwqOptions awq_;
  GptqOptions gptq_;
};

}  // namespace

std::unique_ptr<Pass> make_quant_awq_pass() { return std::make_unique<AwqPass>(); }

}  // namespace llmc
