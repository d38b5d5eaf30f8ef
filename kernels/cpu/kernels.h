// CPU kernels of the forward pass: linear layers over encoded weights, norms, RoPE, softmax, attention.
//
// Every kernel has a scalar `_ref` (double accumulation, kept forever as the oracle) and a
// production entry point; linear kernels dispatch on (encoding kind, dtype) through one table
// (kLinearKernels in linear.cpp) and, inside a row, on the CPU's SIMD target through Highway.
// Threading: OpenMP over output rows (linear) or heads (attention); every output element is
// computed by exactly one thread in a fixed order, so results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/model.h"
#include "core/tensor.h"

namespace llmc::kernels {

// Threads the kernels use (0 = all cores, OpenMP's default). Results do not depend on it.
void set_num_threads(int threads);
int num_threads();

// ---- linear layers: W is [rows, cols] (out_features, in_features) ----

// y[rows] = W x[cols]
void matvec(const Tensor& w, const float* x, float* y);
// Y[n, rows] = X[n, cols] · Wᵀ (batched prefill). For the same SIMD target, row r of Y equals
// matvec(W, X[r]) bit for bit: both use the same per-element accumulation order.
void matmul(const Tensor& w, const float* x, int64_t n, float* y);
// y = W x, or Y = X Wᵀ when n > 1.
inline void linear(const Tensor& w, const float* x, int64_t n, float* y) {
  if (n == 1)
    matvec(w, x, y);
  else
    matmul(w, x, n, y);
}
// Scalar references: double accumulation over a row decoded with decode_rows_to_f32.
void matvec_ref(const Tensor& w, const float* x, float* y);
void matmul_ref(const Tensor& w, const float* x, int64_t n, float* y);
// Scalar reference of Quant weights straight from the packed codes: quant_value per element,
// double accumulation (independent of the encoding's row decoder).
void matmul_quant_ref(const Tensor& w, const float* x, int64_t n, float* y);
// Scalar reference of Palette weights straight from the indices: codebook entry per element plus
// the outliers, double accumulation (independent of the encoding's row decoder).
void matmul_palette_ref(const Tensor& w, const float* x, int64_t n, float* y);
// True when a Palette weight runs on int8 activations now (kernels/cpu/palette_i8.h): bits <= 4, mode
// kInt8x2, kInt8 or kAuto (one part: indices of at most 4 bits), and codebook 0 on the integer grid (core/palette.h).
// Then every row whose codebook is on the grid takes the integer path; other rows keep f32 activations.
bool palette_int8_activations(const Tensor& w);
// Scalar model of that path for the current mode (the Quant int8 activation quantizer, exact integer
// block dot products, scaled and summed in double; rows off the grid as matmul_palette_ref). Requires
// palette_int8_activations(w).
void matmul_palette_i8_ref(const Tensor& w, const float* x, int64_t n, float* y);
// How Quant kernels take their activations (docs/runtime.md, "Quant kernels: int8 activations").
enum class QuantActivations : uint8_t {
  kF32 = 0,         // f32 activations times codes unpacked to f32 (every weight)
  kInt8x2 = 1,      // two int8 parts per activation, x ≈ dx · (hi + lo / 256) with one dx per 8 columns
                    // of a block of 32, exact integer dot products; the activation error is ~1/256 of
                    // plain int8's
  kInt8 = 2,        // one int8 per activation (one dx per 8 columns): faster, adds int8 rounding error
                    // (~0.0003 mean KLD on stories260K at 4 bits, ~0.0007 at 8 bits)
  kF32Decoded = 3,  // f32 activations; blocks of 16 rows decoded to f32 weights (exactly
                    // decode_rows_to_f32's values) and run by the dense f32 kernel: every element
                    // equals the dense kernel on the decoded tensor. The fast mode for many tokens
                    // (calibration); a one-token call decodes its rows like any other.
  kAuto = 4,        // default: per weight, kInt8 for codes of at most 4 bits (their own rounding error
                    // dwarfs int8's: +0.1-0.5 % mean KLD) and kInt8x2 for wider codes
};
// Sets the mode for every later call; not thread-safe against kernels running concurrently.
void set_quant_activations(QuantActivations mode);
QuantActivations quant_activations();
// The mode's name in options and reports ("f32", "int8x2", "int8", "f32-decoded", "auto"), and the mode
// of a name (nullopt for any other string).
const char* quant_activations_name(QuantActivations mode);
std::optional<QuantActivations> parse_quant_activations(std::string_view name);
// True when this weight runs on int8 activations now: a Quant weight whose group size is the whole
// row or a multiple of 8 (kernels/cpu/quant_i8.h), in mode kInt8x2, kInt8 or kAuto.
bool quant_int8_activations(const Tensor& w);
// True when int8 activations of codes of `bits` bits take two parts in `mode` (kInt8x2, or kAuto
// with more than 4 bits).
bool quant_int8_two_parts(QuantActivations mode, int bits);
// Scalar model of that int8 path (for the current mode): the same activation quantizer and exact
// integer block dot products, scaled and summed in double. Requires quant_int8_activations(w).
void matmul_quant_i8_ref(const Tensor& w, const float* x, int64_t n, float* y);
// Sets a mode for its lifetime and restores the previous one (e.g. exact activations while
// calibration statistics are collected).
class ScopedQuantActivations {
 public:
  explicit ScopedQuantActivations(QuantActivations mode) : previous_(quant_activations()) {
    set_quant_activations(mode);
  }
  ~ScopedQuantActivations() { set_quant_activations(previous_); }
  ScopedQuantActivations(const ScopedQuantActivations&) = delete;
  ScopedQuantActivations& operator=(const ScopedQuantActivations&) = delete;

