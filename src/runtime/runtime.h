// The forward pass over a model's encoded weights with a KV cache (DESIGN.md §5).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "core/model.h"

namespace llmc {

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

  // Copies the KV cache of positions [0, n_positions) from `other`, a runtime created for the
  // same model and options (beam search forks hypotheses this way).
  virtual Result<void> copy_cache_from(const Runtime& other, int64_t n_positions) = 0;

  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_context() const = 0;
  // Bytes of weights read to produce one token (for bandwidth figures).
  virtual uint64_t weight_bytes_per_token() const = 0;
};

}  // namespace llmc
