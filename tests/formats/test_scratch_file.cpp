// The scratch file: tensor bytes moved out of the heap read back the same from a mapping that is
// resident only while read; a write it cannot make is an error that leaves the tensor where it was.
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <numeric>
#include <vector>

#include "core/tensor.h"
#include "formats/file_io.h"
#include "formats/llmc.h"
#include "formats/model_io.h"
#include "formats/scratch_file.h"
#include "test_util.h"

namespace llmc {
namespace {

std::vector<uint8_t> counting_bytes(size_t n, uint8_t first) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

TEST_CASE("scratch file: stored bytes read back the same and are resident only while read", "[file_io]") {
  test::TempDir dir;
  auto scratch = ScratchFile::create(dir.path(""));
  REQUIRE(scratch.ok());
  const std::vector<uint8_t> bytes = counting_bytes(size_t{16} << 20, 3);
  const int64_t pages = static_cast<int64_t>(bytes.size()) / ::sysconf(_SC_PAGESIZE);

  const int64_t before = test::resident_pages();
  auto view = (*scratch)->store(bytes);
  REQUIRE(view.ok());
  CHECK(test::resident_pages() - before < pages / 10);  // written with pwrite: nothing mapped in
  CHECK(is_file_backed(view->data(), view->size()));
  CHECK_FALSE(is_file_backed(bytes.data(), bytes.size()));
  CHECK(reinterpret_cast<uintptr_t>(view->data()) % static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE)) == 0);

  REQUIRE(view->size() == bytes.size());
  CHECK(std::equal(bytes.begin(), bytes.end(), view->data()));  // faults every page in
  const int64_t touched = test::resident_pages();
  CHECK(touched - before > pages * 9 / 10);
  release_file_pages(view->data(), view->size());
  CHECK(touched - test::resident_pages() > pages * 9 / 10);
  CHECK(std::equal(bytes.begin(), bytes.end(), view->data()));  // read again from the file

  // A second store lands after the first, page-aligned; both stay readable.
  auto small = (*scratch)->store(counting_bytes(100, 9));
  REQUIRE(small.ok());
  CHECK((*scratch)->size() == bytes.size() + size_t(::sysconf(_SC_PAGESIZE)));
  CHECK(small->data()[0] == 9);
  CHECK(small->data()[99] == 108);
  CHECK((*scratch)->store(std::span<const uint8_t>()).value().empty());

  // The disk blocks of a range go with its last view (a copy of the view keeps them).
  const uint64_t on_disk = (*scratch)->disk_bytes();
  CHECK(on_disk >= bytes.size());
  Bytes copy = view->slice(0, 10);
  view = Bytes{};
  CHECK((*scratch)->disk_bytes() == on_disk);
  CHECK(copy.data()[9] == static_cast<uint8_t>(12));
  copy = Bytes{};
  CHECK((*scratch)->disk_bytes() < on_disk - bytes.size() / 2);
  CHECK(small->data()[99] == 108);  // the other range is untouched
}

TEST_CASE("scratch file: a range written in parts, out of order and from threads, reads back whole", "[file_io]") {
  test::TempDir dir;
  auto scratch = ScratchFile::create(dir.path(""));
  REQUIRE(scratch.ok());
  const std::vector<uint8_t> bytes = counting_bytes(1000003, 1);
  const ScratchFile::Range r = (*scratch)->reserve(bytes.size());
  constexpr int64_t kPart = 4099;
  const int64_t parts = (static_cast<int64_t>(bytes.size()) + kPart - 1) / kPart;
  std::vector<char> ok(static_cast<size_t>(parts), 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = parts - 1; i >= 0; --i) {
    const size_t at = static_cast<size_t>(i * kPart), n = std::min<size_t>(kPart, bytes.size() - at);
    ok[static_cast<size_t>(i)] = (*scratch)->write(r, at, std::span<const uint8_t>(bytes.data() + at, n)).ok();
  }
  CHECK(std::all_of(ok.begin(), ok.end(), [](char c) { return c != 0; }));
  auto view = (*scratch)->view(r);
  REQUIRE(view.ok());
  REQUIRE(view->size() == bytes.size());
  CHECK(std::equal(bytes.begin(), bytes.end(), view->data()));
}

