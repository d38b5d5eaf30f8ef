// rANS coding of symbol blocks (formats/rans.h). Block layout:
//   u8    scale_bits (1..15): probabilities are frequencies in units of M = 2^scale_bits
//   2^symbol_bits frequencies, LEB128 varints (at most 3 bytes), summing to exactly M
//   (one symbol with frequency M: the block ends here; every symbol is that one)
//   4 x u32  the encoder's final states = the decoder's initial states, each in [L, 2^32)
//   u16 words, in the order the decoder reads them
// Symbol i is coded by state i % 4 (four interleaved states, so four symbols decode at once).
// With L = 2^16 and cumulative frequency c_s, decoding a symbol from state x is
//   slot = x mod M, s = the symbol owning slot, x = f_s (x >> scale_bits) + slot - c_s,
//   then, if x < L, x = x << 16 | next word.
// The encoder starts every state at L, so a decoder must end with every state at L and every
// word consumed: a cheap end-to-end check on top of the section checksum.
#include "formats/rans.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "formats/little_endian.h"

namespace llmc {
namespace {

constexpr uint32_t kLow = uint32_t{1} << 16;  // L: states live in [L, 2^32)
constexpr int kStates = 4;

// Frequencies summing to M = 2^scale: every present symbol gets at least 1; the rounding error is
// spent where it changes the coded size least (greedy on count * log2 of the frequency ratio;
// ties go to the lower symbol, so the result is deterministic).
std::vector<uint32_t> normalize(const std::vector<uint64_t>& counts, uint64_t total, int scale) {
  const uint64_t m = uint64_t{1} << scale;
  std::vector<uint32_t> f(counts.size(), 0);
  int64_t sum = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    if (counts[s] == 0) continue;
    f[s] = static_cast<uint32_t>(std::max<uint64_t>(1, (counts[s] * m + total / 2) / total));
    sum += f[s];
  }
  while (sum < static_cast<int64_t>(m)) {
    size_t best = 0;
    double gain = -1;
    for (size_t s = 0; s < counts.size(); ++s) {
      if (counts[s] == 0) continue;
      const double g = static_cast<double>(counts[s]) * std::log2((f[s] + 1.0) / f[s]);
      if (g > gain) gain = g, best = s;
    }
    ++f[best];
    ++sum;
  }
  while (sum > static_cast<int64_t>(m)) {
    size_t best = 0;
    double cost = -1;
    for (size_t s = 0; s < counts.size(); ++s) {
      if (f[s] <= 1) continue;
      const double c = static_cast<double>(counts[s]) * std::log2(f[s] / (f[s] - 1.0));
      if (cost < 0 || c < cost) cost = c, best = s;
    }
    --f[best];
    --sum;
  }
  return f;
}

void append_varint(std::vector<uint8_t>& out, uint32_t v) {
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<uint8_t>(v | 0x80));
  out.push_back(static_cast<uint8_t>(v));
}

Error corrupt(const char* what) { return make_error(ErrorCode::kFormat, "rans block: ", what); }

// Decode table entry of a slot: symbol | frequency << 8 | (slot - cumulative frequency) << B,
// B = 20 in 32-bit entries (scale_bits <= 12), 24 in 64-bit ones.
template <class Entry>
constexpr int kBiasShift = sizeof(Entry) == 4 ? 20 : 24;

// Decodes out.size() symbols from the words [p, end) with the initial states x.
template <class Entry>
Result<void> decode_states(const std::vector<uint32_t>& freq, int scale, uint32_t* x, const uint8_t* p,
                           const uint8_t* end, std::span<uint8_t> out) {
  constexpr int kShift = kBiasShift<Entry>;
  constexpr Entry kFreqMask = (Entry{1} << (kShift - 8)) - 1;
  std::vector<Entry> table(size_t{1} << scale);
  for (uint32_t s = 0, c = 0; s < freq.size(); c += freq[s], ++s)
    for (uint32_t k = 0; k < freq[s]; ++k) table[c + k] = s | Entry{freq[s]} << 8 | Entry{k} << kShift;
  const Entry* t = table.data();
  const uint32_t mask = (uint32_t{1} << scale) - 1;
  auto step = [&](uint32_t& st) {
    const Entry e = t[st & mask];
    st = static_cast<uint32_t>((e >> 8) & kFreqMask) * (st >> scale) + static_cast<uint32_t>(e >> kShift);
    return static_cast<uint8_t>(e);
  };
  const size_t n = out.size();
  size_t i = 0;
  // Fast path: four symbols read at most four words. The states live in locals: `out` is bytes,
  // which may alias anything, so states in memory would be reloaded after every store.
  uint32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
  auto renorm = [&](uint32_t& st) {
    const bool low = st < kLow;
    const uint32_t word = load_u16(p);
    st = low ? (st << 16) | word : st;
    p += low ? 2 : 0;
  };
  uint8_t* o = out.data();
  for (; i + kStates <= n && end - p >= 2 * kStates; i += kStates) {
    const uint8_t s0 = step(x0), s1 = step(x1), s2 = step(x2), s3 = step(x3);
    renorm(x0);
    renorm(x1);
    renorm(x2);
    renorm(x3);
    o[i] = s0, o[i + 1] = s1, o[i + 2] = s2, o[i + 3] = s3;
  }
  x[0] = x0, x[1] = x1, x[2] = x2, x[3] = x3;
  for (; i < n; ++i) {
    uint32_t& st = x[i % kStates];
    out[i] = step(st);
    if (st < kLow) {
      if (end - p < 2) return corrupt("word stream ends before its last symbol (truncated)");
      st = (st << 16) | load_u16(p);
      p += 2;
    }
  }
  if (p != end) return corrupt("word stream has words after its last symbol");
  for (int j = 0; j < kStates; ++j)
    if (x[j] != kLow) return corrupt("final state mismatch (corrupt stream)");
  return {};
}

}  // namespace

