// .llmc files with entropy-coded and deduplicated sections: round trips for every coding,
// determinism on any thread count, dedup of repeated tensors, storage accounting, golden files,
// hostile section records, and the --entropy flag of the CLI.
#include <omp.h>
#include <xxhash.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/dtype.h"
#include "core/sparse.h"
#include "formats/llmc.h"
#include "formats/llmc_generated.h"
#include "formats/model_io.h"
#include "model/arch.h"
#include "model/describe.h"
#include "test_util.h"

using namespace llmc;
using llmc::test::run_cli;

namespace {

using ByteVec = std::vector<uint8_t>;

Tensor make_tensor(std::string name, std::vector<int64_t> dims, Encoding enc) {
  return Tensor{std::move(name), Shape{std::move(dims)}, std::make_shared<Encoding>(std::move(enc))};
}

ByteVec pack_rows(const std::vector<uint32_t>& q, int64_t rows, int64_t cols, int bits) {
  const int64_t stride = (cols * bits + 7) / 8;
  ByteVec out(static_cast<size_t>(rows * stride), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      for (int b = 0; b < bits; ++b)
        if (q[static_cast<size_t>(r * cols + c)] >> b & 1) {
          const int64_t bit = c * bits + b;
          out[static_cast<size_t>(r * stride + bit / 8)] |= static_cast<uint8_t>(1u << (bit % 8));
        }
  return out;
}

// Codes of normal-ish weights: a discretized Laplace around the middle code.
std::vector<uint32_t> laplace_codes(size_t n, int bits, double spread, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> e(1.0 / spread);
  const long top = (1L << bits) - 1, mid = 1L << (bits - 1);
  std::vector<uint32_t> out(n);
  for (auto& q : out)
    q = static_cast<uint32_t>(std::clamp<long>(mid + std::lround((rng() & 1 ? 1 : -1) * e(rng)), 0, top));
  return out;
}

Tensor quant_tensor(const std::string& name, int64_t rows, int64_t cols, int bits, int64_t group, uint64_t seed,
                    QuantScheme scheme = QuantScheme::kSymmetric) {
  const int64_t groups = group == 0 ? rows : rows * ((cols + group - 1) / group);
  QuantEncoding q;
  q.bits = bits;
  q.scheme = scheme;
  q.group_size = group;
  q.scale_dtype = DType::kF16;
  q.codes = Bytes::owned(pack_rows(laplace_codes(static_cast<size_t>(rows * cols), bits, 1.2, seed), rows, cols, bits));
  std::vector<uint16_t> scales(static_cast<size_t>(groups));
  for (size_t g = 0; g < scales.size(); ++g) scales[g] = static_cast<uint16_t>(0x2000 + (g * 37 + seed) % 512);
  q.scales = Bytes::from_vector(scales);
  if (scheme == QuantScheme::kAsymmetric) q.mins = Bytes::from_vector(std::vector<uint16_t>(scales.size(), 0xA000));
  return make_tensor(name, {rows, cols}, Encoding{q});
}

// A model with every kind of buffer the writer gives a hint for, plus repeated data.
Model make_model() {
  Model m;
  m.config.dim = 64;
  REQUIRE(m.add(quant_tensor("q4.a", 96, 256, 4, 32, 1)).ok());
  // The same tensor again (repeated weights): every section shared with q4.a.
  REQUIRE(m.add(quant_tensor("q4.b", 96, 256, 4, 32, 1)).ok());
  // 3-bit asymmetric, 100 codes per row (rows end mid-byte), ragged groups of 24.
  REQUIRE(m.add(quant_tensor("q3.c", 80, 100, 3, 24, 2, QuantScheme::kAsymmetric)).ok());
  REQUIRE(m.add(quant_tensor("q2.d", 64, 128, 2, 0, 3)).ok());
  // Dense f16 N(0, 0.02)-like weights and an f32 vector.
  {
    std::mt19937_64 rng(4);
    std::normal_distribution<float> d(0.0f, 0.02f);
    std::vector<uint16_t> h(128 * 64);
    for (auto& v : h) v = f32_to_f16(d(rng));
    REQUIRE(
        m.add(make_tensor("dense.f16", {128, 64}, Encoding{DenseEncoding{DType::kF16, Bytes::from_vector(h)}})).ok());
    std::vector<float> norm(64);
    for (size_t i = 0; i < norm.size(); ++i) norm[i] = 1.0f + 0.01f * static_cast<float>(i % 7);
    REQUIRE(m.add(make_dense_f32("norm", Shape{{64}}, norm)).ok());
  }
  // 2:4 sparse with f32 values, and an unstructured 80 %-sparse bitmask with f16 values.
  {
    const int64_t rows = 32, cols = 64;
    std::vector<float> w(rows * cols);
    std::vector<uint8_t> keep24(w.size()), keep_sparse(w.size());
    std::mt19937_64 rng(5);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (size_t i = 0; i < w.size(); ++i) {
      w[i] = d(rng);
      keep24[i] = (i % 4) < 2;
      keep_sparse[i] = (rng() % 5) == 0;
    }
    std::vector<float> kept;
    auto nm = sparse_nm_pattern(keep24.data(), w.data(), rows, cols, 2, 4, kept);
    REQUIRE(nm.ok());
    sparse_set_dense_values(*nm, kept, rows, DType::kF32);
    REQUIRE(m.add(make_tensor("sparse.nm", {rows, cols}, Encoding{*nm})).ok());
    SparseEncoding un = sparse_unstructured_pattern(keep_sparse.data(), w.data(), rows, cols, kept);
    sparse_set_dense_values(un, kept, rows, DType::kF16);
    REQUIRE(m.add(make_tensor("sparse.mask", {rows, cols}, Encoding{un})).ok());
  }
  REQUIRE(m.add(make_tensor("empty", {0, 8}, Encoding{DenseEncoding{DType::kF32, Bytes()}})).ok());
  return m;
}

bool same_bytes(const Bytes& a, const Bytes& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// Every buffer of two encoding trees, byte for byte.
void require_same_buffers(const Encoding& a, const Encoding& b) {
  REQUIRE(a.node.index() == b.node.index());
  if (const auto* da = std::get_if<DenseEncoding>(&a.node)) {
    CHECK(same_bytes(da->data, std::get<DenseEncoding>(b.node).data));
  } else if (const auto* qa = std::get_if<QuantEncoding>(&a.node)) {
    const auto& qb = std::get<QuantEncoding>(b.node);
    CHECK(same_bytes(qa->codes, qb.codes));
    CHECK(same_bytes(qa->scales, qb.scales));
    CHECK(same_bytes(qa->mins, qb.mins));
  } else {
    const auto& sa = std::get<SparseEncoding>(a.node);
    const auto& sb = std::get<SparseEncoding>(b.node);
    CHECK(same_bytes(sa.index, sb.index));
    CHECK(same_bytes(sa.row_ptr, sb.row_ptr));
    require_same_buffers(*sa.values, *sb.values);
  }
}

void require_same_model(const Model& a, const Model& b) {
  REQUIRE(a.tensors().size() == b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    INFO(a.tensors()[i].name);
    CHECK(a.tensors()[i].name == b.tensors()[i].name);
    CHECK(a.tensors()[i].shape == b.tensors()[i].shape);
    require_same_buffers(*a.tensors()[i].encoding, *b.tensors()[i].encoding);
  }
}

LlmcWriteOptions coding(std::optional<SectionCoding> c, int zstd_level = 0) {
  LlmcWriteOptions o;
  o.coding = c;
  o.zstd_level = zstd_level;
  return o;
}

Result<LlmcFile> parse_bytes(const ByteVec& bytes, const LlmcReadOptions& options = {}) {
  auto copy = std::make_shared<ByteVec>(bytes);
  return parse_llmc("mem.llmc", copy, copy->data(), copy->size(), options);
}

uint32_t prefix_flags(const ByteVec& f) {
  uint32_t v;
  std::memcpy(&v, f.data() + 12, 4);
  return v;
}

const std::optional<SectionCoding> kCodings[] = {std::nullopt,         SectionCoding::kNone,
                                                 SectionCoding::kZstd, SectionCoding::kHuffman,
                                                 SectionCoding::kRans, SectionCoding::kAuto};

}  // namespace

TEST_CASE("llmc entropy: every coding loads bit-identical buffers", "[entropy][llmc]") {
  const Model model = make_model();
  test::TempDir tmp;
  for (const auto& c : kCodings) {
    for (int level : {0, 3}) {
      if (level == 0 && !c) continue;
      INFO((c ? section_coding_name(*c) : "legacy --zstd") << " level " << level);
      const std::string path = tmp.path("m.llmc");
      REQUIRE(write_llmc(model, path, coding(c, level)).ok());
      auto f = open_llmc(path);
      REQUIRE(f.ok());
      require_same_model(model, f->model);
      const ByteVec bytes = test::read_file_bytes(path);
      const bool new_features = c && (*c == SectionCoding::kHuffman || *c == SectionCoding::kRans ||
                                      *c == SectionCoding::kAuto || *c == SectionCoding::kZstd);
      if (!c || *c == SectionCoding::kNone) {
        // Readable by llmc 0.1: no required flag, no transform.
        CHECK(prefix_flags(bytes) == 0);
        for (const auto& s : f->sections) CHECK(s.layout.transform == SectionTransform::kNone);
      }
      if (c == SectionCoding::kHuffman || c == SectionCoding::kRans) {
        CHECK(f->entropy_sections > 0);
        CHECK(f->zstd_sections == 0);
      }
      if (new_features && f->entropy_sections > 0) CHECK(prefix_flags(bytes) == kLlmcFlagSectionCoding);
      for (const auto& s : f->sections) CHECK(s.stored_size <= s.raw_size);
      // Without checksum verification too (the decoders run on unverified bytes).
      LlmcReadOptions fast;
      fast.verify_checksums = false;
      auto g = open_llmc(path, fast);
      REQUIRE(g.ok());
      require_same_model(model, g->model);
    }
  }
}

TEST_CASE("llmc entropy: auto is never larger than raw or any single coder", "[entropy][llmc]") {
  const Model model = make_model();
  test::TempDir tmp;
  std::map<std::string, uint64_t> size;
  for (const auto& c : kCodings) {
    if (!c) continue;
    const std::string path = tmp.path(std::string(section_coding_name(*c)) + ".llmc");
    REQUIRE(write_llmc(model, path, coding(c)).ok());
    size[section_coding_name(*c)] = std::filesystem::file_size(path);
  }
  for (const auto& [name, bytes] : size) {
    INFO(name << " " << bytes << " auto " << size["auto"]);
    CHECK(size["auto"] <= bytes);
  }
  CHECK(size["auto"] < size["none"] * 9 / 10);
  // auto picks rANS over unpacked symbols for the 4-bit codes (the Laplace codes' entropy is
  // well under 4 bits) and byte planes for f16 data.
  auto f = open_llmc(tmp.path("auto.llmc"));
  REQUIRE(f.ok());
  const StorageSummary s = summarize_storage(f->model, *f);
  const SectionUse& codes = s.tensors[0].sections[0];
  CHECK(codes.role == "codes");
  CHECK(codes.coder == SectionCoder::kRans);
  CHECK(codes.layout.transform == SectionTransform::kUnpack);
  CHECK(codes.layout.symbol_bits == 4);
  CHECK(codes.stored_bytes < codes.raw_bytes * 85 / 100);
}

TEST_CASE("llmc entropy: same input gives a byte-identical file on any thread count", "[entropy][llmc]") {
  const Model model = make_model();
  test::TempDir tmp;
  const int saved = omp_get_max_threads();
  for (SectionCoding c : {SectionCoding::kAuto, SectionCoding::kHuffman, SectionCoding::kRans}) {
    omp_set_num_threads(1);
    REQUIRE(write_llmc(model, tmp.path("one.llmc"), coding(c)).ok());
    omp_set_num_threads(2);
    REQUIRE(write_llmc(model, tmp.path("two.llmc"), coding(c)).ok());
    omp_set_num_threads(4);
    REQUIRE(write_llmc(model, tmp.path("four.llmc"), coding(c)).ok());
    const ByteVec one = test::read_file_bytes(tmp.path("one.llmc"));
    CHECK(one == test::read_file_bytes(tmp.path("two.llmc")));
    CHECK(one == test::read_file_bytes(tmp.path("four.llmc")));
    // Writing what was read gives the same file again.
    auto back = read_llmc(tmp.path("one.llmc"));
    REQUIRE(back.ok());
    REQUIRE(write_llmc(*back, tmp.path("again.llmc"), coding(c)).ok());
    CHECK(one == test::read_file_bytes(tmp.path("again.llmc")));
  }
  omp_set_num_threads(saved);
}

TEST_CASE("llmc dedup: repeated tensors and shared buffers are stored once", "[entropy][llmc]") {
  const Model model = make_model();
  Model single;  // the same model without the repeated tensor q4.b
  for (const Tensor& t : model.tensors())
    if (t.name != "q4.b") REQUIRE(single.add(t).ok());
  test::TempDir tmp;
  for (SectionCoding c : {SectionCoding::kNone, SectionCoding::kAuto}) {
    INFO(section_coding_name(c));
    REQUIRE(write_llmc(model, tmp.path("m.llmc"), coding(c)).ok());
    REQUIRE(write_llmc(single, tmp.path("s.llmc"), coding(c)).ok());
    // The second copy costs header bytes only (a tensor entry), not its ~14 KB of codes and scales.
    const auto with = std::filesystem::file_size(tmp.path("m.llmc")),
               without = std::filesystem::file_size(tmp.path("s.llmc"));
    CHECK(with > without);
    CHECK(with - without < 512);
    auto f = open_llmc(tmp.path("m.llmc"));
    REQUIRE(f.ok());
    // Decoded once: both tensors use the same memory.
    const auto& a = std::get<QuantEncoding>(f->model.get("q4.a").encoding->node);
    const auto& b = std::get<QuantEncoding>(f->model.get("q4.b").encoding->node);
    CHECK(a.codes.data() == b.codes.data());
    CHECK(a.scales.data() == b.scales.data());
    // Accounting: q4.b's sections are marked shared and count no stored bytes.
    const StorageSummary s = summarize_storage(f->model, *f);
    REQUIRE(s.tensors[1].name == "q4.b");
    CHECK(s.tensors[1].stored_bytes == 0);
    CHECK(s.tensors[1].unique_bytes == 0);
    CHECK(s.tensors[1].encoded_bytes == s.tensors[0].encoded_bytes);
    for (const SectionUse& u : s.tensors[1].sections) CHECK(u.shared);
    CHECK(s.unique_bytes == s.encoded_bytes - s.tensors[1].encoded_bytes);
    uint64_t stored = 0;
    for (const TensorStorage& t : s.tensors) stored += t.stored_bytes;
    CHECK(stored == s.stored_bytes);
    CHECK(s.header_bytes + s.stored_bytes <= s.file_bytes);
    CHECK(s.file_bytes == std::filesystem::file_size(tmp.path("m.llmc")));
  }
}

namespace {

// A file around a hand-made header with one dense f32 [2, 4] tensor whose one section is coded as
// given, so each field of the section record can be made hostile.
struct CodedSpec {
  SectionCoder coder = SectionCoder::kRans;
  SectionLayout layout{SectionTransform::kUnpack, 4, 8, 0};
  int64_t raw_delta = 0;
  int compression = -1;  // overrides the record's compression value when >= 0
  int transform = -1;    // overrides the record's transform value when >= 0
  int symbol_bits = -1;  // overrides the record's symbol_bits when >= 0
  uint32_t flags = kLlmcFlagSectionCoding;
  bool damage_payload = false;
};

ByteVec build_coded(const CodedSpec& spec) {
  // 32 bytes whose 4-bit codes are skewed (mostly 0x11).
  ByteVec raw(32, 0x11);
  raw[5] = 0x21;
  raw[17] = 0x13;
  auto stored = encode_section_as(raw, spec.coder, spec.layout, 3);
  REQUIRE(stored.ok());
  ByteVec payload = *stored;
  if (spec.damage_payload) payload[payload.size() - 1] ^= 0x5a;
  auto build = [&](uint64_t data_offset) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.ForceDefaults(true);
    auto config = fb::CreateConfigDirect(fbb, "llama", 4);
    const std::vector<int64_t> shape = {2, 4};
    auto node = fb::CreateDenseNode(fbb, fb::DType::F32, 0);
    auto enc = fb::CreateEncoding(fbb, fb::Node::DenseNode, node.Union());
    std::vector<flatbuffers::Offset<fb::TensorEntry>> entries = {fb::CreateTensorEntryDirect(fbb, "t", &shape, enc)};
    auto tensors = fbb.CreateVector(entries);
    const auto compression = static_cast<fb::Compression>(spec.compression >= 0 ? spec.compression : int(spec.coder));
    const auto transform =
        static_cast<fb::SectionTransform>(spec.transform >= 0 ? spec.transform : int(spec.layout.transform));
    std::vector<flatbuffers::Offset<fb::Section>> secs = {
        fb::CreateSection(fbb, data_offset, payload.size(), raw.size() + static_cast<uint64_t>(spec.raw_delta),
                          compression, XXH64(payload.data(), payload.size(), 0), transform,
                          static_cast<uint8_t>(spec.symbol_bits >= 0 ? spec.symbol_bits : spec.layout.symbol_bits),
                          spec.layout.row_symbols, static_cast<uint8_t>(spec.layout.plane_width))};
    auto header = fb::CreateHeader(fbb, config, 0, tensors, fbb.CreateVector(secs));
    fb::FinishHeaderBuffer(fbb, header);
    return ByteVec(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  ByteVec header = build(0);
  const uint64_t data_offset = (64 + header.size() + 63) / 64 * 64;
  header = build(data_offset);
  ByteVec f(data_offset, 0);
  std::memcpy(f.data(), kLlmcMagic, 8);
  const uint32_t version = 1;
  std::memcpy(f.data() + 8, &version, 4);
  std::memcpy(f.data() + 12, &spec.flags, 4);
  const uint64_t hsize = header.size();
  std::memcpy(f.data() + 16, &hsize, 8);
  std::memcpy(f.data() + 64, header.data(), header.size());
  f.insert(f.end(), payload.begin(), payload.end());
  const uint64_t size = f.size(), hxx = XXH64(f.data() + 64, hsize, 0);
  std::memcpy(f.data() + 24, &hxx, 8);
  std::memcpy(f.data() + 32, &size, 8);
  return f;
}

}  // namespace

TEST_CASE("llmc reader rejects hostile coded sections", "[entropy][llmc]") {
  for (SectionCoder c : {SectionCoder::kHuffman, SectionCoder::kRans, SectionCoder::kZstd}) {
    CodedSpec ok;
    ok.coder = c;
    auto r = parse_bytes(build_coded(ok));
    INFO(section_coder_name(c));
    REQUIRE(r.ok());
    CHECK(r->model.get("t").to_f32().size() == 8);
  }
  auto spec = [](auto edit) {
    CodedSpec s;
    edit(s);
    return s;
  };
  struct Case {
    const char* what;
    CodedSpec spec;
    ErrorCode code;
    const char* message;
    bool verify = true;
  };
  const Case kCases[] = {
      {"unknown required flag", spec([](CodedSpec& s) { s.flags |= 1u << 17; }), ErrorCode::kUnsupported,
       "requires features"},
      {"unknown transform", spec([](CodedSpec& s) { s.transform = 9; }), ErrorCode::kUnsupported, "layout 9"},
      {"unknown coder", spec([](CodedSpec& s) { s.compression = 4; }), ErrorCode::kUnsupported, "compression 4"},
      {"transform on a raw section", spec([](CodedSpec& s) { s.compression = 0; }), ErrorCode::kFormat,
       "raw section with a symbol layout"},
      {"raw size off by a row", spec([](CodedSpec& s) { s.raw_delta = 4; }), ErrorCode::kFormat, "needs 32"},
      {"raw size not whole rows", spec([](CodedSpec& s) { s.raw_delta = 2; }), ErrorCode::kFormat,
       "whole number of 4-byte rows"},
      {"bits outside 1..8", spec([](CodedSpec& s) { s.symbol_bits = 0; }), ErrorCode::kFormat, "0-bit"},
      {"damaged rans payload", spec([](CodedSpec& s) { s.damage_payload = true; }), ErrorCode::kFormat, "tensor 't'",
       false},
      // A damaged stream whose checksum matches (as a buggy writer would make it) still fails.
      {"damaged huffman payload", spec([](CodedSpec& s) {
         s.coder = SectionCoder::kHuffman;
         s.damage_payload = true;
       }),
       ErrorCode::kFormat, "huffman block"},
  };
  for (const auto& c : kCases) {
    INFO(c.what);
    LlmcReadOptions o;
    o.verify_checksums = c.verify;
    auto r = parse_bytes(build_coded(c.spec), o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == c.code);
    CHECK_THAT(r.error().message, Catch::Contains(c.message));
  }
}

TEST_CASE("llmc entropy files survive damage to every coded section without crashing", "[entropy][llmc]") {
  const Model model = make_model();
  test::TempDir tmp;
  for (SectionCoding c : {SectionCoding::kHuffman, SectionCoding::kRans, SectionCoding::kAuto}) {
    REQUIRE(write_llmc(model, tmp.path("m.llmc"), coding(c)).ok());
    const ByteVec full = test::read_file_bytes(tmp.path("m.llmc"));
    auto f = parse_bytes(full);
    REQUIRE(f.ok());
    LlmcReadOptions unverified;
    unverified.verify_checksums = false;
    size_t errors = 0, damaged = 0;
    for (const LlmcSectionInfo& s : f->sections) {
      if (s.coder == SectionCoder::kNone) continue;
      for (uint64_t at :
           {s.offset, s.offset + 4, s.offset + 9, s.offset + s.stored_size / 2, s.offset + s.stored_size - 1}) {
        ByteVec g = full;
        g[at] ^= 0x24;
        ++damaged;
        auto r = parse_bytes(g, unverified);
        if (!r.ok()) {
          ++errors;
          // Caught by the decoders ("section N at offset ...") or, when the damaged stream still
          // decodes, by validate_encoding on the decoded buffers.
          CHECK(r.error().code == ErrorCode::kFormat);
          CHECK_THAT(r.error().message, Catch::Contains("mem.llmc"));
        } else {
          for (const Tensor& t : r->model.tensors()) (void)t.to_f32();
        }
        CHECK_FALSE(parse_bytes(g).ok());  // with verification it is always a checksum error
      }
    }
    INFO(errors << " of " << damaged);
    CHECK(damaged > 10);
    CHECK(errors * 2 > damaged);  // framing, table and final-state checks catch most damage
  }
}

// ---- golden files of the section coders (formats/README.md rule 4: never regenerated)

namespace {

// The golden model: a 1-layer llama (dim 32, hidden 60, vocab 32) whose linear weights are 4-bit
// (attention, g16) and 3-bit asymmetric (FFN, g20, rows of 60 codes end mid-byte) codes with a
// skewed distribution, f16 embeddings and f32 norms. Values follow from the formulas below.
ModelConfig golden_config() {
  ModelConfig c;
  c.dim = 32;
  c.hidden_dim = 60;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 32;
  c.context_length = 64;
  return c;
}
constexpr int kSkew[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1, -1, 2, -2};
uint32_t golden_code(int bits, int64_t r, int64_t c) {
  return static_cast<uint32_t>((1 << (bits - 1)) + kSkew[(r * 31 + c * 17 + r * c) % 16]);
}
bool is_ffn(const std::string& name) { return name.find("ffn_") != std::string::npos; }
uint16_t golden_f16(size_t i) { return static_cast<uint16_t>(0x2c00 + (i * 167) % 256); }

Model golden_model() {
  Model m;
  m.config = golden_config();
  m.tokenizer.kind = TokenizerKind::kSentencePiece;
  for (int i = 0; i < 32; ++i) {
    m.tokenizer.tokens.push_back("g" + std::to_string(i));
    m.tokenizer.scores.push_back(static_cast<float>(-i));
  }
  m.metadata["golden"] = "entropy";
  for (const TensorSpec& spec : expected_tensors(m.config)) {
    const int64_t rows = spec.shape.rows(), cols = spec.shape.cols();
    std::shared_ptr<Encoding> enc;
    if (spec.shape.dims.size() == 1) {
      std::vector<float> v(static_cast<size_t>(cols));
      for (size_t i = 0; i < v.size(); ++i) v[i] = 1.0f + 0.25f * static_cast<float>(i % 4);
      REQUIRE(m.add(make_dense_f32(spec.name, spec.shape, v)).ok());
      continue;
    }
    if (spec.name == "token_embd.weight") {
      std::vector<uint16_t> h(static_cast<size_t>(rows * cols));
      for (size_t i = 0; i < h.size(); ++i) h[i] = golden_f16(i);
      REQUIRE(
          m.add(make_tensor(spec.name, spec.shape.dims, Encoding{DenseEncoding{DType::kF16, Bytes::from_vector(h)}}))
              .ok());
      continue;
    }
    const bool ffn = is_ffn(spec.name);
    const int bits = ffn ? 3 : 4;
    QuantEncoding q;
    q.bits = bits;
    q.scheme = ffn ? QuantScheme::kAsymmetric : QuantScheme::kSymmetric;
    q.group_size = ffn ? 20 : 16;
    q.scale_dtype = ffn ? DType::kF32 : DType::kF16;
    std::vector<uint32_t> codes(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) codes[static_cast<size_t>(r * cols + c)] = golden_code(bits, r, c);
    q.codes = Bytes::owned(pack_rows(codes, rows, cols, bits));
    const size_t groups = static_cast<size_t>(rows * ((cols + q.group_size - 1) / q.group_size));
    if (ffn) {
      q.scales = Bytes::from_vector(std::vector<float>(groups, 0.5f));
      q.mins = Bytes::from_vector(std::vector<float>(groups, -1.5f));
    } else {
      q.scales = Bytes::from_vector(std::vector<uint16_t>(groups, 0x3400));  // 0.25
    }
    REQUIRE(m.add(make_tensor(spec.name, spec.shape.dims, Encoding{q})).ok());
  }
  return m;
}

const char* const kGoldenFiles[] = {"entropy-huffman.llmc", "entropy-rans.llmc", "entropy-zstd.llmc"};
const SectionCoding kGoldenCodings[] = {SectionCoding::kHuffman, SectionCoding::kRans, SectionCoding::kZstd};
// What each golden file holds ("coder/layout" of its sections), as written once: the codes of
// the 4- and 3-bit weights unpacked, f16 embeddings in byte planes, constant scales as bytes.
const std::set<std::string> kGoldenSections[] = {
    {"raw/bytes", "huffman/unpack4x32", "huffman/unpack3x32", "huffman/unpack3x60", "huffman/planes2", "huffman/bytes"},
    {"raw/bytes", "rans/unpack4x32", "rans/unpack3x32", "rans/unpack3x60", "rans/bytes"},
    {"zstd/planes2", "zstd/planes4", "zstd/bytes"},
};

}  // namespace

TEST_CASE("llmc golden entropy files keep loading", "[entropy][llmc]") {
  for (size_t k = 0; k < std::size(kGoldenFiles); ++k) {
    const char* name = kGoldenFiles[k];
    INFO(name);
    const std::string path = std::string(LLMC_SOURCE_DIR) + "/tests/golden/v1/" + name;
    auto f = open_llmc(path);
    REQUIRE(f.ok());
    CHECK(f->flags == kLlmcFlagSectionCoding);
    CHECK(f->model.metadata.at("golden") == "entropy");
    CHECK(f->model.config.hidden_dim == 60);
    std::set<std::string> kinds;
    for (const auto& s : f->sections) kinds.insert(std::string(section_coder_name(s.coder)) + "/" + s.layout.str());
    CHECK(kinds == kGoldenSections[k]);
    for (const Tensor& t : f->model.tensors()) {
      INFO(t.name);
      const std::vector<float> got = t.to_f32();
      const int64_t rows = t.rows(), cols = t.cols();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const size_t i = static_cast<size_t>(r * cols + c);
          float want;
          if (t.shape.dims.size() == 1) {
            want = 1.0f + 0.25f * static_cast<float>(i % 4);
          } else if (t.name == "token_embd.weight") {
            want = f16_to_f32(golden_f16(i));
          } else if (is_ffn(t.name)) {
            want = static_cast<float>(golden_code(3, r, c)) * 0.5f - 1.5f;
          } else {
            want = (static_cast<float>(golden_code(4, r, c)) - 8.0f) * 0.25f;
          }
          if (got[i] != want) {
            FAIL_CHECK("[" << r << ", " << c << "] = " << got[i] << ", want " << want);
            break;
          }
        }
    }
    auto loaded = load_model(path);
    REQUIRE(loaded.ok());
  }
}

// Writes the golden files (run by hand: llmc_tests "[.llmc-golden-entropy-write]"); once
// released they must never change.
TEST_CASE("llmc write golden entropy files", "[.llmc-golden-entropy-write]") {
  const Model m = golden_model();
  for (size_t i = 0; i < std::size(kGoldenFiles); ++i) {
    LlmcWriteOptions o = coding(kGoldenCodings[i]);
    o.command_line = "llmc_tests [.llmc-golden-entropy-write]";
    std::string path = LLMC_SOURCE_DIR "/tests/golden/v1/";
    path += kGoldenFiles[i];
    REQUIRE(write_llmc(m, path, o).ok());
  }
}

// ---- the CLI

TEST_CASE("CLI --entropy on convert, quantize and prune: smaller files, identical tensors", "[entropy][cli]") {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return;
  test::TempDir dir;
  const std::string src = " " + bin + " --tokenizer " + tok;
  const std::string q_none = dir.path("q4.llmc"), q_auto = dir.path("q4-auto.llmc");
  REQUIRE(run_cli("quantize" + src + " -o " + q_none + " --method rtn --bits 4").exit_code == 0);
  auto r = run_cli("quantize" + src + " -o " + q_auto + " --method rtn --bits 4 --entropy auto");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto a = load_model(q_none), b = load_model(q_auto);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  test::require_same_tensors(*a, *b);
  CHECK(std::filesystem::file_size(q_auto) < std::filesystem::file_size(q_none));

  const std::string c_rans = dir.path("c.llmc"), p_huff = dir.path("p.llmc");
  REQUIRE(run_cli("convert" + src + " -o " + c_rans + " --dtype f16 --entropy rans").exit_code == 0);
  REQUIRE(run_cli("prune" + src + " -o " + p_huff + " --sparsity 0.5 --entropy huffman").exit_code == 0);
  for (const auto& path : {c_rans, p_huff}) CHECK(load_model(path).ok());

  // inspect: the storage stages and the coder of every section.
  auto ins = run_cli("inspect " + q_auto + " --json -");
  REQUIRE(ins.exit_code == 0);
  const auto j = nlohmann::json::parse(ins.output);
  const auto& st = j["storage"];
  CHECK(st["file_bytes"].get<uint64_t>() == std::filesystem::file_size(q_auto));
  CHECK(st["f32_bytes"].get<uint64_t>() == 4 * j["size"]["parameters"].get<uint64_t>());
  CHECK(st["encoded_bytes"].get<uint64_t>() == j["size"]["encoded_bytes"].get<uint64_t>());
  CHECK(st["stored_bytes"].get<uint64_t>() < st["unique_bytes"].get<uint64_t>());
  CHECK(st["unique_bytes"].get<uint64_t>() <= st["encoded_bytes"].get<uint64_t>());
  CHECK(st["coders"].contains("rans"));
  uint64_t stored = 0;
  for (const auto& t : st["tensors"]) {
    stored += t["stored_bytes"].get<uint64_t>();
    for (const auto& s : t["sections"]) CHECK(s.contains("coder"));
  }
  CHECK(stored == st["stored_bytes"].get<uint64_t>());
  auto md = run_cli("inspect " + q_auto);
  REQUIRE(md.exit_code == 0);
  CHECK_THAT(md.output, Catch::Contains("| stage | bytes |"));
  CHECK_THAT(md.output, Catch::Contains("rans/unpack4x"));
}

// A real quantized model (stories260K, RTN 4 and 3 bit) written with every coding: the weights load
// back bit-identical, each file only uses the coders it asked for, the section table (dedup) is the
// same, and per section auto is never larger than what any single coder or raw gives.
TEST_CASE("llmc entropy on quantized stories260K: every coding loads the same weights, auto is smallest",
          "[entropy][llmc]") {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return;
  test::TempDir dir;
  struct Written {
    const char* name;
    std::optional<SectionCoding> coding;
    int zstd_level;
    std::set<SectionCoder> allowed;
  };
  using enum SectionCoder;
  const Written kWritten[] = {
      {"none", SectionCoding::kNone, 0, {kNone}},
      {"zstd-bytes", std::nullopt, 3, {kNone, kZstd}},
      {"zstd", SectionCoding::kZstd, 3, {kNone, kZstd}},
      {"huffman", SectionCoding::kHuffman, 0, {kNone, kHuffman}},
      {"rans", SectionCoding::kRans, 0, {kNone, kRans}},
      {"auto", SectionCoding::kAuto, 3, {kNone, kZstd, kHuffman, kRans}},
  };
  for (int bits : {4, 3}) {
    INFO(bits << "-bit");
    const std::string q = dir.path("q" + std::to_string(bits) + ".llmc");
    auto r = run_cli("quantize " + bin + " --tokenizer " + tok + " -o " + q + " --method rtn --bits " +
                     std::to_string(bits));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto base = read_llmc(q);
    REQUIRE(base.ok());
    std::map<std::string, LlmcFile> files;
    std::map<std::string, uint64_t> size;
    for (const Written& w : kWritten) {
      INFO(w.name);
      const std::string path = dir.path(std::string(w.name) + ".llmc");
      LlmcWriteOptions o = coding(w.coding, w.zstd_level);
      REQUIRE(write_llmc(*base, path, o).ok());
      auto f = open_llmc(path);
      REQUIRE(f.ok());
      test::require_same_tensors(*base, f->model);  // decoded to f32, bit for bit
      require_same_model(*base, f->model);          // and every buffer byte for byte
      for (const LlmcSectionInfo& s : f->sections) {
        CHECK(w.allowed.count(s.coder) == 1);
        CHECK(s.stored_size <= s.raw_size);
        if (s.coder == kNone) CHECK(s.stored_size == s.raw_size);
      }
      size[w.name] = std::filesystem::file_size(path);
      files.emplace(w.name, std::move(*f));
    }
    // Same buffers, same dedup: the section tables line up index by index.
    const LlmcFile& best = files.at("auto");
    for (const auto& [name, f] : files) {
      INFO(name << ": " << size[name] << " bytes, auto " << size["auto"]);
      REQUIRE(f.sections.size() == best.sections.size());
      for (size_t i = 0; i < f.sections.size(); ++i) {
        CHECK(f.sections[i].raw_size == best.sections[i].raw_size);
        CHECK(best.sections[i].stored_size <= f.sections[i].stored_size);
      }
      CHECK(size["auto"] <= size[name]);
    }
    // The choice is per section: the quant codes go to Huffman or rANS over unpacked codes where
    // that wins, and more than one coder is used in the auto file.
    std::set<SectionCoder> used;
    uint64_t codes_raw = 0, codes_stored = 0, codes_entropy = 0;
    for (const LlmcTensorSections& t : best.tensor_sections)
      for (const LlmcSectionRef& ref : t.refs) {
        const LlmcSectionInfo& s = best.sections[ref.section];
        used.insert(s.coder);
        if (ref.role != "codes") continue;
        codes_raw += s.raw_size;
        codes_stored += s.stored_size;
        if (s.coder == kHuffman || s.coder == kRans) {
          ++codes_entropy;
          CHECK(s.layout.transform == SectionTransform::kUnpack);
          CHECK(s.layout.symbol_bits == bits);
        }
      }
    CHECK(used.size() >= 2);
    CHECK(codes_entropy > 0);
    CHECK(codes_stored < codes_raw);
    CHECK(size["auto"] < size["none"]);
  }
}

TEST_CASE("CLI --entropy usage errors leave no output", "[entropy][cli]") {
  const std::string bin = test::fixture("models/stories260K/stories260K.bin");
  const std::string tok = test::fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return;
  test::TempDir dir;
  const std::string src = " " + bin + " --tokenizer " + tok;
  struct Case {
    std::string args;
    std::string out;
    const char* message;
  };
  const Case kCases[] = {
      {"convert" + src + " -o " + dir.path("x.gguf") + " --entropy rans", dir.path("x.gguf"), "applies to .llmc"},
      {"quantize" + src + " -o " + dir.path("y") + " --bits 4 --entropy huffman", dir.path("y"), "applies to .llmc"},
      {"convert" + src + " -o " + dir.path("z.llmc") + " --entropy huffman --zstd 5", dir.path("z.llmc"), "no effect"},
      {"convert" + src + " -o " + dir.path("w.llmc") + " --entropy lzma", dir.path("w.llmc"), "entropy"},
  };
  for (const auto& c : kCases) {
    auto r = run_cli(c.args);
    INFO(c.args << "\n" << r.output);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains(c.message));
    CHECK_FALSE(std::filesystem::exists(c.out));
  }
  // none/auto mean "as the format stores it" for GGUF and are accepted.
  CHECK(run_cli("convert" + src + " -o " + dir.path("ok.gguf") + " --entropy auto").exit_code == 0);
}
