// Reads a .llmc file (formats/README.md) as hostile input: prefix, verified FlatBuffers header, checked sections.
#include <xxhash.h>

#include <atomic>
#include <cstring>
#include <new>
#include <tuple>

#include "core/log.h"
#include "core/lowrank.h"
#include "core/palette.h"
#include "core/sparse.h"
#include "formats/file_io.h"
#include "formats/little_endian.h"
#include "formats/llmc.h"
#include "formats/llmc_generated.h"
#include "formats/model_io.h"
#include "formats/scratch_file.h"

namespace llmc {

namespace {

constexpr size_t kMaxDims = 8;
constexpr int64_t kMaxNumel = int64_t(1) << 48;

bool is_float_dtype(fb::DType d) { return d == fb::DType::F32 || d == fb::DType::F16 || d == fb::DType::BF16; }

// What the reader knows about one section of the section table.
struct SectionInfo {
  const fb::Section* fb = nullptr;
  const char* first_tensor = nullptr;  // first tensor that references it, for error messages
  bool referenced = false;
  Bytes bytes;  // raw view or decoded bytes
  SectionCoder coder = SectionCoder::kNone;
  SectionLayout layout;
};

class Parser {
 public:
  Parser(std::string name, std::shared_ptr<const void> owner, const uint8_t* data, size_t size,
         const LlmcReadOptions& options)
      : name_(std::move(name)), owner_(std::move(owner)), data_(data), size_(size), options_(options) {}

  Result<LlmcFile> run() {
    LlmcFile file;
    LLMC_TRY(read_prefix(file));
    LLMC_TRY(verify_header());
    LLMC_TRY(read_config(file.model.config));
    LLMC_TRY(read_tokenizer(file.model.tokenizer));
    LLMC_TRY(read_section_table());
    LLMC_TRY(check_tensor_refs());
    describe_sections(file);
    if (options_.load_tensors) {
      LLMC_TRY(load_sections());
      LLMC_TRY(build_tensors(file.model));
    }
    read_metadata(file);
    file.owner = owner_;
    file.data = data_;
    file.size = size_;
    return file;
  }

 private:
  template <class... Args>
  Error fail(ErrorCode code, Args&&... args) const {
    return make_error(code, name_, ": ", std::forward<Args>(args)...);
  }

  Result<void> read_prefix(LlmcFile& file) {
    if (size_ < kLlmcPrefixSize)
      return fail(ErrorCode::kFormat, "file is ", size_, " bytes, shorter than the ", kLlmcPrefixSize,
                  "-byte .llmc prefix");
    if (std::memcmp(data_, kLlmcMagic, 4) != 0)
      return fail(ErrorCode::kFormat, "at offset 0: not an .llmc file (bad magic)");
    if (std::memcmp(data_ + 4, kLlmcMagic + 4, 4) != 0)
      return fail(ErrorCode::kFormat, "at offset 4: magic bytes damaged (file transferred in text mode?)");
    file.version = load_u32(data_ + 8);
    if (file.version == 0) return fail(ErrorCode::kFormat, "at offset 8: format version 0 is invalid");
    if (file.version > kLlmcFormatVersion)
      return fail(ErrorCode::kUnsupported, "at offset 8: format version ", file.version,
                  " is newer than this llmc supports (", kLlmcFormatVersion, ")");
    const uint32_t flags = load_u32(data_ + 12);
    if (flags & kLlmcRequiredFlagsMask & ~kLlmcKnownRequiredFlags)
      return fail(ErrorCode::kUnsupported, "at offset 12: file requires features this llmc lacks (flags 0x", std::hex,
                  flags, ")");
    file.flags = flags;
    header_size_ = load_u64(data_ + 16);
    header_xxh_ = load_u64(data_ + 24);
    const uint64_t file_size = load_u64(data_ + 32);
    if (file_size != size_)
      return fail(ErrorCode::kFormat, "at offset 32: prefix records a file size of ", file_size,
                  " bytes but the file has ", size_, file_size > size_ ? " (truncated)" : " (trailing bytes)");
    if (header_size_ == 0 || header_size_ > size_ - kLlmcPrefixSize || header_size_ >= FLATBUFFERS_MAX_BUFFER_SIZE)
      return fail(ErrorCode::kFormat, "at offset 16: header size ", header_size_, " does not fit in the file (", size_,
                  " bytes)");
    file.header_size = header_size_;
    return {};
  }

