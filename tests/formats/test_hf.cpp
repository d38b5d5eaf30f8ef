// Hugging Face reader/writer: round trips (single, sharded), q/k permutation, tokenizer.json,
// hostile safetensors/config inputs, and a peer check against the official safetensors package.
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "formats/file_io.h"
#include "formats/hf_common.h"
#include "formats/hf_tokenizer.h"
#include "formats/model_io.h"
#include "formats/safetensors.h"
#include "model/arch.h"
#include "test_util.h"

using namespace llmc;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

ModelConfig tiny_llama_config() {
  ModelConfig c;
  c.family = ModelFamily::kLlama;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 40;
  c.context_length = 256;
  c.norm_eps = 1e-5f;
  c.rope_theta = 500000.0f;
  c.rope_style = RopeStyle::kInterleaved;
  c.rope_scaling = RopeScaling{RopeScalingType::kLlama3, 8.0f, 1.0f, 4.0f, 8192};
  c.tied_embeddings = false;
  return c;
}

ModelConfig tiny_qwen2_config() {
  ModelConfig c = tiny_llama_config();
  c.family = ModelFamily::kQwen2;
  c.rope_style = RopeStyle::kNeox;
  c.rope_scaling = RopeScaling{};
  c.rope_theta = 1000000.0f;
  c.norm_eps = 1e-6f;
  c.attn_qkv_bias = true;
  c.tied_embeddings = true;
  c.n_kv_heads = 1;
  return c;
}

// A byte-level BPE vocabulary: 32 normal pieces, merges, two control tokens, padding slots.
TokenizerData tiny_bpe_tokenizer(int64_t vocab) {
  TokenizerData t;
  t.kind = TokenizerKind::kBytePairGpt2;
  const char* pieces[] = {"a", "b", "c", "d", "e", "Ġ", "ab", "cd", "Ġa", "abcd", "Ġab", "ee"};
  for (const char* p : pieces) t.tokens.push_back(p);
  while (t.tokens.size() < 32) t.tokens.push_back("x" + std::to_string(t.tokens.size()));
  t.tokens.push_back("<|endoftext|>");
  t.tokens.push_back("<|im_start|>");
  t.token_types.assign(t.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  t.token_types[32] = t.token_types[33] = static_cast<int32_t>(TokenType::kControl);
  while (static_cast<int64_t>(t.tokens.size()) < vocab) {
    t.tokens.push_back("[PAD" + std::to_string(t.tokens.size()) + "]");
    t.token_types.push_back(static_cast<int32_t>(TokenType::kUnused));
  }
  t.merges = {"a b", "c d", "Ġ a", "ab cd", "Ġa b", "e e"};
  t.pre = "smollm";
  t.bos_id = 33;
  t.eos_id = 32;
  t.add_bos = false;
  return t;
}

Model make_model(const ModelConfig& c, uint32_t seed, DType dtype) {
  Model m;
  m.config = c;
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  for (const auto& spec : expected_tensors(c)) {
    std::vector<float> v(static_cast<size_t>(spec.shape.numel()));
    for (float& x : v) x = dist(rng);
    REQUIRE(m.add(make_dense(spec.name, spec.shape, v, dtype)).ok());
  }
  m.tokenizer = tiny_bpe_tokenizer(c.vocab_size);
  return m;
}

void require_same_tokenizer(const TokenizerData& a, const TokenizerData& b) {
  CHECK(a.kind == b.kind);
  CHECK(a.tokens == b.tokens);
  CHECK(a.token_types == b.token_types);
  CHECK(a.merges == b.merges);
  CHECK(a.pre == b.pre);
  CHECK(a.bos_id == b.bos_id);
  CHECK(a.eos_id == b.eos_id);
  CHECK(a.add_bos == b.add_bos);
}

// Raw safetensors bytes from a header text and a data buffer of `data_size` bytes (value i % 251).
std::vector<unsigned char> safetensors_bytes(const std::string& header, size_t data_size) {
  std::vector<unsigned char> out(8);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_size; ++i) out.push_back(static_cast<unsigned char>(i % 251));
  return out;
}

