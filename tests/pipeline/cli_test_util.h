// Helpers shared by the CLI tests of the one-stage recipe commands (quantize, share).
#pragma once

#include <filesystem>
#include <string>

#include "test_util.h"

namespace llmc::test {

// stories260K and its tokenizer as CLI arguments (empty when the fixtures are absent).
struct StoriesCli {
  std::string bin, tok;
  bool ok() const { return !bin.empty() && !tok.empty(); }
  std::string in() const { return bin + " --tokenizer " + tok; }
};
inline StoriesCli stories_cli() {
  return {fixture("models/stories260K/stories260K.bin"), fixture("models/stories260K/tok512.bin")};
}

// Regular files in `dir` (a refused command must leave none behind).
inline size_t files_in(const TempDir& dir) {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.dir())) n += e.is_regular_file();
  return n;
}

}  // namespace llmc::test