  Result<void> verify_header() {
    const uint8_t* h = data_ + kLlmcPrefixSize;
    const uint64_t got = XXH64(h, header_size_, 0);
    if (got != header_xxh_)
      return fail(ErrorCode::kFormat, "at offset ", kLlmcPrefixSize, ": header checksum mismatch (stored 0x", std::hex,
                  header_xxh_, ", computed 0x", got, ")");
    // Tables: one per tensor, encoding, node and section plus a few; strings are not counted.
    flatbuffers::Verifier::Options opts;
    opts.max_depth = 32;
    opts.max_tables = 100'000'000;
    flatbuffers::Verifier verifier(h, static_cast<size_t>(header_size_), opts);
    // VerifyHeaderBuffer checks the size before it reads the identifier.
    if (!fb::VerifyHeaderBuffer(verifier))
      return fail(ErrorCode::kFormat, "at offset ", kLlmcPrefixSize, ": header (", header_size_,
                  " bytes) fails FlatBuffers verification");
    header_ = fb::GetHeader(h);
    return {};
  }

  Result<void> read_config(ModelConfig& c) {
    const fb::Config* fc = header_->config();
    const std::string family = fc->family() ? fc->family()->str() : "";
    auto fam = family_from_name(family);
    if (!fam) return fail(ErrorCode::kUnsupported, "config: unknown model family '", family, "'");
    c.family = *fam;
    c.dim = fc->dim();
    c.hidden_dim = fc->hidden_dim();
    c.n_layers = fc->n_layers();
    c.n_heads = fc->n_heads();
    c.n_kv_heads = fc->n_kv_heads();
    c.head_dim = fc->head_dim();
    c.vocab_size = fc->vocab_size();
    c.context_length = fc->context_length();
    c.norm_eps = fc->norm_eps();
    c.rope_theta = fc->rope_theta();
    c.tied_embeddings = fc->tied_embeddings();
    c.attn_qkv_bias = fc->attn_qkv_bias();
    // Per-layer widths (absent before structured pruning existed); validate_config checks values.
    for (auto [name, from, to] : {std::tuple{"layer_n_heads", fc->layer_n_heads(), &c.layer_n_heads},
                                  std::tuple{"layer_n_kv_heads", fc->layer_n_kv_heads(), &c.layer_n_kv_heads},
                                  std::tuple{"layer_hidden_dim", fc->layer_hidden_dim(), &c.layer_hidden_dim}}) {
      if (!from) continue;
      if (static_cast<int64_t>(from->size()) != c.n_layers)
        return fail(ErrorCode::kFormat, "config: ", name, " has ", from->size(), " entries for ", c.n_layers,
                    " layers");
      to->assign(from->begin(), from->end());
    }
    const struct {
      const char* field;
      uint8_t value;
      uint8_t max;
    } kEnums[] = {
        {"norm", fc->norm(), static_cast<uint8_t>(NormKind::kLayerNorm)},
        {"rope_style", fc->rope_style(), static_cast<uint8_t>(RopeStyle::kNeox)},
        {"activation", fc->activation(), static_cast<uint8_t>(Activation::kGelu)},
        {"rope_scaling.type", fc->rope_scaling() ? fc->rope_scaling()->type() : uint8_t{0},
         static_cast<uint8_t>(RopeScalingType::kLlama3)},
    };
    for (const auto& e : kEnums)
      if (e.value > e.max)
        return fail(ErrorCode::kUnsupported, "config: ", e.field, " value ", int(e.value),
                    " unknown (file from a newer llmc?)");
    c.norm = static_cast<NormKind>(fc->norm());
    c.rope_style = static_cast<RopeStyle>(fc->rope_style());
    c.activation = static_cast<Activation>(fc->activation());
    if (const fb::RopeScaling* rs = fc->rope_scaling()) {
      c.rope_scaling.type = static_cast<RopeScalingType>(rs->type());
      c.rope_scaling.factor = rs->factor();
      c.rope_scaling.low_freq_factor = rs->low_freq_factor();
      c.rope_scaling.high_freq_factor = rs->high_freq_factor();
      c.rope_scaling.original_context = rs->original_context();
    }
    return {};
  }

