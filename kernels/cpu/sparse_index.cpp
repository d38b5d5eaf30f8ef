// Window indices of bitmask rows (sparse_index.h): the build from the mask and the per-encoding cache.
#include "kernels/cpu/sparse_index.h"

#include <bit>
#include <cstring>
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

// For each mask byte, the positions of its set bits packed into the low bytes (in order).
struct BytePositions {
  uint64_t p[256];
  constexpr BytePositions() : p() {
    for (int b = 0; b < 256; ++b) {
      int k = 0;
      for (int i = 0; i < 8; ++i)
        if ((b >> i & 1) != 0) p[b] |= static_cast<uint64_t>(i) << (8 * k++);
    }
  }
};
constexpr BytePositions kBytePositions{};
static_assert(kIndexWindow == 32, "the build below assumes 4 mask bytes per window");

}  // namespace

std::shared_ptr<const WindowIndex> build_window_index(const SparseEncoding& s, int64_t rows, int64_t cols) {
  auto wi = std::make_shared<WindowIndex>();
  wi->windows = (cols + kIndexWindow - 1) / kIndexWindow;
  wi->stride = s.kept_stride;
  wi->counts.assign(static_cast<size_t>(rows * wi->windows), 0);
  wi->columns.assign(static_cast<size_t>(rows * wi->stride + 64), 0);
  const int64_t mask_stride = sparse_mask_stride(cols);
  // Per mask byte one 8-byte store of its positions (+ 8 · its place in the window) into a row buffer,
  // advanced by its popcount; a validated row keeps at most kept_stride entries, so the buffer's 8
  // bytes of slack take the last store's excess.
#pragma omp parallel num_threads(num_threads()) if (rows * cols >= (int64_t{1} << 20))
  {
    std::vector<uint8_t> row(static_cast<size_t>(wi->stride + 8));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* mask = s.index.data() + r * mask_stride;
      uint8_t* counts = wi->counts.data() + r * wi->windows;
      int64_t k = 0;
      for (int64_t b = 0; b < mask_stride; ++b) {
        const int n = std::popcount(mask[b]);
        if (k + n > wi->stride) break;  // not a validated encoding: keep what fits
        const uint64_t pos = kBytePositions.p[mask[b]] + static_cast<uint64_t>(b % 4) * 0x0808080808080808ull;
        std::memcpy(row.data() + k, &pos, 8);
        k += n;
        counts[b / 4] = static_cast<uint8_t>(counts[b / 4] + n);
      }
      std::memcpy(wi->columns.data() + r * wi->stride, row.data(), static_cast<size_t>(k));
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
