// The pass registry: the only list of passes (DESIGN.md §3). Tests and help text iterate it.
#include "passes/lowrank/lowrank_passes.h"
#include "passes/pass.h"
#include "passes/prune/prune_passes.h"
#include "passes/quant/quant_passes.h"

namespace llmc {

// Factories, one per pass file.
std::unique_ptr<Pass> make_quant_gptq_pass();    // passes/quant/quant_gptq.cpp
std::unique_ptr<Pass> make_quant_awq_pass();     // passes/quant/quant_awq.cpp
std::unique_ptr<Pass> make_quant_mixed_pass();   // passes/quant/quant_mixed.cpp
std::unique_ptr<Pass> make_quant_qat_pass();     // passes/quant/quant_qat.cpp
std::unique_ptr<Pass> make_share_kmeans_pass();  // passes/share/share_kmeans.cpp

namespace {

const PassInfo kPasses[] = {
    {"quant.rtn", "round-to-nearest quantization (sym/asym 2..8 bits, binary, ternary), optional clip search",
     make_quant_rtn_pass},
    {"quant.binary", "binary weights: sign x per-group scale (optionally two-level), data-free or importance-weighted",
     make_quant_binary_pass},
    {"quant.ternary", "ternary weights {-1,0,+1} x per-group scale, 2-bit or 1.6-bit (trits5) packing",
     make_quant_ternary_pass},
    {"quant.gptq", "GPTQ: Hessian-based error-compensated quantization, layer by layer (needs calibration)",
     make_quant_gptq_pass},
    {"quant.awq", "AWQ: activation-aware channel scaling, then RTN or GPTQ (needs calibration)", make_quant_awq_pass},
    {"quant.mixed", "mixed precision: per-tensor bits chosen by measured sensitivity under a --target-bpw budget",
     make_quant_mixed_pass},
    {"quant.qat", "quantization-aware distillation of a quantized model against the original (needs calibration)",
     make_quant_qat_pass},
    {"prune.magnitude", "Zero the smallest |w| per row, tensor, globally or per N:M group", make_prune_magnitude},
    {"prune.wanda", "Zero the smallest |w| x input-norm per output row or N:M group (calibration)", make_prune_wanda},
    {"prune.sparsegpt", "Hessian-based pruning with reconstruction, layer by layer (calibration)",
     make_prune_sparsegpt},
    {"prune.heads", "Remove attention heads (query heads per KV group, or whole KV groups): a smaller dense model",
     make_prune_heads},
    {"prune.channels", "Remove FFN channels (gate/up rows, down columns): a smaller dense model", make_prune_channels},
    {"prune.layers", "Remove whole blocks with the smallest input/output angular distance (calibration)",
     make_prune_layers},
    {"lowrank.svd", "truncated SVD into LowRank{U, V}: plain, or activation-aware (asvd: whitened by calibration)",
     make_lowrank_svd_pass},
    {"lowrank.tucker",
     "Tucker decomposition of the embedding/output (vocabulary folded) and per-head attention weights",
     make_lowrank_tucker_pass},
    {"share.kmeans",
     "weight sharing: (weighted) k-means codebooks of 2^bits entries per tensor/rows/row, optional sparse outliers",
     make_share_kmeans_pass},
};

}  // namespace

std::span<const PassInfo> pass_registry() { return kPasses; }

}  // namespace llmc