  Result<void> read_tokenizer(TokenizerData& t) {
    const fb::Tokenizer* ft = header_->tokenizer();
    if (!ft) return {};
    if (ft->kind() > static_cast<uint8_t>(TokenizerKind::kBytePairGpt2))
      return fail(ErrorCode::kUnsupported, "tokenizer kind ", int(ft->kind()), " unknown (file from a newer llmc?)");
    t.kind = static_cast<TokenizerKind>(ft->kind());
    if (const auto* v = ft->tokens()) {
      t.tokens.reserve(v->size());
      for (const auto* s : *v) t.tokens.push_back(s ? s->str() : std::string());
    }
    if (const auto* v = ft->scores()) t.scores.assign(v->begin(), v->end());
    if (const auto* v = ft->token_types()) t.token_types.assign(v->begin(), v->end());
    if (const auto* v = ft->merges()) {
      t.merges.reserve(v->size());
      for (const auto* s : *v) t.merges.push_back(s ? s->str() : std::string());
    }
    if (!t.scores.empty() && t.scores.size() != t.tokens.size())
      return fail(ErrorCode::kFormat, "tokenizer has ", t.tokens.size(), " tokens but ", t.scores.size(), " scores");
    if (!t.token_types.empty() && t.token_types.size() != t.tokens.size())
      return fail(ErrorCode::kFormat, "tokenizer has ", t.tokens.size(), " tokens but ", t.token_types.size(),
                  " token types");
    t.pre = ft->pre() ? ft->pre()->str() : "";
    t.bos_id = ft->bos_id();
    t.eos_id = ft->eos_id();
    t.unk_id = ft->unk_id();
    t.pad_id = ft->pad_id();
    t.add_bos = ft->add_bos();
    t.add_eos = ft->add_eos();
    return {};
  }

  // Every section must lie after the header, 64-byte aligned, inside the file, in ascending order
  // without overlap; raw sections have stored == raw size.
  Result<void> read_section_table() {
    const auto* secs = header_->sections();
    const size_t n = secs ? secs->size() : 0;
    sections_.resize(n);
    uint64_t min_offset = kLlmcPrefixSize + header_size_;
    for (size_t i = 0; i < n; ++i) {
      const fb::Section* s = secs->Get(static_cast<flatbuffers::uoffset_t>(i));
      sections_[i].fb = s;
      const uint64_t off = s->offset(), stored = s->stored_size(), raw = s->raw_size();
      if (off % kLlmcSectionAlignment != 0)
        return fail(ErrorCode::kFormat, "section ", i, ": offset ", off, " is not ", kLlmcSectionAlignment,
                    "-byte aligned");
      if (off < min_offset)
        return fail(ErrorCode::kFormat, "section ", i, ": offset ", off,
                    " overlaps the header or the previous section (", "must be at least ", min_offset, ")");
      if (off > size_ || stored > size_ - off)
        return fail(ErrorCode::kFormat, "section ", i, ": bytes [", off, ", ", off, " + ", stored,
                    ") extend past the end of the file (", size_, " bytes)");
      min_offset = off + stored;
      SectionInfo& info = sections_[i];
      info.coder = static_cast<SectionCoder>(s->compression());
      info.layout.transform = static_cast<SectionTransform>(s->transform());
      info.layout.symbol_bits = s->symbol_bits();
      info.layout.row_symbols = s->row_symbols();
      info.layout.plane_width = s->plane_width();
      if (auto r = check_section_record(info.coder, info.layout, raw, stored); !r.ok())
        return fail(r.error().code, "section ", i, " at offset ", off, ": ", r.error().message);
    }
    return {};
  }

  // Expected byte size of a section referenced by a tensor, checked against the section table.
  Result<void> expect_section(const char* tensor, const std::string& role, int64_t index, uint64_t want) {
    if (index < 0 || static_cast<uint64_t>(index) >= sections_.size())
      return fail(ErrorCode::kFormat, "tensor '", tensor, "': ", role, " section index ", index,
                  " outside the table of ", sections_.size(), " sections");
    SectionInfo& s = sections_[static_cast<size_t>(index)];
    if (s.fb->raw_size() != want)
      return fail(ErrorCode::kFormat, "tensor '", tensor, "': ", role, " section ", index, " at offset ",
                  s.fb->offset(), " holds ", s.fb->raw_size(), " bytes, the encoding needs ", want);
    if (!s.referenced) s.first_tensor = tensor;
    s.referenced = true;
    tensor_refs_.back().refs.push_back({role, static_cast<uint32_t>(index)});
    return {};
  }

  Result<Shape> read_shape(const char* name, const fb::TensorEntry* e) {
    Shape shape;
    if (const auto* dims = e->shape()) {
      if (dims->size() > kMaxDims)
        return fail(ErrorCode::kFormat, "tensor '", name, "': ", dims->size(), " dimensions (at most ", kMaxDims, ")");
      shape.dims.assign(dims->begin(), dims->end());
    }
    int64_t numel = 1;
    for (int64_t d : shape.dims) {
      if (d < 0) return fail(ErrorCode::kShape, "tensor '", name, "': negative dimension in shape ", shape.str());
      if (d != 0 && numel > kMaxNumel / d)
        return fail(ErrorCode::kShape, "tensor '", name, "': shape ", shape.str(), " has too many elements");
      numel *= d;
    }
    return shape;
  }

