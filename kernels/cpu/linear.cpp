// Linear-layer kernels over encoded weights: the dispatch table keyed by (encoding kind, dtype),
// OpenMP blocking over rows and tokens, the generic decode-a-block kernel and the scalar references.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/lowrank_linear.h"
#include "kernels/cpu/palette_linear.h"
#include "kernels/cpu/quant_linear.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/sparse_linear.h"

namespace llmc::kernels {
namespace {

std::atomic<int> g_threads{0};

// Index of the Dense node kind in Encoding::node.
constexpr size_t kDenseKind = 0;
static_assert(std::is_same_v<std::variant_alternative_t<kDenseKind, decltype(Encoding::node)>, DenseEncoding>);
constexpr size_t kQuantKind = 1;
static_assert(std::is_same_v<std::variant_alternative_t<kQuantKind, decltype(Encoding::node)>, QuantEncoding>);
constexpr size_t kSparseKind = 2;
static_assert(std::is_same_v<std::variant_alternative_t<kSparseKind, decltype(Encoding::node)>, SparseEncoding>);
constexpr size_t kLowRankKind = 3;
static_assert(std::is_same_v<std::variant_alternative_t<kLowRankKind, decltype(Encoding::node)>, LowRankEncoding>);
constexpr size_t kTuckerKind = 4;
static_assert(std::is_same_v<std::variant_alternative_t<kTuckerKind, decltype(Encoding::node)>, TuckerEncoding>);
constexpr size_t kPaletteKind = 5;
static_assert(std::is_same_v<std::variant_alternative_t<kPaletteKind, decltype(Encoding::node)>, PaletteEncoding>);

// Computes Y[t_begin:t_end, r_begin:r_end] for one weight (see simd::MatmulRowsFn for layouts);
// aux is the per-call scratch its row's `prepare` filled (null when the row has none).
using RowsKernel = void (*)(const Tensor& w, const float* x, const float* aux, int64_t t_begin, int64_t t_end,
                            int64_t r_begin, int64_t r_end, float* y);
// Per-call preparation of the activations X[n, cols] before the parallel loop (e.g. group sums).
using AuxFloatsFn = int64_t (*)(const Tensor& w, int64_t n);
using PrepareFn = void (*)(const Tensor& w, const float* x, int64_t n, float* aux);
// Kernels of composite weights (LowRank, Tucker) run the whole product Y[n, rows] = X · Wᵀ
// themselves, as dispatched matmuls over their parts.
using WholeFn = void (*)(const Tensor& w, const float* x, int64_t n, float* y);

template <simd::MatmulRowsFn F>
void dense_rows(const Tensor& w, const float* x, const float*, int64_t t_begin, int64_t t_end, int64_t r_begin,
                int64_t r_end, float* y) {
  const auto& d = std::get<DenseEncoding>(w.encoding->node);
  F(d.data.data(), w.rows(), w.cols(), x, t_begin, t_end, r_begin, r_end, y);
}

constexpr int64_t kDecodeRows = 16;

}  // namespace

void decoded_rows(const Tensor& w, const float* x, const float*, int64_t t_begin, int64_t t_end, int64_t r_begin,
                  int64_t r_end, float* y) {
  thread_local std::vector<float> block;
  const int64_t cols = w.cols();
  for (int64_t r = r_begin; r < r_end; r += kDecodeRows) {
    const int64_t nr = std::min(kDecodeRows, r_end - r);
    block.resize(static_cast<size_t>(nr * cols));
    w.rows_to_f32(r, r + nr, block.data());
    simd::matmul_block_f32(block.data(), nr, cols, x + t_begin * cols, t_end - t_begin, y + t_begin * w.rows() + r,
                           w.rows());
  }
}

namespace {

struct LinearKernelRow {
  size_t kind;                 // index in Encoding::node
  std::optional<DType> dtype;  // Dense dtype; nullopt = any
  const char* name;
  RowsKernel rows;
  AuxFloatsFn aux_floats = nullptr;  // null: no preparation
  PrepareFn prepare = nullptr;
  WholeFn whole = nullptr;                                        // set: used instead of the row loop (rows is null)
  int64_t (*token_block)(int64_t n, int64_t standard) = nullptr;  // tokens per kernel call (null: standard)
};

// The one dispatch point of linear layers: first matching row wins; the last row matches all.
const LinearKernelRow kLinearKernels[] = {
    {kDenseKind, DType::kF32, "dense f32", dense_rows<simd::matmul_rows_f32>},
    {kDenseKind, DType::kF16, "dense f16", dense_rows<simd::matmul_rows_f16>},
    {kDenseKind, DType::kBF16, "dense bf16", dense_rows<simd::matmul_rows_bf16>},
    {kQuantKind, std::nullopt, "quant packed codes", quant_rows, quant_aux_floats, quant_prepare, nullptr,
     quant_token_block},
    {kSparseKind, std::nullopt, "sparse (fused pattern + dot)", sparse_rows, sparse_aux_floats, sparse_prepare},
    {kLowRankKind, std::nullopt, "low-rank (V x, then U ·)", nullptr, nullptr, nullptr, lowrank_linear},
    {kTuckerKind, std::nullopt, "tucker (mode products, core)", nullptr, nullptr, nullptr, tucker_linear},
    {kPaletteKind, std::nullopt, "palette lookup", palette_rows, palette_aux_floats, palette_prepare},
    {static_cast<size_t>(-1), std::nullopt, "decoded rows", decoded_rows},
};

const LinearKernelRow& lookup(const Tensor& w) {
  const Encoding& e = *w.encoding;
  const size_t kind = e.node.index();
  for (const auto& row : kLinearKernels) {
    if (row.kind == static_cast<size_t>(-1)) return row;
    if (row.kind != kind) continue;
    if (!row.dtype) return row;
    if (kind == kDenseKind && std::get<DenseEncoding>(e.node).dtype == *row.dtype) return row;
  }
  return kLinearKernels[std::size(kLinearKernels) - 1];
}

// Token blocks bound the activations kept hot in cache (64 × cols floats); row blocks are the
// unit of work of one thread (a multiple of the microkernel's 4 rows): about 8 per thread, 16 to 64
// rows (64 rather than 16 rows per call: q4 matvec +3-4 % on the Zen 4 VM, fewer per-call setups).
constexpr int64_t kTokenBlock = 64;
constexpr int64_t kMinRowBlock = 16;
constexpr int64_t kMaxRowBlock = 64;
int64_t row_block(int64_t rows, int threads) {
  const int64_t share = (rows / (8 * std::max(1, threads)) + kMinRowBlock - 1) / kMinRowBlock * kMinRowBlock;
  return std::clamp(share, kMinRowBlock, kMaxRowBlock);
}
constexpr int64_t kMinParallelWork = 1 << 15;  // multiply-adds below which threads cost more than they give

// The row blocks of one parallel loop: each thread starts on its own contiguous share (one stream
// of weights per thread, which the prefetchers follow), and a thread that finishes its share takes
// single blocks from the end of another's. Rows are computed independently, so which thread runs
// a block never changes the result. With static halves instead, 12 % of q4 decode's CPU samples on
// the 2-core Zen 4 VM were one thread spinning at the barrier for the other (4 % with the queue).
class RowBlockQueue {
 public:
  explicit RowBlockQueue(int threads) : shares_(std::make_unique<Share[]>(static_cast<size_t>(threads))) {}
  // Thread t of `threads` takes its share of [0, blocks).
  void reset(int t, int threads, int64_t blocks) {
    const int64_t begin = blocks * t / threads, end = blocks * (t + 1) / threads;
    shares_[t].range.store(pack(begin, end), std::memory_order_relaxed);
  }
  // The next block for thread t, or -1 when every share is empty.
  int64_t next(int t, int threads) {
    for (int i = 0; i < threads; ++i) {
      Share& s = shares_[(t + i) % threads];
      uint64_t v = s.range.load(std::memory_order_relaxed);
      while (front(v) < back(v)) {
        const bool own = i == 0;
        const uint64_t taken = own ? pack(front(v) + 1, back(v)) : pack(front(v), back(v) - 1);
        if (s.range.compare_exchange_weak(v, taken, std::memory_order_relaxed)) return own ? front(v) : back(v) - 1;
      }
    }
    return -1;
  }

