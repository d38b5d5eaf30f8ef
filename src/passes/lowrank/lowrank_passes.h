// Factories of the low-rank passes (rows of the pass registry) and what they share: rank options,
// target selection, factor dtype.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/model.h"
#include "passes/pass.h"

namespace llmc {

std::unique_ptr<Pass> make_lowrank_svd_pass();     // passes/lowrank/lowrank_svd.cpp
std::unique_ptr<Pass> make_lowrank_tucker_pass();  // passes/lowrank/lowrank_tucker.cpp

// How ranks are chosen; exactly one is given (0 = not given):
//   rank           the same rank for every target (must be below each target's smaller dimension)
//   rank_ratio     keep this fraction of each target's parameters, in (0, 1)
//   energy         smallest rank keeping this fraction of Σσ² (per mode for Tucker), in (0, 1]
//   target_params  keep this fraction of all targets' parameters together, ranks allocated by
//                  singular-value energy across tensors, in (0, 1)
struct RankOptions {
  int64_t rank = 0;
  double rank_ratio = 0;
  double energy = 0;
  double target_params = 0;
  std::string factor_dtype = "keep";
  // Declares rank_ratio, energy, factor_dtype, and rank / target_params when `all` (lowrank.svd).
  void visit(OptionVisitor& v, bool all);
  // kInvalidArgument naming the pass: none or several given, or a value out of its range.
  Result<void> validate(std::string_view pass, bool all) const;
};

// Dtype of the Dense factors of `t` under factor_dtype: keep = t's Dense dtype (f16 when t is not
// Dense: an input that is already quantized has no float dtype of its own), or f32/f16/bf16.
DType factor_dtype_for(const Tensor& t, const std::string& factor_dtype);

// The selector's targets among 2-D tensors, or by default every linear weight of the blocks.
std::vector<std::string> decomposition_targets(const Model& model, const TargetSelector& selector);

}  // namespace llmc
