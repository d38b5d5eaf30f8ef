// Summaries of a model for inspect and reports: config/tokenizer as JSON, sizes and bits per weight.
#pragma once

#include <nlohmann/json.hpp>

#include "core/model.h"
#include "formats/llmc.h"

namespace llmc {

struct SizeSummary {
  int64_t tensors = 0;
  int64_t parameters = 0;      // logical elements of all tensors
  uint64_t encoded_bytes = 0;  // bytes of all encoded tensors
  int64_t bpw_elements = 0;    // logical elements of linear/embedding/output weights
  uint64_t bpw_bytes = 0;      // their encoded bytes (codes, scales, mins, codebooks, masks...)
  std::map<std::string, int64_t> tensors_per_encoding;  // describe_encoding -> count
  std::map<std::string, uint64_t> bytes_per_encoding;   // describe_encoding -> bytes
  // Effective bits per weight (DESIGN.md §6): bpw_bytes * 8 / bpw_elements.
  double bits_per_weight() const { return bpw_elements ? 8.0 * static_cast<double>(bpw_bytes) / bpw_elements : 0.0; }
};

// Tied embeddings are one tensor and so are counted once.
SizeSummary summarize_size(const Model& model);

// Bytes of each storage stage of a .llmc file (docs/storage.md): logical f32/f16 bytes -> encoded
// (the buffers of the encoding trees: packed codes, scales, masks, ...) -> deduplicated (each
// distinct buffer once) -> stored (after zstd / Huffman / rANS) -> file (+ header, alignment).
struct SectionUse {
  std::string role;  // "codes", "scales", "data", "sparse mask", ...
  uint32_t section = 0;
  SectionCoder coder = SectionCoder::kNone;
  SectionLayout layout;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
  bool shared = false;  // stored once for an earlier reference (dedup): counted there
};
struct TensorStorage {
  std::string name;
  uint64_t f32_bytes = 0;      // numel * 4
  uint64_t f16_bytes = 0;      // numel * 2
  uint64_t encoded_bytes = 0;  // every buffer of its encoding tree
  uint64_t unique_bytes = 0;   // raw bytes of the sections it is first to reference
  uint64_t stored_bytes = 0;   // their stored bytes
  std::vector<SectionUse> sections;
};
struct CoderTotals {
  int64_t sections = 0;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
};
struct StorageSummary {
  std::vector<TensorStorage> tensors;
  uint64_t f32_bytes = 0, f16_bytes = 0, encoded_bytes = 0, unique_bytes = 0, stored_bytes = 0;
  uint64_t header_bytes = 0;  // prefix + FlatBuffers header
  uint64_t file_bytes = 0;
  std::map<std::string, CoderTotals> coders;  // section_coder_name -> totals over distinct sections
};
// `model` gives the tensors (encodings, shapes), `file` the section table of the same .llmc
// (a header-only open is enough); tensors are matched by name.
StorageSummary summarize_storage(const Model& model, const LlmcFile& file);
nlohmann::json storage_summary_json(const StorageSummary& storage);

nlohmann::json config_to_json(const ModelConfig& config);
nlohmann::json tokenizer_summary_json(const TokenizerData& tokenizer);
nlohmann::json size_summary_json(const SizeSummary& size);

}  // namespace llmc
