// The model IR: configuration, tokenizer data, named tensors in canonical order, metadata.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace llmc {

enum class ModelFamily : uint8_t { kLlama = 0, kQwen2 = 1 };
enum class NormKind : uint8_t { kRmsNorm = 0, kLayerNorm = 1 };
enum class Activation : uint8_t { kSilu = 0, kGelu = 1 };
// Which pairs RoPE rotates: (2i, 2i+1) as llama2.c/GGUF llama, or (i, i+d/2) as HF/NeoX/Qwen2.
enum class RopeStyle : uint8_t { kInterleaved = 0, kNeox = 1 };
enum class RopeScalingType : uint8_t { kNone = 0, kLinear = 1, kLlama3 = 2 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_context = 8192;
  bool operator==(const RopeScaling&) const = default;
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kLlama;
  int64_t dim = 0;
  int64_t hidden_dim = 0;  // FFN width
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;  // usually dim / n_heads
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  NormKind norm = NormKind::kRmsNorm;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::kInterleaved;
  RopeScaling rope_scaling;
  Activation activation = Activation::kSilu;
  bool tied_embeddings = false;
  bool attn_qkv_bias = false;
  // Per-layer widths after structured pruning (prune.heads / prune.channels): each vector is empty
  // (every layer has the scalar value) or holds n_layers entries, and then the scalar field holds
  // the largest entry (what buffers are sized by). set_layer_widths keeps this form.
  std::vector<int64_t> layer_n_heads;
  std::vector<int64_t> layer_n_kv_heads;
  std::vector<int64_t> layer_hidden_dim;
  bool operator==(const ModelConfig&) const = default;

  int64_t heads(int64_t layer) const { return layer_n_heads.empty() ? n_heads : layer_n_heads[layer]; }
  int64_t kv_heads(int64_t layer) const { return layer_n_kv_heads.empty() ? n_kv_heads : layer_n_kv_heads[layer]; }
  int64_t hidden(int64_t layer) const { return layer_hidden_dim.empty() ? hidden_dim : layer_hidden_dim[layer]; }
  // True when some layer differs from another in heads, kv heads or FFN width.
  bool per_layer_widths() const {
    return !layer_n_heads.empty() || !layer_n_kv_heads.empty() || !layer_hidden_dim.empty();
  }
  // Sets the widths of every layer (n_layers entries each): a vector whose entries are all equal is
  // stored as the scalar alone, otherwise the scalar becomes its maximum.
  void set_layer_widths(std::vector<int64_t> heads, std::vector<int64_t> kv_heads, std::vector<int64_t> hidden);
  // The widths of every layer, n_layers entries each (expanded from the scalars where uniform).
  std::vector<int64_t> all_heads() const;
  std::vector<int64_t> all_kv_heads() const;
  std::vector<int64_t> all_hidden() const;
};

const char* family_name(ModelFamily family);
std::optional<ModelFamily> family_from_name(const std::string& name);

enum class TokenizerKind : uint8_t { kNone = 0, kSentencePiece = 1, kBytePairGpt2 = 2 };

// Token types as GGUF numbers them.
enum class TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct TokenizerData {
  TokenizerKind kind = TokenizerKind::kNone;
  std::vector<std::string> tokens;
  std::vector<float> scores;         // SentencePiece merge priority (empty for byte-level BPE)
  std::vector<int32_t> token_types;  // TokenType per token (may be empty: all normal)
  std::vector<std::string> merges;   // byte-level BPE merges, "a b"
  std::string pre;                   // pre-tokenizer name (GGUF tokenizer.ggml.pre), e.g. "gpt2", "smollm"
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool empty() const { return tokens.empty(); }
};

class Model {
 public:
  ModelConfig config;
  TokenizerData tokenizer;
  std::map<std::string, std::string> metadata;  // free-form (source format, provenance, ...)

  // Tensors keep insertion order (readers insert in canonical order).
  const std::vector<Tensor>& tensors() const { return tensors_; }
  Result<void> add(Tensor t);  // error on duplicate name
  void replace(Tensor t);      // the name must exist
  const Tensor* find(const std::string& name) const;
  const Tensor& get(const std::string& name) const;  // must exist

 private:
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace llmc
