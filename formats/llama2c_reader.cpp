// Reader of llama2.c checkpoints (v0 legacy, v1 "ak42" fp32, v2 "ak42" int8 Q8_0) and tokenizer.bin.
//
// v0 layout: 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
//   vocab_size < 0 = untied classifier), then fp32 arrays: token_embedding [vocab, dim],
//   rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim],
//   rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
//   freq_cis_real [seq_len, head_size/2], freq_cis_imag (same; both skipped), wcls [vocab, dim] if untied.
// v1/v2 header (256 bytes, zero padded): u32 magic 0x616b3432, int32 version, the 7 int32 params,
//   u8 shared_classifier, and for v2 an (unaligned) int32 group size GS at offset 37.
// v1 body (llama2.c export.py version1_export): fp32 rms_att, rms_ffn, rms_final, token_embedding,
//   wq, wk, wv, wo, w1, w2, w3, wcls if not shared.
// v2 body (runq.c memory_map_weights): fp32 rms_att, rms_ffn, rms_final; then each matrix
//   (token_embedding, wq[0..L), wk, wv, wo, w1, w2, w3, wcls if not shared) as int8 codes [numel]
//   immediately followed by its fp32 scales [numel / GS]; groups run over the flattened tensor.
#include "formats/llama2c_reader.h"

#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/arch.h"

