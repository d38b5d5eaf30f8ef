// .llmc reader/writer: round trips, zero-copy, determinism, the golden file and hostile input.
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>

#include "core/dtype.h"
#include "core/lowrank.h"
#include "formats/llmc.h"
#include "formats/llmc_generated.h"
#include "formats/model_io.h"
#include "model/arch.h"
#include "test_util.h"

using namespace llmc;

namespace {

using ByteVec = std::vector<unsigned char>;

template <class T>
Bytes bytes_of(const std::vector<T>& v) {
  return Bytes::from_vector(v);
}

// Packs unsigned codes LSB-first, each row starting on a byte boundary (core/encoding.h).
ByteVec pack_codes(const std::vector<uint32_t>& q, int64_t rows, int64_t cols, int bits) {
  const int64_t stride = (cols * bits + 7) / 8;
  ByteVec out(static_cast<size_t>(rows * stride), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      for (int b = 0; b < bits; ++b)
        if (q[r * cols + c] >> b & 1) {
          const int64_t bit = c * bits + b;
          out[r * stride + bit / 8] |= static_cast<unsigned char>(1u << (bit % 8));
        }
  return out;
}

Tensor make_tensor(std::string name, std::vector<int64_t> dims, Encoding enc) {
  return Tensor{std::move(name), Shape{std::move(dims)}, std::make_shared<Encoding>(std::move(enc))};
}

// Expected values of each test tensor, written from the formulas of core/encoding.h.
struct Expected {
  std::string name;
  std::vector<float> values;
};

// A model exercising every encoding the format stores; `expected` gets the reference values.
Model make_test_model(std::vector<Expected>* expected) {
  Model m;
  m.config.family = ModelFamily::kQwen2;
  m.config.dim = 64;
  m.config.hidden_dim = 172;
  m.config.n_layers = 3;
  m.config.n_heads = 8;
  m.config.n_kv_heads = 2;
  m.config.head_dim = 8;
  m.config.vocab_size = 5;
  m.config.context_length = 2048;
  m.config.norm = NormKind::kLayerNorm;
  m.config.norm_eps = 1e-6f;
  m.config.rope_theta = 500000.0f;
  m.config.rope_style = RopeStyle::kNeox;
  m.config.rope_scaling = RopeScaling{RopeScalingType::kLlama3, 8.0f, 1.5f, 3.5f, 4096};
  m.config.activation = Activation::kGelu;
  m.config.tied_embeddings = true;
  m.config.attn_qkv_bias = true;
  m.tokenizer.kind = TokenizerKind::kBytePairGpt2;
  m.tokenizer.tokens = {"<s>", "</s>", "a", std::string("b\0c", 3), "\xc4\xa0the"};
  m.tokenizer.scores = {0.0f, -1.5f, -2.25f, 3.0f, -0.0f};
  m.tokenizer.token_types = {3, 3, 1, 6, 1};
  m.tokenizer.merges = {"a b", "\xc4\xa0 t", "th e"};
  m.tokenizer.pre = "smollm";
  m.tokenizer.bos_id = 0;
  m.tokenizer.eos_id = 1;
  m.tokenizer.unk_id = 2;
  m.tokenizer.pad_id = 4;
  m.tokenizer.add_bos = true;
  m.tokenizer.add_eos = true;
  m.metadata = {{"general.name", "test"}, {"zeta", ""}, {"alpha", "1"}, {"unicode", "\xe2\x82\xac"}};

  auto expect = [&](const std::string& name, std::vector<float> v) {
    if (expected) expected->push_back({name, std::move(v)});
  };

  // Dense f32 [3, 5]: (i - 7) / 4.
  std::vector<float> f32(15);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = (static_cast<float>(i) - 7.0f) / 4.0f;
  REQUIRE(m.add(make_tensor("dense.f32", {3, 5}, Encoding{DenseEncoding{DType::kF32, bytes_of(f32)}})).ok());
  expect("dense.f32", f32);
  // The same bytes again: stored once when deduplicated.
  REQUIRE(m.add(make_tensor("dense.f32.copy", {5, 3}, Encoding{DenseEncoding{DType::kF32, bytes_of(f32)}})).ok());
  expect("dense.f32.copy", f32);

  // Dense f16 [4, 7]: bit patterns 0x3c00 + 3 i  (1.0 + 3 i / 1024).
  std::vector<uint16_t> f16(28);
  std::vector<float> f16_values(28);
  for (size_t i = 0; i < f16.size(); ++i) {
    f16[i] = static_cast<uint16_t>(0x3c00 + 3 * i);
    f16_values[i] = 1.0f + 3.0f * static_cast<float>(i) / 1024.0f;
  }
  REQUIRE(m.add(make_tensor("dense.f16", {4, 7}, Encoding{DenseEncoding{DType::kF16, bytes_of(f16)}})).ok());
  expect("dense.f16", f16_values);

  // Dense bf16 [2, 9]: bit patterns 0xc000 + i  (-(2 + i / 64)).
  std::vector<uint16_t> bf16(18);
  std::vector<float> bf16_values(18);
  for (size_t i = 0; i < bf16.size(); ++i) {
    bf16[i] = static_cast<uint16_t>(0xc000 + i);
    bf16_values[i] = -(2.0f + static_cast<float>(i) / 64.0f);
  }
  REQUIRE(m.add(make_tensor("dense.bf16", {2, 9}, Encoding{DenseEncoding{DType::kBF16, bytes_of(bf16)}})).ok());
  expect("dense.bf16", bf16_values);

  // Dense f32 3-D [2, 3, 4] and an empty [0, 4] tensor.
  std::vector<float> cube(24);
  for (size_t i = 0; i < cube.size(); ++i) cube[i] = static_cast<float>(i * i) * 0.5f;
  REQUIRE(m.add(make_tensor("dense.cube", {2, 3, 4}, Encoding{DenseEncoding{DType::kF32, bytes_of(cube)}})).ok());
  expect("dense.cube", cube);
  REQUIRE(m.add(make_tensor("dense.empty", {0, 4}, Encoding{DenseEncoding{DType::kF32, Bytes()}})).ok());
  expect("dense.empty", {});

  // Quant q4 symmetric [3, 10], group 4 (ragged tail of 2), f16 scales: value (q - 8) * scale.
  {
    const int64_t rows = 3, cols = 10, gpr = 3;
    std::vector<uint32_t> q(rows * cols);
    for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint32_t>((i * 7 + 3) % 16);
    std::vector<uint16_t> scales(rows * gpr);
    std::vector<float> scale_values(rows * gpr);
    for (size_t g = 0; g < scales.size(); ++g) {
      scales[g] = static_cast<uint16_t>(0x3800 + 0x400 * (g % 3));  // 0.5, 1, 2
      scale_values[g] = 0.5f * static_cast<float>(1 << (g % 3));
    }
    std::vector<float> values(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        values[r * cols + c] = (static_cast<float>(q[r * cols + c]) - 8.0f) * scale_values[r * gpr + c / 4];
    QuantEncoding enc{.bits = 4,
                      .scheme = QuantScheme::kSymmetric,
                      .group_size = 4,
                      .scale_dtype = DType::kF16,
                      .codes = Bytes::owned(pack_codes(q, rows, cols, 4)),
                      .scales = bytes_of(scales)};
    REQUIRE(m.add(make_tensor("quant.sym4", {rows, cols}, Encoding{enc})).ok());
    expect("quant.sym4", values);
  }
  // Quant q3 asymmetric [2, 11], group 5 (ragged tail of 1), f32 scales and mins: q * scale + min.
  {
    const int64_t rows = 2, cols = 11, gpr = 3;
    std::vector<uint32_t> q(rows * cols);
    for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint32_t>((i * 5 + 1) % 8);
    std::vector<float> scales(rows * gpr), mins(rows * gpr);
    for (size_t g = 0; g < scales.size(); ++g) {
      scales[g] = 0.25f * static_cast<float>(g + 1);
      mins[g] = -1.0f * static_cast<float>(g);
    }
    std::vector<float> values(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const size_t g = static_cast<size_t>(r * gpr + c / 5);
        values[r * cols + c] = static_cast<float>(q[r * cols + c]) * scales[g] + mins[g];
      }
    QuantEncoding enc{.bits = 3,
                      .scheme = QuantScheme::kAsymmetric,
                      .group_size = 5,
                      .scale_dtype = DType::kF32,
                      .codes = Bytes::owned(pack_codes(q, rows, cols, 3)),
                      .scales = bytes_of(scales),
                      .mins = bytes_of(mins)};
    REQUIRE(m.add(make_tensor("quant.asym3", {rows, cols}, Encoding{enc})).ok());
    expect("quant.asym3", values);
  }
  // Quant q8 symmetric [2, 6], one group per row, bf16 scales 0.125 and 4: value (q - 128) * scale.
  {
    std::vector<uint32_t> q(12);
    for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint32_t>(i * 23 % 256);
    const std::vector<uint16_t> scales = {0x3e00, 0x4080};
    const float scale_values[] = {0.125f, 4.0f};
    std::vector<float> values(12);
    for (size_t i = 0; i < 12; ++i) values[i] = (static_cast<float>(q[i]) - 128.0f) * scale_values[i / 6];
    QuantEncoding enc{.bits = 8,
                      .scheme = QuantScheme::kSymmetric,
                      .group_size = 0,
                      .scale_dtype = DType::kBF16,
                      .codes = Bytes::owned(pack_codes(q, 2, 6, 8)),
                      .scales = bytes_of(scales)};
    REQUIRE(m.add(make_tensor("quant.row8", {2, 6}, Encoding{enc})).ok());
    expect("quant.row8", values);
  }
  return m;
}

LlmcWriteOptions provenance_options(int level) {
  LlmcWriteOptions o;
  o.zstd_level = level;
  o.recipe = "stages:\n  - pass: quant.rtn\n";
  o.command_line = "llmc quantize in.gguf -o out.llmc";
  o.input_path = "in.gguf";
  o.input_xxh64 = 0x0123456789abcdefull;
  return o;
}

bool same_bytes(const Bytes& a, const Bytes& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// Compares every buffer of two encoding trees byte for byte, and their parameters.
void check_same_encoding(const Encoding& a, const Encoding& b) {
  REQUIRE(a.node.index() == b.node.index());
  if (const auto* da = std::get_if<DenseEncoding>(&a.node)) {
    const auto& db = std::get<DenseEncoding>(b.node);
    CHECK(da->dtype == db.dtype);
    CHECK(same_bytes(da->data, db.data));
  } else {
    const auto& qa = std::get<QuantEncoding>(a.node);
    const auto& qb = std::get<QuantEncoding>(b.node);
    CHECK(qa.bits == qb.bits);
    CHECK(qa.scheme == qb.scheme);
    CHECK(qa.group_size == qb.group_size);
    CHECK(qa.scale_dtype == qb.scale_dtype);
    CHECK(same_bytes(qa.codes, qb.codes));
    CHECK(same_bytes(qa.scales, qb.scales));
    CHECK(same_bytes(qa.mins, qb.mins));
  }
}

void check_values(const Tensor& t, const std::vector<float>& want) {
  const std::vector<float> got = t.to_f32();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO(t.name << "[" << i << "]");
    CHECK(f32_to_bits(got[i]) == f32_to_bits(want[i]));
  }
}

// Parses an in-memory image (a private copy, so views stay valid).
Result<LlmcFile> parse_bytes(const ByteVec& bytes, const LlmcReadOptions& options = {}) {
  auto copy = std::make_shared<ByteVec>(bytes);
  return parse_llmc("mem.llmc", copy, copy->data(), copy->size(), options);
}

void put_u64(ByteVec& f, size_t at, uint64_t v) { std::memcpy(f.data() + at, &v, 8); }
uint64_t get_u64(const ByteVec& f, size_t at) {
  uint64_t v;
  std::memcpy(&v, f.data() + at, 8);
  return v;
}

// Recomputes the prefix's header checksum after the test edits the header.
void fix_header_hash(ByteVec& f) {
  const uint64_t hsize = get_u64(f, 16);
  put_u64(f, 24, XXH64(f.data() + 64, hsize, 0));
}

}  // namespace

TEST_CASE("llmc round trip of every encoding, raw and zstd", "[llmc]") {
  const int level = GENERATE(0, 3, 19);
  std::vector<Expected> expected;
  const Model model = make_test_model(&expected);
  test::TempDir tmp;
  const std::string path = tmp.path("m.llmc");
  REQUIRE(write_llmc(model, path, provenance_options(level)).ok());

  auto loaded = open_llmc(path);
  REQUIRE(loaded.ok());
  const Model& back = loaded->model;
  CHECK(back.config == model.config);
  CHECK(back.tokenizer.kind == model.tokenizer.kind);
  CHECK(back.tokenizer.tokens == model.tokenizer.tokens);
  CHECK(back.tokenizer.scores == model.tokenizer.scores);
  CHECK(back.tokenizer.token_types == model.tokenizer.token_types);
  CHECK(back.tokenizer.merges == model.tokenizer.merges);
  CHECK(back.tokenizer.pre == model.tokenizer.pre);
  CHECK(back.tokenizer.bos_id == 0);
  CHECK(back.tokenizer.eos_id == 1);
  CHECK(back.tokenizer.unk_id == 2);
  CHECK(back.tokenizer.pad_id == 4);
  CHECK(back.tokenizer.add_bos);
  CHECK(back.tokenizer.add_eos);
  CHECK(back.metadata == model.metadata);
  CHECK(loaded->provenance.llmc_version == "0.1.0");
  CHECK(loaded->provenance.input_xxh64 == 0x0123456789abcdefull);
  CHECK(loaded->provenance.input_path == "in.gguf");
  CHECK(loaded->provenance.recipe == "stages:\n  - pass: quant.rtn\n");
  CHECK(loaded->provenance.command_line == "llmc quantize in.gguf -o out.llmc");
  CHECK(loaded->provenance.created_unix == 0);
  CHECK(loaded->version == 1);

  REQUIRE(back.tensors().size() == model.tensors().size());
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    const Tensor& a = model.tensors()[i];
    const Tensor& b = back.tensors()[i];
    INFO(a.name);
    CHECK(b.name == a.name);
    CHECK(b.shape == a.shape);
    check_same_encoding(*a.encoding, *b.encoding);
    check_values(b, expected[i].values);
  }
  // 13 buffers, the copied f32 tensor deduplicated: 12 sections (the empty tensor is one).
  CHECK(loaded->raw_sections + loaded->zstd_sections == 12);
  // read_llmc and load_model agree on the path-level entry points.
  auto plain = read_llmc(path);
  REQUIRE(plain.ok());
  CHECK(plain->tensors().size() == model.tensors().size());
  CHECK(detect_format(path).ok());
  CHECK(*detect_format(path) == FileFormat::kLlmc);
}

TEST_CASE("llmc zstd shrinks compressible data and keeps incompressible sections raw", "[llmc]") {
  Model m;
  m.config.dim = 1;
  std::vector<float> smooth(1 << 16);
  for (size_t i = 0; i < smooth.size(); ++i) smooth[i] = static_cast<float>(i % 64);
  REQUIRE(m.add(make_dense_f32("smooth", Shape{{256, 256}}, smooth)).ok());
  // xorshift noise: zstd cannot shrink it, so it must stay raw.
  ByteVec noise(1 << 16);
  uint64_t x = 88172645463325252ull;
  for (auto& b : noise) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<unsigned char>(x);
  }
  REQUIRE(m.add(make_tensor("noise", {128, 256}, Encoding{DenseEncoding{DType::kF16, Bytes::owned(noise)}})).ok());

