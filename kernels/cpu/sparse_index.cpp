// Window indices of bitmask rows (sparse_index.h): the build from the mask and the per-encoding cache.
#include "kernels/cpu/sparse_index.h"

#include <bit>
#include <mutex>
#include <unordered_map>

#include "core/sparse.h"
#include "kernels/cpu/kernels.h"

namespace llmc::kernels {
namespace {

struct Entry {
  std::weak_ptr<const Encoding> owner;  // expired: the encoding this index was built for is gone
  std::shared_ptr<const WindowIndex> index;
};
std::mutex g_mutex;
std::unordered_map<const Encoding*, Entry> g_cache;

}  // namespace

std::shared_ptr<const WindowIndex> build_window_index(const SparseEncoding& s, int64_t rows, int64_t cols) {
  auto wi = std::make_shared<WindowIndex>();
  wi->windows = (cols + kIndexWindow - 1) / kIndexWindow;
  wi->stride = s.kept_stride;
  wi->counts.assign(static_cast<size_t>(rows * wi->windows), 0);
  wi->columns.assign(static_cast<size_t>(rows * wi->stride + 64), 0);
  const int64_t mask_stride = sparse_mask_stride(cols);
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (rows * cols >= (int64_t{1} << 20))
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* mask = s.index.data() + r * mask_stride;
    uint8_t* counts = wi->counts.data() + r * wi->windows;
    uint8_t* columns = wi->columns.data() + r * wi->stride;
    int64_t k = 0;
    for (int64_t b = 0; b < mask_stride; ++b)
      for (uint32_t bits = mask[b]; bits != 0 && k < wi->stride; bits &= bits - 1) {
        const int64_t c = 8 * b + std::countr_zero(bits);
        columns[k++] = static_cast<uint8_t>(c % kIndexWindow);
        ++counts[c / kIndexWindow];
      }
  }
  return wi;
}

std::shared_ptr<const WindowIndex> window_index(const Tensor& w) {
  // The last weight this thread asked for: a live owner at the same address is the same encoding.
  thread_local const Encoding* memo_key = nullptr;
  thread_local std::weak_ptr<const Encoding> memo_owner;
  thread_local std::shared_ptr<const WindowIndex> memo_index;
  const Encoding* key = w.encoding.get();
  if (key == memo_key && !memo_owner.expired()) return memo_index;
  std::shared_ptr<const WindowIndex> index;
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cache.find(key);
    if (it != g_cache.end() && !it->second.owner.expired()) {
      index = it->second.index;
    } else {
      std::erase_if(g_cache, [](const auto& e) { return e.second.owner.expired(); });
      index = build_window_index(std::get<SparseEncoding>(w.encoding->node), w.rows(), w.cols());
      g_cache[key] = Entry{w.encoding, index};
    }
  }
  memo_key = key;
  memo_owner = w.encoding;
  memo_index = index;
  return index;
}

}  // namespace llmc::kernels
