// Pre-tokenizers of byte-level BPE vocabularies: split text into words before the merges, as the
// regular expression named by GGUF's tokenizer.ggml.pre would (hand-written matchers, no regex).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace llmc {

enum class PreTokenizerKind {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
            // \s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,   // as kLlama3 with \p{N} (one digit per word)
  kSmollm,  // \p{N} split first (each digit alone), then kGpt2 on the rest
};

// kGpt2 for "", "default", "gpt2" and the other names llama.cpp maps to the GPT-2 pattern;
// nullopt for names this build does not know.
std::optional<PreTokenizerKind> pretokenizer_from_name(std::string_view pre);

// Appends the words of `text` to `words`: contiguous byte ranges of `text` that cover it exactly
// (invalid UTF-8 bytes count as "other" characters, so the split is lossless).
void pretokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& words);

}  // namespace llmc
