// The pass registry: the only list of passes (DESIGN.md §3). Tests and help text iterate it.
#include "passes/pass.h"
#include "passes/prune/prune_passes.h"

namespace llmc {

// Factories, one per pass file.

namespace {

const PassInfo kPasses[] = {
    {"prune.magnitude", "Zero the smallest |w| per row, tensor, globally or per N:M group", make_prune_magnitude},
    {"prune.wanda", "Zero the smallest |w| x input-norm per output row or N:M group (calibration)", make_prune_wanda},
    {"prune.sparsegpt", "Hessian-based pruning with reconstruction, layer by layer (calibration)",
     make_prune_sparsegpt},
    {nullptr, nullptr, nullptr},  // placeholder until the first pass lands (skipped below)
};

}  // namespace

std::span<const PassInfo> pass_registry() { return {kPasses, std::size(kPasses) - 1}; }

}  // namespace llmc
