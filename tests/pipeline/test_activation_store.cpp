// Calibration activation store: the same items in memory and in the spill file, the spill file
// unlinked and outside the process's resident memory, clear errors for a bad spill directory.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <vector>

#include "pipeline/activation_store.h"
#include "test_util.h"

using namespace llmc;

namespace {

std::vector<float> item_values(size_t i, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) v[k] = static_cast<float>(i * 1000003 + k) * 0.25f;
  return v;
}

}  // namespace

TEST_CASE("activation store: items round-trip in memory and spilled, each in its own place", "[calib]") {
  test::TempDir dir;
  const std::vector<int64_t> lengths = {300, 0, 4097, 5};
  for (const std::string& spill : {std::string(), dir.dir().string()}) {
    INFO("spill dir '" << spill << "'");
    auto store = ActivationStore::create(lengths, spill);
    REQUIRE(store.ok());
    auto& s = **store;
    CHECK(s.spilled() == !spill.empty());
    REQUIRE(s.size() == lengths.size());
    std::vector<float> buf;
    for (size_t i = 0; i < lengths.size(); ++i) {
      const std::vector<float> v = item_values(i, lengths[i]);
      float* slot = s.slot(i, buf);
      std::copy(v.begin(), v.end(), slot);
      REQUIRE(s.save(i, slot).ok());
    }
    // Overwrite one item through load, as a forward in place does.
    auto third = s.load(2, buf);
    REQUIRE(third.ok());
    for (int64_t k = 0; k < lengths[2]; ++k) (*third)[k] = -(*third)[k];
    REQUIRE(s.save(2, *third).ok());
    for (size_t i = 0; i < lengths.size(); ++i) {
      std::vector<float> want = item_values(i, lengths[i]);
      if (i == 2)
        for (float& x : want) x = -x;
      std::vector<float> other;
      auto got = s.load(i, other);
      REQUIRE(got.ok());
      CHECK(std::vector<float>(*got, *got + lengths[i]) == want);
    }
    // The spill file has no name: the directory stays empty.
    CHECK(std::filesystem::is_empty(dir.dir()));
  }
}

TEST_CASE("activation store: spilled items do not stay in the process's memory", "[calib]") {
  test::TempDir dir;
  constexpr int64_t kItem = int64_t{4} << 20;  // floats: 16 MiB
  auto store = ActivationStore::create(std::vector<int64_t>(8, kItem), dir.dir().string());
  REQUIRE(store.ok());
  std::vector<float> buf(static_cast<size_t>(kItem), 1.0f);
  const int64_t before = test::resident_pages();
  for (size_t i = 0; i < 8; ++i) {
    buf[0] = static_cast<float>(i);
    REQUIRE((*store)->save(i, buf.data()).ok());
  }
  const int64_t grown_mib = (test::resident_pages() - before) * ::sysconf(_SC_PAGESIZE) >> 20;
  CHECK(grown_mib < 16);  // 128 MiB were written
  auto back = (*store)->load(5, buf);
  REQUIRE(back.ok());
  CHECK((*back)[0] == 5.0f);
  CHECK((*back)[kItem - 1] == 1.0f);
}

TEST_CASE("activation store: a spill directory that cannot hold the file is a clear error", "[calib]") {
  test::TempDir dir;
  const std::string missing = dir.path("no-such-dir");
  auto store = ActivationStore::create({100}, missing);
  REQUIRE(!store.ok());
  CHECK(store.error().code == ErrorCode::kIo);
  CHECK(store.error().message.find(missing) != std::string::npos);
  CHECK(!ActivationStore::create({-1}, "").ok());
}
