// The .llmc writer flags shared by every command that writes a model (--zstd, --entropy): one
// declaration, one check against the output format, one mapping onto LlmcWriteOptions.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "formats/model_io.h"

namespace llmc::cli {

struct WriterFlags {
  int zstd = 0;
  std::string entropy;  // none|zstd|huffman|rans|auto; "" = not given

  // Adds --zstd LEVEL and --entropy CODER to `sub`.
  void add(CLI::App& sub);
  // Usage errors: entropy coding or zstd for a GGUF/safetensors output (only none/auto allowed
  // there, meaning "as the format stores it"), --zstd with --entropy none/huffman/rans.
  Result<void> check(FileFormat output) const;
  // Sets zstd_level and coding (left unset without --entropy: --zstd N alone keeps its meaning).
  void apply(LlmcWriteOptions& options) const;
  // "zstd: N, entropy: X" for provenance records.
  std::string describe() const;
};

}  // namespace llmc::cli
