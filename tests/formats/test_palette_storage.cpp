// Palette encodings in storage: every width and granularity, outliers and Palette values of Sparse
// tensors round-trip through .llmc with identical bytes and decode; hostile Palette nodes are
// refused with clear errors, and damaged headers never crash the reader.
#include <xxhash.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "core/palette.h"
#include "core/palette_test_util.h"
#include "core/sparse.h"
#include "formats/llmc.h"
#include "formats/llmc_generated.h"
#include "formats/model_io.h"
#include "test_util.h"

using namespace llmc;

namespace {

using ByteVec = std::vector<unsigned char>;

PaletteEncoding random_palette(int bits, int64_t group_rows, int64_t rows, int64_t cols, bool outliers, uint32_t seed) {
  return test::random_palette_encoding(bits, group_rows, rows, cols, outliers, seed);
}

Model palette_model() {
  Model m;
  m.config.family = ModelFamily::kLlama;
  int i = 0;
  auto add = [&](const Shape& shape, Encoding e) {
    REQUIRE(m.add(Tensor{str_cat("t", i++), shape, std::make_shared<const Encoding>(std::move(e))}).ok());
  };
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t group_rows : {int64_t{0}, int64_t{1}, int64_t{4}})
      add(Shape{{9, 172}}, Encoding{random_palette(bits, group_rows, 9, 172, bits % 3 == 0, bits * 10 + group_rows)});
  // Pruned then shared: Sparse (csr and 2:4) with Palette values that have outliers themselves.
  std::mt19937 rng(3);
  std::vector<uint8_t> keep(9 * 40);
  std::vector<float> w(keep.size(), 0.0f), kept;
  for (auto& k : keep) k = rng() % 4 == 0;
  SparseEncoding csr = sparse_unstructured_pattern(keep.data(), w.data(), 9, 40, kept);
  csr.values = std::make_shared<const Encoding>(Encoding{random_palette(3, 2, 9, csr.kept_stride, true, 5)});
  add(Shape{{9, 40}}, Encoding{csr});
  for (size_t j = 0; j < keep.size(); ++j) keep[j] = j % 4 < 2;
  auto nm = sparse_nm_pattern(keep.data(), w.data(), 9, 40, 2, 4, kept);
  REQUIRE(nm.ok());
  nm->values = std::make_shared<const Encoding>(Encoding{random_palette(4, 1, 9, nm->kept_stride, false, 6)});
  add(Shape{{9, 40}}, Encoding{*nm});
  return m;
}

