// Library entry points of the quantization methods, shared by their passes (quant.rtn, quant.gptq,
// quant.awq, quant.binary, quant.ternary) and by mixed precision (quant.mixed), which runs a method
// with a per-tensor spec.
#pragma once

#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "passes/pass.h"
#include "passes/quant/quant_math.h"

namespace llmc {

// Options every quantization pass declares with the same names (visit_quant_options), so CLI
// flags and recipe keys are the same for all methods:
//   bits, scheme (sym|asym|binary|ternary), group_size (0 = row), scale_dtype (f16|bf16|f32|u8),
//   scale_block, trits5, two_level, clip_search (grid steps, 0 = off), importance (use calibration
//   activation statistics to weight rounding/scale search; needs calibration).
struct QuantOptions {
  int64_t bits = 4;
  std::string scheme = "asym";
  int64_t group_size = 32;
  std::string scale_dtype = "f16";
  int64_t scale_block = 256;
  bool trits5 = false;
  bool two_level = false;
  int64_t clip_search = 0;
  bool importance = false;
  void visit(OptionVisitor& v);
  // Declares only the named options (passes with a fixed scheme declare a subset).
  void visit_only(OptionVisitor& v, std::initializer_list<std::string_view> names);
  Result<QuantSpec> spec() const;  // kInvalidArgument for impossible values
  ScaleSearch search() const { return ScaleSearch{static_cast<int>(clip_search), 0.7}; }
};

// GPTQ / AWQ specific options (declared by their passes only).
struct GptqOptions {
  double damp = 0.01;        // fraction of mean(diag H) added to the diagonal
  int64_t block_size = 128;  // columns per lazy-batch update
  bool act_order = false;    // process columns by decreasing H_ii (groups stay static)
  // Each group of a block's linears (q/k/v, o, gate/up, down) is calibrated on inputs computed
  // with the block's earlier groups already quantized, in one forward of the block (otherwise
  // all on the unquantized block, then a second forward). Not with AWQ's scaling.
  bool true_sequential = true;
  bool importance = false;  // not an option of its own: the pass copies QuantOptions::importance
};
struct AwqOptions {
  int64_t grid = 20;           // alpha steps in [0, 1]
  std::string then = "rtn";    // rtn|gptq: how the scaled weights are quantized
  int64_t max_samples = 4096;  // calibration inputs kept per linear for the search
};

// The spec for one tensor: nullopt leaves it unchanged. Called only for selected tensors.
using SpecFor = std::function<std::optional<QuantSpec>(const std::string& tensor)>;

// Each returns per-tensor details for the PassReport ({"tensor": {"spec":…, "err":…}, …}).
Result<nlohmann::json> quantize_model_rtn(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                          const ScaleSearch& search, bool importance);
Result<nlohmann::json> quantize_model_gptq(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                           const ScaleSearch& search, const GptqOptions& options);
Result<nlohmann::json> quantize_model_awq(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                          const ScaleSearch& search, const AwqOptions& awq, const GptqOptions& gptq);

}  // namespace llmc
