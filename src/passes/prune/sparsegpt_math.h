// SparseGPT's one-shot pruning of one linear weight with Hessian-based reconstruction (Frantar & Alistarh, 2023).
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "passes/prune/prune_common.h"

namespace llmc {

struct SparseGptOptions {
  double damp = 0.01;        // fraction of mean(diag H) added to the diagonal
  int64_t block_size = 128;  // columns per lazy-batch update (rounded down to a multiple of M for n:m)
};

// Prunes w [rows, cols] (row-major, updated in place: pruned entries become 0, kept ones absorb
// the reconstruction updates) given H = Σ x xᵀ [cols, cols] of the layer's inputs. Column by
// column, the pruned part of each row is chosen inside each block by w² / [H⁻¹]_cc² (row
// granularity: exactly round(sparsity · cols) zeros per row, spread over blocks; tensor: per block
// over all rows; n:m: exactly n kept per group) and the error is compensated on the columns not yet
// processed through the upper Cholesky factor of H⁻¹. Columns with H_cc = 0 (never active) are
// zeroed. keep receives the mask [rows * cols]. Global granularity is not supported (kInvalidArgument).
Result<void> sparsegpt_prune(std::vector<float>& w, int64_t rows, int64_t cols, std::vector<double> h,
                             const PruneSpec& spec, const SparseGptOptions& options, std::vector<uint8_t>& keep);

}  // namespace llmc