Result<SafetensorsHeader> parse_bytes(const std::vector<unsigned char>& b) {
  return parse_safetensors("test.safetensors", b.data(), b.size());
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::string read_text(const std::string& path) {
  auto b = test::read_file_bytes(path);
  return std::string(b.begin(), b.end());
}

}  // namespace

TEST_CASE("rope permutation matches llama.cpp's permute on a hand-worked head", "[hf]") {
  // One head of head_dim 4, rows r0..r3: reshape(1, 2, 2, cols).swapaxes(1, 2) gives r0 r2 r1 r3.
  const uint8_t hf[4] = {10, 11, 12, 13};
  uint8_t inter[4], back[4];
  permute_rope_rows(hf, inter, 1, 4, 1, true);
  CHECK(std::vector<uint8_t>(inter, inter + 4) == std::vector<uint8_t>{10, 12, 11, 13});
  permute_rope_rows(inter, back, 1, 4, 1, false);
  CHECK(std::vector<uint8_t>(back, back + 4) == std::vector<uint8_t>{10, 11, 12, 13});
  // Two heads of head_dim 6: per head [a0 a1 a2 | b0 b1 b2] -> a0 b0 a1 b1 a2 b2.
  const uint8_t hf2[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  uint8_t inter2[12];
  permute_rope_rows(hf2, inter2, 2, 6, 1, true);
  CHECK(std::vector<uint8_t>(inter2, inter2 + 12) == std::vector<uint8_t>{0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11});
}

TEST_CASE("tensor names map both ways", "[hf]") {
  CHECK(hf_to_canonical_name("model.layers.12.self_attn.q_proj.weight") == "blk.12.attn_q.weight");
  CHECK(hf_to_canonical_name("model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight");
  CHECK(hf_to_canonical_name("model.layers.3.post_attention_layernorm.weight") == "blk.3.ffn_norm.weight");
  CHECK(hf_to_canonical_name("model.embed_tokens.weight") == "token_embd.weight");
  CHECK(hf_to_canonical_name("lm_head.weight") == "output.weight");
  CHECK(hf_to_canonical_name("model.layers.01.mlp.up_proj.weight") == std::nullopt);
  CHECK(hf_to_canonical_name("model.layers.x.mlp.up_proj.weight") == std::nullopt);
  CHECK(hf_to_canonical_name("model.layers.1.mlp.bogus") == std::nullopt);
  CHECK(canonical_to_hf_name("blk.7.attn_v.bias") == "model.layers.7.self_attn.v_proj.bias");
}

TEST_CASE("llama write_safetensors -> read_hf round trips exactly", "[hf]") {
  test::TempDir tmp;
  const Model m = make_model(tiny_llama_config(), 1, DType::kF32);
  const std::string dir = tmp.path("out");
  REQUIRE(write_safetensors(m, dir, {}).ok());
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"})
    CHECK(fs::exists(fs::path(dir) / f));
  for (const std::string& path : {dir, dir + "/config.json", dir + "/model.safetensors"}) {
    INFO(path);
    auto r = read_hf(path);
    REQUIRE(r.ok());
    CHECK(r->config == m.config);
    llmc::test::require_same_tensors(m, *r);
    require_same_tokenizer(m.tokenizer, r->tokenizer);
    CHECK(r->metadata.at("hf.architecture") == "LlamaForCausalLM");
  }
  // config.json carries HF's own key names and values.
  const Json cfg = Json::parse(read_text(dir + "/config.json"));
  CHECK(cfg["architectures"][0] == "LlamaForCausalLM");
  CHECK(cfg["num_key_value_heads"] == 2);
  CHECK(cfg["rms_norm_eps"].get<double>() == 1e-5);
  CHECK(cfg["rope_scaling"]["rope_type"] == "llama3");
  // load_model dispatches folders to this reader.
  auto loaded = load_model(dir);
  REQUIRE(loaded.ok());
  CHECK(loaded->metadata.at("source.format") == "safetensors");
}

TEST_CASE("qwen2 round trips in f16 and bf16, keeping dtypes and NeoX order", "[hf]") {
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    test::TempDir tmp;
    const Model m = make_model(tiny_qwen2_config(), 2, dtype);
    REQUIRE(write_safetensors(m, tmp.path("q"), {}).ok());
    auto r = read_hf(tmp.path("q"));
    REQUIRE(r.ok());
    CHECK(r->config == m.config);
    CHECK(r->config.rope_style == RopeStyle::kNeox);
    llmc::test::require_same_tensors(m, *r);
    for (const auto& t : r->tensors()) CHECK(std::get<DenseEncoding>(t.encoding->node).dtype == dtype);
    // NeoX layout is stored unchanged: bytes of q equal bytes in the file order.
    const Json cfg = Json::parse(read_text(tmp.path("q/config.json")));
    CHECK(cfg["architectures"][0] == "Qwen2ForCausalLM");
    CHECK(cfg["tie_word_embeddings"] == true);
  }
}

TEST_CASE("export dtype converts and quantized tensors are decoded", "[hf]") {
  test::TempDir tmp;
  Model m = make_model(tiny_llama_config(), 3, DType::kF32);
  // Replace ffn_up of layer 0 by a symmetric 8-bit quant encoding.
  const Tensor& up = m.get("blk.0.ffn_up.weight");
  QuantEncoding q;
  q.bits = 8;
  q.group_size = 32;
  q.scale_dtype = DType::kF32;
  std::vector<uint8_t> codes(static_cast<size_t>(up.numel()));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(i * 7);
  std::vector<float> scales(static_cast<size_t>(up.rows() * 2), 0.01f);
  q.codes = Bytes::owned(codes);
  q.scales = Bytes::from_vector(scales);
  m.replace(Tensor{up.name, up.shape, std::make_shared<Encoding>(Encoding{q})});
  const std::vector<float> up_values = m.get("blk.0.ffn_up.weight").to_f32();
  CHECK(up_values[1] == (7 - 128) * 0.01f);

  REQUIRE(write_safetensors(m, tmp.path("keep"), {}).ok());
  auto r = read_hf(tmp.path("keep"));
  REQUIRE(r.ok());
  CHECK(r->get("blk.0.ffn_up.weight").to_f32() == up_values);

  REQUIRE(write_safetensors(m, tmp.path("bf16"), {ExportDType::kBF16}).ok());
  auto b = read_hf(tmp.path("bf16"));
  REQUIRE(b.ok());
  const auto orig = m.get("blk.1.attn_q.weight").to_f32();
  const auto got = b->get("blk.1.attn_q.weight").to_f32();
  for (size_t i = 0; i < orig.size(); ++i) REQUIRE(got[i] == bf16_to_f32(f32_to_bf16(orig[i])));
  CHECK(Json::parse(read_text(tmp.path("bf16/config.json")))["torch_dtype"] == "bfloat16");

  CHECK(write_safetensors(m, tmp.path("q8"), {ExportDType::kQ8_0}).error().code == ErrorCode::kInvalidArgument);
  CHECK(!fs::exists(tmp.path("q8")));
}

TEST_CASE("write_safetensors replaces an existing folder and leaves no temporaries", "[hf]") {
  test::TempDir tmp;
  const std::string dir = tmp.path("out");
  fs::create_directories(dir);
  write_text(dir + "/stale.txt", "old");
  REQUIRE(write_safetensors(make_model(tiny_llama_config(), 4, DType::kF32), dir, {}).ok());
  CHECK(!fs::exists(dir + "/stale.txt"));
  CHECK(fs::exists(dir + "/model.safetensors"));
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.dir())) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("sharded checkpoints with an index read like the single file", "[hf]") {
  test::TempDir tmp;
  const Model m = make_model(tiny_llama_config(), 5, DType::kF32);
  const std::string single = tmp.path("single");
  REQUIRE(write_safetensors(m, single, {}).ok());
  // Split model.safetensors by hand into two shards (every second tensor), with its own header.
  const auto bytes = test::read_file_bytes(single + "/model.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  const Json header = Json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
  const std::string dir = tmp.path("sharded");
  fs::create_directories(dir);
  Json shard_headers[2] = {Json::object(), Json::object()};
  std::vector<unsigned char> shard_data[2];
  Json weight_map = Json::object();
  size_t i = 0;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const int s = static_cast<int>(i++ % 2);
    const uint64_t b = entry["data_offsets"][0], e = entry["data_offsets"][1];
    const uint64_t at = shard_data[s].size();
    shard_data[s].insert(shard_data[s].end(), bytes.begin() + 8 + n + b, bytes.begin() + 8 + n + e);
    shard_headers[s][name] = {
        {"dtype", entry["dtype"]}, {"shape", entry["shape"]}, {"data_offsets", {at, at + (e - b)}}};
    weight_map[name] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  for (int s = 0; s < 2; ++s) {
    auto file = safetensors_bytes(shard_headers[s].dump(), 0);
    file.insert(file.end(), shard_data[s].begin(), shard_data[s].end());
    test::write_file_bytes(dir + "/model-0000" + std::to_string(s + 1) + "-of-00002.safetensors", file);
  }
  write_text(dir + "/model.safetensors.index.json",
             Json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
  fs::copy_file(single + "/config.json", dir + "/config.json");
  fs::copy_file(single + "/tokenizer.json", dir + "/tokenizer.json");
  for (const std::string& path : {dir, dir + "/model.safetensors.index.json"}) {
    auto r = read_hf(path);
    REQUIRE(r.ok());
    CHECK(r->config == m.config);
    llmc::test::require_same_tensors(m, *r);
  }
  // The index must not lead out of the folder or to a shard without the tensor.
  Json bad = {{"weight_map", weight_map}};
  bad["weight_map"]["model.norm.weight"] = "../single/model.safetensors";
  write_text(dir + "/model.safetensors.index.json", bad.dump());
  auto e1 = read_hf(dir);
  REQUIRE(!e1.ok());
  CHECK_THAT(e1.error().message, Catch::Contains("not a file name"));
  bad["weight_map"]["model.norm.weight"] =
      weight_map["model.embed_tokens.weight"].get<std::string>() == "model-00001-of-00002.safetensors"
          ? "model-00002-of-00002.safetensors"
          : "model-00001-of-00002.safetensors";
  bad["weight_map"]["model.embed_tokens.weight"] = bad["weight_map"]["model.norm.weight"];
  write_text(dir + "/model.safetensors.index.json", bad.dump());
  CHECK(!read_hf(dir).ok());
}

TEST_CASE("hostile safetensors headers give clear errors", "[hf]") {
  const std::string good =
      R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"format":"pt"}})";
  auto ok = parse_bytes(safetensors_bytes(good, 24));
  REQUIRE(ok.ok());
  REQUIRE(ok->tensors.size() == 1);
  CHECK(ok->tensors[0].begin == 8 + good.size());
  CHECK(ok->metadata.at("format") == "pt");

  struct Case {
    const char* what;
    std::string header;
    size_t data;
    ErrorCode code;
    const char* mentions;
  };
  const Case cases[] = {
      {"offsets past data", R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})", 20, ErrorCode::kFormat,
       "past the end"},
      {"reversed offsets", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 24, ErrorCode::kFormat,
       "reversed"},
      {"dtype x shape mismatch", R"({"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,24]}})", 24, ErrorCode::kFormat,
       "needs"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
       24, ErrorCode::kFormat, "overlaps"},
      {"duplicate",
       R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       2, ErrorCode::kFormat, "duplicate"},
      {"bad json", R"({"a":{"dtype":"F32",)", 0, ErrorCode::kFormat, "invalid JSON"},
      {"not object", R"([1,2])", 0, ErrorCode::kFormat, "not a JSON object"},
      {"unknown dtype", R"({"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", 1, ErrorCode::kUnsupported, "F4"},
      {"negative dim", R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1, ErrorCode::kFormat,
       "non-negative"},
      {"absurd shape", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,1]}})", 1,
       ErrorCode::kFormat, "too large"},
      {"missing offsets", R"({"a":{"dtype":"F32","shape":[1]}})", 4, ErrorCode::kFormat, "data_offsets"},
      {"extra key", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4, ErrorCode::kFormat,
       "unknown key"},
      {"deep nesting", R"({"__metadata__":{"x":[[[[[[1]]]]]]}})", 0, ErrorCode::kFormat, "nested"},
      {"metadata not strings", R"({"__metadata__":{"x":1}})", 0, ErrorCode::kFormat, "not a string"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto r = parse_bytes(safetensors_bytes(c.header, c.data));
    REQUIRE(!r.ok());
    CHECK(r.error().code == c.code);
    CHECK_THAT(r.error().message, Catch::Contains(c.mentions) && Catch::Contains("test.safetensors"));
  }

  auto bytes = safetensors_bytes(good, 24);
  // Header length past EOF, over the cap, and files truncated at every length.
  uint64_t n = bytes.size();
  std::memcpy(bytes.data(), &n, 8);
  CHECK_THAT(parse_bytes(bytes).error().message, Catch::Contains("past the end of the file"));
  n = uint64_t(1) << 40;
  std::memcpy(bytes.data(), &n, 8);
  CHECK_THAT(parse_bytes(bytes).error().message, Catch::Contains("exceeds the limit"));
  const auto whole = safetensors_bytes(good, 24);
  for (size_t len = 0; len < whole.size(); ++len) {
    std::vector<unsigned char> cut(whole.begin(), whole.begin() + static_cast<long>(len));
    REQUIRE(!parse_bytes(cut).ok());
  }
}

