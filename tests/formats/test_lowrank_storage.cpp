// LowRank and Tucker nodes in .llmc: exact round trips (Dense and Quant parts, raw and zstd), inspect and
// export of decomposed tensors, and hostile headers (ranks, part shapes, nesting, folds) refused before
// any section is read.
#include <xxhash.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "core/lowrank.h"
#include "formats/llmc.h"
#include "formats/llmc_generated.h"
#include "formats/model_io.h"
#include "passes/quant/quant_math.h"
#include "test_util.h"

using namespace llmc;

namespace {

using ByteVec = std::vector<unsigned char>;

std::vector<float> normal_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

EncodingPtr quant_part(int64_t rows, int64_t cols, uint32_t seed) {
  QuantSpec spec;
  spec.bits = 4;
  spec.group_size = 32;
  return std::make_shared<const Encoding>(
      Encoding{quantize_rtn(spec, normal_values(rows * cols, seed), rows, cols, {}, ScaleSearch{}, nullptr)});
}

// Tensors of every decomposition layout: LowRank over f16/f32/bf16 and Quant parts, Tucker 3- and
// 4-way with row_modes 1 and 2, Quant core.
Model decomposed_model() {
  Model m;
  m.config.family = ModelFamily::kLlama;
  auto add = [&](const std::string& name, Shape shape, Encoding enc) {
    REQUIRE(validate_encoding(enc, shape).ok());
    REQUIRE(m.add(Tensor{name, shape, std::make_shared<const Encoding>(std::move(enc))}).ok());
  };
  add("lr.f16", Shape{{48, 40}},
      Encoding{make_lowrank_dense(normal_values(48 * 8, 1), normal_values(8 * 40, 2), 48, 8, 40, DType::kF16)});
  add("lr.bf16", Shape{{30, 70}},
      Encoding{make_lowrank_dense(normal_values(30 * 5, 3), normal_values(5 * 70, 4), 30, 5, 70, DType::kBF16)});
  LowRankEncoding q;
  q.rank = 12;
  q.u = quant_part(64, 12, 5);
  q.v = quant_part(12, 172, 6);
  add("lr.quant", Shape{{64, 172}}, Encoding{q});
  add("tucker.vocab", Shape{{12 * 16, 24}},
      Encoding{make_tucker_dense({12, 16, 24}, 2, {4, 5, 6}, normal_values(4 * 5 * 6, 7),
                                 {normal_values(12 * 4, 8), normal_values(16 * 5, 9), normal_values(6 * 24, 10)},
                                 DType::kF32)});
  TuckerEncoding t =
      make_tucker_dense({20, 4, 6}, 1, {5, 3, 4}, normal_values(5 * 12, 11),
                        {normal_values(20 * 5, 12), normal_values(3 * 4, 13), normal_values(4 * 6, 14)}, DType::kF16);
  t.core = quant_part(5, 12, 15);
  add("tucker.heads", Shape{{20, 24}}, Encoding{t});
  add("tucker.4way", Shape{{6 * 8, 4 * 5}},
      Encoding{make_tucker_dense(
          {6, 8, 4, 5}, 2, {3, 4, 2, 3}, normal_values(3 * 4 * 2 * 3, 16),
          {normal_values(6 * 3, 17), normal_values(8 * 4, 18), normal_values(2 * 4, 19), normal_values(3 * 5, 20)},
          DType::kBF16)});
  return m;
}

bool same_tree(const Encoding& a, const Encoding& b, const Shape& shape) {
  if (a.node.index() != b.node.index() || describe_encoding(a) != describe_encoding(b)) return false;
  const auto pa = decomposition_parts(a, shape), pb = decomposition_parts(b, shape);
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    const std::vector<float> va = Tensor{"", pa[i].shape, pa[i].encoding}.to_f32();
    const std::vector<float> vb = Tensor{"", pb[i].shape, pb[i].encoding}.to_f32();
    if (pa[i].shape != pb[i].shape || va.size() != vb.size() ||
        std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) != 0)
      return false;
  }
  return true;
}