  test::TempDir tmp;
  REQUIRE(write_llmc(m, tmp.path("raw.llmc"), {}).ok());
  LlmcWriteOptions z;
  z.zstd_level = 3;
  REQUIRE(write_llmc(m, tmp.path("z.llmc"), z).ok());
  const auto raw_size = std::filesystem::file_size(tmp.path("raw.llmc"));
  const auto z_size = std::filesystem::file_size(tmp.path("z.llmc"));
  CHECK(raw_size > (1u << 18) + (1u << 16));
  CHECK(z_size < raw_size - (1u << 17));

  auto zf = open_llmc(tmp.path("z.llmc"));
  REQUIRE(zf.ok());
  CHECK(zf->zstd_sections == 1);
  CHECK(zf->raw_sections == 1);
  CHECK(zf->model.get("smooth").to_f32() == smooth);
  CHECK(same_bytes(std::get<DenseEncoding>(zf->model.get("noise").encoding->node).data, Bytes::owned(noise)));
}

TEST_CASE("llmc raw sections load zero-copy and 64-byte aligned", "[llmc]") {
  const Model model = make_test_model(nullptr);
  test::TempDir tmp;
  REQUIRE(write_llmc(model, tmp.path("raw.llmc"), {}).ok());
  auto f = open_llmc(tmp.path("raw.llmc"));
  REQUIRE(f.ok());
  CHECK(f->zstd_sections == 0);
  const uintptr_t begin = reinterpret_cast<uintptr_t>(f->data), end = begin + f->size;
  for (const Tensor& t : f->model.tensors()) {
    if (t.numel() == 0) continue;
    const Bytes& b = std::visit(
        [&](const auto& n) -> const Bytes& {
          if constexpr (std::is_same_v<std::decay_t<decltype(n)>, DenseEncoding>)
            return n.data;
          else if constexpr (std::is_same_v<std::decay_t<decltype(n)>, QuantEncoding>)
            return n.codes;
          else if constexpr (std::is_same_v<std::decay_t<decltype(n)>, SparseEncoding>)
            return n.index;
          else if constexpr (std::is_same_v<std::decay_t<decltype(n)>, PaletteEncoding>)
            return n.indices;
          else
            return std::get<DenseEncoding>(decomposition_parts(*t.encoding, t.shape)[0].encoding->node).data;
        },
        t.encoding->node);
    INFO(t.name);
    const uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
    CHECK(p >= begin);
    CHECK(p + b.size() <= end);
    CHECK((p - begin) % 64 == 0);
    CHECK(b.is_view_of(f->owner.get()));
  }
  // A zstd file's compressed sections are decoded into owned buffers outside the mapping.
  LlmcWriteOptions z;
  z.zstd_level = 3;
  std::vector<float> smooth(4096, 1.0f);
  Model m;
  REQUIRE(m.add(make_dense_f32("smooth", Shape{{64, 64}}, smooth)).ok());
  REQUIRE(write_llmc(m, tmp.path("z.llmc"), z).ok());
  auto zf = open_llmc(tmp.path("z.llmc"));
  REQUIRE(zf.ok());
  REQUIRE(zf->zstd_sections == 1);
  const auto& d = std::get<DenseEncoding>(zf->model.get("smooth").encoding->node);
  const uintptr_t p = reinterpret_cast<uintptr_t>(d.data.data());
  const uintptr_t zb = reinterpret_cast<uintptr_t>(zf->data);
  CHECK((p + d.data.size() <= zb || p >= zb + zf->size));
}

