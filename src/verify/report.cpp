// Verification reports: JSON with a versioned schema (docs/report-schema.md) and its Markdown rendering.
#include "verify/report.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "core/version.h"
#include "formats/file_io.h"
#include "model/arch.h"
#include "model/describe.h"

namespace llmc {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- identity and size

Result<FileIdentity> identify_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec) && !fs::is_regular_file(path, ec))
    return make_error(ErrorCode::kIo, path, ": not a file or folder");
  FileIdentity id;
  LLMC_ASSIGN_OR_RETURN(id.xxh64, hash_path(path));
  id.bytes = path_size(path);
  return id;
}

WeightSize weight_size(const Model& model) {
  const SizeSummary size = summarize_size(model);
  WeightSize w;
  w.encoded_bytes = size.bpw_bytes;
  w.elements = static_cast<uint64_t>(size.bpw_elements);
  w.bits_per_weight = size.bits_per_weight();
  return w;
}

namespace {

const char* tokenizer_kind_name(TokenizerKind k) {
  constexpr const char* kNames[] = {"none", "sentencepiece", "gpt2-bpe"};
  const auto i = static_cast<size_t>(k);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

Json spread_json(const Spread& s) {
  return Json{{"median", s.median}, {"min", s.min}, {"max", s.max}, {"samples", s.samples}};
}

Json ppl_json(const PerplexityResult& p) {
  return Json{{"mean_nll", p.mean_nll}, {"nll_stderr", p.nll_stderr}, {"ppl", p.ppl}, {"ppl_stderr", p.ppl_stderr}};
}

Json mean_se_json(const MeanStderr& m) { return Json{{"mean", m.mean}, {"stderr", m.se}}; }

}  // namespace

Json model_summary_json(const Model& model) {
  Json j;
  j["config"] = config_to_json(model.config);
  j["tokenizer"] = Json{{"kind", tokenizer_kind_name(model.tokenizer.kind)},
                        {"tokens", model.tokenizer.tokens.size()},
                        {"add_bos", model.tokenizer.add_bos},
                        {"bos_id", model.tokenizer.bos_id}};
  j["tensors"] = model.tensors().size();
  // One row per distinct encoding description, in order of first appearance.
  struct Row {
    std::string kind;
    int64_t tensors = 0;
    uint64_t bytes = 0;
    uint64_t elements = 0;
  };
  std::vector<std::string> order;
  std::map<std::string, Row> rows;
  uint64_t total_bytes = 0;
  for (const Tensor& t : model.tensors()) {
    const std::string desc = describe_encoding(*t.encoding);
    auto [it, inserted] = rows.try_emplace(desc);
    if (inserted) {
      order.push_back(desc);
      it->second.kind = encoding_kind_name(*t.encoding);
    }
    ++it->second.tensors;
    it->second.bytes += t.encoded_bytes();
    it->second.elements += static_cast<uint64_t>(t.numel());
    total_bytes += t.encoded_bytes();
  }
  Json encodings = Json::array();
  for (const std::string& desc : order) {
    const Row& r = rows[desc];
    encodings.push_back(Json{
        {"encoding", desc}, {"kind", r.kind}, {"tensors", r.tensors}, {"bytes", r.bytes}, {"elements", r.elements}});
  }
  j["encodings"] = std::move(encodings);
  const WeightSize w = weight_size(model);
  j["weights"] = Json{{"all_tensor_bytes", total_bytes},
                      {"bpw_bytes", w.encoded_bytes},
                      {"bpw_elements", w.elements},
                      {"bits_per_weight", w.bits_per_weight}};
  return j;
}

Result<Json> model_identity_json(const Model& model, const std::string& path) {
  LLMC_ASSIGN_OR_RETURN(const FileIdentity id, identify_file(path));
  Json j;
  j["path"] = path;
  j["file_bytes"] = id.bytes;
  j["xxh64"] = hex64(id.xxh64);
  const Json summary = model_summary_json(model);
  for (const auto& [key, value] : summary.items()) j[key] = value;
  return j;
}

Json eval_metrics_json(const EvalResult& e) {
  Json j;
  j["ctx"] = e.ctx;
  j["text_tokens"] = e.text_tokens;
  j["chunks"] = e.chunks;
  j["scored_tokens"] = e.scored_tokens;
  j["add_bos"] = e.add_bos;
  j["perplexity"] = ppl_json(e.ppl);
  j["chunk_ppl"] = e.ppl.chunk_ppl;
  if (e.kld) {
    const KldResult& k = *e.kld;
    Json kj;
    kj["ref_perplexity"] = ppl_json(k.ref);
    kj["ppl_ratio"] = Json{{"value", k.ppl_ratio}, {"stderr", k.ppl_ratio_stderr}};
    kj["ln_ppl_ratio"] = Json{{"value", k.ln_ppl_ratio}, {"stderr", k.ln_ppl_ratio_stderr}};
    kj["nll_correlation"] = k.nll_correlation;
    kj["kld"] = Json{{"mean", k.kld.mean}, {"stderr", k.kld.se},  {"median", k.kld_median}, {"p90", k.kld_p90},
                     {"p99", k.kld_p99},   {"p99_9", k.kld_p999}, {"min", k.kld_min},       {"max", k.kld_max}};
    kj["same_top"] = mean_se_json(k.same_top);
    kj["delta_p"] = Json{{"mean", k.delta_p.mean},     {"stderr", k.delta_p.se},
                         {"rms", k.delta_p_rms},       {"rms_stderr", k.delta_p_rms_stderr},
                         {"median", k.delta_p_median}, {"p1", k.delta_p_p01},
                         {"p99", k.delta_p_p99},       {"min", k.delta_p_min},
                         {"max", k.delta_p_max}};
    j["vs_reference"] = std::move(kj);
  } else {
    j["vs_reference"] = nullptr;
  }
  j["seconds"] = e.seconds;
  j["tokens_per_second"] = e.tokens_per_second;
  return j;
}

Json bench_metrics_json(const BenchResult& b) {
  Json j;
  j["prompt_tokens"] = b.prompt_tokens;
  j["gen_tokens"] = b.gen_tokens;
  j["repeat"] = b.repeat;
  j["threads"] = b.threads;
  j["prefill_tokens_per_second"] = spread_json(b.prefill_tps);
  j["decode_tokens_per_second"] = spread_json(b.decode_tps);
  j["weight_bytes_per_token"] = b.weight_bytes_per_token;
  j["decode_weight_gb_per_s"] = b.decode_gb_per_s;
  if (b.membw.gb_per_s > 0) {
    j["bandwidth_fraction"] = b.decode_bandwidth_fraction;
  } else {
    j["bandwidth_fraction"] = nullptr;
  }
  j["peak_rss_bytes"] = b.peak_rss_bytes;
  return j;
}

Json machine_json(const MachineInfo& m, const MemBandwidth* bw) {
  Json j;
  j["cpu_model"] = m.cpu_model;
  j["logical_cores"] = m.logical_cores;
  j["omp_threads"] = m.omp_threads;
  j["features"] = m.features;
  j["simd_target"] = m.simd_target;
  j["os"] = m.os;
  j["device"] = "cpu";
  if (bw != nullptr && bw->gb_per_s > 0) {
    j["memory_bandwidth"] = Json{
        {"gb_per_s", bw->gb_per_s}, {"buffer_bytes", bw->buffer_bytes}, {"runs", bw->runs}, {"threads", bw->threads}};
  }
  return j;
}

Json make_report(const ReportParts& parts) {
  Json j;
  j["schema"] = kReportSchema;
  j["kind"] = parts.kind;
  j["llmc_version"] = kVersion;
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
  j["timestamp"] = stamp;
  j["command_line"] = parts.command_line;
  j["model"] = parts.model;
  j["reference"] = parts.reference;
  j["load_seconds"] = parts.load_seconds;
  j["metrics"] = parts.metrics;
  j["machine"] = parts.machine;
  return j;
}

// ---------------------------------------------------------------- validation

namespace {

enum class Type { kString, kNumber, kInteger, kBool, kObject, kArray, kObjectOrNull };

bool has_type(const Json& v, Type t) {
  switch (t) {
    case Type::kString: return v.is_string();
    case Type::kNumber: return v.is_number();
    case Type::kInteger: return v.is_number_integer();
    case Type::kBool: return v.is_boolean();
    case Type::kObject: return v.is_object();
    case Type::kArray: return v.is_array();
    case Type::kObjectOrNull: return v.is_object() || v.is_null();
  }
  return false;
}

struct FieldRule {
  const char* pointer;  // JSON pointer
  Type type;
};

// Required in every report.
constexpr FieldRule kCommonFields[] = {
    {"/schema", Type::kString},
    {"/kind", Type::kString},
    {"/llmc_version", Type::kString},
    {"/timestamp", Type::kString},
    {"/command_line", Type::kString},
    {"/load_seconds", Type::kNumber},
    {"/model/path", Type::kString},
    {"/model/file_bytes", Type::kInteger},
    {"/model/xxh64", Type::kString},
    {"/model/config/family", Type::kString},
    {"/model/config/n_layers", Type::kInteger},
    {"/model/config/dim", Type::kInteger},
    {"/model/config/vocab_size", Type::kInteger},
    {"/model/tensors", Type::kInteger},
    {"/model/encodings", Type::kArray},
    {"/model/weights/bpw_bytes", Type::kInteger},
    {"/model/weights/bpw_elements", Type::kInteger},
    {"/model/weights/bits_per_weight", Type::kNumber},
    {"/reference", Type::kObjectOrNull},
    {"/metrics", Type::kObject},
    {"/machine/cpu_model", Type::kString},
    {"/machine/logical_cores", Type::kInteger},
    {"/machine/features", Type::kArray},
};

constexpr FieldRule kEvalFields[] = {
    {"/metrics/ctx", Type::kInteger},
    {"/metrics/chunks", Type::kInteger},
    {"/metrics/scored_tokens", Type::kInteger},
    {"/metrics/perplexity/ppl", Type::kNumber},
    {"/metrics/perplexity/ppl_stderr", Type::kNumber},
    {"/metrics/perplexity/mean_nll", Type::kNumber},
    {"/metrics/vs_reference", Type::kObjectOrNull},
};

constexpr FieldRule kKldFields[] = {
    {"/metrics/vs_reference/kld/mean", Type::kNumber},
    {"/metrics/vs_reference/kld/stderr", Type::kNumber},
    {"/metrics/vs_reference/kld/median", Type::kNumber},
    {"/metrics/vs_reference/kld/p99", Type::kNumber},
    {"/metrics/vs_reference/same_top/mean", Type::kNumber},
    {"/metrics/vs_reference/delta_p/rms", Type::kNumber},
    {"/metrics/vs_reference/ref_perplexity/ppl", Type::kNumber},
    {"/metrics/vs_reference/ppl_ratio/value", Type::kNumber},
    {"/reference/path", Type::kString},
    {"/reference/xxh64", Type::kString},
};

constexpr FieldRule kBenchFields[] = {
    {"/metrics/prompt_tokens", Type::kInteger},
    {"/metrics/gen_tokens", Type::kInteger},
    {"/metrics/repeat", Type::kInteger},
    {"/metrics/threads", Type::kInteger},
    {"/metrics/prefill_tokens_per_second/median", Type::kNumber},
    {"/metrics/prefill_tokens_per_second/min", Type::kNumber},
    {"/metrics/prefill_tokens_per_second/max", Type::kNumber},
    {"/metrics/decode_tokens_per_second/median", Type::kNumber},
    {"/metrics/decode_tokens_per_second/min", Type::kNumber},
    {"/metrics/decode_tokens_per_second/max", Type::kNumber},
    {"/metrics/weight_bytes_per_token", Type::kInteger},
    {"/metrics/peak_rss_bytes", Type::kInteger},
};

Result<void> check_fields(const Json& report, std::span<const FieldRule> rules) {
  for (const FieldRule& rule : rules) {
    const Json::json_pointer ptr(rule.pointer);
    if (!report.contains(ptr)) return make_error(ErrorCode::kFormat, "report: missing field ", rule.pointer);
    if (!has_type(report.at(ptr), rule.type))
      return make_error(ErrorCode::kFormat, "report: field ", rule.pointer, " has the wrong type");
  }
  return {};
}

}  // namespace

Result<void> validate_report(const Json& report) {
  if (!report.is_object()) return make_error(ErrorCode::kFormat, "report: not a JSON object");
  LLMC_TRY(check_fields(report, kCommonFields));
  if (report["schema"] != kReportSchema)
    return make_error(ErrorCode::kFormat, "report: schema is ", report["schema"].dump(), ", expected ", kReportSchema);
  const std::string kind = report["kind"];
  if (kind == "eval") {
    LLMC_TRY(check_fields(report, kEvalFields));
    if (report["metrics"]["vs_reference"].is_object()) LLMC_TRY(check_fields(report, kKldFields));
  } else if (kind == "bench") {
    LLMC_TRY(check_fields(report, kBenchFields));
  } else {
    return make_error(ErrorCode::kFormat, "report: unknown kind \"", kind, "\"");
  }
  return {};
}

// ---------------------------------------------------------------- rendering

namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string fmt_bytes(double bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  size_t u = 0;
  while (bytes >= 1024 && u + 1 < std::size(kUnits)) {
    bytes /= 1024;
    ++u;
  }
  return fmt(u == 0 ? "%.0f" : "%.2f", bytes) + " " + kUnits[u];
}

double num(const Json& j, const char* pointer) {
  const Json::json_pointer ptr(pointer);
  return j.contains(ptr) && j.at(ptr).is_number() ? j.at(ptr).get<double>() : 0.0;
}

std::string model_line(const Json& m) {
  const Json& c = m["config"];
  return str_cat("`", m.value("path", ""), "` — ", fmt_bytes(m.value("file_bytes", 0.0)), ", xxh64 ",
                 m.value("xxh64", ""), "; ", c.value("family", ""), ", ", c.value("n_layers", 0), " layers, dim ",
                 c.value("dim", 0), ", heads ", c.value("n_heads", 0), "/", c.value("n_kv_heads", 0), ", vocab ",
                 c.value("vocab_size", 0), "; ", fmt("%.3f", num(m, "/weights/bits_per_weight")), " bits/weight");
}

void render_eval(const Json& r, std::string& out) {
  const Json& m = r["metrics"];
  out += str_cat("\n## Quality\n\n", m["chunks"].get<int64_t>(), " chunks of ", m["ctx"].get<int64_t>(), " tokens, ",
                 m["scored_tokens"].get<int64_t>(), " scored tokens (second half of each chunk",
                 m.value("add_bos", false) ? ", BOS first" : "", ").\n\n| metric | value |\n| --- | --- |\n");
  out += str_cat("| PPL | ", fmt("%.4f", num(m, "/perplexity/ppl")), " ± ",
                 fmt("%.4f", num(m, "/perplexity/ppl_stderr")), " |\n");
  out += str_cat("| mean NLL (nats) | ", fmt("%.6f", num(m, "/perplexity/mean_nll")), " ± ",
                 fmt("%.6f", num(m, "/perplexity/nll_stderr")), " |\n");
  if (m["vs_reference"].is_object()) {
    const Json& k = m["vs_reference"];
    out += str_cat("| PPL (reference) | ", fmt("%.4f", num(k, "/ref_perplexity/ppl")), " ± ",
                   fmt("%.4f", num(k, "/ref_perplexity/ppl_stderr")), " |\n");
    out += str_cat("| PPL ratio | ", fmt("%.6f", num(k, "/ppl_ratio/value")), " ± ",
                   fmt("%.6f", num(k, "/ppl_ratio/stderr")), " |\n");
    out +=
        str_cat("| KLD mean | ", fmt("%.6f", num(k, "/kld/mean")), " ± ", fmt("%.6f", num(k, "/kld/stderr")), " |\n");
    out += str_cat("| KLD median | ", fmt("%.6f", num(k, "/kld/median")), " |\n");
    out += str_cat("| KLD p99 | ", fmt("%.6f", num(k, "/kld/p99")), " |\n");
    out += str_cat("| KLD max | ", fmt("%.6f", num(k, "/kld/max")), " |\n");
    out += str_cat("| same top | ", fmt("%.3f", 100 * num(k, "/same_top/mean")), " ± ",
                   fmt("%.3f", 100 * num(k, "/same_top/stderr")), " % |\n");
    out += str_cat("| RMS Δp | ", fmt("%.3f", 100 * num(k, "/delta_p/rms")), " ± ",
                   fmt("%.3f", 100 * num(k, "/delta_p/rms_stderr")), " % |\n");
    out += str_cat("| mean Δp | ", fmt("%.3f", 100 * num(k, "/delta_p/mean")), " ± ",
                   fmt("%.3f", 100 * num(k, "/delta_p/stderr")), " % |\n");
  }
  out += str_cat("| eval speed | ", fmt("%.1f", num(m, "/tokens_per_second")), " tokens/s (",
                 fmt("%.1f", num(m, "/seconds")), " s) |\n");
}

void render_bench(const Json& r, std::string& out) {
  const Json& m = r["metrics"];
  out += str_cat("\n## Speed\n\n", m["threads"].get<int64_t>(), " threads, ", m["repeat"].get<int64_t>(),
                 " repeats (median [min, max]).\n\n| metric | value |\n| --- | --- |\n");
  auto spread = [&](const char* key) {
    const Json& s = m[key];
    return str_cat(fmt("%.2f", num(s, "/median")), " [", fmt("%.2f", num(s, "/min")), ", ", fmt("%.2f", num(s, "/max")),
                   "]");
  };
  out += str_cat("| prefill (", m["prompt_tokens"].get<int64_t>(), " tokens) | ", spread("prefill_tokens_per_second"),
                 " tokens/s |\n");
  out += str_cat("| decode (", m["gen_tokens"].get<int64_t>(), " tokens) | ", spread("decode_tokens_per_second"),
                 " tokens/s |\n");
  out += str_cat("| weight bytes per token | ", fmt_bytes(num(m, "/weight_bytes_per_token")), " |\n");
  out += str_cat("| decode weight traffic | ", fmt("%.2f", num(m, "/decode_weight_gb_per_s")), " GB/s |\n");
  if (m["bandwidth_fraction"].is_number())
    out += str_cat("| fraction of measured bandwidth | ", fmt("%.1f", 100 * num(m, "/bandwidth_fraction")), " % |\n");
  out += str_cat("| load time | ", fmt("%.3f", num(r, "/load_seconds")), " s |\n");
  out += str_cat("| peak RSS | ", fmt_bytes(num(m, "/peak_rss_bytes")), " |\n");
}

}  // namespace