void rans_encode_block(std::span<const uint8_t> symbols, int symbol_bits, std::vector<uint8_t>& out) {
  const int scale = kRansScaleBits;
  const size_t alphabet = size_t{1} << symbol_bits, n = symbols.size();
  std::vector<uint64_t> counts(alphabet, 0);
  for (uint8_t s : symbols) ++counts[s];
  if (n == 0) counts[0] = 1;  // an empty block is written as a constant one
  const std::vector<uint32_t> freq = normalize(counts, std::max<size_t>(n, 1), scale);
  out.push_back(static_cast<uint8_t>(scale));
  for (uint32_t f : freq) append_varint(out, f);
  if (std::find(freq.begin(), freq.end(), uint32_t{1} << scale) != freq.end()) return;

  std::vector<uint32_t> cum(alphabet, 0);
  for (size_t s = 1; s < alphabet; ++s) cum[s] = cum[s - 1] + freq[s - 1];
  uint32_t x[kStates] = {kLow, kLow, kLow, kLow};
  std::vector<uint16_t> words;
  words.reserve(n / 2 + 16);
  for (size_t i = n; i-- > 0;) {
    uint32_t& st = x[i % kStates];
    const uint32_t f = freq[symbols[i]];
    if (st >= (uint64_t{f} << (32 - scale))) {
      words.push_back(static_cast<uint16_t>(st));
      st >>= 16;
    }
    st = ((st / f) << scale) + st % f + cum[symbols[i]];
  }
  for (uint32_t st : x) append_u32(out, st);
  const size_t at = out.size();
  out.resize(at + 2 * words.size());
  uint8_t* w = out.data() + at;
  for (size_t k = words.size(); k-- > 0; w += 2) {
    w[0] = static_cast<uint8_t>(words[k]);
    w[1] = static_cast<uint8_t>(words[k] >> 8);
  }
}

Result<void> rans_decode_block(std::span<const uint8_t> block, int symbol_bits, std::span<uint8_t> out) {
  const size_t alphabet = size_t{1} << symbol_bits;
  const uint8_t* p = block.data();
  const uint8_t* const end = p + block.size();
  if (p == end) return corrupt("empty");
  const int scale = *p++;
  if (scale < 1 || scale > kRansMaxScaleBits) return corrupt("scale_bits outside 1..15");
  const uint32_t m = uint32_t{1} << scale;
  std::vector<uint32_t> freq(alphabet);
  uint64_t sum = 0;
  int only = -1;
  for (size_t s = 0; s < alphabet; ++s) {
    uint32_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (p == end) return corrupt("truncated frequency table");
      if (shift > 14) return corrupt("frequency varint longer than 3 bytes");
      const uint8_t b = *p++;
      v |= uint32_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) break;
    }
    if (v > m) return corrupt("frequency larger than the total");
    freq[s] = v;
    sum += v;
    if (v == m) only = static_cast<int>(s);
  }
  if (sum != m) return corrupt("frequencies do not sum to 2^scale_bits");
  if (only >= 0) {
    if (p != end) return corrupt("single-symbol block with stream bytes");
    std::fill(out.begin(), out.end(), static_cast<uint8_t>(only));
    return {};
  }
  if (end - p < 4 * kStates || (end - p) % 2 != 0) return corrupt("truncated states or odd word stream");

  uint32_t x[kStates];
  const uint8_t* states = p;
  for (int j = 0; j < kStates; ++j) {
    x[j] = load_u32(states + 4 * j);
    if (x[j] < kLow) return corrupt("initial state below 2^16");
  }
  p += 4 * kStates;
  // 12-bit precision (what the writer uses) packs a slot into 32 bits, so the table is 16 KiB.
  return scale <= 12 ? decode_states<uint32_t>(freq, scale, x, p, end, out)
                     : decode_states<uint64_t>(freq, scale, x, p, end, out);
}

}  // namespace llmc
