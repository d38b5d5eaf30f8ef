// Text <-> token ids for the vocabularies the IR carries: SentencePiece-style BPE with scores and
// byte fallback (llama2.c, GGUF "llama") and GPT-2 byte-level BPE with merges (GGUF "gpt2", HF).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/model.h"

namespace llmc {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Picks the implementation from data.kind; errors when the data is unusable.
  static Result<std::unique_ptr<Tokenizer>> create(const TokenizerData& data);

  // Ids for `text` (no BOS unless add_bos). Special/control tokens in the text are not parsed.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  // Text of a whole sequence (BOS/EOS and other control tokens produce no text).
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  // Text that token `id` adds when it follows `prev` (for streaming output); may be a partial
  // UTF-8 sequence for byte tokens.
  virtual std::string decode_piece(int32_t prev, int32_t id) const = 0;

  int32_t bos() const { return data_.bos_id; }
  int32_t eos() const { return data_.eos_id; }
  int64_t vocab_size() const { return static_cast<int64_t>(data_.tokens.size()); }
  const TokenizerData& data() const { return data_; }

 protected:
  explicit Tokenizer(TokenizerData data) : data_(std::move(data)) {}
  TokenizerData data_;
};

}  // namespace llmc
