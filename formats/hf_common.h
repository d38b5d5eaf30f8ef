// Shared by the Hugging Face reader and writer: tensor-name mapping, config.json <-> ModelConfig,
// and the RoPE row permutation between HF ("rotate half") and interleaved q/k layouts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/model.h"

namespace llmc {

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; nullopt when unknown.
std::optional<std::string> hf_to_canonical_name(const std::string& hf_name);
// Inverse of hf_to_canonical_name.
std::optional<std::string> canonical_to_hf_name(const std::string& canonical);

// Number of RoPE heads whose rows a canonical tensor holds (attn_q: n_heads, attn_k: n_kv_heads,
// weights and biases), 0 for tensors RoPE does not touch.
int64_t rope_heads_of(const std::string& canonical, const ModelConfig& config);

// Reorders the n_heads * head_dim rows (each row_bytes long) of a q/k weight or bias.
// HF keeps each head as [2, head_dim/2] (pairs (i, i + d/2)); interleaved keeps [head_dim/2, 2]
// (pairs (2i, 2i+1)), as llama.cpp's convert_hf_to_gguf.py permute():
//   w.reshape(n_head, 2, head_dim/2, ...).swapaxes(1, 2).reshape(w.shape)
void permute_rope_rows(const uint8_t* src, uint8_t* dst, int64_t n_heads, int64_t head_dim, size_t row_bytes,
                       bool to_interleaved);

struct HfConfigInfo {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  bool permute_qk = false;   // weights are in HF rotate-half order and must become interleaved
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
};

// Parses config.json text; `file` names it in errors.
Result<ModelConfig> parse_hf_config(const std::string& file, const std::string& text, HfConfigInfo* info);
// config.json text for the model (LlamaForCausalLM or Qwen2ForCausalLM).
Result<std::string> hf_config_json(const ModelConfig& config, const TokenizerData& tok, const std::string& torch_dtype);

}  // namespace llmc
