// GGUF reader and writer: vocabulary fixtures, SmolLM2, round trips and a hostile-input suite.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "formats/file_io.h"
#include "formats/gguf.h"
#include "formats/gguf_quants.h"
#include "formats/model_io.h"
#include "formats/scratch_file.h"
#include "gguf_test_util.h"
#include "test_util.h"

namespace llmc {
namespace {

using test::fixture;

// ---- vocabulary-only fixtures (values cross-checked with gguf.GGUFReader)

TEST_CASE("gguf reads the llama SentencePiece vocabulary fixture", "[gguf]") {
  const std::string path = fixture("tokenizers/ggml-vocab-llama-spm.gguf");
  if (path.empty()) return;
  CHECK_FALSE(read_gguf(path, true).ok());  // no tensors
  auto model = read_gguf(path, false);
  REQUIRE(model.ok());
  const TokenizerData& t = model->tokenizer;
  CHECK(t.kind == TokenizerKind::kSentencePiece);
  REQUIRE(t.tokens.size() == 32000);
  REQUIRE(t.scores.size() == 32000);
  REQUIRE(t.token_types.size() == 32000);
  CHECK(t.tokens[0] == "<unk>");
  CHECK(t.tokens[1] == "<s>");
  CHECK(t.tokens[13] == "<0x0A>");
  CHECK(t.tokens[259] == "\xe2\x96\x81\xe2\x96\x81");  // "▁▁"
  CHECK(t.tokens[31999] == "\xe7\xbb\x99");            // "给"
  CHECK(t.scores[259] == -1e9f);
  CHECK(t.scores[31999] == -31740.0f);
  CHECK(t.token_types[0] == 2);
  CHECK(t.token_types[1] == 3);
  CHECK(t.token_types[3] == 6);
  CHECK(t.token_types[259] == 1);
  CHECK(t.bos_id == 1);
  CHECK(t.eos_id == 2);
  CHECK(t.unk_id == 0);
  CHECK(t.pad_id == -1);
  CHECK(t.add_bos);
  CHECK_FALSE(t.add_eos);
  CHECK(t.pre == "default");
  CHECK(t.merges.empty());
  CHECK(model->metadata["general.name"] == "llama-spm");
  CHECK(model->metadata["llama.block_count"] == "32");
  CHECK(model->metadata.count("tokenizer.ggml.tokens") == 0);
  // The llama keys still describe the (absent) model.
  CHECK(model->config.dim == 4096);
  CHECK(model->config.n_layers == 32);
  CHECK(model->config.head_dim == 128);
  CHECK(model->config.vocab_size == 32000);
}

TEST_CASE("gguf reads the GPT-2 byte-level BPE vocabulary fixture", "[gguf]") {
  const std::string path = fixture("tokenizers/ggml-vocab-gpt-2.gguf");
  if (path.empty()) return;
  auto model = read_gguf(path, false);
  REQUIRE(model.ok());
  const TokenizerData& t = model->tokenizer;
  CHECK(t.kind == TokenizerKind::kBytePairGpt2);
  REQUIRE(t.tokens.size() == 50257);
  CHECK(t.scores.empty());
  CHECK(t.token_types.size() == 50257);
  CHECK(t.tokens[0] == "!");
  CHECK(t.tokens[256] == "\xc4\xa0t");  // "Ġt"
  CHECK(t.tokens[50256] == "<|endoftext|>");
  CHECK(t.token_types[50256] == 3);
  REQUIRE(t.merges.size() == 50000);
  CHECK(t.merges[0] == "\xc4\xa0 t");
  CHECK(t.merges[49999] == "\xc4\xa0g azed");
  CHECK(t.bos_id == 50256);
  CHECK(t.eos_id == 50256);
  CHECK_FALSE(t.add_bos);
  CHECK(t.pre == "gpt-2");
  CHECK(model->metadata["general.architecture"] == "gpt2");
  CHECK(model->metadata["gpt2.attention.layer_norm_epsilon"] == "1e-05");
  CHECK(model->tensors().empty());
}

TEST_CASE("gguf loads SmolLM2-135M (Q4_1 + Q8_0) with its config and vocabulary", "[gguf][heavy]") {
  const std::string path = test::smollm2_path();
  if (path.empty()) return;
  auto model = read_gguf(path, true);
  REQUIRE(model.ok());
  const ModelConfig& c = model->config;
  CHECK(c.family == ModelFamily::kLlama);
  CHECK(c.dim == 576);
  CHECK(c.hidden_dim == 1536);
  CHECK(c.n_layers == 30);
  CHECK(c.n_heads == 9);
  CHECK(c.n_kv_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.vocab_size == 49152);
  CHECK(c.context_length == 8192);
  CHECK(c.tied_embeddings);
  CHECK(c.rope_theta == 100000.0f);
  CHECK(c.norm_eps == Approx(1e-5f));
  CHECK(c.rope_style == RopeStyle::kInterleaved);
  CHECK_FALSE(c.attn_qkv_bias);
  CHECK(model->tokenizer.kind == TokenizerKind::kBytePairGpt2);
  CHECK(model->tokenizer.tokens.size() == 49152);
  CHECK(model->tokenizer.tokens[1] == "<|im_start|>");
  CHECK(model->tokenizer.merges.size() == 48900);
  CHECK(model->tokenizer.merges[48899] == "ect able");
  CHECK(model->tokenizer.pre == "smollm");
  CHECK(model->tokenizer.pad_id == 2);
  CHECK_FALSE(model->tokenizer.add_bos);
  // Canonical order, not file order (the file starts token_embd, blk.0.attn_norm, blk.0.ffn_down).
  REQUIRE(model->tensors().size() == 272);
  CHECK(model->tensors()[0].name == "token_embd.weight");
  CHECK(model->tensors()[1].name == "blk.0.attn_norm.weight");
  CHECK(model->tensors()[2].name == "blk.0.attn_q.weight");
  CHECK(model->tensors().back().name == "output_norm.weight");
  CHECK(model->get("blk.0.attn_k.weight").shape == Shape{{192, 576}});
  CHECK(model->get("blk.0.ffn_down.weight").shape == Shape{{576, 1536}});
}

TEST_CASE("gguf: SmolLM2's repacked blocks go to a scratch file, same values, not resident after load",
          "[gguf][heavy]") {
  const std::string path = test::smollm2_path();
  if (path.empty()) return;
  test::TempDir dir;
  auto scratch = ScratchFile::create(dir.path(""));
  REQUIRE(scratch.ok());
  const int64_t before = test::resident_pages();
  auto lean = read_gguf(path, true, true, scratch->get());
  REQUIRE(lean.ok());
  const int64_t after = test::resident_pages();
  // 96.6 MB of Q4_1/Q8_0 blocks repacked; what stays resident is the vocabulary and a little more.
  const int64_t weight_pages = static_cast<int64_t>((*scratch)->size()) / ::sysconf(_SC_PAGESIZE);
  CHECK((*scratch)->size() > (uint64_t{90} << 20));
  CHECK(after - before < weight_pages / 4);
  int64_t quant = 0;
  for (const Tensor& t : lean->tensors()) {
    if (!std::holds_alternative<QuantEncoding>(t.encoding->node)) continue;
    ++quant;
    for_each_buffer(*t.encoding, [&](const Bytes& b) { CHECK(is_file_backed(b.data(), b.size())); });
  }
  CHECK(quant == 211);
  auto heap = read_gguf(path, true);
  REQUIRE(heap.ok());
  test::require_same_tensors(*heap, *lean);
  for (const Tensor& t : heap->tensors()) {  // and the same bytes, buffer by buffer
    std::vector<std::vector<uint8_t>> a, b;
    for_each_buffer(*t.encoding, [&](const Bytes& x) { a.emplace_back(x.data(), x.data() + x.size()); });
    for_each_buffer(*lean->get(t.name).encoding,
                    [&](const Bytes& x) { b.emplace_back(x.data(), x.data() + x.size()); });
    CHECK(a == b);
  }
}

// ---- round trips through write_gguf

void check_same_tokenizer(const TokenizerData& a, const TokenizerData& b) {
  CHECK(a.kind == b.kind);
  CHECK(a.tokens == b.tokens);
  CHECK(a.scores == b.scores);
  CHECK(a.token_types == b.token_types);
  CHECK(a.merges == b.merges);
  CHECK(a.pre == b.pre);
  CHECK(a.bos_id == b.bos_id);
  CHECK(a.eos_id == b.eos_id);
  CHECK(a.unk_id == b.unk_id);
  CHECK(a.pad_id == b.pad_id);
  CHECK(a.add_bos == b.add_bos);
  CHECK(a.add_eos == b.add_eos);
}

const DenseEncoding& dense(const Tensor& t) { return std::get<DenseEncoding>(t.encoding->node); }

TEST_CASE("gguf F32 round trip is exact (llama, untied)", "[gguf]") {
  test::TempDir dir;
  Model m = test::make_gguf_test_model(ModelFamily::kLlama, 96, false);
  m.config.rope_scaling.type = RopeScalingType::kLinear;
  m.config.rope_scaling.factor = 4.0f;
  m.config.rope_scaling.original_context = 64;
  REQUIRE(write_gguf(m, dir.path("m.gguf"), {ExportDType::kF32}).ok());
  auto back = read_gguf(dir.path("m.gguf"), true);
  REQUIRE(back.ok());
  CHECK(back->config == m.config);
  check_same_tokenizer(back->tokenizer, m.tokenizer);
  llmc::test::require_same_tensors(m, *back);
  CHECK(back->metadata["general.name"] == "gguf test model");
  CHECK(back->metadata["general.file_type"] == "0");
  // Float tensors are zero-copy views of the mapping.
  CHECK(dense(back->get("blk.0.attn_q.weight")).dtype == DType::kF32);
  // Deterministic: a second write gives the same bytes.
  REQUIRE(write_gguf(m, dir.path("m2.gguf"), {ExportDType::kF32}).ok());
  CHECK(test::read_file_bytes(dir.path("m.gguf")) == test::read_file_bytes(dir.path("m2.gguf")));
  // load_model dispatches to the reader.
  auto via_dispatch = load_model(dir.path("m.gguf"));
  REQUIRE(via_dispatch.ok());
  CHECK(via_dispatch->config == m.config);
}

TEST_CASE("gguf F32 round trip is exact (qwen2, tied, biases)", "[gguf]") {
  test::TempDir dir;
  Model m = test::make_gguf_test_model(ModelFamily::kQwen2, 96, true);
  REQUIRE(write_gguf(m, dir.path("q.gguf"), {}).ok());
  auto back = read_gguf(dir.path("q.gguf"), true);
  REQUIRE(back.ok());
  CHECK(back->config == m.config);
  CHECK(back->config.rope_style == RopeStyle::kNeox);
  CHECK(back->find("blk.1.attn_v.bias") != nullptr);
  CHECK(back->find("output.weight") == nullptr);
  llmc::test::require_same_tensors(m, *back);
}

TEST_CASE("gguf keeps f16/bf16 tensors as stored and norms as f32", "[gguf]") {
  test::TempDir dir;
  Model src = test::make_gguf_test_model(ModelFamily::kLlama, 96, false);
  Model m;
  m.config = src.config;
  m.tokenizer = src.tokenizer;
  for (const Tensor& t : src.tensors()) {
    const DType dt = t.name == "output.weight" ? DType::kBF16 : DType::kF16;
    REQUIRE(m.add(make_dense(t.name, t.shape, t.to_f32(), dt)).ok());
  }
  REQUIRE(write_gguf(m, dir.path("k.gguf"), {ExportDType::kKeep}).ok());
  auto back = read_gguf(dir.path("k.gguf"), true);
  REQUIRE(back.ok());
  llmc::test::require_same_tensors(m, *back);
  CHECK(dense(back->get("blk.0.attn_q.weight")).dtype == DType::kF16);
  CHECK(dense(back->get("output.weight")).dtype == DType::kBF16);
  CHECK(dense(back->get("blk.0.attn_norm.weight")).dtype == DType::kF32);
  CHECK(back->metadata["general.file_type"] == "1");
  // Same stored bytes as the source (no conversion happened).
  const auto& a = dense(m.get("blk.1.ffn_up.weight")).data;
  const auto& b = dense(back->get("blk.1.ffn_up.weight")).data;
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size()) == 0);
}

