// Writes a Model as a .llmc file: 64-byte prefix, FlatBuffers header, 64-byte aligned sections.
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_map>

#include "core/lowrank.h"
#include "core/palette.h"
#include "core/sparse.h"
#include "core/version.h"
#include "formats/file_io.h"
#include "formats/llmc.h"
#include "formats/llmc_generated.h"
#include "formats/model_io.h"

namespace llmc {

namespace {

static_assert(static_cast<int>(fb::Compression::Rans) == static_cast<int>(SectionCoder::kRans));
static_assert(static_cast<int>(fb::SectionTransform::BytePlanes) == static_cast<int>(SectionTransform::kBytePlanes));

// One stored section: the raw bytes (a view of the model's memory), what the writer knows of
// their structure, and how they were stored once coded.
struct PendingSection {
  Bytes raw;
  SectionHint hint;
  SectionCoder coder = SectionCoder::kNone;
  SectionLayout layout;
  uint64_t stored_size = 0;
  uint64_t xxh64 = 0;  // of the stored bytes
  uint64_t offset = 0;
};

// Collects the tensor buffers as sections; identical byte strings are stored once (the first
// buffer's hint is kept).
class SectionTable {
 public:
  uint32_t add(const Bytes& bytes, const SectionHint& hint) {
    // Mapped bytes (an input's, a scratch file's) are read here once before they are written:
    // their pages are given back after each look, so the writer's RSS does not grow with the model.
    const auto release = [](const Bytes& b) { release_file_pages(b.data(), b.size()); };
    const uint64_t h = XXH64(bytes.data(), bytes.size(), 0);
    release(bytes);
    auto& candidates = by_hash_[h];
    for (uint32_t i : candidates) {
      const Bytes& other = sections_[i].raw;
      const bool same =
          other.size() == bytes.size() && (bytes.empty() || std::memcmp(other.data(), bytes.data(), bytes.size()) == 0);
      release(other);
      release(bytes);
      if (same) return i;
    }
    PendingSection s;
    s.raw = bytes;
    s.hint = hint;
    sections_.push_back(std::move(s));
    candidates.push_back(static_cast<uint32_t>(sections_.size() - 1));
    return static_cast<uint32_t>(sections_.size() - 1);
  }
  std::vector<PendingSection>& sections() { return sections_; }

