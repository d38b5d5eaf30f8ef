// Summaries of a model for inspect and reports: config/tokenizer as JSON, sizes and bits per weight.
#pragma once

#include <nlohmann/json.hpp>

#include "core/model.h"

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

nlohmann::json config_to_json(const ModelConfig& config);
nlohmann::json tokenizer_summary_json(const TokenizerData& tokenizer);
nlohmann::json size_summary_json(const SizeSummary& size);

}  // namespace llmc