// Transformations read each input tensor about once: verifying every section's checksum must not
// leave the whole input resident (peak RSS of llmc quantize below the input's size).
TEST_CASE("llmc release_verified gives raw sections' pages back after checking them — tensors read the same",
          "[llmc]") {
  test::TempDir tmp;
  const int64_t rows = 2048, cols = 2048;  // 16 MiB of f32
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 1013) * 0.25f - 7.0f;
  Model m;
  REQUIRE(m.add(make_dense_f32("w", Shape{{rows, cols}}, values)).ok());
  REQUIRE(write_llmc(m, tmp.path("big.llmc"), {}).ok());
  const int64_t pages = rows * cols * 4 / ::sysconf(_SC_PAGESIZE);

  auto measure = [&](bool release) {
    const int64_t before = test::resident_pages();
    auto f = open_llmc(tmp.path("big.llmc"), LlmcReadOptions{.release_verified = release});
    REQUIRE(f.ok());
    const int64_t grown = test::resident_pages() - before;
    const auto& d = std::get<DenseEncoding>(f->model.get("w").encoding->node);
    REQUIRE(d.data.size() == values.size() * 4);
    CHECK(std::memcmp(d.data.data(), values.data(), d.data.size()) == 0);  // faulted in again
    return grown;
  };
  const int64_t kept = measure(false), released = measure(true);
  INFO("pages of the section " << pages << ", resident after load: kept " << kept << ", released " << released);
  CHECK(kept > pages * 9 / 10);
  CHECK(released < pages / 10);
  // The option travels through load_model (transformation commands) for a real model.
  const std::string stories = test::fixture("models/stories260K/stories260K.bin");
  if (stories.empty()) return;
  auto real = load_model(stories);
  REQUIRE(real.ok());
  REQUIRE(write_llmc(*real, tmp.path("stories.llmc"), {}).ok());
  const int64_t file_pages =
      static_cast<int64_t>(std::filesystem::file_size(tmp.path("stories.llmc"))) / ::sysconf(_SC_PAGESIZE);
  // Heap growth (allocator, sanitizer redzones) is in both loads; the file's pages only in the first.
  int64_t grown[2] = {};
  for (bool read_once : {false, true}) {
    const int64_t before = test::resident_pages();
    LoadOptions lo;
    lo.read_once = read_once;
    auto loaded = load_model(tmp.path("stories.llmc"), lo);
    REQUIRE(loaded.ok());
    grown[read_once] = test::resident_pages() - before;
  }
  INFO("file pages " << file_pages << ", resident after load_model: " << grown[0] << " (kept), " << grown[1]
                     << " (read_once)");
  CHECK(grown[0] - grown[1] > file_pages * 3 / 4);
}