 private:
  std::vector<PendingSection> sections_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> by_hash_;
};

// Hints: packed code rows (bit packing only; 5-trit bytes are coded as bytes) and numbers.
SectionHint code_rows(int bits, int64_t row_codes) { return SectionHint{bits, row_codes, 0}; }
SectionHint numbers(int bytes) { return SectionHint{0, 0, bytes > 1 ? bytes : 0}; }
SectionHint numbers(DType dtype) { return numbers(dtype_bytes(dtype)); }

// Section indices of one tensor's encoding tree.
struct NodeRefs {
  uint32_t data = 0;                       // dense data, quant codes, sparse index or palette indices
  uint32_t scales = 0;                     // quant scales or palette codebooks
  int32_t mins = -1;                       // quant with mins only
  int32_t scale_meta = -1;                 // quant u8 scales only
  int32_t min_meta = -1;                   // quant u8 scales with mins only
  int32_t row_ptr = -1;                    // sparse csr only
  std::shared_ptr<const NodeRefs> values;  // sparse: the nested values' sections; palette: the outliers'
  std::vector<NodeRefs> parts{};           // lowrank (u, v), tucker (core, factors): decomposition_parts order
};

// `shape`: the logical shape of this node ([rows, kept_stride] for Sparse values).
NodeRefs add_sections(const Encoding& enc, const Shape& shape, SectionTable& table) {
  struct {
    SectionTable& table;
    const Shape& shape;
    const Encoding& enc;
    NodeRefs operator()(const DenseEncoding& d) const { return {.data = table.add(d.data, numbers(d.dtype))}; }
    NodeRefs operator()(const QuantEncoding& q) const {
      const SectionHint codes = q.packing == QuantPacking::kBits ? code_rows(q.bits, shape.cols()) : SectionHint{};
      const SectionHint scales = q.scale_dtype == DType::kU8 ? SectionHint{} : numbers(q.scale_dtype);
      NodeRefs r{.data = table.add(q.codes, codes), .scales = table.add(q.scales, scales)};
      auto optional = [&](const Bytes& b, const SectionHint& h) {
        return b.empty() ? -1 : static_cast<int32_t>(table.add(b, h));
      };
      r.mins = q.scheme == QuantScheme::kAsymmetric ? static_cast<int32_t>(table.add(q.mins, scales))
                                                    : optional(q.mins, scales);
      r.scale_meta = optional(q.scale_meta, numbers(4));
      r.min_meta = optional(q.min_meta, numbers(4));
      return r;
    }
    NodeRefs operator()(const SparseEncoding& sp) const {
      const int64_t cols = shape.cols();
      SectionHint index;
      switch (sp.pattern) {
        case SparsePattern::kBitmask: index = code_rows(1, cols); break;
        case SparsePattern::kCsr: index = numbers(static_cast<int>(sparse_csr_index_bytes(cols))); break;
        case SparsePattern::kNM: index = code_rows(sparse_nm_index_bits(sp.m), sp.kept_stride); break;
      }
      NodeRefs r{.data = table.add(sp.index, index)};
      if (sp.pattern == SparsePattern::kCsr) r.row_ptr = static_cast<int32_t>(table.add(sp.row_ptr, numbers(4)));
      r.values =
          std::make_shared<const NodeRefs>(add_sections(*sp.values, sparse_values_shape(sp, shape.rows()), table));
      return r;
    }
    NodeRefs operator()(const LowRankEncoding&) const { return parts(); }
    NodeRefs operator()(const TuckerEncoding&) const { return parts(); }
    // Decomposition parts in decomposition_parts order, each with its own logical shape.
    NodeRefs parts() const {
      NodeRefs r;
      for (const DecompositionPart& p : decomposition_parts(enc, shape))
        r.parts.push_back(add_sections(*p.encoding, p.shape, table));
      return r;
    }
    NodeRefs operator()(const PaletteEncoding& p) const {
      NodeRefs r{.data = table.add(p.indices, code_rows(p.bits, shape.cols())),
                 .scales = table.add(p.codebooks, numbers(DType::kF16))};
      if (p.outliers)
        r.values = std::make_shared<const NodeRefs>(add_sections(*p.outliers, palette_outlier_shape(shape), table));
      return r;
    }
  } visitor{table, shape, enc};
  return std::visit(visitor, enc.node);
}

flatbuffers::Offset<fb::Encoding> build_encoding(flatbuffers::FlatBufferBuilder& fbb, const Encoding& enc,
                                                 const NodeRefs& refs) {
  struct {
    flatbuffers::FlatBufferBuilder& fbb;
    const NodeRefs& refs;
    flatbuffers::Offset<fb::Encoding> operator()(const DenseEncoding& d) const {
      auto node = fb::CreateDenseNode(fbb, static_cast<fb::DType>(d.dtype), refs.data);
      return fb::CreateEncoding(fbb, fb::Node::DenseNode, node.Union());
    }
    flatbuffers::Offset<fb::Encoding> operator()(const QuantEncoding& q) const {
      auto node =
          fb::CreateQuantNode(fbb, static_cast<uint8_t>(q.bits), static_cast<fb::QuantScheme>(q.scheme), q.group_size,
                              static_cast<fb::DType>(q.scale_dtype), refs.data, refs.scales, refs.mins,
                              static_cast<fb::QuantPacking>(q.packing), q.scale_block, refs.scale_meta, refs.min_meta);
      return fb::CreateEncoding(fbb, fb::Node::QuantNode, node.Union());
    }
    flatbuffers::Offset<fb::Encoding> operator()(const SparseEncoding& sp) const {
      auto values = build_encoding(fbb, *sp.values, *refs.values);
      auto node =
          fb::CreateSparseNode(fbb, static_cast<fb::SparsePattern>(sp.pattern), static_cast<uint8_t>(sp.n),
                               static_cast<uint8_t>(sp.m), sp.kept_stride, sp.nnz, refs.data, refs.row_ptr, values);
      return fb::CreateEncoding(fbb, fb::Node::SparseNode, node.Union());
    }
    flatbuffers::Offset<fb::Encoding> operator()(const LowRankEncoding& lr) const {
      auto u = build_encoding(fbb, *lr.u, refs.parts[0]);
      auto v = build_encoding(fbb, *lr.v, refs.parts[1]);
      auto node = fb::CreateLowRankNode(fbb, lr.rank, u, v);
      return fb::CreateEncoding(fbb, fb::Node::LowRankNode, node.Union());
    }
    flatbuffers::Offset<fb::Encoding> operator()(const TuckerEncoding& t) const {
      auto core = build_encoding(fbb, *t.core, refs.parts[0]);
      std::vector<flatbuffers::Offset<fb::Encoding>> factors;
      for (size_t k = 0; k < t.factors.size(); ++k)
        factors.push_back(build_encoding(fbb, *t.factors[k], refs.parts[k + 1]));
      auto node = fb::CreateTuckerNodeDirect(fbb, &t.dims, t.row_modes, &t.ranks, core, &factors);
      return fb::CreateEncoding(fbb, fb::Node::TuckerNode, node.Union());
    }
    flatbuffers::Offset<fb::Encoding> operator()(const PaletteEncoding& p) const {
      flatbuffers::Offset<fb::Encoding> outliers;
      if (p.outliers) outliers = build_encoding(fbb, *p.outliers, *refs.values);
      auto node =
          fb::CreatePaletteNode(fbb, static_cast<uint8_t>(p.bits), p.group_rows, refs.scales, refs.data, outliers);
      return fb::CreateEncoding(fbb, fb::Node::PaletteNode, node.Union());
    }
  } visitor{fbb, refs};
  return std::visit(visitor, enc.node);
}

flatbuffers::Offset<fb::Config> build_config(flatbuffers::FlatBufferBuilder& fbb, const ModelConfig& c) {
  const auto& rs = c.rope_scaling;
  auto scaling = fb::CreateRopeScaling(fbb, static_cast<uint8_t>(rs.type), rs.factor, rs.low_freq_factor,
                                       rs.high_freq_factor, rs.original_context);
  auto per_layer = [](const std::vector<int64_t>& v) { return v.empty() ? nullptr : &v; };  // absent when uniform
  return fb::CreateConfigDirect(
      fbb, family_name(c.family), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size,
      c.context_length, static_cast<uint8_t>(c.norm), c.norm_eps, c.rope_theta, static_cast<uint8_t>(c.rope_style),
      scaling, static_cast<uint8_t>(c.activation), c.tied_embeddings, c.attn_qkv_bias, per_layer(c.layer_n_heads),
      per_layer(c.layer_n_kv_heads), per_layer(c.layer_hidden_dim));
}

flatbuffers::Offset<fb::Tokenizer> build_tokenizer(flatbuffers::FlatBufferBuilder& fbb, const TokenizerData& t) {
  auto tokens = fbb.CreateVectorOfStrings(t.tokens);
  auto scores = fbb.CreateVector(t.scores);
  auto types = fbb.CreateVector(t.token_types);
  auto merges = fbb.CreateVectorOfStrings(t.merges);
  auto pre = fbb.CreateString(t.pre);
  return fb::CreateTokenizer(fbb, static_cast<uint8_t>(t.kind), tokens, scores, types, merges, pre, t.bos_id, t.eos_id,
                             t.unk_id, t.pad_id, t.add_bos, t.add_eos);
}

// The whole header. All scalars are written (force_defaults), so its size does not depend on the
// section offsets it records: build once to learn the size, then again with the final offsets.
std::vector<uint8_t> build_header(const Model& model, const std::vector<NodeRefs>& refs,
                                  const std::vector<PendingSection>& sections, const LlmcWriteOptions& options) {
  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  fbb.ForceDefaults(true);
  auto config = build_config(fbb, model.config);
  auto tokenizer = build_tokenizer(fbb, model.tokenizer);

  std::vector<flatbuffers::Offset<fb::TensorEntry>> entries;
  entries.reserve(model.tensors().size());
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    const Tensor& t = model.tensors()[i];
    auto enc = build_encoding(fbb, *t.encoding, refs[i]);
    auto name = fbb.CreateString(t.name);
    auto shape = fbb.CreateVector(t.shape.dims);
    entries.push_back(fb::CreateTensorEntry(fbb, name, shape, enc));
  }
  auto tensors = fbb.CreateVector(entries);

