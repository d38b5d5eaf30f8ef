// Internal: linear kernels of decomposed weights (LowRank, Tucker), rows of kLinearKernels (linear.cpp).
// They run the whole product as a chain of dispatched matmuls over their parts (each part a Dense or
// Quant leaf with its own fast kernel), so W is never rebuilt.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace llmc::kernels {

// Y[n, rows] = X[n, cols] · Wᵀ for W = LowRank{U, V}: Z = X · Vᵀ ([n, rank]), then Y = Z · Uᵀ.
void lowrank_linear(const Tensor& w, const float* x, int64_t n, float* y);

// Y = X · Wᵀ for W = Tucker: the column modes are contracted innermost first (the first step, over
// the whole input, is a dispatched matmul with B_K), then the core (dispatched), then the row modes
// are expanded outermost first (the last step, producing the whole output, is a dispatched matmul
// with A_j); the steps in between are f32 mode products over the small intermediate tensors.
void tucker_linear(const Tensor& w, const float* x, int64_t n, float* y);

}  // namespace llmc::kernels