TEST_CASE("hostile Hugging Face folders: configs, dtypes, missing and extra tensors", "[hf]") {
  test::TempDir tmp;
  const Model m = make_model(tiny_llama_config(), 6, DType::kF32);
  const std::string dir = tmp.path("m");
  REQUIRE(write_safetensors(m, dir, {}).ok());
  const std::string config = read_text(dir + "/config.json");

  struct ConfigCase {
    const char* what;
    const char* key;
    Json value;  // null: remove the key
    ErrorCode code;
    const char* mentions;
  };
  const ConfigCase cases[] = {
      {"missing hidden_size", "hidden_size", nullptr, ErrorCode::kFormat, "missing config key 'hidden_size'"},
      {"string layers", "num_hidden_layers", "2", ErrorCode::kFormat, "not an integer"},
      {"absurd layers", "num_hidden_layers", 1000000000, ErrorCode::kFormat, "num_hidden_layers"},
      {"absurd vocab", "vocab_size", int64_t(1) << 40, ErrorCode::kFormat, "vocab_size"},
      {"wrong dim", "hidden_size", 32, ErrorCode::kShape, "shape"},
      {"gqa not dividing", "num_key_value_heads", 3, ErrorCode::kFormat, "n_kv_heads"},
      {"unknown arch", "architectures", Json::array({"GPT2LMHeadModel"}), ErrorCode::kUnsupported, "GPT2LMHeadModel"},
      {"yarn", "rope_scaling", Json{{"rope_type", "yarn"}, {"factor", 4.0}}, ErrorCode::kUnsupported, "yarn"},
      {"gelu", "hidden_act", "gelu", ErrorCode::kUnsupported, "hidden_act"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    Json j = Json::parse(config);
    if (c.value.is_null())
      j.erase(c.key);
    else
      j[c.key] = c.value;
    write_text(dir + "/config.json", j.dump());
    auto r = read_hf(dir);
    REQUIRE(!r.ok());
    CHECK(r.error().code == c.code);
    CHECK_THAT(r.error().message, Catch::Contains(c.mentions));
  }
  write_text(dir + "/config.json", "{\"architectures\": [");
  CHECK_THAT(read_hf(dir).error().message, Catch::Contains("config.json") && Catch::Contains("invalid JSON"));
  // Declared tied while lm_head is stored: HF ties them anyway, so the embedding is the output.
  Json tied = Json::parse(config);
  tied["tie_word_embeddings"] = true;
  write_text(dir + "/config.json", tied.dump());
  auto t = read_hf(dir);
  REQUIRE(t.ok());
  CHECK(t->find("output.weight") == nullptr);
  write_text(dir + "/config.json", config);
  REQUIRE(read_hf(dir).ok());

  // Rewrite the weights with a changed header: a missing tensor, an integer dtype, an unknown name.
  const auto bytes = test::read_file_bytes(dir + "/model.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  const Json header = Json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
  auto rewrite = [&](const Json& h) {
    auto file = safetensors_bytes(h.dump(), 0);
    file.insert(file.end(), bytes.begin() + 8 + static_cast<long>(n), bytes.end());
    test::write_file_bytes(dir + "/model.safetensors", file);
    return read_hf(dir);
  };
  Json h = header;
  h.erase("model.layers.1.mlp.up_proj.weight");
  auto r1 = rewrite(h);
  REQUIRE(!r1.ok());
  CHECK_THAT(r1.error().message, Catch::Contains("missing tensor 'model.layers.1.mlp.up_proj.weight'"));
  h = header;
  h["model.norm.weight"]["dtype"] = "I32";
  auto r2 = rewrite(h);
  REQUIRE(!r2.ok());
  CHECK(r2.error().code == ErrorCode::kUnsupported);
  CHECK_THAT(r2.error().message, Catch::Contains("model.norm.weight") && Catch::Contains("I32"));
  h = header;
  h["model.layers.0.self_attn.o_proj.bias"] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
  auto r3 = rewrite(h);
  REQUIRE(!r3.ok());
  CHECK_THAT(r3.error().message, Catch::Contains("unknown tensor 'model.layers.0.self_attn.o_proj.bias'"));
  h = header;
  h["model.norm.weight"]["shape"] = {16, 4};
  auto r4 = rewrite(h);
  REQUIRE(!r4.ok());
  CHECK(r4.error().code == ErrorCode::kShape);
  REQUIRE(rewrite(header).ok());
  {
    // Offsets that are not multiples of the element size (allowed by the format) still read.
    Json shifted = header;
    for (auto& [name, entry] : shifted.items())
      if (name != "__metadata__")
        entry["data_offsets"] = {entry["data_offsets"][0].get<uint64_t>() + 2,
                                 entry["data_offsets"][1].get<uint64_t>() + 2};
    std::string text = shifted.dump();
    text.append((4 - text.size() % 4) % 4, ' ');  // data starts 4-aligned, every tensor at +2
    auto file = safetensors_bytes(text, 2);
    file.insert(file.end(), bytes.begin() + 8 + static_cast<long>(n), bytes.end());
    test::write_file_bytes(dir + "/model.safetensors", file);
    auto r = read_hf(dir);
    REQUIRE(r.ok());
    llmc::test::require_same_tensors(m, *r);
    for (const auto& t : r->tensors())
      CHECK(reinterpret_cast<uintptr_t>(std::get<DenseEncoding>(t.encoding->node).data.data()) % 4 == 0);
  }
  // A folder without weights, and one without config.json.
  fs::remove(dir + "/model.safetensors");
  CHECK(!read_hf(dir).ok());
  CHECK(!read_hf(tmp.path("nothing")).ok());
}

TEST_CASE("tokenizer.json: byte-level BPE, merges as strings or pairs, pre-tokenizer names", "[hf]") {
  const std::string vocab = R"("vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4, "<|endoftext|>": 5})";
  auto make = [&](const std::string& pre, const std::string& merges) {
    return "{\"added_tokens\": [{\"id\": 5, \"content\": \"<|endoftext|>\", \"special\": true}, "
           "{\"id\": 7, \"content\": \"<user>\", \"special\": false}], \"pre_tokenizer\": " +
           pre + ", \"model\": {\"type\": \"BPE\", " + vocab + ", \"merges\": " + merges + "}}";
  };
  const std::string byte_level = R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";
  const std::string llama3 =
      R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "use_regex": false}]})";
  const std::string smollm =
      R"({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, )" + byte_level + "]}";

  auto gpt2 = parse_hf_tokenizer("t.json", make(byte_level, R"(["a b", "Ġ ab"])"), "");
  REQUIRE(gpt2.ok());
  CHECK(gpt2->kind == TokenizerKind::kBytePairGpt2);
  CHECK(gpt2->tokens == std::vector<std::string>{"a", "b", "ab", "Ġ", "Ġab", "<|endoftext|>", "[PAD6]", "<user>"});
  CHECK(gpt2->token_types ==
        std::vector<int32_t>{1, 1, 1, 1, 1, 3, 5, 4});  // normal, control, unused hole, user-defined (GGUF numbers)
  CHECK(gpt2->merges == std::vector<std::string>{"a b", "Ġ ab"});
  CHECK(gpt2->pre == "gpt2");

  HfTokenizerInfo info;
  auto l3 = parse_hf_tokenizer(
      "t.json", make(llama3, R"([["a", "b"], ["Ġ", "ab"]])"),
      R"({"bos_token": "<|endoftext|>", "eos_token": {"content": "<user>"}, "add_bos_token": true})", &info);
  REQUIRE(l3.ok());
  CHECK(l3->merges == std::vector<std::string>{"a b", "Ġ ab"});
  CHECK(l3->pre == "llama-bpe");
  CHECK_THAT(info.pre_regex, Catch::Contains("\\p{N}{1,3}"));
  CHECK(l3->bos_id == 5);
  CHECK(l3->eos_id == 7);
  CHECK(l3->add_bos);
  CHECK(parse_hf_tokenizer("t.json", make(smollm, "[]"), "")->pre == "smollm");

  // Errors: bad JSON, conflicting ids, unknown model type, malformed merges.
  CHECK_THAT(parse_hf_tokenizer("t.json", "{", "").error().message,
             Catch::Contains("t.json") && Catch::Contains("invalid JSON"));
  CHECK(!parse_hf_tokenizer(
             "t.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}}, "pre_tokenizer": )" + byte_level + "}",
             "")
             .ok());
  CHECK(parse_hf_tokenizer("t.json", R"({"model": {"type": "Unigram", "vocab": []}})", "").error().code ==
        ErrorCode::kUnsupported);
  CHECK(!parse_hf_tokenizer("t.json", make(byte_level, R"(["ab"])"), "").ok());
  CHECK(!parse_hf_tokenizer("t.json", make(byte_level, R"([["a"]])"), "").ok());
  CHECK(!parse_hf_tokenizer("t.json",
                            R"({"model": {"vocab": {"a": 99999999999}}, "pre_tokenizer": )" + byte_level + "}", "")
             .ok());
}

