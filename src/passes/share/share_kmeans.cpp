// share.kmeans: weight sharing by (weighted) k-means into the Palette encoding — a codebook of 2^bits
// f16 entries per tensor, group of rows or row, optional dense-and-sparse outliers (docs/weight_sharing.md).
#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>

#include "core/log.h"
#include "core/palette.h"
#include "core/sparse.h"
#include "model/arch.h"
#include "passes/pass.h"
#include "passes/quant/quant_gptq.h"
#include "passes/share/share_math.h"
#include "pipeline/calibration.h"

namespace llmc {
namespace {

// FNV-1a of a tensor name: each tensor's k-means gets its own seed stream.
uint64_t name_hash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

double relative_error(std::span<const float> w, std::span<const float> q, std::span<const int32_t> columns) {
  double num = 0, den = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!columns.empty() && columns[i] < 0) continue;
    num += (static_cast<double>(w[i]) - q[i]) * (static_cast<double>(w[i]) - q[i]);
    den += static_cast<double>(w[i]) * w[i];
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

class ShareKmeansPass final : public Pass {
 public:
  std::string_view name() const override { return "share.kmeans"; }
  PassNeeds needs() const override { return {.calibration = weighted_ || gptq_}; }
  void visit(OptionVisitor& v) override {
    v.option("bits", bits_, "index bits 1..8: every codebook has exactly 2^bits f16 entries");
    v.option("granularity", granularity_,
             "one codebook per tensor, per row, or per group of N rows (tensor | row | rows:N)", {});
    v.option("weighted", weighted_,
             "weight k-means by each weight's sensitivity: its input's calibration statistic E[x_c^2] (the "
             "diagonal of the layer's output-error Hessian; needs calibration)");
    v.option("outliers", outliers_,
             "fraction of each codebook group's largest-|w| weights kept in a sparse f16 side part (dense-and-sparse), "
             "in [0, 1)");
    v.option("gptq", gptq_,
             "assign indices column by column with GPTQ error compensation, then refit the codebooks to the "
             "Hessian-weighted error, layer by layer (needs calibration; embeddings and Sparse tensors get their "
             "nearest entries)");
    v.option("int_grid", int_grid_,
             "round every codebook to the integer grid v * 2^k, v in -128..127, instead of any f16 value: "
             "4-bit and narrower palettes then run on int8 activations (the Quant integer kernel); costs a little "
             "accuracy (docs/weight_sharing.md)");
    v.option("iterations", iterations_, "Lloyd iterations at most per codebook");
    v.option("inits", inits_, "k-means++ seedings per codebook; the one with the lowest weighted error is kept");
  }
  Result<void> validate_options() const override {
    auto s = spec();
    if (!s.ok()) return s.error();
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_ASSIGN_OR_RETURN(const PaletteSpec spec, this->spec());
    LLMC_TRY(ctx.selector.compile());
    if ((weighted_ || gptq_) && !ctx.calib)
      return make_error(ErrorCode::kInvalidArgument, "share.kmeans: ", gptq_ ? "gptq" : "weighted",
                        " needs calibration data (--calib FILE or --calib-self N)");
    std::vector<std::string> names;
    for (const Tensor& t : model.tensors())
      if (ctx.selector.selects(t.name) && is_default_weight_target(model, t.name)) names.push_back(t.name);

    PassReport report;
    report.pass = std::string(name());
    if (gptq_) {
      LLMC_TRY(share_sequential(model, names, spec, ctx, report.details));
    } else {
      LayerStats stats;
      if (weighted_) {
        LLMC_ASSIGN_OR_RETURN(stats, ctx.calib->collect_all(model, StatsRequest{}, ctx.threads));
      }
      for (size_t i = 0; i < names.size(); ++i) {
        LLMC_TRY(share_tensor(model, names[i], spec, stats, nullptr, ctx, report.details));
        report_progress("share.kmeans", static_cast<int64_t>(i + 1), static_cast<int64_t>(names.size()), "tensors");
      }
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  Result<PaletteSpec> spec() const {
    PaletteSpec s;
    s.bits = static_cast<int>(std::clamp<int64_t>(bits_, INT32_MIN, INT32_MAX));
    auto g = parse_palette_granularity(granularity_);
    if (!g.ok()) return with_context(g.error(), "share.kmeans");
    s.group_rows = *g;
    s.outliers = outliers_;
    s.iterations = iterations_;
    s.inits = inits_;
    s.int_grid = int_grid_;
    if (auto v = validate_palette_spec(s); !v.ok()) return with_context(v.error(), "share.kmeans");
    return s;
  }

  // GPTQ compensation needs each layer's input statistics with the layers before it already shared
  // (DESIGN §2: layer by layer): embeddings first (lookups: nearest entries), then per block collect,
  // share its selected linears, advance; then an untied output head.
  Result<void> share_sequential(Model& model, const std::vector<std::string>& names, const PaletteSpec& spec,
                                PassContext& ctx, nlohmann::json& details) const {
    const std::string head_name = "output.weight";
    bool head = false;
    int64_t last_layer = -1;
    for (const std::string& n : names) {
      if (n == head_name)
        head = true;
      else if (tensor_role(n) == TensorRole::kEmbedding)
        LLMC_TRY(share_tensor(model, n, spec, {}, nullptr, ctx, details));
      last_layer = std::max(last_layer, tensor_layer(n));
    }
    const int64_t layers = head ? model.config.n_layers : last_layer + 1;
    if (layers <= 0 && !head) return {};
    LLMC_ASSIGN_OR_RETURN(auto seq, ctx.calib->sequential(model, ctx.threads));
    const StatsRequest request{.xtx = true};
    auto share_with = [&](const std::string& n, const LayerStats& stats) -> Result<void> {
      auto it = stats.find(n);
      if (it == stats.end() && stats.size() == 1) it = stats.begin();  // the head's statistics
      std::shared_ptr<const GptqHessian> h;
      if (it != stats.end() && std::get_if<SparseEncoding>(&model.get(n).encoding->node) == nullptr) {
        const LinearInputStats& st = *it->second;
        auto prepared = prepare_gptq_hessian(st.xtx, st.cols, st.tokens, {}, GptqOptions{});
        if (prepared.ok())
          h = *prepared;
        else
          log_warn(n, ": ", prepared.error().message, "; nearest entries without compensation");
      }
      LayerStats own;
      if (it != stats.end()) own[n] = it->second;
      return share_tensor(model, n, spec, own, h.get(), ctx, details);
    };
    for (int64_t l = 0; l < layers; ++l) {
      std::vector<std::string> in_layer;
      for (const std::string& n : names)
        if (tensor_layer(n) == l) in_layer.push_back(n);
      if (!in_layer.empty()) {
        LLMC_ASSIGN_OR_RETURN(LayerStats stats, seq->collect(l, request));
        for (const std::string& n : in_layer) LLMC_TRY(share_with(n, stats));
      }
      LLMC_TRY(seq->advance(l));
      report_progress("share.kmeans", l + 1, layers, "layers");
    }
    if (head) {
      LLMC_ASSIGN_OR_RETURN(LayerStats stats, seq->collect_head(request));
      LLMC_TRY(share_with(head_name, stats));
    }
    return {};
  }

  // Replaces one tensor by its Palette (a Sparse tensor keeps its pattern and gets Palette values)
  // and adds its report entry. `hessian` (GPTQ compensation) is ignored for Sparse tensors.
  Result<void> share_tensor(Model& model, const std::string& name, const PaletteSpec& spec, const LayerStats& stats,
                            const GptqHessian* hessian, const PassContext& ctx, nlohmann::json& details) const {
    auto entry = share_one(model, name, spec, stats, hessian, ctx);
    if (!entry.ok()) return with_context(entry.error(), str_cat("share.kmeans: tensor '", name, "'"));
    details[name] = std::move(entry).value();
    return {};
  }

  Result<nlohmann::json> share_one(Model& model, const std::string& name, const PaletteSpec& spec,
                                   const LayerStats& stats, const GptqHessian* hessian, const PassContext& ctx) const {
    const Tensor& t = model.get(name);
    const int64_t rows = t.rows(), cols = t.cols();
    // Sensitivity of input column c: E[x_c²] over the calibration tokens (a tied embedding gets the
    // output head's); tensors without statistics (an untied embedding is only a lookup) are unweighted.
    std::vector<float> col_weight;
    if (auto it = stats.find(name); weighted_ && it != stats.end() && it->second && it->second->cols == cols) {
      const double tokens = static_cast<double>(std::max<int64_t>(it->second->tokens, 1));
      for (double s : it->second->sq_sum) col_weight.push_back(static_cast<float>(s / tokens));
    }
    const uint64_t seed = ctx.seed ^ name_hash(name);
    const auto* sparse = std::get_if<SparseEncoding>(&t.encoding->node);
    std::vector<float> w;
    std::vector<int32_t> columns;
    int64_t fit_cols = cols;
    if (sparse) {  // pruned then shared: the kept values [rows, kept_stride] become the Palette
      fit_cols = sparse->kept_stride;
      w.resize(static_cast<size_t>(rows * fit_cols));
      if (!w.empty()) decode_rows_to_f32(*sparse->values, sparse_values_shape(*sparse, rows), 0, rows, w.data());
      columns.assign(w.size(), -1);
      for (int64_t r = 0; r < rows; ++r) sparse_row_columns(*sparse, cols, r, columns.data() + r * fit_cols);
    } else {
      w = t.to_f32();
    }
    if (sparse) hessian = nullptr;
    LLMC_ASSIGN_OR_RETURN(PaletteFit fit,
                          fit_palette(w, rows, fit_cols, col_weight, columns, spec, seed, ctx.threads, hessian));
    const double rel_err = relative_error(w, fit.dequant, columns);
    auto palette = std::make_shared<const Encoding>(Encoding{std::move(fit.encoding)});
    EncodingPtr encoding = palette;
    if (sparse) {
      SparseEncoding s = *sparse;
      s.values = palette;
      encoding = std::make_shared<const Encoding>(Encoding{std::move(s)});
    }
    const size_t bytes = llmc::encoded_bytes(*encoding);
    nlohmann::json entry = {
        {"spec", describe_palette_spec(spec)},
        {"bpw", t.numel() ? 8.0 * static_cast<double>(bytes) / static_cast<double>(t.numel()) : 0.0},
        {"rel_err", rel_err},
        {"outliers", fit.outliers},
        {"weighted", !col_weight.empty()},
        {"gptq", hessian != nullptr},
    };
    if (sparse) entry["under"] = "sparse";
    replace_and_release(model, Tensor{name, t.shape, std::move(encoding)});
    return entry;
  }

  int64_t bits_ = 4;
  std::string granularity_ = "tensor";
  bool weighted_ = false;
  bool gptq_ = false;
  double outliers_ = 0;
  int64_t iterations_ = 100;
  int64_t inits_ = 4;
  bool int_grid_ = false;
};

}  // namespace

std::unique_ptr<Pass> make_share_kmeans_pass() { return std::make_unique<ShareKmeansPass>(); }

}  // namespace llmc
