// SparseGPT's one-shot pruning of one linear weight with Hessian-based reconstruction (Frantar & Alistarh, 2023).
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "passes/prune/prune_common.h"
#include "passes/quant/quant_math.h"

namespace llmc {

struct SparseGptOptions {
  double damp = 0.01;        // fraction of mean(diag H) added to the diagonal
  int64_t block_size = 128;  // columns per lazy-batch update (rounded down to a multiple of M for n:m)
  int threads = 1;           // of the lazy-batch updates (the result does not depend on it)
};

// Prunes w [rows, cols] (row-major, updated in place: pruned entries become 0, kept ones absorb
// the reconstruction updates) given H = Σ x xᵀ [cols, cols] of the layer's inputs. Column by
// column, the pruned part of each row is chosen inside each block by w² / [H⁻¹]_cc² (row
// granularity: exactly round(sparsity · cols) zeros per row, spread over blocks; tensor: per block
// over all rows; n:m: exactly n kept per group) and the error is compensated on the columns not yet
// processed through the upper Cholesky factor of H⁻¹. Columns with H_cc = 0 (never active) are
// zeroed. keep receives the mask [rows * cols]. Global granularity is not supported (kInvalidArgument).
//
// Joint quantization (`quant` set; SparseGPT §3.4, as GPTQ does): every kept weight is rounded to
// `quant` in the same sweep and its rounding error is compensated like a pruning error, so later
// columns absorb both. The codes are grouped along each row's kept entries (the Sparse{Quant}
// values layout: [rows, kept_stride], group k = kept entries [k g, (k + 1) g)). Blocks end where
// every row has kept a whole number of groups (row granularity and n:m keep the same count in
// every row; n:m masks are then chosen per block), and at a block's start each of its groups is
// fitted to the values its members reach after the block's pruning compensation (a pruning-only
// sweep on a copy), so that compensation does not push them out of their group's range. *values receives the
// QuantEncoding and w the dequantized kept values (exactly what the encoding decodes to).
Result<void> sparsegpt_prune(std::vector<float>& w, int64_t rows, int64_t cols, std::vector<double> h,
                             const PruneSpec& spec, const SparseGptOptions& options, std::vector<uint8_t>& keep,
                             const QuantSpec* quant = nullptr, QuantEncoding* values = nullptr);

// kInvalidArgument unless joint quantization can run: sym/asym with float scales, and row
// granularity or n:m.
Result<void> check_joint_quant(const PruneSpec& spec, const QuantSpec& quant);

}  // namespace llmc