TEST_CASE("llmc writes are deterministic", "[llmc]") {
  const Model model = make_test_model(nullptr);
  test::TempDir tmp;
  for (int level : {0, 5}) {
    REQUIRE(write_llmc(model, tmp.path("a.llmc"), provenance_options(level)).ok());
    REQUIRE(write_llmc(model, tmp.path("b.llmc"), provenance_options(level)).ok());
    CHECK(test::read_file_bytes(tmp.path("a.llmc")) == test::read_file_bytes(tmp.path("b.llmc")));
  }
  // Writing what was read gives the same file again.
  REQUIRE(write_llmc(model, tmp.path("a.llmc"), provenance_options(0)).ok());
  auto back = read_llmc(tmp.path("a.llmc"));
  REQUIRE(back.ok());
  REQUIRE(write_llmc(*back, tmp.path("c.llmc"), provenance_options(0)).ok());
  CHECK(test::read_file_bytes(tmp.path("a.llmc")) == test::read_file_bytes(tmp.path("c.llmc")));
}

TEST_CASE("llmc writer refuses bad options and inconsistent tensors", "[llmc]") {
  test::TempDir tmp;
  LlmcWriteOptions bad;
  bad.zstd_level = 99;
  CHECK(write_llmc(make_test_model(nullptr), tmp.path("x.llmc"), bad).error().code == ErrorCode::kInvalidArgument);
  Model m;
  REQUIRE(m.add(make_tensor("short", {4, 4}, Encoding{DenseEncoding{DType::kF32, Bytes::owned(ByteVec(60))}})).ok());
  auto r = write_llmc(m, tmp.path("x.llmc"), {});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("short"));
  CHECK_FALSE(std::filesystem::exists(tmp.path("x.llmc")));
}

