// Canonical Huffman coding of symbol blocks (formats/huffman.h). Block layout:
//   [ceil(2^symbol_bits / 2)] code lengths, 4 bits each, symbol 2i in the low nibble of byte i;
//                             0 = symbol absent, else 1..12
//   (exactly one symbol present: the block ends here; every symbol is that one)
//   [3 x u32]                 byte sizes of bitstreams 0, 1, 2; stream 3 is the rest of the block
//   streams 0..3              stream k codes symbols [k q, min(n, (k + 1) q)), q = ceil(n / 4)
// Codes are canonical (shorter first, then by symbol), written LSB-first starting with the
// code's first bit, so a decoder peeks 12 bits and looks the symbol up in one table. Four
// independent streams let the decoder work on four symbols at once.
#include "formats/huffman.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "formats/little_endian.h"

namespace llmc {
namespace {

constexpr int kStreams = 4;
constexpr uint16_t kInvalidEntry = 0x1000;  // decode-table flag: no code has this prefix

uint32_t reverse_bits(uint32_t code, int len) {
  uint32_t r = 0;
  for (int i = 0; i < len; ++i) r |= ((code >> i) & 1u) << (len - 1 - i);
  return r;
}

// Optimal code lengths for the symbols with count > 0 (two-queue Huffman construction; ties
// take leaves first, then lower symbols, so the result is deterministic), then limited to
// kHuffmanMaxCodeLength.
std::vector<uint8_t> code_lengths(const std::vector<uint64_t>& counts) {
  constexpr int kMax = kHuffmanMaxCodeLength;
  std::vector<uint8_t> len(counts.size(), 0);
  std::vector<int> leaves;
  for (size_t s = 0; s < counts.size(); ++s)
    if (counts[s] > 0) leaves.push_back(static_cast<int>(s));
  const size_t n = leaves.size();
  if (n == 0) return len;
  if (n == 1) {
    len[static_cast<size_t>(leaves[0])] = 1;
    return len;
  }
  std::stable_sort(leaves.begin(), leaves.end(), [&](int a, int b) { return counts[a] < counts[b]; });
  // Nodes 0..n-1 are the sorted leaves, n..2n-2 the internal nodes in creation order (their
  // weights never decrease, so the two queues stay sorted).
  std::vector<uint64_t> weight(2 * n - 1);
  std::vector<size_t> parent(2 * n - 1, 0);
  for (size_t i = 0; i < n; ++i) weight[i] = counts[static_cast<size_t>(leaves[i])];
  size_t next_leaf = 0, next_inner = n;
  auto pick = [&](size_t created) {
    if (next_leaf < n && (next_inner >= created || weight[next_leaf] <= weight[next_inner])) return next_leaf++;
    return next_inner++;
  };
  for (size_t created = n; created < 2 * n - 1; ++created) {
    const size_t a = pick(created), b = pick(created);
    weight[created] = weight[a] + weight[b];
    parent[a] = parent[b] = created;
  }
  std::vector<int> depth(2 * n - 1, 0);
  for (size_t k = 2 * n - 1; k-- > 0;)
    if (k != 2 * n - 2) depth[k] = depth[parent[k]] + 1;
  int longest = 0;
  for (size_t i = 0; i < n; ++i) {
    len[static_cast<size_t>(leaves[i])] = static_cast<uint8_t>(std::min(depth[i], 255));
    longest = std::max(longest, depth[i]);
  }
  if (longest <= kMax) return len;

  // Clamp to kMax, then restore the Kraft inequality (sum of 2^(kMax - len) <= 2^kMax) by
  // lengthening the least frequent of the longest codes below kMax, then spend any slack on
  // shortening the most frequent codes.
  const uint64_t cap = uint64_t{1} << kMax;
  uint64_t kraft = 0;
  for (int s : leaves) {
    len[static_cast<size_t>(s)] = static_cast<uint8_t>(std::min<int>(len[static_cast<size_t>(s)], kMax));
    kraft += uint64_t{1} << (kMax - len[static_cast<size_t>(s)]);
  }
  while (kraft > cap) {
    int best = -1;
    for (int s : leaves) {  // leaves are in increasing count order
      const int l = len[static_cast<size_t>(s)];
      if (l < kMax && (best < 0 || l > len[static_cast<size_t>(best)])) best = s;
    }
    const int l = ++len[static_cast<size_t>(best)];
    kraft -= uint64_t{1} << (kMax - l);
  }
  for (auto it = leaves.rbegin(); it != leaves.rend(); ++it) {
    uint8_t& l = len[static_cast<size_t>(*it)];
    while (l > 1 && kraft + (uint64_t{1} << (kMax - l)) <= cap) {
      kraft += uint64_t{1} << (kMax - l);
      --l;
    }
  }
  return len;
}

// Canonical codes (as read MSB-first) of the given lengths; the lengths satisfy Kraft.
std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& len) {
  std::vector<int> order;
  for (size_t s = 0; s < len.size(); ++s)
    if (len[s] > 0) order.push_back(static_cast<int>(s));
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return len[a] < len[b]; });
  std::vector<uint32_t> codes(len.size(), 0);
  uint32_t code = 0;
  int cur = order.empty() ? 0 : len[static_cast<size_t>(order[0])];
  for (int s : order) {
    code <<= (len[static_cast<size_t>(s)] - cur);
    cur = len[static_cast<size_t>(s)];
    codes[static_cast<size_t>(s)] = code++;
  }
  return codes;
}