std::string render_markdown(const Json& r) {
  std::string out = str_cat("# llmc ", r.value("kind", ""), " report\n\n");
  out += str_cat("- Model: ", model_line(r["model"]), "\n");
  if (r["reference"].is_object()) out += str_cat("- Reference: ", model_line(r["reference"]), "\n");
  out += str_cat("- llmc ", r.value("llmc_version", ""), ", ", r.value("timestamp", ""), "\n");
  out += str_cat("- Command: `", r.value("command_line", ""), "`\n");
  const Json& encodings = r["model"]["encodings"];
  if (encodings.is_array() && !encodings.empty()) {
    out += "\n## Encodings\n\n| encoding | tensors | bytes | elements |\n| --- | ---: | ---: | ---: |\n";
    for (const Json& e : encodings) {
      out += str_cat("| ", e.value("encoding", ""), " | ", e.value("tensors", 0), " | ",
                     fmt_bytes(e.value("bytes", 0.0)), " | ", e.value("elements", 0), " |\n");
    }
  }
  if (r.value("kind", "") == "eval") render_eval(r, out);
  if (r.value("kind", "") == "bench") render_bench(r, out);
  const Json& mc = r["machine"];
  std::string features;
  for (const Json& f : mc["features"]) {
    if (!features.empty()) features += ' ';
    features += f.get<std::string>();
  }
  out += str_cat("\n## Machine\n\n- CPU: ", mc.value("cpu_model", ""), ", ", mc.value("logical_cores", 0),
                 " logical cores, SIMD ", mc.value("simd_target", ""), " (", features, ")\n");
  out += str_cat("- OS: ", mc.value("os", ""), "\n");
  if (mc.contains("memory_bandwidth")) {
    out += str_cat("- Measured memory read bandwidth: ", fmt("%.2f", num(mc, "/memory_bandwidth/gb_per_s")), " GB/s (",
                   fmt_bytes(num(mc, "/memory_bandwidth/buffer_bytes")), " buffer, best of ",
                   mc["memory_bandwidth"].value("runs", 0), ", ", mc["memory_bandwidth"].value("threads", 0),
                   " threads)\n");
  }
  return out;
}

