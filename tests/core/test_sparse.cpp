// Sparse encoding: pattern builders against hand-packed layouts, validation of hostile buffers, .llmc round trips.
#include <catch2/catch.hpp>
#include <cstring>

#include "core/sparse.h"
#include "formats/llmc.h"
#include "formats/model_io.h"
#include "test_util.h"

using namespace llmc;

namespace {

// w[r, c] = (r * cols + c + 1) / 8 with alternating sign: every entry nonzero and distinct.
std::vector<float> test_weights(int64_t rows, int64_t cols) {
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i % 2 ? -1.0f : 1.0f) * static_cast<float>(i + 1) / 8.0f;
  return w;
}

// The reference: w where kept, else 0.
std::vector<float> masked(const std::vector<float>& w, const std::vector<uint8_t>& keep) {
  std::vector<float> out(w.size());
  for (size_t i = 0; i < w.size(); ++i) out[i] = keep[i] ? w[i] : 0.0f;
  return out;
}

Tensor sparse_tensor(const std::string& name, int64_t rows, int64_t cols, SparseEncoding s) {
  return Tensor{name, Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{std::move(s)})};
}

std::vector<float> decode(const Tensor& t) { return t.to_f32(); }

}  // namespace

TEST_CASE("sparse n:m indices are packed as documented", "[sparse]") {
  // 2 rows x 8 columns, 2:4. Row 0 keeps columns 1,3 | 4,6 -> in-group 1,3,0,2; row 1 keeps 0,1 | 6,7 -> 0,1,2,3.
  const int64_t rows = 2, cols = 8;
  std::vector<uint8_t> keep = {0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1};
  auto w = test_weights(rows, cols);
  std::vector<float> kept;
  auto s = sparse_nm_pattern(keep.data(), w.data(), rows, cols, 2, 4, kept);
  REQUIRE(s.ok());
  CHECK(s->kept_stride == 4);
  CHECK(s->nnz == 8);
  // 2 bits per index, LSB first: 1 | 3 << 2 | 0 << 4 | 2 << 6 = 0x8d; 0 | 1 << 2 | 2 << 4 | 3 << 6 = 0xe4.
  REQUIRE(s->index.size() == 2);
  CHECK(s->index.data()[0] == 0x8d);
  CHECK(s->index.data()[1] == 0xe4);
  sparse_set_dense_values(*s, kept, rows, DType::kF32);
  REQUIRE(validate_encoding(Encoding{*s}, Shape{{rows, cols}}).ok());
  CHECK(decode(sparse_tensor("t", rows, cols, *s)) == masked(w, keep));
  CHECK(describe_encoding(Encoding{*s}) == "2:4 of f32");
  CHECK(std::string(encoding_kind_name(Encoding{*s})) == "sparse");
  CHECK(encoded_bytes(Encoding{*s}) == 2 + 8 * 4);
  CHECK(test::visited_buffer_bytes(Encoding{*s}) == encoded_bytes(Encoding{*s}));  // for_each_buffer sees every buffer
}

TEST_CASE("sparse n:m with a ragged tail and wide indices", "[sparse]") {
  // 3:8 on 12 columns: one full group keeps 3, the tail of 4 keeps 3; 3 bits per index.
  const int64_t rows = 3, cols = 12;
  std::vector<uint8_t> keep(rows * cols, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j : {0, 5, 7}) keep[r * cols + (j + r) % 8] = 1;
    for (int64_t j : {8, 9, 11}) keep[r * cols + j] = 1;
  }
  auto w = test_weights(rows, cols);
  std::vector<float> kept;
  auto s = sparse_nm_pattern(keep.data(), w.data(), rows, cols, 3, 8, kept);
  REQUIRE(s.ok());
  CHECK(s->kept_stride == 6);
  CHECK(sparse_nm_index_stride(3, 8, cols) == 3);  // 6 * 3 bits = 18 bits
  sparse_set_dense_values(*s, kept, rows, DType::kF32);
  REQUIRE(validate_encoding(Encoding{*s}, Shape{{rows, cols}}).ok());
  CHECK(decode(sparse_tensor("t", rows, cols, *s)) == masked(w, keep));
  // Exactly n kept per group: one more in a group is refused.
  keep[1] = keep[2] = keep[3] = 1;
  auto bad = sparse_nm_pattern(keep.data(), w.data(), rows, cols, 3, 8, kept);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == ErrorCode::kInvalidArgument);
}

