// Mixed precision (quant.mixed): candidate encodings per tensor, the budgeted allocation solver and the pass factory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "passes/pass.h"
#include "passes/quant/quant_math.h"

namespace llmc {

// One encoding a tensor may get. Text form (recipe/CLI):
//   "f16" | "bf16" | "f32"                      keep the tensor dense in that dtype
//   "q<bits>[g<group>|row][-<modifier>...]"      quantize, e.g. "q4g32", "q3g64-u8", "q2-ternary-t5"
// modifiers: sym, asym, binary, ternary (scheme); f16, bf16, f32, u8 (scale dtype); t5 (trits5
// packing); 2l (two-level binary). Missing parts come from the pass's QuantOptions defaults.
struct MixedCandidate {
  std::string name;  // the text it was parsed from
  bool keep = false;
  DType keep_dtype = DType::kF16;
  QuantSpec spec;  // when !keep
};
Result<MixedCandidate> parse_mixed_candidate(std::string_view text, const QuantSpec& defaults);
// Encoded bytes of a [rows, cols] tensor under the candidate.
uint64_t mixed_candidate_bytes(const MixedCandidate& c, int64_t rows, int64_t cols);

// Multiple-choice knapsack: item i takes exactly one option j with bytes[i][j] and loss[i][j];
// returns the choice per item minimising Σ loss with Σ bytes <= budget (ties: lower index), or
// kInvalidArgument when even the cheapest options exceed the budget. Dynamic programming over
// byte units of ceil(budget / max_units) bytes; option bytes are rounded up to units, so the
// result always fits and is exact when the unit is 1 byte.
struct AllocationItem {
  std::vector<uint64_t> bytes;
  std::vector<double> loss;
};
Result<std::vector<int>> allocate_budget(const std::vector<AllocationItem>& items, uint64_t budget,
                                         int64_t max_units = int64_t{1} << 17);

std::unique_ptr<Pass> make_quant_mixed_pass();

}  // namespace llmc