TEST_CASE("llmc golden v1 file keeps loading", "[llmc]") {
  const std::string path = std::string(LLMC_SOURCE_DIR) + "/tests/golden/v1/tiny.llmc";
  auto f = open_llmc(path);
  REQUIRE(f.ok());
  const Model& m = f->model;
  CHECK(m.config.dim == 8);
  CHECK(m.config.hidden_dim == 16);
  CHECK(m.config.n_layers == 1);
  CHECK(m.config.n_heads == 2);
  CHECK(m.config.n_kv_heads == 1);
  CHECK(m.config.vocab_size == 16);
  CHECK(m.config.rope_theta == 10000.0f);
  CHECK(m.tokenizer.tokens.size() == 16);
  CHECK(m.tokenizer.tokens[5] == "t5");
  CHECK(m.tokenizer.bos_id == 1);
  CHECK(m.metadata.at("golden") == "v1");
  CHECK(f->provenance.llmc_version == "0.1.0");
  CHECK(f->zstd_sections > 0);
  CHECK(f->raw_sections > 0);
  // Every dense tensor holds arange(numel) * 0.5 - t, t = its index in the file; attn_q is
  // q4 symmetric, group 8: code (r + c) % 16, scale 0.25 (f16), so value ((r + c) % 16 - 8) / 4.
  size_t index = 0;
  for (const Tensor& t : m.tensors()) {
    INFO(t.name);
    const std::vector<float> got = t.to_f32();
    if (t.name == "blk.0.attn_q.weight") {
      for (int64_t r = 0; r < t.rows(); ++r)
        for (int64_t c = 0; c < t.cols(); ++c)
          CHECK(got[r * t.cols() + c] == static_cast<float>((r + c) % 16 - 8) * 0.25f);
    } else {
      for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == static_cast<float>(i) * 0.5f - static_cast<float>(index));
    }
    ++index;
  }
  auto loaded = load_model(path);
  REQUIRE(loaded.ok());
  CHECK(loaded->tensors().size() == m.tensors().size());
}