 private:
  QuantActivations previous_;
};
// True when the dispatch table has a fast kernel for this encoding (others use the generic
// decode-a-row-block kernel).
bool has_fast_linear(const Tensor& w);
// True when a Sparse weight with Dense values decodes faster through its sparse kernel than its
// Dense expansion would through the dense kernel of the same dtype: its sparsity is at or above
// the break-even measured for its kernel path and value dtype (sparse_linear.cpp, docs/sparsity.md).
// False for any other weight.
bool sparse_beats_dense(const Tensor& w);
// Bytes a one-token call of w reads from memory: its encoded bytes, except for bitmask weights that
// decode through their window index (sparse_index.h), where the index replaces the mask.
uint64_t decode_read_bytes(const Tensor& w);

// ---- element-wise and small kernels (O(dim) per token, scalar) ----

// out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i]; sum of squares in double.
void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* out);
void rmsnorm_ref(const float* x, const float* weight, int64_t n, float eps, float* out);

// In-place softmax with max subtraction; sum in double.
void softmax(float* x, int64_t n);
void softmax_ref(float* x, int64_t n);

// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
void silu_mul(float* gate, const float* up, int64_t n);
void silu_mul_ref(float* gate, const float* up, int64_t n);

// Inverse frequencies of one head's rotary pairs ([head_dim / 2]) for theta and the config's
// scaling (none, linear: divide by factor, Llama-3: smooth per-wavelength interpolation).
std::vector<float> rope_inv_freq(int64_t head_dim, float theta, const RopeScaling& scaling);
// Rotates `n_heads` heads of `head_dim` in x ([n_heads * head_dim]) for position `pos`.
// Interleaved pairs (2i, 2i+1) or NeoX pairs (i, i + head_dim/2); angles in double.
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* inv_freq, RopeStyle style);
void rope_ref(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* inv_freq, RopeStyle style);

// Causal attention of one token over positions [0, n_pos) of a KV cache.
// q: [n_heads * head_dim]; k_cache, v_cache: [n_pos, kv_stride] with head h's keys at column
// (h / (n_heads / n_kv_heads)) * head_dim (GQA); out: [n_heads * head_dim];
// scratch: [n_heads * n_pos] floats. Scores scaled by 1/sqrt(head_dim).
struct AttentionShape {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t kv_stride = 0;  // floats between consecutive positions in the cache
};
// Parallel over heads when `parallel` (call with false from inside a parallel region).
void attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_pos, const AttentionShape& s,
               float* scratch, float* out, bool parallel = true);
// Causal attention of a chunk of n consecutive tokens at positions [pos, pos + n) whose keys and
// values are already in the cache (positions [0, pos + n) filled): token t attends to
// [0, pos + t]. q, out: [n, n_heads * head_dim]. Parallel over (head, block of tokens). Each
// token's output equals attention() of that token alone (n_pos = pos + t + 1) bit for bit.
void attention_chunk(const float* q, const float* k_cache, const float* v_cache, int64_t n, int64_t pos,
                     const AttentionShape& s, float* out);
void attention_ref(const float* q, const float* k_cache, const float* v_cache, int64_t n_pos, const AttentionShape& s,
                   float* out);

// ---- calibration statistics ----

// total[i * cols + j] += Σ_t x[t, i] · x[t, j] for i <= j (the upper triangle of XᵀX), x: [n, cols].
// A blocked SYRK: X is transposed once, tiles of kGramTile x kGramTile columns are each summed in
// f32 over the n tokens by the dot microkernel (one tile per thread, OpenMP), then added to the f64
// total. The bytes depend only on x (and the SIMD target), never on the thread count.
void gram_upper_accumulate(const float* x, int64_t n, int64_t cols, double* total);

// ---- SIMD target control (tests and reports) ----

// Highway targets compiled in and supported by this CPU, best first (under force_simd_target: the
// forced one and worse).
std::vector<int64_t> simd_targets();
std::string simd_target_name(int64_t target);
// Restricts dispatch to `target` or worse (0 = back to the best supported). For tests; not thread-safe
// against kernels running concurrently.
void force_simd_target(int64_t target);
// Name of the target the dispatched kernels use now.
std::string active_simd_target();

}  // namespace llmc::kernels