TEST_CASE("gguf Q8_0/Q4_0 export stays within the quantization step — ragged rows fall back to F16", "[gguf]") {
  test::TempDir dir;
  // hidden 80: ffn_down has 80 columns, not a multiple of 32.
  Model m = test::make_gguf_test_model(ModelFamily::kLlama, 80, false);
  struct Row {
    ExportDType dtype;
    float step_fraction;  // max error as a fraction of the tensor's max |x|
  };
  for (const Row row : {Row{ExportDType::kQ8_0, 1.0f / 127.0f}, Row{ExportDType::kQ4_0, 1.0f / 8.0f}}) {
    INFO(export_dtype_name(row.dtype));
    const std::string path = dir.path(std::string(export_dtype_name(row.dtype)) + ".gguf");
    REQUIRE(write_gguf(m, path, {row.dtype}).ok());
    auto back = read_gguf(path, true);
    REQUIRE(back.ok());
    CHECK(back->config == m.config);
    CHECK(dense(back->get("blk.0.ffn_down.weight")).dtype == DType::kF16);
    CHECK(dense(back->get("blk.0.ffn_norm.weight")).dtype == DType::kF32);
    CHECK(back->get("blk.0.ffn_norm.weight").to_f32() == m.get("blk.0.ffn_norm.weight").to_f32());
    for (const char* name : {"token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_gate.weight", "output.weight"}) {
      INFO(name);
      const auto a = m.get(name).to_f32(), b = back->get(name).to_f32();
      float amax = 0, err = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        amax = std::max(amax, std::fabs(a[i]));
        err = std::max(err, std::fabs(a[i] - b[i]));
      }
      CHECK(err > 0.0f);
      CHECK(err <= amax * row.step_fraction * 1.01f);
    }
  }
}

