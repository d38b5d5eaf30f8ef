// GGUF reader and writer: vocabulary fixtures, SmolLM2, round trips and a hostile-input suite.
#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "formats/gguf.h"
#include "formats/gguf_quants.h"
#include "formats/model_io.h"
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

TEST_CASE("gguf Q8_0/Q4_0 export stays within the quantization step; ragged rows fall back to F16", "[gguf]") {
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