  std::vector<flatbuffers::Offset<fb::Section>> secs;
  secs.reserve(sections.size());
  for (const auto& s : sections)
    secs.push_back(fb::CreateSection(fbb, s.offset, s.stored_size, s.raw.size(), static_cast<fb::Compression>(s.coder),
                                     s.xxh64, static_cast<fb::SectionTransform>(s.layout.transform),
                                     static_cast<uint8_t>(s.layout.symbol_bits), s.layout.row_symbols,
                                     static_cast<uint8_t>(s.layout.plane_width)));
  auto sections_vec = fbb.CreateVector(secs);

  std::vector<flatbuffers::Offset<fb::KeyValue>> kvs;
  for (const auto& [k, v] : model.metadata)
    kvs.push_back(fb::CreateKeyValue(fbb, fbb.CreateString(k), fbb.CreateString(v)));
  auto metadata = fbb.CreateVectorOfSortedTables(&kvs);

  auto provenance =
      fb::CreateProvenance(fbb, fbb.CreateString(kVersion), options.input_xxh64, fbb.CreateString(options.input_path),
                           fbb.CreateString(options.recipe), fbb.CreateString(options.command_line), 0);
  auto header = fb::CreateHeader(fbb, config, tokenizer, tensors, sections_vec, metadata, provenance, 0);
  fb::FinishHeaderBuffer(fbb, header);
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

// How write_llmc codes sections: the options resolved (`coding` unset keeps the 0.1 meaning of
// zstd_level).
SectionCoding resolved_coding(const LlmcWriteOptions& o) {
  if (o.coding) return *o.coding;
  return o.zstd_level > 0 ? SectionCoding::kZstdBytes : SectionCoding::kNone;
}

// Sections coded at once, in parallel, before they are written in order: bounds the coded bytes
// held in memory (the raw bytes are the model's own).
constexpr uint64_t kBatchRawBytes = uint64_t{256} << 20;

}  // namespace

Result<void> write_llmc(const Model& model, const std::string& path, const LlmcWriteOptions& options) {
  if (options.zstd_level < 0 || options.zstd_level > ZSTD_maxCLevel())
    return make_error(ErrorCode::kInvalidArgument, path, ": zstd level ", options.zstd_level, " outside 0..",
                      ZSTD_maxCLevel());
  const SectionCoding coding = resolved_coding(options);
  const int zstd_level = options.zstd_level > 0 ? options.zstd_level : kDefaultZstdLevel;
  SectionTable table;
  std::vector<NodeRefs> refs;
  refs.reserve(model.tensors().size());
  for (const Tensor& t : model.tensors()) {
    if (!t.encoding) return make_error(ErrorCode::kInternal, path, ": tensor '", t.name, "' has no encoding");
    if (auto v = validate_encoding(*t.encoding, t.shape); !v.ok())
      return with_context(v.error(), str_cat(path, ": tensor '", t.name, "'"));
    refs.push_back(add_sections(*t.encoding, t.shape, table));
  }
  std::vector<PendingSection>& sections = table.sections();

  // The header's size does not depend on the values it records (every scalar is written), so the
  // sections' place is known before they are coded; they are coded in batches and written in
  // order, and the header goes in last.
  const uint64_t header_size = build_header(model, refs, sections, options).size();
  LLMC_ASSIGN_OR_RETURN(auto out, AtomicOutput::create(path));
  LLMC_TRY(out->write_zeros(kLlmcPrefixSize + header_size));
  uint32_t flags = 0;
  for (size_t begin = 0; begin < sections.size();) {
    size_t end = begin;
    for (uint64_t raw = 0; end < sections.size() && (end == begin || raw + sections[end].raw.size() <= kBatchRawBytes);)
      raw += sections[end++].raw.size();
    std::vector<CodedSection> coded(end - begin);
    std::vector<Error> errors(end - begin);
    std::vector<char> failed(end - begin, 0);
    const int64_t n = static_cast<int64_t>(end - begin);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      const PendingSection& s = sections[begin + static_cast<size_t>(i)];
      auto c = encode_section(s.raw.span(), s.hint, coding, zstd_level);
      release_file_pages(s.raw.data(), s.raw.size());
      if (c.ok()) {
        coded[i] = std::move(c).value();
      } else {
        errors[i] = c.error();
        failed[i] = 1;
      }
    }
    for (size_t i = 0; i < coded.size(); ++i) {
      if (failed[i]) return with_context(errors[i], str_cat(path, ": section ", begin + i));
      PendingSection& s = sections[begin + i];
      const bool raw = coded[i].coder == SectionCoder::kNone;
      const uint8_t* data = raw ? s.raw.data() : coded[i].stored.data();
      s.coder = coded[i].coder;
      s.layout = coded[i].layout;
      s.stored_size = raw ? s.raw.size() : coded[i].stored.size();
      s.xxh64 = XXH64(data, s.stored_size, 0);
      if (s.coder == SectionCoder::kHuffman || s.coder == SectionCoder::kRans ||
          s.layout.transform != SectionTransform::kNone)
        flags |= kLlmcFlagSectionCoding;
      LLMC_TRY(out->pad_to(kLlmcSectionAlignment));
      s.offset = out->position();
      LLMC_TRY(out->write(data, s.stored_size));
      release_file_pages(s.raw.data(), s.raw.size());  // a mapped tensor (input or scratch) is read once here
      coded[i] = CodedSection{};
    }
    begin = end;
  }
  const uint64_t file_size = out->position();
  const std::vector<uint8_t> header = build_header(model, refs, sections, options);
  if (header.size() != header_size) return make_error(ErrorCode::kInternal, path, ": header size did not settle");

  uint8_t prefix[kLlmcPrefixSize] = {};
  std::memcpy(prefix, kLlmcMagic, 8);
  const uint32_t version = kLlmcFormatVersion;
  const uint64_t header_xxh = XXH64(header.data(), header.size(), 0);
  std::memcpy(prefix + 8, &version, 4);
  std::memcpy(prefix + 12, &flags, 4);
  std::memcpy(prefix + 16, &header_size, 8);
  std::memcpy(prefix + 24, &header_xxh, 8);
  std::memcpy(prefix + 32, &file_size, 8);
  LLMC_TRY(out->write_at(kLlmcPrefixSize, header.data(), header.size()));
  LLMC_TRY(out->write_at(0, prefix, sizeof(prefix)));
  return out->commit();
}

}  // namespace llmc
