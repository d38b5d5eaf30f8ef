// prune.layers: remove whole transformer blocks whose output is closest in angle to their input on
// calibration text, and renumber the remaining blocks.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numbers>
#include <numeric>

#include "core/log.h"
#include "model/arch.h"
#include "passes/prune/prune_passes.h"
#include "pipeline/calibration.h"
#include "runtime/runtime.h"

namespace llmc {
namespace {

constexpr const char* kModes[] = {"individual", "contiguous"};

// Σ over tokens of the angular distance arccos(cos(a_t, b_t)) / π between rows of a, b [n, dim].
double angular_distance_sum(const float* a, const float* b, int64_t n, int64_t dim) {
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < dim; ++i) {
      const double x = a[t * dim + i], y = b[t * dim + i];
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    const double cos = aa > 0 && bb > 0 ? std::clamp(ab / std::sqrt(aa * bb), -1.0, 1.0) : 1.0;
    sum += std::acos(cos) / std::numbers::pi;
  }
  return sum;
}

// "blk.N.rest" -> (N, "rest"); layer -1 for global tensors.
std::pair<int64_t, std::string> split_block_name(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return {-1, name};
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return {-1, name};
  return {std::stoll(name.substr(4, dot - 4)), name.substr(dot + 1)};
}

// The model without the blocks in `removed`, the others renumbered in order; per-layer widths follow.
Result<Model> without_layers(const Model& model, const std::vector<int64_t>& removed) {
  Model out;
  out.config = model.config;
  out.tokenizer = model.tokenizer;
  out.metadata = model.metadata;
  const int64_t n_layers = model.config.n_layers;
  std::vector<int64_t> new_index(static_cast<size_t>(n_layers), -1);
  std::vector<int64_t> heads, kv_heads, hidden;
  for (int64_t l = 0, next = 0; l < n_layers; ++l) {
    if (std::find(removed.begin(), removed.end(), l) != removed.end()) continue;
    new_index[l] = next++;
    heads.push_back(model.config.heads(l));
    kv_heads.push_back(model.config.kv_heads(l));
    hidden.push_back(model.config.hidden(l));
  }
  out.config.n_layers = static_cast<int64_t>(heads.size());
  out.config.set_layer_widths(std::move(heads), std::move(kv_heads), std::move(hidden));
  for (const Tensor& t : model.tensors()) {
    const auto [layer, rest] = split_block_name(t.name);
    if (layer < 0) {
      LLMC_TRY(out.add(t));
    } else if (layer < n_layers && new_index[layer] >= 0) {
      LLMC_TRY(out.add(Tensor{layer_tensor_name(new_index[layer], rest.c_str()), t.shape, t.encoding}));
    }
  }
  LLMC_TRY(validate_model(out));
  return out;
}

class PruneLayers final : public Pass {
 public:
  std::string_view name() const override { return "prune.layers"; }
  PassNeeds needs() const override { return {.calibration = true}; }
  void visit(OptionVisitor& v) override {
    v.option("sparsity", sparsity_, "Fraction of the layers removed, in [0, 1) (rounded to a whole number of layers)");
    v.option("count", count_, "Layers removed (overrides sparsity when > 0)");
    v.option("mode", mode_,
             "individual: the layers with the smallest input/output angular distance (ShortGPT); contiguous: the "
             "block of consecutive layers with the smallest distance between its input and output (Gromov et al.)",
             kModes);
  }
  Result<void> validate_options() const override {
    if (!(sparsity_ >= 0.0 && sparsity_ < 1.0))
      return make_error(ErrorCode::kInvalidArgument, "sparsity ", sparsity_, " outside [0, 1)");
    if (count_ < 0) return make_error(ErrorCode::kInvalidArgument, "count ", count_, " is negative");
    if (std::find(std::begin(kModes), std::end(kModes), mode_) == std::end(kModes))
      return make_error(ErrorCode::kInvalidArgument, "mode '", mode_, "' is not individual or contiguous");
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_TRY(validate_options());
    if (!ctx.calib) return make_error(ErrorCode::kInvalidArgument, "prune.layers needs calibration data");
    const int64_t n_layers = model.config.n_layers;
    const int64_t n = count_ > 0 ? count_ : std::llround(sparsity_ * static_cast<double>(n_layers));
    if (n >= n_layers)
      return make_error(ErrorCode::kInvalidArgument, "prune.layers: removing ", n, " of the ", n_layers,
                        " layers would leave none");
    PassReport report;
    report.pass = std::string(name());
    if (n == 0) return report;
    LLMC_ASSIGN_OR_RETURN(const std::vector<double> distance, distances(model, *ctx.calib, n, ctx.threads));
    std::vector<int64_t> removed;
    if (mode_ == "individual") {
      std::vector<int64_t> order(static_cast<size_t>(n_layers));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return distance[a] < distance[b]; });
      removed.assign(order.begin(), order.begin() + n);
      std::sort(removed.begin(), removed.end());
    } else {
      const auto first = std::min_element(distance.begin(), distance.end()) - distance.begin();
      for (int64_t l = first; l < first + n; ++l) removed.push_back(l);
    }
    LLMC_ASSIGN_OR_RETURN(model, without_layers(model, removed));
    report.details["removed"] = removed;
    report.details["angular_distance"] = distance;
    report.details["mode"] = mode_;
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  // Mean angular distance over the calibration tokens between the hidden state entering block l
  // and the one leaving block l (individual: [n_layers]) or block l + n - 1 (contiguous:
  // [n_layers - n + 1]).
  Result<std::vector<double>> distances(const Model& model, const CalibrationSet& calib, int64_t n, int threads) const {
    const int64_t n_layers = model.config.n_layers, dim = model.config.dim;
    const bool contiguous = mode_ == "contiguous";
    int64_t longest = 1, tokens = 0;
    for (const auto& s : calib.sequences()) longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
    LLMC_ASSIGN_OR_RETURN(auto runner, BlockRunner::create(model, longest, threads));
    std::vector<double> sum(static_cast<size_t>(contiguous ? n_layers - n + 1 : n_layers), 0.0);
    for (size_t i = 0; i < calib.sequences().size(); ++i) {
      const auto& seq = calib.sequences()[i];
      const auto len = static_cast<int64_t>(seq.size());
      // states[l]: the hidden state entering block l, [len, dim]; states[n_layers] leaves the last.
      std::vector<std::vector<float>> states(static_cast<size_t>(n_layers + 1));
      states[0].resize(static_cast<size_t>(len * dim));
      LLMC_TRY(runner->embed(seq, states[0].data()));
      for (int64_t l = 0; l < n_layers; ++l) {
        states[l + 1] = states[l];
        LLMC_TRY(runner->forward_layer(l, states[l + 1].data(), len, nullptr));
      }
      for (size_t l = 0; l < sum.size(); ++l) {
        const size_t to = contiguous ? l + static_cast<size_t>(n) : l + 1;
        sum[l] += angular_distance_sum(states[l].data(), states[to].data(), len, dim);
      }
      tokens += len;
      report_progress("prune.layers", static_cast<int64_t>(i + 1), static_cast<int64_t>(calib.sequences().size()),
                      "sequences");
    }
    for (double& s : sum) s /= static_cast<double>(std::max<int64_t>(1, tokens));
    return sum;
  }

  double sparsity_ = 0.25;
  int64_t count_ = 0;
  std::string mode_ = "individual";
};

}  // namespace

std::unique_ptr<Pass> make_prune_layers() { return std::make_unique<PruneLayers>(); }

}  // namespace llmc
