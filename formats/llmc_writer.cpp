// Writes a Model as a .llmc file: 64-byte prefix, FlatBuffers header, 64-byte aligned sections.
#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include <map>
#include <memory>
#include <unordered_map>

#include "core/version.h"
#include "formats/file_io.h"
#include "formats/llmc.h"
#include "formats/llmc_generated.h"
#include "formats/model_io.h"

namespace llmc {

namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// One stored section: the raw bytes (a view of the model's memory), and what goes to disk.
struct PendingSection {
  Bytes raw;
  std::vector<uint8_t> zstd;  // non-empty when the zstd frame is smaller than the raw bytes
  bool compressed = false;
  uint64_t xxh64 = 0;  // of the stored bytes
  uint64_t offset = 0;
  const uint8_t* stored_data() const { return compressed ? zstd.data() : raw.data(); }
  uint64_t stored_size() const { return compressed ? zstd.size() : raw.size(); }
};

// Collects the tensor buffers as sections; identical byte strings are stored once.
class SectionTable {
 public:
  uint32_t add(const Bytes& bytes) {
    const uint64_t h = XXH64(bytes.data(), bytes.size(), 0);
    auto& candidates = by_hash_[h];
    for (uint32_t i : candidates) {
      const Bytes& other = sections_[i].raw;
      if (other.size() == bytes.size() && (bytes.empty() || std::memcmp(other.data(), bytes.data(), bytes.size()) == 0))
        return i;
    }
    PendingSection s;
    s.raw = bytes;
    sections_.push_back(std::move(s));
    candidates.push_back(static_cast<uint32_t>(sections_.size() - 1));
    return static_cast<uint32_t>(sections_.size() - 1);
  }
  std::vector<PendingSection>& sections() { return sections_; }

 private:
  std::vector<PendingSection> sections_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> by_hash_;
};

// Section indices of one tensor's encoding tree.
struct NodeRefs {
  uint32_t data = 0;                       // dense data, quant codes, sparse index or palette indices
  uint32_t scales = 0;                     // quant scales or palette codebooks
  int32_t mins = -1;                       // quant with mins only
  int32_t scale_meta = -1;                 // quant u8 scales only
  int32_t min_meta = -1;                   // quant u8 scales with mins only
  int32_t row_ptr = -1;                    // sparse csr only
  std::shared_ptr<const NodeRefs> values;  // sparse: the nested values' sections; palette: the outliers'
};

NodeRefs add_sections(const Encoding& enc, SectionTable& table) {
  struct {
    SectionTable& table;
    NodeRefs operator()(const DenseEncoding& d) const { return {table.add(d.data), 0, -1}; }
    NodeRefs operator()(const QuantEncoding& q) const {
      NodeRefs r{table.add(q.codes), table.add(q.scales), -1};
      auto optional = [&](const Bytes& b) { return b.empty() ? -1 : static_cast<int32_t>(table.add(b)); };
      r.mins = q.scheme == QuantScheme::kAsymmetric ? static_cast<int32_t>(table.add(q.mins)) : optional(q.mins);
      r.scale_meta = optional(q.scale_meta);
      r.min_meta = optional(q.min_meta);
      return r;
    }
    NodeRefs operator()(const SparseEncoding& sp) const {
      NodeRefs r{table.add(sp.index), 0, -1};
      if (sp.pattern == SparsePattern::kCsr) r.row_ptr = static_cast<int32_t>(table.add(sp.row_ptr));
      r.values = std::make_shared<const NodeRefs>(add_sections(*sp.values, table));
      return r;
    }
    NodeRefs operator()(const PaletteEncoding& p) const {
      NodeRefs r{table.add(p.indices), table.add(p.codebooks), -1};
      if (p.outliers) r.values = std::make_shared<const NodeRefs>(add_sections(*p.outliers, table));
      return r;
    }
  } visitor{table};
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
  return fb::CreateConfigDirect(fbb, family_name(c.family), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                                c.head_dim, c.vocab_size, c.context_length, static_cast<uint8_t>(c.norm), c.norm_eps,
                                c.rope_theta, static_cast<uint8_t>(c.rope_style), scaling,
                                static_cast<uint8_t>(c.activation), c.tied_embeddings, c.attn_qkv_bias);
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
    secs.push_back(fb::CreateSection(fbb, s.offset, s.stored_size(), s.raw.size(),
                                     s.compressed ? fb::Compression::Zstd : fb::Compression::None, s.xxh64));
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

// Compresses each section (in parallel; each result depends only on its own bytes, so the file is
// the same on any thread count) and keeps the zstd frame only where it is smaller.
Result<void> compress_sections(std::vector<PendingSection>& sections, int level) {
  std::vector<std::string> errors(sections.size());
  const int64_t n = static_cast<int64_t>(sections.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    PendingSection& s = sections[i];
    if (level > 0 && s.raw.size() > 0) {
      ZSTD_CCtx* cctx = ZSTD_createCCtx();
      std::vector<uint8_t> out(ZSTD_compressBound(s.raw.size()));
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);
      const size_t got = ZSTD_compress2(cctx, out.data(), out.size(), s.raw.data(), s.raw.size());
      ZSTD_freeCCtx(cctx);
      if (ZSTD_isError(got)) {
        errors[i] = ZSTD_getErrorName(got);
      } else if (got < s.raw.size()) {
        out.resize(got);
        out.shrink_to_fit();
        s.zstd = std::move(out);
        s.compressed = true;
      }
    }
    s.xxh64 = XXH64(s.stored_data(), s.stored_size(), 0);
  }
  for (size_t i = 0; i < errors.size(); ++i)
    if (!errors[i].empty()) return make_error(ErrorCode::kInternal, "zstd compression of section ", i, ": ", errors[i]);
  return {};
}

}  // namespace

