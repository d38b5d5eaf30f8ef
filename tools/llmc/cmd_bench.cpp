// llmc bench: prefill and decode speed, load time, peak memory and memory-bandwidth utilisation.
#include <omp.h>

#include <chrono>
#include <memory>

#include "cli_util.h"
#include "commands.h"
#include "formats/file_io.h"
#include "report_output.h"
#include "runtime/runtime.h"
#include "verify/bench.h"

namespace llmc::cli {
namespace {

struct BenchArgs {
  std::string model;
  std::string tokenizer;
  BenchOptions options;
  int64_t membw_mib = 1024;
  bool no_huge_pages = false;
  std::string activations;
  ReportTargets out;
};

int run_bench_command(BenchArgs& a) {
  std::vector<std::string> inputs = {a.model};
  if (!a.tokenizer.empty()) inputs.push_back(a.tokenizer);
  for (const std::string* path : {&a.out.json_path, &a.out.md_path}) {
    if (path->empty() || *path == "-") continue;
    if (auto ok = check_output_path(*path, inputs, a.out.force); !ok.ok()) return report_error(ok.error());
  }
  if (a.options.threads > 0) omp_set_num_threads(a.options.threads);
  a.options.membw_bytes = static_cast<uint64_t>(a.membw_mib) << 20;

  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_model_for_cli(a.model, a.tokenizer);
  if (!model.ok()) return report_error(model.error());
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  RuntimeOptions ropt;
  ropt.threads = a.options.threads;
  ropt.max_context = a.options.prompt_tokens + a.options.gen_tokens;
  ropt.huge_pages = !a.no_huge_pages;
  ropt.quant_activations = activations_mode(a.activations);
  auto runtime = Runtime::create(*model, ropt);
  if (!runtime.ok()) return report_error(with_context(runtime.error(), a.model));
  auto bench = run_bench(**runtime, a.options);
  if (!bench.ok()) return report_error(bench.error());

  ReportParts parts;
  parts.kind = "bench";
  auto identity = model_identity_json(*model, a.model);
  if (!identity.ok()) return report_error(identity.error());
  parts.model = std::move(identity).value();
  parts.metrics = bench_metrics_json(*bench);
  parts.metrics["activations"] = a.activations;
  parts.machine = machine_json(detect_machine(), &bench->membw);
  parts.command_line = current_command_line();
  parts.load_seconds = load_seconds;
  return emit_report(make_report(parts), a.out, inputs);
}

}  // namespace

RunFn setup_bench(CLI::App& sub) {
  auto a = std::make_shared<BenchArgs>();
  sub.add_option("model", a->model, "Model to benchmark")->required()->check(CLI::ExistingPath);
  sub.add_option("--prompt-tokens", a->options.prompt_tokens, "Tokens of the batched prefill")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--gen-tokens", a->options.gen_tokens, "Tokens decoded one at a time (greedy)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--threads", a->options.threads, "Threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  sub.add_option("--repeat", a->options.repeat, "Timed repeats (median and min/max are reported)")
      ->check(CLI::Range(1, 1000));
  sub.add_option("--membw-mib", a->membw_mib, "Buffer of the memory-bandwidth probe in MiB (0 = skip)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  sub.add_flag("--no-huge-pages", a->no_huge_pages,
               "Leave weights held in heap memory in 4 KiB pages (A/B runs; docs/runtime.md)");
  add_activations_option(sub, a->activations);
  sub.add_option("--tokenizer", a->tokenizer, "Separate tokenizer file (not needed for timing)")
      ->check(CLI::ExistingFile);
  sub.add_option("--json", a->out.json_path, "Write the JSON report to FILE ('-' = stdout)");
  sub.add_option("--md", a->out.md_path, "Write the Markdown report to FILE ('-' = stdout)");
  sub.add_flag("--force", a->out.force, "Replace existing report files");
  return [a] { return run_bench_command(*a); };
}

}  // namespace llmc::cli