TEST_CASE("gguf Q8_0 and Q4_0 quantizers follow the ggml reference on hand-made blocks", "[gguf]") {
  // Block: x[i] = i - 10 for i < 32 (max |x| = 21 at i = 31, positive).
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i - 10);
  uint8_t q8[34], q4[18];
  quantize_q8_0(x, 32, q8);
  quantize_q4_0(x, 32, q4);
  uint16_t d8, d4;
  std::memcpy(&d8, q8, 2);
  std::memcpy(&d4, q4, 2);
  CHECK(f16_to_f32(d8) == Approx(21.0f / 127.0f).epsilon(1e-3));
  CHECK(static_cast<int8_t>(q8[2 + 31]) == 127);
  CHECK(static_cast<int8_t>(q8[2 + 0]) == -60);  // round(-10 * 127 / 21) = round(-60.48)
  CHECK(f16_to_f32(d4) == Approx(-21.0f / 8.0f).epsilon(1e-3));
  // x = 21 -> 21 / -2.625 + 8.5 = 0.5 -> 0; x = -10 -> 3.81 + 8.5 = 12.3 -> 12 (element 0, low nibble)
  CHECK((q4[2 + 15] >> 4) == 0);
  CHECK((q4[2 + 0] & 0x0F) == 12);
  float back[32];
  ggml_type_info(GgmlType::kQ4_0).dequant(q4, 1, back);
  CHECK(back[31] == Approx(-8 * f16_to_f32(d4)));
}

