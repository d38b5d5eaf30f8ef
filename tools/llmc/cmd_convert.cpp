// llmc convert: any reader to any writer, with an optional storage-type change.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

#include "cli_util.h"
#include "commands.h"
#include "core/version.h"
#include "formats/file_io.h"
#include "pipeline/cast.h"
#include "writer_flags.h"

namespace llmc::cli {
namespace {

struct ConvertArgs {
  std::string input;
  std::string output;
  std::string to;
  std::string dtype = "keep";
  WriterFlags writer;
  std::string tokenizer;
  bool force = false;
};

const std::map<std::string, ExportDType> kDTypes = {
    {"keep", ExportDType::kKeep}, {"f32", ExportDType::kF32},   {"f16", ExportDType::kF16},
    {"bf16", ExportDType::kBF16}, {"q8_0", ExportDType::kQ8_0}, {"q4_0", ExportDType::kQ4_0},
};

int run_convert(const ConvertArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> inputs = {a.input};
  if (!a.tokenizer.empty()) inputs.push_back(a.tokenizer);
  if (auto ok = check_output_path(a.output, inputs, a.force); !ok.ok()) return report_error(ok.error());
  auto format = output_format(a.output, a.to);
  if (!format.ok()) return report_error(format.error());
  const ExportDType dtype = kDTypes.at(a.dtype);
  if (*format == FileFormat::kSafetensors && (dtype == ExportDType::kQ8_0 || dtype == ExportDType::kQ4_0))
    return report_error(
        make_error(ErrorCode::kInvalidArgument, "safetensors has no ", a.dtype, " type; use f32, f16 or bf16"));
  if (auto ok = a.writer.check(*format); !ok.ok()) return report_error(ok.error());

  const std::shared_ptr<ScratchFile> scratch = transform_scratch();
  auto loaded = load_model_for_cli(a.input, a.tokenizer, /*require_tensors=*/true, ModelUse::kTransform, scratch);
  if (!loaded.ok()) return report_error(loaded.error());
  Model& model = *loaded;
  const auto t_loaded = std::chrono::steady_clock::now();

  Result<void> written;
  switch (*format) {
    case FileFormat::kLlmc: {
      cast_model(model, dtype, scratch.get());
      LlmcWriteOptions o;
      a.writer.apply(o);
      o.command_line = command_line();
      o.input_path = a.input;
      o.recipe = str_cat("convert: {dtype: ", a.dtype, ", ", a.writer.describe(), "}");
      auto h = hash_path(a.input);
      if (!h.ok()) return report_error(h.error());
      o.input_xxh64 = *h;
      written = write_llmc(model, a.output, o);
      break;
    }
    case FileFormat::kGguf: written = write_gguf(model, a.output, GgufWriteOptions{dtype}); break;
    case FileFormat::kSafetensors: written = write_safetensors(model, a.output, SafetensorsWriteOptions{dtype}); break;
    case FileFormat::kLlama2c:
    case FileFormat::kUnknown:
      return report_error(make_error(ErrorCode::kInternal, "convert: no writer for ", file_format_name(*format)));
  }
  if (!written.ok()) return report_error(written.error());
  const auto t_done = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(t_done - t0).count();
  const double in_mb = static_cast<double>(path_size(a.input)) / 1e6;
  const double out_mb = static_cast<double>(path_size(a.output)) / 1e6;
  std::printf("%s (%.2f MB) -> %s (%s, %.2f MB) in %.2f s (load %.2f s), %.1f MB/s, peak RSS %.1f MiB\n",
              a.input.c_str(), in_mb, a.output.c_str(), file_format_name(*format), out_mb, secs,
              std::chrono::duration<double>(t_loaded - t0).count(), secs > 0 ? in_mb / secs : 0.0, peak_rss_mib());
  return kExitOk;
}

}  // namespace

RunFn setup_convert(CLI::App& sub) {
  auto a = std::make_shared<ConvertArgs>();
  sub.add_option("input", a->input, "Input model (any supported format, detected from content)")->required();
  sub.add_option("-o,--output", a->output, "Output file (.llmc, .gguf) or folder (safetensors)")->required();
  sub.add_option("--to", a->to, "Output format (default: from the output's extension)")
      ->check(CLI::IsMember({"llmc", "gguf", "safetensors"}));
  sub.add_option("--dtype", a->dtype, "Storage type of weights: keep, f32, f16, bf16, q8_0, q4_0 (norms stay f32)")
      ->check(CLI::IsMember({"keep", "f32", "f16", "bf16", "q8_0", "q4_0"}));
  a->writer.add(sub);
  sub.add_option("--tokenizer", a->tokenizer, "Separate tokenizer (llama2.c tokenizer.bin, tokenizer.json, GGUF)");
  sub.add_flag("--force", a->force, "Replace an existing output");
  return [a] { return run_convert(*a); };
}

}  // namespace llmc::cli