TEST_CASE("sparse n:m pattern checks", "[sparse]") {
  CHECK(check_nm_pattern(2, 4, 8).ok());
  CHECK(check_nm_pattern(15, 16, 16).ok());
  CHECK(check_nm_pattern(4, 4, 8).error().code == ErrorCode::kInvalidArgument);
  CHECK(check_nm_pattern(5, 4, 8).error().code == ErrorCode::kInvalidArgument);
  CHECK(check_nm_pattern(0, 4, 8).error().code == ErrorCode::kInvalidArgument);
  CHECK(check_nm_pattern(2, 32, 64).error().code == ErrorCode::kInvalidArgument);
  CHECK(check_nm_pattern(2, 8, 6).error().code == ErrorCode::kInvalidArgument);
  CHECK(sparse_nm_index_bits(4) == 2);
  CHECK(sparse_nm_index_bits(5) == 3);
  CHECK(sparse_nm_index_bits(16) == 4);
}

TEST_CASE("sparse unstructured picks the bitmask or CSR, whichever is smaller", "[sparse]") {
  const int64_t rows = 4, cols = 64;
  auto w = test_weights(rows, cols);
  std::vector<float> kept;
  // Half kept: bitmask (8 bytes a row) beats CSR (2 bytes an entry).
  std::vector<uint8_t> half(rows * cols);
  for (size_t i = 0; i < half.size(); ++i) half[i] = (i * 7) % 3 != 0;
  SparseEncoding a = sparse_unstructured_pattern(half.data(), w.data(), rows, cols, kept);
  CHECK(a.pattern == SparsePattern::kBitmask);
  CHECK(a.index.size() == rows * 8);
  sparse_set_dense_values(a, kept, rows, DType::kF32);
  REQUIRE(validate_encoding(Encoding{a}, Shape{{rows, cols}}).ok());
  CHECK(decode(sparse_tensor("t", rows, cols, a)) == masked(w, half));
  // Bit c % 8 of byte c / 8: row 0 keeps column c unless 7c % 3 == 0 (c % 3 == 0): byte 0 = 0b10110110.
  CHECK(a.index.data()[0] == 0xb6);
  // Two per row of 256, row 3 keeps one: CSR (5 * 4 + 7 * 2 = 34 bytes) beats the mask (4 * 32 bytes).
  const int64_t wide = 256;
  auto w2 = test_weights(rows, wide);
  std::vector<uint8_t> few(rows * wide, 0);
  few[3] = few[40] = few[256 + 0] = few[256 + 63] = few[512 + 10] = few[512 + 11] = few[768 + 5] = 1;
  SparseEncoding b = sparse_unstructured_pattern(few.data(), w2.data(), rows, wide, kept);
  CHECK(b.pattern == SparsePattern::kCsr);
  CHECK(b.nnz == 7);
  CHECK(b.kept_stride == 2);
  CHECK(b.row_ptr.size() == 5 * 4);
  CHECK(b.index.size() == 7 * 2);
  uint16_t col = 0;
  std::memcpy(&col, b.index.data() + 3 * 2, 2);
  CHECK(col == 63);
  sparse_set_dense_values(b, kept, rows, DType::kF16);
  REQUIRE(validate_encoding(Encoding{b}, Shape{{rows, wide}}).ok());
  auto expect = masked(w2, few);
  for (auto& v : expect) v = f16_to_f32(f32_to_f16(v));
  CHECK(decode(sparse_tensor("t", rows, wide, b)) == expect);
  CHECK(describe_encoding(Encoding{b}) == "csr of f16");
}

