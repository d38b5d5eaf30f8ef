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

StorageSummary summarize_storage(const Model& model, const LlmcFile& file) {
  StorageSummary s;
  std::map<std::string, const LlmcTensorSections*> by_name;
  for (const auto& t : file.tensor_sections) by_name[t.tensor] = &t;
  std::vector<char> seen(file.sections.size(), 0);
  for (const auto& t : model.tensors()) {
    TensorStorage ts;
    ts.name = t.name;
    ts.f32_bytes = static_cast<uint64_t>(t.numel()) * 4;
    ts.f16_bytes = static_cast<uint64_t>(t.numel()) * 2;
    ts.encoded_bytes = t.encoded_bytes();
    if (auto it = by_name.find(t.name); it != by_name.end()) {
      for (const LlmcSectionRef& ref : it->second->refs) {
        if (ref.section >= file.sections.size()) continue;
        const LlmcSectionInfo& info = file.sections[ref.section];
        SectionUse use{ref.role,         ref.section,           info.coder, info.layout, info.raw_size,
                       info.stored_size, seen[ref.section] != 0};
        if (!use.shared) {
          seen[ref.section] = 1;
          ts.unique_bytes += info.raw_size;
          ts.stored_bytes += info.stored_size;
        }
        ts.sections.push_back(std::move(use));
      }
    }
    s.f32_bytes += ts.f32_bytes;
    s.f16_bytes += ts.f16_bytes;
    s.encoded_bytes += ts.encoded_bytes;
    s.tensors.push_back(std::move(ts));
  }
  // Totals over the section table (sections no tensor references still take space).
  for (const LlmcSectionInfo& info : file.sections) {
    s.unique_bytes += info.raw_size;
    s.stored_bytes += info.stored_size;
    CoderTotals& c = s.coders[section_coder_name(info.coder)];
    ++c.sections;
    c.raw_bytes += info.raw_size;
    c.stored_bytes += info.stored_size;
  }
  s.header_bytes = kLlmcPrefixSize + file.header_size;
  s.file_bytes = file.size;
  return s;
}

nlohmann::json storage_summary_json(const StorageSummary& s) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const TensorStorage& t : s.tensors) {
    nlohmann::json secs = nlohmann::json::array();
    for (const SectionUse& u : t.sections)
      secs.push_back({{"role", u.role},
                      {"section", u.section},
                      {"coder", section_coder_name(u.coder)},
                      {"layout", u.layout.str()},
                      {"raw_bytes", u.raw_bytes},
                      {"stored_bytes", u.stored_bytes},
                      {"shared", u.shared}});
    tensors.push_back({{"name", t.name},
                       {"f32_bytes", t.f32_bytes},
                       {"f16_bytes", t.f16_bytes},
                       {"encoded_bytes", t.encoded_bytes},
                       {"unique_bytes", t.unique_bytes},
                       {"stored_bytes", t.stored_bytes},
                       {"sections", secs}});
  }
  nlohmann::json coders = nlohmann::json::object();
  for (const auto& [name, c] : s.coders)
    coders[name] = {{"sections", c.sections}, {"raw_bytes", c.raw_bytes}, {"stored_bytes", c.stored_bytes}};
  return {{"f32_bytes", s.f32_bytes},
          {"f16_bytes", s.f16_bytes},
          {"encoded_bytes", s.encoded_bytes},
          {"unique_bytes", s.unique_bytes},
          {"stored_bytes", s.stored_bytes},
          {"header_bytes", s.header_bytes},
          {"file_bytes", s.file_bytes},
          {"coders", coders},
          {"tensors", tensors}};
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
