// SentencePiece-style BPE (llama.cpp's llm_tokenizer_spm, llama2.c's encode): spaces become
// U+2581, a "▁" prefix is added, the best-scoring adjacent pair in the vocabulary is merged until
// none is left, characters outside the vocabulary fall back to <0xNN> byte tokens.
#include <algorithm>
#include <string>
#include <unordered_map>

#include "model/tokenizer_impl.h"
#include "model/unicode.h"

namespace llmc {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// A span of the normalized text; merged symbols grow the left span and empty the right one.
struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;
  size_t len;
};

struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  size_t len;  // left.len + right.len when pushed; a mismatch later means the bigram is stale
};

// Highest score first; on ties the leftmost pair.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(TokenizerData data) : Tokenizer(std::move(data)) {
    byte_ids_.fill(-1);
    const auto n = static_cast<int32_t>(data_.tokens.size());
    pieces_.resize(data_.tokens.size());
    for (int32_t id = 0; id < n; ++id) {
      const std::string& text = data_.tokens[static_cast<size_t>(id)];
      const TokenType type = token_type_of(data_, id);
      const std::optional<uint8_t> byte = parse_byte_piece(text);
      if (byte && (type == TokenType::kByte || data_.token_types.empty())) {
        if (byte_ids_[*byte] < 0) byte_ids_[*byte] = id;
        pieces_[static_cast<size_t>(id)] = std::string(1, static_cast<char>(*byte));
        continue;
      }
      if (type == TokenType::kControl) continue;  // no text
      pieces_[static_cast<size_t>(id)] = replace_space_mark(text);
      // Only pieces sentencepiece can produce from text take part in merges.
      if (type == TokenType::kNormal || type == TokenType::kUserDefined) {
        piece_ids_.emplace(text, id);
        if (has_inner_space_mark(text)) split_at_space_ = false;
      }
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && data_.bos_id >= 0) out.push_back(data_.bos_id);
    if (text.empty()) return out;
    std::string norm;
    norm.reserve(text.size() + text.size() / 4 + 3);
    norm += kSpaceMark;
    for (char c : text) {
      if (c == ' ') {
        norm += kSpaceMark;
      } else {
        norm.push_back(c);
      }
    }
    const std::string_view view(norm);
    if (!split_at_space_) {
      Scratch scratch;
      encode_segment(view, scratch, out);
      return out;
    }
    // No piece holds "▁" after another character, so no merge crosses the start of a "▁" run:
    // segments there are independent, and each distinct one is merged once per call (later copies
    // reuse the ids already in `out`: first offset, count).
    std::unordered_map<std::string_view, std::pair<size_t, size_t>> seen;
    Scratch scratch;
    size_t start = 0;
    while (start < view.size()) {
      size_t end = start;
      while (end < view.size() && view.substr(end, kSpaceMark.size()) == kSpaceMark) end += kSpaceMark.size();
      end = view.find(kSpaceMark, end);
      if (end == std::string_view::npos) end = view.size();
      const std::string_view segment = view.substr(start, end - start);
      if (auto it = seen.find(segment); it != seen.end()) {
        const auto [first, count] = it->second;
        for (size_t k = 0; k < count; ++k) out.push_back(out[first + k]);
      } else {
        const size_t first = out.size();
        encode_segment(segment, scratch, out);
        seen.emplace(segment, std::make_pair(first, out.size() - first));
      }
      start = end;
    }
    return out;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    bool first_text = true;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) continue;
      const std::string& piece = pieces_[static_cast<size_t>(id)];
      if (piece.empty()) continue;
      // The "▁" prefix that encode adds is not part of the text.
      if (first_text && piece[0] == ' ') {
        out.append(piece, 1);
      } else {
        out += piece;
      }
      first_text = false;
    }
    return out;
  }

  std::string decode_piece(int32_t prev, int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return {};
    const std::string& piece = pieces_[static_cast<size_t>(id)];
    // As llama2.c's decode(): after BOS the leading space of the first piece is dropped.
    if (prev == data_.bos_id && prev >= 0 && !piece.empty() && piece[0] == ' ') return piece.substr(1);
    return piece;
  }

 private:
  // Buffers reused across the segments of one encode() call.
  struct Scratch {
    std::vector<Symbol> syms;
    std::vector<Bigram> heap;
  };

  // Appends the ids of `text` (already normalized) to `out`.
  void encode_segment(std::string_view text, Scratch& scratch, std::vector<int32_t>& out) const {
    std::vector<Symbol>& syms = scratch.syms;
    std::vector<Bigram>& heap = scratch.heap;
    syms.clear();
    heap.clear();
    for (size_t pos = 0; pos < text.size();) {
      const size_t len = utf8_next(text, pos).len;
      const auto i = static_cast<int32_t>(syms.size());
      syms.push_back({i - 1, i + 1, pos, len});
      pos += len;
    }
    if (syms.empty()) return;
    syms.back().next = -1;
    auto try_add = [&](int32_t left, int32_t right) {
      if (left < 0 || right < 0) return;
      const Symbol& a = syms[static_cast<size_t>(left)];
      const Symbol& b = syms[static_cast<size_t>(right)];
      const auto it = piece_ids_.find(text.substr(a.start, a.len + b.len));
      if (it == piece_ids_.end()) return;
      heap.push_back({score_of(it->second), left, right, a.len + b.len});
      std::push_heap(heap.begin(), heap.end(), BigramOrder{});
    };
    for (size_t i = 1; i < syms.size(); ++i) try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), BigramOrder{});
      const Bigram top = heap.back();
      heap.pop_back();
      Symbol& a = syms[static_cast<size_t>(top.left)];
      Symbol& b = syms[static_cast<size_t>(top.right)];
      if (a.len == 0 || b.len == 0 || a.len + b.len != top.len || a.next != top.right) continue;
      a.len += b.len;
      b.len = 0;
      a.next = b.next;
      if (b.next >= 0) syms[static_cast<size_t>(b.next)].prev = top.left;
      try_add(a.prev, top.left);
      try_add(top.left, a.next);
    }
    for (int32_t i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next) {
      const Symbol& s = syms[static_cast<size_t>(i)];
      const std::string_view piece = text.substr(s.start, s.len);
      if (auto it = piece_ids_.find(piece); it != piece_ids_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (char c : piece) {
        const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
        if (id >= 0) {
          out.push_back(id);
        } else if (data_.unk_id >= 0) {
          out.push_back(data_.unk_id);
          break;  // one <unk> per character
        }
      }
    }
  }

  float score_of(int32_t id) const { return data_.scores.empty() ? 0.0f : data_.scores[static_cast<size_t>(id)]; }

  // True when a "▁" follows another character ("a▁b", not "▁▁").
  static bool has_inner_space_mark(std::string_view text) {
    for (size_t pos = text.find(kSpaceMark, 1); pos != std::string_view::npos; pos = text.find(kSpaceMark, pos + 1)) {
      if (pos < kSpaceMark.size() || text.substr(pos - kSpaceMark.size(), kSpaceMark.size()) != kSpaceMark) return true;
    }
    return false;
  }

  static std::string replace_space_mark(std::string_view text) {
    std::string out;
    for (size_t pos = 0; pos < text.size();) {
      if (text.substr(pos, kSpaceMark.size()) == kSpaceMark) {
        out.push_back(' ');
        pos += kSpaceMark.size();
      } else {
        out.push_back(text[pos++]);
      }
    }
    return out;
  }

  // Keys view data_.tokens, which never changes after construction.
  std::unordered_map<std::string_view, int32_t> piece_ids_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<std::string> pieces_;  // text each id decodes to ("" for control tokens)
  bool split_at_space_ = true;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> make_spm_tokenizer(TokenizerData data) {
  return std::unique_ptr<Tokenizer>(new SpmTokenizer(std::move(data)));
}

}  // namespace llmc