TEST_CASE("tokenizer.json: SentencePiece-style BPE (Llama 2) becomes scores and byte tokens", "[hf]") {
  const std::string json = R"({
    "added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
                     {"id": 2, "content": "</s>", "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": null,
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}]},
    "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
              "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "▁": 4, "t": 5, "▁t": 6, "h": 7, "▁th": 8},
              "merges": ["▁ t", "▁t h"]}})";
  auto r = parse_hf_tokenizer("llama.json", json, "");
  REQUIRE(r.ok());
  CHECK(r->kind == TokenizerKind::kSentencePiece);
  CHECK(r->token_types == std::vector<int32_t>{2, 3, 3, 6, 1, 1, 1, 1, 1});
  CHECK(r->bos_id == 1);
  CHECK(r->eos_id == 2);
  CHECK(r->unk_id == 0);
  CHECK(r->add_bos);
  // Merge products score by rank; "▁t" (rank 0) beats "▁th" (rank 1) beats unmerged pieces.
  CHECK(r->scores[6] == 0.0f);
  CHECK(r->scores[8] == -1.0f);
  CHECK(r->scores[5] < r->scores[8]);
  CHECK(r->scores[4] > r->scores[5]);
}

TEST_CASE("official safetensors package reads our output and we read its output", "[hf][peer]") {
  if (std::system("python3 -c 'import numpy, safetensors.numpy' >/dev/null 2>&1") != 0) {
    if (std::getenv("CI")) FAIL("python3 with numpy and safetensors is required under CI");
    WARN("skipping: python3 with numpy and safetensors not available");
    return;
  }
  test::TempDir tmp;
  const Model m = make_model(tiny_llama_config(), 7, DType::kF32);
  REQUIRE(write_safetensors(m, tmp.path("out"), {}).ok());
  fs::create_directories(tmp.path("canon"));
  Json manifest = Json::object();
  for (const auto& t : m.tensors()) {
    const auto v = t.to_f32();
    test::write_file_bytes(tmp.path("canon/" + t.name + ".f32"),
                           std::vector<unsigned char>(reinterpret_cast<const unsigned char*>(v.data()),
                                                      reinterpret_cast<const unsigned char*>(v.data() + v.size())));
    manifest[t.name] = {t.shape.dims, rope_heads_of(t.name, m.config)};
  }
  write_text(tmp.path("canon/manifest.json"), manifest.dump());
  const std::string script = std::string(LLMC_SOURCE_DIR) + "/tests/formats/hf_peer.py";
  const auto res =
      std::system(("python3 " + script + " " + tmp.dir().string() + " >" + tmp.path("peer.log") + " 2>&1").c_str());
  INFO(read_text(tmp.path("peer.log")));
  REQUIRE(res == 0);
  // The package's own file (different header order and padding) with our config reads back equal.
  fs::copy_file(tmp.path("out/config.json"), tmp.path("py/config.json"));
  auto r = read_hf(tmp.path("py"));
  REQUIRE(r.ok());
  llmc::test::require_same_tensors(m, *r);
  // numpy's float16 cast rounds to nearest even, as our f16 conversion.
  fs::copy_file(tmp.path("out/config.json"), tmp.path("py16/config.json"));
  auto r16 = read_hf(tmp.path("py16"));
  REQUIRE(r16.ok());
  for (const auto& t : m.tensors()) {
    INFO(t.name);
    const auto want = t.to_f32();
    const auto got = r16->get(t.name).to_f32();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) REQUIRE(got[i] == f16_to_f32(f32_to_f16(want[i])));
  }
}

