// The backward pass (DESIGN.md §1, src/train/): the forward pass of the Llama family and Qwen2 on
// f32 weights over one whole sequence, keeping what the backward pass needs, and the gradients of
// a loss given per-position logit gradients with respect to every weight (linear weights, norm
// gains, biases, embeddings). The arithmetic is the runtime's (RMSNorm, RoPE frequencies and
// style, GQA attention scaled by 1/sqrt(head_dim), SwiGLU, tied or untied head), in f32 with
// Eigen products; it is for training and calibration, not for serving.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model.h"

namespace llmc {

// A transformer block, or one of its halves: attention (attn_norm, attn_q/k/v/output and their
// biases: x += wo(attention(norm(x)))) or FFN (ffn_norm, ffn_gate/up/down: x += down(...)).
enum class BlockPart { kWhole, kAttention, kFfn };

// Whether the block tensor `name` ("blk.<l>.<role>") belongs to `part` (kWhole: every one).
bool in_block_part(const std::string& name, BlockPart part);

// A linear weight whose f32 values are made on demand, a block of rows (or columns) at a time,
// instead of being stored (quant.qat's block mode makes its fake-quantized weights from their
// latents this way). rows() and cols() are called from several threads at once.
class RowSource {
 public:
  virtual ~RowSource() = default;
  // out [r1 - r0, cols]: rows [r0, r1).
  virtual void rows(int64_t r0, int64_t r1, float* out) const = 0;
  // out [c1 - c0, rows]: columns [c0, c1), each as a row (rows of the transpose).
  virtual void cols(int64_t c0, int64_t c1, float* out) const = 0;
};

// f32 values of every tensor of a model, in canonical order (model/arch.h expected_tensors).
class LlamaParams {
 public:
  // Decodes every tensor of `model` (any encoding) to f32. kUnsupported for LayerNorm or GELU models.
  static Result<LlamaParams> from_model(const Model& model);
  // Only the tensors of block `layer` ("blk.<layer>.*") in `part`, for BlockGrad.
  static Result<LlamaParams> block_of(const Model& model, int64_t layer, BlockPart part = BlockPart::kWhole);
  // Zeros of the same shapes (gradient accumulators; stored, also for tensors with a source).
  LlamaParams zeros_like() const;
  // Linear weight i's values come from `source` (not owned, must outlive its use) from now on;
  // its stored values are freed. The blocks' products read it through the source.
  void set_source(size_t i, const RowSource* source);
  const RowSource* source(size_t i) const { return sources_[i]; }

  const ModelConfig& config() const { return config_; }
  size_t count() const { return names_.size(); }
  const std::string& name(size_t i) const { return names_[i]; }
  std::vector<float>& values(size_t i) { return values_[i]; }
  const std::vector<float>& values(size_t i) const { return values_[i]; }
  // Index of a tensor by canonical name, or -1.
  int64_t index(const std::string& name) const;
  std::vector<float>& get(const std::string& name) { return values_[static_cast<size_t>(index(name))]; }
  const std::vector<float>& get(const std::string& name) const { return values_[static_cast<size_t>(index(name))]; }
  // this += other, tensor by tensor (same shapes).
  void add(const LlamaParams& other);
  void fill_zero();

 private:
  // layer < 0: all tensors; else those of the block's part.
  static Result<LlamaParams> decode(const Model& model, int64_t layer, BlockPart part);
  ModelConfig config_;
  std::vector<std::string> names_;
  std::vector<std::vector<float>> values_;
  std::vector<const RowSource*> sources_;
  std::vector<size_t> sizes_;  // values per tensor (also when it has a source)
  std::map<std::string, size_t> index_;
};

// Activations of one sequence's forward pass kept for the backward pass.
struct LlamaTape;

class LlamaGrad {
 public:
  explicit LlamaGrad(const ModelConfig& config);
  ~LlamaGrad();
  LlamaGrad(const LlamaGrad&) = delete;
  LlamaGrad& operator=(const LlamaGrad&) = delete;

  // logits [tokens.size(), vocab] of the sequence at positions 0..n-1 under `p`. With `keep`
  // true the activations are kept for backward(). Single-threaded (callers parallelise over
  // sequences); errors on token ids outside the vocabulary.
  Result<void> forward(const LlamaParams& p, std::span<const int32_t> tokens, float* logits, bool keep);
  // Adds to `grad` the gradient of the loss whose gradient with respect to the logits of the last
  // forward(keep = true) is dlogits [n, vocab].
  void backward(const LlamaParams& p, const float* dlogits, LlamaParams& grad);

 private:
  ModelConfig c_;
  std::vector<float> inv_freq_;
  LlamaTape* tape_;
};

// Activations of one block's forward pass kept for the backward pass.
struct LayerTape;

// One transformer block alone, for block-by-block training: forward over one sequence's hidden
// states and backward from the gradient of its output, with the products, attention heads and
// kv heads split over `threads` (the results do not depend on the count). The arithmetic is
// LlamaGrad's, block for block.
class BlockGrad {
 public:
  BlockGrad(const ModelConfig& config, int threads);
  ~BlockGrad();
  BlockGrad(const BlockGrad&) = delete;
  BlockGrad& operator=(const BlockGrad&) = delete;

  // x [n, dim]: the input of the block (or of its `part`), replaced by its output; the activations
  // are kept for backward(). `p` holds at least the part's tensors (LlamaParams::block_of).
  void forward(const LlamaParams& p, int64_t layer, std::vector<float>& x, int64_t n,
               BlockPart part = BlockPart::kWhole);
  // dx [n, dim]: in, the loss's gradient with respect to the last forward()'s output; out, with
  // respect to its input. Adds the gradients of the part's tensors to grad.
  void backward(const LlamaParams& p, std::vector<float>& dx, LlamaParams& grad);

 private:
  ModelConfig c_;
  std::vector<float> inv_freq_;
  int threads_;
  LayerTape* tape_;
  std::vector<float> xt_;  // buffer of the backward pass's products
  int64_t layer_ = 0, n_ = 0;
  BlockPart part_ = BlockPart::kWhole;
};

// Knowledge-distillation loss of one sequence: Σ over its n positions of KL(p_t || p_s) with
// p = softmax(logits), teacher and student [n, vocab], summed in double. When dstudent is not
// null it receives weight · d(Σ KL)/d(student logits) = weight · (p_s − p_t).
double kl_loss(const float* teacher, const float* student, int64_t n, int64_t vocab, float weight, float* dstudent);

}  // namespace llmc