// Regenerates the golden file (run by hand: llmc_tests "[.llmc-golden-write]"); the file it
// writes must never change once released.
TEST_CASE("llmc write golden v1", "[.llmc-golden-write]") {
  Model m;
  m.config.dim = 8;
  m.config.hidden_dim = 16;
  m.config.n_layers = 1;
  m.config.n_heads = 2;
  m.config.n_kv_heads = 1;
  m.config.head_dim = 4;
  m.config.vocab_size = 16;
  m.config.context_length = 32;
  m.tokenizer.kind = TokenizerKind::kSentencePiece;
  for (int i = 0; i < 16; ++i) {
    m.tokenizer.tokens.push_back("t" + std::to_string(i));
    m.tokenizer.scores.push_back(static_cast<float>(-i));
  }
  m.tokenizer.bos_id = 1;
  m.tokenizer.eos_id = 2;
  m.metadata["golden"] = "v1";
  size_t index = 0;
  for (const TensorSpec& spec : expected_tensors(m.config)) {
    const int64_t rows = spec.shape.rows(), cols = spec.shape.cols();
    if (spec.name == "blk.0.attn_q.weight") {
      std::vector<uint32_t> q(rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) q[r * cols + c] = static_cast<uint32_t>((r + c) % 16);
      const std::vector<uint16_t> scales(rows * ((cols + 7) / 8), 0x3400);
      QuantEncoding enc{.bits = 4,
                        .scheme = QuantScheme::kSymmetric,
                        .group_size = 8,
                        .scale_dtype = DType::kF16,
                        .codes = Bytes::owned(pack_codes(q, rows, cols, 4)),
                        .scales = bytes_of(scales)};
      REQUIRE(m.add(Tensor{spec.name, spec.shape, std::make_shared<Encoding>(Encoding{enc})}).ok());
    } else {
      std::vector<float> v(static_cast<size_t>(spec.shape.numel()));
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f - static_cast<float>(index);
      REQUIRE(m.add(make_dense_f32(spec.name, spec.shape, v)).ok());
    }
    ++index;
  }
  LlmcWriteOptions o;
  o.zstd_level = 3;
  o.command_line = "llmc_tests [.llmc-golden-write]";
  REQUIRE(write_llmc(m, std::string(LLMC_SOURCE_DIR) + "/tests/golden/v1/tiny.llmc", o).ok());
}

TEST_CASE("llmc reader rejects every truncation", "[llmc]") {
  test::TempDir tmp;
  for (int level : {0, 3}) {
    REQUIRE(write_llmc(make_test_model(nullptr), tmp.path("m.llmc"), provenance_options(level)).ok());
    const ByteVec full = test::read_file_bytes(tmp.path("m.llmc"));
    REQUIRE(parse_bytes(full).ok());
    for (size_t n = 0; n < full.size(); ++n) {
      INFO("prefix of " << n << " bytes");
      const ByteVec cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK_FALSE(parse_bytes(cut).ok());
    }
    // The same through the file path, at a stride.
    for (size_t n = 0; n < full.size(); n += 97) {
      test::write_file_bytes(tmp.path("cut.llmc"),
                             ByteVec(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
      CHECK_FALSE(read_llmc(tmp.path("cut.llmc")).ok());
    }
    // Appended garbage is refused too (the prefix records the size).
    ByteVec longer = full;
    longer.push_back(0);
    CHECK_FALSE(parse_bytes(longer).ok());
  }
}

TEST_CASE("llmc reader rejects a damaged prefix", "[llmc]") {
  test::TempDir tmp;
  REQUIRE(write_llmc(make_test_model(nullptr), tmp.path("m.llmc"), {}).ok());
  const ByteVec full = test::read_file_bytes(tmp.path("m.llmc"));
  struct Case {
    size_t offset;
    unsigned char value;
    ErrorCode code;
    const char* message;
  };
  const Case kCases[] = {
      {0, 'X', ErrorCode::kFormat, "bad magic"},
      {4, '\n', ErrorCode::kFormat, "text mode"},
      {8, 2, ErrorCode::kUnsupported, "version 2"},
      {8, 0, ErrorCode::kFormat, "version 0"},
      {14, 2, ErrorCode::kUnsupported, "requires features"},  // bit 17 (bit 16 = section coding, known)
      {21, 0x01, ErrorCode::kFormat, "header size"},
      {24, 0x5a, ErrorCode::kFormat, "header checksum"},
      {33, 0x01, ErrorCode::kFormat, "file size"},
  };
  for (const auto& c : kCases) {
    ByteVec f = full;
    f[c.offset] = c.value;
    auto r = parse_bytes(f);
    INFO(c.message);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == c.code);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
    CHECK_THAT(r.error().message, Catch::Contains("mem.llmc"));
  }
  // A header shorter than the FlatBuffers identifier, ending the file (found by fuzz_llmc).
  {
    ByteVec tiny(full.begin(), full.begin() + 68);
    put_u64(tiny, 16, 4);
    put_u64(tiny, 32, tiny.size());
    fix_header_hash(tiny);
    auto r = parse_bytes(tiny);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("FlatBuffers verification"));
  }
  // Optional flags (low 16 bits) from a newer writer are ignored.
  ByteVec f = full;
  f[12] = 1;
  CHECK(parse_bytes(f).ok());
}