// ---- quantized tensors stay quantized: ggml blocks <-> Quant encodings

// What each mappable block type becomes (docs/gguf.md states the same table) and its bits per
// weight as a Quant encoding (codes + scales + mins + u8 meta).
struct QuantLayoutRow {
  GgmlType type;
  int bits;
  QuantScheme scheme;
  int64_t group_size;
  DType scale_dtype;
  double bpw;
};
const QuantLayoutRow kQuantLayouts[] = {
    {GgmlType::kQ4_0, 4, QuantScheme::kSymmetric, 32, DType::kF16, 4.5},
    {GgmlType::kQ4_1, 4, QuantScheme::kAsymmetric, 32, DType::kF16, 5.0},
    {GgmlType::kQ5_0, 5, QuantScheme::kSymmetric, 32, DType::kF16, 5.5},
    {GgmlType::kQ5_1, 5, QuantScheme::kAsymmetric, 32, DType::kF16, 6.0},
    {GgmlType::kQ8_0, 8, QuantScheme::kSymmetric, 32, DType::kF16, 8.5},
    {GgmlType::kQ2_K, 2, QuantScheme::kAsymmetric, 16, DType::kU8, 3.5},
    {GgmlType::kQ3_K, 3, QuantScheme::kSymmetric, 16, DType::kU8, 3.75},
    {GgmlType::kQ4_K, 4, QuantScheme::kAsymmetric, 32, DType::kU8, 5.0},
    {GgmlType::kQ5_K, 5, QuantScheme::kAsymmetric, 32, DType::kU8, 6.0},
    {GgmlType::kQ6_K, 6, QuantScheme::kSymmetric, 16, DType::kU8, 6.75},
};

// Same value, or both NaN; zeros of either sign are equal (docs/gguf.md: the sign of a zero may differ).
size_t count_mismatches(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool same = got[i] == want[i] ? (got[i] == 0 || f32_to_bits(got[i]) == f32_to_bits(want[i]))
                                        : std::isnan(got[i]) && std::isnan(want[i]);
    bad += same ? 0 : 1;
  }
  return bad;
}

TEST_CASE("gguf quantized blocks repack into Quant encodings with the same values and back", "[gguf]") {
  for (const QuantLayoutRow& row : kQuantLayouts) {
    const GgmlTypeInfo& info = ggml_type_info(row.type);
    INFO(info.name);
    const int64_t rows = 24, cols = 2 * info.block_size, n_blocks = rows * 2;
    const auto raw = test::random_ggml_blocks(info, n_blocks, 1234 + static_cast<uint32_t>(row.type));
    std::vector<float> want(static_cast<size_t>(rows * cols));
    info.dequant(raw.data(), n_blocks, want.data());
    auto q = ggml_to_quant(info, raw.data(), rows, cols);
    REQUIRE(q.has_value());
    CHECK(q->bits == row.bits);
    CHECK(q->scheme == row.scheme);
    CHECK(q->group_size == row.group_size);
    CHECK(q->scale_dtype == row.scale_dtype);
    const Shape shape{{rows, cols}};
    const Encoding enc{*q};
    REQUIRE(validate_encoding(enc, shape).ok());
    CHECK(8.0 * static_cast<double>(encoded_bytes(enc)) / static_cast<double>(rows * cols) == row.bpw);
    std::vector<float> got(want.size());
    decode_rows_to_f32(enc, shape, 0, rows, got.data());
    CHECK(count_mismatches(got, want) == 0);
    // Back to blocks: the type is recognised and the bytes are the original ones.
    REQUIRE(ggml_type_of_quant(*q, rows, cols) == row.type);
    std::vector<uint8_t> back(raw.size());
    quant_to_ggml(*q, row.type, 0, n_blocks, back.data());
    CHECK(back == raw);
    // Ragged columns have no block layout.
    CHECK_FALSE(ggml_type_of_quant(*q, rows * 4, cols / 4).has_value());
  }
}

