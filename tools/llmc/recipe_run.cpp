// Load → pipeline → write → one-screen summary, for compress and quantize.
#include <CLI/CLI.hpp>

#include "recipe_run.h"

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli_util.h"
#include "formats/file_io.h"
#include "model/describe.h"
#include "pipeline/pass_options.h"
#include "pipeline/pipeline.h"

namespace llmc::cli {
namespace {

using OJson = nlohmann::ordered_json;

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

std::string mb(uint64_t bytes) { return fmt("%.3f MB", static_cast<double>(bytes) / 1e6); }

// "quant.gptq bits=4 group_size=32 ..." from the resolved options.
std::string stage_line(const RecipeStage& st) {
  std::string line = st.pass_name;
  const OJson options = options_to_json(*st.pass);
  for (const auto& [k, v] : options.items()) line += " " + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  if (!st.targets.empty()) line += " targets=" + OJson(st.targets).dump();
  if (!st.ignore.empty()) line += " ignore=" + OJson(st.ignore).dump();
  for (const RecipeOverride& ov : st.overrides) line += " override[" + ov.match + "]=" + ov.options.dump();
  return line;
}

Result<void> write_output(const Model& model, const RecipeJob& job, FileFormat format, const std::string& recipe_text) {
  switch (format) {
    case FileFormat::kLlmc: {
      LlmcWriteOptions o;
      job.writer.apply(o);
      // The resolved recipe describes the whole transformation; the command line is left out so
      // that outputs are byte-identical whatever --threads or output name was used.
      o.recipe = recipe_text;
      o.input_path = job.input;
      LLMC_ASSIGN_OR_RETURN(o.input_xxh64, hash_path(job.input));
      return write_llmc(model, job.output, o);
    }
    case FileFormat::kGguf: return write_gguf(model, job.output, GgufWriteOptions{});
    case FileFormat::kSafetensors: return write_safetensors(model, job.output, SafetensorsWriteOptions{});
    default: return make_error(ErrorCode::kInvalidArgument, "unsupported output format");
  }
}

}  // namespace

void CalibFlags::add(CLI::App& sub) {
  sub.add_option("--calib", file, "Calibration text file (tokenized with the model's tokenizer)");
  sub.add_option("--calib-self", self, "Calibrate on N sequences sampled from the model itself (temperature 1)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--calib-samples", samples, "Calibration sequences (default 128)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--calib-ctx", ctx, "Tokens per calibration sequence (default 512)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
}

Result<std::optional<CalibOptions>> CalibFlags::options(uint64_t seed) const {
  auto bad = [](auto&&... parts) { return make_error(ErrorCode::kInvalidArgument, parts...); };
  if (!file.empty() && self > 0) return bad("--calib and --calib-self exclude each other");
  if (file.empty() && self == 0 && samples == 0 && ctx == 0) return std::optional<CalibOptions>();
  if (file.empty() && self == 0) return bad("--calib-samples/--calib-ctx need --calib FILE or --calib-self N");
  CalibOptions c;
  c.file = file;
  c.self_samples = self;
  if (self > 0) c.samples = self;
  if (samples > 0) {
    if (self > 0 && samples != self) return bad("--calib-samples ", samples, " disagrees with --calib-self ", self);
    c.samples = samples;
  }
  if (ctx > 0) c.ctx = ctx;
  c.seed = seed;
  return std::optional<CalibOptions>(c);
}

void add_job_options(CLI::App& sub, RecipeJob& job) {
  sub.add_option("input", job.input, "Input model (any supported format, detected from content)")->required();
  sub.add_option("-o,--output", job.output, "Output file (.llmc, .gguf) or folder (safetensors)")->required();
  sub.add_option("--to", job.to, "Output format (default: from the output's extension)")
      ->check(CLI::IsMember({"llmc", "gguf", "safetensors"}));
  sub.add_option("--tokenizer", job.tokenizer, "Separate tokenizer (llama2.c tokenizer.bin, tokenizer.json, GGUF)");
  sub.add_option("--threads", job.threads, "Threads (0 = all cores); the output does not depend on it")
      ->check(CLI::Range(0, 4096));
  sub.add_option("--calib-ram", job.calib_ram_mib,
                 "MiB of calibration activations kept in memory (the rest go to an unlinked temporary file in "
                 "$TMPDIR) and of KV caches --calib-self samples with (default 64, or an eighth of the input's size "
                 "when that is less, at least 8; the output does not depend on it)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  job.writer.add(sub);
  sub.add_option("--json", job.json, "Also write the summary (sizes, per-pass reports, times) as JSON (- = stdout)");
  sub.add_flag("--force", job.force, "Replace an existing output");
}

int64_t default_calib_ram(uint64_t input_bytes) {
  constexpr int64_t kFloor = int64_t{8} << 20;
  return std::min(CalibOptions::kDefaultRamBytes, std::max(kFloor, static_cast<int64_t>(input_bytes / 8)));
}

int run_recipe_job(const RecipeJob& job, const Recipe& recipe) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> inputs = job.extra_inputs;
  inputs.push_back(job.input);
  if (!job.tokenizer.empty()) inputs.push_back(job.tokenizer);
  if (recipe.calibration && !recipe.calibration->file.empty()) inputs.push_back(recipe.calibration->file);
  if (auto ok = check_output_path(job.output, inputs, job.force); !ok.ok()) return report_error(ok.error());
  if (!job.json.empty() && job.json != "-")
    if (auto ok = check_output_path(job.json, inputs, job.force); !ok.ok()) return report_error(ok.error());
  auto format = output_format(job.output, job.to);
  if (!format.ok()) return report_error(format.error());
  if (auto ok = job.writer.check(*format); !ok.ok()) return report_error(ok.error());
  if (recipe.calibration && !recipe.calibration->file.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(recipe.calibration->file, ec))
      return report_error(make_error(ErrorCode::kIo, "calibration text ", recipe.calibration->file, " not found"));
  }

  const std::shared_ptr<ScratchFile> scratch = transform_scratch();
  auto loaded = load_model_for_cli(job.input, job.tokenizer, /*require_tensors=*/true, ModelUse::kTransform, scratch);
  if (!loaded.ok()) return report_error(loaded.error());
  Model& model = *loaded;
  const double load_s = since(t0);
  const SizeSummary before = summarize_size(model);

  PipelineOptions popt;
  popt.threads = job.threads;
  popt.calib_ram_bytes = job.calib_ram_mib >= 0 ? job.calib_ram_mib << 20 : default_calib_ram(path_size(job.input));
  popt.recipe_error = job.recipe_error;
  popt.scratch = scratch;
  if (job.threads > 0) omp_set_num_threads(job.threads);
  auto result = run_pipeline(model, recipe, popt);
  if (!result.ok()) return report_error(result.error());

  const OJson resolved = resolved_recipe_json(recipe);
  const auto tw = std::chrono::steady_clock::now();
  if (auto ok = write_output(model, job, *format, resolved.dump()); !ok.ok()) return report_error(ok.error());
  const double write_s = since(tw);
  const SizeSummary after = summarize_size(model);
  const uint64_t in_bytes = path_size(job.input), out_bytes = path_size(job.output);
  const double total_s = since(t0);
  const double rss = peak_rss_mib();

  std::printf("llmc %s: %s -> %s (%s)\n", job.command.c_str(), job.input.c_str(), job.output.c_str(),
              file_format_name(*format));
  for (size_t i = 0; i < recipe.stages.size(); ++i)
    std::printf("  stage %zu     %s\n", i + 1, stage_line(recipe.stages[i]).c_str());
  std::printf(
      "  file        %s -> %s (%s of the input)\n", mb(in_bytes).c_str(), mb(out_bytes).c_str(),
      fmt("%.1f%%", in_bytes ? 100.0 * static_cast<double>(out_bytes) / static_cast<double>(in_bytes) : 0.0).c_str());
  std::printf("  weights     %s -> %s bytes, %s -> %s bits per weight\n", std::to_string(before.bpw_bytes).c_str(),
              std::to_string(after.bpw_bytes).c_str(), fmt("%.3f", before.bits_per_weight()).c_str(),
              fmt("%.3f", after.bits_per_weight()).c_str());
  if (after.parameters != before.parameters)  // structured pruning shrinks shapes
    std::printf("  parameters  %lld -> %lld (%s)\n", static_cast<long long>(before.parameters),
                static_cast<long long>(after.parameters),
                fmt("%.1f%%", before.parameters ? 100.0 * static_cast<double>(after.parameters) /
                                                      static_cast<double>(before.parameters)
                                                : 0.0)
                    .c_str());
  for (const auto& [enc, count] : after.tensors_per_encoding)
    std::printf("  encoding    %-28s %4lld tensors %10llu bytes\n", enc.c_str(), static_cast<long long>(count),
                static_cast<unsigned long long>(after.bytes_per_encoding.at(enc)));
  if (result->calibration_tokens > 0)
    std::printf("  calibration %lld tokens, %s s\n", static_cast<long long>(result->calibration_tokens),
                fmt("%.2f", result->calibration_seconds).c_str());
  for (const PassRun& r : result->runs)
    std::printf("  pass        %-14s %-22s %s s\n", r.report.pass.c_str(),
                (r.scope == "base" ? std::string("") : "[" + r.scope + "]").c_str(),
                fmt("%.2f", r.report.seconds).c_str());
  if (job.print_details) job.print_details(*result);
  std::printf("  time        %s s total (load %s s, passes %s s, write %s s), peak RSS %s MiB, threads %d\n",
              fmt("%.2f", total_s).c_str(), fmt("%.2f", load_s).c_str(), fmt("%.2f", result->seconds).c_str(),
              fmt("%.2f", write_s).c_str(), fmt("%.1f", rss).c_str(), job.threads);

  if (!job.json.empty()) {
    OJson j = OJson::object();
    j["schema"] = "llmc.compress/1";
    j["command"] = job.command;
    j["input"] = {{"path", job.input}, {"bytes", in_bytes}, {"size", size_summary_json(before)}};
    j["output"] = {{"path", job.output},
                   {"format", file_format_name(*format)},
                   {"bytes", out_bytes},
                   {"size", size_summary_json(after)}};
    j["recipe"] = resolved;
    j["pipeline"] = pipeline_result_json(*result);
    j["seconds"] = {{"total", total_s}, {"load", load_s}, {"write", write_s}};
    j["peak_rss_mib"] = rss;
    j["threads"] = job.threads;
    const std::string text = j.dump(2) + "\n";
    if (job.json == "-") {
      std::fputs(text.c_str(), stdout);
    } else {
      auto out = AtomicOutput::create(job.json);
      if (!out.ok()) return report_error(out.error());
      if (auto ok = (*out)->write(text.data(), text.size()); !ok.ok()) return report_error(ok.error());
      if (auto ok = (*out)->commit(); !ok.ok()) return report_error(ok.error());
    }
  }
  return kExitOk;
}

}  // namespace llmc::cli