  // A Dense node of `shape`; `part` prefixes error roles of nested nodes ("low-rank U ").
  Result<void> check_dense_node(const char* name, const std::string& part, const fb::DenseNode* d, const Shape& shape) {
    if (!is_float_dtype(d->dtype()))
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "dense dtype ", int(d->dtype()),
                  " is not f32/f16/bf16");
    const uint64_t numel = static_cast<uint64_t>(shape.numel());
    return expect_section(name, part + "data", d->data(), numel * dtype_bytes(static_cast<DType>(d->dtype())));
  }

  // A Quant node of `shape`: parameters only; section sizes are checked here, combinations by
  // validate_encoding once the sections are loaded (their sizes are already known to be right).
  Result<void> check_quant_node(const char* name, const std::string& part, const fb::QuantNode* q, const Shape& shape) {
    if (q->bits() < 1 || q->bits() > 8)
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "quant bits ", int(q->bits()), " outside 1..8");
    if (static_cast<int>(q->scheme()) > static_cast<int>(fb::QuantScheme::MAX))
      return fail(ErrorCode::kUnsupported, "tensor '", name, "': ", part, "quant scheme ", int(q->scheme()),
                  " unknown (file written by a newer llmc?)");
    if (static_cast<int>(q->packing()) > static_cast<int>(fb::QuantPacking::MAX))
      return fail(ErrorCode::kUnsupported, "tensor '", name, "': ", part, "quant packing ", int(q->packing()),
                  " unknown (file written by a newer llmc?)");
    const bool u8_scales = q->scale_dtype() == fb::DType::U8;
    if (!is_float_dtype(q->scale_dtype()) && !u8_scales)
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "quant scale dtype ", int(q->scale_dtype()),
                  " is not f32/f16/bf16/u8");
    if (q->group_size() < 0)
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "negative quant group size ", q->group_size());
    if (u8_scales ? q->scale_block() <= 0 : q->scale_block() != 0)
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "quant scale_block ", q->scale_block(),
                  u8_scales ? " must be > 0 for u8 scales" : " must be 0 for float scales");
    QuantEncoding qe;
    qe.bits = q->bits();
    qe.group_size = q->group_size();
    qe.packing = static_cast<QuantPacking>(q->packing());
    const uint64_t rows = static_cast<uint64_t>(shape.rows()), cols = static_cast<uint64_t>(shape.cols());
    const uint64_t groups = rows * static_cast<uint64_t>(quant_groups_per_row(qe, static_cast<int64_t>(cols)));
    const uint64_t scale_bytes = groups * dtype_bytes(static_cast<DType>(q->scale_dtype()));
    LLMC_TRY(expect_section(name, part + "codes", q->codes(), rows * quant_row_stride(qe, static_cast<int64_t>(cols))));
    LLMC_TRY(expect_section(name, part + "scales", q->scales(), scale_bytes));
    if (q->scheme() == fb::QuantScheme::Asymmetric || (q->scheme() == fb::QuantScheme::Binary && q->mins() != -1))
      LLMC_TRY(expect_section(name, part + "mins", q->mins(), scale_bytes));
    else if (q->mins() != -1)
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "quant scheme ", int(q->scheme()),
                  " with a mins section");
    const uint64_t meta_bytes =
        u8_scales ? (groups + static_cast<uint64_t>(q->scale_block()) - 1) / static_cast<uint64_t>(q->scale_block()) * 8
                  : 0;
    if (u8_scales)
      LLMC_TRY(expect_section(name, part + "scale_meta", q->scale_meta(), meta_bytes));
    else if (q->scale_meta() != -1)
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "scale_meta section without u8 scales");
    if (u8_scales && q->mins() != -1)
      LLMC_TRY(expect_section(name, part + "min_meta", q->min_meta(), meta_bytes));
    else if (q->min_meta() != -1)
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "min_meta section without u8 scales and mins");
    return {};
  }

  // A part of a decomposition: a Dense or Quant node of exactly `shape`.
  Result<void> check_part(const char* name, const std::string& part, const fb::Encoding* enc, const Shape& shape) {
    if (!enc) return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "is missing");
    if (const fb::DenseNode* d = enc->node_as_DenseNode()) return check_dense_node(name, part, d, shape);
    if (const fb::QuantNode* q = enc->node_as_QuantNode()) return check_quant_node(name, part, q, shape);
    return fail(ErrorCode::kFormat, "tensor '", name, "': ", part, "must be a dense or quant node");
  }

  Result<void> check_lowrank_node(const char* name, const fb::LowRankNode* lr, const Shape& shape) {
    if (auto v = check_lowrank_rank(lr->rank(), shape); !v.ok())
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", v.error().message);
    LLMC_TRY(check_part(name, "low-rank U ", lr->u(), Shape{{shape.rows(), lr->rank()}}));
    return check_part(name, "low-rank V ", lr->v(), Shape{{lr->rank(), shape.cols()}});
  }

  Result<void> check_tucker_node(const char* name, const fb::TuckerNode* t, const Shape& shape) {
    TuckerEncoding layout;
    if (t->dims()) layout.dims.assign(t->dims()->begin(), t->dims()->end());
    if (t->ranks()) layout.ranks.assign(t->ranks()->begin(), t->ranks()->end());
    layout.row_modes = t->row_modes();
    const size_t factors = t->factors() ? t->factors()->size() : 0;
    if (auto v = check_tucker_layout(layout.dims, layout.row_modes, layout.ranks, factors, shape); !v.ok())
      return fail(ErrorCode::kFormat, "tensor '", name, "': ", v.error().message);
    LLMC_TRY(check_part(name, "tucker core ", t->core(), tucker_core_shape(layout)));
    for (size_t k = 0; k < factors; ++k)
      LLMC_TRY(check_part(name, str_cat("tucker factor ", k, " "),
                          t->factors()->Get(static_cast<flatbuffers::uoffset_t>(k)), tucker_factor_shape(layout, k)));
    return {};
  }

  // Checks every tensor's encoding parameters and section references before any section is read.
  Result<void> check_tensor_refs() {
    const auto* entries = header_->tensors();
    if (!entries) return {};
    shapes_.reserve(entries->size());
    tensor_refs_.reserve(entries->size());
    for (const fb::TensorEntry* e : *entries) {
      const char* name = e->name()->c_str();
      tensor_refs_.push_back({name, {}});
      LLMC_ASSIGN_OR_RETURN(Shape shape, read_shape(name, e));
      const fb::Encoding* enc = e->encoding();
      // The verifier accepts a union type whose table is absent; every node below needs its table.
      if (enc->node_type() != fb::Node::NONE && enc->node() == nullptr)
        return fail(ErrorCode::kFormat, "tensor '", name, "': encoding node type ", int(enc->node_type()),
                    " without its table");
      switch (enc->node_type()) {
        case fb::Node::DenseNode: LLMC_TRY(check_dense_node(name, "", enc->node_as_DenseNode(), shape)); break;
        case fb::Node::QuantNode: LLMC_TRY(check_quant_node(name, "", enc->node_as_QuantNode(), shape)); break;
        case fb::Node::SparseNode: LLMC_TRY(check_sparse_node(name, enc->node_as_SparseNode(), shape)); break;
        case fb::Node::LowRankNode: LLMC_TRY(check_lowrank_node(name, enc->node_as_LowRankNode(), shape)); break;
        case fb::Node::TuckerNode: LLMC_TRY(check_tucker_node(name, enc->node_as_TuckerNode(), shape)); break;
        case fb::Node::PaletteNode: LLMC_TRY(check_palette_node(name, enc->node_as_PaletteNode(), shape)); break;
        case fb::Node::NONE: return fail(ErrorCode::kFormat, "tensor '", name, "': encoding has no node");
        default:
          return fail(ErrorCode::kUnsupported, "tensor '", name, "': encoding node type ", int(enc->node_type()),
                      " unknown (file written by a newer llmc?)");
      }
      shapes_.push_back(std::move(shape));
    }
    return {};
  }

  // Verifies checksums and decodes coded sections, in parallel over sections; the first failing
  // section (in table order) is reported.
  Result<void> load_sections() {
    const int64_t n = static_cast<int64_t>(sections_.size());
    std::vector<Error> errors(sections_.size());
    std::vector<char> failed(sections_.size(), 0);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      auto r = load_section(static_cast<size_t>(i));
      if (!r.ok()) {
        errors[i] = r.error();
        failed[i] = 1;
      }
    }
    for (int64_t i = 0; i < n; ++i)
      if (failed[i]) return errors[i];
    return {};
  }

  void describe_sections(LlmcFile& file) {
    for (const auto& s : sections_) {
      switch (s.coder) {
        case SectionCoder::kNone: ++file.raw_sections; break;
        case SectionCoder::kZstd: ++file.zstd_sections; break;
        default: ++file.entropy_sections; break;
      }
      file.sections.push_back({s.fb->offset(), s.fb->stored_size(), s.fb->raw_size(), s.coder, s.layout});
    }
    file.tensor_sections = tensor_refs_;
  }

  Result<void> load_section(size_t i) {
    SectionInfo& s = sections_[i];
    const uint64_t off = s.fb->offset(), stored = s.fb->stored_size(), raw = s.fb->raw_size();
    const uint8_t* p = data_ + off;
    const std::string where = str_cat("section ", i, " at offset ", off,
                                      s.first_tensor ? str_cat(" (tensor '", s.first_tensor, "')") : std::string());
    if (options_.verify_checksums) {
      const uint64_t got = XXH64(p, stored, 0);
      if (got != s.fb->xxh64())
        return fail(ErrorCode::kFormat, where, ": checksum mismatch (stored 0x", std::hex, s.fb->xxh64(),
                    ", computed 0x", got, ")");
    }
    if (s.coder == SectionCoder::kNone) {
      s.bytes = Bytes::view(owner_, p, static_cast<size_t>(stored));
      if (options_.release_verified) release_file_pages(p, static_cast<size_t>(stored));
      return {};
    }
    if (!s.referenced) {  // unreferenced coded section: checked, not decoded
      release_file_pages(p, static_cast<size_t>(stored));
      return {};
    }
    auto decoded = decode_section({p, static_cast<size_t>(stored)}, s.coder, s.layout, raw);
    release_file_pages(p, static_cast<size_t>(stored));
    if (!decoded.ok()) return fail(decoded.error().code, where, ": ", decoded.error().message);
    s.bytes = Bytes::owned(std::move(decoded).value());
    if (options_.scratch) {
      const auto stored_bytes = options_.scratch->store(s.bytes.span());
      if (stored_bytes.ok()) {
        s.bytes = *stored_bytes;
        trim_heap();
      } else if (!scratch_warned_.exchange(true)) {  // sections load in parallel
        log_warn(stored_bytes.error().message, "; decoded sections stay in memory");
      }
    }
    return {};
  }

  // The encoding tree of a tensor whose node parameters and section references were checked.
  std::shared_ptr<Encoding> build_encoding(const fb::Encoding* enc) {
    auto encoding = std::make_shared<Encoding>();
    if (const fb::DenseNode* d = enc->node_as_DenseNode()) {
      encoding->node = DenseEncoding{static_cast<DType>(d->dtype()), sections_[d->data()].bytes};
    } else if (const fb::SparseNode* sp = enc->node_as_SparseNode()) {
      encoding->node = build_sparse(sp);
    } else if (const fb::LowRankNode* lr = enc->node_as_LowRankNode()) {
      encoding->node = LowRankEncoding{lr->rank(), build_encoding(lr->u()), build_encoding(lr->v())};
    } else if (const fb::TuckerNode* t = enc->node_as_TuckerNode()) {
      TuckerEncoding te;
      te.dims.assign(t->dims()->begin(), t->dims()->end());
      te.row_modes = t->row_modes();
      te.ranks.assign(t->ranks()->begin(), t->ranks()->end());
      te.core = build_encoding(t->core());
      for (const fb::Encoding* f : *t->factors()) te.factors.push_back(build_encoding(f));
      encoding->node = std::move(te);
    } else if (const fb::PaletteNode* p = enc->node_as_PaletteNode()) {
      PaletteEncoding pe;
      pe.bits = p->bits();
      pe.group_rows = p->group_rows();
      pe.codebooks = sections_[p->codebooks()].bytes;
      pe.indices = sections_[p->indices()].bytes;
      if (p->outliers()) pe.outliers = build_encoding(p->outliers());
      encoding->node = std::move(pe);
    } else {
      const fb::QuantNode* q = enc->node_as_QuantNode();
      QuantEncoding qe;
      qe.bits = q->bits();
      qe.scheme = static_cast<QuantScheme>(q->scheme());
      qe.group_size = q->group_size();
      qe.scale_dtype = static_cast<DType>(q->scale_dtype());
      qe.codes = sections_[q->codes()].bytes;
      qe.scales = sections_[q->scales()].bytes;
      qe.packing = static_cast<QuantPacking>(q->packing());
      qe.scale_block = q->scale_block();
      if (q->mins() >= 0) qe.mins = sections_[static_cast<size_t>(q->mins())].bytes;
      if (q->scale_meta() >= 0) qe.scale_meta = sections_[static_cast<size_t>(q->scale_meta())].bytes;
      if (q->min_meta() >= 0) qe.min_meta = sections_[static_cast<size_t>(q->min_meta())].bytes;
      encoding->node = std::move(qe);
    }
    return encoding;
  }

  SparseEncoding build_sparse(const fb::SparseNode* sp) {
    SparseEncoding se;
    se.pattern = static_cast<SparsePattern>(sp->pattern());
    se.n = sp->n();
    se.m = sp->m();
    se.kept_stride = sp->kept_stride();
    se.nnz = sp->nnz();
    se.index = sections_[sp->index()].bytes;
    if (sp->row_ptr() >= 0) se.row_ptr = sections_[static_cast<size_t>(sp->row_ptr())].bytes;
    se.values = build_encoding(sp->values());
    return se;
  }

  // A section referenced by a nested node whose exact size validate_encoding checks after loading;
  // `max_bytes` bounds what loading it may allocate.
  Result<void> reference_section(const char* tensor, const char* role, int64_t index, uint64_t max_bytes) {
    if (index < 0 || static_cast<uint64_t>(index) >= sections_.size())
      return fail(ErrorCode::kFormat, "tensor '", tensor, "': ", role, " section index ", index,
                  " outside the table of ", sections_.size(), " sections");
    SectionInfo& s = sections_[static_cast<size_t>(index)];
    if (s.fb->raw_size() > max_bytes)
      return fail(ErrorCode::kFormat, "tensor '", tensor, "': ", role, " section ", index, " at offset ",
                  s.fb->offset(), " holds ", s.fb->raw_size(), " bytes, more than the encoding can need (", max_bytes,
                  ")");
    if (!s.referenced) s.first_tensor = tensor;
    s.referenced = true;
    tensor_refs_.back().refs.push_back({role, static_cast<uint32_t>(index)});
    return {};
  }

  // Sparse node: its own sections' sizes follow from the header; the values node (Dense, Quant or
  // Palette of shape [rows, kept_stride]) is checked here as far as the header allows and whole by
  // validate_encoding once its sections are loaded.
  Result<void> check_sparse_node(const char* name, const fb::SparseNode* sp, const Shape& shape) {
    if (!sp) return fail(ErrorCode::kFormat, "tensor '", name, "': sparse node without its table");
    const int64_t rows = shape.rows(), cols = shape.cols();
    const int64_t kept = sp->kept_stride(), nnz = sp->nnz();
    if (kept < 0 || kept > cols || nnz < 0 || nnz > rows * kept)
      return fail(ErrorCode::kFormat, "tensor '", name, "': sparse kept_stride ", kept, " / nnz ", nnz,
                  " impossible for shape ", shape.str());
    const uint64_t urows = static_cast<uint64_t>(rows);
    switch (sp->pattern()) {
      case fb::SparsePattern::Bitmask:
        LLMC_TRY(expect_section(name, "sparse mask", sp->index(), urows * sparse_mask_stride(cols)));
        break;
      case fb::SparsePattern::Csr:
        LLMC_TRY(expect_section(name, "sparse row pointers", sp->row_ptr(), (urows + 1) * 4));
        LLMC_TRY(expect_section(name, "sparse column indices", sp->index(),
                                static_cast<uint64_t>(nnz * sparse_csr_index_bytes(cols))));
        break;
      case fb::SparsePattern::NM:
        if (auto v = check_nm_pattern(sp->n(), sp->m(), cols); !v.ok())
          return fail(ErrorCode::kFormat, "tensor '", name, "': sparse ", v.error().message);
        LLMC_TRY(expect_section(name, "sparse n:m indices", sp->index(),
                                urows * sparse_nm_index_stride(sp->n(), sp->m(), cols)));
        break;
      default:
        return fail(ErrorCode::kUnsupported, "tensor '", name, "': sparse pattern ", int(sp->pattern()),
                    " unknown (file written by a newer llmc?)");
    }
    if (sp->pattern() != fb::SparsePattern::Csr && sp->row_ptr() != -1)
      return fail(ErrorCode::kFormat, "tensor '", name, "': sparse row pointers without the csr pattern");
    const fb::Encoding* values = sp->values();
    if (!values) return fail(ErrorCode::kFormat, "tensor '", name, "': sparse node without values");
    if (const fb::DenseNode* d = values->node_as_DenseNode()) {
      if (!is_float_dtype(d->dtype()))
        return fail(ErrorCode::kFormat, "tensor '", name, "': sparse values dtype ", int(d->dtype()),
                    " is not f32/f16/bf16");
      return expect_section(name, "sparse values", d->data(),
                            urows * static_cast<uint64_t>(kept) * dtype_bytes(static_cast<DType>(d->dtype())));
    }
    if (const fb::QuantNode* q = values->node_as_QuantNode()) {
      // At most 8 bits per code plus a partial byte per row; at most one f32 scale/min per value.
      const uint64_t max_codes = urows * static_cast<uint64_t>(kept + 1);
      LLMC_TRY(reference_section(name, "sparse quant codes", q->codes(), max_codes));
      LLMC_TRY(reference_section(name, "sparse quant scales", q->scales(), max_codes * 4));
      if (q->mins() != -1) LLMC_TRY(reference_section(name, "sparse quant mins", q->mins(), max_codes * 4));
      if (q->scale_meta() != -1)
        LLMC_TRY(reference_section(name, "sparse quant scale_meta", q->scale_meta(), max_codes * 8));
      if (q->min_meta() != -1) LLMC_TRY(reference_section(name, "sparse quant min_meta", q->min_meta(), max_codes * 8));
      return {};
    }
    if (const fb::PaletteNode* p = values->node_as_PaletteNode())
      return check_palette_node(name, p, Shape{{rows, kept}});
    return fail(ErrorCode::kFormat, "tensor '", name, "': sparse values must be a dense, quant or palette node");
  }

  // Palette node of logical `shape`: every section size follows from the header; the outliers are a
  // csr Sparse node of shape [1, numel] with Dense values (exact sizes checked by validate_encoding).
  Result<void> check_palette_node(const char* name, const fb::PaletteNode* p, const Shape& shape) {
    if (!p) return fail(ErrorCode::kFormat, "tensor '", name, "': palette node without its table");
    if (p->bits() < 1 || p->bits() > 8)
      return fail(ErrorCode::kFormat, "tensor '", name, "': palette index bits ", int(p->bits()), " outside 1..8");
    if (p->group_rows() < 0)
      return fail(ErrorCode::kFormat, "tensor '", name, "': negative palette group_rows ", p->group_rows());
    const uint64_t rows = static_cast<uint64_t>(shape.rows());
    const uint64_t codebooks = static_cast<uint64_t>(palette_codebook_count(p->group_rows(), shape.rows()));
    LLMC_TRY(expect_section(name, "palette codebooks", p->codebooks(),
                            codebooks * static_cast<uint64_t>(palette_entries(p->bits())) * 2));
    LLMC_TRY(expect_section(name, "palette indices", p->indices(),
                            rows * static_cast<uint64_t>(palette_row_stride(p->bits(), shape.cols()))));
    const fb::Encoding* outliers = p->outliers();
    if (!outliers) return {};
    const fb::SparseNode* sp = outliers->node_as_SparseNode();
    if (!sp || !sp->values() || !sp->values()->node_as_DenseNode())
      return fail(ErrorCode::kFormat, "tensor '", name, "': palette outliers must be a sparse node with dense values");
    return check_sparse_node(name, sp, palette_outlier_shape(shape));
  }

  Result<void> build_tensors(Model& model) {
    const auto* entries = header_->tensors();
    if (!entries) return {};
    for (flatbuffers::uoffset_t i = 0; i < entries->size(); ++i) {
      const fb::TensorEntry* e = entries->Get(i);
      Tensor t;
      t.name = e->name()->str();
      t.shape = std::move(shapes_[i]);
      std::shared_ptr<Encoding> encoding = build_encoding(e->encoding());
      if (auto v = validate_encoding(*encoding, t.shape); !v.ok())
        return with_context(v.error(), str_cat(name_, ": tensor '", t.name, "'"));
      t.encoding = std::move(encoding);
      if (auto r = model.add(std::move(t)); !r.ok()) return with_context(r.error(), name_);
    }
    return {};
  }

  void read_metadata(LlmcFile& file) {
    if (const auto* kvs = header_->metadata())
      for (const fb::KeyValue* kv : *kvs)
        file.model.metadata[kv->key()->str()] = kv->value() ? kv->value()->str() : std::string();
    if (const fb::Provenance* p = header_->provenance()) {
      auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
      file.provenance = LlmcProvenance{str(p->llmc_version()), p->input_xxh64(),       str(p->input_path()),
                                       str(p->recipe()),       str(p->command_line()), p->created_unix()};
    }
    if (header_->report_json()) file.report_json = header_->report_json()->str();
  }

  std::string name_;
  std::shared_ptr<const void> owner_;
  const uint8_t* data_;
  size_t size_;
  LlmcReadOptions options_;
  std::atomic<bool> scratch_warned_{false};
  uint64_t header_size_ = 0;
  uint64_t header_xxh_ = 0;
  const fb::Header* header_ = nullptr;
  std::vector<SectionInfo> sections_;
  std::vector<Shape> shapes_;
  std::vector<LlmcTensorSections> tensor_refs_;  // per tensor: the sections its encoding references
};

}  // namespace

Result<LlmcFile> parse_llmc(const std::string& name, std::shared_ptr<const void> owner, const uint8_t* data,
                            size_t size, const LlmcReadOptions& options) {
  return Parser(name, std::move(owner), data, size, options).run();
}

Result<LlmcFile> open_llmc(const std::string& path, const LlmcReadOptions& options) {
  LLMC_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  const uint8_t* data = file->data();
  const size_t size = file->size();
  return parse_llmc(path, std::move(file), data, size, options);
}

Result<Model> read_llmc(const std::string& path, const LlmcReadOptions& options) {
  LLMC_ASSIGN_OR_RETURN(LlmcFile file, open_llmc(path, options));
  return std::move(file.model);
}

Result<Model> read_llmc(const std::string& path) { return read_llmc(path, LlmcReadOptions{}); }

}  // namespace llmc
