// Highway SIMD gathers of sparse kernels: activations at the kept columns of one row (bitmask, CSR, n:m).
#include "kernels/cpu/sparse_simd.h"

#include <algorithm>
#include <bit>
#include <cstring>

#ifndef LLMC_SPARSE_SIMD_TABLES
#define LLMC_SPARSE_SIMD_TABLES
namespace llmc::kernels::simd {
// For each mask byte: the positions of its set bits in order, then zeros (a permutation that
// moves the kept lanes of 8 to the front). Highway 1.0's CompressStore copies its own table onto
// the stack at every call, which costs more than the gather itself.
struct CompressTable {
  alignas(32) int32_t idx[256][8];
  constexpr CompressTable() : idx() {
    for (int b = 0; b < 256; ++b) {
      int k = 0;
      for (int i = 0; i < 8; ++i)
        if (b >> i & 1) idx[b][k++] = i;
    }
  }
};
inline constexpr CompressTable kCompress{};
}  // namespace llmc::kernels::simd
#endif

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#define HWY_COMPILE_ALL_ATTAINABLE

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/sparse_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmc::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 8 lanes: 8 n:m indices of <= 4 bits fit one 32-bit word, 8 mask bits one byte.
using D8 = hn::CappedTag<float, 8>;
using DI8 = hn::RebindToSigned<D8>;
using DU8 = hn::RebindToUnsigned<D8>;

int64_t GatherMask(const uint8_t* mask, int64_t cols, const float* x, float* xg) {
  const D8 d;
  int64_t k = 0, c = 0;
  if (hn::Lanes(d) == 8) {
    for (; c + 8 <= cols; c += 8) {
      const uint8_t bits = mask[c / 8];
      if (bits == 0) continue;
      const auto idx = hn::IndicesFromVec(d, hn::Load(DI8(), kCompress.idx[bits]));
      hn::StoreU(hn::TableLookupLanes(hn::LoadU(d, x + c), idx), d, xg + k);  // 8 lanes: xg has slack
      k += std::popcount(bits);
    }
  }
  for (; c < cols; ++c)
    if (mask[c / 8] >> (c % 8) & 1) xg[k++] = x[c];
  return k;
}

void GatherCsr16(const uint16_t* idx, int64_t n, const float* x, float* xg) {
  const D8 d;
  const DI8 di;
  const DU8 du;
  const hn::Rebind<uint16_t, D8> d16;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t k = 0;
  for (; k + lanes <= n; k += lanes) {
    const auto i = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d16, idx + k)));
    hn::StoreU(hn::GatherIndex(d, x, i), d, xg + k);
  }
  for (; k < n; ++k) xg[k] = x[idx[k]];
}

void GatherCsr32(const uint32_t* idx, int64_t n, const float* x, float* xg) {
  const D8 d;
  const DI8 di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t k = 0;
  for (; k + lanes <= n; k += lanes) {
    const auto i = hn::LoadU(di, reinterpret_cast<const int32_t*>(idx + k));
    hn::StoreU(hn::GatherIndex(d, x, i), d, xg + k);
  }
  for (; k < n; ++k) xg[k] = x[idx[k]];
}