// LSB-first bit writer.
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}
  void put(uint32_t bits, int n) {
    acc_ |= uint64_t{bits} << used_;
    used_ += n;
    if (used_ >= 32) {
      append_u32(out_, static_cast<uint32_t>(acc_));
      acc_ >>= 32;
      used_ -= 32;
    }
  }
  void flush() {
    for (; used_ > 0; used_ -= 8, acc_ >>= 8) out_.push_back(static_cast<uint8_t>(acc_));
    used_ = 0;
  }

 private:
  std::vector<uint8_t>& out_;
  uint64_t acc_ = 0;
  int used_ = 0;
};

// LSB-first bit reader over one stream. `pos` may run past the end (virtual zero bytes) so the
// caller can detect overruns afterwards from consumed_bits().
struct BitReader {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;    // next byte to load
  uint64_t buf = 0;  // bits [0, bits) are valid
  unsigned bits = 0;

  bool can_refill_fast() const { return pos + 8 <= size; }
  // Leaves 56..63 valid bits. Bits above `bits` may hold the next bytes already; reloading them
  // at the same position ORs identical values.
  void refill_fast() {
    buf |= load_u64(data + pos) << bits;
    pos += (63 - bits) >> 3;
    bits |= 56;
  }
  void refill() {
    if (can_refill_fast()) return refill_fast();
    for (; bits < 56; bits += 8, ++pos) buf |= uint64_t{pos < size ? data[pos] : uint8_t{0}} << bits;
  }
  uint64_t consumed_bits() const { return uint64_t{pos} * 8 - bits; }
};

inline uint8_t decode_symbol(BitReader& r, const uint16_t* table, uint64_t mask, unsigned& flags) {
  const uint16_t e = table[r.buf & mask];
  const unsigned n = (e >> 8) & 15u;
  flags |= e;
  r.buf >>= n;
  r.bits -= n;
  return static_cast<uint8_t>(e);
}

Error corrupt(const char* what) { return make_error(ErrorCode::kFormat, "huffman block: ", what); }

}  // namespace

void huffman_encode_block(std::span<const uint8_t> symbols, int symbol_bits, std::vector<uint8_t>& out) {
  const size_t alphabet = size_t{1} << symbol_bits;
  std::vector<uint64_t> counts(alphabet, 0);
  for (uint8_t s : symbols) ++counts[s];
  const std::vector<uint8_t> len = code_lengths(counts);
  const size_t table_at = out.size();
  out.resize(table_at + (alphabet + 1) / 2, 0);
  size_t present = 0;
  for (size_t s = 0; s < alphabet; ++s) {
    out[table_at + s / 2] |= static_cast<uint8_t>(len[s] << (4 * (s % 2)));
    present += len[s] > 0;
  }
  if (present <= 1) return;

  const std::vector<uint32_t> codes = canonical_codes(len);
  std::vector<uint32_t> reversed(alphabet);
  for (size_t s = 0; s < alphabet; ++s) reversed[s] = reverse_bits(codes[s], len[s]);
  const size_t n = symbols.size(), q = (n + kStreams - 1) / kStreams;
  std::vector<uint8_t> streams[kStreams];
  for (int k = 0; k < kStreams; ++k) {
    const size_t begin = std::min(n, k * q), end = std::min(n, (k + 1) * q);
    streams[k].reserve(end - begin + 8);
    BitWriter w(streams[k]);
    for (size_t i = begin; i < end; ++i) w.put(reversed[symbols[i]], len[symbols[i]]);
    w.flush();
  }
  for (int k = 0; k < kStreams - 1; ++k) append_u32(out, static_cast<uint32_t>(streams[k].size()));
  for (const auto& s : streams) out.insert(out.end(), s.begin(), s.end());
}

