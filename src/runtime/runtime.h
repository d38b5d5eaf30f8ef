// The forward pass over a model's encoded weights with a KV cache (DESIGN.md §5).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>

#include "core/model.h"

namespace llmc {
namespace kernels {
enum class QuantActivations : uint8_t;  // kernels/cpu/kernels.h
}

struct RuntimeOptions {
  int threads = 0;          // 0 = all cores
  int64_t max_context = 0;  // KV cache length; 0 = the model's context_length (capped at 4096)
  // > 0: emulate llama2.c runq.c int8 activations with groups of this many values: every linear
  // layer's input is quantized to symmetric int8 per group (scale = max|x| / 127, C round()) and
  // multiplied with the weight's int8 codes in int32 group sums, and the rest of the forward pass
  // uses runq.c's float32 arithmetic (runtime/runq_emulation.h). Needs every matrix, the classifier
  // included, to be 8-bit symmetric in groups of this size with f32 scales (a llama2.c v2 file);
  // create() returns kUnsupported otherwise. 0 = the production f32 kernels.
  int64_t activation_q8_group = 0;
  // Independent sequences the KV cache holds (batched decode through forward_batch); forward()
  // and copy_cache_from() use sequence 0. At most 256.
  int64_t sequences = 1;
  // Back the streamed weights held in heap memory with transparent huge pages at creation
  // (collapse_huge_pages, formats/file_io.h; the bytes stay where they are). Off: for A/B runs.
  bool huge_pages = true;
  // Give back each block's weight pages that view a mapped file after the block runs, and the
  // embedding's and head's after the head (release_file_pages): a whole-model pass over a mapped
  // input then keeps about one block of it resident instead of the file, and every forward faults
  // the pages in again from the page cache. For passes over an input being compressed
  // (calibration sampling), not for decode.
  bool release_weight_pages = false;
  // How Quant and Palette weights take their activations in forward() and forward_batch()
  // (kernels::QuantActivations, docs/runtime.md); the process-wide mode is restored after each
  // call. nullopt: the process-wide mode (kAuto unless changed).
  std::optional<kernels::QuantActivations> quant_activations;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // The model must outlive the runtime (weights are used in place, never copied whole).
  static Result<std::unique_ptr<Runtime>> create(const Model& model, const RuntimeOptions& options);

  // Feeds tokens at positions [pos, pos + tokens.size()) into the KV cache (batched prefill when
  // more than one). logits: nullptr, or [tokens.size(), vocab] when all_logits, else [vocab] for
  // the last token. Errors when pos + n exceeds max_context or an id is out of range.
  virtual Result<void> forward(std::span<const int32_t> tokens, int64_t pos, float* logits, bool all_logits) = 0;

  // Batched decode of RuntimeOptions::sequences independent sequences in lockstep: tokens[s]
  // (one per sequence) is fed at position pos of sequence s, whose positions [0, pos) must be
  // cached; logits: [sequences, vocab]. The linear layers run as one matmul over the sequences,
  // and each sequence's logits equal those of forward() on that sequence alone, bit for bit.
  virtual Result<void> forward_batch(std::span<const int32_t> tokens, int64_t pos, float* logits) {
    return make_error(ErrorCode::kUnsupported, "runtime: batched decode is not supported by this runtime");
  }

  // Copies the KV cache of positions [0, n_positions) from `other`, a runtime created for the
  // same model and options (beam search forks hypotheses this way).
  virtual Result<void> copy_cache_from(const Runtime& other, int64_t n_positions) = 0;

  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_context() const = 0;
  // Bytes of weights read to produce one token (for bandwidth figures).
  virtual uint64_t weight_bytes_per_token() const = 0;
};

// One linear-layer input seen during a block forward: X [n, cols] row-major, read by every tensor
// in `weights` (q/k/v share one input, gate/up another; attn_output and ffn_down one each).
struct LinearInput {
  std::span<const Tensor* const> weights;
  const float* x;
  int64_t n;
};
using LinearObserver = std::function<void(const LinearInput&)>;

// Block-by-block forward over whole sequences for calibration (pipeline/calibration.h): the same
// block code as Runtime::forward (production kernels, chunks of the same size), without a
// persistent KV cache. Every call re-reads the block's tensors from the model, so tensors replaced
// in it (Model::replace) since the last call are used. Results do not depend on the thread count.
// Quant weights run on exact f32 activations here (kernels::QuantActivations::kF32Decoded: rows
// decoded to f32, then the dense kernel), whatever the runtime's activation mode: calibration
// statistics describe the weights, not the activation rounding of one kernel path
// (docs/calibration.md).
// The steps of one block, for calibration that replaces the block's linears group by group
// ("true sequential" GPTQ): each stage observes the input of the next group of linears, computed
// with the tensors the model holds when the stage runs.
enum class BlockStage {
  kAttnInput,    // observes q/k/v's input (the attention norm of x)
  kOutputInput,  // act[n, q_dim] = attention output; observes it (attn_output's input)
  kFfnInput,     // x += attn_output(act); observes gate/up's input (the FFN norm of x)
  kDownInput,    // act[n, hidden] = SwiGLU(gate, up) (act may be null); observes it (ffn_down's input)
  kFinish,       // x += ffn_down(act), act recomputed from x when null
};

class BlockRunner {
 public:
  virtual ~BlockRunner() = default;
  // max_tokens: the longest sequence forward_layer will see (sizes the per-layer K/V scratch).
  // threads: 0 = all cores. The model must outlive the runner.
  static Result<std::unique_ptr<BlockRunner>> create(const Model& model, int64_t max_tokens, int threads);

  // x [tokens.size(), dim] = token embeddings. Errors on ids outside the vocabulary.
  virtual Result<void> embed(std::span<const int32_t> tokens, float* x) = 0;
  // Runs block `layer` in place on one sequence x [n, dim] at positions [0, n), calling `observer`
  // (may be null) with the input of each linear layer, chunk by chunk, in forward order.
  // inputs_only: only the linear inputs are wanted; the last projection is skipped and x is left
  // in an unspecified state.
  virtual Result<void> forward_layer(int64_t layer, float* x, int64_t n, const LinearObserver* observer,
                                     bool inputs_only = false) = 0;
  // One stage of block `layer` on one sequence x [n, dim] (positions [0, n)); act holds the
  // sequence's activations between stages: [n, q_dim] from kOutputInput to kFfnInput, then
  // [n, hidden] from kDownInput to kFinish. Stages of a block run in order on the same x.
  virtual Result<void> forward_stage(int64_t layer, BlockStage stage, float* x, float* act, int64_t n,
                                     const LinearObserver* observer) = 0;
  // out [n, dim] = the final norm of x [n, dim] (the output head's input).
  virtual void final_norm(const float* x, int64_t n, float* out) = 0;
  // logits [n, vocab] = output head applied to normed [n, dim] (final_norm's output).
  virtual void head(const float* normed, int64_t n, float* logits) = 0;
  // The output head's weight (token_embd.weight when the embeddings are tied).
  virtual const Tensor& head_weight() const = 0;
  // Give back the resident pages of block `layer`'s weights / of the token embedding and the head
  // where they view a mapped file (release_file_pages): a caller that runs every block in turn
  // over a whole model keeps one block's weights resident at a time, not the file. The bytes stay
  // valid (a later read faults them in again).
  virtual void release_layer_pages(int64_t layer) = 0;
  virtual void release_embedding_pages() = 0;
};

}  // namespace llmc
