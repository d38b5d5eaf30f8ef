// The pass registry: the only list of passes (DESIGN.md §3). Tests and help text iterate it.
#include "passes/pass.h"

namespace llmc {

// Factories, one per pass file.
std::unique_ptr<Pass> make_quant_gptq_pass();   // passes/quant/quant_gptq.cpp
std::unique_ptr<Pass> make_quant_awq_pass();    // passes/quant/quant_awq.cpp
std::unique_ptr<Pass> make_quant_mixed_pass();  // passes/quant/quant_mixed.cpp

namespace {

const PassInfo kPasses[] = {
    {"quant.gptq", "GPTQ: Hessian-based error-compensated quantization, layer by layer (needs calibration)",
     make_quant_gptq_pass},
    {"quant.awq", "AWQ: activation-aware channel scaling, then RTN or GPTQ (needs calibration)", make_quant_awq_pass},
    {"quant.mixed", "mixed precision: per-tensor bits chosen by measured sensitivity under a --target-bpw budget",
     make_quant_mixed_pass},
    {nullptr, nullptr, nullptr},  // placeholder until the first pass lands (skipped below)
};

}  // namespace

std::span<const PassInfo> pass_registry() { return {kPasses, std::size(kPasses) - 1}; }

}  // namespace llmc
