// Internal: the column indices of bitmask rows by 32-column window, which the AVX-512 decode kernel of
// highly sparse bitmask weights reads instead of the mask (sparse_linear.cpp, docs/sparsity.md). Built
// from the weight's bitmask once and kept while its encoding lives: a runtime layout, never stored.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace llmc::kernels {

inline constexpr int64_t kIndexWindow = 32;  // columns per window: the two 16-float halves of x one vpermt2ps reads

struct WindowIndex {
  int64_t windows = 0;           // ceil(cols / kIndexWindow)
  int64_t stride = 0;            // column bytes between rows: the weight's kept_stride
  std::vector<uint8_t> counts;   // [rows, windows]: kept entries per window
  std::vector<uint8_t> columns;  // [rows, stride] + 64 bytes slack: each kept entry's column within its
                                 // window (0..31), in column order; row r's entry k pairs with value k
};

// Builds the index of a bitmask Sparse weight's rows (threads over rows).
std::shared_ptr<const WindowIndex> build_window_index(const SparseEncoding& s, int64_t rows, int64_t cols);

// The index of w (a bitmask Sparse weight), built on first use and cached per encoding while the
// encoding lives. Thread-safe; call it first outside parallel regions so the build uses the threads.
std::shared_ptr<const WindowIndex> window_index(const Tensor& w);

}  // namespace llmc::kernels