TEST_CASE("scratch file: an encoding moves its heap buffers, keeps mapped ones, and decodes the same", "[file_io]") {
  test::TempDir dir;
  auto scratch = ScratchFile::create(dir.path(""));
  REQUIRE(scratch.ok());
  // A Quant tensor built on the heap.
  QuantEncoding q;
  q.bits = 4;
  q.scheme = QuantScheme::kAsymmetric;
  q.group_size = 32;
  q.scale_dtype = DType::kF16;
  q.codes = Bytes::owned(counting_bytes(64 * 32, 0));  // 64 rows of 64 codes
  std::vector<uint16_t> scales(128, f32_to_f16(0.25f)), mins(128, f32_to_f16(-1.0f));
  q.scales = Bytes::from_vector(scales);
  q.mins = Bytes::from_vector(mins);
  const Tensor heap{"w", Shape{{64, 64}}, std::make_shared<const Encoding>(Encoding{q})};
  REQUIRE(validate_encoding(*heap.encoding, heap.shape).ok());

  auto stored = (*scratch)->store(*heap.encoding);
  REQUIRE(stored.ok());
  const Tensor moved{"w", heap.shape, *stored};
  for_each_buffer(*moved.encoding, [](const Bytes& b) { CHECK(is_file_backed(b.data(), b.size())); });
  CHECK(moved.to_f32() == heap.to_f32());

  // Storing it again copies nothing: its buffers are already views of a file.
  const uint64_t size = (*scratch)->size();
  auto again = (*scratch)->store(*moved.encoding);
  REQUIRE(again.ok());
  CHECK((*scratch)->size() == size);
  CHECK(std::get<QuantEncoding>((*again)->node).codes.data() ==
        std::get<QuantEncoding>(moved.encoding->node).codes.data());

  // store_or_keep: no scratch file, the same encoding.
  CHECK(store_or_keep(nullptr, heap.encoding) == heap.encoding);
}

TEST_CASE("scratch file: a write the file system refuses is an error, and store_or_keep keeps the tensor",
          "[file_io]") {
  test::TempDir dir;
  CHECK_FALSE(ScratchFile::create(dir.path("missing/dir")).ok());
  auto scratch = ScratchFile::create(dir.path(""));
  REQUIRE(scratch.ok());
  // A file-size limit stands in for a full disk: pwrite past it fails (EFBIG) instead of writing.
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 1 << 20;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  auto too_big = (*scratch)->store(counting_bytes(size_t{2} << 20, 0));
  const Tensor t = make_dense_f32("w", Shape{{1024, 1024}}, std::vector<float>(1 << 20, 0.5f));
  const EncodingPtr kept = store_or_keep(scratch->get(), t.encoding);
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
  std::signal(SIGXFSZ, old_handler);
  REQUIRE_FALSE(too_big.ok());
  CHECK(too_big.error().code == ErrorCode::kIo);
  CHECK_THAT(too_big.error().message, Catch::Contains("cannot write") && Catch::Contains("TMPDIR"));
  CHECK(kept == t.encoding);  // still on the heap, unchanged
  // The file still takes what fits.
  auto fits = (*scratch)->store(counting_bytes(1000, 5));
  REQUIRE(fits.ok());
  CHECK(fits->data()[999] == static_cast<uint8_t>(1004));
}

TEST_CASE("scratch file: a zstd-coded .llmc loads its decoded sections into it, the same tensors", "[file_io]") {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  if (bin.empty()) return;
  auto model = load_model(bin);
  REQUIRE(model.ok());
  test::TempDir dir;
  const std::string path = dir.path("z.llmc");
  LlmcWriteOptions w;
  w.zstd_level = 19;
  REQUIRE(write_llmc(*model, path, w).ok());
  auto scratch = ScratchFile::create(dir.path(""));
  REQUIRE(scratch.ok());
  auto heap = read_llmc(path);
  REQUIRE(heap.ok());
  auto lean = read_llmc(path, LlmcReadOptions{.scratch = scratch->get()});
  REQUIRE(lean.ok());
  test::require_same_tensors(*heap, *lean);
  CHECK((*scratch)->size() > 0);  // zstd made sections smaller, so some were coded and decoded
  size_t heap_buffers = 0;
  for (const Tensor& t : lean->tensors())  // every buffer: a view of the file or of the scratch file
    for_each_buffer(*t.encoding, [&](const Bytes& b) { heap_buffers += !is_file_backed(b.data(), b.size()); });
  CHECK(heap_buffers == 0);
}

}  // namespace
}  // namespace llmc