// A file around a hand-made header holding one tensor "t" of `shape` whose encoding `make_node`
// builds; `sections` are the stored buffers (raw), in order.
template <class MakeNode>
ByteVec build_file(const std::vector<int64_t>& shape, const std::vector<ByteVec>& sections, MakeNode make_node) {
  auto build = [&](uint64_t first_offset, std::vector<uint64_t>& offsets) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.ForceDefaults(true);
    auto config = fb::CreateConfigDirect(fbb, "llama", 4);
    auto enc = make_node(fbb);
    std::vector<flatbuffers::Offset<fb::TensorEntry>> entries = {fb::CreateTensorEntryDirect(fbb, "t", &shape, enc)};
    std::vector<flatbuffers::Offset<fb::Section>> secs;
    uint64_t at = first_offset;
    offsets.clear();
    for (const ByteVec& s : sections) {
      offsets.push_back(at);
      secs.push_back(
          fb::CreateSection(fbb, at, s.size(), s.size(), fb::Compression::None, XXH64(s.data(), s.size(), 0)));
      at = (at + s.size() + 63) / 64 * 64;
    }
    auto header = fb::CreateHeader(fbb, config, 0, fbb.CreateVector(entries), fbb.CreateVector(secs));
    fb::FinishHeaderBuffer(fbb, header);
    return ByteVec(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  std::vector<uint64_t> offsets;
  ByteVec header = build(0, offsets);
  const uint64_t first = (64 + header.size() + 63) / 64 * 64;
  header = build(first, offsets);
  ByteVec f(first, 0);
  std::memcpy(f.data(), "LLMC\r\n\x1a\n", 8);
  const uint32_t version = 1;
  const uint64_t hsize = header.size(), hhash = XXH64(header.data(), header.size(), 0);
  std::memcpy(f.data() + 8, &version, 4);
  std::memcpy(f.data() + 16, &hsize, 8);
  std::memcpy(f.data() + 24, &hhash, 8);
  std::memcpy(f.data() + 64, header.data(), header.size());
  for (size_t i = 0; i < sections.size(); ++i) {
    f.resize(offsets[i], 0);
    f.insert(f.end(), sections[i].begin(), sections[i].end());
  }
  const uint64_t size = f.size();
  std::memcpy(f.data() + 32, &size, 8);
  return f;
}

Result<LlmcFile> parse(const ByteVec& bytes) {
  auto copy = std::make_shared<ByteVec>(bytes);
  return parse_llmc("mem.llmc", copy, copy->data(), copy->size(), LlmcReadOptions{});
}

flatbuffers::Offset<fb::Encoding> dense_node(flatbuffers::FlatBufferBuilder& fbb, uint32_t section) {
  return fb::CreateEncoding(fbb, fb::Node::DenseNode, fb::CreateDenseNode(fbb, fb::DType::F32, section).Union());
}

}  // namespace

TEST_CASE("LowRank and Tucker round-trip through .llmc exactly, raw and zstd", "[lowrank-storage][llmc]") {
  const Model m = decomposed_model();
  test::TempDir dir;
  for (int zstd : {0, 3}) {
    LlmcWriteOptions options;
    options.zstd_level = zstd;
    const std::string path = dir.path(str_cat("d", zstd, ".llmc"));
    REQUIRE(write_llmc(m, path, options).ok());
    auto back = read_llmc(path);
    REQUIRE(back.ok());
    test::require_same_tensors(m, *back);
    for (const Tensor& t : m.tensors()) {
      INFO(t.name);
      CHECK(same_tree(*t.encoding, *back->get(t.name).encoding, t.shape));
      CHECK(back->get(t.name).encoded_bytes() == t.encoded_bytes());
    }
    // Writing what was read gives the same bytes.
    const std::string again = dir.path(str_cat("again", zstd, ".llmc"));
    REQUIRE(write_llmc(*back, again, options).ok());
    CHECK(test::read_file_bytes(again) == test::read_file_bytes(path));
  }
}

