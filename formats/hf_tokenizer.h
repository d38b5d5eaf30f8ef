// Hugging Face tokenizer.json / tokenizer_config.json <-> TokenizerData (BPE: byte-level and SentencePiece-style).
#pragma once

#include <string>

#include "core/model.h"

namespace llmc {

struct HfTokenizerInfo {
  std::string pre_regex;      // Split pattern(s) of the pre-tokenizer, "" when none
  std::string chat_template;  // from tokenizer_config.json, "" when none
};

// Parses tokenizer.json text (`file` names it in errors) and, when non-empty, the text of the
// tokenizer_config.json next to it (special tokens, add_bos/add_eos, chat template).
Result<TokenizerData> parse_hf_tokenizer(const std::string& file, const std::string& tokenizer_json,
                                         const std::string& tokenizer_config_json, HfTokenizerInfo* info = nullptr);

// tokenizer.json text for a byte-level BPE vocabulary (kBytePairGpt2); error for other kinds.
Result<std::string> hf_tokenizer_json(const TokenizerData& tok);
// tokenizer_config.json text: special tokens and add_bos/add_eos.
std::string hf_tokenizer_config_json(const TokenizerData& tok, int64_t context_length);

}  // namespace llmc
