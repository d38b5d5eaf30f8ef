// What `llmc compress` and `llmc quantize` share: load, run a recipe, write atomically, summarize.
#pragma once

#include <string>
#include <vector>

#include "pipeline/recipe.h"
#include "writer_flags.h"

namespace llmc::cli {

struct RecipeJob {
  std::string input;
  std::string output;
  std::string to;                         // output format override (llmc|gguf|safetensors); "" = from the extension
  std::string tokenizer;                  // separate tokenizer file
  std::string json;                       // summary JSON file, "-" = stdout, "" = none
  std::string command;                    // "compress" / "quantize": the summary's first line
  std::vector<std::string> extra_inputs;  // recipe, calibration text: never overwritten
  WriterFlags writer;                     // --zstd, --entropy
  int threads = 0;
  bool force = false;
};

// Checks the output path, loads the input, runs the (already validated) recipe, writes the output
// with the resolved recipe in its provenance, prints the summary. Returns the exit code.
int run_recipe_job(const RecipeJob& job, const Recipe& recipe);

// Adds the options every recipe command has (-o, --to, --tokenizer, --threads, --zstd, --entropy, --json,
// --force) to `sub`, bound to `job`.
void add_job_options(CLI::App& sub, RecipeJob& job);

}  // namespace llmc::cli