namespace llmc {

namespace {

constexpr uint32_t kMagic = 0x616b3432;  // "ak42"
constexpr uint64_t kV0HeaderBytes = 28;
constexpr uint64_t kHeaderBytes = 256;
constexpr int64_t kMaxGroupSize = 1 << 20;
constexpr int64_t kMaxTokenBytes = 1 << 16;
constexpr int64_t kMaxVocab = 1 << 24;

// One stored llama2.c array (per layer when per_layer), and where it goes in the IR.
enum class Weight {
  kEmbed,
  kRmsAtt,
  kWq,
  kWk,
  kWv,
  kWo,
  kRmsFfn,
  kW1,
  kW2,
  kW3,
  kRmsFinal,
  kFreqReal,
  kFreqImag,
  kCls
};

struct WeightRow {
  Weight weight;
  const char* llama2c_name;
  const char* canonical;  // global name, per-layer suffix, or nullptr when the IR drops it
  bool per_layer;
  bool matrix;  // quantized in v2 (norms stay fp32)
  int64_t (*rows)(const ModelConfig&);
  int64_t (*cols)(const ModelConfig&);  // 0 -> 1-D tensor of `rows` elements
};

int64_t dim(const ModelConfig& c) { return c.dim; }
int64_t hidden(const ModelConfig& c) { return c.hidden_dim; }
int64_t kv_dim(const ModelConfig& c) { return c.n_kv_heads * c.head_dim; }
int64_t vocab(const ModelConfig& c) { return c.vocab_size; }
int64_t seq_len(const ModelConfig& c) { return c.context_length; }
int64_t half_head(const ModelConfig& c) { return c.head_dim / 2; }
int64_t none(const ModelConfig&) { return 0; }

const WeightRow kWeights[] = {
    {Weight::kEmbed, "token_embedding_table", "token_embd.weight", false, true, vocab, dim},
    {Weight::kRmsAtt, "rms_att_weight", "attn_norm.weight", true, false, dim, none},
    {Weight::kWq, "wq", "attn_q.weight", true, true, dim, dim},
    {Weight::kWk, "wk", "attn_k.weight", true, true, kv_dim, dim},
    {Weight::kWv, "wv", "attn_v.weight", true, true, kv_dim, dim},
    {Weight::kWo, "wo", "attn_output.weight", true, true, dim, dim},
    {Weight::kRmsFfn, "rms_ffn_weight", "ffn_norm.weight", true, false, dim, none},
    {Weight::kW1, "w1", "ffn_gate.weight", true, true, hidden, dim},
    {Weight::kW2, "w2", "ffn_down.weight", true, true, dim, hidden},
    {Weight::kW3, "w3", "ffn_up.weight", true, true, hidden, dim},
    {Weight::kRmsFinal, "rms_final_weight", "output_norm.weight", false, false, dim, none},
    {Weight::kFreqReal, "freq_cis_real", nullptr, false, false, seq_len, half_head},
    {Weight::kFreqImag, "freq_cis_imag", nullptr, false, false, seq_len, half_head},
    {Weight::kCls, "wcls", "output.weight", false, true, vocab, dim},
};

const WeightRow& weight_row(Weight w) { return kWeights[static_cast<int>(w)]; }

// Storage order of each version (kCls only when the classifier is not shared).
const std::vector<Weight> kOrderV0 = {Weight::kEmbed,    Weight::kRmsAtt,   Weight::kWq,       Weight::kWk, Weight::kWv,
                                      Weight::kWo,       Weight::kRmsFfn,   Weight::kW1,       Weight::kW2, Weight::kW3,
                                      Weight::kRmsFinal, Weight::kFreqReal, Weight::kFreqImag, Weight::kCls};
const std::vector<Weight> kOrderV1V2 = {Weight::kRmsAtt, Weight::kRmsFfn, Weight::kRmsFinal, Weight::kEmbed,
                                        Weight::kWq,     Weight::kWk,     Weight::kWv,       Weight::kWo,
                                        Weight::kW1,     Weight::kW2,     Weight::kW3,       Weight::kCls};

struct Header {
  int version = 0;
  ModelConfig config;
  int64_t group_size = 0;  // v2 only
  uint64_t body_offset = 0;
};

// One array placed in the file.
struct Placed {
  const WeightRow* row;
  int64_t layer;  // -1 for globals
  Shape shape;
  bool q8;
  uint64_t offset;
  uint64_t bytes;
};

std::string placed_name(const Placed& p) {
  if (!p.row->canonical) return p.row->llama2c_name;
  return p.layer < 0 ? std::string(p.row->canonical) : layer_tensor_name(p.layer, p.row->canonical);
}

std::string placed_description(const Placed& p) {
  std::string s = str_cat("tensor ", placed_name(p), " (llama2.c ", p.row->llama2c_name);
  if (p.layer >= 0) s += str_cat(" layer ", p.layer);
  return s + str_cat(", ", p.q8 ? "int8" : "fp32", " ", p.shape.str(), ")");
}

Result<Header> parse_header(const std::string& name, const uint8_t* data, size_t size) {
  ByteReader r(name, data, size);
  Header h;
  uint32_t magic = 0;
  if (size >= 4) std::memcpy(&magic, data, 4);
  if (magic == kMagic) {
    if (size < kHeaderBytes)
      return make_error(ErrorCode::kFormat, name, ": llama2.c header needs ", kHeaderBytes, " bytes, file has ", size);
    LLMC_TRY(r.skip(4));
    LLMC_ASSIGN_OR_RETURN(int32_t version, r.i32());
    if (version != 1 && version != 2)
      return make_error(ErrorCode::kUnsupported, name, ": at offset 4: llama2.c version ", version,
                        " is not supported (1 or 2)");
    h.version = version;
  } else if (size < kV0HeaderBytes) {
    return make_error(ErrorCode::kFormat, name, ": too short for a llama2.c checkpoint (", size,
                      " bytes, header needs ", kV0HeaderBytes, ")");
  }
  int32_t p[7];
  for (int32_t& v : p) {
    LLMC_ASSIGN_OR_RETURN(v, r.i32());
  }
  ModelConfig& c = h.config;
  c.family = ModelFamily::kLlama;
  c.dim = p[0];
  c.hidden_dim = p[1];
  c.n_layers = p[2];
  c.n_heads = p[3];
  c.n_kv_heads = p[4];
  c.vocab_size = std::llabs(static_cast<long long>(p[5]));
  c.context_length = p[6];
  c.norm = NormKind::kRmsNorm;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_style = RopeStyle::kInterleaved;
  c.activation = Activation::kSilu;
  if (h.version == 0) {
    c.tied_embeddings = p[5] > 0;
    h.body_offset = kV0HeaderBytes;
  } else {
    if (p[5] < 0)
      return make_error(ErrorCode::kFormat, name, ": at offset 28: negative vocab_size ", p[5], " in a version ",
                        h.version, " header");
    LLMC_ASSIGN_OR_RETURN(uint8_t shared, r.u8());
    if (shared > 1)
      return make_error(ErrorCode::kFormat, name, ": at offset 36: shared_classifier flag is ", int(shared),
                        ", expected 0 or 1");
    c.tied_embeddings = shared == 1;
    if (h.version == 2) {
      LLMC_ASSIGN_OR_RETURN(int32_t gs, r.i32());
      if (gs <= 0 || gs > kMaxGroupSize)
        return make_error(ErrorCode::kFormat, name, ": at offset 37: group size ", gs, " is out of range");
      h.group_size = gs;
    }
    h.body_offset = kHeaderBytes;
  }
  if (c.n_heads <= 0 || c.dim <= 0 || c.dim % c.n_heads != 0)
    return make_error(ErrorCode::kFormat, name, ": header: n_heads ", c.n_heads, " does not divide dim ", c.dim);
  c.head_dim = c.dim / c.n_heads;
  if (c.context_length <= 0)
    return make_error(ErrorCode::kFormat, name, ": header: seq_len ", c.context_length, " must be positive");
  if (auto v = validate_config(c); !v.ok()) return with_context(v.error(), name + ": header");
  return h;
}

// Offsets of every stored array; sizes use 64-bit arithmetic on validated dims (each < 2^58).
Result<std::vector<Placed>> place_arrays(const std::string& name, const Header& h) {
  const ModelConfig& c = h.config;
  std::vector<Placed> out;
  uint64_t offset = h.body_offset;
  for (Weight w : h.version == 0 ? kOrderV0 : kOrderV1V2) {
    if (w == Weight::kCls && c.tied_embeddings) continue;
    const WeightRow& row = weight_row(w);
    const int64_t rows = row.rows(c), cols = row.cols(c);
    const Shape shape = cols == 0 ? Shape{{rows}} : Shape{{rows, cols}};
    const uint64_t numel = static_cast<uint64_t>(shape.numel());
    const bool q8 = h.version == 2 && row.matrix;
    if (q8 && numel % static_cast<uint64_t>(h.group_size) != 0)
      return make_error(ErrorCode::kFormat, name, ": llama2.c ", row.llama2c_name, " ", shape.str(), " has ", numel,
                        " elements, not a multiple of the group size ", h.group_size);
    const uint64_t bytes = q8 ? numel + numel / static_cast<uint64_t>(h.group_size) * 4 : numel * 4;
    for (int64_t l = 0; l < (row.per_layer ? c.n_layers : 1); ++l) {
      out.push_back(Placed{&row, row.per_layer ? l : -1, shape, q8, offset, bytes});
      offset += bytes;
    }
  }
  return out;
}

Result<void> check_file_size(const std::string& name, const std::vector<Placed>& placed, uint64_t size) {
  const uint64_t expected = placed.empty() ? 0 : placed.back().offset + placed.back().bytes;
  if (expected == size) return {};
  if (expected < size)
    return make_error(ErrorCode::kFormat, name, ": file has ", size, " bytes but the header implies ", expected, " (",
                      size - expected, " trailing bytes at offset ", expected, ")");
  for (const Placed& p : placed)
    if (p.offset + p.bytes > size)
      return make_error(ErrorCode::kFormat, name, ": file has ", size, " bytes but the header implies ", expected, "; ",
                        placed_description(p), " at offset ", p.offset, " needs ", p.bytes,
                        " bytes and would run past the end");
  return make_error(ErrorCode::kInternal, name, ": size check inconsistent");
}

// v2 matrix: int8 codes become offset-binary u8 (q + 128); scales stay a view of the file.
// Groups of the flattened tensor align with rows when GS divides cols; otherwise the tensor is
// decoded to fp32 exactly as runq.c does (q * scale), which loses nothing.
EncodingPtr q8_encoding(const Bytes& file, const Placed& p, int64_t group_size, bool* dequantized) {
  const int64_t numel = p.shape.numel();
  const uint8_t* src = file.data() + p.offset;
  const Bytes scales =
      file.slice(p.offset + static_cast<uint64_t>(numel), static_cast<uint64_t>(numel / group_size) * 4);
  if (p.shape.cols() % group_size == 0) {
    std::vector<uint8_t> codes(static_cast<size_t>(numel));
    for (int64_t i = 0; i < numel; ++i) codes[i] = static_cast<uint8_t>(src[i] ^ 0x80u);
    QuantEncoding q;
    q.bits = 8;
    q.scheme = QuantScheme::kSymmetric;
    q.group_size = group_size;
    q.scale_dtype = DType::kF32;
    q.codes = Bytes::owned(std::move(codes));
    q.scales = scales;
    return std::make_shared<Encoding>(Encoding{std::move(q)});
  }
  *dequantized = true;
  std::vector<float> values(static_cast<size_t>(numel));
  for (int64_t i = 0; i < numel; ++i) {
    float s;
    std::memcpy(&s, scales.data() + (i / group_size) * 4, 4);
    values[i] = static_cast<float>(static_cast<int8_t>(src[i])) * s;
  }
  return std::make_shared<Encoding>(Encoding{DenseEncoding{DType::kF32, Bytes::from_vector(values)}});
}

}  // namespace

Result<Model> parse_llama2c(const std::string& name, const Bytes& file) {
  LLMC_ASSIGN_OR_RETURN(Header h, parse_header(name, file.data(), file.size()));
  LLMC_ASSIGN_OR_RETURN(std::vector<Placed> placed, place_arrays(name, h));
  LLMC_TRY(check_file_size(name, placed, file.size()));

  std::unordered_map<std::string, Tensor> by_name;
  bool dequantized = false;
  for (const Placed& p : placed) {
    if (!p.row->canonical) continue;
    Tensor t;
    t.name = placed_name(p);
    t.shape = p.shape;
    if (p.q8)
      t.encoding = q8_encoding(file, p, h.group_size, &dequantized);
    else
      t.encoding = std::make_shared<Encoding>(Encoding{DenseEncoding{DType::kF32, file.slice(p.offset, p.bytes)}});
    by_name.emplace(t.name, std::move(t));
  }
  if (dequantized)
    log_warn(name, ": group size ", h.group_size,
             " does not divide the row length of some tensors; they were dequantized to f32");

  Model model;
  model.config = h.config;
  for (const TensorSpec& spec : expected_tensors(model.config)) {
    auto it = by_name.find(spec.name);
    if (it == by_name.end()) return make_error(ErrorCode::kInternal, name, ": no llama2.c array for ", spec.name);
    LLMC_TRY(model.add(std::move(it->second)));
  }
  if (auto v = validate_model(model); !v.ok()) return with_context(v.error(), name);
  model.metadata["llama2c.version"] = std::to_string(h.version);
  if (h.version == 2) model.metadata["llama2c.group_size"] = std::to_string(h.group_size);
  return model;
}

Result<Model> read_llama2c(const std::string& path) {
  LLMC_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
  const Bytes file = Bytes::view(mapped, mapped->data(), mapped->size());
  return parse_llama2c(path, file);
}

namespace {

// llama2.c writes SentencePiece's U+2581 as a plain space and BOS/EOS as "\n<s>\n" / "\n</s>\n";
// the IR uses the GGUF "llama" vocabulary spelling ("▁", "<s>", "</s>") so one tokenizer serves both.
struct SpecialToken {
  const char* text;
  TokenType type;
};
const SpecialToken kSpecials[] = {
    {"<unk>", TokenType::kUnknown},
    {"<s>", TokenType::kControl},
    {"</s>", TokenType::kControl},
};

bool is_byte_token(const std::string& t) {
  auto hex = [](char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F'); };
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

void normalize_token(std::string& text, TokenType& type) {
  std::string trimmed = text;
  while (!trimmed.empty() && trimmed.front() == '\n') trimmed.erase(trimmed.begin());
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  for (const SpecialToken& s : kSpecials)
    if (trimmed == s.text) {
      text = trimmed;
      type = s.type;
      return;
    }
  if (is_byte_token(text)) {
    type = TokenType::kByte;
    return;
  }
  type = TokenType::kNormal;
  std::string out;
  out.reserve(text.size());
  for (char ch : text) out += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);
  text = std::move(out);
}

}  // namespace

Result<TokenizerData> parse_llama2c_tokenizer(const std::string& name, const uint8_t* data, size_t size,
                                              int64_t vocab_size) {
  ByteReader r(name, data, size);
  LLMC_ASSIGN_OR_RETURN(int32_t max_len, r.i32());
  if (max_len <= 0 || max_len > kMaxTokenBytes)
    return make_error(ErrorCode::kFormat, name, ": at offset 0: max_token_length ", max_len, " is out of range");
  if (vocab_size > kMaxVocab)
    return make_error(ErrorCode::kInvalidArgument, name, ": vocabulary size ", vocab_size, " is out of range");
  constexpr uint64_t kMinTokenBytes = 8;  // f32 score + int32 length
  if (vocab_size >= 0 && static_cast<uint64_t>(vocab_size) * kMinTokenBytes > r.remaining())
    return make_error(ErrorCode::kFormat, name, ": ", vocab_size, " tokens need at least ",
                      static_cast<uint64_t>(vocab_size) * kMinTokenBytes, " bytes after the header, file has ",
                      r.remaining());
  TokenizerData tok;
  tok.kind = TokenizerKind::kSentencePiece;
  const size_t reserve = vocab_size >= 0 ? static_cast<size_t>(vocab_size) : r.remaining() / kMinTokenBytes;
  tok.tokens.reserve(reserve);
  tok.scores.reserve(reserve);
  tok.token_types.reserve(reserve);
  for (int64_t i = 0; vocab_size < 0 ? r.remaining() > 0 : i < vocab_size; ++i) {
    LLMC_ASSIGN_OR_RETURN(float score, r.f32());
    LLMC_ASSIGN_OR_RETURN(int32_t len, r.i32());
    if (len < 0 || len > max_len)
      return r.error(ErrorCode::kFormat,
                     str_cat("token ", i, " has length ", len, " (max_token_length ", max_len, ")"));
    if (static_cast<uint64_t>(len) > r.remaining())
      return r.error(ErrorCode::kFormat,
                     str_cat("token ", i, " needs ", len, " bytes, only ", r.remaining(), " left in the file"));
    LLMC_ASSIGN_OR_RETURN(std::string text, r.string(static_cast<uint64_t>(len)));
    TokenType type = TokenType::kNormal;
    normalize_token(text, type);
    tok.tokens.push_back(std::move(text));
    tok.scores.push_back(score);
    tok.token_types.push_back(static_cast<int32_t>(type));
  }
  if (r.remaining() > 0)
    return r.error(ErrorCode::kFormat, str_cat(r.remaining(), " trailing bytes after ", vocab_size, " tokens"));
  if (tok.tokens.empty()) return make_error(ErrorCode::kFormat, name, ": tokenizer has no tokens");
  const int32_t n = static_cast<int32_t>(tok.tokens.size());
  auto id_if_present = [n](int32_t id) { return id < n ? id : -1; };
  tok.unk_id = id_if_present(0);
  tok.bos_id = id_if_present(1);
  tok.eos_id = id_if_present(2);
  tok.add_bos = true;
  return tok;
}

Result<TokenizerData> read_llama2c_tokenizer(const std::string& path, int64_t vocab_size) {
  LLMC_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
  return parse_llama2c_tokenizer(path, mapped->data(), mapped->size(), vocab_size);
}

}  // namespace llmc
