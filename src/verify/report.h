// Verification reports: JSON with a versioned schema (docs/report-schema.md) and its Markdown rendering.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/model.h"
#include "verify/bench.h"
#include "verify/machine.h"
#include "verify/perplexity.h"

namespace llmc {

// Keys keep insertion order so reports read top-down.
using Json = nlohmann::ordered_json;

inline constexpr const char* kReportSchema = "llmc.report/1";

// Size of a file, or of every regular file of a folder (sorted by name), and the xxHash64 of
// their bytes in that order (seed 0).
struct FileIdentity {
  uint64_t bytes = 0;
  uint64_t xxh64 = 0;
};
Result<FileIdentity> identify_file(const std::string& path);

// Effective bits per weight (DESIGN.md §6): encoded bytes of the tensors whose role counts for
// bpw (linear, embedding, output) * 8 / their logical element count.
struct WeightSize {
  uint64_t encoded_bytes = 0;
  uint64_t elements = 0;
  double bits_per_weight = 0;
};
WeightSize weight_size(const Model& model);

// {"config": {...}, "tensors": n, "encodings": [...], "weights": {...}} — no file access.
Json model_summary_json(const Model& model);
// model_summary_json plus "path", "file_bytes" and "xxh64" (16 lowercase hex digits).
Result<Json> model_identity_json(const Model& model, const std::string& path);

Json eval_metrics_json(const EvalResult& eval);
Json bench_metrics_json(const BenchResult& bench);
// Machine description; "memory_bandwidth" only when bw is measured (gb_per_s > 0).
Json machine_json(const MachineInfo& machine, const MemBandwidth* bw);

struct ReportParts {
  std::string kind;          // "eval" or "bench"
  Json model;                // model_identity_json
  Json reference;            // model_identity_json of --ref, or null
  Json metrics;              // eval_metrics_json / bench_metrics_json
  Json machine;              // machine_json
  std::string command_line;  // argv joined with spaces
  double load_seconds = 0;   // time of load_model() for the model (reference excluded)
};
// Adds schema, llmc version and a UTC timestamp (ISO 8601, seconds).
Json make_report(const ReportParts& parts);

// Checks the fields every llmc.report/1 consumer relies on (names the first bad field).
Result<void> validate_report(const Json& report);

// Markdown rendering of any valid report.
std::string render_markdown(const Json& report);

// Short human summary (a few lines) for stdout.
std::string render_summary(const Json& report);

// Writes text atomically (temp file + rename); refuses to overwrite an input, or an existing
// file unless `force`.
Result<void> write_report_file(const std::string& path, std::string_view text, const std::vector<std::string>& inputs,
                               bool force);

}  // namespace llmc
