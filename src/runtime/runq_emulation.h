// llama2.c runq.c's float32 arithmetic, operation for operation, for RuntimeOptions::activation_q8_group.
//
// Why bit-level fidelity: on stories260K_q8 one activation of layer 3 at position 6 (the input of
// ffn_down) divides to -37.5 within one float ulp; which way it rounds moves the golden sentence NLL
// between 54.311 (runq.c's float32 order, golden.json) and 54.353 (RMSNorm sums in double, RoPE
// angles in double, or FMA contraction of both matmul and RMSNorm; tests/py/test_runq_reference.py --variants). So
// these functions follow runq.c's expressions and summation orders exactly: float accumulators, left-to-right sums, C
// powf/cosf/sinf/expf/sqrtf, one rounding per operation (each product is a separate statement so no compiler contracts
// it into an FMA; the project builds with -std=c++20, where GCC's default is -ffp-contract=off).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cpu/kernels.h"

namespace llmc::runq {

// The weight must be what runq.c multiplies: 8-bit symmetric codes in groups of `group` along
// each row (cols a multiple of `group`) with f32 scales. `name` is used in the error.
Result<void> check_linear(const Tensor& w, int64_t group, const std::string& name);

// runq.c quantize(): per group of `group` values, scale = max|x| / 127 and q = (int8)round(x / scale)
// (C round(): halves away from zero). An all-zero group gets scale 0 and codes 0 (runq.c divides
// 0 by 0 there; its NaN converts to 0 on x86-64). x: [n], q: [n], s: [n / group].
void quantize(const float* x, int64_t n, int64_t group, int8_t* q, float* s);

// runq.c matmul() for n tokens: y[t, r] = Σ_groups float(Σ_group q_w·q_x) · s_w · s_x, summed over
// the groups in order in a float. x: [n, cols] (quantized here), y: [n, rows]. Threads split rows.
void linear(const Tensor& w, const float* x, int64_t n, int64_t group, float* y);

// o = weight · (x / sqrtf(Σx² / n + eps)), the sum in float (runq.c rmsnorm()).
void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// Per rotary pair i of a head: 1.0f / powf(theta, 2i / (float)head_dim) ([head_dim / 2]).
std::vector<float> rope_freq(int64_t head_dim, float theta);
// Interleaved pairs (2i, 2i+1), angle = pos · freq in float, cosf/sinf (`style` must be
// kInterleaved; it is here so the signature matches kernels::rope).
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* freq, RopeStyle style);

// gate[i] = gate[i] · (1 / (1 + expf(-gate[i]))) · up[i].
void silu_mul(float* gate, const float* up, int64_t n);

// runq.c's attention of one token (same arguments as kernels::attention; heads run in order,
// `parallel` is ignored): float dot products, score / sqrtf(head_dim), softmax with expf and a
// float sum, values accumulated position by position.
void attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_pos,
               const kernels::AttentionShape& s, float* scratch, float* out, bool parallel);

}  // namespace llmc::runq
