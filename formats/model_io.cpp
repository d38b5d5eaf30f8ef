// Format detection from content and the load_model / load_tokenizer dispatch.
#include "formats/model_io.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "formats/file_io.h"
#include "formats/llmc.h"
#include "model/arch.h"

namespace llmc {

namespace fs = std::filesystem;

const char* file_format_name(FileFormat f) {
  switch (f) {
    case FileFormat::kLlmc: return "llmc";
    case FileFormat::kGguf: return "gguf";
    case FileFormat::kSafetensors: return "safetensors";
    case FileFormat::kLlama2c: return "llama2c";
    case FileFormat::kUnknown: break;
  }
  return "unknown";
}

const char* export_dtype_name(ExportDType d) {
  switch (d) {
    case ExportDType::kKeep: return "keep";
    case ExportDType::kF32: return "f32";
    case ExportDType::kF16: return "f16";
    case ExportDType::kBF16: return "bf16";
    case ExportDType::kQ8_0: return "q8_0";
    case ExportDType::kQ4_0: return "q4_0";
  }
  return "?";
}

namespace {

// Magic numbers at offset 0, one row per format.
struct MagicRow {
  const char* magic;
  size_t size;
  FileFormat format;
};
const MagicRow kMagics[] = {
    {"LLMC", 4, FileFormat::kLlmc},
    {"GGUF", 4, FileFormat::kGguf},
    {"ak42", 4, FileFormat::kLlama2c},  // stored little-endian: bytes "24ka"
};

bool starts_with_json_header(const uint8_t* p, size_t n) {
  // safetensors: u64 header length, then a JSON object
  if (n < 9) return false;
  uint64_t len;
  std::memcpy(&len, p, 8);
  return len > 1 && p[8] == '{';
}

}  // namespace

Result<FileFormat> detect_format(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / "config.json")) return FileFormat::kSafetensors;
    return make_error(ErrorCode::kFormat, path, ": folder without config.json is not a Hugging Face model");
  }
  const std::string name = fs::path(path).filename().string();
  if (name == "config.json" || name == "model.safetensors.index.json") return FileFormat::kSafetensors;
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, path, ": cannot open");
  uint8_t head[32] = {};
  in.read(reinterpret_cast<char*>(head), sizeof(head));
  const size_t n = static_cast<size_t>(in.gcount());
  for (const auto& row : kMagics) {
    if (n < row.size) continue;
    if (row.format == FileFormat::kLlama2c) {
      uint32_t magic;
      std::memcpy(&magic, head, 4);
      if (magic == 0x616b3432u) return row.format;
    } else if (std::memcmp(head, row.magic, row.size) == 0) {
      return row.format;
    }
  }
  if (starts_with_json_header(head, n)) return FileFormat::kSafetensors;
  if (n >= 28) return FileFormat::kLlama2c;  // legacy v0: seven int32 header fields, checked by the reader
  return make_error(ErrorCode::kFormat, path, ": unrecognised model format (", n, " bytes)");
}

Result<TokenizerData> load_tokenizer(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".json") == 0) return read_hf_tokenizer(path);
  LLMC_ASSIGN_OR_RETURN(FileFormat f, detect_format(path));
  if (f == FileFormat::kGguf) {
    LLMC_ASSIGN_OR_RETURN(Model m, read_gguf(path, /*require_tensors=*/false, /*load_tensors=*/false));
    if (m.tokenizer.empty()) return make_error(ErrorCode::kFormat, path, ": GGUF file has no vocabulary");
    return std::move(m.tokenizer);
  }
  if (f == FileFormat::kLlmc) {
    LLMC_ASSIGN_OR_RETURN(Model m, read_llmc(path));
    return std::move(m.tokenizer);
  }
  return read_llama2c_tokenizer(path, -1);
}

Result<Model> load_model(const std::string& path, const LoadOptions& options) {
  LLMC_ASSIGN_OR_RETURN(FileFormat format, detect_format(path));
  Result<Model> loaded = [&]() -> Result<Model> {
    switch (format) {
      case FileFormat::kLlmc:
        return read_llmc(path,
                         LlmcReadOptions{.release_verified = options.read_once, .scratch = options.scratch.get()});
      case FileFormat::kGguf:
        return read_gguf(path, options.require_tensors && options.tensors, options.tensors, options.scratch.get());
      case FileFormat::kSafetensors: return read_hf(path);
      case FileFormat::kLlama2c: return read_llama2c(path);
      case FileFormat::kUnknown: break;
    }
    return make_error(ErrorCode::kFormat, path, ": unknown format");
  }();
  if (!loaded.ok()) return loaded.error();
  Model model = std::move(loaded).value();
  if (!options.tokenizer_path.empty()) {
    LLMC_ASSIGN_OR_RETURN(TokenizerData tok, load_tokenizer(options.tokenizer_path));
    if (!model.tensors().empty() && static_cast<int64_t>(tok.tokens.size()) != model.config.vocab_size)
      return make_error(ErrorCode::kShape, options.tokenizer_path, ": tokenizer has ", tok.tokens.size(),
                        " tokens but the model's vocabulary is ", model.config.vocab_size);
    model.tokenizer = std::move(tok);
  }
  if (model.tensors().empty() && (!options.require_tensors || !options.tensors)) return model;
  if (auto v = validate_model(model); !v.ok()) return with_context(v.error(), path);
  model.metadata["source.format"] = file_format_name(format);
  model.metadata["source.path"] = path;
  return model;
}

}  // namespace llmc
