// Highway SIMD gathers of sparse kernels: activations at the kept columns of one row (bitmask, CSR, n:m).
#include "kernels/cpu/sparse_simd.h"

#include <algorithm>
#include <bit>
#include <cstring>

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
      const auto m = hn::LoadMaskBits(d, mask + c / 8);
      hn::CompressStore(hn::LoadU(d, x + c), m, d, xg + k);  // may write 8 lanes: xg has slack
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
  int64_t k = 0;
  for (; k + lanes <= kept; k += lanes) {
    const int64_t bit = k * bits;
    const int64_t nbytes = ((bit & 7) + lanes * bits + 7) / 8;
    uint64_t word = 0;
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
