// Internal: Highway-dispatched gathers of the sparse linear kernels (kernels/cpu/sparse_linear.cpp).
#pragma once

#include <cstdint>

namespace llmc::kernels::simd {

// xg[k] = x[column of the k-th kept entry of one row], for the row's kept entries in order.
// gather_mask: bitmask row of ceil(cols / 8) bytes; returns the kept count. xg needs 8 floats of
// slack past the count (vector stores).
int64_t gather_mask(const uint8_t* mask, int64_t cols, const float* x, float* xg);
// CSR: column indices of the row's n entries, u16 or u32.
void gather_csr16(const uint16_t* idx, int64_t n, const float* x, float* xg);
void gather_csr32(const uint32_t* idx, int64_t n, const float* x, float* xg);
// n:m: the row's packed in-group indices (`bits` each); kept entries of the row < 2^20.
void gather_nm(const uint8_t* idx, int n, int m, int bits, int64_t kept, const float* x, float* xg);

}  // namespace llmc::kernels::simd