TEST_CASE("SmolLM2's vocabulary as tokenizer.json reads like its GGUF (gguf package peer)", "[hf][peer][heavy]") {
  const std::string gguf = test::smollm2_path();
  if (gguf.empty()) return;
  if (std::system("python3 -c 'import gguf' >/dev/null 2>&1") != 0) {
    if (std::getenv("CI")) FAIL("python3 with the gguf package is required under CI");
    WARN("skipping: python3 gguf package not available");
    return;
  }
  test::TempDir tmp;
  const std::string script = std::string(LLMC_SOURCE_DIR) + "/tests/formats/hf_tokenizer_peer.py";
  const int res = std::system(
      ("python3 " + script + " " + gguf + " " + tmp.dir().string() + " >" + tmp.path("peer.log") + " 2>&1").c_str());
  INFO(read_text(tmp.path("peer.log")));
  REQUIRE(res == 0);
  const Json want = Json::parse(read_text(tmp.path("expected.json")));
  auto tok = read_hf_tokenizer(tmp.path("tokenizer.json"));
  REQUIRE(tok.ok());
  CHECK(tok->kind == TokenizerKind::kBytePairGpt2);
  CHECK(tok->tokens == want["tokens"].get<std::vector<std::string>>());
  CHECK(tok->token_types == want["types"].get<std::vector<int32_t>>());
  CHECK(tok->merges == want["merges"].get<std::vector<std::string>>());
  CHECK(tok->pre == want["pre"].get<std::string>());
  CHECK(tok->bos_id == want["bos"].get<int32_t>());
  CHECK(tok->eos_id == want["eos"].get<int32_t>());
  // And our tokenizer.json export of it reads back the same.
  TokenizerData exported = *tok;
  auto text = hf_tokenizer_json(exported);
  REQUIRE(text.ok());
  auto again = parse_hf_tokenizer("export.json", *text, hf_tokenizer_config_json(exported, 8192));
  REQUIRE(again.ok());
  require_same_tokenizer(exported, *again);
}
