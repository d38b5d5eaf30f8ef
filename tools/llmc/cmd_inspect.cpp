// llmc inspect: architecture, tokenizer, per-tensor encodings and sizes, bits per weight, and for
// .llmc files the bytes of each storage stage with the coder of every section (docs/storage.md).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>

#include "cli_util.h"
#include "commands.h"
#include "core/lowrank.h"
#include "core/palette.h"
#include "core/sparse.h"
#include "formats/file_io.h"
#include "model/describe.h"

namespace llmc::cli {
namespace {

struct InspectArgs {
  std::string model;
  std::string tokenizer;
  std::string json;
  bool quiet_tensors = false;
};

std::string thousands(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string percent(uint64_t part, uint64_t whole) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %%",
                whole ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0);
  return buf;
}

// "codes rans/unpack4x64, scales zstd/planes2, mins = section 3" for one tensor's sections.
std::string section_list(const TensorStorage& t) {
  std::string out;
  for (const SectionUse& u : t.sections) {
    if (!out.empty()) out += ", ";
    out += u.role + " ";
    if (u.shared)
      out += str_cat("= section ", u.section, " (dedup)");
    else if (u.coder == SectionCoder::kNone)
      out += "raw";
    else
      out += str_cat(section_coder_name(u.coder), "/", u.layout.str());
  }
  return out;
}

// Markdown tables: per tensor (unless omitted), the stages in total, and per coder.
void print_storage(const Model& m, const StorageSummary& s, bool show_tensors) {
  if (show_tensors) {
    std::printf("\n| tensor | shape | encoding | f32 bytes | encoded | stored | stored / encoded | sections |\n");
    std::printf("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |\n");
    for (size_t i = 0; i < s.tensors.size(); ++i) {
      const TensorStorage& t = s.tensors[i];
      const Tensor& ten = m.tensors()[i];
      std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", t.name.c_str(), ten.shape.str().c_str(),
                  describe_encoding(*ten.encoding).c_str(), thousands(t.f32_bytes).c_str(),
                  thousands(t.encoded_bytes).c_str(), thousands(t.stored_bytes).c_str(),
                  percent(t.stored_bytes, t.encoded_bytes).c_str(), section_list(t).c_str());
    }
  }
  std::printf("\n| stage | bytes | of f32 | of the previous stage |\n| --- | ---: | ---: | ---: |\n");
  const struct {
    const char* stage;
    uint64_t bytes;
  } kStages[] = {
      {"logical f32", s.f32_bytes},
      {"logical f16", s.f16_bytes},
      {"encoded (packed codes, scales, masks, ...)", s.encoded_bytes},
      {"deduplicated (identical buffers once)", s.unique_bytes},
      {"stored (after zstd / Huffman / rANS)", s.stored_bytes},
      {"file (+ header and alignment)", s.file_bytes},
  };
  uint64_t previous = 0;
  for (const auto& st : kStages) {
    std::printf("| %s | %s | %s | %s |\n", st.stage, thousands(st.bytes).c_str(),
                percent(st.bytes, s.f32_bytes).c_str(), previous ? percent(st.bytes, previous).c_str() : "");
    previous = st.bytes;
  }
  std::printf(
      "\n| coder | sections | raw bytes | stored bytes | stored / raw |\n| --- | ---: | ---: | ---: | ---: |\n");
  for (const auto& [name, c] : s.coders)
    std::printf("| %s | %lld | %s | %s | %s |\n", name.c_str(), static_cast<long long>(c.sections),
                thousands(c.raw_bytes).c_str(), thousands(c.stored_bytes).c_str(),
                percent(c.stored_bytes, c.raw_bytes).c_str());
}

// Palette details of a tensor (directly, or as the values of a Sparse one); null when none.
const PaletteEncoding* palette_of(const Encoding& e) {
  if (const auto* p = std::get_if<PaletteEncoding>(&e.node)) return p;
  if (const auto* s = std::get_if<SparseEncoding>(&e.node)) return std::get_if<PaletteEncoding>(&s->values->node);
  return nullptr;
}

