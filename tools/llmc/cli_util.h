// CLI helpers: exit codes, printing errors, the stderr log/progress sink, option validators.
#pragma once

#include <memory>
#include <string>

#include "core/error.h"
#include "core/log.h"
#include "formats/model_io.h"
#include "formats/scratch_file.h"

namespace llmc::cli {

// Exit codes: 0 ok, 1 input/format error, 2 usage (CLI11), 3 gate failed (compare/eval gates),
// 4 refused to overwrite, 5 internal error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInput = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitGate = 3;
inline constexpr int kExitExists = 4;
inline constexpr int kExitInternal = 5;

int exit_code_for(ErrorCode code);
// Prints "llmc: error: <message>" to stderr and returns the matching exit code.
int report_error(const Error& error);

// Log lines to stderr; a redrawn progress bar when stderr is a terminal.
class StderrSink : public LogSink {
 public:
  StderrSink();
  void log(LogLevel level, std::string_view message) override;
  void progress(std::string_view task, int64_t done, int64_t total, std::string_view unit) override;

 private:
  bool tty_;
  bool bar_open_ = false;
  double start_ = 0;
  std::string task_;
};

// The whole command line, as typed (for provenance records and reports).
std::string& command_line();

// Output format of `output`: `to` (llmc|gguf|safetensors) when given, else from the extension
// (.llmc, .gguf; no extension = a safetensors folder).
Result<FileFormat> output_format(const std::string& output, const std::string& to);

// Peak resident set size of this process so far, MiB.
double peak_rss_mib();

// How a command uses the model it loads.
enum class ModelUse {
  kRun,        // runs it (eval, bench, generate): the mapped input stays resident
  kTransform,  // reads each tensor about once to write another file: input pages are given back
};

// Loads a model, with --tokenizer when given. `scratch`: where the reader puts tensors it builds
// (LoadOptions::scratch).
Result<Model> load_model_for_cli(const std::string& path, const std::string& tokenizer_path,
                                 bool require_tensors = true, ModelUse use = ModelUse::kRun,
                                 std::shared_ptr<ScratchFile> scratch = nullptr);

// The scratch file of a transforming command (formats/scratch_file.h) in $TMPDIR, else /tmp; null
// with a warning when none can be created there (tensors then stay in memory).
std::shared_ptr<ScratchFile> transform_scratch();

}  // namespace llmc::cli