TEST_CASE("gguf K-type export needs u8 scales of the type's form", "[gguf]") {
  struct Case {
    GgmlType type;
    const char* what;
    void (*spoil)(QuantEncoding&);
  };
  const Case cases[] = {
      {GgmlType::kQ4_K, "6-bit scale overflow",
       [](QuantEncoding& q) {
         std::vector<uint8_t> v(q.scales.data(), q.scales.data() + q.scales.size());
         v[5] = 64;
         q.scales = Bytes::owned(std::move(v));
       }},
      {GgmlType::kQ2_K, "4-bit min overflow",
       [](QuantEncoding& q) {
         std::vector<uint8_t> v(q.mins.data(), q.mins.data() + q.mins.size());
         v[7] = 16;
         q.mins = Bytes::owned(std::move(v));
       }},
      {GgmlType::kQ6_K, "base is not -128 step",
       [](QuantEncoding& q) {
         std::vector<float> m(q.scale_meta.as<float>(), q.scale_meta.as<float>() + q.scale_meta.size() / 4);
         m[1] *= 0.5f;
         q.scale_meta = Bytes::from_vector(m);
       }},
      {GgmlType::kQ5_K, "step is not an f16 value",
       [](QuantEncoding& q) {
         std::vector<float> m(q.scale_meta.as<float>(), q.scale_meta.as<float>() + q.scale_meta.size() / 4);
         m[2] = 1.0f + 1.0f / 4096.0f;
         q.scale_meta = Bytes::from_vector(m);
       }},
      {GgmlType::kQ3_K, "group size changed", [](QuantEncoding& q) { q.group_size = 32; }},
  };
  for (const Case& c : cases) {
    const GgmlTypeInfo& info = ggml_type_info(c.type);
    INFO(info.name << ": " << c.what);
    const auto raw = test::random_ggml_blocks(info, 4, 77);
    auto q = ggml_to_quant(info, raw.data(), 2, 512);
    REQUIRE(q.has_value());
    REQUIRE(ggml_type_of_quant(*q, 2, 512) == c.type);
    c.spoil(*q);
    CHECK_FALSE(ggml_type_of_quant(*q, 2, 512).has_value());
  }
}

// A model whose 2-D tensors are Quant encodings of random blocks of every mapped type in turn
// (dim 256 and FFN 512: every row is whole K blocks); `raw` receives each tensor's blocks.
Model make_block_type_model(std::map<std::string, std::pair<GgmlType, std::vector<uint8_t>>>& raw) {
  Model m = test::make_gguf_test_model(ModelFamily::kLlama, 96, false);
  ModelConfig& c = m.config;
  c.dim = 256;
  c.hidden_dim = 512;
  c.n_layers = 2;
  c.head_dim = 64;
  Model out;
  out.config = c;
  out.tokenizer = m.tokenizer;
  out.metadata = m.metadata;
  size_t k = 0;
  for (const TensorSpec& spec : expected_tensors(c)) {
    if (spec.shape.dims.size() != 2) {
      REQUIRE(out.add(make_dense_f32(spec.name, spec.shape, std::vector<float>(spec.shape.numel(), 1.0f))).ok());
      continue;
    }
    const QuantLayoutRow& row = kQuantLayouts[k++ % std::size(kQuantLayouts)];
    const GgmlTypeInfo& info = ggml_type_info(row.type);
    const int64_t rows = spec.shape.rows(), cols = spec.shape.cols();
    auto blocks = test::random_ggml_blocks(info, rows * cols / info.block_size, static_cast<uint32_t>(k));
    auto q = ggml_to_quant(info, blocks.data(), rows, cols);
    REQUIRE(q.has_value());
    REQUIRE(out.add(Tensor{spec.name, spec.shape, std::make_shared<Encoding>(Encoding{std::move(*q)})}).ok());
    raw[spec.name] = {row.type, std::move(blocks)};
  }
  return out;
}

void check_same_blocks(const Model& m, const std::map<std::string, std::pair<GgmlType, std::vector<uint8_t>>>& raw) {
  for (const auto& [name, want] : raw) {
    INFO(name << " " << ggml_type_info(want.first).name);
    const Tensor& t = m.get(name);
    const auto* q = std::get_if<QuantEncoding>(&t.encoding->node);
    REQUIRE(q != nullptr);
    REQUIRE(ggml_type_of_quant(*q, t.rows(), t.cols()) == want.first);
    std::vector<uint8_t> back(want.second.size());
    quant_to_ggml(*q, want.first, 0, t.numel() / ggml_type_info(want.first).block_size, back.data());
    CHECK(back == want.second);
  }
}