TEST_CASE("llmc reader refuses hostile LowRank and Tucker nodes", "[lowrank-storage][llmc]") {
  const std::vector<int64_t> shape = {6, 4};
  auto floats = [](size_t n) { return ByteVec(n * 4, 0); };
  auto lowrank = [&](int64_t rank, size_t u_floats, size_t v_floats, int u_kind) {
    return build_file(shape, {floats(u_floats), floats(v_floats)}, [&](flatbuffers::FlatBufferBuilder& fbb) {
      flatbuffers::Offset<fb::Encoding> u;
      if (u_kind == 1) {  // a decomposition inside a decomposition
        auto inner = fb::CreateLowRankNode(fbb, 1, dense_node(fbb, 0), dense_node(fbb, 1));
        u = fb::CreateEncoding(fbb, fb::Node::LowRankNode, inner.Union());
      } else if (u_kind == 0) {
        u = dense_node(fbb, 0);
      }
      auto node = fb::CreateLowRankNode(fbb, rank, u, dense_node(fbb, 1));
      return fb::CreateEncoding(fbb, fb::Node::LowRankNode, node.Union());
    });
  };
  {
    auto ok = parse(lowrank(2, 12, 8, 0));
    INFO((ok.ok() ? "" : ok.error().message));
    REQUIRE(ok.ok());
    CHECK(std::holds_alternative<LowRankEncoding>(ok->model.get("t").encoding->node));
  }
  auto tucker = [&](std::vector<int64_t> dims, int64_t row_modes, std::vector<int64_t> ranks, size_t factors) {
    std::vector<ByteVec> sections(factors + 1, floats(1));
    return build_file(shape, sections, [&](flatbuffers::FlatBufferBuilder& fbb) {
      std::vector<flatbuffers::Offset<fb::Encoding>> f;
      for (size_t k = 0; k < factors; ++k) f.push_back(dense_node(fbb, static_cast<uint32_t>(k + 1)));
      auto node = fb::CreateTuckerNodeDirect(fbb, &dims, row_modes, &ranks, dense_node(fbb, 0), &f);
      return fb::CreateEncoding(fbb, fb::Node::TuckerNode, node.Union());
    });
  };
  struct Case {
    const char* what;
    ByteVec file;
    const char* message;
  };
  const Case kCases[] = {
      {"rank 0", lowrank(0, 0, 0, 0), "rank 0"},
      {"rank above the smaller dimension", lowrank(5, 30, 20, 0), "rank 5"},
      {"absurd rank", lowrank(int64_t{1} << 40, 12, 8, 0), "rank"},
      {"U section of the wrong size", lowrank(2, 18, 8, 0), "low-rank U data"},
      {"V section of the wrong size", lowrank(2, 12, 9, 0), "low-rank V data"},
      {"U missing", lowrank(2, 12, 8, 2), "low-rank U is missing"},
      {"nested decomposition", lowrank(2, 12, 8, 1), "dense or quant"},
      {"tucker dims do not fold", tucker({2, 4, 4}, 2, {1, 1, 1}, 3), "do not fold"},
      {"tucker rank above its dim", tucker({2, 3, 4}, 2, {3, 1, 1}, 3), "rank 3"},
      {"tucker factor count", tucker({2, 3, 4}, 2, {1, 1, 1}, 2), "factors"},
      {"tucker row_modes", tucker({2, 3, 4}, 3, {1, 1, 1}, 3), "row_modes"},
      {"tucker one mode", tucker({24}, 1, {1}, 1), "modes"},
  };
  for (const Case& c : kCases) {
    INFO(c.what);
    auto r = parse(c.file);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kFormat);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
    CHECK_THAT(r.error().message, Catch::Contains("tensor 't'"));
  }
}

TEST_CASE("decomposed tensors export to GGUF and safetensors as their dense values", "[lowrank-storage][gguf]") {
  test::TempDir dir;
  // The writers need a whole model: take stories260K and decompose two of its weights.
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return;
  LoadOptions lo;
  lo.tokenizer_path = tok;
  auto model = load_model(bin, lo);
  REQUIRE(model.ok());
  const Tensor& up = model->get("blk.0.ffn_up.weight");  // [172, 64]
  const int64_t rows = up.rows(), cols = up.cols(), rank = 16;
  Encoding lr{make_lowrank_dense(normal_values(rows * rank, 30), normal_values(rank * cols, 31), rows, rank, cols,
                                 DType::kF32)};
  model->replace(Tensor{up.name, up.shape, std::make_shared<const Encoding>(lr)});
  const std::vector<float> want = model->get(up.name).to_f32();
  REQUIRE(write_gguf(*model, dir.path("m.gguf"), GgufWriteOptions{}).ok());
  auto g = load_model(dir.path("m.gguf"));
  REQUIRE(g.ok());
  CHECK(g->get(up.name).to_f32() == want);
  REQUIRE(write_safetensors(*model, dir.path("st"), SafetensorsWriteOptions{}).ok());
  auto s = load_model(dir.path("st"));
  REQUIRE(s.ok());
  CHECK(s->get(up.name).to_f32() == want);
}
