// GPTQ core shared by quant.gptq and quant.awq (then=gptq): one weight matrix quantized with
// Hessian-based error compensation, given its input's Σ x xᵀ.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "passes/quant/quant_methods.h"
#include "pipeline/calibration.h"

namespace llmc {

// H = 2/n Σ x xᵀ of one linear input prepared for GPTQ: dead columns (H_ii = 0) marked and set to
// 1, damping added, columns permuted (act_order), and the upper Cholesky factor of H⁻¹.
// Linears reading the same input (q/k/v, gate/up) share one.
struct GptqHessian {
  int64_t cols = 0;
  std::vector<double> diag;    // [cols] H_ii before damping (dead columns: 1), original order
  std::vector<uint8_t> dead;   // [cols] 1 where H_ii was 0: the weight column is zeroed
  std::vector<int64_t> perm;   // [cols] processing order (identity unless act_order)
  std::vector<double> hinv_u;  // [cols, cols] row-major upper Cholesky factor of H⁻¹ (permuted)
  double damp_used = 0;        // fraction of mean(diag H) finally added
};

// Prepares H from Σ x xᵀ ([cols, cols] row-major, `tokens` inputs; `col_scale` (may be empty)
// divides column/row c by col_scale[c]: the Hessian of inputs x / s after AWQ scaling).
// kInvalidArgument when Cholesky fails even after raising the damping 1000×. The result does not
// depend on `threads` (0 = all).
Result<std::shared_ptr<const GptqHessian>> prepare_gptq_hessian(std::span<const double> xtx, int64_t cols,
                                                                int64_t tokens, std::span<const float> col_scale,
                                                                const GptqOptions& options, int threads = 1);

struct GptqTensorResult {
  QuantEncoding encoding;
  std::vector<float> dequant;  // [rows, cols] decode_to_f32 of `encoding`, bit for bit
  double loss = 0;             // Σ over weights of ((w - q) / [H⁻¹]_ii)² / 2 (GPTQ's proxy loss)
};

// GPTQ of w [rows, cols] (row-major). Rows are processed in fixed tiles in parallel on `threads`
// (0 = all): the result does not depend on the thread count. `importance` weights fit_group's
// error by diag(H).
GptqTensorResult gptq_quantize(const QuantSpec& spec, std::span<const float> w, int64_t rows, int64_t cols,
                               const GptqHessian& h, const ScaleSearch& search, const GptqOptions& options,
                               int threads);

// ---- The sequential driver shared by quant.gptq and quant.awq ----

// A selected tensor (default weight target, chosen by ctx.selector, spec_for non-null) and its spec.
struct QuantTarget {
  std::string name;
  QuantSpec spec;
};
std::vector<QuantTarget> select_quant_targets(const Model& model, const PassContext& ctx, const SpecFor& spec_for);

// Layer index of a "blk.N.…" name; -1 for globals.
int64_t tensor_layer(const std::string& name);

// Input column scales s of edited linears: the model's weight is now W·diag(s) and its inputs
// x / s (AWQ), so the Hessian and importance of x are rescaled accordingly.
using ColumnScales = std::map<std::string, std::vector<float>>;
// Called once per layer with that layer's statistics and selected tensors, before they are
// quantized; may edit the layer's weights (AWQ folds scales) and adds to `details`.
using LayerEdit = std::function<Result<ColumnScales>(Model& model, int64_t layer, const LayerStats& stats,
                                                     const std::vector<QuantTarget>& targets, nlohmann::json& details)>;

struct SequentialQuantPlan {
  const char* task = "quant";  // progress task name
  bool gptq = true;            // GPTQ each linear, else RTN
  StatsRequest request;        // what collect() gathers per layer
  LayerEdit edit;              // may be empty
};

// Runs a quantization method layer by layer (DESIGN.md §2: peak memory tracks one layer): the
// token embedding (tied or not) is RTN-quantized first (it is a lookup, not a linear), then for
// each block: collect its input statistics, edit, quantize its selected linears, advance; then
// an untied output head.
Result<nlohmann::json> run_sequential_quant(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                            const ScaleSearch& search, const GptqOptions& options,
                                            const SequentialQuantPlan& plan);

}  // namespace llmc
