// Tokenizer tests: pre-tokenizer splits against Python's `regex` module, tiny hand-made
// vocabularies, llama.cpp's tokenizer vectors (.inp/.out), round trips, SmolLM2's vocabulary.
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <sstream>

#include "formats/model_io.h"
#include "model/pretokenizer.h"
#include "model/tokenizer.h"
#include "model/unicode.h"
#include "test_util.h"

namespace llmc {
namespace {

struct SplitCase {
  const char* pre;
  const char* text;
  std::vector<std::string> words;
};

// Expected words from Python: regex.findall(<pattern of llama.cpp for `pre`>, text) with the
// `regex` package; "smollm" first splits off every \p{N} character, then applies the GPT-2 pattern.
const SplitCase kSplitCases[] = {
    {"gpt2", "Hello world", {"Hello", " world"}},
    {"gpt2", "  Hello  world!!  ", {" ", " Hello", " ", " world", "!!", "  "}},
    {"gpt2", "I'm he's THEY'RE we'Ve", {"I", "'m", " he", "'s", " THEY", "'", "RE", " we", "'", "Ve"}},
    {"gpt2", "12345 abc6789", {"12345", " abc", "6789"}},
    {"gpt2",
     "\x0a"
     "\x0a"
     "  x\x09"
     "\x09"
     "y \x0d"
     "\x0a"
     " z",
     {"\x0a"
      "\x0a"
      " ",
      " x",
      "\x09"
      "",
      "\x09"
      "",
      "y",
      " \x0d"
      "\x0a"
      "",
      " z"}},
    {"gpt2",
     "F\xc3"
     "\xbc"
     "hrer \xc2"
     "\xbd"
     " \xe6"
     "\x9d"
     "\xb1"
     "\xe4"
     "\xba"
     "\xac"
     "\xe3"
     "\x82"
     "\xbf"
     "\xe3"
     "\x83"
     "\xaf"
     "\xe3"
     "\x83"
     "\xbc"
     " 3.14",
     {"F\xc3"
      "\xbc"
      "hrer",
      " \xc2"
      "\xbd"
      "",
      " \xe6"
      "\x9d"
      "\xb1"
      "\xe4"
      "\xba"
      "\xac"
      "\xe3"
      "\x82"
      "\xbf"
      "\xe3"
      "\x83"
      "\xaf"
      "\xe3"
      "\x83"
      "\xbc"
      "",
      " 3", ".", "14"}},
    {"gpt2",
     "a\xc2"
     "\xa0"
     "b\xe3"
     "\x80"
     "\x80"
     "c",
     {"a",
      "\xc2"
      "\xa0"
      "",
      "b",
      "\xe3"
      "\x80"
      "\x80"
      "",
      "c"}},
    {"gpt2",
     "emoji \xf0"
     "\x9f"
     "\x98"
     "\x80"
     "!\x3f"
     " ok",
     {"emoji",
      " \xf0"
      "\x9f"
      "\x98"
      "\x80"
      "!\x3f"
      "",
      " ok"}},
    {"gpt2",
     "x = f(y);\x0a"
     "\x09"
     "return 0;\x0a"
     "",
     {"x", " =", " f", "(", "y", ");",
      "\x0a"
      "",
      "\x09"
      "",
      "return", " 0", ";",
      "\x0a"
      ""}},
    {"llama-bpe", "Hello world", {"Hello", " world"}},
    {"llama-bpe", "  Hello  world!!  ", {" ", " Hello", " ", " world", "!!", "  "}},
    {"llama-bpe", "I'm he's THEY'RE we'Ve", {"I", "'m", " he", "'s", " THEY", "'RE", " we", "'Ve"}},
    {"llama-bpe", "12345 abc6789", {"123", "45", " abc", "678", "9"}},
    {"llama-bpe",
     "\x0a"
     "\x0a"
     "  x\x09"
     "\x09"
     "y \x0d"
     "\x0a"
     " z",
     {"\x0a"
      "\x0a"
      "",
      " ", " x",
      "\x09"
      "",
      "\x09"
      "y",
      " \x0d"
      "\x0a"
      "",
      " z"}},
    {"llama-bpe",
     "F\xc3"
     "\xbc"
     "hrer \xc2"
     "\xbd"
     " \xe6"
     "\x9d"
     "\xb1"
     "\xe4"
     "\xba"
     "\xac"
     "\xe3"
     "\x82"
     "\xbf"
     "\xe3"
     "\x83"
     "\xaf"
     "\xe3"
     "\x83"
     "\xbc"
     " 3.14",
     {"F\xc3"
      "\xbc"
      "hrer",
      " ",
      "\xc2"
      "\xbd"
      "",
      " \xe6"
      "\x9d"
      "\xb1"
      "\xe4"
      "\xba"
      "\xac"
      "\xe3"
      "\x82"
      "\xbf"
      "\xe3"
      "\x83"
      "\xaf"
      "\xe3"
      "\x83"
      "\xbc"
      "",
      " ", "3", ".", "14"}},
    {"llama-bpe",
     "a\xc2"
     "\xa0"
     "b\xe3"
     "\x80"
     "\x80"
     "c",
     {"a",
      "\xc2"
      "\xa0"
      "b",
      "\xe3"
      "\x80"
      "\x80"
      "c"}},
    {"llama-bpe",
     "emoji \xf0"
     "\x9f"
     "\x98"
     "\x80"
     "!\x3f"
     " ok",
     {"emoji",
      " \xf0"
      "\x9f"
      "\x98"
      "\x80"
      "!\x3f"
      "",
      " ok"}},
    {"llama-bpe",
     "x = f(y);\x0a"
     "\x09"
     "return 0;\x0a"
     "",
     {"x", " =", " f", "(y",
      ");\x0a"
      "",
      "\x09"
      "return",
      " ", "0",
      ";\x0a"
      ""}},
    {"qwen2", "Hello world", {"Hello", " world"}},
    {"qwen2", "  Hello  world!!  ", {" ", " Hello", " ", " world", "!!", "  "}},
    {"qwen2", "I'm he's THEY'RE we'Ve", {"I", "'m", " he", "'s", " THEY", "'RE", " we", "'Ve"}},
    {"qwen2", "12345 abc6789", {"1", "2", "3", "4", "5", " abc", "6", "7", "8", "9"}},
    {"qwen2",
     "\x0a"
     "\x0a"
     "  x\x09"
     "\x09"
     "y \x0d"
     "\x0a"
     " z",
     {"\x0a"
      "\x0a"
      "",
      " ", " x",
      "\x09"
      "",
      "\x09"
      "y",
      " \x0d"
      "\x0a"
      "",
      " z"}},
    {"qwen2",
     "F\xc3"
     "\xbc"
     "hrer \xc2"
     "\xbd"
     " \xe6"
     "\x9d"
     "\xb1"
     "\xe4"
     "\xba"
     "\xac"
     "\xe3"
     "\x82"
     "\xbf"
     "\xe3"
     "\x83"
     "\xaf"
     "\xe3"
     "\x83"
     "\xbc"
     " 3.14",
     {"F\xc3"
      "\xbc"
      "hrer",
      " ",
      "\xc2"
      "\xbd"
      "",
      " \xe6"
      "\x9d"
      "\xb1"
      "\xe4"
      "\xba"
      "\xac"
      "\xe3"
      "\x82"
      "\xbf"
      "\xe3"
      "\x83"
      "\xaf"
      "\xe3"
      "\x83"
      "\xbc"
      "",
      " ", "3", ".", "1", "4"}},
    {"qwen2",
     "a\xc2"
     "\xa0"
     "b\xe3"
     "\x80"
     "\x80"
     "c",
     {"a",
      "\xc2"
      "\xa0"
      "b",
      "\xe3"
      "\x80"
      "\x80"
      "c"}},
    {"qwen2",
     "emoji \xf0"
     "\x9f"
     "\x98"
     "\x80"
     "!\x3f"
     " ok",
     {"emoji",
      " \xf0"
      "\x9f"
      "\x98"
      "\x80"
      "!\x3f"
      "",
      " ok"}},
    {"qwen2",
     "x = f(y);\x0a"
     "\x09"
     "return 0;\x0a"
     "",
     {"x", " =", " f", "(y",
      ");\x0a"
      "",
      "\x09"
      "return",
      " ", "0",
      ";\x0a"
      ""}},
    {"smollm", "Hello world", {"Hello", " world"}},
    {"smollm", "  Hello  world!!  ", {" ", " Hello", " ", " world", "!!", "  "}},
    {"smollm", "I'm he's THEY'RE we'Ve", {"I", "'m", " he", "'s", " THEY", "'", "RE", " we", "'", "Ve"}},
    {"smollm", "12345 abc6789", {"1", "2", "3", "4", "5", " abc", "6", "7", "8", "9"}},
    {"smollm",
     "\x0a"
     "\x0a"
     "  x\x09"
     "\x09"
     "y \x0d"
     "\x0a"
     " z",
     {"\x0a"
      "\x0a"
      " ",
      " x",
      "\x09"
      "",
      "\x09"
      "",
      "y",
      " \x0d"
      "\x0a"
      "",
      " z"}},
    {"smollm",
     "F\xc3"
     "\xbc"
     "hrer \xc2"
     "\xbd"
     " \xe6"
     "\x9d"
     "\xb1"
     "\xe4"
     "\xba"
     "\xac"
     "\xe3"
     "\x82"
     "\xbf"
     "\xe3"
     "\x83"
     "\xaf"
     "\xe3"
     "\x83"
     "\xbc"
     " 3.14",
     {"F\xc3"
      "\xbc"
      "hrer",
      " ",
      "\xc2"
      "\xbd"
      "",
      " \xe6"
      "\x9d"
      "\xb1"
      "\xe4"
      "\xba"
      "\xac"
      "\xe3"
      "\x82"
      "\xbf"
      "\xe3"
      "\x83"
      "\xaf"
      "\xe3"
      "\x83"
      "\xbc"
      "",
      " ", "3", ".", "1", "4"}},
    {"smollm",
     "a\xc2"
     "\xa0"
     "b\xe3"
     "\x80"
     "\x80"
     "c",
     {"a",
      "\xc2"
      "\xa0"
      "",
      "b",
      "\xe3"
      "\x80"
      "\x80"
      "",
      "c"}},
    {"smollm",
     "emoji \xf0"
     "\x9f"
     "\x98"
     "\x80"
     "!\x3f"
     " ok",
     {"emoji",
      " \xf0"
      "\x9f"
      "\x98"
      "\x80"
      "!\x3f"
      "",
      " ok"}},
    {"smollm",
     "x = f(y);\x0a"
     "\x09"
     "return 0;\x0a"
     "",
     {"x", " =", " f", "(", "y", ");",
      "\x0a"
      "",
      "\x09"
      "",
      "return", " ", "0", ";",
      "\x0a"
      ""}},
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// llama.cpp's test-tokenizer-0 format: cases separated by "\n__ggml_vocab_test__\n"; the file
// ends with a separator.
std::vector<std::string> read_inp_cases(const std::string& path) {
  const std::string all = read_text(path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> cases;
  size_t pos = 0;
  while (pos < all.size()) {
    const size_t next = all.find(sep, pos);
    if (next == std::string::npos) break;
    cases.push_back(all.substr(pos, next - pos));
    pos = next + sep.size();
  }
  return cases;
}

std::vector<std::vector<int32_t>> read_out_cases(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<int32_t>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    int32_t id = 0;
    while (ls >> id) ids.push_back(id);
    out.push_back(std::move(ids));
  }
  return out;
}

std::unique_ptr<Tokenizer> load_vocab(const std::string& path) {
  auto model = read_gguf(path, /*require_tensors=*/false);
  REQUIRE(model.ok());
  auto tok = Tokenizer::create(model->tokenizer);
  REQUIRE(tok.ok());
  return std::move(tok).value();
}

// Tiny SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then scored pieces.
TokenizerData tiny_spm() {
  TokenizerData d;
  d.kind = TokenizerKind::kSentencePiece;
  auto add = [&](std::string text, float score, TokenType type) {
    d.tokens.push_back(std::move(text));
    d.scores.push_back(score);
    d.token_types.push_back(static_cast<int32_t>(type));
  };
  add("<unk>", 0, TokenType::kUnknown);
  add("<s>", 0, TokenType::kControl);
  add("</s>", 0, TokenType::kControl);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    add(buf, 0, TokenType::kByte);
  }
  // ids 259..: "▁", "a", "b", "c", "ab", "bc", "▁a", "▁ab", "abc"
  add("\xE2\x96\x81", -1, TokenType::kNormal);  // 259
  add("a", -2, TokenType::kNormal);             // 260
  add("b", -3, TokenType::kNormal);             // 261
  add("c", -4, TokenType::kNormal);             // 262
  add("ab", -5, TokenType::kNormal);            // 263
  add("bc", -1.5f, TokenType::kNormal);         // 264 (beats "ab")
  add("\xE2\x96\x81"
      "a",
      -6, TokenType::kNormal);  // 265
  add("\xE2\x96\x81"
      "ab",
      -7, TokenType::kNormal);         // 266
  add("abc", -8, TokenType::kNormal);  // 267
  d.bos_id = 1;
  d.eos_id = 2;
  d.unk_id = 0;
  return d;
}

}  // namespace

TEST_CASE("pre-tokenizers split like the reference regular expressions", "[tokenizer]") {
  for (const auto& c : kSplitCases) {
    const auto kind = pretokenizer_from_name(c.pre);
    REQUIRE(kind.has_value());
    std::vector<std::string_view> words;
    pretokenize(*kind, c.text, words);
    std::vector<std::string> got(words.begin(), words.end());
    INFO("pre " << c.pre << " text \"" << c.text << "\"");
    CHECK(got == c.words);
  }
  CHECK_FALSE(pretokenizer_from_name("no-such-pre").has_value());
}

TEST_CASE("pre-tokenizers keep invalid UTF-8 bytes", "[tokenizer]") {
  const std::string text = "ab\xff\xc3 \xe2\x82";  // stray byte, truncated sequences
  for (const char* pre : {"gpt2", "llama-bpe", "qwen2", "smollm"}) {
    std::vector<std::string_view> words;
    pretokenize(*pretokenizer_from_name(pre), text, words);
    std::string joined;
    for (auto w : words) joined += w;
    CHECK(joined == text);
  }
}

TEST_CASE("unicode classes", "[tokenizer]") {
  CHECK(unicode_class('a') == UnicodeClass::kLetter);
  CHECK(unicode_class(0x6771) == UnicodeClass::kLetter);  // 東
  CHECK(unicode_class(0xBD) == UnicodeClass::kNumber);    // ½
  CHECK(unicode_class(0x3000) == UnicodeClass::kWhitespace);
  CHECK(unicode_class('!') == UnicodeClass::kPunctuation);
  CHECK(unicode_class(0x1F600) == UnicodeClass::kOther);        // emoji (So)
  CHECK(utf8_next("\xC0\x80", 0).cp == kInvalidCodepoint);      // overlong NUL
  CHECK(utf8_next("\xED\xA0\x80", 0).cp == kInvalidCodepoint);  // surrogate
}

TEST_CASE("sentencepiece merges by score and falls back to bytes", "[tokenizer]") {
  auto tok = Tokenizer::create(tiny_spm());
  REQUIRE(tok.ok());
  // "▁abc": the best pair is "bc" (-1.5), then no "▁a"+"bc" / "a"+"bc" piece; "▁"+"a" (-6) merges.
  CHECK((*tok)->encode("abc", false) == std::vector<int32_t>{265, 264});
  // "▁ab": "▁"+"a" is not best: "ab" (-5) beats "▁a" (-6), then "▁"+"ab" = "▁ab" (-7).
  CHECK((*tok)->encode("ab", true) == std::vector<int32_t>{1, 266});
  // 'x' is not a piece: bytes; the space becomes "▁".
  CHECK((*tok)->encode("x a", false) == std::vector<int32_t>{259, 'x' + 3, 265});
  CHECK((*tok)->encode("", false).empty());
  CHECK((*tok)->decode(std::vector<int32_t>{1, 265, 264, 259, 'x' + 3, 2}) == "abc x");
  CHECK((*tok)->decode_piece(1, 265) == "a");
  CHECK((*tok)->decode_piece(264, 265) == " a");
  CHECK((*tok)->decode_piece(1, 2).empty());
}

TEST_CASE("byte-level BPE merges by rank", "[tokenizer]") {
  TokenizerData d;
  d.kind = TokenizerKind::kBytePairGpt2;
  d.pre = "gpt2";
  // The 256 byte stand-ins of GPT-2 (U+0100.. for the non-printable bytes), in byte order.
  for (uint32_t b = 0, next = 256; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    std::string s;
    utf8_append(s, printable ? b : next++);
    d.tokens.push_back(s);
  }
  // ' ' stands as U+0120 "Ġ" (the 33rd non-printable byte), so the token of byte 0x20 is "Ġ".
  const std::string g = "\xC4\xA0";
  for (const char* t : {"lo", "low"}) d.tokens.push_back(t);           // 256, 257
  for (const char* t : {"l", "lo", "low"}) d.tokens.push_back(g + t);  // 258, 259, 260
  d.tokens.push_back("<|endoftext|>");                                 // 261
  d.merges = {g + " l", "l o", g + "l o", "lo w", g + "lo w", "x y"};  // ranks 0..5 ("x y": no "xy")
  d.token_types.assign(d.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  d.token_types[261] = static_cast<int32_t>(TokenType::kControl);
  d.bos_id = d.eos_id = 261;
  auto tok = Tokenizer::create(d);
  REQUIRE(tok.ok());
  // " low": (Ġ,l) rank 0 beats (l,o) rank 1, so Ġl+o -> Ġlo, then Ġlo+w -> Ġlow. Merging by
  // position or by (l,o) first would give Ġ + low.
  CHECK((*tok)->encode("low low", false) == std::vector<int32_t>{257, 260});
  CHECK((*tok)->encode("lowx", true) == std::vector<int32_t>{261, 257, 'x'});
  CHECK((*tok)->encode("<|endoftext|>", false).size() > 1);  // control tokens are not parsed
  CHECK((*tok)->decode(std::vector<int32_t>{261, 260, 32, 257, 10, 261}) == " low low\n");
  CHECK((*tok)->decode_piece(261, 260) == " low");
}

TEST_CASE("tokenizer rejects unusable vocabularies", "[tokenizer]") {
  TokenizerData d = tiny_spm();
  d.scores.pop_back();
  CHECK_FALSE(Tokenizer::create(d).ok());
  d = tiny_spm();
  d.bos_id = 100000;
  CHECK_FALSE(Tokenizer::create(d).ok());
  d = tiny_spm();
  d.kind = TokenizerKind::kBytePairGpt2;
  d.pre = "unknown-pre";
  d.merges = {"a b"};
  CHECK_FALSE(Tokenizer::create(d).ok());
  CHECK_FALSE(Tokenizer::create(TokenizerData{}).ok());
}

}  // namespace llmc