TEST_CASE("gguf -> .llmc -> gguf keeps every quantized block type byte for byte", "[gguf]") {
  test::TempDir dir;
  std::map<std::string, std::pair<GgmlType, std::vector<uint8_t>>> raw;
  const Model m = make_block_type_model(raw);
  REQUIRE(raw.size() >= std::size(kQuantLayouts));  // every type is used at least once
  REQUIRE(write_gguf(m, dir.path("a.gguf"), {}).ok());
  auto a = read_gguf(dir.path("a.gguf"), true);
  REQUIRE(a.ok());
  check_same_blocks(*a, raw);
  REQUIRE(write_llmc(*a, dir.path("a.llmc"), {}).ok());
  auto l = read_llmc(dir.path("a.llmc"));
  REQUIRE(l.ok());
  check_same_blocks(*l, raw);
  REQUIRE(write_gguf(*l, dir.path("b.gguf"), {}).ok());
  auto b = read_gguf(dir.path("b.gguf"), true);
  REQUIRE(b.ok());
  check_same_blocks(*b, raw);
  // Vocabulary only: the tensor table is checked but no tensor is created.
  LoadOptions vocab;
  vocab.tensors = false;
  auto v = load_model(dir.path("b.gguf"), vocab);
  REQUIRE(v.ok());
  CHECK(v->tensors().empty());
  CHECK(v->tokenizer.tokens == m.tokenizer.tokens);
  CHECK(v->config.dim == 256);
}

TEST_CASE("gguf blocks with a non-finite super-scale load as f32 with the decoder's values", "[gguf]") {
  test::TempDir dir;
  std::map<std::string, std::pair<GgmlType, std::vector<uint8_t>>> raw;
  const Model m = make_block_type_model(raw);
  REQUIRE(write_gguf(m, dir.path("a.gguf"), {}).ok());
  auto bytes = test::read_file_bytes(dir.path("a.gguf"));
  // Q3_K and Q6_K hold sub-scales as u8 * d + base: with d = inf that would be NaN where ggml has
  // ±inf, so such a tensor is decoded to f32 instead. Patch d (the last field) of one block.
  int patched = 0;
  for (auto& [name, tb] : raw) {
    if (tb.first != GgmlType::kQ6_K && tb.first != GgmlType::kQ3_K) continue;
    const GgmlTypeInfo& info = ggml_type_info(tb.first);
    auto at = std::search(bytes.begin(), bytes.end(), tb.second.begin(), tb.second.begin() + 64);
    REQUIRE(at != bytes.end());
    const size_t d = static_cast<size_t>(at - bytes.begin()) + static_cast<size_t>(info.type_size) - 2;
    bytes[d] = 0x00;
    bytes[d + 1] = 0x7C;  // f16 +inf
    tb.second[static_cast<size_t>(info.type_size) - 2] = 0x00;
    tb.second[static_cast<size_t>(info.type_size) - 1] = 0x7C;
    CHECK_FALSE(ggml_to_quant(info, tb.second.data(), 1, info.block_size).has_value());
    ++patched;
  }
  REQUIRE(patched >= 2);
  auto back = read_gguf_memory("patched.gguf", nullptr, bytes.data(), bytes.size(), true);
  REQUIRE(back.ok());
  for (const auto& [name, tb] : raw) {
    INFO(name);
    const Tensor& t = back->get(name);
    const GgmlTypeInfo& info = ggml_type_info(tb.first);
    const bool fallback = tb.first == GgmlType::kQ6_K || tb.first == GgmlType::kQ3_K;
    CHECK(std::holds_alternative<DenseEncoding>(t.encoding->node) == fallback);
    std::vector<float> want(static_cast<size_t>(t.numel()));
    info.dequant(tb.second.data(), t.numel() / info.block_size, want.data());
    CHECK(count_mismatches(t.to_f32(), want) == 0);
  }
}

// ---- hostile input

// Hand-assembles GGUF bytes so that each field can be made wrong on purpose.
class GgufBytes {
 public:
  std::vector<uint8_t> b;
  GgufBytes& u8(uint8_t v) { return raw(&v, 1); }
  GgufBytes& u32(uint32_t v) { return raw(&v, 4); }
  GgufBytes& u64(uint64_t v) { return raw(&v, 8); }
  GgufBytes& str(const std::string& s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  GgufBytes& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    raw("GGUF", 4);
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  GgufBytes& kv_str(const std::string& k, const std::string& v) { return str(k).u32(8).str(v); }
  GgufBytes& kv_u32(const std::string& k, uint32_t v) { return str(k).u32(4).u32(v); }
  GgufBytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(offset);
  }
  GgufBytes& pad(size_t a) {
    while (b.size() % a) b.push_back(0);
    return *this;
  }
  GgufBytes& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  GgufBytes& raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
};

Result<Model> parse(const std::vector<uint8_t>& bytes, bool require_tensors = false) {
  return read_gguf_memory("hostile.gguf", nullptr, bytes.data(), bytes.size(), require_tensors);
}

// A vocabulary-only file: 3 keys + `extra_kv` more appended by the caller.
GgufBytes vocab_file(uint64_t extra_kv = 0, uint64_t n_tensors = 0) {
  GgufBytes g;
  g.header(3, n_tensors, 3 + extra_kv).kv_str("general.architecture", "llama").kv_str("tokenizer.ggml.model", "llama");
  g.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(2).str("a").str("b");
  return g;
}

