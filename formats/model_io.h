// Entry points of every checkpoint reader and writer, and format detection from content.
#pragma once

#include <optional>
#include <string>

#include "core/model.h"
#include "formats/section_codec.h"

namespace llmc {

class ScratchFile;  // formats/scratch_file.h

enum class FileFormat { kUnknown, kLlmc, kGguf, kSafetensors, kLlama2c };
const char* file_format_name(FileFormat f);

// Detects the format from the first bytes (and for a folder, its config.json/safetensors).
Result<FileFormat> detect_format(const std::string& path);

struct LoadOptions {
  std::string tokenizer_path;   // separate tokenizer (llama2.c tokenizer.bin, tokenizer.json, or a GGUF)
  bool require_tensors = true;  // false: a vocabulary-only GGUF is acceptable
  // false: config and vocabulary only, for tokenizing (GGUF: tensor data is neither read nor
  // repacked and the result has no tensors; other formats load as usual). Implies !require_tensors.
  bool tensors = true;
  // true: the caller reads each tensor about once (a transformation, not a runtime), so readers may
  // give mapped file pages back after checking them (.llmc: LlmcReadOptions::release_verified).
  bool read_once = false;
  // Where readers put the tensors they build on the heap (GGUF blocks repacked, sections decoded)
  // instead of keeping them there, so that they cost RSS only while read; null: the heap.
  std::shared_ptr<ScratchFile> scratch;
};

// Any supported format, detected from content. The result passes validate_model() unless
// require_tensors is false and the file holds no tensors.
Result<Model> load_model(const std::string& path, const LoadOptions& options = {});

// Tokenizer from a separate file (tokenizer.bin, tokenizer.json, or a GGUF's vocabulary).
Result<TokenizerData> load_tokenizer(const std::string& path);

// ---- per-format readers (formats/<format>_reader.cpp)
Result<Model> read_llama2c(const std::string& path);
Result<TokenizerData> read_llama2c_tokenizer(const std::string& path, int64_t vocab_size);
Result<Model> read_gguf(const std::string& path, bool require_tensors, bool load_tensors = true,
                        ScratchFile* scratch = nullptr);
Result<Model> read_hf(const std::string& path);  // folder, config.json, model.safetensors or index.json
Result<TokenizerData> read_hf_tokenizer(const std::string& tokenizer_json_path);
Result<Model> read_llmc(const std::string& path);

// ---- writers: all write atomically; callers check the output path first (check_output_path).
enum class ExportDType { kKeep, kF32, kF16, kBF16, kQ8_0, kQ4_0 };
const char* export_dtype_name(ExportDType d);

inline constexpr int kDefaultZstdLevel = 3;

struct LlmcWriteOptions {
  // zstd level. With `coding` unset: 0 = raw sections (mmap-able), 1..22 = zstd frames of the raw
  // bytes where they are smaller. With `coding` set: the level of its zstd candidates (0 = 3).
  int zstd_level = 0;
  // --entropy (formats/section_codec.h): how sections are coded; unset = by zstd_level as above.
  std::optional<SectionCoding> coding;
  std::string recipe;  // resolved recipe text for the provenance record
  std::string command_line;
  std::string input_path;
  uint64_t input_xxh64 = 0;
};
Result<void> write_llmc(const Model& model, const std::string& path, const LlmcWriteOptions& options);

struct GgufWriteOptions {
  ExportDType dtype = ExportDType::kKeep;  // kKeep: float tensors as stored, others to f32
};
Result<void> write_gguf(const Model& model, const std::string& path, const GgufWriteOptions& options);

struct SafetensorsWriteOptions {
  ExportDType dtype = ExportDType::kKeep;  // f32/f16/bf16 only
};
// Writes a Hugging Face folder: model.safetensors + config.json (+ tokenizer.json when known).
Result<void> write_safetensors(const Model& model, const std::string& dir, const SafetensorsWriteOptions& options);

}  // namespace llmc
