// Internal: the Highway-dispatched SIMD building blocks behind kernels.h (one symbol each; the CPU
// target is chosen at the first call and can be forced by force_simd_target for tests).
#pragma once

#include <cstdint>
#include <vector>

namespace llmc::kernels::simd {

// Y[t, r] = Σ_c W[r, c] · X[t, c] for t in [t_begin, t_end), r in [r_begin, r_end).
// W: [rows, cols] row-major in the named dtype; X: [*, cols] f32; Y: [*, rows] f32.
// Each element uses one vector accumulator over full vectors of columns (in column order), a
// fixed lane reduction, then the scalar column tail: the result of an element does not depend on
// the blocking of rows or tokens.
using MatmulRowsFn = void (*)(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin,
                              int64_t t_end, int64_t r_begin, int64_t r_end, float* y);
void matmul_rows_f32(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                     int64_t r_begin, int64_t r_end, float* y);
void matmul_rows_f16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                     int64_t r_begin, int64_t r_end, float* y);
void matmul_rows_bf16(const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t t_begin, int64_t t_end,
                      int64_t r_begin, int64_t r_end, float* y);

// Σ a[i] b[i] (same accumulation scheme as one matmul element).
float dot(const float* a, const float* b, int64_t n);
// y[i] += a · x[i]
void axpy(float a, const float* x, float* y, int64_t n);

// The HWY_* target bit of the dispatched code.
int64_t current_target();
// Targets this file was compiled for that the CPU supports (query with no target forced).
std::vector<int64_t> compiled_targets();

}  // namespace llmc::kernels::simd
