// libFuzzer target: encoding arbitrary bytes with every pre-tokenizer and a SentencePiece vocabulary
// must not crash, and decoding must give the bytes back (the tiny vocabularies cover all bytes).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "model/tokenizer.h"
#include "model/unicode.h"

namespace {

using llmc::TokenizerData;

// All 256 byte tokens plus a few merges, so that every input is representable.
TokenizerData byte_level_vocab(const char* pre) {
  TokenizerData d;
  d.kind = llmc::TokenizerKind::kBytePairGpt2;
  d.pre = pre;
  for (uint32_t b = 0, next = 256; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    std::string s;
    llmc::utf8_append(s, printable ? b : next++);
    d.tokens.push_back(s);
  }
  for (const char* t : {"ab", "abc",
                        "\xC4\xA0"
                        "a",
                        "12"})
    d.tokens.push_back(t);
  d.merges = {"a b", "ab c", "\xC4\xA0 a", "1 2"};
  return d;
}

TokenizerData sentencepiece_vocab() {
  TokenizerData d;
  d.kind = llmc::TokenizerKind::kSentencePiece;
  for (const char* t : {"<unk>", "<s>", "</s>"}) d.tokens.push_back(t);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    d.tokens.push_back(buf);
  }
  for (const char* t : {"\xE2\x96\x81", "a", "b", "ab",
                        "\xE2\x96\x81"
                        "a",
                        "\xE2\x96\x81\xE2\x96\x81"})
    d.tokens.push_back(t);
  for (size_t i = 0; i < d.tokens.size(); ++i) d.scores.push_back(-static_cast<float>(i));
  d.bos_id = 1;
  d.eos_id = 2;
  d.unk_id = 0;
  return d;
}

std::unique_ptr<llmc::Tokenizer> make(const TokenizerData& data) {
  auto tok = llmc::Tokenizer::create(data);
  if (!tok.ok()) std::abort();
  return std::move(tok).value();
}

void check_round_trip(const llmc::Tokenizer& tok, const std::string& text) {
  if (tok.decode(tok.encode(text, true)) != text) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<llmc::Tokenizer> kByteLevel[] = {
      make(byte_level_vocab("gpt2")), make(byte_level_vocab("llama-bpe")), make(byte_level_vocab("qwen2")),
      make(byte_level_vocab("smollm"))};
  static const std::unique_ptr<llmc::Tokenizer> kSentencePiece = make(sentencepiece_vocab());
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const auto& tok : kByteLevel) check_round_trip(*tok, text);
  // SentencePiece cannot tell a literal U+2581 from an escaped space: not lossless there.
  if (text.find("\xE2\x96\x81") == std::string::npos) check_round_trip(*kSentencePiece, text);
  return 0;
}
