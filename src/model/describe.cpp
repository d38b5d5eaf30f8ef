// Model summaries shared by `llmc inspect` and verification reports.
#include "model/describe.h"

#include "core/lowrank.h"
#include "model/arch.h"

namespace llmc {

SizeSummary summarize_size(const Model& model) {
  SizeSummary s;
  for (const auto& t : model.tensors()) {
    const uint64_t bytes = t.encoded_bytes();
    ++s.tensors;
    s.parameters += t.numel();
    s.encoded_bytes += bytes;
    const std::string enc = describe_decomposition_group(*t.encoding);  // ranks vary per tensor: not grouped by
    ++s.tensors_per_encoding[enc];
    s.bytes_per_encoding[enc] += bytes;
    if (counts_for_bpw(tensor_role(t.name))) {
      s.bpw_elements += t.numel();
      s.bpw_bytes += bytes;
    }
  }
  return s;
}

nlohmann::json config_to_json(const ModelConfig& c) {
  static const char* kRopeScaling[] = {"none", "linear", "llama3"};
  nlohmann::json j = {
      {"family", family_name(c.family)},
      {"dim", c.dim},
      {"hidden_dim", c.hidden_dim},
      {"n_layers", c.n_layers},
      {"n_heads", c.n_heads},
      {"n_kv_heads", c.n_kv_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"context_length", c.context_length},
      {"norm", c.norm == NormKind::kRmsNorm ? "rmsnorm" : "layernorm"},
      {"norm_eps", c.norm_eps},
      {"rope_theta", c.rope_theta},
      {"rope_style", c.rope_style == RopeStyle::kInterleaved ? "interleaved" : "neox"},
      {"rope_scaling", kRopeScaling[static_cast<int>(c.rope_scaling.type)]},
      {"activation", c.activation == Activation::kSilu ? "silu" : "gelu"},
      {"tied_embeddings", c.tied_embeddings},
      {"attn_qkv_bias", c.attn_qkv_bias},
  };
  // Per-layer widths after structured pruning (the scalars above are then the largest).
  if (!c.layer_n_heads.empty()) j["layer_n_heads"] = c.layer_n_heads;
  if (!c.layer_n_kv_heads.empty()) j["layer_n_kv_heads"] = c.layer_n_kv_heads;
  if (!c.layer_hidden_dim.empty()) j["layer_hidden_dim"] = c.layer_hidden_dim;
  if (c.rope_scaling.type != RopeScalingType::kNone) {
    j["rope_scaling_factor"] = c.rope_scaling.factor;
    j["rope_scaling_original_context"] = c.rope_scaling.original_context;
  }
  return j;
}

nlohmann::json tokenizer_summary_json(const TokenizerData& t) {
  static const char* kKinds[] = {"none", "sentencepiece", "gpt2-bpe"};
  return {
      {"kind", kKinds[static_cast<int>(t.kind)]},
      {"vocab_size", t.tokens.size()},
      {"merges", t.merges.size()},
      {"pre", t.pre},
      {"bos_id", t.bos_id},
      {"eos_id", t.eos_id},
      {"unk_id", t.unk_id},
      {"add_bos", t.add_bos},
  };
}

nlohmann::json size_summary_json(const SizeSummary& s) {
  nlohmann::json enc = nlohmann::json::object();
  for (const auto& [name, count] : s.tensors_per_encoding)
    enc[name] = {{"tensors", count}, {"bytes", s.bytes_per_encoding.at(name)}};
  return {{"tensors", s.tensors},
          {"parameters", s.parameters},
          {"encoded_bytes", s.encoded_bytes},
          {"weight_elements", s.bpw_elements},
          {"weight_bytes", s.bpw_bytes},
          {"bits_per_weight", s.bits_per_weight()},
          {"encodings", enc}};
}

}  // namespace llmc