Result<void> write_llmc(const Model& model, const std::string& path, const LlmcWriteOptions& options) {
  if (options.zstd_level < 0 || options.zstd_level > ZSTD_maxCLevel())
    return make_error(ErrorCode::kInvalidArgument, path, ": zstd level ", options.zstd_level, " outside 0..",
                      ZSTD_maxCLevel());
  SectionTable table;
  std::vector<NodeRefs> refs;
  refs.reserve(model.tensors().size());
  for (const Tensor& t : model.tensors()) {
    if (!t.encoding) return make_error(ErrorCode::kInternal, path, ": tensor '", t.name, "' has no encoding");
    if (auto v = validate_encoding(*t.encoding, t.shape); !v.ok())
      return with_context(v.error(), str_cat(path, ": tensor '", t.name, "'"));
    refs.push_back(add_sections(*t.encoding, table));
  }
  std::vector<PendingSection>& sections = table.sections();
  LLMC_TRY(compress_sections(sections, options.zstd_level));

  // Lay out: prefix, header, then each section at the next 64-byte boundary.
  std::vector<uint8_t> header;
  uint64_t header_size = 0;
  for (int pass = 0; pass < 4; ++pass) {
    uint64_t pos = align_up(kLlmcPrefixSize + header_size, kLlmcSectionAlignment);
    for (auto& s : sections) {
      s.offset = pos;
      pos = align_up(pos + s.stored_size(), kLlmcSectionAlignment);
    }
    header = build_header(model, refs, sections, options);
    if (header.size() == header_size) break;
    header_size = header.size();
  }
  if (header.size() != header_size) return make_error(ErrorCode::kInternal, path, ": header size did not settle");
  const uint64_t file_size =
      sections.empty() ? kLlmcPrefixSize + header_size : sections.back().offset + sections.back().stored_size();

  uint8_t prefix[kLlmcPrefixSize] = {};
  std::memcpy(prefix, kLlmcMagic, 8);
  const uint32_t version = kLlmcFormatVersion, flags = 0;
  const uint64_t header_xxh = XXH64(header.data(), header.size(), 0);
  std::memcpy(prefix + 8, &version, 4);
  std::memcpy(prefix + 12, &flags, 4);
  std::memcpy(prefix + 16, &header_size, 8);
  std::memcpy(prefix + 24, &header_xxh, 8);
  std::memcpy(prefix + 32, &file_size, 8);

  LLMC_ASSIGN_OR_RETURN(auto out, AtomicOutput::create(path));
  LLMC_TRY(out->write(prefix, sizeof(prefix)));
  LLMC_TRY(out->write(header.data(), header.size()));
  for (size_t i = 0; i < sections.size(); ++i) {
    LLMC_TRY(out->pad_to(kLlmcSectionAlignment));
    LLMC_CHECK(out->position() == sections[i].offset, "section layout mismatch");
    LLMC_TRY(out->write(sections[i].stored_data(), sections[i].stored_size()));
  }
  LLMC_CHECK(out->position() == file_size, "file size mismatch");
  return out->commit();
}

}  // namespace llmc
