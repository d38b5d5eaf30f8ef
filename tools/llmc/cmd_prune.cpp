// llmc prune: one pruning pass (magnitude, Wanda, SparseGPT) over a model, written as .llmc, with a summary.
#include <chrono>
#include <cstdio>

#include "cli_util.h"
#include "commands.h"
#include "core/sparse.h"
#include "formats/file_io.h"
#include "passes/pass.h"
#include "pipeline/calibration.h"
#include "writer_flags.h"

namespace llmc::cli {
namespace {

struct PruneArgs {
  std::string input, output, tokenizer, method = "magnitude", pattern = "unstructured", granularity = "row",
                                        values = "keep", calib;
  double sparsity = 0.5;
  int64_t calib_samples = 128, calib_ctx = 512, calib_self = 0;
  uint64_t seed = 0;
  int threads = 0;
  WriterFlags writer;
  bool force = false;
};

// Feeds the parsed flags to the pass's declared options.
class FlagOptions final : public OptionVisitor {
 public:
  explicit FlagOptions(const PruneArgs& a) : a_(a) {}
  void option(const char*, bool&, const char*) override {}
  void option(const char*, int64_t&, const char*) override {}
  void option(const char* name, double& v, const char*) override {
    if (std::string(name) == "sparsity") v = a_.sparsity;
  }
  void option(const char* name, std::string& v, const char*, std::span<const char* const>) override {
    const std::string n = name;
    if (n == "pattern") v = a_.pattern;
    if (n == "granularity") v = a_.granularity;
    if (n == "values") v = a_.values;
  }
  void option(const char*, std::vector<std::string>&, const char*) override {}

 private:
  const PruneArgs& a_;
};

int run_prune(const PruneArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> inputs = {a.input};
  if (!a.tokenizer.empty()) inputs.push_back(a.tokenizer);
  if (!a.calib.empty()) inputs.push_back(a.calib);
  if (auto ok = check_output_path(a.output, inputs, a.force); !ok.ok()) return report_error(ok.error());
  if (auto ok = a.writer.check(FileFormat::kLlmc); !ok.ok()) return report_error(ok.error());
  auto pass = make_pass("prune." + a.method);
  if (!pass.ok()) return report_error(pass.error());
  FlagOptions flags(a);
  (*pass)->visit(flags);
  if (auto v = (*pass)->validate_options(); !v.ok()) return report_error(v.error());
  auto loaded = load_model_for_cli(a.input, a.tokenizer);
  if (!loaded.ok()) return report_error(loaded.error());
  Model& model = *loaded;
  const uint64_t bytes_before = [&] {
    uint64_t b = 0;
    for (const Tensor& t : model.tensors()) b += t.encoded_bytes();
    return b;
  }();
  PassContext ctx;
  ctx.seed = a.seed;
  ctx.threads = a.threads;
  std::unique_ptr<CalibrationSet> calib;
  if ((*pass)->needs().calibration) {
    if (a.calib.empty() && a.calib_self == 0)
      return report_error(
          make_error(ErrorCode::kInvalidArgument, "prune.", a.method, " needs --calib FILE or --calib-self N"));
    CalibOptions co;
    co.file = a.calib;
    co.self_samples = a.calib_self;
    co.samples = a.calib_samples;
    co.ctx = a.calib_ctx;
    co.seed = a.seed;
    co.threads = a.threads;
    auto c = CalibrationSet::create(model, co);
    if (!c.ok()) return report_error(c.error());
    calib = std::move(c).value();
    ctx.calib = calib.get();
  }
  auto report = (*pass)->run(model, ctx);
  if (!report.ok()) return report_error(report.error());
  LlmcWriteOptions o;
  a.writer.apply(o);
  o.command_line = command_line();
  o.input_path = a.input;
  o.recipe = str_cat("prune.", a.method, ": {sparsity: ", a.sparsity, ", pattern: ", a.pattern,
                     ", granularity: ", a.granularity, ", values: ", a.values, "}");
  if (auto h = hash_path(a.input); h.ok()) o.input_xxh64 = *h;
  if (auto w = write_llmc(model, a.output, o); !w.ok()) return report_error(w.error());
  int64_t pruned = 0, nnz = 0;
  uint64_t pattern_bytes = 0, value_bytes = 0, bytes_after = 0;
  for (const Tensor& t : model.tensors()) {
    bytes_after += t.encoded_bytes();
    if (const auto* s = std::get_if<SparseEncoding>(&t.encoding->node)) {
      pruned += t.numel();
      nnz += s->nnz;
      pattern_bytes += sparse_pattern_bytes(*s);
      value_bytes += sparse_values_bytes(*s);
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("prune.%s: %lld tensors, %.2f %% of their weights removed (pattern %s)\n", a.method.c_str(),
              (long long)report->details.size(), pruned ? 100.0 * (1.0 - double(nnz) / double(pruned)) : 0.0,
              a.pattern.c_str());
  std::printf("weights %.3f MB -> %.3f MB (pattern %.3f MB, values %.3f MB); %s %.3f MB; %.2f s\n", bytes_before / 1e6,
              bytes_after / 1e6, pattern_bytes / 1e6, value_bytes / 1e6, a.output.c_str(),
              static_cast<double>(path_size(a.output)) / 1e6, secs);
  return kExitOk;
}

}  // namespace

RunFn setup_prune(CLI::App& sub) {
  auto a = std::make_shared<PruneArgs>();
  sub.add_option("input", a->input, "Input model (any supported format)")->required();
  sub.add_option("-o,--output", a->output, "Output .llmc file")->required();
  sub.add_option("--method", a->method, "magnitude, wanda or sparsegpt")
      ->check(CLI::IsMember({"magnitude", "wanda", "sparsegpt"}));
  sub.add_option("--sparsity", a->sparsity, "Fraction of weights removed, in [0, 1)");
  sub.add_option("--pattern", a->pattern, "unstructured or N:M (e.g. 2:4)");
  sub.add_option("--granularity", a->granularity, "row, tensor or global (unstructured)");
  sub.add_option("--values", a->values, "Stored values: keep, f32, f16, bf16");
  sub.add_option("--calib", a->calib, "Calibration text (wanda, sparsegpt)");
  sub.add_option("--calib-self", a->calib_self, "Calibrate on N sequences sampled from the model instead");
  sub.add_option("--calib-samples", a->calib_samples, "Calibration sequences");
  sub.add_option("--calib-ctx", a->calib_ctx, "Tokens per calibration sequence");
  sub.add_option("--seed", a->seed, "Seed");
  sub.add_option("--threads", a->threads, "Threads (0 = all cores)");
  a->writer.add(sub);
  sub.add_option("--tokenizer", a->tokenizer, "Separate tokenizer (llama2.c tokenizer.bin, tokenizer.json, GGUF)");
  sub.add_flag("--force", a->force, "Replace an existing output");
  return [a] { return run_prune(*a); };
}

}  // namespace llmc::cli