void print_human(const Model& m, const nlohmann::json& j, bool show_tensors) {  // NOLINT(readability-function-size)
  const auto& c = m.config;
  std::printf("file: %s (%s, %llu bytes)\n", j["file"].get<std::string>().c_str(),
              j["format"].get<std::string>().c_str(), static_cast<unsigned long long>(j["file_bytes"].get<uint64_t>()));
  if (!m.tensors().empty()) {
    std::printf("architecture: %s  dim %lld  hidden %lld  layers %lld  heads %lld  kv_heads %lld  head_dim %lld\n",
                family_name(c.family), (long long)c.dim, (long long)c.hidden_dim, (long long)c.n_layers,
                (long long)c.n_heads, (long long)c.n_kv_heads, (long long)c.head_dim);
    std::printf("vocab %lld  context %lld  norm_eps %g  rope_theta %g  rope %s  output %s%s\n", (long long)c.vocab_size,
                (long long)c.context_length, c.norm_eps, c.rope_theta,
                j["config"]["rope_style"].get<std::string>().c_str(), c.tied_embeddings ? "tied" : "untied",
                c.attn_qkv_bias ? "  qkv-bias" : "");
    // Structured pruning leaves per-layer widths: one line each, layer by layer.
    for (const char* key : {"layer_n_heads", "layer_n_kv_heads", "layer_hidden_dim"})
      if (j["config"].contains(key)) std::printf("per-layer %s: %s\n", key + 6, j["config"][key].dump().c_str());
  }
  const auto& t = j["tokenizer"];
  if (m.tokenizer.empty()) {
    std::printf("tokenizer: none\n");
  } else {
    std::printf("tokenizer: %s, %lld tokens, %lld merges, bos %d, eos %d%s%s\n", t["kind"].get<std::string>().c_str(),
                (long long)m.tokenizer.tokens.size(), (long long)m.tokenizer.merges.size(), m.tokenizer.bos_id,
                m.tokenizer.eos_id, m.tokenizer.pre.empty() ? "" : ", pre ", m.tokenizer.pre.c_str());
  }
  if (m.tensors().empty()) return;
  if (show_tensors && !j.contains("storage")) {
    std::printf("\n%-28s %-14s %-26s %12s\n", "tensor", "shape", "encoding", "bytes");
    for (const auto& ten : m.tensors())
      std::printf("%-28s %-14s %-26s %12llu\n", ten.name.c_str(), ten.shape.str().c_str(),
                  describe_encoding(*ten.encoding).c_str(), static_cast<unsigned long long>(ten.encoded_bytes()));
  }
  bool header = false;
  for (const auto& t : j["tensors"]) {
    if (!t.contains("sparsity")) continue;
    if (!header)
      std::printf("\n%-28s %-8s %9s %14s %14s\n", "sparse tensor", "pattern", "sparsity", "pattern bytes",
                  "value bytes");
    header = true;
    std::printf("%-28s %-8s %8.2f%% %14llu %14llu\n", t["name"].get<std::string>().c_str(),
                t["pattern"].get<std::string>().c_str(), 100.0 * t["sparsity"].get<double>(),
                (unsigned long long)t["pattern_bytes"].get<uint64_t>(),
                (unsigned long long)t["values_bytes"].get<uint64_t>());
  }
  header = false;
  for (const auto& t : j["tensors"]) {
    if (!t.contains("palette_bits")) continue;
    if (!header)
      std::printf("\n%-28s %4s %-10s %14s %14s %9s %14s\n", "palette tensor", "bits", "codebooks", "codebook bytes",
                  "index bytes", "outliers", "outlier bytes");
    header = true;
    std::printf("%-28s %4d %-10s %14llu %14llu %9lld %14llu\n", t["name"].get<std::string>().c_str(),
                t["palette_bits"].get<int>(), t["granularity"].get<std::string>().c_str(),
                (unsigned long long)t["codebook_bytes"].get<uint64_t>(),
                (unsigned long long)t["index_bytes"].get<uint64_t>(), (long long)t["outliers"].get<int64_t>(),
                (unsigned long long)t["outlier_bytes"].get<uint64_t>());
  }
  const auto& s = j["size"];
  std::printf("\ntotals: %lld tensors, %lld parameters, %llu encoded bytes\n", (long long)s["tensors"].get<int64_t>(),
              (long long)s["parameters"].get<int64_t>(), (unsigned long long)s["encoded_bytes"].get<uint64_t>());
  for (const auto& [name, e] : s["encodings"].items())
    std::printf("  %-26s %4lld tensors %12llu bytes\n", name.c_str(), (long long)e["tensors"].get<int64_t>(),
                (unsigned long long)e["bytes"].get<uint64_t>());
  std::printf("bits per weight: %.3f (linear, embedding and output weights, all encoding bytes counted)\n",
              s["bits_per_weight"].get<double>());
}

