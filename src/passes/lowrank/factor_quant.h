// Quantization of decomposed weights: a quantization stage whose target is a LowRank or Tucker node
// quantizes its parts (U and V; core and factors) and keeps the tree (DESIGN.md §2: low-rank then
// quantize gives LowRank{Quant, Quant}), instead of decoding the product and quantizing that.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model.h"
#include "pipeline/calibration.h"

namespace llmc {

// What is known about the input of one part: Σ x xᵀ [cols, cols] and Σ x_c² [cols] over `tokens`
// inputs (empty when unknown).
struct PartInput {
  std::vector<double> xtx;
  std::vector<double> sq_sum;
  int64_t tokens = 0;
};

// Quantizes one part w [rows, cols] (row-major) and fills `dequant` with the decode of the result.
using PartQuantizer = std::function<Result<QuantEncoding>(std::span<const float> w, int64_t rows, int64_t cols,
                                                          const PartInput& input, std::vector<float>& dequant)>;

// Quantizes every part of the decomposed tensor `name` with `quantize` and replaces the tensor by the
// same tree over the quantized parts. Part inputs: LowRank's V reads the layer input x (`stats`, may
// be null); U reads z = V̂ x with V̂ the already quantized V, so Σ z zᵀ = V̂ (Σ x xᵀ) V̂ᵀ when `stats`
// has Σ x xᵀ (its diagonal gives U's importance); Tucker parts get no input statistics. Returns the
// report entry: per part the relative error and bits per weight, and the tensor's bpw.
Result<nlohmann::json> quantize_decomposition(Model& model, const std::string& name, const LinearInputStats* stats,
                                              const PartQuantizer& quantize);

}  // namespace llmc
