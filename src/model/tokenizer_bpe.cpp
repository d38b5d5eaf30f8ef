// GPT-2 byte-level BPE: pre-tokenize with the vocabulary's pattern, map each byte of a word to
// its printable stand-in character (GPT-2's bytes_to_unicode), merge by rank, look up ids.
#include <algorithm>
#include <string>
#include <unordered_map>

#include "core/log.h"
#include "model/pretokenizer.h"
#include "model/tokenizer_impl.h"
#include "model/unicode.h"

namespace llmc {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) take U+0100.. in byte order.
std::array<uint32_t, 256> byte_to_codepoint_table() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[b] = printable ? b : next++;
  }
  return table;
}

struct MergeRule {
  int32_t rank;
  int32_t result;
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Symbol {
  int32_t prev;
  int32_t next;
  int32_t id;  // -1 once merged into its left neighbour
};

struct Bigram {
  int32_t rank;
  int32_t left;
  int32_t right;
  int32_t left_id;  // ids when pushed; a mismatch later means the bigram is stale
  int32_t right_id;
  int32_t result;
};

// Lowest rank first; on ties the leftmost pair.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(TokenizerData data, PreTokenizerKind pre) : Tokenizer(std::move(data)), pre_(pre) {}

  // Builds the lookup tables; returns the number of merges that name unknown tokens.
  size_t build() {
    const std::array<uint32_t, 256> b2c = byte_to_codepoint_table();
    std::unordered_map<uint32_t, uint8_t> c2b;
    for (uint32_t b = 0; b < 256; ++b) c2b.emplace(b2c[b], static_cast<uint8_t>(b));
    const auto n = static_cast<int32_t>(data_.tokens.size());
    pieces_.resize(data_.tokens.size());
    for (int32_t id = 0; id < n; ++id) {
      const std::string& text = data_.tokens[static_cast<size_t>(id)];
      const TokenType type = token_type_of(data_, id);
      if (type == TokenType::kControl) continue;
      std::string& piece = pieces_[static_cast<size_t>(id)];
      if (type == TokenType::kUserDefined) {
        piece = text;  // stored as plain text, not byte-mapped
      } else {
        for (size_t pos = 0; pos < text.size();) {
          const Utf8Char u = utf8_next(text, pos);
          const auto it = u.cp == kInvalidCodepoint ? c2b.end() : c2b.find(u.cp);
          if (it != c2b.end()) {
            piece.push_back(static_cast<char>(it->second));
          } else {
            piece.append(text, pos, u.len);
          }
          pos += u.len;
        }
      }
      ids_.emplace(text, id);
    }
    byte_ids_.fill(-1);
    for (uint32_t b = 0; b < 256; ++b) {
      std::string s;
      utf8_append(s, b2c[b]);
      if (auto it = ids_.find(s); it != ids_.end()) byte_ids_[b] = it->second;
    }
    size_t bad = 0;
    for (size_t rank = 0; rank < data_.merges.size(); ++rank) {
      const std::string& m = data_.merges[rank];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) {
        ++bad;
        continue;
      }
      const std::string_view mv(m);
      const auto a = ids_.find(mv.substr(0, sp));
      const auto b = ids_.find(mv.substr(sp + 1));
      const auto r = ids_.find(std::string(mv.substr(0, sp)) + std::string(mv.substr(sp + 1)));
      if (a == ids_.end() || b == ids_.end() || r == ids_.end()) {
        ++bad;
        continue;
      }
      merges_.emplace(pair_key(a->second, b->second), MergeRule{static_cast<int32_t>(rank), r->second});
    }
    return bad;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && data_.bos_id >= 0) out.push_back(data_.bos_id);
    std::vector<std::string_view> words;
    pretokenize(pre_, text, words);
    // Words repeat in natural text: each distinct word is merged once per call, later copies reuse
    // the ids already in `out` (first offset, count).
    std::unordered_map<std::string_view, std::pair<size_t, size_t>> seen;
    Scratch scratch;
    for (std::string_view word : words) {
      if (auto it = seen.find(word); it != seen.end()) {
        const auto [first, count] = it->second;
        for (size_t k = 0; k < count; ++k) out.push_back(out[first + k]);
        continue;
      }
      const size_t first = out.size();
      encode_word(word, scratch, out);
      seen.emplace(word, std::make_pair(first, out.size() - first));
    }
    return out;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id >= 0 && id < vocab_size()) out += pieces_[static_cast<size_t>(id)];
    }
    return out;
  }

  std::string decode_piece(int32_t /*prev*/, int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return {};
    return pieces_[static_cast<size_t>(id)];
  }

 private:
  // Buffers reused across the words of one encode() call.
  struct Scratch {
    std::vector<Symbol> syms;
    std::vector<Bigram> heap;
  };

  void encode_word(std::string_view word, Scratch& scratch, std::vector<int32_t>& out) const {
    std::vector<Symbol>& syms = scratch.syms;
    std::vector<Bigram>& heap = scratch.heap;
    syms.clear();
    heap.clear();
    for (char c : word) {
      const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
      if (id < 0) {
        if (data_.unk_id >= 0) out.push_back(data_.unk_id);  // a vocabulary without that byte
        continue;
      }
      const auto i = static_cast<int32_t>(syms.size());
      syms.push_back({i - 1, i + 1, id});
    }
    if (syms.empty()) return;
    syms.back().next = -1;
    if (syms.size() == 1) {
      out.push_back(syms[0].id);
      return;
    }
    auto try_add = [&](int32_t left, int32_t right) {
      if (left < 0 || right < 0) return;
      const int32_t a = syms[static_cast<size_t>(left)].id;
      const int32_t b = syms[static_cast<size_t>(right)].id;
      const auto it = merges_.find(pair_key(a, b));
      if (it == merges_.end()) return;
      heap.push_back({it->second.rank, left, right, a, b, it->second.result});
      std::push_heap(heap.begin(), heap.end(), BigramOrder{});
    };
    for (size_t i = 1; i < syms.size(); ++i) try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), BigramOrder{});
      const Bigram top = heap.back();
      heap.pop_back();
      Symbol& a = syms[static_cast<size_t>(top.left)];
      Symbol& b = syms[static_cast<size_t>(top.right)];
      if (a.id != top.left_id || b.id != top.right_id || a.next != top.right) continue;
      a.id = top.result;
      b.id = -1;
      a.next = b.next;
      if (b.next >= 0) syms[static_cast<size_t>(b.next)].prev = top.left;
      try_add(a.prev, top.left);
      try_add(top.left, a.next);
    }
    for (int32_t i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next) out.push_back(syms[static_cast<size_t>(i)].id);
  }

  PreTokenizerKind pre_;
  // Keys view data_.tokens, which never changes after construction.
  std::unordered_map<std::string_view, int32_t> ids_;
  std::unordered_map<uint64_t, MergeRule> merges_;  // (left id, right id) -> rank, merged id
  std::array<int32_t, 256> byte_ids_{};
  std::vector<std::string> pieces_;  // bytes each id decodes to ("" for control tokens)
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(TokenizerData data) {
  const std::optional<PreTokenizerKind> pre = pretokenizer_from_name(data.pre);
  if (!pre) {
    return make_error(ErrorCode::kUnsupported, "tokenizer: pre-tokenizer \"", data.pre,
                      "\" (tokenizer.ggml.pre) is not implemented; known: gpt2, llama-bpe, qwen2, smollm");
  }
  if (data.merges.empty()) return make_error(ErrorCode::kFormat, "tokenizer: byte-level BPE vocabulary without merges");
  auto tok = std::make_unique<BpeTokenizer>(std::move(data), *pre);
  const size_t bad = tok->build();
  if (bad > 0) log_warn("tokenizer: ", bad, " merges name tokens outside the vocabulary; ignored");
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace llmc