TEST_CASE("gguf hand-assembled baseline files load", "[gguf]") {
  auto ok = parse(vocab_file().b);
  REQUIRE(ok.ok());
  CHECK(ok->tokenizer.tokens == std::vector<std::string>{"a", "b"});
  // v2 has the same layout for little-endian files.
  GgufBytes v2 = vocab_file();
  v2.b[4] = 2;
  CHECK(parse(v2.b).ok());
  // Every value type, nested arrays included, lands in the metadata as text.
  GgufBytes all = vocab_file(6);
  all.str("k.i8").u32(1).u8(0xFE);
  all.str("k.f64").u32(12).u64(0x3FF8000000000000ull);  // 1.5
  all.str("k.bool").u32(7).u8(1);
  all.str("k.i64").u32(11).u64(static_cast<uint64_t>(-5));
  all.str("k.nested").u32(9).u32(9).u64(2).u32(4).u64(1).u32(7).u32(8).u64(1).str("x\"y");
  all.str("general.alignment").u32(4).u32(64);
  auto m = parse(all.b);
  REQUIRE(m.ok());
  CHECK(m->metadata["k.i8"] == "-2");
  CHECK(m->metadata["k.f64"] == "1.5");
  CHECK(m->metadata["k.bool"] == "true");
  CHECK(m->metadata["k.i64"] == "-5");
  CHECK(m->metadata["k.nested"] == "[[7], [\"x\\\"y\"]]");
}

TEST_CASE("gguf rejects hostile headers and key/value tables", "[gguf]") {
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
    const char* expect;  // substring of the error message
  };
  std::vector<Case> cases;
  cases.push_back({"empty", {}, "truncated"});
  cases.push_back({"bad magic", GgufBytes().raw("GGUX", 4).u32(3).u64(0).u64(0).b, "bad magic"});
  cases.push_back({"v1", GgufBytes().header(1, 0, 0).b, "version 1"});
  cases.push_back({"v99", GgufBytes().header(99, 0, 0).b, "version 99"});
  cases.push_back({"big-endian", GgufBytes().header(0x03000000u, 0, 0).b, "big-endian"});
  cases.push_back({"huge kv count", GgufBytes().header(3, 0, 1ull << 62).zeros(64).b, "key/value count"});
  cases.push_back({"huge tensor count", GgufBytes().header(3, 1ull << 62, 0).zeros(64).b, "tensor count"});
  cases.push_back({"huge key length", GgufBytes().header(3, 0, 1).u64(1ull << 60).zeros(16).b, "string length"});
  cases.push_back(
      {"huge value length", GgufBytes().header(3, 0, 1).str("k").u32(8).u64(1ull << 60).zeros(8).b, "string length"});
  cases.push_back({"unknown value type", GgufBytes().header(3, 0, 1).str("k").u32(13).u32(0).b, "unknown value type"});
  cases.push_back({"unknown element type", GgufBytes().header(3, 0, 1).str("k").u32(9).u32(99).u64(0).b,
                   "unknown array element type"});
  cases.push_back(
      {"huge array", GgufBytes().header(3, 0, 1).str("k").u32(9).u32(10).u64(1ull << 61).zeros(8).b, "array of"});
  cases.push_back(
      {"huge string array", GgufBytes().header(3, 0, 1).str("k").u32(9).u32(8).u64(1ull << 40).zeros(8).b, "array of"});
  {
    GgufBytes g;
    g.header(3, 0, 1).str("k").u32(9);  // an array of arrays of arrays ...
    for (int i = 0; i < 6; ++i) g.u32(9).u64(1);
    g.u32(4).u64(0);
    cases.push_back({"deep nesting", g.b, "nested too deeply"});
  }
  cases.push_back({"truncated array", GgufBytes().header(3, 0, 1).str("k").u32(9).u32(4).u64(3).u32(1).b, "array of"});
  cases.push_back({"duplicate key", GgufBytes().header(3, 0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2).b, "duplicate key"});
  cases.push_back({"bad bool", GgufBytes().header(3, 0, 1).str("k").u32(7).u8(7).b, "neither 0 nor 1"});
  cases.push_back({"alignment 3", vocab_file(1).kv_u32("general.alignment", 3).b, "power of two"});
  cases.push_back({"alignment 0", vocab_file(1).kv_u32("general.alignment", 0).b, "power of two"});
  cases.push_back({"alignment string", vocab_file(1).kv_str("general.alignment", "32").b, "unsigned integer"});
  cases.push_back({"tokens not strings",
                   GgufBytes()
                       .header(3, 0, 2)
                       .kv_str("tokenizer.ggml.model", "llama")
                       .str("tokenizer.ggml.tokens")
                       .u32(9)
                       .u32(4)
                       .u64(1)
                       .u32(5)
                       .b,
                   "array of strings"});
  cases.push_back({"scores count mismatch", vocab_file(1).str("tokenizer.ggml.scores").u32(9).u32(6).u64(3).zeros(12).b,
                   "expected an array of 2 f32"});
  cases.push_back({"block_count as string",
                   GgufBytes()
                       .header(3, 1, 4)
                       .kv_str("general.architecture", "llama")
                       .kv_u32("llama.embedding_length", 64)
                       .kv_u32("llama.feed_forward_length", 64)
                       .kv_str("llama.block_count", "30")
                       .tensor("x", {32}, 0, 0)
                       .pad(32)
                       .zeros(128)
                       .b,
                   "expected an integer"});
  for (const Case& c : cases) {
    INFO(c.what);
    auto r = parse(c.bytes);
    REQUIRE_FALSE(r.ok());
    INFO(r.error().message);
    CHECK(r.error().message.find(c.expect) != std::string::npos);
    CHECK(r.error().message.find("hostile.gguf") != std::string::npos);
  }
}

