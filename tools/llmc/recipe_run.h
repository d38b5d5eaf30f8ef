// What `llmc compress` and `llmc quantize` share: load, run a recipe, write atomically, summarize.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"
#include "pipeline/recipe.h"
#include "writer_flags.h"

namespace llmc::cli {

struct RecipeJob {
  std::string input;
  std::string output;
  std::string to;         // output format override (llmc|gguf|safetensors); "" = from the extension
  std::string tokenizer;  // separate tokenizer file
  std::string json;       // summary JSON file, "-" = stdout, "" = none
  std::string command;    // "compress" / "quantize": the summary's first line
  // Code of recipe mistakes found against the model (PipelineOptions::recipe_error).
  ErrorCode recipe_error = ErrorCode::kInvalidArgument;
  std::vector<std::string> extra_inputs;  // recipe, calibration text: never overwritten
  WriterFlags writer;                     // --zstd, --entropy
  int threads = 0;
  int64_t calib_ram_mib = -1;  // --calib-ram; -1: default_calib_ram of the input
  bool force = false;
  // Optional command-specific summary lines, printed after the pass lines (e.g. lowrank's ranks).
  std::function<void(const PipelineResult&)> print_details;
};

// --calib-ram's default in bytes: CalibOptions::kDefaultRamBytes, or an eighth of the input's size
// when that is less (at least 8 MiB), so that quantizing a small input stays below its size.
int64_t default_calib_ram(uint64_t input_bytes);

// Checks the output path, loads the input, runs the (already validated) recipe, writes the output
// with the resolved recipe in its provenance, prints the summary. Returns the exit code.
int run_recipe_job(const RecipeJob& job, const Recipe& recipe);

// Calibration flags of the one-stage recipe commands (quantize, lowrank): --calib FILE | --calib-self N,
// --calib-samples N, --calib-ctx L.
struct CalibFlags {
  std::string file;
  int64_t self = 0;
  int64_t samples = 0;
  int64_t ctx = 0;
  void add(CLI::App& sub);
  // The recipe's calibration section, nullopt when no flag was given; kInvalidArgument for
  // contradictions (--calib with --calib-self, --calib-samples without a source, ...).
  Result<std::optional<CalibOptions>> options(uint64_t seed) const;
};

// Adds the options every recipe command has (-o, --to, --tokenizer, --threads, --zstd, --entropy, --json,
// --force) to `sub`, bound to `job`.
void add_job_options(CLI::App& sub, RecipeJob& job);

}  // namespace llmc::cli