TEST_CASE("sparse validation refuses hostile buffers", "[sparse]") {
  const int64_t rows = 2, cols = 8;
  const Shape shape{{rows, cols}};
  auto w = test_weights(rows, cols);
  std::vector<float> kept;
  std::vector<uint8_t> keep = {0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1};
  auto nm = sparse_nm_pattern(keep.data(), w.data(), rows, cols, 2, 4, kept);
  REQUIRE(nm.ok());
  sparse_set_dense_values(*nm, kept, rows, DType::kF32);
  SparseEncoding bm = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
  sparse_set_dense_values(bm, kept, rows, DType::kF32);
  auto fails = [&](const SparseEncoding& s, const char* what) {
    auto r = validate_encoding(Encoding{s}, shape);
    INFO(what);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kFormat);
  };
  auto with_index = [](SparseEncoding s, std::vector<uint8_t> idx) {
    s.index = Bytes::owned(std::move(idx));
    return s;
  };
  fails(with_index(*nm, {0x8d}), "short n:m index");
  fails(with_index(*nm, {0x87, 0xe4}), "n:m indices not increasing (3 then 1)");
  {
    SparseEncoding s = *nm;
    s.m = 2;
    fails(s, "n = m");
    s = *nm;
    s.kept_stride = 3;
    fails(s, "kept_stride");
    s = *nm;
    s.values.reset();
    fails(s, "no values");
    s = *nm;
    s.values = std::make_shared<Encoding>(Encoding{bm});
    fails(s, "sparse values");
  }
  fails(with_index(bm, {0xff, 0xff}), "bitmask keeps more than kept_stride");
  fails(with_index(bm, {0x5a}), "bitmask short");
  {
    SparseEncoding s = bm;
    s.nnz = 5;
    fails(s, "nnz");
  }
  // CSR: hand-made row pointers.
  SparseEncoding csr;
  csr.pattern = SparsePattern::kCsr;
  csr.kept_stride = 2;
  csr.nnz = 3;
  csr.values = bm.values;
  auto set_csr = [&](std::vector<uint32_t> ptr, std::vector<uint16_t> idx) {
    SparseEncoding s = csr;
    s.row_ptr = Bytes::from_vector(ptr);
    s.index = Bytes::from_vector(idx);
    return s;
  };
  csr.values = std::make_shared<Encoding>(Encoding{DenseEncoding{DType::kF32, Bytes::from_vector(kept)}});
  csr.kept_stride = bm.kept_stride;
  REQUIRE(validate_encoding(Encoding{set_csr({0, 2, 3}, {1, 5, 7})}, shape).ok());
  fails(set_csr({0, 2, 3}, {5, 1, 7}), "csr columns not increasing");
  fails(set_csr({0, 2, 3}, {1, 5, 8}), "csr column out of range");
  fails(set_csr({1, 2, 3}, {1, 5, 7}), "csr row_ptr[0]");
  fails(set_csr({0, 3, 2}, {1, 5, 7}), "csr row_ptr decreasing");
  fails(set_csr({0, 2, 3, 3}, {1, 5, 7}), "csr row_ptr size");
  fails(set_csr({0, 2, 3}, {1, 5}), "csr index size");
}

TEST_CASE("sparse tensors round trip through .llmc exactly", "[sparse][llmc]") {
  Model m;
  m.config.dim = 8;
  std::vector<std::vector<float>> expected;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, SparseEncoding s) {
    Tensor t = sparse_tensor(name, rows, cols, std::move(s));
    expected.push_back(decode(t));
    REQUIRE(m.add(std::move(t)).ok());
  };
  // 2:4 f16 values, 4:8 bf16 with a ragged tail, bitmask f32, CSR f32.
  {
    const int64_t rows = 5, cols = 20;
    auto w = test_weights(rows, cols);
    std::vector<uint8_t> keep(rows * cols, 0);
    // Group g of row r keeps (r + g) % 4 and (r + g + 1 + g % 2) % 4: two distinct columns.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < cols / 4; ++g) {
        keep[r * cols + g * 4 + (r + g) % 4] = 1;
        keep[r * cols + g * 4 + (r + g + 1 + g % 2) % 4] = 1;
      }
    std::vector<float> kept;
    auto s = sparse_nm_pattern(keep.data(), w.data(), rows, cols, 2, 4, kept);
    REQUIRE(s.ok());
    sparse_set_dense_values(*s, kept, rows, DType::kF16);
    add("nm24.f16", rows, cols, *s);
  }
  {
    const int64_t rows = 3, cols = 172;  // stories260K's FFN width: 21 groups of 8 and a tail of 4
    auto w = test_weights(rows, cols);
    std::vector<uint8_t> keep(rows * cols, 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) keep[r * cols + c] = (c % 8 + r) % 8 < 4;
    for (int64_t r = 0; r < rows; ++r)  // the tail (columns 168..171) keeps all 4
      for (int64_t c = 168; c < cols; ++c) keep[r * cols + c] = 1;
    std::vector<float> kept;
    auto s = sparse_nm_pattern(keep.data(), w.data(), rows, cols, 4, 8, kept);
    REQUIRE(s.ok());
    sparse_set_dense_values(*s, kept, rows, DType::kBF16);
    add("nm48.bf16", rows, cols, *s);
  }
  {
    const int64_t rows = 6, cols = 33;
    auto w = test_weights(rows, cols);
    std::vector<uint8_t> keep(rows * cols);
    for (size_t i = 0; i < keep.size(); ++i) keep[i] = (i * 13) % 5 < 2;
    std::vector<float> kept;
    SparseEncoding s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
    REQUIRE(s.pattern == SparsePattern::kBitmask);
    sparse_set_dense_values(s, kept, rows, DType::kF32);
    add("bitmask.f32", rows, cols, s);
    // The same pattern with Quant values: q8 symmetric, one f32 scale per row (hand-packed codes).
    SparseEncoding sq = s;
    QuantEncoding q;
    q.bits = 8;
    q.scheme = QuantScheme::kSymmetric;
    q.group_size = 0;
    q.scale_dtype = DType::kF32;
    std::vector<uint8_t> codes(static_cast<size_t>(rows * s.kept_stride));
    for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(i * 37 + 5);
    std::vector<float> scales(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) scales[r] = 0.25f * static_cast<float>(r + 1);
    q.codes = Bytes::owned(codes);
    q.scales = Bytes::from_vector(scales);
    sq.values = std::make_shared<Encoding>(Encoding{q});
    add("bitmask.q8", rows, cols, sq);
    // Spot check of the composition against the formula (q - 128) * scale.
    const auto& got = expected.back();
    std::vector<int32_t> where(static_cast<size_t>(s.kept_stride));
    REQUIRE(sparse_row_columns(s, cols, 2, where.data()) > 0);
    CHECK(got[2 * cols + where[0]] == static_cast<float>(static_cast<int>(codes[2 * s.kept_stride]) - 128) * 0.75f);
  }
  {
    const int64_t rows = 4, cols = 300;
    auto w = test_weights(rows, cols);
    std::vector<uint8_t> keep(rows * cols, 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = r; c < cols; c += 37) keep[r * cols + c] = 1;
    std::vector<float> kept;
    SparseEncoding s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
    REQUIRE(s.pattern == SparsePattern::kCsr);
    sparse_set_dense_values(s, kept, rows, DType::kF32);
    add("csr.f32", rows, cols, s);
  }
  test::TempDir dir;
  for (int level : {0, 3}) {
    const std::string path = dir.path("sparse" + std::to_string(level) + ".llmc");
    LlmcWriteOptions opts;
    opts.zstd_level = level;
    REQUIRE(write_llmc(m, path, opts).ok());
    auto back = read_llmc(path);
    REQUIRE(back.ok());
    test::require_same_tensors(m, *back);
    for (size_t i = 0; i < expected.size(); ++i) {
      const Tensor& t = back->tensors()[i];
      CHECK(std::string(encoding_kind_name(*t.encoding)) == "sparse");
      CHECK(t.to_f32() == expected[i]);
      CHECK(t.encoded_bytes() == m.tensors()[i].encoded_bytes());
    }
  }
}

