// Internal to the tokenizers: the two implementations' factories and helpers they share.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string_view>

#include "model/tokenizer.h"

namespace llmc {

Result<std::unique_ptr<Tokenizer>> make_spm_tokenizer(TokenizerData data);
Result<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(TokenizerData data);

// The token's GGUF type; when the data carries no types, BOS/EOS/PAD count as control and UNK
// as unknown (llama2.c's tokenizer.bin has no types).
TokenType token_type_of(const TokenizerData& data, int32_t id);

// The byte that a "<0xNN>" piece stands for.
std::optional<uint8_t> parse_byte_piece(std::string_view piece);

}  // namespace llmc