TEST_CASE("llmc reader rejects corrupted header bytes", "[llmc]") {
  test::TempDir tmp;
  REQUIRE(write_llmc(make_test_model(nullptr), tmp.path("m.llmc"), {}).ok());
  const ByteVec full = test::read_file_bytes(tmp.path("m.llmc"));
  const size_t hsize = get_u64(full, 16);
  for (size_t i = 64; i < 64 + hsize; ++i) {
    ByteVec f = full;
    f[i] ^= 0x41;
    auto r = parse_bytes(f);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("header checksum"));
  }
  // With the checksum recomputed, damage reaches the FlatBuffers verifier and the semantic
  // checks: any outcome but a crash is acceptable; most must be errors.
  size_t errors = 0;
  for (size_t i = 64; i < 64 + hsize; ++i)
    for (unsigned char x : {0x01, 0x80, 0xff}) {
      ByteVec f = full;
      f[i] ^= x;
      fix_header_hash(f);
      auto r = parse_bytes(f);
      if (!r.ok()) {
        ++errors;
      } else {
        for (const Tensor& t : r->model.tensors()) (void)t.to_f32();
      }
    }
  CHECK(errors > hsize);
}

TEST_CASE("llmc flipped section byte is a checksum error naming the tensor", "[llmc]") {
  const Model model = make_test_model(nullptr);
  test::TempDir tmp;
  for (int level : {0, 19}) {
    REQUIRE(write_llmc(model, tmp.path("m.llmc"), provenance_options(level)).ok());
    const ByteVec full = test::read_file_bytes(tmp.path("m.llmc"));
    auto ok = parse_bytes(full);
    REQUIRE(ok.ok());
    // The f16 tensor's data is the second section (index 1); find it through the header.
    const auto* header = fb::GetHeader(full.data() + 64);
    const auto* sec = header->sections()->Get(1);
    ByteVec f = full;
    f[sec->offset() + sec->stored_size() / 2] ^= 0x10;
    auto r = parse_bytes(f);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kFormat);
    CHECK_THAT(r.error().message, Catch::Contains("checksum mismatch"));
    CHECK_THAT(r.error().message, Catch::Contains("dense.f16"));
    CHECK_THAT(r.error().message, Catch::Contains(std::to_string(sec->offset())));
    if (level == 0) {
      // Without verification the damaged raw value loads as stored (documented trade-off).
      LlmcReadOptions fast;
      fast.verify_checksums = false;
      CHECK(parse_bytes(f, fast).ok());
    }
  }
}

