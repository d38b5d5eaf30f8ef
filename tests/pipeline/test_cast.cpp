// cast_model's q8_0/q4_0 Quant tensors hold exactly the values of GGUF Q8_0/Q4_0 blocks (whose
// decoders are checked against the gguf package in tests/formats/test_gguf_peer.cpp).
#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "formats/file_io.h"
#include "formats/gguf_quants.h"
#include "formats/scratch_file.h"
#include "pipeline/cast.h"
#include "test_util.h"

using namespace llmc;

TEST_CASE("cast to q8_0/q4_0 matches GGUF block values — ragged rows fall back to f16", "[cast]") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t rows = 3, cols = 96;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = normal(rng);
  w[5] = 0.4f;  // an outlier sets one block's scale
  for (auto [dtype, type] : {std::pair{ExportDType::kQ8_0, GgmlType::kQ8_0}, {ExportDType::kQ4_0, GgmlType::kQ4_0}}) {
    Model m;
    REQUIRE(m.add(make_dense_f32("blk.0.ffn_up.weight", Shape{{rows, cols}}, w)).ok());
    REQUIRE(m.add(make_dense_f32("blk.0.ffn_down.weight", Shape{{2, 172}}, std::vector<float>(344, 0.25f))).ok());
    REQUIRE(m.add(make_dense_f32("blk.0.ffn_norm.weight", Shape{{cols}}, std::vector<float>(96, 1.0f))).ok());
    cast_model(m, dtype);
    const Tensor& t = m.get("blk.0.ffn_up.weight");
    const auto* q = std::get_if<QuantEncoding>(&t.encoding->node);
    REQUIRE(q != nullptr);
    CHECK(q->bits == (dtype == ExportDType::kQ8_0 ? 8 : 4));
    const GgmlTypeInfo& info = ggml_type_info(type);
    std::vector<uint8_t> blocks(static_cast<size_t>(cols / 32 * info.type_size));
    std::vector<float> expected(static_cast<size_t>(cols));
    const auto got = t.to_f32();
    for (int64_t r = 0; r < rows; ++r) {
      if (type == GgmlType::kQ8_0)
        quantize_q8_0(w.data() + r * cols, cols, blocks.data());
      else
        quantize_q4_0(w.data() + r * cols, cols, blocks.data());
      info.dequant(blocks.data(), cols / 32, expected.data());
      REQUIRE(std::memcmp(expected.data(), got.data() + r * cols, sizeof(float) * cols) == 0);
    }
    CHECK(describe_encoding(*m.get("blk.0.ffn_down.weight").encoding) == "f16");
    CHECK(describe_encoding(*m.get("blk.0.ffn_norm.weight").encoding) == "f32");
  }
}

TEST_CASE("cast with a scratch file: the same tensors, their bytes in the file", "[cast]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(300 * 96));
  for (auto& v : w) v = normal(rng);
  llmc::test::TempDir dir;
  auto scratch = ScratchFile::create(dir.path(""));
  REQUIRE(scratch.ok());
  for (ExportDType dtype : {ExportDType::kQ8_0, ExportDType::kQ4_0, ExportDType::kF16, ExportDType::kBF16}) {
    INFO(export_dtype_name(dtype));
    auto build = [&] {
      Model m;
      REQUIRE(m.add(make_dense_f32("blk.0.ffn_up.weight", Shape{{300, 96}}, w)).ok());
      REQUIRE(m.add(make_dense_f32("blk.0.ffn_down.weight", Shape{{2, 172}}, std::vector<float>(344, 0.25f))).ok());
      REQUIRE(m.add(make_dense("blk.0.ffn_norm.weight", Shape{{96}}, std::vector<float>(96, 1.5f), DType::kF16)).ok());
      return m;
    };
    Model heap = build(), lean = build();
    cast_model(heap, dtype);
    cast_model(lean, dtype, scratch->get());
    llmc::test::require_same_tensors(heap, lean);
    for (const Tensor& t : lean.tensors()) {
      INFO(t.name);
      CHECK(describe_encoding(*t.encoding) == describe_encoding(*heap.get(t.name).encoding));
      for_each_buffer(*t.encoding, [](const Bytes& b) { CHECK(is_file_backed(b.data(), b.size())); });
    }
  }
}