Result<void> huffman_decode_block(std::span<const uint8_t> block, int symbol_bits, std::span<uint8_t> out) {
  constexpr int kMax = kHuffmanMaxCodeLength;
  const size_t alphabet = size_t{1} << symbol_bits, table_bytes = (alphabet + 1) / 2, n = out.size();
  if (block.size() < table_bytes) return corrupt("shorter than its code-length table");
  std::vector<uint8_t> len(alphabet);
  size_t present = 0;
  int longest = 0, only = 0;
  uint64_t kraft = 0;
  for (size_t s = 0; s < alphabet; ++s) {
    len[s] = (block[s / 2] >> (4 * (s % 2))) & 15;
    if (len[s] == 0) continue;
    if (len[s] > kMax) return corrupt("code length over 12");
    ++present;
    only = static_cast<int>(s);
    longest = std::max<int>(longest, len[s]);
    kraft += uint64_t{1} << (kMax - len[s]);
  }
  if (present == 0) {
    if (n != 0 || block.size() != table_bytes) return corrupt("no symbol has a code");
    return {};
  }
  if (present == 1) {
    if (block.size() != table_bytes) return corrupt("single-symbol block with stream bytes");
    std::fill(out.begin(), out.end(), static_cast<uint8_t>(only));
    return {};
  }
  if (kraft > (uint64_t{1} << kMax)) return corrupt("code lengths are over-subscribed (not a prefix code)");
  const size_t header = table_bytes + 4 * (kStreams - 1);
  if (block.size() < header) return corrupt("truncated stream size table");
  uint64_t sizes[kStreams];
  uint64_t total = 0;
  for (int k = 0; k < kStreams - 1; ++k) total += sizes[k] = load_u32(block.data() + table_bytes + 4 * k);
  if (total > block.size() - header) return corrupt("stream sizes exceed the block");
  sizes[kStreams - 1] = block.size() - header - total;

  // Decode table indexed by the next `longest` bits: symbol | length << 8, or kInvalidEntry.
  std::array<uint16_t, size_t{1} << kMax> table;
  const size_t table_size = size_t{1} << longest;
  std::fill(table.begin(), table.begin() + static_cast<std::ptrdiff_t>(table_size), kInvalidEntry);
  const std::vector<uint32_t> codes = canonical_codes(len);
  for (size_t s = 0; s < alphabet; ++s) {
    if (len[s] == 0) continue;
    const uint16_t entry = static_cast<uint16_t>(s | (size_t{len[s]} << 8));
    for (size_t f = reverse_bits(codes[s], len[s]); f < table_size; f += size_t{1} << len[s]) table[f] = entry;
  }
  const uint64_t mask = table_size - 1;

  const size_t q = (n + kStreams - 1) / kStreams;
  BitReader rd[kStreams];
  uint8_t* dst[kStreams];
  size_t count[kStreams];
  const uint8_t* p = block.data() + header;
  for (int k = 0; k < kStreams; ++k) {
    rd[k].data = p;
    rd[k].size = static_cast<size_t>(sizes[k]);
    p += sizes[k];
    const size_t begin = std::min(n, k * q);
    dst[k] = out.data() + begin;
    count[k] = std::min(n, (k + 1) * q) - begin;
  }
  unsigned flags = 0;
  size_t i = 0;
  const size_t common = count[kStreams - 1];  // the last stream is the shortest
  const uint16_t* t = table.data();
  // Fast path: four symbols per stream per round, one refill each (>= 56 bits for <= 48 used).
  // A refill advances at most 7 bytes, so `rounds` rounds stay inside every stream without checks.
  while (i + 4 <= common) {
    size_t rounds = (common - i) / 4;
    for (const BitReader& r : rd) rounds = r.can_refill_fast() ? std::min(rounds, (r.size - 8 - r.pos) / 7 + 1) : 0;
    if (rounds == 0) break;
    BitReader r0 = rd[0], r1 = rd[1], r2 = rd[2], r3 = rd[3];
    uint8_t *d0 = dst[0] + i, *d1 = dst[1] + i, *d2 = dst[2] + i, *d3 = dst[3] + i;
    for (size_t k = 0; k < rounds; ++k, d0 += 4, d1 += 4, d2 += 4, d3 += 4) {
      r0.refill_fast();
      r1.refill_fast();
      r2.refill_fast();
      r3.refill_fast();
      for (int j = 0; j < 4; ++j) {
        d0[j] = decode_symbol(r0, t, mask, flags);
        d1[j] = decode_symbol(r1, t, mask, flags);
        d2[j] = decode_symbol(r2, t, mask, flags);
        d3[j] = decode_symbol(r3, t, mask, flags);
      }
    }
    rd[0] = r0, rd[1] = r1, rd[2] = r2, rd[3] = r3;
    i += 4 * rounds;
  }
  for (int k = 0; k < kStreams; ++k) {
    for (size_t j = i; j < count[k]; ++j) {
      if (rd[k].bits < static_cast<unsigned>(kMax)) rd[k].refill();
      dst[k][j] = decode_symbol(rd[k], t, mask, flags);
    }
  }
  if (flags & kInvalidEntry) return corrupt("bits that are no code (corrupt stream)");
  for (int k = 0; k < kStreams; ++k) {
    const uint64_t used = rd[k].consumed_bits();
    if (used > uint64_t{rd[k].size} * 8) return corrupt("stream ends before its last symbol (truncated)");
    if ((used + 7) / 8 != rd[k].size) return corrupt("stream has bytes after its last symbol");
  }
  return {};
}

}  // namespace llmc