// Kept entry k of an n:m row sits in column (k / n) * m + index_k. Per block of lanes: the packed
// indices of the block start at bit k * bits (at most 5 bytes), each lane shifts its own field
// out; k / n is computed in float (exact while k < 2^20, checked by the caller).
void GatherNm(const uint8_t* idx, int n, int m, int bits, int64_t kept, const float* x, float* xg) {
  const D8 d;
  const DI8 di;
  const DU8 du;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto lane_shift = hn::Iota(du, 0) * hn::Set(du, static_cast<uint32_t>(bits));
  const auto field = hn::Set(du, (1u << bits) - 1);
  const auto lane_k = hn::ConvertTo(d, hn::Iota(di, 0));
  const auto inv_n = hn::Set(d, 1.0f / static_cast<float>(n));
  const auto half = hn::Set(d, 0.5f);
  const auto vm = hn::Set(di, m);
  const int64_t stride = (kept * bits + 7) / 8;  // bytes of the row's packed indices
  int64_t k = 0;
  // n | 8 and 8 kept entries spanning at most 16 columns (2:4, 4:8, ...): two loads of x and
  // in-register permutes instead of a gather; col = (lane / n) * m + index_k, in [0, span).
  const int64_t span = lanes == 8 && 8 % n == 0 ? 8 * m / n : 0;
  if (span > 0 && span <= 16) {
    alignas(32) int32_t base[8];
    for (int l = 0; l < 8; ++l) base[l] = (l / n) * m;
    const auto lane_base = hn::Load(di, base);
    const auto seven = hn::Set(di, 7);
    for (; k + 8 <= kept; k += 8) {
      const int64_t c0 = (k / n) * m;
      // Only groups before the last are sure to have m columns (a ragged last group is shorter):
      // the 16-float window must end inside them; the rest goes through the gather below.
      if (c0 + 16 > (kept / n - 1) * m) break;
      const int64_t bit = k * bits;  // k % 8 == 0: byte aligned, 8 * bits <= 32 bits
      uint32_t word = 0;
      if ((bit >> 3) + 4 <= stride)  // a fixed-size load: a variable memcpy is a call and a stall
        std::memcpy(&word, idx + (bit >> 3), 4);
      else
        std::memcpy(&word, idx + (bit >> 3), static_cast<size_t>(bits));
      const auto col = lane_base + hn::BitCast(di, hn::And(hn::Set(du, word) >> lane_shift, field));
      const auto perm = hn::IndicesFromVec(d, hn::And(col, seven));
      const auto lo = hn::TableLookupLanes(hn::LoadU(d, x + c0), perm);
      const auto hi = hn::TableLookupLanes(hn::LoadU(d, x + c0 + 8), perm);
      hn::StoreU(hn::IfThenElse(hn::RebindMask(d, col > seven), hi, lo), d, xg + k);
    }
  }
  for (; k + lanes <= kept; k += lanes) {
    const int64_t bit = k * bits;
    const int64_t nbytes = ((bit & 7) + lanes * bits + 7) / 8;
    uint64_t word = 0;
    if ((bit >> 3) + 8 <= stride)
      std::memcpy(&word, idx + (bit >> 3), 8);
    else
      std::memcpy(&word, idx + (bit >> 3), static_cast<size_t>(nbytes));  // little-endian
    const auto w = hn::Set(du, static_cast<uint32_t>(word >> (bit & 7)));
    const auto in_group = hn::BitCast(di, hn::And(w >> lane_shift, field));
    const auto kk = hn::Set(d, static_cast<float>(k)) + lane_k;
    const auto group = hn::ConvertTo(di, hn::Floor((kk + half) * inv_n));
    hn::StoreU(hn::GatherIndex(d, x, group * vm + in_group), d, xg + k);
  }
  for (; k < kept; ++k) {
    const int64_t bit = k * bits;
    uint32_t word = idx[bit >> 3];
    if ((bit & 7) + bits > 8) word |= static_cast<uint32_t>(idx[(bit >> 3) + 1]) << 8;
    xg[k] = x[(k / n) * m + ((word >> (bit & 7)) & ((1u << bits) - 1))];
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmc::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmc::kernels::simd {

HWY_EXPORT(GatherMask);
HWY_EXPORT(GatherCsr16);
HWY_EXPORT(GatherCsr32);
HWY_EXPORT(GatherNm);

int64_t gather_mask(const uint8_t* mask, int64_t cols, const float* x, float* xg) {
  return HWY_DYNAMIC_DISPATCH(GatherMask)(mask, cols, x, xg);
}
void gather_csr16(const uint16_t* idx, int64_t n, const float* x, float* xg) {
  HWY_DYNAMIC_DISPATCH(GatherCsr16)(idx, n, x, xg);
}
void gather_csr32(const uint32_t* idx, int64_t n, const float* x, float* xg) {
  HWY_DYNAMIC_DISPATCH(GatherCsr32)(idx, n, x, xg);
}
void gather_nm(const uint8_t* idx, int n, int m, int bits, int64_t kept, const float* x, float* xg) {
  HWY_DYNAMIC_DISPATCH(GatherNm)(idx, n, m, bits, kept, x, xg);
}

}  // namespace llmc::kernels::simd
#endif  // HWY_ONCE
