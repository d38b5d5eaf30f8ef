// GGUF v3 writer: llama/qwen2 metadata and vocabulary, tensors as F32/F16/BF16, Q8_0/Q4_0 (ggml reference
// rounding) or the exact block type of a Quant tensor, written atomically and deterministically.
#include <algorithm>
#include <cstring>
#include <map>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/gguf.h"
#include "formats/gguf_quants.h"
#include "formats/model_io.h"
#include "model/arch.h"

namespace llmc {

namespace {

constexpr uint64_t kAlignment = kGgufDefaultAlignment;
constexpr int64_t kQuantBlock = 32;
constexpr int64_t kChunkElements = 1 << 20;  // tensors are converted in row chunks of about this size

// The key/value section, serialized as it is built.
class KvSection {
 public:
  uint64_t count() const { return count_; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

  void put_string(const std::string& key, const std::string& v) {
    begin(key, GgufValueType::kString);
    raw_string(v);
  }
  void put_u32(const std::string& key, uint32_t v) {
    begin(key, GgufValueType::kU32);
    raw(v);
  }
  void put_f32(const std::string& key, float v) {
    begin(key, GgufValueType::kF32);
    raw(v);
  }
  void put_bool(const std::string& key, bool v) {
    begin(key, GgufValueType::kBool);
    raw(static_cast<uint8_t>(v ? 1 : 0));
  }
  void put_string_array(const std::string& key, const std::vector<std::string>& v) {
    begin_array(key, GgufValueType::kString, v.size());
    for (const auto& s : v) raw_string(s);
  }
  template <class T>
  void put_array(const std::string& key, GgufValueType elem, const std::vector<T>& v) {
    begin_array(key, elem, v.size());
    for (const T& x : v) raw(x);
  }

 private:
  template <class T>
  void raw(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes_.insert(bytes_.end(), b, b + sizeof(T));
  }
  void raw_string(const std::string& s) {
    raw(static_cast<uint64_t>(s.size()));
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  void begin(const std::string& key, GgufValueType type) {
    raw_string(key);
    raw(static_cast<uint32_t>(type));
    ++count_;
  }
  void begin_array(const std::string& key, GgufValueType elem, size_t n) {
    begin(key, GgufValueType::kArray);
    raw(static_cast<uint32_t>(elem));
    raw(static_cast<uint64_t>(n));
  }

  std::vector<uint8_t> bytes_;
  uint64_t count_ = 0;
};

// A tensor as it will be stored.
struct PlannedTensor {
  const Tensor* tensor;
  GgmlType type;
  bool native = false;  // a Quant tensor repacked into `type` blocks without requantizing
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
};

std::optional<DType> dense_dtype(const Tensor& t) {
  if (const auto* d = std::get_if<DenseEncoding>(&t.encoding->node)) return d->dtype;
  return std::nullopt;
}

struct ExportTypeRow {
  ExportDType export_dtype;
  GgmlType type;
};
const ExportTypeRow kExportTypes[] = {
    {ExportDType::kF32, GgmlType::kF32},   {ExportDType::kF16, GgmlType::kF16},   {ExportDType::kBF16, GgmlType::kBF16},
    {ExportDType::kQ8_0, GgmlType::kQ8_0}, {ExportDType::kQ4_0, GgmlType::kQ4_0},
};

// The GGUF block type holding exactly the values of a Quant tensor (gguf_quants.h: Q8_0/Q4_0/Q4_1/
// Q5_0/Q5_1 for f16-scaled groups of 32, the K types for the u8 sub-block scales the reader makes).
std::optional<GgmlType> native_quant_type(const Tensor& t) {
  const auto* q = std::get_if<QuantEncoding>(&t.encoding->node);
  if (!q) return std::nullopt;
  return ggml_type_of_quant(*q, t.rows(), t.cols());
}

// Norms and 1-D tensors stay f32; kKeep keeps float tensors as stored and Quant tensors in their
// exact block type (else f32); requested quantized types need rows of whole 32-blocks and fall
// back to F16 otherwise.
PlannedTensor plan_tensor(const Tensor& t, ExportDType want) {
  auto plain = [&](GgmlType type) { return PlannedTensor{&t, type}; };
  if (t.shape.dims.size() < 2 || tensor_role(t.name) == TensorRole::kNorm) return plain(GgmlType::kF32);
  const std::optional<GgmlType> native = native_quant_type(t);
  if (native && want == ExportDType::kKeep) return PlannedTensor{&t, *native, true};
  if (want == ExportDType::kKeep) {
    if (!dense_dtype(t))  // Quant, Sparse, LowRank, Palette, ...
      log_info("tensor '", t.name, "' (", describe_encoding(*t.encoding),
               ") has no GGUF block type with the same values: written dequantized as F32");
    const auto dt = dense_dtype(t);
    if (dt == DType::kF16) return plain(GgmlType::kF16);
    if (dt == DType::kBF16) return plain(GgmlType::kBF16);
    return plain(GgmlType::kF32);
  }
  GgmlType type = GgmlType::kF32;
  for (const auto& row : kExportTypes)
    if (row.export_dtype == want) type = row.type;
  if (native == type) return PlannedTensor{&t, type, true};
  if ((type == GgmlType::kQ8_0 || type == GgmlType::kQ4_0) && t.cols() % kQuantBlock != 0) {
    log_warn("tensor '", t.name, "' has ", t.cols(), " columns, not a multiple of 32: written as F16 instead of ",
             ggml_type_info(type).name);
    return plain(GgmlType::kF16);
  }
  return plain(type);
}

// llama_ftype of the type that holds most weights.
uint32_t file_type(const std::vector<PlannedTensor>& plan) {
  struct Row {
    GgmlType type;
    uint32_t ftype;
  };
  static const Row kFileTypes[] = {{GgmlType::kF32, 0},   {GgmlType::kF16, 1},   {GgmlType::kQ4_0, 2},
                                   {GgmlType::kQ4_1, 3},  {GgmlType::kQ8_0, 7},  {GgmlType::kQ5_0, 8},
                                   {GgmlType::kQ5_1, 9},  {GgmlType::kQ2_K, 10}, {GgmlType::kQ3_K, 12},
                                   {GgmlType::kQ4_K, 15}, {GgmlType::kQ5_K, 17}, {GgmlType::kQ6_K, 18},
                                   {GgmlType::kBF16, 32}};  // the K types as llama.cpp's *_M file types
  std::map<GgmlType, int64_t> elements;
  for (const auto& p : plan)
    if (p.tensor->shape.dims.size() >= 2) elements[p.type] += p.tensor->numel();
  GgmlType best = GgmlType::kF32;
  int64_t most = -1;
  for (const auto& [type, n] : elements)
    if (n > most) {
      most = n;
      best = type;
    }
  for (const auto& row : kFileTypes)
    if (row.type == best) return row.ftype;
  return 0;
}

// general.architecture: the family, except that a Llama model whose layers differ in heads or FFN
// width is written as llama.cpp's "deci" architecture (same tensors and RoPE layout as llama):
// llama.cpp reads per-layer arrays for every architecture, but only deci's graph uses them per
// layer (llama's takes layer 0's values for all). A non-uniform qwen2 keeps "qwen2" with arrays.
std::string gguf_architecture(const ModelConfig& c) {
  if (c.family == ModelFamily::kLlama && c.per_layer_widths()) return kGgufDeciArchitecture;
  return family_name(c.family);
}

// A width key: one u32, or an array of one u32 per layer when the layers differ.
void put_width(KvSection& kv, const std::string& key, int64_t scalar, const std::vector<int64_t>& per_layer) {
  if (per_layer.empty()) return kv.put_u32(key, static_cast<uint32_t>(scalar));
  std::vector<uint32_t> v(per_layer.begin(), per_layer.end());
  kv.put_array(key, GgufValueType::kU32, v);
}

void put_config(KvSection& kv, const ModelConfig& c) {
  const std::string p = gguf_architecture(c) + ".";
  if (c.context_length > 0) kv.put_u32(p + "context_length", static_cast<uint32_t>(c.context_length));
  kv.put_u32(p + "embedding_length", static_cast<uint32_t>(c.dim));
  put_width(kv, p + "feed_forward_length", c.hidden_dim, c.layer_hidden_dim);
  kv.put_u32(p + "block_count", static_cast<uint32_t>(c.n_layers));
  put_width(kv, p + "attention.head_count", c.n_heads, c.layer_n_heads);
  put_width(kv, p + "attention.head_count_kv", c.n_kv_heads, c.layer_n_kv_heads);
  // llama.cpp derives the head size from layer 0's head count unless key_length is given.
  if ((c.n_heads > 0 && c.head_dim != c.dim / c.n_heads) || c.per_layer_widths()) {
    kv.put_u32(p + "attention.key_length", static_cast<uint32_t>(c.head_dim));
    kv.put_u32(p + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  kv.put_f32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
  kv.put_f32(p + "rope.freq_base", c.rope_theta);
  kv.put_u32(p + "rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  kv.put_u32(p + "vocab_size", static_cast<uint32_t>(c.vocab_size));
  const RopeScaling& s = c.rope_scaling;
  if (s.type != RopeScalingType::kNone) {
    kv.put_string(p + "rope.scaling.type", s.type == RopeScalingType::kLinear ? "linear" : "llama3");
    kv.put_f32(p + "rope.scaling.factor", s.factor);
    kv.put_u32(p + "rope.scaling.original_context_length", static_cast<uint32_t>(s.original_context));
    if (s.type == RopeScalingType::kLlama3) {
      kv.put_f32(p + "rope.scaling.low_freq_factor", s.low_freq_factor);
      kv.put_f32(p + "rope.scaling.high_freq_factor", s.high_freq_factor);
    }
  }
}

void put_tokenizer(KvSection& kv, const TokenizerData& tok) {
  if (tok.empty() || tok.kind == TokenizerKind::kNone) return;
  kv.put_string("tokenizer.ggml.model", tok.kind == TokenizerKind::kSentencePiece ? "llama" : "gpt2");
  if (!tok.pre.empty()) kv.put_string("tokenizer.ggml.pre", tok.pre);
  kv.put_string_array("tokenizer.ggml.tokens", tok.tokens);
  if (!tok.scores.empty()) kv.put_array("tokenizer.ggml.scores", GgufValueType::kF32, tok.scores);
  if (!tok.token_types.empty()) kv.put_array("tokenizer.ggml.token_type", GgufValueType::kI32, tok.token_types);
  if (!tok.merges.empty()) kv.put_string_array("tokenizer.ggml.merges", tok.merges);
  const std::pair<const char*, int32_t> ids[] = {
      {"tokenizer.ggml.bos_token_id", tok.bos_id},
      {"tokenizer.ggml.eos_token_id", tok.eos_id},
      {"tokenizer.ggml.unknown_token_id", tok.unk_id},
      {"tokenizer.ggml.padding_token_id", tok.pad_id},
  };
  for (const auto& [key, id] : ids)
    if (id >= 0) kv.put_u32(key, static_cast<uint32_t>(id));
  kv.put_bool("tokenizer.ggml.add_bos_token", tok.add_bos);
  kv.put_bool("tokenizer.ggml.add_eos_token", tok.add_eos);
}

// Converts rows [r0, r1) of `t` (decoded to f32 in `buf`) into `type` bytes appended to `out`.
void encode_rows(const Tensor& t, GgmlType type, int64_t r0, int64_t r1, std::vector<float>& buf,
                 std::vector<uint8_t>& out) {
  const int64_t cols = t.cols();
  const int64_t n = (r1 - r0) * cols;
  buf.resize(static_cast<size_t>(n));
  t.rows_to_f32(r0, r1, buf.data());
  const GgmlTypeInfo& info = ggml_type_info(type);
  out.resize(static_cast<size_t>(n / info.block_size * info.type_size));
  uint8_t* o = out.data();
  switch (type) {
    case GgmlType::kF32: std::memcpy(o, buf.data(), out.size()); break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_f16(buf[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
      break;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(buf[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
      break;
    case GgmlType::kQ8_0: quantize_q8_0(buf.data(), n, o); break;
    case GgmlType::kQ4_0: quantize_q4_0(buf.data(), n, o); break;
    default: LLMC_CHECK(false, "writer asked for an unplanned type");
  }
}

Result<void> write_tensor_data(AtomicOutput& out, const PlannedTensor& p) {
  const Tensor& t = *p.tensor;
  if (p.native) {  // repack the Quant blocks, in chunks of about kChunkElements
    const GgmlTypeInfo& info = ggml_type_info(p.type);
    const int64_t n_blocks = t.numel() / info.block_size;
    const int64_t chunk = std::max<int64_t>(1, kChunkElements / info.block_size);
    std::vector<uint8_t> bytes;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += chunk) {
      const int64_t b1 = std::min(n_blocks, b0 + chunk);
      bytes.resize(static_cast<size_t>((b1 - b0) * info.type_size));
      quant_to_ggml(std::get<QuantEncoding>(t.encoding->node), p.type, b0, b1, bytes.data());
      LLMC_TRY(out.write(bytes.data(), bytes.size()));
    }
    return {};
  }
  // Same dtype as stored: copy the bytes unchanged.
  const auto dt = dense_dtype(t);
  const bool same = (dt == DType::kF32 && p.type == GgmlType::kF32) ||
                    (dt == DType::kF16 && p.type == GgmlType::kF16) ||
                    (dt == DType::kBF16 && p.type == GgmlType::kBF16);
  if (same) {
    const auto& d = std::get<DenseEncoding>(t.encoding->node);
    return out.write(d.data.data(), d.data.size());
  }
  const int64_t rows = t.rows(), cols = t.cols();
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, cols));
  std::vector<float> buf;
  std::vector<uint8_t> bytes;
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
    const int64_t r1 = std::min(rows, r0 + rows_per_chunk);
    encode_rows(t, p.type, r0, r1, buf, bytes);
    LLMC_TRY(out.write(bytes.data(), bytes.size()));
  }
  return {};
}

}  // namespace

Result<void> write_gguf(const Model& model, const std::string& path, const GgufWriteOptions& options) {
  std::vector<PlannedTensor> plan;
  uint64_t offset = 0;
  bool quantized = false;
  for (const Tensor& t : model.tensors()) {
    if (t.shape.dims.empty() || t.shape.dims.size() > 4)
      return make_error(ErrorCode::kUnsupported, path, ": tensor '", t.name, "' of shape ", t.shape.str(),
                        " cannot be stored in GGUF (1 to 4 dimensions)");
    LLMC_TRY(validate_encoding(*t.encoding, t.shape));
    PlannedTensor p = plan_tensor(t, options.dtype);
    const GgmlTypeInfo& info = ggml_type_info(p.type);
    quantized = quantized || info.block_size > 1;
    p.offset = offset;
    p.nbytes = static_cast<uint64_t>(t.numel() / info.block_size * info.type_size);
    offset = (offset + p.nbytes + kAlignment - 1) / kAlignment * kAlignment;
    plan.push_back(p);
  }

  KvSection kv;
  kv.put_string("general.architecture", gguf_architecture(model.config));
  auto name = model.metadata.find("general.name");
  kv.put_string("general.name", name != model.metadata.end() ? name->second : "llmc export");
  kv.put_u32("general.file_type", file_type(plan));
  if (quantized) kv.put_u32("general.quantization_version", 2);
  put_config(kv, model.config);
  put_tokenizer(kv, model.tokenizer);

  // Header and tensor infos.
  std::vector<uint8_t> head;
  auto raw = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    head.insert(head.end(), b, b + n);
  };
  auto raw_u32 = [&](uint32_t v) { raw(&v, 4); };
  auto raw_u64 = [&](uint64_t v) { raw(&v, 8); };
  raw(kGgufMagic, 4);
  raw_u32(kGgufVersion);
  raw_u64(plan.size());
  raw_u64(kv.count());
  raw(kv.bytes().data(), kv.bytes().size());
  for (const auto& p : plan) {
    const Tensor& t = *p.tensor;
    raw_u64(t.name.size());
    raw(t.name.data(), t.name.size());
    raw_u32(static_cast<uint32_t>(t.shape.dims.size()));
    for (auto it = t.shape.dims.rbegin(); it != t.shape.dims.rend(); ++it) raw_u64(static_cast<uint64_t>(*it));
    raw_u32(static_cast<uint32_t>(p.type));
    raw_u64(p.offset);
  }

  LLMC_ASSIGN_OR_RETURN(auto out, AtomicOutput::create(path));
  LLMC_TRY(out->write(head.data(), head.size()));
  LLMC_TRY(out->pad_to(kAlignment));
  const uint64_t data_start = out->position();
  for (size_t i = 0; i < plan.size(); ++i) {
    LLMC_CHECK(out->position() == data_start + plan[i].offset, "tensor data offset drifted");
    LLMC_TRY(write_tensor_data(*out, plan[i]));
    release_file_pages(*plan[i].tensor->encoding);  // a mapped tensor (input or scratch) is read once here
    LLMC_TRY(out->pad_to(kAlignment));
    report_progress("write gguf", static_cast<int64_t>(i + 1), static_cast<int64_t>(plan.size()), "tensors");
  }
  return out->commit();
}

}  // namespace llmc
