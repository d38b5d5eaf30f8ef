// Hand-written matchers for the GPT-2, Llama-3 and Qwen2 pre-tokenizer patterns (leftmost
// alternative wins, greedy quantifiers with the backtracking the patterns imply).
#include "model/pretokenizer.h"

#include <cstdint>

#include "model/unicode.h"

namespace llmc {
namespace {

struct PreTokenizerName {
  const char* name;
  PreTokenizerKind kind;
};

// Names as llama.cpp's convert scripts write them into tokenizer.ggml.pre.
const PreTokenizerName kPreTokenizerNames[] = {
    {"", PreTokenizerKind::kGpt2},
    {"default", PreTokenizerKind::kGpt2},
    {"gpt2", PreTokenizerKind::kGpt2},
    {"gpt-2", PreTokenizerKind::kGpt2},
    {"mpt", PreTokenizerKind::kGpt2},
    {"olmo", PreTokenizerKind::kGpt2},
    {"jais", PreTokenizerKind::kGpt2},
    {"llama-bpe", PreTokenizerKind::kLlama3},
    {"llama3", PreTokenizerKind::kLlama3},
    {"llama-v3", PreTokenizerKind::kLlama3},
    {"qwen2", PreTokenizerKind::kQwen2},
    {"stablelm2", PreTokenizerKind::kQwen2},
    {"smollm", PreTokenizerKind::kSmollm},
    {"starcoder", PreTokenizerKind::kSmollm},
    {"refact", PreTokenizerKind::kSmollm},
    {"command-r", PreTokenizerKind::kSmollm},
    {"codeshell", PreTokenizerKind::kSmollm},
};

// One decoded character of the text being split; the array ends with a sentinel whose `off` is
// the text size.
struct Char {  // 16 bytes: a text of n characters takes 16 n bytes while it is split
  size_t off;
  uint32_t cp;
  UnicodeClass cls;
};

class Matcher {
 public:
  explicit Matcher(const std::vector<Char>& chars) : c_(chars), n_(chars.size() - 1) {}

  bool letter(size_t i) const { return i < n_ && c_[i].cls == UnicodeClass::kLetter; }
  bool number(size_t i) const { return i < n_ && c_[i].cls == UnicodeClass::kNumber; }
  bool space(size_t i) const { return i < n_ && c_[i].cls == UnicodeClass::kWhitespace; }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const {
    return i < n_ && c_[i].cls != UnicodeClass::kWhitespace && c_[i].cls != UnicodeClass::kLetter &&
           c_[i].cls != UnicodeClass::kNumber;
  }
  bool newline(size_t i) const { return i < n_ && (c_[i].cp == '\r' || c_[i].cp == '\n'); }
  uint32_t lower_ascii(size_t i) const {
    if (i >= n_) return 0;
    const uint32_t cp = c_[i].cp;
    return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  }
  template <class Pred>
  size_t run(size_t i, Pred pred, size_t max = SIZE_MAX) const {
    size_t j = i;
    while (j - i < max && pred(j)) ++j;
    return j;
  }

  // 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive; returns the end or 0.
  size_t contraction(size_t i, bool ignore_case) const {
    if (i >= n_ || c_[i].cp != '\'') return 0;
    auto ch = [&](size_t k) { return ignore_case ? lower_ascii(k) : (k < n_ ? c_[k].cp : 0); };
    const uint32_t a = ch(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const uint32_t b = ch(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
  }

  // \s+(?!\S)|\s+ : a whitespace run, leaving its last character to the next word when a
  // non-space follows.
  size_t trailing_space(size_t i) const {
    const size_t end = run(i, [&](size_t k) { return space(k); });
    if (end == i) return 0;
    return (end < n_ && end - i > 1) ? end - 1 : end;
  }

  size_t gpt2(size_t i) const {
    if (size_t e = contraction(i, false)) return e;
    const size_t s = (i < n_ && c_[i].cp == ' ') ? i + 1 : i;
    if (letter(s)) return run(s, [&](size_t k) { return letter(k); });
    if (number(s)) return run(s, [&](size_t k) { return number(k); });
    if (other(s)) return run(s, [&](size_t k) { return other(k); });
    return trailing_space(i);
  }

  size_t llama3(size_t i, size_t max_digits) const {
    if (size_t e = contraction(i, true)) return e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (i < n_ && !newline(i) && !letter(i) && !number(i) && letter(i + 1))
      return run(i + 1, [&](size_t k) { return letter(k); });
    if (letter(i)) return run(i, [&](size_t k) { return letter(k); });
    if (number(i))
      return run(
          i, [&](size_t k) { return number(k); }, max_digits);
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const size_t s = (i < n_ && c_[i].cp == ' ') ? i + 1 : i;
    if (other(s)) {
      const size_t e = run(s, [&](size_t k) { return other(k); });
      return run(e, [&](size_t k) { return newline(k); });
    }
    // \s*[\r\n]+ : up to and including the last newline of the whitespace run
    const size_t end = run(i, [&](size_t k) { return space(k); });
    for (size_t k = end; k > i; --k) {
      if (newline(k - 1)) return k;
    }
    return trailing_space(i);
  }

 private:
  const std::vector<Char>& c_;
  size_t n_;
};

UnicodeClass class_of(uint32_t cp) { return cp == kInvalidCodepoint ? UnicodeClass::kOther : unicode_class(cp); }

void decode_chars(std::string_view text, std::vector<Char>& chars) {
  // Sized once (bytes that start a UTF-8 sequence: the count for valid text), not by doubling.
  size_t starts = 1;
  for (const char c : text) starts += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  chars.clear();
  chars.reserve(starts);
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char u = utf8_next(text, pos);
    chars.push_back({pos, u.cp, class_of(u.cp)});
    pos += u.len;
  }
  chars.push_back({text.size(), 0, UnicodeClass::kOther});
}

void split_pattern(PreTokenizerKind kind, std::string_view text, std::vector<Char>& chars,
                   std::vector<std::string_view>& words) {
  decode_chars(text, chars);
  const Matcher m(chars);
  const size_t n = chars.size() - 1;
  for (size_t i = 0; i < n;) {
    size_t e = 0;
    switch (kind) {
      case PreTokenizerKind::kLlama3: e = m.llama3(i, 3); break;
      case PreTokenizerKind::kQwen2: e = m.llama3(i, 1); break;
      default: e = m.gpt2(i); break;
    }
    // Every character matches some alternative; the guard keeps a bug from looping forever.
    if (e <= i) e = i + 1;
    words.push_back(text.substr(chars[i].off, chars[e].off - chars[i].off));
    i = e;
  }
}

}  // namespace

std::optional<PreTokenizerKind> pretokenizer_from_name(std::string_view pre) {
  for (const auto& row : kPreTokenizerNames) {
    if (pre == row.name) return row.kind;
  }
  return std::nullopt;
}

void pretokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& words) {
  std::vector<Char> chars;
  if (kind != PreTokenizerKind::kSmollm) {
    split_pattern(kind, text, chars, words);
    return;
  }
  // \p{N} first: each digit is a word of its own, the text between digits goes through GPT-2.
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char u = utf8_next(text, pos);
    const size_t off = pos;
    pos += u.len;
    if (class_of(u.cp) != UnicodeClass::kNumber) continue;
    if (off > start) split_pattern(PreTokenizerKind::kGpt2, text.substr(start, off - start), chars, words);
    words.push_back(text.substr(off, pos - off));
    start = pos;
  }
  if (start < text.size()) split_pattern(PreTokenizerKind::kGpt2, text.substr(start), chars, words);
}

}  // namespace llmc