TEST_CASE("sparse .llmc: every damaged section byte loads or fails cleanly without checksums", "[sparse][llmc]") {
  // One 2:4 tensor with bf16 values and one CSR tensor; flip each byte after the header in turn and
  // parse with checksum verification off, so the damage reaches validate_encoding.
  Model m;
  m.config.dim = 8;
  const int64_t rows = 3, cols = 16;
  auto w = test_weights(rows, cols);
  std::vector<uint8_t> keep(rows * cols, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < cols / 4; ++g)
      keep[r * cols + g * 4 + (r + g) % 4] = keep[r * cols + g * 4 + (r + g + 1) % 4] = 1;
  std::vector<float> kept;
  auto nm = sparse_nm_pattern(keep.data(), w.data(), rows, cols, 2, 4, kept);
  REQUIRE(nm.ok());
  sparse_set_dense_values(*nm, kept, rows, DType::kBF16);
  REQUIRE(m.add(sparse_tensor("nm", rows, cols, *nm)).ok());
  std::vector<uint8_t> few(static_cast<size_t>(rows * 300), 0);
  few[7] = few[300 + 299] = few[600 + 1] = few[600 + 2] = 1;
  auto w2 = test_weights(rows, 300);
  SparseEncoding csr = sparse_unstructured_pattern(few.data(), w2.data(), rows, 300, kept);
  REQUIRE(csr.pattern == SparsePattern::kCsr);
  sparse_set_dense_values(csr, kept, rows, DType::kF32);
  REQUIRE(m.add(sparse_tensor("csr", rows, 300, csr)).ok());
  test::TempDir dir;
  REQUIRE(write_llmc(m, dir.path("s.llmc"), {}).ok());
  const auto bytes = test::read_file_bytes(dir.path("s.llmc"));
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data() + 16, 8);
  LlmcReadOptions no_checksums;
  no_checksums.verify_checksums = false;
  int rejected = 0;
  for (size_t i = 64 + header_size; i < bytes.size(); ++i) {
    auto copy = std::make_shared<std::vector<unsigned char>>(bytes);
    (*copy)[i] ^= 0x5a;
    auto r = parse_llmc("damaged.llmc", copy, copy->data(), copy->size(), no_checksums);
    if (!r.ok()) {
      CHECK(r.error().code == ErrorCode::kFormat);
      ++rejected;
    }
  }
  CHECK(rejected > 0);  // index and row-pointer damage is caught by validation
}