TEST_CASE("gguf rejects hostile tensor tables", "[gguf]") {
  struct Case {
    const char* what;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t offset;
    size_t data_bytes;
    const char* expect;
  };
  const Case cases[] = {
      {"0 dims", {}, 0, 0, 64, "n_dims 0"},
      {"5 dims", {1, 1, 1, 1, 1}, 0, 0, 64, "n_dims 5"},
      {"zero dim", {32, 0}, 0, 0, 64, "not positive"},
      {"negative dim", {32, 1ull << 63}, 0, 0, 64, "not positive"},
      {"overflowing dims", {1ull << 40, 1ull << 40}, 0, 0, 64, "overflows"},
      {"absurd dims", {1ull << 20, 1ull << 20}, 0, 0, 64, "larger than the file"},
      {"unknown type", {32}, 99, 0, 128, "unknown ggml type 99"},
      {"ragged block", {31}, 8, 0, 128, "not a multiple of the Q8_0 block size"},
      {"unaligned offset", {8}, 0, 4, 128, "not a multiple of the alignment"},
      {"offset past end", {8}, 0, 1ull << 62, 128, "past the end"},
      {"data past end", {64}, 0, 0, 128, "past the end"},
      {"no decoder", {32}, 9, 0, 128, "cannot decode"},
      {"ragged K block", {128}, 12, 0, 512, "not a multiple of the Q4_K block size"},
      {"K data past end", {512}, 14, 0, 300, "past the end"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    GgufBytes g;
    g.header(3, 1, 1)
        .kv_str("general.architecture", "llama")
        .tensor("t", c.ne, c.type, c.offset)
        .pad(32)
        .zeros(c.data_bytes);
    auto r = parse(g.b);
    REQUIRE_FALSE(r.ok());
    INFO(r.error().message);
    CHECK(r.error().message.find(c.expect) != std::string::npos);
    CHECK(r.error().message.find("'t'") != std::string::npos);
  }
  GgufBytes dup;
  dup.header(3, 2, 0).tensor("t", {8}, 0, 0).tensor("t", {8}, 0, 32).pad(32).zeros(64);
  auto r = parse(dup.b);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("duplicate tensor name") != std::string::npos);
  // A file with tensors but an unsupported architecture is refused clearly.
  GgufBytes arch;
  arch.header(3, 1, 1).kv_str("general.architecture", "mamba").tensor("t", {8}, 0, 0).pad(32).zeros(32);
  auto a = parse(arch.b);
  REQUIRE_FALSE(a.ok());
  CHECK(a.error().code == ErrorCode::kUnsupported);
  CHECK(a.error().message.find("mamba") != std::string::npos);
}

TEST_CASE("gguf survives truncations and random corruption of a real file", "[gguf]") {
  test::TempDir dir;
  Model m = test::make_gguf_test_model(ModelFamily::kLlama, 32, false);
  REQUIRE(write_gguf(m, dir.path("m.gguf"), {ExportDType::kQ8_0}).ok());
  const auto bytes = test::read_file_bytes(dir.path("m.gguf"));
  REQUIRE(parse(bytes, true).ok());
  CHECK_FALSE(read_gguf(dir.path("missing.gguf"), true).ok());
  // Every truncation short of the last tensor's padding is an error (never a crash).
  for (size_t n = 0; n + 32 < bytes.size(); n += (n < 4096 ? 1 : 97)) {
    auto r = parse(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(n)), true);
    if (r.ok()) FAIL("truncation to " << n << " bytes loaded");
  }
  std::mt19937 rng(99);
  const size_t header_end = 4096 < bytes.size() ? 4096 : bytes.size();
  int loaded = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto mutated = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) mutated[rng() % header_end] = static_cast<uint8_t>(rng());
    loaded += parse(mutated, false).ok() ? 1 : 0;
  }
  SUCCEED("random corruptions that still loaded: " << loaded << " of 3000");
}

}  // namespace
}  // namespace llmc