 private:
  struct alignas(64) Share {
    std::atomic<uint64_t> range{0};  // front << 32 | back
  };
  static uint64_t pack(int64_t f, int64_t b) { return static_cast<uint64_t>(f) << 32 | static_cast<uint64_t>(b); }
  static int64_t front(uint64_t v) { return static_cast<int64_t>(v >> 32); }
  static int64_t back(uint64_t v) { return static_cast<int64_t>(v & 0xFFFFFFFFu); }
  std::unique_ptr<Share[]> shares_;
};

void run_linear(const Tensor& w, const float* x, int64_t n, float* y) {
  const LinearKernelRow& row = lookup(w);
  if (row.whole != nullptr) {
    row.whole(w, x, n, y);
    return;
  }
  const RowsKernel kernel = row.rows;
  thread_local std::vector<float> aux;
  if (row.prepare != nullptr) {
    aux.resize(static_cast<size_t>(row.aux_floats(w, n)));
    row.prepare(w, x, n, aux.data());
  }
  const float* aux_data = row.prepare != nullptr ? aux.data() : nullptr;
  const int64_t rows = w.rows();
  const int64_t cols = w.cols();
  const bool parallel = rows * cols * n >= kMinParallelWork;
  const int threads = num_threads();
  const int64_t block = row_block(rows, parallel ? threads : 1);
  const int64_t row_blocks = (rows + block - 1) / block;
  const int64_t token_block = row.token_block != nullptr ? row.token_block(n, kTokenBlock) : kTokenBlock;
  RowBlockQueue queue(parallel ? threads : 1);
#pragma omp parallel num_threads(threads) if (parallel)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    for (int64_t tb = 0; tb < n; tb += token_block) {
      const int64_t te = std::min(n, tb + token_block);
      // No thread may still take from a share when its owner resets it, nor before it is set.
      if (tb > 0) {
#pragma omp barrier
      }
      queue.reset(t, team, row_blocks);
#pragma omp barrier
      for (int64_t rb = queue.next(t, team); rb >= 0; rb = queue.next(t, team))
        kernel(w, x, aux_data, tb, te, rb * block, std::min(rows, (rb + 1) * block), y);
    }
  }
}

}  // namespace

void set_num_threads(int threads) { g_threads.store(std::max(0, threads)); }
int num_threads() {
  const int t = g_threads.load();
  return t > 0 ? t : omp_get_max_threads();
}

void matvec(const Tensor& w, const float* x, float* y) { run_linear(w, x, 1, y); }
void matmul(const Tensor& w, const float* x, int64_t n, float* y) { run_linear(w, x, n, y); }

bool has_fast_linear(const Tensor& w) { return lookup(w).rows != decoded_rows; }

void matmul_ref(const Tensor& w, const float* x, int64_t n, float* y) {
  const int64_t rows = w.rows();
  const int64_t cols = w.cols();
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    w.rows_to_f32(r, r + 1, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double s = 0.0;
      for (int64_t c = 0; c < cols; ++c) s += static_cast<double>(row[c]) * x[t * cols + c];
      y[t * rows + r] = static_cast<float>(s);
    }
  }
}
void matvec_ref(const Tensor& w, const float* x, float* y) { matmul_ref(w, x, 1, y); }

}  // namespace llmc::kernels