std::string render_summary(const Json& r) {
  const Json& m = r["metrics"];
  std::string out = str_cat("model: ", model_line(r["model"]), "\n");
  if (r.value("kind", "") == "eval") {
    out += str_cat("perplexity: ", fmt("%.4f", num(m, "/perplexity/ppl")), " ± ",
                   fmt("%.4f", num(m, "/perplexity/ppl_stderr")), "  (", m["chunks"].get<int64_t>(), " chunks × ",
                   m["ctx"].get<int64_t>(), " tokens, ", m["scored_tokens"].get<int64_t>(), " scored)\n");
    if (m["vs_reference"].is_object()) {
      const Json& k = m["vs_reference"];
      out += str_cat("reference perplexity: ", fmt("%.4f", num(k, "/ref_perplexity/ppl")), "  ratio ",
                     fmt("%.6f", num(k, "/ppl_ratio/value")), " ± ", fmt("%.6f", num(k, "/ppl_ratio/stderr")), "\n");
      out += str_cat("KLD: mean ", fmt("%.6f", num(k, "/kld/mean")), " ± ", fmt("%.6f", num(k, "/kld/stderr")),
                     "  median ", fmt("%.6f", num(k, "/kld/median")), "  p99 ", fmt("%.6f", num(k, "/kld/p99")), "\n");
      out += str_cat("same top: ", fmt("%.3f", 100 * num(k, "/same_top/mean")),
                     " %  RMS Δp: ", fmt("%.3f", 100 * num(k, "/delta_p/rms")), " %\n");
    }
  } else {
    out += str_cat("prefill: ", fmt("%.2f", num(m, "/prefill_tokens_per_second/median")),
                   " tok/s  decode: ", fmt("%.2f", num(m, "/decode_tokens_per_second/median")), " tok/s (median of ",
                   m["repeat"].get<int64_t>(), ", ", m["threads"].get<int64_t>(), " threads)\n");
    out += str_cat("weights per token: ", fmt_bytes(num(m, "/weight_bytes_per_token")),
                   "  load: ", fmt("%.3f", num(r, "/load_seconds")),
                   " s  peak RSS: ", fmt_bytes(num(m, "/peak_rss_bytes")), "\n");
    if (m["bandwidth_fraction"].is_number()) {
      out += str_cat("memory bandwidth: ", fmt("%.2f", num(r, "/machine/memory_bandwidth/gb_per_s")),
                     " GB/s measured, decode reaches ", fmt("%.1f", 100 * num(m, "/bandwidth_fraction")), " %\n");
    }
  }
  return out;
}

Result<void> write_report_file(const std::string& path, std::string_view text, const std::vector<std::string>& inputs,
                               bool force) {
  LLMC_TRY(check_output_path(path, inputs, force));
  LLMC_ASSIGN_OR_RETURN(auto out, AtomicOutput::create(path));
  LLMC_TRY(out->write(text.data(), text.size()));
  return out->commit();
}

}  // namespace llmc
