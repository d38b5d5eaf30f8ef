// llmc synth: writes a random-weight model with the shape of a real one (format and speed tests).
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli_util.h"
#include "commands.h"
#include "formats/file_io.h"
#include "model/synth.h"

namespace llmc::cli {

namespace {

struct SynthArgs {
  std::string shape;
  std::string output;
  std::string dtype = "f32";
  uint64_t seed = 0;
  bool force = false;
  std::string format;  // empty: from the output's extension (.gguf -> gguf), else llmc
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Physical memory, to refuse shapes that cannot be held (the model is built in memory, then written).
uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

int run_synth(const SynthArgs& args) {
  const SynthShape* shape = find_synth_shape(args.shape);
  if (!shape) return report_error(make_error(ErrorCode::kInvalidArgument, "unknown shape '", args.shape, "'"));
  SynthOptions options;
  options.dtype = *dtype_from_name(args.dtype);
  options.seed = args.seed;
  const std::string format = !args.format.empty() ? args.format : ends_with(args.output, ".gguf") ? "gguf" : "llmc";

  if (auto ok = check_output_path(args.output, {}, args.force); !ok.ok()) return report_error(ok.error());
  const uint64_t bytes = static_cast<uint64_t>(count_parameters(shape->config)) * dtype_bytes(options.dtype);
  const uint64_t mem = physical_memory_bytes();
  if (mem > 0 && bytes > mem / 10 * 9)
    return report_error(make_error(ErrorCode::kInvalidArgument, args.shape, " in ", args.dtype, " needs ", bytes,
                                   " bytes in memory; this machine has ", mem, " (try --dtype f16 or bf16)"));
  log_info("synth ", args.shape, ": ", count_parameters(shape->config), " parameters, ", args.dtype, ", seed ",
           args.seed, " -> ", args.output, " (", format, ")");

  Result<Model> model = synth_model(args.shape, options);
  if (!model.ok()) return report_error(model.error());
  Result<void> written = [&]() -> Result<void> {
    if (format == "gguf") return write_gguf(*model, args.output, GgufWriteOptions{});
    if (format == "safetensors") return write_safetensors(*model, args.output, SafetensorsWriteOptions{});
    LlmcWriteOptions llmc_options;
    llmc_options.command_line =
        "llmc synth --shape " + args.shape + " --dtype " + args.dtype + " --seed " + std::to_string(args.seed);
    return write_llmc(*model, args.output, llmc_options);
  }();
  if (!written.ok()) return report_error(written.error());
  std::printf("wrote %s: %s, %lld parameters, %s, seed %llu\n", args.output.c_str(), args.shape.c_str(),
              static_cast<long long>(count_parameters(shape->config)), args.dtype.c_str(),
              static_cast<unsigned long long>(args.seed));
  return kExitOk;
}

}  // namespace

RunFn setup_synth(CLI::App& sub) {
  auto args = std::make_shared<SynthArgs>();
  std::vector<std::string> shapes;
  for (const SynthShape& s : synth_shapes()) shapes.emplace_back(s.name);
  sub.add_option("--shape", args->shape, "Architecture to copy")->required()->check(CLI::IsMember(shapes));
  sub.add_option("-o,--output", args->output, "Output file (a folder for --format safetensors)")->required();
  sub.add_option("--dtype", args->dtype, "Weight dtype")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  sub.add_option("--seed", args->seed, "Random seed (same seed, same weights)")->capture_default_str();
  sub.add_flag("--force", args->force, "Replace an existing output");
  sub.add_option("--format", args->format, "Output format (default: gguf for *.gguf, else llmc)")
      ->check(CLI::IsMember({"llmc", "gguf", "safetensors"}));
  return [args] { return run_synth(*args); };
}

}  // namespace llmc::cli
