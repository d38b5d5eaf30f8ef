// File access helpers: release_file_pages gives mapped input pages back without changing what they read;
// collapse_huge_pages moves heap memory into huge pages without changing it.
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <numeric>
#include <vector>

#include "formats/file_io.h"
#include "test_util.h"

namespace llmc {
namespace {

// A 16 MiB file of bytes counting up from `first` (also returned in `bytes`), mapped.
Result<std::shared_ptr<MappedFile>> mapped_counting_file(const test::TempDir& dir, uint8_t first,
                                                         std::vector<uint8_t>& bytes) {
  const std::string path = dir.path("data.bin");
  bytes.assign(size_t{16} << 20, 0);
  std::iota(bytes.begin(), bytes.end(), first);
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  return MappedFile::open(path);
}

TEST_CASE("release_file_pages drops mapped pages, which then read the same, and leaves heap memory alone",
          "[file_io]") {
  test::TempDir dir;
  std::vector<uint8_t> bytes;
  auto file = mapped_counting_file(dir, 7, bytes);
  REQUIRE(file.ok());
  const uint8_t* p = (*file)->data();
  const size_t n = (*file)->size();
  const int64_t pages = static_cast<int64_t>(n) / ::sysconf(_SC_PAGESIZE);
  const int64_t before = test::resident_pages();
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i];  // fault every page in
  const int64_t touched = test::resident_pages();
  CHECK(touched - before > pages * 9 / 10);
  release_file_pages(p, n);
  CHECK(touched - test::resident_pages() > pages * 9 / 10);
  CHECK(std::equal(bytes.begin(), bytes.end(), p));  // faulted in again from the file
  // A range that is not inside a live mapping is left alone (MADV_DONTNEED would zero heap pages).
  std::vector<uint8_t> heap(bytes);
  release_file_pages(heap.data(), heap.size());
  CHECK(heap == bytes);
  release_file_pages(p + n - 10, 20);  // runs past the mapping: ignored
  // Anonymous memory above the mapping (where large heap blocks land) is left alone too: the range
  // check once wrapped around there and zeroed it (SmolLM2's repacked weights, after RTN of a copy).
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  uint8_t* hint = const_cast<uint8_t*>(p) + (n + page - 1) / page * page + 16 * page;
  void* above =
      ::mmap(hint, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (above == hint) {
    auto* a = static_cast<uint8_t*>(above);
    std::fill(a, a + 4 * page, uint8_t{0x5A});
    release_file_pages(a, 4 * page);
    CHECK(std::all_of(a, a + 4 * page, [](uint8_t b) { return b == 0x5A; }));
  } else {
    WARN("no anonymous mapping above the file mapping; the wrap-around case is not exercised");
  }
  if (above != MAP_FAILED) ::munmap(above, 4 * page);
  release_file_pages(nullptr, 0);
  CHECK(sum > 0);
}

TEST_CASE("release_file_pages frees a mapping piece by piece while the rest stays in use", "[file_io]") {
  // How passes release: tensor after tensor, each smaller than the page cache's 2 MiB entries, while
  // the tensors after them are read. (A kernel that maps large folios with one entry kept every
  // piece resident until the last piece of its 2 MiB was released and nothing touched it again.)
  test::TempDir dir;
  std::vector<uint8_t> bytes;
  auto file = mapped_counting_file(dir, 3, bytes);
  REQUIRE(file.ok());
  const uint8_t* p = (*file)->data();
  const size_t n = (*file)->size(), piece = size_t{300} << 10;  // 75 pages of 4 KiB
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i];
  const int64_t touched = test::resident_pages();
  for (size_t at = 0; at + piece <= n / 2; at += piece) {
    release_file_pages(p + at, piece);
    for (size_t i = at + piece; i < n; i += 4096) sum += p[i];  // the rest is still read
  }
  const int64_t released_pages = static_cast<int64_t>(n / 2 / piece * piece) / ::sysconf(_SC_PAGESIZE);
  CHECK(touched - test::resident_pages() > released_pages * 9 / 10);
  CHECK(std::equal(bytes.begin(), bytes.end(), p));
  CHECK(sum > 0);
}

TEST_CASE("collapse_huge_pages backs heap memory with huge pages, bytes unchanged, and leaves mapped files alone",
          "[file_io]") {
  constexpr size_t kHuge = size_t{2} << 20;
  std::vector<uint8_t> expected(4 * kHuge + 12345);
  std::iota(expected.begin(), expected.end(), uint8_t{11});
  std::vector<uint8_t> heap(expected);
  const size_t n = collapse_huge_pages(heap.data() + 1000, heap.size() - 2000);
  CHECK(n % kHuge == 0);
  CHECK(n <= heap.size() + 2 * kHuge);
  CHECK(std::equal(heap.begin(), heap.end(), expected.begin()));
  if (n > 0)
    CHECK(test::anon_huge_kb(heap.data() + heap.size() / 2) >= 2048);
  else
    WARN("no transparent huge pages here (THP off or no free huge page): only the bytes were checked");

  test::TempDir dir;
  std::vector<uint8_t> bytes;
  auto file = mapped_counting_file(dir, 5, bytes);
  REQUIRE(file.ok());
  CHECK(collapse_huge_pages((*file)->data() + kHuge, 4 * kHuge) == 0);
  CHECK(std::equal(bytes.begin(), bytes.end(), (*file)->data()));
  CHECK(collapse_huge_pages(nullptr, 0) == 0);
}

}  // namespace
}  // namespace llmc