int run_inspect(const InspectArgs& a) {
  auto loaded = load_model_for_cli(a.model, a.tokenizer, /*require_tensors=*/false);
  if (!loaded.ok()) return report_error(loaded.error());
  const Model& m = *loaded;
  auto fmt = detect_format(a.model);
  std::optional<StorageSummary> storage;
  if (fmt.ok() && *fmt == FileFormat::kLlmc) {
    LlmcReadOptions header_only;
    header_only.load_tensors = false;
    auto file = open_llmc(a.model, header_only);
    if (!file.ok()) return report_error(file.error());
    storage = summarize_storage(m, *file);
  }
  nlohmann::json j = {
      {"file", a.model},
      {"format", fmt.ok() ? file_format_name(*fmt) : "unknown"},
      {"file_bytes", path_size(a.model)},
      {"config", config_to_json(m.config)},
      {"tokenizer", tokenizer_summary_json(m.tokenizer)},
      {"size", size_summary_json(summarize_size(m))},
  };
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : m.tensors()) {
    nlohmann::json e = {{"name", t.name},
                        {"shape", t.shape.dims},
                        {"kind", encoding_kind_name(*t.encoding)},
                        {"encoding", describe_encoding(*t.encoding)},
                        {"bytes", t.encoded_bytes()}};
    if (const auto* sp = std::get_if<SparseEncoding>(&t.encoding->node)) {
      e["pattern"] = sparse_pattern_name(*sp);
      e["sparsity"] = t.numel() == 0 ? 0.0 : 1.0 - static_cast<double>(sp->nnz) / static_cast<double>(t.numel());
      e["pattern_bytes"] = sparse_pattern_bytes(*sp);
      e["values_bytes"] = sparse_values_bytes(*sp);
    }
    for (const DecompositionPart& p : decomposition_parts(*t.encoding, t.shape))  // LowRank, Tucker
      e["parts"].push_back({{"role", p.role},
                            {"shape", p.shape.dims},
                            {"encoding", describe_encoding(*p.encoding)},
                            {"bytes", encoded_bytes(*p.encoding)}});
    if (const PaletteEncoding* p = palette_of(*t.encoding)) {
      e["palette_bits"] = p->bits;
      e["granularity"] = palette_granularity_name(*p);
      e["codebook_bytes"] = palette_codebook_bytes(*p);
      e["index_bytes"] = p->indices.size();
      e["outliers"] = palette_outlier_count(*p);
      e["outlier_bytes"] = palette_outlier_bytes(*p);
    }
    tensors.push_back(std::move(e));
  }
  j["tensors"] = tensors;
  if (storage) j["storage"] = storage_summary_json(*storage);
  if (a.json == "-") {
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  print_human(m, j, !a.quiet_tensors);
  if (storage) print_storage(m, *storage, !a.quiet_tensors);
  if (!a.json.empty()) {
    std::ofstream out(a.json);
    out << j.dump(2) << "\n";
    if (!out) return report_error(make_error(ErrorCode::kIo, a.json, ": cannot write"));
  }
  return kExitOk;
}

}  // namespace

RunFn setup_inspect(CLI::App& sub) {
  auto a = std::make_shared<InspectArgs>();
  sub.add_option("model", a->model, "Model file or folder (.llmc, GGUF, safetensors, llama2.c)")->required();
  sub.add_option("--tokenizer", a->tokenizer, "Separate tokenizer (llama2.c tokenizer.bin, tokenizer.json, GGUF)");
  sub.add_option("--json", a->json, "Also write the summary as JSON to FILE ('-' = stdout only)");
  sub.add_flag("--no-tensors", a->quiet_tensors, "Omit the per-tensor table");
  return [a] { return run_inspect(*a); };
}

}  // namespace llmc::cli
