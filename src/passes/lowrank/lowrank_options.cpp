// Options and target selection shared by lowrank.svd and lowrank.tucker.
#include <algorithm>

#include "model/arch.h"
#include "passes/lowrank/lowrank_passes.h"

namespace llmc {
namespace {

constexpr const char* kFactorDtypes[] = {"keep", "f32", "f16", "bf16"};

}  // namespace

void RankOptions::visit(OptionVisitor& v, bool all) {
  if (all) v.option("rank", rank, "The same rank for every target (below its smaller dimension); 0 = not used");
  v.option("rank_ratio", rank_ratio, "Keep this fraction of each target's parameters, in (0, 1); 0 = not used");
  v.option("energy", energy,
           "Smallest rank keeping this fraction of the squared singular values (per mode for Tucker), in (0, 1]; 0 = "
           "not used");
  if (all)
    v.option("target_params", target_params,
             "Keep this fraction of all targets' parameters together, ranks allocated across tensors by "
             "singular-value energy, in (0, 1); 0 = not used");
  v.option("factor_dtype", factor_dtype,
           "Dtype of the factors: keep (the weight's float dtype, f16 if quantized), f32, "
           "f16 or bf16",
           kFactorDtypes);
}

Result<void> RankOptions::validate(std::string_view pass, bool all) const {
  auto bad = [&](auto&&... parts) { return make_error(ErrorCode::kInvalidArgument, pass, ": ", parts...); };
  const int given = (all && rank != 0) + (rank_ratio != 0) + (energy != 0) + (all && target_params != 0);
  if (given != 1)
    return bad(
        all ? "give exactly one of rank, rank_ratio, energy, target_params" : "give exactly one of rank_ratio, energy",
        given == 0 ? "" : " (several were given)");
  if (rank < 0) return bad("rank ", rank, " must be >= 1");
  if (rank_ratio != 0 && !(rank_ratio > 0 && rank_ratio < 1)) return bad("rank_ratio ", rank_ratio, " outside (0, 1)");
  if (energy != 0 && !(energy > 0 && energy <= 1)) return bad("energy ", energy, " outside (0, 1]");
  if (target_params != 0 && !(target_params > 0 && target_params < 1))
    return bad("target_params ", target_params, " outside (0, 1)");
  if (std::find_if(std::begin(kFactorDtypes), std::end(kFactorDtypes),
                   [&](const char* d) { return factor_dtype == d; }) == std::end(kFactorDtypes))
    return bad("factor_dtype '", factor_dtype, "' is not keep, f32, f16 or bf16");
  return {};
}

DType factor_dtype_for(const Tensor& t, const std::string& factor_dtype) {
  if (factor_dtype == "f32") return DType::kF32;
  if (factor_dtype == "f16") return DType::kF16;
  if (factor_dtype == "bf16") return DType::kBF16;
  if (const auto* d = std::get_if<DenseEncoding>(&t.encoding->node)) return d->dtype;
  return DType::kF16;
}

std::vector<std::string> decomposition_targets(const Model& model, const TargetSelector& selector) {
  std::vector<std::string> out;
  for (const Tensor& t : model.tensors()) {
    if (t.shape.dims.size() != 2) continue;
    const bool wanted = selector.has_targets() || tensor_role(t.name) == TensorRole::kLinear;
    if (wanted && selector.selects(t.name)) out.push_back(t.name);
  }
  return out;
}

}  // namespace llmc