bool same_bytes(const Bytes& a, const Bytes& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

void require_same_palette(const PaletteEncoding& a, const PaletteEncoding& b) {
  CHECK(a.bits == b.bits);
  CHECK(a.group_rows == b.group_rows);
  CHECK(same_bytes(a.codebooks, b.codebooks));
  CHECK(same_bytes(a.indices, b.indices));
  REQUIRE((a.outliers == nullptr) == (b.outliers == nullptr));
  if (!a.outliers) return;
  const auto& sa = std::get<SparseEncoding>(a.outliers->node);
  const auto& sb = std::get<SparseEncoding>(b.outliers->node);
  CHECK(sa.nnz == sb.nnz);
  CHECK(same_bytes(sa.index, sb.index));
  CHECK(same_bytes(sa.row_ptr, sb.row_ptr));
  CHECK(same_bytes(std::get<DenseEncoding>(sa.values->node).data, std::get<DenseEncoding>(sb.values->node).data));
}

Result<LlmcFile> parse_bytes(const ByteVec& bytes) {
  auto copy = std::make_shared<ByteVec>(bytes);
  return parse_llmc("mem.llmc", copy, copy->data(), copy->size(), LlmcReadOptions{});
}

uint64_t get_u64(const ByteVec& f, size_t at) {
  uint64_t v;
  std::memcpy(&v, f.data() + at, 8);
  return v;
}
void put_u64(ByteVec& f, size_t at, uint64_t v) { std::memcpy(f.data() + at, &v, 8); }

// A hand-made file with one [rows, cols] Palette tensor, so each field can be made hostile.
struct HostilePalette {
  int64_t rows = 4, cols = 10;
  uint8_t bits = 4;
  int64_t group_rows = 2;
  int64_t codebook_bytes = 2 * 16 * 2;  // 2 codebooks of 16 f16
  int64_t index_bytes = 4 * 5;
  enum class Outliers { kNone, kCsr, kDense, kQuantValues } outliers = Outliers::kNone;
  int64_t outlier_nnz = 2;
};

ByteVec build_hostile(const HostilePalette& s) {
  std::vector<ByteVec> payloads = {ByteVec(static_cast<size_t>(s.codebook_bytes), 0),
                                   ByteVec(static_cast<size_t>(s.index_bytes), 0)};
  if (s.outliers != HostilePalette::Outliers::kNone) {
    payloads.push_back(ByteVec(8, 0));  // row_ptr {0, nnz}
    std::memcpy(payloads.back().data() + 4, &s.outlier_nnz, 4);
    ByteVec pos(static_cast<size_t>(2 * s.outlier_nnz));  // u16 positions 0, 1, ...
    for (int64_t i = 0; i < s.outlier_nnz; ++i) pos[2 * i] = static_cast<unsigned char>(i);
    payloads.push_back(pos);
    payloads.push_back(ByteVec(static_cast<size_t>(2 * s.outlier_nnz), 0));  // f16 values
  }
  auto build = [&](const std::vector<uint64_t>& offsets) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.ForceDefaults(true);
    auto config = fb::CreateConfigDirect(fbb, "llama", 4);
    flatbuffers::Offset<fb::Encoding> outliers;
    using O = HostilePalette::Outliers;
    if (s.outliers == O::kDense) {
      outliers = fb::CreateEncoding(fbb, fb::Node::DenseNode, fb::CreateDenseNode(fbb, fb::DType::F16, 4).Union());
    } else if (s.outliers != O::kNone) {
      auto values =
          s.outliers == O::kQuantValues
              ? fb::CreateEncoding(fbb, fb::Node::QuantNode, fb::CreateQuantNode(fbb, 8).Union())
              : fb::CreateEncoding(fbb, fb::Node::DenseNode, fb::CreateDenseNode(fbb, fb::DType::F16, 4).Union());
      auto node = fb::CreateSparseNode(fbb, fb::SparsePattern::Csr, 0, 0, s.outlier_nnz, s.outlier_nnz, 3, 2, values);
      outliers = fb::CreateEncoding(fbb, fb::Node::SparseNode, node.Union());
    }
    auto node = fb::CreatePaletteNode(fbb, s.bits, s.group_rows, 0, 1, outliers);
    auto enc = fb::CreateEncoding(fbb, fb::Node::PaletteNode, node.Union());
    const std::vector<int64_t> shape = {s.rows, s.cols};
    std::vector<flatbuffers::Offset<fb::TensorEntry>> entries = {fb::CreateTensorEntryDirect(fbb, "t", &shape, enc)};
    std::vector<flatbuffers::Offset<fb::Section>> secs;
    for (size_t i = 0; i < payloads.size(); ++i)
      secs.push_back(fb::CreateSection(fbb, offsets[i], payloads[i].size(), payloads[i].size(), fb::Compression::None,
                                       XXH64(payloads[i].data(), payloads[i].size(), 0)));
    auto header = fb::CreateHeader(fbb, config, 0, fbb.CreateVector(entries), fbb.CreateVector(secs));
    fb::FinishHeaderBuffer(fbb, header);
    return ByteVec(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  auto layout = [&](uint64_t header_size) {
    std::vector<uint64_t> offsets;
    uint64_t pos = (64 + header_size + 63) / 64 * 64;
    for (const ByteVec& p : payloads) {
      offsets.push_back(pos);
      pos = (pos + p.size() + 63) / 64 * 64;
    }
    return offsets;
  };
  ByteVec header = build(layout(0));
  const std::vector<uint64_t> offsets = layout(header.size());
  header = build(offsets);
  ByteVec f(offsets[0], 0);
  std::memcpy(f.data(), "LLMC\r\n\x1a\n", 8);
  const uint32_t version = 1;
  std::memcpy(f.data() + 8, &version, 4);
  put_u64(f, 16, header.size());
  put_u64(f, 24, XXH64(header.data(), header.size(), 0));
  std::memcpy(f.data() + 64, header.data(), header.size());
  for (size_t i = 0; i < payloads.size(); ++i) {
    f.resize(offsets[i], 0);
    f.insert(f.end(), payloads[i].begin(), payloads[i].end());
  }
  put_u64(f, 32, f.size());
  return f;
}

}  // namespace

TEST_CASE("every Palette encoding round-trips through .llmc", "[palette][llmc]") {
  const Model m = palette_model();
  test::TempDir dir;
  for (int zstd : {0, 3}) {
    const std::string path = dir.path(zstd ? "p_zstd.llmc" : "p_raw.llmc");
    LlmcWriteOptions options;
    options.zstd_level = zstd;
    REQUIRE(write_llmc(m, path, options).ok());
    auto loaded = read_llmc(path);
    REQUIRE(loaded.ok());
    test::require_same_tensors(m, *loaded);
    for (size_t i = 0; i < m.tensors().size(); ++i) {
      const Encoding& a = *m.tensors()[i].encoding;
      const Encoding& b = *loaded->tensors()[i].encoding;
      INFO(describe_encoding(a));
      CHECK(describe_encoding(a) == describe_encoding(b));
      CHECK(encoded_bytes(a) == encoded_bytes(b));
      if (const auto* sa = std::get_if<SparseEncoding>(&a.node))
        require_same_palette(std::get<PaletteEncoding>(sa->values->node),
                             std::get<PaletteEncoding>(std::get<SparseEncoding>(b.node).values->node));
      else
        require_same_palette(std::get<PaletteEncoding>(a.node), std::get<PaletteEncoding>(b.node));
    }
  }
}

TEST_CASE("llmc reader refuses hostile Palette nodes", "[palette][llmc]") {
  REQUIRE(parse_bytes(build_hostile({})).ok());
  using O = HostilePalette::Outliers;
  HostilePalette with_outliers;
  with_outliers.outliers = O::kCsr;
  auto ok = parse_bytes(build_hostile(with_outliers));
  INFO((ok.ok() ? "" : ok.error().message));
  REQUIRE(ok.ok());
  CHECK(palette_outlier_count(std::get<PaletteEncoding>(ok->model.tensors()[0].encoding->node)) == 2);
  struct Case {
    const char* what;
    HostilePalette spec;
    const char* message;
  };
  auto spec = [](auto edit) {
    HostilePalette s;
    edit(s);
    return s;
  };
  const Case kCases[] = {
      {"bits 0", spec([](HostilePalette& s) { s.bits = 0; }), "palette index bits 0"},
      {"bits 9", spec([](HostilePalette& s) { s.bits = 9; }), "palette index bits 9"},
      {"negative group_rows", spec([](HostilePalette& s) { s.group_rows = -3; }), "negative palette group_rows"},
      {"codebooks short", spec([](HostilePalette& s) { s.codebook_bytes = 32; }), "palette codebooks section"},
      {"codebooks for another granularity", spec([](HostilePalette& s) { s.group_rows = 1; }),
       "palette codebooks section"},
      {"indices short", spec([](HostilePalette& s) { s.index_bytes = 19; }), "palette indices section"},
      {"outliers dense", spec([](HostilePalette& s) { s.outliers = O::kDense; }), "sparse node with dense values"},
      {"outliers quant values", spec([](HostilePalette& s) { s.outliers = O::kQuantValues; }),
       "sparse node with dense values"},
      {"outliers past the tensor", spec([](HostilePalette& s) {
         s.outliers = O::kCsr;
         s.outlier_nnz = 41;
       }),
       "kept_stride"},
  };
  for (const auto& c : kCases) {
    INFO(c.what);
    auto r = parse_bytes(build_hostile(c.spec));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kFormat);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
  }
}

TEST_CASE("llmc reader survives damaged Palette headers", "[palette][llmc]") {
  Model m;
  m.config.family = ModelFamily::kLlama;
  REQUIRE(m.add(Tensor{"p", Shape{{6, 20}},
                       std::make_shared<const Encoding>(Encoding{random_palette(3, 2, 6, 20, true, 9)})})
              .ok());
  test::TempDir tmp;
  REQUIRE(write_llmc(m, tmp.path("m.llmc"), {}).ok());
  const ByteVec full = test::read_file_bytes(tmp.path("m.llmc"));
  const size_t hsize = get_u64(full, 16);
  size_t errors = 0;
  for (size_t i = 64; i < 64 + hsize; ++i)
    for (unsigned char x : {0x01, 0x80, 0xff}) {
      ByteVec f = full;
      f[i] ^= x;
      put_u64(f, 24, XXH64(f.data() + 64, hsize, 0));
      auto r = parse_bytes(f);
      if (!r.ok()) {
        ++errors;
      } else {
        for (const Tensor& t : r->model.tensors()) (void)t.to_f32();
      }
    }
  CHECK(errors > hsize);
}
