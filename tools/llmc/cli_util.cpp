// CLI helpers.
#include "cli_util.h"
#include "commands.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

namespace llmc::cli {

std::string& command_line() {
  static std::string line;
  return line;
}

int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kExists: return kExitExists;
    case ErrorCode::kInvalidArgument: return kExitUsage;
    case ErrorCode::kInternal: return kExitInternal;
    default: return kExitInput;
  }
}

int report_error(const Error& error) {
  std::fprintf(stderr, "llmc: error: %s\n", error.message.c_str());
  return exit_code_for(error.code);
}

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

StderrSink::StderrSink() : tty_(::isatty(2) != 0) {}

void StderrSink::log(LogLevel level, std::string_view message) {
  if (bar_open_) {
    std::fputc('\n', stderr);
    bar_open_ = false;
  }
  const char* prefix = level == LogLevel::kError ? "error: " : level == LogLevel::kWarn ? "warning: " : "";
  std::fprintf(stderr, "llmc: %s%.*s\n", prefix, static_cast<int>(message.size()), message.data());
}

void StderrSink::progress(std::string_view task, int64_t done, int64_t total, std::string_view unit) {
  if (!tty_) return;
  if (task != task_ || done == 0) {
    task_ = std::string(task);
    start_ = now_seconds();
  }
  const double elapsed = now_seconds() - start_;
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  const double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0;
  const int width = 30;
  const int filled = total > 0 ? static_cast<int>(width * done / total) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r%.*s [%s] %lld/%lld %.*s  %.1f/s  ETA %.0fs ", static_cast<int>(task.size()), task.data(),
               bar.c_str(), static_cast<long long>(done), static_cast<long long>(total), static_cast<int>(unit.size()),
               unit.data(), rate, eta);
  bar_open_ = done < total;
  if (!bar_open_) std::fputc('\n', stderr);
  std::fflush(stderr);
}

Result<FileFormat> output_format(const std::string& output, const std::string& to) {
  static const std::map<std::string, FileFormat> kNames = {
      {"llmc", FileFormat::kLlmc}, {"gguf", FileFormat::kGguf}, {"safetensors", FileFormat::kSafetensors}};
  if (!to.empty()) {
    auto it = kNames.find(to);
    if (it == kNames.end()) return make_error(ErrorCode::kInvalidArgument, "unknown output format '", to, "'");
    return it->second;
  }
  const std::string ext = std::filesystem::path(output).extension().string();
  if (ext == ".llmc") return FileFormat::kLlmc;
  if (ext == ".gguf") return FileFormat::kGguf;
  if (ext.empty()) return FileFormat::kSafetensors;  // a folder
  return make_error(ErrorCode::kInvalidArgument, "cannot infer the output format from '", output,
                    "': use --to llmc|gguf|safetensors");
}

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

Result<Model> load_model_for_cli(const std::string& path, const std::string& tokenizer_path, bool require_tensors,
                                 ModelUse use, std::shared_ptr<ScratchFile> scratch) {
  LoadOptions options;
  options.scratch = std::move(scratch);
  options.tokenizer_path = tokenizer_path;
  options.require_tensors = require_tensors;
  options.read_once = use == ModelUse::kTransform;
  return load_model(path, options);
}

std::shared_ptr<ScratchFile> transform_scratch() {
  auto scratch = ScratchFile::create(temp_dir());
  if (scratch.ok()) return std::move(scratch).value();
  log_warn(scratch.error().message, "; tensors stay in memory");
  return nullptr;
}

void add_activations_option(CLI::App& sub, std::string& mode) {
  mode = "auto";
  sub.add_option("--activations", mode,
                 "Activations of Quant and Palette weights: auto (default; int8 for codes of at most 4 bits, "
                 "int8x2 for wider ones), int8x2 (two int8 parts, f32 quality), int8 (one part, faster, adds int8 "
                 "rounding error) or f32 (docs/runtime.md)")
      ->check(CLI::IsMember({"auto", "int8x2", "int8", "f32"}));
}

kernels::QuantActivations activations_mode(const std::string& mode) {
  return kernels::parse_quant_activations(mode).value_or(kernels::QuantActivations::kAuto);
}

}  // namespace llmc::cli
