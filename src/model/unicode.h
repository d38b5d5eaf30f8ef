// Unicode helpers for the tokenizers: lenient UTF-8 decoding and the category classes that the
// BPE pre-tokenizer patterns use (\p{L}, \p{N}, \p{P}, \s).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace llmc {

enum class UnicodeClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kPunctuation = 3, kWhitespace = 4 };

struct UnicodeRange {
  uint32_t first;
  uint32_t last;
  uint8_t cls;  // UnicodeClass
};
extern const UnicodeRange kUnicodeRanges[];  // unicode_tables.cpp (generated)
extern const size_t kUnicodeRangeCount;

UnicodeClass unicode_class(uint32_t cp);

// One decoded character: its codepoint and how many bytes it spans. Invalid or truncated UTF-8
// yields the single byte as `len` 1 with cp = 0xFFFD-like kInvalidCodepoint, so callers that
// split text by byte offsets stay lossless.
inline constexpr uint32_t kInvalidCodepoint = 0xFFFFFFFFu;
struct Utf8Char {
  uint32_t cp;
  uint32_t len;
};
Utf8Char utf8_next(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of cp (must be <= 0x10FFFF).
void utf8_append(std::string& out, uint32_t cp);

}  // namespace llmc