namespace {

// Builds a file around a hand-made header with one tensor, so each field can be made hostile.
struct HostileSpec {
  std::vector<int64_t> shape = {2, 4};
  fb::DType dtype = fb::DType::F32;
  uint32_t section_index = 0;
  fb::Node node_type = fb::Node::DenseNode;
  int64_t offset_delta = 0;   // added to the section's real offset
  int64_t stored_delta = 0;   // added to stored_size
  int64_t raw_delta = 0;      // added to raw_size
  uint8_t compression = 0;    // fb::Compression value
  bool zstd_payload = false;  // store the payload as a zstd frame
  bool bad_hash = false;
  int tensors = 1;  // copies of the tensor entry (same name: duplicates)
  int token_count = 2;
  int score_count = 2;
};

ByteVec build_hostile(const HostileSpec& s) {
  ByteVec payload(32);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<unsigned char>(i);
  if (s.zstd_payload) {
    ByteVec z(ZSTD_compressBound(payload.size()));
    z.resize(ZSTD_compress(z.data(), z.size(), payload.data(), payload.size(), 3));
    payload.swap(z);
  }
  const uint64_t raw_size = s.zstd_payload ? 32 : payload.size();
  auto build = [&](uint64_t data_offset) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.ForceDefaults(true);
    auto config = fb::CreateConfigDirect(fbb, "llama", 4);
    std::vector<std::string> tokens(static_cast<size_t>(s.token_count), "x");
    std::vector<float> scores(static_cast<size_t>(s.score_count), 0.0f);
    auto tokv = fbb.CreateVectorOfStrings(tokens);
    auto scorev = fbb.CreateVector(scores);
    auto tokenizer = fb::CreateTokenizer(fbb, 1, tokv, scorev);
    std::vector<flatbuffers::Offset<fb::TensorEntry>> entries;
    for (int i = 0; i < s.tensors; ++i) {
      auto node = fb::CreateDenseNode(fbb, s.dtype, s.section_index);
      auto enc = fb::CreateEncoding(fbb, s.node_type, node.Union());
      entries.push_back(fb::CreateTensorEntryDirect(fbb, "t", &s.shape, enc));
    }
    auto tensors = fbb.CreateVector(entries);
    const uint64_t hash = XXH64(payload.data(), payload.size(), 0) ^ (s.bad_hash ? 1 : 0);
    std::vector<flatbuffers::Offset<fb::Section>> secs = {
        fb::CreateSection(fbb, data_offset + s.offset_delta, payload.size() + s.stored_delta, raw_size + s.raw_delta,
                          static_cast<fb::Compression>(s.compression), hash)};
    auto header = fb::CreateHeader(fbb, config, tokenizer, tensors, fbb.CreateVector(secs));
    fb::FinishHeaderBuffer(fbb, header);
    return ByteVec(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  ByteVec header = build(0);
  const uint64_t data_offset = (64 + header.size() + 63) / 64 * 64;
  header = build(data_offset);
  ByteVec f(data_offset, 0);
  std::memcpy(f.data(), "LLMC\r\n\x1a\n", 8);
  const uint32_t version = 1;
  std::memcpy(f.data() + 8, &version, 4);
  put_u64(f, 16, header.size());
  std::memcpy(f.data() + 64, header.data(), header.size());
  f.insert(f.end(), payload.begin(), payload.end());
  put_u64(f, 32, f.size());
  fix_header_hash(f);
  return f;
}

}  // namespace

TEST_CASE("llmc reader rejects hostile headers", "[llmc]") {
  REQUIRE(parse_bytes(build_hostile({})).ok());
  {
    HostileSpec z;
    z.compression = 1;
    z.zstd_payload = true;
    auto r = parse_bytes(build_hostile(z));
    REQUIRE(r.ok());
    CHECK(r->zstd_sections == 1);
  }
  struct Case {
    const char* what;
    HostileSpec spec;
    ErrorCode code;
    const char* message;
  };
  auto spec = [](auto edit) {
    HostileSpec s;
    edit(s);
    return s;
  };
  const Case kCases[] = {
      {"offset past EOF", spec([](HostileSpec& s) { s.offset_delta = 1 << 20; }), ErrorCode::kFormat, "past the end"},
      {"size past EOF", spec([](HostileSpec& s) {
         s.stored_delta = 64;
         s.raw_delta = 64;
       }),
       ErrorCode::kFormat, "past the end"},
      {"huge size", spec([](HostileSpec& s) {
         s.stored_delta = int64_t(1) << 62;
         s.raw_delta = int64_t(1) << 62;
       }),
       ErrorCode::kFormat, "past the end"},
      {"misaligned", spec([](HostileSpec& s) { s.offset_delta = 8; }), ErrorCode::kFormat, "aligned"},
      {"overlaps header", spec([](HostileSpec& s) { s.offset_delta = -64; }), ErrorCode::kFormat, "overlaps"},
      {"raw size mismatch", spec([](HostileSpec& s) { s.raw_delta = 4; }), ErrorCode::kFormat, "raw size"},
      {"shape needs more bytes", spec([](HostileSpec& s) {
         s.shape = {3, 4};
       }),
       ErrorCode::kFormat, "needs 48"},
      {"dtype mismatch", spec([](HostileSpec& s) { s.dtype = fb::DType::F16; }), ErrorCode::kFormat, "needs 16"},
      {"integer dense dtype", spec([](HostileSpec& s) { s.dtype = fb::DType::I32; }), ErrorCode::kFormat, "dtype"},
      {"absurd shape", spec([](HostileSpec& s) {
         s.shape = {int64_t(1) << 40, int64_t(1) << 40};
       }),
       ErrorCode::kShape, "too many"},
      {"negative dim", spec([](HostileSpec& s) {
         s.shape = {-2, -4};
       }),
       ErrorCode::kShape, "negative"},
      {"too many dims", spec([](HostileSpec& s) { s.shape = std::vector<int64_t>(64, 1); }), ErrorCode::kFormat,
       "dimensions"},
      {"section index", spec([](HostileSpec& s) { s.section_index = 1000000; }), ErrorCode::kFormat, "section index"},
      {"unknown node", spec([](HostileSpec& s) { s.node_type = static_cast<fb::Node>(9); }), ErrorCode::kUnsupported,
       "newer llmc"},
      {"unknown compression", spec([](HostileSpec& s) { s.compression = 7; }), ErrorCode::kUnsupported, "compression"},
      {"checksum", spec([](HostileSpec& s) { s.bad_hash = true; }), ErrorCode::kFormat, "checksum"},
      {"duplicate names", spec([](HostileSpec& s) { s.tensors = 2; }), ErrorCode::kFormat, "duplicate"},
      {"scores count", spec([](HostileSpec& s) { s.score_count = 1; }), ErrorCode::kFormat, "scores"},
      {"zstd raw size absurd", spec([](HostileSpec& s) {
         s.compression = 1, s.zstd_payload = true, s.raw_delta = int64_t(1) << 50,
         s.shape = {int64_t(1) << 22, 1 << 26};
       }),
       ErrorCode::kFormat, "impossible"},
      {"zstd size mismatch", spec([](HostileSpec& s) {
         s.compression = 1, s.zstd_payload = true, s.raw_delta = 32, s.shape = {4, 4};
       }),
       ErrorCode::kFormat, "zstd frame holds"},
      {"zstd garbage", spec([](HostileSpec& s) { s.compression = 1, s.raw_delta = 0; }), ErrorCode::kFormat,
       "zstd frame"},
  };
  for (const auto& c : kCases) {
    INFO(c.what);
    auto r = parse_bytes(build_hostile(c.spec));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == c.code);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
  }
}
