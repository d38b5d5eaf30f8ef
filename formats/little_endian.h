// Little-endian fixed-width integers in byte buffers (file prefixes, block headers, coded
// streams): unaligned loads and appends shared by the .llmc reader and the section coders.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace llmc {

// The integer stored at p, unaligned (a plain copy: llmc assumes a little-endian host, as every
// reader always has).
template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
inline uint32_t load_u16(const uint8_t* p) { return load_le<uint16_t>(p); }
inline uint32_t load_u32(const uint8_t* p) { return load_le<uint32_t>(p); }
inline uint64_t load_u64(const uint8_t* p) { return load_le<uint64_t>(p); }

inline void append_u32(std::vector<uint8_t>& out, uint32_t v) {
  const uint8_t b[4] = {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)};
  out.insert(out.end(), b, b + 4);
}

}  // namespace llmc
