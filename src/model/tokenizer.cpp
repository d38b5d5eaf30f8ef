// Tokenizer::create: validates the vocabulary data and picks the implementation by kind.
#include "model/tokenizer.h"

#include "model/tokenizer_impl.h"

namespace llmc {

TokenType token_type_of(const TokenizerData& data, int32_t id) {
  if (!data.token_types.empty()) return static_cast<TokenType>(data.token_types[static_cast<size_t>(id)]);
  if (id == data.bos_id || id == data.eos_id || id == data.pad_id) return TokenType::kControl;
  if (id == data.unk_id) return TokenType::kUnknown;
  return TokenType::kNormal;
}

std::optional<uint8_t> parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]);
  const int lo = hex(piece[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::create(const TokenizerData& data) {
  if (data.tokens.empty()) return make_error(ErrorCode::kFormat, "tokenizer: the vocabulary is empty");
  const size_t n = data.tokens.size();
  if (n > static_cast<size_t>(INT32_MAX))
    return make_error(ErrorCode::kFormat, "tokenizer: ", n, " tokens do not fit 32-bit ids");
  if (!data.scores.empty() && data.scores.size() != n)
    return make_error(ErrorCode::kFormat, "tokenizer: ", data.scores.size(), " scores for ", n, " tokens");
  if (!data.token_types.empty() && data.token_types.size() != n)
    return make_error(ErrorCode::kFormat, "tokenizer: ", data.token_types.size(), " token types for ", n, " tokens");
  const struct {
    const char* name;
    int32_t id;
  } kSpecial[] = {{"bos", data.bos_id}, {"eos", data.eos_id}, {"unk", data.unk_id}, {"pad", data.pad_id}};
  for (const auto& s : kSpecial) {
    if (s.id < -1 || s.id >= static_cast<int64_t>(n))
      return make_error(ErrorCode::kFormat, "tokenizer: ", s.name, " id ", s.id, " outside the vocabulary of ", n);
  }
  switch (data.kind) {
    case TokenizerKind::kSentencePiece: return make_spm_tokenizer(data);
    case TokenizerKind::kBytePairGpt2: return make_bpe_tokenizer(data);
    case TokenizerKind::kNone: break;
  }
  return make_error(ErrorCode::kUnsupported, "tokenizer: the model carries no tokenizer (kind none)");
}

}  // namespace llmc
